"""One command for the day a GPU is available: correctness on the device, then attention speed.

    python bench/gpu_check.py            # under 5 minutes on one GPU; about a minute on a CPU

1. Runs ``tests/test_cuda.py`` (every public function and model on the GPU
   against the CPU, no host sync in the losses, a bfloat16 autocast training
   step) and ``tests/test_compile_and_precision.py`` (``torch.compile``
   without graph breaks, bfloat16 losses).
2. Times one forward+backward step of attention at growing sequence lengths
   (see ``bench/attention.py``): mmlearn's fused module and its explicit path
   against ``torch.nn.MultiheadAttention``, and ``mmlearn.functional.attention``
   against ``F.scaled_dot_product_attention``; with the peak GPU memory of
   each step, which shows the explicit path's ``L x L`` weights.

Without a GPU it says so on one line, runs ``tests/test_cuda.py``'s harness
on the CPU (``MMLEARN_TEST_DEVICE=cpu``), and times short sequences only.
The exit status is pytest's (0 when every test passed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from attention import function_step, median_ms, module_step  # noqa: E402

import mmlearn  # noqa: E402
from mmlearn.functional import attention  # noqa: E402
from mmlearn.nn import MultiHeadAttention  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_cuda.py", "tests/test_compile_and_precision.py"]


def describe(device: torch.device) -> str:
    """One line about the machine; it starts with "no GPU" when there is none."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (
            f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}"
        )
    return (
        f"no GPU: torch {torch.__version__} sees no CUDA device; running the CPU part "
        f"only ({torch.get_num_threads()} threads). Run this again on a GPU machine."
    )


def run_tests(device: torch.device) -> int:
    """pytest on the device tests; returns its exit status."""
    env = dict(os.environ)
    if device.type != "cuda":
        env["MMLEARN_TEST_DEVICE"] = "cpu"
    files = TESTS if device.type == "cuda" else TESTS[:1]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def peak_mib(step: Callable[[], None], device: torch.device) -> float:
    """Peak GPU memory of one step in MiB (NaN on a CPU)."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - start) / 2**20


def steps_at(
    length: int, batch: int, d_model: int, heads: int, device: torch.device, dtype: torch.dtype
) -> dict[str, Callable[[], None]]:
    """The five variants of ``bench/attention.py`` at one sequence length."""
    x = torch.randn(batch, length, d_model, device=device, dtype=dtype)
    theirs = nn.MultiheadAttention(d_model, heads, batch_first=True, device=device, dtype=dtype)
    fused = MultiHeadAttention(d_model, heads, fused=True).to(device, dtype)
    explicit = MultiHeadAttention(d_model, heads, fused=False).to(device, dtype)
    shape = (batch, heads, length, d_model // heads)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    return {
        "torch MHA": module_step(theirs, x),
        "fused": module_step(fused, x),
        "explicit": module_step(explicit, x),
        "SDPA": function_step(torch.nn.functional.scaled_dot_product_attention, q, k, v),
        "functional": function_step(attention, q, k, v),
    }


def bench(
    lengths: list[int], device: torch.device, dtype: torch.dtype, batch: int, min_run_time: float
) -> None:
    print(
        f"\nattention forward+backward on {device} ({dtype}), B={batch}, d_model=256, h=8: "
        "median ms per step (ratio to PyTorch's counterpart) and peak MiB"
    )
    header = (
        f"{'L':>6} | {'torch MHA':>9} {'fused':>13} {'explicit':>13} | {'SDPA':>9} "
        f"{'functional':>13} | {'MiB MHA':>8} {'fused':>8} {'explicit':>9} "
        f"{'SDPA':>8} {'functional':>10}"
    )
    print(header)
    print("-" * len(header))
    for length in lengths:
        steps = steps_at(length, batch, 256, 8, device, dtype)
        ms = {name: median_ms(step, min_run_time) for name, step in steps.items()}
        mib = {name: peak_mib(step, device) for name, step in steps.items()}
        print(
            f"{length:>6} | {ms['torch MHA']:>9.3f} "
            f"{ms['fused']:>7.3f} ({ms['fused'] / ms['torch MHA']:.2f}) "
            f"{ms['explicit']:>7.3f} ({ms['explicit'] / ms['torch MHA']:.2f}) | "
            f"{ms['SDPA']:>9.3f} {ms['functional']:>7.3f} "
            f"({ms['functional'] / ms['SDPA']:.2f}) | {mib['torch MHA']:>8.1f} "
            f"{mib['fused']:>8.1f} {mib['explicit']:>9.1f} {mib['SDPA']:>8.1f} "
            f"{mib['functional']:>10.1f}",
            flush=True,
        )
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="only the timings")
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=None,
        help="sequence lengths (default: 256 ... 8192 on a GPU, 64 128 on a CPU)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    print(describe(device), flush=True)
    status = 0 if args.skip_tests else run_tests(device)
    mmlearn.seed_everything(0)
    if device.type == "cuda":
        lengths = args.lengths or [256, 1024, 4096, 8192]
        bench(lengths, device, torch.float32, batch=8, min_run_time=0.2)
        if torch.cuda.is_bf16_supported():
            bench(lengths, device, torch.bfloat16, batch=8, min_run_time=0.2)
    else:
        bench(args.lengths or [64, 128], device, torch.float32, batch=2, min_run_time=0.1)
    print(
        f"\ntests: {'passed' if status == 0 else f'FAILED (pytest exit {status})'}; "
        f"total {time.perf_counter() - start:.0f} s"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
