"""Checks of the built book (run by `make test` after the build).

They read ``_build/``. Under ``make test`` (MMLEARN_BOOK_BUILT=1) a missing
build is a failure; a bare ``pytest`` without a build skips them.
"""

from __future__ import annotations

import html
import json
import os
import re
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
    wall_path = EXEC_TIMES.with_name("exec_wall.json")
    wall = json.loads(wall_path.read_text(encoding="utf-8")) if wall_path.exists() else {}
    assert check_exec_times.over_budget(records, wall.get("speed_factor", 1.0)) == []


def test_budget_check_scales_with_the_measured_machine_speed():
    slow = {"notebooks/appendix/formula_index": {"runtime_s": 60.0 * 1.15, "succeeded": True}}
    assert check_exec_times.over_budget(slow)
    assert not check_exec_times.over_budget(slow, speed_factor=1.2)
    assert check_exec_times.over_budget(slow, speed_factor=1.1)  # still over
    with pytest.raises(ValueError, match="speed_factor"):
        check_exec_times.over_budget(slow, speed_factor=0.5)  # never tighter than the budget
    book = {"wall_s": 900.0 * 1.15, "jobs": 2, "executed": 40}
    assert check_exec_times.wall_over_budget(book, notebooks=40)
    assert not check_exec_times.wall_over_budget({**book, "speed_factor": 1.2}, notebooks=40)


def test_budget_check_can_fail():
    over = 61.0
    slow = {"notebooks/appendix/formula_index": {"runtime_s": over, "succeeded": True}}
    assert check_exec_times.over_budget(slow)
    failed = {"notebooks/appendix/formula_index": {"runtime_s": 1.0, "succeeded": False}}
    assert check_exec_times.over_budget(failed)
    wall_limit = 900.0
    slow_book = {"wall_s": wall_limit + 1, "jobs": 2, "executed": 40}
    assert check_exec_times.wall_over_budget(slow_book, notebooks=40)
    assert not check_exec_times.wall_over_budget(slow_book, notebooks=41)  # a partial re-run
    assert not check_exec_times.wall_over_budget(
        {**slow_book, "wall_s": wall_limit - 1}, notebooks=40
    )


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
    return set(json.loads(text[len(prefix) : -len(suffix)])["terms"])


def test_launch_buttons_point_at_colab():
    require_build(HTML / "index.html")
    page = (HTML / "notebooks" / "ch04" / "self_attention.html").read_text(encoding="utf-8")
    assert "colab.research.google.com/github/" in page


# --- the reader's view: figures and the seed's section numbers ------------------

EXECUTED = ROOT / "_build" / "jupyter_execute"
CACHE = ROOT / "_build" / ".jupyter_cache"
SHOW_CALL = re.compile(r"^[^#\n]*\bplt\.show\(", re.MULTILINE)
IMAGE_MIMES = ("image/png", "image/svg+xml", "image/jpeg")
PAGE_FIGURE = re.compile(r"<img\b[^>]*\bsrc=\"[^\"]*_images/(?!colab-badge)[^\"]+\"")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_STATE_SCRIPT = re.compile(
    r'<script type="application/vnd\.jupyter\.widget-state\+json">(.*?)</script>', re.DOTALL
)


# Cell tag: the cell draws only with a network (Colab), never in the build.
ONLINE_ONLY = "online-only"


def show_calls(nb) -> int:
    """How many ``plt.show()`` calls the notebook's code cells make (comments excluded),
    leaving out cells tagged online-only."""
    return sum(
        len(SHOW_CALL.findall(cell.source))
        for cell in nb.cells
        if cell.cell_type == "code" and ONLINE_ONLY not in cell.metadata.get("tags", [])
    )


def image_outputs(nb) -> int:
    """How many pictures the executed notebook holds: in its cell outputs, and in the
    saved state of its ipywidgets Output widgets (a figure a widget callback drew)."""
    outputs = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    outputs += [
        output
        for widget in widgets.values()
        if widget["model_name"] == "OutputModel"
        for output in widget["state"].get("outputs", [])
    ]
    return sum(
        1 for output in outputs if any(mime in output.get("data", {}) for mime in IMAGE_MIMES)
    )


def page_figures(page: str) -> int:
    """Pictures on a built page: <img> of the page's figures, plus pictures inside the
    saved widget state that the widget manager draws when the page opens."""
    in_widgets = sum(state.count('"image/png"') for state in WIDGET_STATE_SCRIPT.findall(page))
    return len(PAGE_FIGURE.findall(page)) + in_widgets


def executed_copy(notebook: Path):
    """The executed notebook whose outputs the page shows: the build's execution cache
    holds it (myst-nb writes a cached notebook to jupyter_execute/ without its outputs);
    a notebook run during the Sphinx build itself is in jupyter_execute/ with them."""
    import nbformat
    from jupyter_cache import get_cache

    source = nbformat.read(notebook, as_version=4)
    try:
        record = get_cache(str(CACHE)).match_cache_notebook(source)
    except KeyError:
        return nbformat.read(EXECUTED / notebook.relative_to(ROOT), as_version=4)
    return get_cache(str(CACHE)).get_cache_bundle(record.pk).nb


def figure_shortfalls() -> dict[str, str]:
    """Notebooks whose executed copy or built page shows fewer figures than it draws."""
    import nbformat

    short = {}
    for notebook in nbtool.all_notebooks():
        relative = notebook.relative_to(ROOT)
        expected = show_calls(nbformat.read(notebook, as_version=4))
        if expected == 0:
            continue
        executed = executed_copy(notebook)
        html_page = (HTML / relative.with_suffix(".html")).read_text(encoding="utf-8")
        in_outputs, on_page = image_outputs(executed), page_figures(html_page)
        if in_outputs < expected or on_page < expected:
            short[relative.as_posix()] = (
                f"plt.show() x{expected}, image outputs {in_outputs}, figures on the page {on_page}"
            )
    return short


def test_every_figure_a_notebook_draws_is_on_its_page():
    require_build(EXECUTED)
    require_build(HTML / "index.html")
    short = figure_shortfalls()
    assert not short, "figures missing from the book:\n" + "\n".join(
        f"{page}: {why}" for page, why in short.items()
    )


def test_figure_counting_sees_shows_and_pictures():
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("plt.plot(x)\nplt.show()\n# plt.show() in a comment"),
            nbformat.v4.new_code_cell("for ax in axes:\n    ax.plot(x)\nplt.show()"),
            nbformat.v4.new_code_cell("plt.show()", metadata={"tags": [ONLINE_ONLY]}),
        ]
    )
    assert show_calls(nb) == 2
    assert image_outputs(nb) == 0  # MPLBACKEND=Agg in the kernel: a show() that draws nothing
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})]
    assert image_outputs(nb) == 1
    page = (
        '<img alt="_images/colab-badge.svg" src="../../_images/colab-badge.svg" />'
        '<img alt="../../_images/abc.png" src="../../_images/abc.png" />'
    )
    assert page_figures(page) == 1
    widget_page = f'<script type="{WIDGET_STATE}">{{"outputs": [{{"data": {{"image/png": ""}}}}]}}'
    assert page_figures(page + widget_page + "</script>") == 2


# The numbered heading lines (N. / N.M / N.M.K) of the seed outline the book mirrors.
SEED_HEADINGS = ROOT / "tests" / "fixtures" / "seed_headings.txt"
HEADING = re.compile(r"<h[1-6][^>]*>(.*?)</h[1-6]>", re.DOTALL)
NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.?\s+(.*)$")
NOT_TITLE = re.compile(r"[\s#¶:：,，、\"“”'‘’()（）]")


def squeeze(title: str) -> str:
    """A title without spaces and punctuation, so that 'OpenAI的崛起' matches 'OpenAI 的崛起'."""
    return NOT_TITLE.sub("", title).lower()


def seed_headings() -> list[tuple[str, str]]:
    """(number, title) of every numbered heading of the seed outline."""
    found = []
    for line in SEED_HEADINGS.read_text(encoding="utf-8").splitlines():
        _, number, title = line.split(maxsplit=2)
        found.append((number.rstrip("."), title))
    return found


def built_headings(folder: Path) -> dict[str, list[str]]:
    """number -> the titles of the built book's headings that carry that section number."""
    found: dict[str, list[str]] = {}
    for page in folder.rglob("*.html"):
        if page.relative_to(folder).parts[0] in {"reports", "_static", "_sources"}:
            continue
        for raw in HEADING.findall(page.read_text(encoding="utf-8")):
            text = html.unescape(re.sub(r"<[^>]+>", "", raw)).strip()
            match = NUMBERED.match(text)
            if match:
                found.setdefault(match.group(1), []).append(match.group(2))
    return found


def missing_seed_numbers(seed: list[tuple[str, str]], built: dict[str, list[str]]) -> list[str]:
    """Seed headings that no built heading carries with the seed's own number and title."""
    return [
        f"{number} {title} (built {number}: {built.get(number, ['nothing'])})"
        for number, title in seed
        if not any(
            squeeze(candidate).startswith(squeeze(title)) for candidate in built.get(number, [])
        )
    ]


def test_built_book_keeps_the_seed_section_numbers():
    require_build(HTML / "index.html")
    missing = missing_seed_numbers(seed_headings(), built_headings(HTML))
    assert not missing, "seed headings without their number in the book:\n" + "\n".join(missing)


def test_seed_number_check_catches_drift():
    seed = [("3.2.3", "对比学习的优化技巧"), ("1.3", "OpenAI的崛起")]
    drifted = {"3.2.5": ["对比学习的优化技巧"], "1.3": ["OpenAI 的崛起#"]}
    assert missing_seed_numbers(seed, drifted) == [
        "3.2.3 对比学习的优化技巧 (built 3.2.3: ['nothing'])"
    ]
    assert len(seed_headings()) == 66


def raising_cells_without_a_traceback(page: str) -> tuple[int, int]:
    """(cells tagged ``raises-exception`` on a built page, those showing no traceback).

    The tag lets the build go on past a cell that shows an error on purpose (the seed
    listings' bugs); without this check, a cell that stopped raising would go unnoticed
    while its text still explains the error. myst-nb gives each cell a container
    ``<div class="cell tag_... container">`` and each error a ``output traceback`` block.
    """
    cells = re.split(r'<div class="cell ', page)[1:]
    tagged = [cell for cell in cells if cell.startswith("tag_raises-exception")]
    return len(tagged), sum('class="output traceback' not in cell for cell in tagged)


def test_cells_tagged_raises_exception_show_their_error():
    require_build(HTML)
    tagged = [p for p in nbtool.all_notebooks() if "raises-exception" in p.read_text("utf-8")]
    assert tagged, "the ch05 listings tag their failing cells; the scan found none"
    for path in tagged:
        source = json.loads(path.read_text(encoding="utf-8"))
        expected = sum(
            "raises-exception" in cell.get("metadata", {}).get("tags", [])
            for cell in source["cells"]
        )
        page = (HTML / path.relative_to(ROOT).with_suffix(".html")).read_text(encoding="utf-8")
        assert raising_cells_without_a_traceback(page) == (expected, 0), path


def test_the_raising_cell_check_can_fail():
    shown = (
        '<div class="cell tag_raises-exception docutils container"><div class="output traceback">'
    )
    silent = '<div class="cell tag_raises-exception docutils container"><div class="output stream">'
    other = '<div class="cell docutils container"><div class="output traceback">'
    assert raising_cells_without_a_traceback(shown + other) == (1, 0)
    assert raising_cells_without_a_traceback(shown + silent + other) == (2, 1)
