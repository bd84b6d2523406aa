"""How the book compares two settings run over a few seeds.

:func:`difference_of_means` gives ``mean(a) - mean(b)`` and its standard error;
the book calls a difference *measurable* when it exceeds two standard errors,
and says "no measurable difference" otherwise (never "no difference").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["difference_of_means"]


def _runs(name: str, values: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    runs = np.asarray(values, dtype=np.float64)
    if runs.ndim != 1:
        raise ValueError(f"{name} must be one value per run (1-D), got shape {runs.shape}")
    if runs.size < 2:
        raise ValueError(
            f"{name} must hold at least two runs (a spread needs two), got {runs.size}"
        )
    if not np.isfinite(runs).all():
        raise ValueError(f"{name} must be finite, got {runs.tolist()}")
    return runs


def difference_of_means(
    a: Sequence[float] | np.ndarray | torch.Tensor, b: Sequence[float] | np.ndarray | torch.Tensor
) -> tuple[float, float]:
    """``mean(a) - mean(b)`` and its standard error, for two settings' runs (e.g. seeds).

    The standard error is Welch's, :math:`\\sqrt{s_a^2 / n_a + s_b^2 / n_b}`, with
    the sample variances :math:`s^2` (divided by :math:`n - 1`); ``a`` and ``b``
    may hold different numbers of runs. Lists, NumPy arrays, pandas Series and
    tensors (on any device) are accepted.

    Raises:
        ValueError: when ``a`` or ``b`` is not 1-D, holds fewer than two runs, or
            holds a NaN or an infinity.
    """
    x, y = _runs("a", a), _runs("b", b)
    error = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    return float(x.mean() - y.mean()), error
