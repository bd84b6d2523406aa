"""Helpers for the book's notebooks that also work outside the book build.

``glue`` hands a computed value to the book's prose (myst-nb's ``glue``), so
no number in the text is typed by hand. In Colab, where myst-nb is not
installed, it simply shows the value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def plain_value(value: Any) -> Any:
    """A NumPy scalar or one-element tensor as the Python number it holds.

    myst-nb formats ``{glue:text}`key:.3f``` from the value's plain-text form;
    ``np.float64(0.97)`` prints as ``np.float64(0.97)`` under NumPy 2, which no
    format spec can read, while ``0.97`` can.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Glue ``value`` under ``name`` for ``{glue:text}`name``` in the book's Markdown.

    Returns ``value`` (NumPy scalars and one-element tensors as Python numbers)
    so that a notebook can write ``acc = glue("acc", compute())``.
    """
    value = plain_value(value)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab or plain Jupyter: there is no book to glue into
        print(f"{name} = {value!r}")
        return value
    myst_glue(name, value, display=display)
    return value
