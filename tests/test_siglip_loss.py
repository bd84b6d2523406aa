"""SigLIP's pairwise sigmoid loss, {eq}`eq-siglip-loss` (functional and module).

Checked against a case computed by hand, a float64 loop over all N^2 pairs,
PyTorch's ``binary_cross_entropy_with_logits`` and (when installed) open_clip's
``SigLipLoss``; with properties, stability cases and bad inputs.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlearn.functional import clip_loss, siglip_loss
from mmlearn.losses import SigLipLoss


def _dot(u: torch.Tensor, v: torch.Tensor) -> float:
    return sum(float(a) * float(b) for a, b in zip(u.tolist(), v.tolist(), strict=True))


def ref_siglip_loss(image, text, scale, bias) -> float:
    """-1/N sum_ij log(1 / (1 + exp(-z_ij (t x_i.y_j + b)))), by loops over the pairs."""
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = scale * _dot(image[i], text[j]) + bias
            total += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    return total / n


def _unit(generator, *shape, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)


def test_hand_computed_two_by_two_case():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    # similarities [[0.6, 1.0], [0.8, 0.0]]; logits 2 s - 1 = [[0.2, 1.0], [0.6, -1.0]].
    # Matching pairs (z = +1) cost softplus(-0.2) and softplus(1.0); the others
    # (z = -1) cost softplus(1.0) and softplus(0.6); the sum is divided by N = 2.
    by_hand = (
        math.log1p(math.exp(-0.2)) + 2 * math.log1p(math.exp(1.0)) + math.log1p(math.exp(0.6))
    ) / 2
    assert by_hand == pytest.approx(2.1310755, abs=1e-6)
    torch.testing.assert_close(
        siglip_loss(image, text, 2.0, -1.0), torch.tensor(by_hand, dtype=torch.float64)
    )


@pytest.mark.parametrize("scale, bias", [(1.0, 0.0), (10.0, -10.0), (3.0, 2.5), (0.0, -4.0)])
def test_matches_the_loop_over_all_pairs(generator, scale, bias):
    image, text = _unit(generator, 6, 5), _unit(generator, 6, 5)
    expected = torch.tensor(ref_siglip_loss(image, text, scale, bias), dtype=torch.float64)
    torch.testing.assert_close(
        siglip_loss(image, text, scale, bias), expected, rtol=1e-12, atol=1e-12
    )


def test_equals_binary_cross_entropy_with_an_identity_target(generator):
    image, text = _unit(generator, 7, 4), _unit(generator, 7, 4)
    logits = 5.0 * image @ text.T - 3.0
    expected = (
        F.binary_cross_entropy_with_logits(
            logits, torch.eye(7, dtype=logits.dtype), reduction="sum"
        )
        / 7
    )
    torch.testing.assert_close(siglip_loss(image, text, 5.0, -3.0), expected)


def test_equals_open_clip_siglip_loss(generator):
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip is not installed")
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss_only", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    image, text = _unit(generator, 8, 6), _unit(generator, 8, 6)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    expected = module.SigLipLoss()(image, text, scale, bias)
    torch.testing.assert_close(siglip_loss(image, text, scale, bias), expected)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_zero_scale_and_bias_give_n_log_2(n):
    features = torch.eye(n, 5, dtype=torch.float64)
    torch.testing.assert_close(
        siglip_loss(features, features, 0.0, 0.0),
        torch.tensor(n * math.log(2.0), dtype=torch.float64),
    )


def test_aligned_orthonormal_pairs_with_a_centred_bias_cost_almost_nothing():
    features = torch.eye(4, dtype=torch.float64)
    # matching logits 100 - 50 = 50, others 0 - 50 = -50: every pair is classified right.
    assert siglip_loss(features, features, 100.0, -50.0).item() < 1e-20
    # the same features with a bias that makes every pair "positive" cost a lot.
    assert siglip_loss(features, features, 100.0, 50.0).item() > 100.0


def test_a_single_pair_is_one_logistic_term(generator):
    x, y = _unit(generator, 1, 3), _unit(generator, 1, 3)
    logit = 4.0 * (x @ y.T).squeeze() - 2.0
    torch.testing.assert_close(siglip_loss(x, y, 4.0, -2.0), F.softplus(-logit))


def test_symmetric_in_the_two_modalities(generator):
    image, text = _unit(generator, 5, 4), _unit(generator, 5, 4)
    torch.testing.assert_close(
        siglip_loss(image, text, 7.0, -2.0), siglip_loss(text, image, 7.0, -2.0)
    )


def test_a_batch_is_the_sum_of_its_pairs_unlike_clip(generator):
    image, text = _unit(generator, 4, 3), _unit(generator, 4, 3)
    n, scale, bias = 4, 5.0, -1.0
    positives = sum(siglip_loss(image[i : i + 1], text[i : i + 1], scale, bias) for i in range(n))
    negatives = sum(
        F.softplus(scale * image[i] @ text[j] + bias) for i in range(n) for j in range(n) if i != j
    )
    torch.testing.assert_close(n * siglip_loss(image, text, scale, bias), positives + negatives)
    # CLIP's softmax couples the pairs: its one-pair losses are all zero, the batch's is not.
    assert all(clip_loss(image[i : i + 1], text[i : i + 1], scale).item() == 0.0 for i in range(n))
    assert clip_loss(image, text, scale).item() > 0.0


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    scale=st.floats(0.0, 50.0),
    bias=st.floats(-20.0, 20.0),
)
def test_non_negative_and_invariant_to_permuting_the_pairs(n, seed, scale, bias):
    generator = torch.Generator().manual_seed(seed)
    image, text = _unit(generator, n, 3), _unit(generator, n, 3)
    loss = siglip_loss(image, text, scale, bias)
    assert loss.item() >= 0.0
    order = torch.randperm(n, generator=generator)
    torch.testing.assert_close(siglip_loss(image[order], text[order], scale, bias), loss)


def test_gradients_match_finite_differences(generator):
    image = _unit(generator, 4, 3).requires_grad_()
    text = _unit(generator, 4, 3).requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(siglip_loss, (image, text, scale, bias))


def test_finite_for_huge_logits_and_in_bfloat16(generator):
    image, text = _unit(generator, 8, 4), _unit(generator, 8, 4)
    assert torch.isfinite(siglip_loss(image, text, 1e4, -1e4))
    reference = siglip_loss(image.float(), text.float(), 10.0, -10.0)
    low = siglip_loss(image.bfloat16(), text.bfloat16(), 10.0, -10.0)
    assert torch.isfinite(low)
    torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.05)


GOOD = torch.zeros(4, 3)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: siglip_loss(GOOD, torch.zeros(3, 3), 1.0, 0.0), ValueError, "batch sizes"),
        (lambda: siglip_loss(GOOD, torch.zeros(4, 2), 1.0, 0.0), ValueError, "feature widths"),
        (lambda: siglip_loss(GOOD[0], GOOD, 1.0, 0.0), ValueError, "image_features"),
        (lambda: siglip_loss(GOOD.int(), GOOD, 1.0, 0.0), TypeError, "image_features"),
        (lambda: siglip_loss(GOOD, GOOD.double(), 1.0, 0.0), TypeError, "image_features"),
        (lambda: siglip_loss(GOOD, GOOD, -1.0, 0.0), ValueError, "logit_scale"),
        (lambda: siglip_loss(GOOD, GOOD, float("nan"), 0.0), ValueError, "logit_scale"),
        (lambda: siglip_loss(GOOD, GOOD, "10", 0.0), TypeError, "logit_scale"),
        (lambda: siglip_loss(GOOD, GOOD, 1.0, float("inf")), ValueError, "logit_bias"),
        (lambda: siglip_loss(GOOD, GOOD, 1.0, float("nan")), ValueError, "logit_bias"),
        (lambda: siglip_loss(GOOD, GOOD, 1.0, None), TypeError, "logit_bias"),
        (lambda: siglip_loss(GOOD, GOOD, 1.0, torch.zeros(2)), ValueError, "logit_bias"),
        (lambda: siglip_loss(GOOD, GOOD, 1.0, torch.tensor(1)), TypeError, "logit_bias"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_module_starts_at_the_papers_t_10_and_b_minus_10(generator):
    image, text = _unit(generator, 5, 4).float(), _unit(generator, 5, 4).float()
    loss_fn = SigLipLoss()
    torch.testing.assert_close(loss_fn(image, text), siglip_loss(image, text, 10.0, -10.0))
    assert "t=10, b=-10" in repr(loss_fn)


def test_module_learns_its_scale_and_bias(generator):
    image, text = _unit(generator, 5, 4).float(), _unit(generator, 5, 4).float()
    loss_fn = SigLipLoss()
    loss_fn(image, text).backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_bias.grad is not None
    assert loss_fn.logit_bias.grad.item() != 0.0


def test_module_fixed_values_are_buffers():
    loss_fn = SigLipLoss(learnable=False)
    assert list(loss_fn.parameters()) == []
    assert set(dict(loss_fn.named_buffers())) == {"logit_scale", "logit_bias"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init_logit_scale": float("inf")}, "init_logit_scale"),
        ({"init_logit_bias": float("nan")}, "init_logit_bias"),
    ],
)
def test_module_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SigLipLoss(**kwargs)
