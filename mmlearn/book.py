"""Helpers for the book's notebooks that also work outside the book build.

``glue`` hands a computed value to the book's prose (myst-nb's ``glue``), so
no number in the text is typed by hand. In Colab, where myst-nb is not
installed, it simply shows the value.
"""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Glue ``value`` under ``name`` for ``{glue:text}`name``` in the book's Markdown.

    Returns ``value`` so that a notebook can write ``acc = glue("acc", compute())``.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab or plain Jupyter: there is no book to glue into
        print(f"{name} = {value!r}")
        return value
    myst_glue(name, value, display=display)
    return value
