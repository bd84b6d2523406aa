"""The sourced data tables behind the book's history and trends figures.

The CSV files live in ``mmlearn/data/tables/`` and are installed with the
package, so a notebook reads them the same way in this repository and in
Colab. Every row has a ``source`` column holding a BibTeX key of
``book/references.bib``.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd


def table_names() -> list[str]:
    """The names of the shipped tables, for example ``"landmarks.csv"``."""
    folder = resources.files("mmlearn.data") / "tables"
    return sorted(item.name for item in folder.iterdir() if item.name.endswith(".csv"))


def load_table(name: str, dtype: dict[str, str] | None = None) -> pd.DataFrame:
    """Read one shipped table, for example ``load_table("model_scale.csv")``.

    ``dtype`` is passed to :func:`pandas.read_csv`; ``{"value": str}`` keeps a
    number exactly as the source wrote it (``"83.0"`` stays ``"83.0"``).
    """
    names = table_names()
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    with (resources.files("mmlearn.data") / "tables" / name).open("rb") as handle:
        return pd.read_csv(handle, dtype=dtype)
