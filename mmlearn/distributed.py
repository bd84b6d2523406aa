"""Small helpers for data-parallel training with ``torch.distributed``.

Under ``torchrun`` every process (a "rank") holds a copy of the model and a
slice of each global batch. A contrastive loss needs the *other* ranks'
features as negatives, so :func:`gather_features` collects them; the rest of
this module starts and stops the process group for :mod:`mmlearn.train`.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from mmlearn._checks import debug_enabled
from mmlearn.utils import get_device

__all__ = [
    "BACKENDS_WITHOUT_REDUCE_SCATTER",
    "gather_features",
    "init_distributed",
    "is_distributed",
    "rank_and_world_size",
]


def is_distributed() -> bool:
    """True when a process group is initialised and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# Backends whose process groups have no reduce-scatter: the backward of the
# gather falls back to an all-reduce there. NCCL has it. Gloo gained a
# single-tensor reduce-scatter in pytorch/pytorch#112144 (merged by November
# 2023) and #118911 (February 2024), both before torch 2.4 (July 2024), mmlearn's
# floor (mmlearn/_compat.py); tests/test_clip_loss_distributed.py checks gloo on
# the pinned torch. ProcessGroupMPI does not implement it.
BACKENDS_WITHOUT_REDUCE_SCATTER = frozenset({"mpi"})

# torch 2.14 renamed the single-tensor collectives (the old names warn); older releases
# have only the old ones.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's rows.

    The same as ``torch.distributed.nn.functional.all_gather`` followed by
    ``torch.cat`` (that function is deprecated in recent PyTorch releases),
    written out so that the gradient rule is visible: if every rank r computes a loss L_r from the
    gathered rows, the gradient of ``sum_r L_r`` with respect to this rank's
    rows is the sum over ranks of their gradients for those rows.

    That sum is one reduce-scatter: each rank sends every other rank the
    block of rows that rank owns and receives only the sum for its own block,
    about ``(N - 1) / N`` of the gradient per rank, where an all-reduce of the
    whole gradient followed by a slice moves about twice that. Backends
    named in :data:`BACKENDS_WITHOUT_REDUCE_SCATTER` take that all-reduce.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        rank, world_size = rank_and_world_size()
        gathered = features.new_empty((world_size * features.shape[0], *features.shape[1:]))
        _all_gather_single(gathered, features.contiguous())
        ctx.rank, ctx.rows = rank, features.shape[0]
        return gathered

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad_output = grad_output.contiguous()
        if dist.get_backend() in BACKENDS_WITHOUT_REDUCE_SCATTER:
            total = grad_output.clone()
            dist.all_reduce(total, op=dist.ReduceOp.SUM)  # sum of every rank's gradient
            return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]
        grad = grad_output.new_empty((ctx.rows, *grad_output.shape[1:]))
        _reduce_scatter_single(grad, grad_output, op=dist.ReduceOp.SUM)
        return grad


def _check_same_rows(features: torch.Tensor, world_size: int) -> None:
    """Every rank has as many rows (an all-gather of the sizes, read on the host)."""
    mine = torch.tensor([features.shape[0]], device=features.device)
    sizes = mine.new_empty(world_size)
    _all_gather_single(sizes, mine)
    rows = sizes.tolist()
    if len(set(rows)) > 1:
        raise ValueError(
            f"every rank must pass the same local batch size to the gather, "
            f"got {rows} rows per rank (use drop_last=True)"
        )


def gather_features(features: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Concatenate ``features`` (``(b, D)`` on each rank) from all ranks, in rank order.

    Every rank must pass the same local batch size ``b``; the result is
    ``(world_size * b, D)`` and rows ``rank * b : (rank + 1) * b`` are this
    rank's own features.

    With ``with_grad=True`` the gather is differentiable (:class:`_GatherWithGrad`):
    in the backward pass the gradients that every rank computes for a block
    of rows are summed (one reduce-scatter) and handed to the rank that owns
    those rows. With ``with_grad=False`` the other ranks' rows are constants;
    this rank's own rows are put back as the original tensor so that at least
    the local gradient flows.

    Unequal local batch sizes raise a ``ValueError`` naming them. The
    collectives cannot report them themselves: gloo aborts the process (an
    uncatchable C++ error on one rank, wrong rows on the other) and NCCL may
    hang, so the sizes are exchanged first. For CPU tensors (gloo) that check
    always runs: it costs one tiny collective and no device sync. For GPU
    tensors it would make the host wait for the device at every step, so it
    runs only under :func:`mmlearn.set_debug`; :func:`mmlearn.train.train`
    checks the loaders' batch sizes once before training instead.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return features
    if features.device.type == "cpu" or debug_enabled():
        _check_same_rows(features, world_size)
    if with_grad:
        return _GatherWithGrad.apply(features)
    gathered = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(gathered, features.detach().contiguous())
    gathered[rank] = features
    return torch.cat(gathered, dim=0)


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes, or run alone.

    ``torchrun`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
    ``LOCAL_WORLD_SIZE``; the backend is NCCL with one GPU per process when
    the machine has a GPU for each of its processes, and gloo on the CPU otherwise.
    Without those variables nothing is initialised and the device is
    :func:`mmlearn.get_device`'s choice. Returns
    ``(rank, world_size, device)``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, get_device()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if torch.cuda.device_count() >= processes_here:  # the same answer on every rank
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device
