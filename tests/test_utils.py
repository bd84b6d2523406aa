"""mmlearn.get_device and mmlearn.seed_everything."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import mmlearn
from mmlearn.nn import TransformerEncoderLayer


def draw() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.randn(5)  # noqa: NPY002


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    device = mmlearn.get_device()
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        mps = getattr(torch.backends, "mps", None)
        expected = "mps" if mps is not None and mps.is_available() else "cpu"
    assert device.type == expected
    torch.zeros(1, device=device)  # the device can hold a tensor
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert mmlearn.get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert mmlearn.get_device().type == "cpu"


def test_same_seed_gives_the_same_numbers_and_another_seed_does_not():
    mmlearn.seed_everything(123)
    first = draw()
    mmlearn.seed_everything(123)
    second = draw()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    mmlearn.seed_everything(124)
    third = draw()
    assert first[0] != third[0] and not torch.equal(first[2], third[2])


def test_seed_makes_module_initialisation_reproducible():
    mmlearn.seed_everything(0)
    a = TransformerEncoderLayer(8, 2, 16).state_dict()
    mmlearn.seed_everything(0)
    b = TransformerEncoderLayer(8, 2, 16).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_seed_everything_rejects_non_integers():
    with pytest.raises(TypeError, match="seed"):
        mmlearn.seed_everything(1.5)
