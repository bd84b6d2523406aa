"""Fixtures shared by the whole test suite (keep this file small and generic)."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # plots render without a display

import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test opened, so memory stays flat."""
    yield
    plt.close("all")


@pytest.fixture
def debug_mode():
    """mmlearn's debug mode (checks on tensor values) on for one test, then as it was."""
    from mmlearn import set_debug

    previous = set_debug(True)
    yield
    set_debug(previous)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU random generator with a fixed seed, for reproducible test tensors."""
    return torch.Generator().manual_seed(0)
