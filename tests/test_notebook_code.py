"""What the notebooks' code may not do again (issue 16).

* Build an optimiser with weight decay straight from ``.parameters()``: that
  decays biases, norms, logit scales and gates. Every optimiser with weight
  decay takes :func:`mmlearn.param_groups` instead (``AdamW`` decays by 0.01
  unless told otherwise, so a bare ``AdamW(...)`` counts).
* Define again a helper the package already has (a training loop, an
  accuracy): the notebooks call :mod:`mmlearn.train` and :mod:`mmlearn.distill`.
* Write a training loop (a ``for``/``while`` that calls ``.backward()`` and an
  optimiser's ``.step()``), except where the loop itself is the lesson: those
  are listed in ``LOOPS_KEPT_ON_PURPOSE`` and say so in a comment.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

NOTEBOOKS = nbtool.all_notebooks()
IDS = [path.relative_to(ROOT).as_posix() for path in NOTEBOOKS]
OPTIMIZERS = {"SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad"}
DECAYS_BY_DEFAULT = {"AdamW"}
GROUPERS = {"param_groups"}
# Helpers that the package provides: mmlearn.train.train (+ a step function),
# mmlearn.distill.fit_classifier, mmlearn.distill.accuracy and
# mmlearn.stats.difference_of_means (a difference of means and its standard error) and
# mmlearn.data.WordTokenizer.bag_of_words.
PACKAGE_HELPERS = {"train_clip", "train_student", "accuracy", "fit", "gap", "bag_of_words"}
# Loops that are the teaching point where they stand (each says so in a comment).
KEPT_ON_PURPOSE = {
    ("notebooks/ch05/contrastive_code.ipynb", "train_clip"): "the corrected seed listing",
    ("notebooks/ch03/multimodal_training.ipynb", "fit"): "it times every step",
    ("notebooks/ch03/multimodal_training.ipynb", "accuracy"): "the timed loop's evaluation",
}
# Training loops that are the lesson where they stand: (notebook, enclosing function or
# "<top level>") -> why. Each has an "on purpose" comment just above it.
LOOPS_KEPT_ON_PURPOSE = {
    ("notebooks/ch03/contrastive_clip.ipynb", "<top level>"): "eq-clip-loss, step by step",
    ("notebooks/ch03/multimodal_training.ipynb", "fit"): "it times every step",
    ("notebooks/ch05/contrastive_code.ipynb", "<top level>"): "the listing's SimCLR as it stands",
    ("notebooks/ch05/contrastive_code.ipynb", "train_clip"): "the corrected seed listing",
    ("notebooks/ch05/distillation_code.ipynb", "distill"): "the text shows the distiller's loop",
}
TOP_LEVEL = "<top level>"


def _called_name(call: ast.Call) -> str | None:
    """``f`` for ``f(...)`` and ``a.b.f(...)``; None for other callees."""
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _is_zero(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0


def optimizer_problems(source: str) -> list[str]:
    """Optimisers in ``source`` that decay without :func:`mmlearn.param_groups`."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or _called_name(node) not in OPTIMIZERS:
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Call) and _called_name(first) in GROUPERS:
            continue
        decay = {kw.arg: kw.value for kw in node.keywords}.get("weight_decay")
        decays = _called_name(node) in DECAYS_BY_DEFAULT if decay is None else not _is_zero(decay)
        if decays:
            problems.append(f"line {node.lineno}: {ast.unparse(node)}")
    return problems


def helper_problems(source: str, kept: frozenset[str] = frozenset()) -> list[str]:
    """Functions in ``source`` that re-define a package helper (except those ``kept``)."""
    return [
        f"line {node.lineno}: def {node.name}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
        and node.name in PACKAGE_HELPERS
        and node.name not in kept
    ]


def training_loops(source: str) -> list[tuple[int, str]]:
    """``(line, where)`` of each outermost loop in ``source`` that calls ``.backward(`` and
    ``.step(``; ``where`` is the enclosing function's name or ``"<top level>"``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
            elif isinstance(child, ast.For | ast.While) and _trains(child):
                found.append((child.lineno, where))  # nested loops belong to this one
            else:
                visit(child, where)

    visit(ast.parse(source), TOP_LEVEL)
    return found


def _trains(loop: ast.AST) -> bool:
    calls = {_called_name(node) for node in ast.walk(loop) if isinstance(node, ast.Call)}
    return {"backward", "step"} <= calls


def code_of(path: Path) -> str:
    """The notebook's code cells, IPython magics and shell lines commented out."""
    cells = [
        cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
    ]
    lines = "\n".join(cells).splitlines()
    return "\n".join("# " + ln if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_optimisers_use_param_groups(path: Path):
    assert optimizer_problems(code_of(path)) == [], "use mmlearn.param_groups(model, decay)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebooks_do_not_redefine_package_helpers(path: Path):
    name = path.relative_to(ROOT).as_posix()
    kept = frozenset(helper for notebook, helper in KEPT_ON_PURPOSE if notebook == name)
    assert helper_problems(code_of(path), kept) == [], "call mmlearn.train / distill / stats"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebooks_hold_no_training_loop(path: Path):
    name = path.relative_to(ROOT).as_posix()
    loops = [
        f"line {line} ({where})"
        for line, where in training_loops(code_of(path))
        if (name, where) not in LOOPS_KEPT_ON_PURPOSE
    ]
    assert loops == [], "train with mmlearn.train (train, train_steps or train_on_indices)"


@pytest.mark.parametrize("notebook, where", sorted(LOOPS_KEPT_ON_PURPOSE))
def test_training_loops_kept_on_purpose_still_exist_and_say_so(notebook: str, where: str):
    source = code_of(ROOT / notebook)
    lines = source.splitlines()
    loops = [line for line, found_in in training_loops(source) if found_in == where]
    assert loops, f"no training loop in {where} any more: remove the exemption"
    for line in loops:
        if where != TOP_LEVEL:  # the comment sits above the function
            line = next(
                node.lineno
                for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.FunctionDef) and node.name == where
            )
        above = "\n".join(lines[max(0, line - 7) : line - 1])
        assert "on purpose" in above, f"say why the loop at line {line} stays (on purpose)"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("for b in batches:\n    loss.backward()\n    optimizer.step()", [(1, TOP_LEVEL)]),
        (
            "def fit(m):\n    for _ in range(3):\n        for b in d:\n"
            "            m(b).backward()\n            opt.step()",
            [(2, "fit")],
        ),
        ("while True:\n    loss.backward()\n    opt.step()\n    break", [(1, TOP_LEVEL)]),
        ("for b in batches:\n    scheduler.step()", []),  # no backward: not a training loop
        ("loss.backward()\noptimizer.step()", []),  # one step, no loop
        ("train_steps(model, 10, batch_loss, optimizer, steps=5, batch_size=2)", []),
    ],
)
def test_the_training_loop_scan(source: str, expected: list):
    assert training_loops(source) == expected


@pytest.mark.parametrize("notebook, helper", sorted(KEPT_ON_PURPOSE))
def test_loops_kept_on_purpose_still_exist_and_say_so(notebook: str, helper: str):
    """A stale exemption would hide a new duplicate; a kept loop explains itself."""
    source = code_of(ROOT / notebook)
    assert helper_problems(source) != [] and f"def {helper}(" in source
    assert "on purpose" in source


@pytest.mark.parametrize(
    "source, flagged",
    [
        ("torch.optim.AdamW(model.parameters(), lr=1e-3)", True),  # decays 0.01 by default
        ("torch.optim.AdamW([*a.parameters(), *b.parameters()], lr=1e-3)", True),
        ("optim.SGD(params, lr=0.1, weight_decay=1e-4)", True),
        ("AdamW(trainable, lr=1e-3, weight_decay=wd)", True),
        ("torch.optim.AdamW(mmlearn.param_groups(model, 0.01), lr=1e-3)", False),
        ("torch.optim.AdamW(param_groups([enc, head], 0.01), lr=1e-3)", False),
        ("torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=0.0)", False),
        ("torch.optim.Adam(model.parameters(), lr=1e-3)", False),  # Adam: no decay by default
        ("torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=9)", False),
    ],
)
def test_the_optimizer_scan_flags_decay_without_groups(source: str, flagged: bool):
    assert bool(optimizer_problems(source)) == flagged


def test_the_helper_scan_flags_a_redefinition_only():
    source = "def accuracy(m, x, y):\n    return 0.0\n\ndef accuracy_by_kind(p):\n    return {}\n"
    assert helper_problems(source) == ["line 1: def accuracy"]
    assert helper_problems("score = mmlearn.distill.accuracy(model, x, y)") == []
    assert helper_problems(source, frozenset({"accuracy"})) == []


def test_magics_do_not_break_the_scan(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%pip install x\n!ls\nopt = AdamW(m.parameters())")]
    path = tmp_path / "a.ipynb"
    nbformat.write(nb, path)
    assert len(optimizer_problems(code_of(path))) == 1


def ends_with_a_shown_glue(cell_source: str) -> bool:
    """True when a cell's last statement is a ``glue(...)`` call without a trailing ``;``:
    glue returns its value, so the page would show that number under the cell."""
    lines = [
        "# " + ln if ln.lstrip().startswith(("%", "!")) else ln for ln in cell_source.splitlines()
    ]
    try:
        body = ast.parse("\n".join(lines)).body
    except SyntaxError:
        return False
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Call):
        return False
    if _called_name(body[-1].value) != "glue":
        return False
    last_line = lines[body[-1].end_lineno - 1].encode()  # ast's offsets count UTF-8 bytes
    rest = last_line[body[-1].end_col_offset :].decode()
    return not rest.lstrip().startswith(";")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_cell_shows_a_glued_value_as_output(path: Path):
    cells = nbformat.read(path, as_version=4).cells
    shown = [
        i
        for i, cell in enumerate(cells)
        if cell.cell_type == "code" and ends_with_a_shown_glue(cell.source)
    ]
    assert shown == [], (
        f"cells {shown} end with glue(...): add ';' so the page shows no stray number"
    )


@pytest.mark.parametrize(
    "source, shown",
    [
        ('glue("a", 1)', True),
        ('glue("a", 1);', False),
        ('x = glue("a", 1)', False),
        ('glue(\n    "a",\n    1,\n)', True),
        ('glue(\n    "a",\n    1,\n);', False),
        ('mmlearn.book.glue("a", 1)', True),
        ('glue("a", 1)\nplt.show()', False),
        ("%time glue('a', 1)", False),
        ('glue("verdict", "中文的结论")', True),  # offsets are in bytes, not characters
        ('glue("verdict", "中文的结论");', False),
    ],
)
def test_the_glue_scan(source: str, shown: bool):
    assert ends_with_a_shown_glue(source) == shown
