"""The book's parallel execution never runs two training-heavy notebooks at once."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import execute_parallel  # noqa: E402


def notebook(folder: Path, name: str, heavy: bool) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"mmlearn": {"training_heavy": heavy}})
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_heavy_notebook_waits_while_another_runs(tmp_path):
    h1, h2 = notebook(tmp_path, "h1", True), notebook(tmp_path, "h2", True)
    l1 = notebook(tmp_path, "l1", False)
    heavy, light = [h1, h2], [l1]
    assert execute_parallel.next_notebook(heavy, light, running=[]) == h1
    assert execute_parallel.next_notebook(heavy, light, running=[h1]) == l1
    assert execute_parallel.next_notebook(heavy, light, running=[h1, l1]) is None
    assert execute_parallel.next_notebook(heavy, light, running=[l1]) == h2
    assert not heavy and not light
