"""Input handling shared by the plotting functions of :mod:`mmlearn.viz`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_numpy(name: str, array: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float64 NumPy copy of a tensor (any device, with or without grad) or array."""
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    if isinstance(array, np.ndarray):
        return array.astype(np.float64)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(array).__name__}")


def check_labels(name: str, labels: Sequence[str] | None, length: int) -> None:
    """Raise ValueError unless ``labels`` is None or has ``length`` entries."""
    if labels is not None and len(labels) != length:
        raise ValueError(
            f"{name} must have {length} entries (one per row/column), got {len(labels)}"
        )
