"""The autograded assignments in assignments/ (docs/DESIGN.md section 1, "teach with it").

Each assignment goes through nbgrader the way a teacher uses it: generate the
student version, then autograde the submissions: the teacher's source (full
marks), the untouched student version (zero: every graded cell depends on a
solution) and, for each entry of BUGS, the source with that one function
subtly broken (it loses exactly that function's points). The assignments run
in parallel processes, each in its own temporary course directory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "assignments"
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

# nbgrader is pinned in requirements.txt: without it this module fails, it is not skipped.
from nbgrader.api import Gradebook  # noqa: E402
from nbgrader.apps import NbGraderAPI  # noqa: E402
from traitlets.config.loader import PyFileConfigLoader  # noqa: E402

ASSIGNMENTS = ["a1_attention", "a2_contrastive", "a3_distillation", "a4_mllm"]
POINTS_PER_ASSIGNMENT = 10
SECRET_REGIONS = [
    ("### BEGIN SOLUTION", "### END SOLUTION"),
    ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"),
]
# Realistic mistakes, each graded as its own submission: (solution cell, text in it,
# replacement). At least one per assignment, at most one per function.
BUGS = {
    "a1_attention": [("scaled_dot_product_attention", " / math.sqrt(query.shape[-1])", "")],
    "a2_contrastive": [
        ("clip_loss", "return (image_to_text + text_to_image) / 2", "return image_to_text")
    ],
    "a3_distillation": [("distillation_loss", "alpha * temperature**2 * kl", "alpha * kl")],
    "a4_mllm": [
        # the labels drop the <eot> that closes each answer: the model never learns to stop
        (
            "answer_labels",
            "if answering and token != assistant_id:",
            "if answering and token not in (assistant_id, eot_id):",
        ),
        # the scores are not divided by sqrt(d_head)
        ("kv_cache_step", " / math.sqrt(query.shape[-1])", ""),
    ],
}
BROKEN = [(assignment, bug[0]) for assignment, bugs in BUGS.items() for bug in bugs]


def source_path(assignment: str) -> Path:
    return COURSE / "source" / assignment / f"{assignment}.ipynb"


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def secret_lines(source: str) -> list[str]:
    """Lines strictly inside a solution or hidden-test region of one cell."""
    found, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if any(stripped == begin for begin, _ in SECRET_REGIONS):
            inside = True
        elif any(stripped == end for _, end in SECRET_REGIONS):
            inside = False
        elif inside and stripped:
            found.append(stripped)
    return found


def wrong_student(function: str) -> str:
    """The student id of the submission in which ``function`` is broken."""
    return f"wrong_{function}"


def break_one_function(nb, assignment: str, bug: tuple[str, str, str]):
    """The source notebook with ``bug``, one entry of BUGS[assignment], applied."""
    function, old, new = bug
    cells = [cell for cell in nb.cells if nbgrader_meta(cell).get("grade_id") == function]
    assert len(cells) == 1 and cells[0].source.count(old) == 1, f"bug for {assignment} misses"
    cells[0].source = cells[0].source.replace(old, new)
    return nb


def course_config(root: Path):
    """assignments/nbgrader_config.py, with the course directory moved to ``root``."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(COURSE)).load_config()
    config.CourseDirectory.root = str(root)
    return config


KERNEL_START_FAILED = "Kernel died before replying to kernel_info"


def autograde(api: NbGraderAPI, assignment: str, student: str, tries: int = 3) -> dict:
    """``api.autograde``, tried again when the kernel died while it was starting.

    The four assignments are graded in parallel, and each kernel picks free TCP ports
    before binding them, so two kernels can race for one port; the loser dies before it
    answers (jupyter_client's "Kernel died before replying to kernel_info"). That is the
    only failure tried again: a grading error or a kernel that dies later is returned.
    """
    for _ in range(tries):
        result = api.autograde(assignment, student)  # force=True: a retry starts afresh
        if result["success"] or KERNEL_START_FAILED not in result.get("log", ""):
            return result
    return result


def grade_assignment(assignment: str, course_root: str) -> dict:
    """Generate, submit the versions and autograde them with nbgrader (runs in a worker).

    ``course_root`` already holds an empty gradebook.db (see the ``graded`` fixture).
    """
    root = Path(course_root)
    shutil.copy(COURSE / "nbgrader_config.py", root / "nbgrader_config.py")
    shutil.copytree(source_path(assignment).parent, root / "source" / assignment)
    os.chdir(root)  # as a teacher runs nbgrader: from the course directory
    api = NbGraderAPI(config=course_config(root))
    result = api.generate_assignment(assignment)
    if not result["success"]:
        return {"error": f"generate_assignment: {result['error']}\n{result['log']}"}
    release = root / "release" / assignment / f"{assignment}.ipynb"
    submissions = {
        "teacher": nbformat.read(source_path(assignment), as_version=4),
        "student": nbformat.read(release, as_version=4),
        **{
            wrong_student(bug[0]): break_one_function(
                nbformat.read(source_path(assignment), as_version=4), assignment, bug
            )
            for bug in BUGS[assignment]
        },
    }
    grades = {}
    for student, nb in submissions.items():
        folder = root / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{assignment}.ipynb")
        result = autograde(api, assignment, student)
        if not result["success"]:
            return {"error": f"autograde {student}: {result['error']}\n{result['log']}"}
        with api.gradebook as gradebook:
            notebook = gradebook.find_submission_notebook(assignment, assignment, student)
            grades[student] = {
                grade.name: [grade.score, grade.max_score] for grade in notebook.grades
            }
    return {"release": release.read_text(encoding="utf-8"), "grades": grades}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, dict]:
    """Results of grade_assignment for every assignment, computed in parallel processes."""
    # nbgrader runs this environment's `alembic` script when it creates a gradebook;
    # that takes seconds, so it is done once here and the empty database copied.
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{path}"
    try:
        empty = tmp_path_factory.mktemp("empty") / "gradebook.db"
        course_id = course_config(empty.parent).CourseDirectory.course_id
        Gradebook(f"sqlite:///{empty}", course_id).close()
        roots = [tmp_path_factory.mktemp(name) for name in ASSIGNMENTS]
        for root in roots:
            shutil.copy(empty, root / "gradebook.db")
        context = multiprocessing.get_context("fork")  # workers reuse the imported nbgrader
        with ProcessPoolExecutor(max_workers=len(ASSIGNMENTS), mp_context=context) as pool:
            results = pool.map(grade_assignment, ASSIGNMENTS, [str(root) for root in roots])
            return dict(zip(ASSIGNMENTS, results, strict=True))
    finally:
        os.environ["PATH"] = path


def grade_points(assignment: str) -> dict[str, float]:
    """grade_id -> points of every autograded cell of the source notebook."""
    nb = nbformat.read(source_path(assignment), as_version=4)
    return {
        meta["grade_id"]: float(meta["points"])
        for cell in nb.cells
        if (meta := nbgrader_meta(cell)).get("grade")
    }


def results_of(graded: dict, assignment: str) -> dict:
    result = graded[assignment]
    assert "error" not in result, result.get("error")
    return result


# --- the source notebooks themselves (fast, no execution) -------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_notebook_is_a_valid_nbgrader_assignment(assignment: str):
    nb = nbformat.read(source_path(assignment), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count)
    ]
    assert not dirty, f"cells {dirty} carry outputs"
    solutions = [nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c).get("solution")]
    tests = [nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c).get("grade")]
    assert solutions and tests == [f"test_{name}" for name in solutions], (
        "every solution cell <f> is followed by exactly one graded cell test_<f>"
    )
    assert sum(grade_points(assignment).values()) == POINTS_PER_ASSIGNMENT
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        if meta.get("grade"):
            assert meta["locked"] and meta["points"] > 0
            assert "### BEGIN HIDDEN TESTS" in cell.source, f"{meta['grade_id']}: no hidden test"
            assert re.search(r"^assert ", cell.source, re.MULTILINE), "no visible test"
    bugged = [bug[0] for bug in BUGS[assignment]]
    assert bugged and len(set(bugged)) == len(bugged) and set(bugged) <= set(solutions)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_first_code_cell_is_the_books_colab_setup_cell(assignment: str):
    nb = nbformat.read(source_path(assignment), as_version=4)
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert first_code.source == nbtool.setup_cell_source(nbtool.repository_url())
    assert "nbgrader" not in first_code.metadata


def test_secret_lines_finds_solutions_and_hidden_tests():
    """The helper the release test relies on must actually see inside the regions."""
    source = (
        "def f():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION\n"
        "assert f()\n### BEGIN HIDDEN TESTS\nassert f() == 42\n### END HIDDEN TESTS\n"
    )
    assert secret_lines(source) == ["return 42", "assert f() == 42"]


# --- nbgrader: generate and autograde ------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_version_has_no_solution_and_no_hidden_test(graded, assignment: str):
    release = nbformat.reads(results_of(graded, assignment)["release"], as_version=4)
    source = nbformat.read(source_path(assignment), as_version=4)
    release_lines = {line.strip() for cell in release.cells for line in cell.source.splitlines()}
    public_lines = {
        line.strip()
        for cell in source.cells
        for line in cell.source.splitlines()
        if line.strip() not in set(secret_lines(cell.source))
    }
    secrets = {line for cell in source.cells for line in secret_lines(cell.source)}
    leaked = sorted((secrets - public_lines) & release_lines)
    assert secrets and not leaked, f"the student version leaks: {leaked}"
    text = json.dumps([cell.source for cell in release.cells])
    for begin, end in SECRET_REGIONS:
        assert begin not in text and end not in text
    stubs = [cell for cell in release.cells if nbgrader_meta(cell).get("solution")]
    assert stubs and all("raise NotImplementedError()" in cell.source for cell in stubs)
    assert len(release.cells) == len(source.cells)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_teacher_version_gets_full_marks(graded, assignment: str):
    grades = results_of(graded, assignment)["grades"]["teacher"]
    points = grade_points(assignment)
    assert grades == {name: [value, value] for name, value in points.items()}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_student_version_gets_zero(graded, assignment: str):
    """Every graded cell calls a function the student must write, so nothing is free."""
    grades = results_of(graded, assignment)["grades"]["student"]
    points = grade_points(assignment)
    assert grades == {name: [0.0, value] for name, value in points.items()}


@pytest.mark.parametrize(("assignment", "function"), BROKEN)
def test_one_wrong_function_loses_exactly_its_points(graded, assignment: str, function: str):
    grades = results_of(graded, assignment)["grades"][wrong_student(function)]
    points = grade_points(assignment)
    broken = f"test_{function}"
    expected = {name: [0.0 if name == broken else value, value] for name, value in points.items()}
    assert grades == expected
    total = sum(score for score, _ in grades.values())
    assert total == POINTS_PER_ASSIGNMENT - points[broken]


class _FakeAPI:
    """Answers autograde with the given results, in order."""

    def __init__(self, *results: dict):
        self.results, self.calls = list(results), 0

    def autograde(self, assignment: str, student: str) -> dict:
        self.calls += 1
        return self.results.pop(0)


def test_autograde_tries_again_only_when_the_kernel_died_while_starting():
    died = {"success": False, "error": "x", "log": f"[ERROR] ... {KERNEL_START_FAILED}"}
    ok, wrong = {"success": True}, {"success": False, "error": "x", "log": "AssertionError"}
    api = _FakeAPI(died, died, ok)
    assert autograde(api, "a1", "student") == ok and api.calls == 3
    api = _FakeAPI(wrong, ok)
    assert autograde(api, "a1", "student") == wrong and api.calls == 1
    api = _FakeAPI(died, died, died, ok)
    assert autograde(api, "a1", "student") == died and api.calls == 3
