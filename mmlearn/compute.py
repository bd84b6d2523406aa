"""Back-of-the-envelope training cost, and power-law fits of scaling curves (book chapter 8).

Training a dense Transformer with ``N`` parameters on ``D`` tokens costs about
``C = 6 N D`` floating-point operations (Kaplan et al., 2020): ``2 N`` per token
for the forward pass (a multiply and an add per parameter) and about twice that
for the backward pass. Dividing by the hardware's peak rate times the fraction
of it that training actually reaches (the utilisation) turns FLOPs into time.

The second half fits ``y = a * x ** (-alpha)`` by least squares in log-log
space, the form in which scaling laws are usually reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PowerLaw",
    "SECONDS_PER_HOUR",
    "fit_power_law",
    "gpu_hours",
    "training_flops",
    "training_seconds",
]

SECONDS_PER_HOUR = 3600.0


def _check_positive_number(name: str, value: object) -> float:
    """Return ``value`` as a float after checking it is a real, finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not (0.0 < number < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def training_flops(num_parameters: float, num_tokens: float) -> float:
    """Training compute ``C = 6 N D`` in FLOPs. Implements {eq}`eq-training-flops`.

    ``num_parameters`` is ``N`` (Kaplan et al. count the non-embedding parameters;
    for large models the difference is small), ``num_tokens`` is ``D``, the number
    of training tokens processed. The rule ignores the attention's own
    ``O(L^2)`` term, which is small while the context is short next to ``12 d_model``.
    """
    n = _check_positive_number("num_parameters", num_parameters)
    d = _check_positive_number("num_tokens", num_tokens)
    return 6.0 * n * d


def training_seconds(
    flops: float, peak_flops_per_second: float, utilization: float, num_devices: int = 1
) -> float:
    """Wall-clock seconds to perform ``flops`` on ``num_devices`` accelerators.

    Each device delivers ``utilization * peak_flops_per_second`` (the model FLOPs
    utilisation, MFU); ``utilization`` must lie in ``(0, 1]``. Implements
    {eq}`eq-training-time`.
    """
    total = _check_positive_number("flops", flops)
    peak = _check_positive_number("peak_flops_per_second", peak_flops_per_second)
    mfu = _check_positive_number("utilization", utilization)
    if mfu > 1.0:
        raise ValueError(f"utilization must be a fraction in (0, 1], got {utilization!r}")
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be a positive integer, got {num_devices!r}")
    return total / (peak * mfu * num_devices)


def gpu_hours(flops: float, peak_flops_per_second: float, utilization: float) -> float:
    """Accelerator-hours (device count times hours) to perform ``flops``.

    The number does not depend on how many devices share the work: twice the
    devices finish in half the time.
    """
    return training_seconds(flops, peak_flops_per_second, utilization) / SECONDS_PER_HOUR


@dataclass(frozen=True)
class PowerLaw:
    """The curve ``y = coefficient * x ** (-exponent)`` (see {eq}`eq-power-law`)."""

    coefficient: float
    exponent: float

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        """Evaluate the curve at ``x`` (a number or an array of positive numbers)."""
        return self.coefficient * np.asarray(x, dtype=np.float64) ** (-self.exponent)


def _as_positive_array(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or not np.all(array > 0):
        raise ValueError(f"{name} must hold positive finite numbers, got {array.tolist()}")
    return array


def fit_power_law(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> PowerLaw:
    """Fit ``y = a * x ** (-alpha)`` by least squares on ``log y = log a - alpha log x``.

    Implements {eq}`eq-power-law`. Needs at least two distinct positive ``x``
    values and positive ``y`` values. A straight line in a log-log plot is a
    power law; the slope of that line is ``-alpha``.
    """
    xs = _as_positive_array("x", x)
    ys = _as_positive_array("y", y)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    if np.unique(xs).size < 2:
        raise ValueError(f"x must hold at least two distinct values, got {xs.tolist()}")
    log_x, log_y = np.log(xs), np.log(ys)
    centred_x = log_x - log_x.mean()
    slope = float(np.dot(centred_x, log_y - log_y.mean()) / np.dot(centred_x, centred_x))
    intercept = float(log_y.mean() - slope * log_x.mean())
    return PowerLaw(coefficient=math.exp(intercept), exponent=-slope)
