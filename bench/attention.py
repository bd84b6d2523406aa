"""Time mmlearn's attention against PyTorch's (forward + backward), on one device.

    python bench/attention.py                      # the best device, float32
    python bench/attention.py --device cpu --lengths 64 256
    python bench/attention.py --device cuda --dtype bfloat16

Rows: sequence lengths L at batch B, width d_model, h heads. Columns: median
milliseconds per forward+backward step and the ratio to PyTorch's counterpart:

* ``torch MHA``: ``torch.nn.MultiheadAttention(batch_first=True)`` with
  ``need_weights=False`` (its fused path);
* ``fused``: ``mmlearn.nn.MultiHeadAttention`` (``F.scaled_dot_product_attention``);
* ``explicit``: the same module with ``fused=False`` (forms the weights);
* ``SDPA`` vs ``functional``: ``F.scaled_dot_product_attention`` against
  ``mmlearn.functional.attention`` on ``(B, h, L, d_head)`` tensors.

The fused module should be within about 1.10x of ``torch MHA``; the explicit
paths are expected to be slower (they store the ``L x L`` weights).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

import mmlearn
from mmlearn.functional import attention
from mmlearn.nn import MultiHeadAttention

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def median_ms(step: Callable[[], None], min_run_time: float, warmup: int = 3) -> float:
    """Median time of ``step`` in milliseconds, after a few warm-up calls."""
    for _ in range(warmup):
        step()
    measurement = Timer(stmt="step()", globals={"step": step}).blocked_autorange(
        min_run_time=min_run_time
    )
    return measurement.median * 1e3


def module_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward pass of a self-attention module (weights not requested)."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        output = module(x, x, x, need_weights=False)[0]
        output.sum().backward()

    return step


def function_step(
    function: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> Callable[[], None]:
    """One forward + backward pass of an attention function that returns the output first."""

    def step() -> None:
        q.grad = k.grad = v.grad = None
        output = function(q, k, v)
        output = output[0] if isinstance(output, tuple) else output
        output.sum().backward()

    return step


def bench_length(
    length: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Time the five variants at one sequence length."""
    batch, d_model, heads = args.batch, args.d_model, args.heads
    x = torch.randn(batch, length, d_model, device=device, dtype=dtype)
    theirs = nn.MultiheadAttention(d_model, heads, batch_first=True, device=device, dtype=dtype)
    fused = MultiHeadAttention(d_model, heads, fused=True).to(device, dtype)
    explicit = MultiHeadAttention(d_model, heads, fused=False).to(device, dtype)
    shape = (batch, heads, length, d_model // heads)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    run = args.min_run_time
    return {
        "torch MHA": median_ms(module_step(theirs, x), run),
        "fused": median_ms(module_step(fused, x), run),
        "explicit": median_ms(module_step(explicit, x), run),
        "SDPA": median_ms(function_step(F.scaled_dot_product_attention, q, k, v), run),
        "functional": median_ms(function_step(attention, q, k, v), run),
    }


def print_table(rows: dict[int, dict[str, float]]) -> None:
    header = (
        f"{'L':>6} | {'torch MHA':>10} {'fused':>10} {'ratio':>6} {'explicit':>10} "
        f"{'ratio':>6} | {'SDPA':>10} {'functional':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for length, t in rows.items():
        print(
            f"{length:>6} | {t['torch MHA']:>10.3f} {t['fused']:>10.3f} "
            f"{t['fused'] / t['torch MHA']:>6.2f} {t['explicit']:>10.3f} "
            f"{t['explicit'] / t['torch MHA']:>6.2f} | {t['SDPA']:>10.3f} "
            f"{t['functional']:>10.3f} {t['functional'] / t['SDPA']:>6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument(
        "--min-run-time", type=float, default=0.5, help="seconds of measurement per cell"
    )
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else mmlearn.get_device()
    dtype = DTYPES[args.dtype]
    mmlearn.seed_everything(0)
    print(
        f"forward+backward, median ms per step on {device} ({args.dtype}), B={args.batch}, "
        f"d_model={args.d_model}, heads={args.heads}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print_table({length: bench_length(length, args, device, dtype) for length in args.lengths})


if __name__ == "__main__":
    main()
