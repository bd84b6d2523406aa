"""The registry from the book's numbered equations to the code that implements them.

Every equation that the book labels (MyST ``$$ ... $$ (label)`` or a
``{math}`` directive with ``:label:``) appears here with the dotted path of
the function or class that computes it. ``tests/test_formulas.py`` reads the
book's sources and fails when a labelled equation has no entry here or an
entry names an equation the book no longer has. The appendix page
"公式与代码索引" is generated from this table.

Each chapter owns one block below; keep the blocks in book order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Formula:
    """One labelled equation of the book and where ``mmlearn`` implements it."""

    label: str
    section: str
    title: str
    implementation: str  # dotted path, e.g. "mmlearn.functional.attention"


FORMULAS: tuple[Formula, ...] = (
    # --- Chapter 4.1: the Transformer -------------------------------------------------
    Formula("eq-attention", "4.1.1", "缩放点积注意力 Attention(Q, K, V)",
            "mmlearn.functional.attention"),
    Formula("eq-multihead", "4.1.2", "多头注意力 MultiHead(Q, K, V)",
            "mmlearn.functional.multi_head_attention"),
    Formula("eq-head", "4.1.2", "第 i 个头 head_i",
            "mmlearn.functional.multi_head_attention"),
    Formula("eq-ffn", "4.1.3", "逐位置前馈网络 FFN(x)",
            "mmlearn.functional.feed_forward"),
)


def by_label() -> dict[str, Formula]:
    """Return the registry as a dict keyed by equation label."""
    return {formula.label: formula for formula in FORMULAS}


def resolve(label: str):
    """Return the function or class that implements the equation ``label``."""
    table = by_label()
    if label not in table:
        known = ", ".join(sorted(table))
        raise KeyError(f"no formula labelled {label!r}; known labels: {known}")
    module_name, _, attribute = table[label].implementation.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)
