"""The notebooks' ``glue`` helper hands plain Python numbers to myst-nb."""

import numpy as np
import pytest
import torch

from mmlearn.book import glue, plain_value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64(0.25), 0.25),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7),
        (torch.tensor(0.75), 0.75),
        (torch.tensor([3]), 3),
    ],
)
def test_plain_value_unwraps_scalars(value, expected):
    plain = plain_value(value)
    assert type(plain) is type(expected)
    assert plain == expected
    assert repr(plain) == repr(expected)  # what myst-nb's format spec reads


@pytest.mark.parametrize("value", ["text", [1, 2], torch.zeros(2), np.zeros(3)])
def test_plain_value_leaves_other_values_alone(value):
    assert plain_value(value) is value


def test_glue_returns_the_plain_value(capsys):
    assert type(glue("ratio", np.float64(0.125))) is float
