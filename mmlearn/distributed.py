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

__all__ = ["gather_features", "init_distributed", "is_distributed", "rank_and_world_size"]


def is_distributed() -> bool:
    """True when a process group is initialised and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's rows.

    The same as ``torch.distributed.nn.functional.all_gather`` followed by
    ``torch.cat`` (that function is deprecated in recent PyTorch releases),
    written out so that the gradient rule is visible: if every rank r computes a loss L_r from the
    gathered rows, the gradient of ``sum_r L_r`` with respect to this rank's
    rows is the sum over ranks of their gradients for those rows.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        rank, world_size = rank_and_world_size()
        gathered = [torch.empty_like(features) for _ in range(world_size)]
        dist.all_gather(gathered, features.contiguous())
        ctx.rows = slice(rank * features.shape[0], (rank + 1) * features.shape[0])
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # sum of every rank's gradient
        return grad[ctx.rows]


def _check_same_rows(features: torch.Tensor, world_size: int) -> None:
    """Debug mode: every rank has as many rows (an all-gather of the sizes and a host read)."""
    mine = torch.tensor([features.shape[0]], device=features.device)
    sizes = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(sizes, mine)
    rows = [int(size) for size in sizes]
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
    of rows are summed and handed to the rank that owns those rows. With
    ``with_grad=False`` the other ranks' rows are constants; this rank's own
    rows are put back as the original tensor so that at least the local
    gradient flows.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return features
    if debug_enabled():
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
