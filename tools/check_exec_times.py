"""Fail when a notebook ran over its time budget in the last book build.

    python tools/check_exec_times.py _build/exec_times.json

Budgets (docs/DESIGN.md section 6): 60 s per notebook on 2 CPU cores, 90 s for a
notebook whose metadata declares ``{"mmlearn": {"training_heavy": true}}``,
and 15 minutes of wall-clock time for executing the whole book, as
``tools/execute_parallel.py`` records it in ``_build/exec_wall.json`` when it
ran every notebook (a build that found them all cached ran nothing to time).
Every budget is multiplied by the speed factor recorded there (at least 1;
tools/machine_speed.py says why and how it is measured).
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


def over_budget(records: dict[str, dict], speed_factor: float = 1.0) -> list[str]:
    """Messages for every notebook over budget, failed, or without a runtime.

    ``speed_factor`` (at least 1, tools/machine_speed.py) scales every budget to the
    speed the machine measured during the same build.
    """
    check_speed_factor(speed_factor)
    messages = []
    for docname, record in sorted(records.items()):
        runtime = record.get("runtime_s")
        if not record.get("succeeded") or runtime is None:
            messages.append(f"{docname}: did not execute successfully ({record})")
            continue
        budget = budget_for(docname) * speed_factor
        if runtime > budget:
            messages.append(
                f"{docname}: {runtime:.1f} s, over its {budget:.0f} s budget "
                f"(speed factor {speed_factor:.2f})"
            )
    return messages


def check_speed_factor(speed_factor: float) -> None:
    if not speed_factor >= 1.0:
        raise ValueError(f"speed_factor must be at least 1, got {speed_factor!r}")


def wall_over_budget(wall: dict, notebooks: int) -> list[str]:
    """A message when a run of every notebook took longer than the whole book's budget
    (scaled by the run's recorded ``speed_factor``, 1 when it has none)."""
    factor = wall.get("speed_factor", 1.0)
    check_speed_factor(factor)
    budget = WALL_BUDGET_S * factor
    if wall.get("executed", 0) < notebooks or wall["wall_s"] <= budget:
        return []
    return [
        f"executing all {notebooks} notebooks took {wall['wall_s']:.0f} s wall "
        f"({wall['jobs']} at a time), over the {budget:.0f} s budget "
        f"(speed factor {factor:.2f})"
    ]


def main(path: str) -> int:
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    for docname, record in sorted(records.items()):
        print(f"{record.get('runtime_s') or 0:7.1f} s  {record.get('method')}  {docname}")
    total = sum(record.get("runtime_s") or 0 for record in records.values())
    print(f"{total:7.1f} s  total over {len(records)} notebooks")
    wall_path = Path(path).with_name("exec_wall.json")
    wall = json.loads(wall_path.read_text(encoding="utf-8")) if wall_path.exists() else {}
    factor = wall.get("speed_factor", 1.0)
    messages = over_budget(records, factor)
    if wall:
        print(
            f"{wall['wall_s']:7.1f} s  wall for the last {wall['executed']} notebooks executed, "
            f"{wall['jobs']} at a time; machine speed factor {factor:.2f} "
            f"({wall.get('s_per_step', '?')} s per calibration step, tools/machine_speed.py)"
        )
        messages += wall_over_budget(wall, len(records))
    for message in messages:
        print("OVER BUDGET:", message, file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/exec_times.json"))
