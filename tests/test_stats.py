"""mmlearn.stats.difference_of_means against the statistics module and a hand-computed case."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
import torch

from mmlearn.stats import difference_of_means


def test_a_hand_computed_case():
    # means 2 and 0; sample variances 1 and 0 over three runs: SE = sqrt(1/3)
    difference, error = difference_of_means([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert difference == pytest.approx(2.0)
    assert error == pytest.approx(math.sqrt(1 / 3))


@pytest.mark.parametrize("sizes", [(3, 3), (2, 5), (7, 4)])
def test_matches_the_statistics_module(sizes):
    generator = np.random.default_rng(sum(sizes))
    a, b = (generator.normal(0.8, 0.05, size).tolist() for size in sizes)
    expected_error = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    difference, error = difference_of_means(a, b)
    assert difference == pytest.approx(statistics.fmean(a) - statistics.fmean(b), abs=1e-12)
    assert error == pytest.approx(expected_error, rel=1e-12)


def test_swapping_flips_the_sign_and_keeps_the_error():
    a, b = [0.91, 0.93, 0.90], [0.85, 0.88, 0.86, 0.87]
    forward, backward = difference_of_means(a, b), difference_of_means(b, a)
    assert forward[0] == pytest.approx(-backward[0]) and forward[1] == pytest.approx(backward[1])


def test_a_shift_moves_the_difference_not_the_error():
    a, b = np.array([0.5, 0.7, 0.6]), np.array([0.4, 0.45, 0.5])
    shifted = difference_of_means(a + 0.1, b)
    assert shifted[0] == pytest.approx(difference_of_means(a, b)[0] + 0.1)
    assert shifted[1] == pytest.approx(difference_of_means(a, b)[1])


def test_identical_runs_have_no_error():
    assert difference_of_means([0.7, 0.7], [0.6, 0.6, 0.6]) == pytest.approx((0.1, 0.0))


def test_accepts_series_arrays_and_tensors_alike():
    values_a, values_b = [0.2, 0.4, 0.3], [0.1, 0.2, 0.3]
    expected = difference_of_means(values_a, values_b)
    for kind in (pd.Series, np.array, torch.tensor):
        assert difference_of_means(kind(values_a), kind(values_b)) == pytest.approx(
            expected, rel=1e-6
        )


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([0.5], [0.4, 0.6], "a must hold at least two runs"),
        ([0.5, 0.6], [], "b must hold at least two runs"),
        ([[0.5, 0.6]], [0.4, 0.6], r"a must be one value per run \(1-D\)"),
        ([0.5, float("nan")], [0.4, 0.6], "a must be finite"),
        ([0.5, 0.6], [0.4, float("inf")], "b must be finite"),
    ],
)
def test_bad_inputs(a, b, message):
    with pytest.raises(ValueError, match=message):
        difference_of_means(a, b)
