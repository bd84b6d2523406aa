"""The registry mmlearn.formulas and the book's labelled equations agree (docs/DESIGN.md 3.2)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from mmlearn import formulas

ROOT = Path(__file__).resolve().parents[1]
DOLLAR_LABEL = re.compile(r"\$\$\s*\((?P<label>[A-Za-z0-9_:.-]+)\)")
DIRECTIVE_LABEL = re.compile(
    r"[`:]{3,}\{math\}[^\n]*\n(?:\s*:[a-z]+:[^\n]*\n)*?\s*:label:\s*(?P<label>\S+)"
)


def labels_in_text(text: str) -> set[str]:
    """Equation labels defined in MyST text: ``$$ ... $$ (label)`` and ``{math}`` ``:label:``."""
    found = {match["label"] for match in DOLLAR_LABEL.finditer(text)}
    found |= {match["label"] for match in DIRECTIVE_LABEL.finditer(text)}
    return found


def book_texts() -> dict[str, str]:
    texts = {}
    for path in sorted(ROOT.glob("book/**/*.md")):
        texts[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    for path in sorted(ROOT.glob("notebooks/**/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        texts[path.relative_to(ROOT).as_posix()] = markdown
    return texts


def book_labels() -> dict[str, str]:
    """Every equation label in the book, mapped to the page that defines it."""
    where: dict[str, str] = {}
    for page, text in book_texts().items():
        for label in labels_in_text(text):
            assert label not in where, f"{label} is defined twice: {where[label]} and {page}"
            where[label] = page
    return where


def test_label_parser_finds_both_syntaxes():
    text = "$$\nx = 1\n$$ (eq-one)\n\n```{math}\n:label: eq-two\ny = 2\n```\n\n$$ z $$"
    assert labels_in_text(text) == {"eq-one", "eq-two"}


def test_every_labelled_equation_has_an_implementation():
    missing = sorted(set(book_labels()) - set(formulas.by_label()))
    assert not missing, f"labelled equations with no entry in mmlearn/formulas.py: {missing}"


def test_every_registry_entry_names_an_equation_of_the_book():
    orphans = sorted(set(formulas.by_label()) - set(book_labels()))
    assert not orphans, f"registry entries whose equation is not in the book: {orphans}"


@pytest.mark.parametrize("formula", formulas.FORMULAS, ids=lambda f: f.label)
def test_registry_entry_resolves_to_a_documented_callable(formula):
    implementation = formulas.resolve(formula.label)
    assert callable(implementation)
    assert (implementation.__doc__ or "").strip(), f"{formula.implementation} has no docstring"


def test_labels_are_unique_in_the_registry():
    labels = [formula.label for formula in formulas.FORMULAS]
    assert len(labels) == len(set(labels))


def test_resolve_rejects_an_unknown_label():
    with pytest.raises(KeyError, match="eq-no-such-thing"):
        formulas.resolve("eq-no-such-thing")
