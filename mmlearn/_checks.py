"""Input validation shared by the whole package.

Every public function checks its inputs with these helpers, so a wrong call
fails at once with a message that names the argument, what was expected and
what was given, instead of failing deep inside a matrix product.

Two kinds of checks:

* checks on Python values, types, shapes and dtypes cost nothing on a GPU
  and always run;
* checks on the *values inside a tensor* (labels in range, a mask that
  selects something, finite scores, a positive tensor temperature) must read
  the tensor back to the host: on a GPU each one waits for every queued
  kernel (a host-device synchronisation), and under ``torch.compile`` it
  breaks the graph. They run only in debug mode: ``mmlearn.set_debug(True)``,
  or the environment variable ``MMLEARN_DEBUG=1`` when mmlearn is imported.
  Turn it on while writing a notebook or chasing a NaN, off for speed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

_debug = os.environ.get("MMLEARN_DEBUG", "0").strip().lower() not in ("", "0", "false", "no")


def set_debug(enabled: bool) -> bool:
    """Turn the checks on tensor values on or off; returns the previous setting.

    Off by default (or as the environment variable ``MMLEARN_DEBUG`` says).
    """
    global _debug
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous, _debug = _debug, enabled
    return previous


def debug_enabled() -> bool:
    """True when the checks on tensor values run (see :func:`set_debug`)."""
    return _debug


def check_tensor(
    name: str, value: object, *, ndim: int | Sequence[int] | None = None, floating: bool = False
) -> torch.Tensor:
    """Check that ``value`` is a tensor, optionally of a given rank and a float dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            wanted = " or ".join(str(n) for n in allowed)
            raise ValueError(
                f"{name} must have {wanted} dimensions, got shape {tuple(value.shape)}"
            )
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    return value


def check_min_dim(name: str, value: torch.Tensor, min_dim: int) -> None:
    """Check that ``value`` has at least ``min_dim`` dimensions."""
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions, got shape {tuple(value.shape)}"
        )


def check_same_size(name_a: str, size_a: int, name_b: str, size_b: int, what: str) -> None:
    """Check that two sizes agree, e.g. the batch sizes of two inputs."""
    if size_a != size_b:
        raise ValueError(f"{what} of {name_a} ({size_a}) and {name_b} ({size_b}) must be equal")


def check_positive(name: str, value: float | torch.Tensor) -> None:
    """Check that a number (for example a temperature) is strictly positive and finite.

    A tensor's value is read (a host sync) only in debug mode (:func:`set_debug`).
    """
    if isinstance(value, torch.Tensor):
        if not debug_enabled():
            return
        number = float(value.detach().reshape(-1)[0]) if value.numel() == 1 else None
    else:
        number = value
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not (0 < number < float("inf"))
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_probability(name: str, value: float) -> None:
    """Check that a number lies in [0, 1]."""
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_positive_int(name: str, value: object) -> int:
    """Check that ``value`` is an int >= 1 (booleans are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_mask(name: str, mask: torch.Tensor | None, target_shape: Sequence[int]) -> None:
    """Check that a boolean mask (True = may attend) broadcasts to ``target_shape``."""
    if mask is None:
        return
    check_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean tensor (True = may attend), got {mask.dtype}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, tuple(target_shape))
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(target_shape):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} cannot broadcast to {tuple(target_shape)}"
        )
