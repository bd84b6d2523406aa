"""Checks of the built book (run by `make test` after the build).

They read ``_build/``. Under ``make test`` (MMLEARN_BOOK_BUILT=1) a missing
build is a failure; a bare ``pytest`` without a build skips them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_exec_times  # noqa: E402
import nbtool  # noqa: E402

EXEC_TIMES = ROOT / "_build" / "exec_times.json"
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.book


def require_build(path: Path) -> None:
    if path.exists():
        return
    if os.environ.get("MMLEARN_BOOK_BUILT") == "1":
        pytest.fail(f"{path} is missing: the book build did not produce it")
    pytest.skip(f"{path} is missing: run `make book` first")


def test_every_notebook_was_executed_within_budget():
    require_build(EXEC_TIMES)
    records = json.loads(EXEC_TIMES.read_text(encoding="utf-8"))
    executed = set(records)
    expected = {p.relative_to(ROOT).with_suffix("").as_posix() for p in nbtool.all_notebooks()}
    assert expected <= executed, f"notebooks never executed: {sorted(expected - executed)}"
    assert check_exec_times.over_budget(records) == []


def test_budget_check_can_fail():
    slow = {"notebooks/appendix/formula_index": {"runtime_s": 61.0, "succeeded": True}}
    assert check_exec_times.over_budget(slow)
    failed = {"notebooks/appendix/formula_index": {"runtime_s": 1.0, "succeeded": False}}
    assert check_exec_times.over_budget(failed)


def test_html_has_every_page_and_no_error_reports():
    require_build(HTML / "index.html")
    for notebook in nbtool.all_notebooks():
        page = HTML / notebook.relative_to(ROOT).with_suffix(".html")
        assert page.exists(), f"{page} was not built"
    reports = HTML / "reports"
    assert not reports.exists() or not any(reports.iterdir()), "a notebook failed: see reports/"


def test_chinese_search_index_has_chinese_words():
    require_build(HTML / "searchindex.js")
    terms = search_terms(HTML / "searchindex.js")
    for word in ["注意力", "对比", "蒸馏"]:
        assert word in terms, f"the search index lacks {word}: is jieba installed?"


def search_terms(path: Path) -> set[str]:
    """The words of Sphinx's search index (``Search.setIndex({...})``; JSON, ASCII-escaped)."""
    text = path.read_text(encoding="utf-8").strip()
    prefix, suffix = "Search.setIndex(", ")"
    assert text.startswith(prefix) and text.endswith(suffix), f"unexpected format of {path}"
    return set(json.loads(text[len(prefix):-len(suffix)])["terms"])


def test_launch_buttons_point_at_colab():
    require_build(HTML / "index.html")
    page = (HTML / "notebooks" / "ch04" / "self_attention.html").read_text(encoding="utf-8")
    assert "colab.research.google.com/github/" in page
