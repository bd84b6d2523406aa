"""The oldest Python and PyTorch that mmlearn supports, checked when it is imported.

The floors follow from the features the package uses (``pyproject.toml``
states the same numbers):

* Python 3.10: ``X | Y`` unions in ``isinstance``, ``zip(..., strict=True)``;
* PyTorch 2.4: ``torch.optim.AdamW(fused=True)`` on the CPU
  (:func:`mmlearn.distill.fit_classifier`); also needed and older:
  ``init_process_group(device_id=...)`` (2.3), ``F.scaled_dot_product_attention``
  with a boolean mask (2.0).

An older PyTorch would fail later with an obscure message deep inside a
training run; this check fails at import with a clear one.
"""

from __future__ import annotations

import re
import sys

MIN_PYTHON = (3, 10)
MIN_TORCH = (2, 4)


def parse_version(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"2.4.1+cu121"`` or ``"2.6.0a0"``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a version number from {version!r}")
    return int(match.group(1)), int(match.group(2))


def require(torch_version: str, python_version: tuple[int, ...] = sys.version_info[:2]) -> None:
    """Raise ``ImportError`` when Python or PyTorch is older than the floors above."""
    if tuple(python_version[:2]) < MIN_PYTHON:
        raise ImportError(
            f"mmlearn needs Python >= {'.'.join(map(str, MIN_PYTHON))}, "
            f"this is {'.'.join(map(str, python_version))}"
        )
    if parse_version(torch_version) < MIN_TORCH:
        raise ImportError(
            f"mmlearn needs torch >= {'.'.join(map(str, MIN_TORCH))} (CPU AdamW(fused=True) "
            f"and more), found torch {torch_version}; upgrade with "
            "`pip install --upgrade torch`"
        )
