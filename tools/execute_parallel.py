"""Execute the book's notebooks in parallel into the build's cache, before Sphinx runs.

    python tools/execute_parallel.py [--jobs N]

The book is built with ``execute_notebooks: cache``: for each notebook, myst-nb
looks in ``_build/.jupyter_cache`` for a run of the same code (a hash of its
code cells and kernel) and only executes notebooks it does not find, one after
another. This script fills that cache first, N notebooks at a time (default:
the number of CPU cores), in the same way myst-nb would run them (jupyter-cache's
``single_nb_execution``, in the notebook's own folder, with the configured
timeout), and records each run time, which the execution-times appendix and
``tools/check_exec_times.py`` then read. Notebooks already cached are skipped,
so a second build runs nothing. A notebook that fails is left out of the cache:
the build then runs it again and reports the failing cell.

Each notebook uses one intra-op thread (OMP_NUM_THREADS=1 from the Makefile).
Two notebooks on two cores still slow each other down (shared caches and memory
bandwidth), so two training-heavy notebooks never run at the same time: each
runs beside light ones. The longest notebooks (by their last recorded time)
start first. Before and after, it times ``tools/machine_speed.py``'s fixed
workload and records the machine's speed factor beside the wall time, so that
the budget check can tell a slow hour of the host from a slow notebook.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import machine_speed  # noqa: E402
from nbtool import all_notebooks  # noqa: E402


def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def run_one(path: Path, timeout: int) -> tuple[Path, nbformat.NotebookNode, float, str | None]:
    """Execute one notebook in its folder; return it with its run time and any error."""
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(
        nb, cwd=str(path.parent), timeout=timeout, allow_errors=False, meta_override=True
    )
    error = None if result.err is None else f"{type(result.err).__name__}\n{result.exc_string}"
    return path, nb, result.time, error


def last_runtimes() -> dict[str, float]:
    """Run times of the previous build, to start the longest notebooks first."""
    record = ROOT / "_build" / "exec_times.json"
    if not record.exists():
        return {}
    data = json.loads(record.read_text(encoding="utf-8"))
    return {name: entry.get("runtime_s") or 0.0 for name, entry in data.items()}


def uncached(cache, notebooks: list[Path]) -> list[Path]:
    todo = []
    for path in notebooks:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(path)
    return todo


def is_training_heavy(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return bool(nb.metadata.get("mmlearn", {}).get("training_heavy", False))


def next_notebook(heavy: list[Path], light: list[Path], running: list[Path]) -> Path | None:
    """The next notebook to start: never two training-heavy ones at once, so that each
    of them runs beside a light notebook and its time stays comparable to its budget."""
    if heavy and not any(is_training_heavy(path) for path in running):
        return heavy.pop(0)
    if light:
        return light.pop(0)
    return None  # only heavy notebooks are left and one is running: wait for it


def store(cache, path: Path, nb, seconds: float, error: str | None) -> bool:
    """Put one executed notebook into the cache (or report its failure); True when stored."""
    name = path.relative_to(ROOT).as_posix()
    if error is not None:
        print(f"  FAILED {name} after {seconds:.1f} s: {error.splitlines()[0]}", flush=True)
        return False
    stage = cache.add_nb_to_project(str(path))
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, stage.uri, data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )
    print(f"  {seconds:6.1f} s  {name}", flush=True)
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="notebooks executed at once (default: CPU cores)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    config = book_config()["execute"]
    cache = get_cache(str(ROOT / config["cache"]))
    previous = last_runtimes()
    todo = uncached(cache, all_notebooks())
    todo.sort(key=lambda p: -previous.get(p.relative_to(ROOT).with_suffix("").as_posix(), 0.0))
    print(f"execute_parallel: {len(todo)} notebooks to run, {args.jobs} at a time", flush=True)
    speed_before = machine_speed.parallel_seconds_per_step(args.jobs) if todo else None
    start, failed = time.perf_counter(), []
    heavy = [path for path in todo if is_training_heavy(path)]
    light = [path for path in todo if not is_training_heavy(path)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        running: dict = {}  # future -> notebook path
        while heavy or light or running:
            while len(running) < args.jobs:
                path = next_notebook(heavy, light, list(running.values()))
                if path is None:
                    break
                running[pool.submit(run_one, path, config["timeout"])] = path
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                del running[future]
                if not store(cache, *future.result()):
                    failed.append(future.result()[0].relative_to(ROOT).as_posix())
    wall = time.perf_counter() - start
    print(
        f"execute_parallel: {len(todo) - len(failed)} cached, {len(failed)} failed, "
        f"{wall:.1f} s wall",
        flush=True,
    )
    if todo:  # a run that found everything cached keeps the last real measurement
        speed = max(speed_before, machine_speed.parallel_seconds_per_step(args.jobs))
        record = {
            "wall_s": round(wall, 1),
            "jobs": args.jobs,
            "executed": len(todo) - len(failed),
            "s_per_step": round(speed, 4),
            "speed_factor": round(machine_speed.speed_factor(speed), 3),
        }
        print(f"execute_parallel: machine speed {record}", flush=True)
        (ROOT / "_build" / "exec_wall.json").write_text(json.dumps(record), encoding="utf-8")
    return 0  # failures are reported by the book build, which runs them again


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
