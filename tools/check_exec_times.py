"""Fail when a notebook ran over its time budget in the last book build.

    python tools/check_exec_times.py _build/exec_times.json

Budgets (docs/DESIGN.md section 6): 60 s per notebook on 2 CPU cores, 90 s for a
notebook whose metadata declares ``{"mmlearn": {"training_heavy": true}}``,
and 15 minutes of wall-clock time for executing the whole book, as
``tools/execute_parallel.py`` records it in ``_build/exec_wall.json`` when it
ran every notebook (a build that found them all cached ran nothing to time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 60.0
TRAINING_HEAVY_BUDGET_S = 90.0
WALL_BUDGET_S = 15 * 60.0  # the target is 10 minutes (see the execution-times appendix)


def budget_for(docname: str) -> float:
    """The time budget of one notebook, from its metadata."""
    nb = nbformat.read(ROOT / f"{docname}.ipynb", as_version=4)
    heavy = nb.metadata.get("mmlearn", {}).get("training_heavy", False)
    return TRAINING_HEAVY_BUDGET_S if heavy else DEFAULT_BUDGET_S


def over_budget(records: dict[str, dict]) -> list[str]:
    """Messages for every notebook over budget, failed, or without a runtime."""
    messages = []
    for docname, record in sorted(records.items()):
        runtime = record.get("runtime_s")
        if not record.get("succeeded") or runtime is None:
            messages.append(f"{docname}: did not execute successfully ({record})")
            continue
        budget = budget_for(docname)
        if runtime > budget:
            messages.append(f"{docname}: {runtime:.1f} s, over its {budget:.0f} s budget")
    return messages


def wall_over_budget(wall: dict, notebooks: int) -> list[str]:
    """A message when a run of every notebook took longer than the whole book's budget."""
    if wall.get("executed", 0) < notebooks or wall["wall_s"] <= WALL_BUDGET_S:
        return []
    return [
        f"executing all {notebooks} notebooks took {wall['wall_s']:.0f} s wall "
        f"({wall['jobs']} at a time), over the {WALL_BUDGET_S:.0f} s budget"
    ]


def main(path: str) -> int:
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    for docname, record in sorted(records.items()):
        print(f"{record.get('runtime_s') or 0:7.1f} s  {record.get('method')}  {docname}")
    total = sum(record.get("runtime_s") or 0 for record in records.values())
    print(f"{total:7.1f} s  total over {len(records)} notebooks")
    messages = over_budget(records)
    wall_path = Path(path).with_name("exec_wall.json")
    if wall_path.exists():
        wall = json.loads(wall_path.read_text(encoding="utf-8"))
        print(
            f"{wall['wall_s']:7.1f} s  wall for the last {wall['executed']} notebooks executed, "
            f"{wall['jobs']} at a time"
        )
        messages += wall_over_budget(wall, len(records))
    for message in messages:
        print("OVER BUDGET:", message, file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/exec_times.json"))
