"""Inference: batched prediction and latency/throughput measurement (book section 3.1.3).

Timing on a GPU needs care: CUDA kernels run asynchronously, so a Python
timer around a forward pass measures only how long it took to *queue* the
work. :func:`measure_latency` calls ``torch.cuda.synchronize`` before reading
the clock, and runs a few warm-up calls first (the first calls pay for
memory allocation, kernel selection and caches).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from mmlearn._checks import check_positive_int, check_tensor

__all__ = ["measure_latency", "predict_batched"]


def _as_tuple(inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Validate ``inputs``: one tensor or a sequence of tensors with the same first dimension."""
    tensors = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not tensors:
        raise ValueError("inputs must hold at least one tensor")
    for index, tensor in enumerate(tensors):
        check_tensor(f"inputs[{index}]", tensor)
        if tensor.dim() == 0 or tensor.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"inputs must share their first (batch) dimension "
                f"{tensors[0].shape[0]}, inputs[{index}] has shape "
                f"{tuple(tensor.shape)}"
            )
    return tensors


@torch.inference_mode()
def predict_batched(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    batch_size: int,
    device: torch.device | str,
) -> torch.Tensor:
    """Run ``model`` over ``inputs`` in batches, in eval mode, without building a graph.

    Args:
        model: called as ``model(*batch)``; if it returns a tuple (as the book's models
            do: ``(logits, attentions)``), its first element is kept.
        inputs: one tensor or a sequence of tensors sharing the first dimension ``N``
            (for example ``(images, ids, valid)``); they may live on the CPU.
        batch_size: examples per forward pass.
        device: where to run; each batch is moved there, each output moved back.

    Returns:
        The outputs of all batches concatenated on the CPU, ``(N, ...)``. The model's
        train/eval mode is restored afterwards.
    """
    check_positive_int("batch_size", batch_size)
    tensors = _as_tuple(inputs)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for start in range(0, tensors[0].shape[0], batch_size):
            batch = [tensor[start : start + batch_size].to(device) for tensor in tensors]
            output = model(*batch)
            output = output[0] if isinstance(output, tuple) else output
            outputs.append(output.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.inference_mode()
def measure_latency(
    fn: Callable[..., object],
    batch_sizes: Sequence[int],
    make_inputs: Callable[[int], Sequence[torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
) -> pd.DataFrame:
    """Time ``fn(*make_inputs(b))`` for each batch size ``b``.

    For every batch size the inputs are made once (not timed), ``fn`` runs
    ``warmup`` times untimed, then ``repeats`` timed runs, each between two
    device synchronisations.

    Args:
        fn: the function to time, for example a model in eval mode.
        batch_sizes: the batch sizes to try.
        make_inputs: ``b -> inputs`` already on ``device``.
        device: the device ``fn`` runs on (to synchronise a GPU before reading the clock).
        warmup, repeats: untimed and timed calls per batch size.

    Returns:
        A DataFrame with one row per batch size: ``batch_size``, ``latency_ms``
        (median of the repeats), ``latency_ms_min``, ``throughput`` (examples per
        second, from the median) and ``ms_per_example``.
    """
    device = torch.device(device)
    if not batch_sizes:
        raise ValueError("batch_sizes must not be empty")
    for size in batch_sizes:
        check_positive_int("batch_sizes", size)
    check_positive_int("repeats", repeats)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    rows = []
    for size in batch_sizes:
        inputs = tuple(make_inputs(size))
        for _ in range(warmup):
            fn(*inputs)
        times = []
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            fn(*inputs)
            _synchronize(device)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append(
            {
                "batch_size": size,
                "latency_ms": 1e3 * median,
                "latency_ms_min": 1e3 * min(times),
                "throughput": size / median,
                "ms_per_example": 1e3 * median / size,
            }
        )
    return pd.DataFrame(rows)
