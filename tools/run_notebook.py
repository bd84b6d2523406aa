"""Execute notebooks the way the book build does, report their run time, write nothing back.

    python tools/run_notebook.py notebooks/ch04/self_attention.ipynb [...]

Use it while writing a chapter: it fails on the first cell that raises and
prints each notebook's wall-clock time against its budget (60 s, or 90 s for
a notebook declared training-heavy). Pass ``--save DIR`` to keep executed
copies (with outputs) under DIR for inspection; never commit those.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_exec_times import DEFAULT_BUDGET_S, TRAINING_HEAVY_BUDGET_S  # noqa: E402


def run(path: Path, save_dir: Path | None) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_dir / path.name)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    status = 0
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        heavy = nb.metadata.get("mmlearn", {}).get("training_heavy", False)
        budget = TRAINING_HEAVY_BUDGET_S if heavy else DEFAULT_BUDGET_S
        elapsed = run(path, args.save)
        verdict = "ok" if elapsed <= budget else "OVER BUDGET"
        print(f"{elapsed:6.1f} s / {budget:.0f} s  {verdict}  {path}")
        status |= elapsed > budget
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
