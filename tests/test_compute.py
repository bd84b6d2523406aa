"""The training-cost calculator and the power-law fit of mmlearn.compute (book chapter 8)."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmlearn.compute import (
    SECONDS_PER_HOUR,
    PowerLaw,
    fit_power_law,
    gpu_hours,
    training_flops,
    training_seconds,
)

positive = st.floats(min_value=1e-3, max_value=1e15, allow_nan=False, allow_infinity=False)
fraction = st.floats(min_value=1e-3, max_value=1.0)


def test_gpt3_matches_the_published_compute_within_one_percent():
    # Brown et al. (2020), Table D.1: GPT-3 175B, 300B training tokens, 3.14e23 FLOPs.
    flops = training_flops(175e9, 300e9)
    assert flops == pytest.approx(3.15e23)
    assert abs(flops - 3.14e23) / 3.14e23 < 0.01


def test_hand_computed_case():
    assert training_flops(2, 3) == 36.0
    # 36 FLOPs at 4 FLOP/s peak and 50 % utilisation on 3 devices: 36 / (4 * 0.5 * 3) = 6 s.
    assert training_seconds(36.0, 4.0, 0.5, num_devices=3) == pytest.approx(6.0)
    assert gpu_hours(36.0 * SECONDS_PER_HOUR, 4.0, 0.5) == pytest.approx(18.0)


@given(positive, positive, st.integers(min_value=1, max_value=8))
def test_flops_are_linear_in_parameters_and_tokens(n, d, k):
    assert training_flops(k * n, d) == pytest.approx(k * training_flops(n, d), rel=1e-12)
    assert training_flops(n, k * d) == pytest.approx(k * training_flops(n, d), rel=1e-12)


@given(positive, positive, fraction, st.integers(min_value=1, max_value=4096))
def test_time_times_rate_gives_back_the_flops(flops, peak, mfu, devices):
    seconds = training_seconds(flops, peak, mfu, num_devices=devices)
    assert seconds * peak * mfu * devices == pytest.approx(flops, rel=1e-12)


@given(positive, positive, fraction, st.integers(min_value=1, max_value=4096))
def test_device_hours_do_not_depend_on_the_device_count(flops, peak, mfu, devices):
    hours_on_many = devices * training_seconds(flops, peak, mfu, devices) / SECONDS_PER_HOUR
    assert hours_on_many == pytest.approx(gpu_hours(flops, peak, mfu), rel=1e-12)


@pytest.mark.parametrize(
    "name, call",
    [
        ("num_parameters", lambda: training_flops(0, 1)),
        ("num_parameters", lambda: training_flops(-5, 1)),
        ("num_tokens", lambda: training_flops(1, math.inf)),
        ("num_tokens", lambda: training_flops(1, math.nan)),
        ("flops", lambda: training_seconds(0, 1, 0.5)),
        ("peak_flops_per_second", lambda: training_seconds(1, -1, 0.5)),
        ("utilization", lambda: training_seconds(1, 1, 0.0)),
        ("utilization", lambda: training_seconds(1, 1, 1.5)),
        ("num_devices", lambda: training_seconds(1, 1, 0.5, num_devices=0)),
        ("num_devices", lambda: training_seconds(1, 1, 0.5, num_devices=2.0)),
        ("utilization", lambda: gpu_hours(1, 1, 2.0)),
    ],
)
def test_bad_values_are_rejected_by_name(name, call):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("value", ["1e9", True, None, [1.0]])
def test_non_numbers_are_rejected_by_name(value):
    with pytest.raises(TypeError, match="num_parameters"):
        training_flops(value, 1.0)


def test_numpy_scalars_are_accepted():
    assert training_flops(np.int64(2), np.float32(3.0)) == 36.0


def _reference_fit(x, y):
    """Independent reference: ordinary least squares via numpy's polyfit in log-log space."""
    slope, intercept = np.polyfit(np.log(x), np.log(y), deg=1)
    return math.exp(intercept), -slope


def test_fit_recovers_an_exact_power_law():
    x = np.array([1e3, 1e4, 1e5, 1e6])
    law = fit_power_law(x, 5.0 * x**-0.3)
    assert law.coefficient == pytest.approx(5.0, rel=1e-10)
    assert law.exponent == pytest.approx(0.3, rel=1e-10)
    np.testing.assert_allclose(law(x), 5.0 * x**-0.3, rtol=1e-10)


def test_two_points_give_the_hand_computed_exponent():
    # y halves when x quadruples: alpha = log 2 / log 4 = 0.5, and a = y(1) = 8.
    law = fit_power_law([1.0, 4.0], [8.0, 4.0])
    assert law.exponent == pytest.approx(0.5)
    assert law.coefficient == pytest.approx(8.0)


@given(st.lists(st.tuples(st.floats(1.0, 1e6), st.floats(1e-3, 1e3)), min_size=3, max_size=12))
def test_fit_matches_numpy_polyfit_on_noisy_data(points):
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    if np.ptp(np.log(x)) < 1e-3:  # nearly all x equal: the line is ill-conditioned
        return
    law = fit_power_law(x, y)
    coefficient, exponent = _reference_fit(x, y)
    assert law.exponent == pytest.approx(exponent, rel=1e-6, abs=1e-6)
    assert math.log(law.coefficient) == pytest.approx(math.log(coefficient), rel=1e-6, abs=1e-6)


def test_fit_is_the_least_squares_line_among_perturbed_ones():
    rng = np.random.default_rng(0)
    x = np.logspace(2, 6, 9)
    y = 3.0 * x**-0.2 * np.exp(rng.normal(0, 0.05, x.size))
    law = fit_power_law(x, y)

    def squared_error(a, alpha):
        return float(np.sum((np.log(y) - np.log(a) + alpha * np.log(x)) ** 2))

    best = squared_error(law.coefficient, law.exponent)
    for da, dalpha in product([-1e-3, 0.0, 1e-3], repeat=2):
        if (da, dalpha) != (0.0, 0.0):
            assert best < squared_error(law.coefficient * (1 + da), law.exponent + dalpha)


def test_power_law_is_callable_on_arrays_and_numbers():
    law = PowerLaw(coefficient=2.0, exponent=1.0)
    assert law(4.0) == pytest.approx(0.5)
    np.testing.assert_allclose(law(np.array([1.0, 2.0])), [2.0, 1.0])


@pytest.mark.parametrize(
    "name, x, y",
    [
        ("x", [1.0, -2.0], [1.0, 1.0]),
        ("x", [1.0, 0.0], [1.0, 1.0]),
        ("y", [1.0, 2.0], [1.0, 0.0]),
        ("y", [1.0, 2.0], [1.0, math.nan]),
        ("x", [[1.0, 2.0]], [[1.0, 2.0]]),
        ("x and y", [1.0, 2.0, 3.0], [1.0, 2.0]),
        ("distinct", [2.0, 2.0], [1.0, 3.0]),
    ],
)
def test_fit_rejects_bad_inputs_by_name(name, x, y):
    with pytest.raises(ValueError, match=name):
        fit_power_law(x, y)
