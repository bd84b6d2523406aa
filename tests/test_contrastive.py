"""Contrastive losses (functional and modules), CLIP/LiT models and the training loop.

Every formula is checked against an independent float64 reference written as
explicit loops over samples, against open_clip where it has the same loss, on
hand-computed cases (log N, log(2N - 1), log(M + 1)), with hypothesis
properties, for stability (scores of 1e4, bfloat16) and for bad inputs.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from mmlearn.data.digits import load_digits_captions, prompts_en
from mmlearn.data.tokenizer import WordTokenizer
from mmlearn.functional import clip_loss, contrastive_objective, info_nce, nt_xent
from mmlearn.losses import ClipLoss, InfoNCELoss, NTXentLoss
from mmlearn.nn import (
    CLIPModel,
    LiTModel,
    SmallConvEncoder,
    TextTransformer,
    VisionTransformer,
    make_small_clip,
)
from mmlearn.train import clip_step, digits_zero_shot_accuracy, main, train

# ----------------------------------------------------------------------------------------
# Independent references: plain Python loops over samples, float64.
# ----------------------------------------------------------------------------------------


def _dot(u: torch.Tensor, v: torch.Tensor) -> float:
    return sum(float(a) * float(b) for a, b in zip(u.tolist(), v.tolist(), strict=True))


def ref_info_nce(anchor, positive, negatives, temperature) -> list[float]:
    """-log(exp(s+) / (exp(s+) + sum exp(s-))) for every anchor, by loops."""
    losses = []
    for n in range(anchor.shape[0]):
        if negatives is None:
            negs = [positive[m] for m in range(positive.shape[0]) if m != n]
        elif negatives.dim() == 3:
            negs = list(negatives[n])
        else:
            negs = list(negatives)
        positive_term = math.exp(_dot(anchor[n], positive[n]) / temperature)
        denominator = positive_term + sum(math.exp(_dot(anchor[n], x) / temperature) for x in negs)
        losses.append(-math.log(positive_term / denominator))
    return losses


def ref_clip_loss(image, text, scale) -> float:
    """Mean of the image->text and text->image cross-entropies, by loops."""
    n = image.shape[0]
    image_to_text = text_to_image = 0.0
    for i in range(n):
        row = [scale * _dot(image[i], text[j]) for j in range(n)]
        column = [scale * _dot(image[j], text[i]) for j in range(n)]
        image_to_text += -row[i] + math.log(sum(math.exp(x) for x in row))
        text_to_image += -column[i] + math.log(sum(math.exp(x) for x in column))
    return (image_to_text + text_to_image) / (2 * n)


def ref_nt_xent(z1, z2, temperature) -> float:
    """SimCLR's loss as the paper writes it: mean over the 2N views, cosine similarity."""
    views = [v / math.sqrt(_dot(v, v)) for v in torch.cat([z1, z2])]
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        scores = {k: _dot(views[i], views[k]) / temperature for k in range(2 * n) if k != i}
        total += -scores[partner] + math.log(sum(math.exp(s) for s in scores.values()))
    return total / (2 * n)


def tf_simclr_loss(z1, z2, temperature) -> torch.Tensor:
    """Google's TF SimCLR ``add_contrastive_loss`` transcribed: the SUM of the two directions."""
    h1, h2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    masks = torch.eye(n, dtype=z1.dtype) * 1e9
    logits_aa = h1 @ h1.T / temperature - masks
    logits_bb = h2 @ h2.T / temperature - masks
    logits_ab = h1 @ h2.T / temperature
    logits_ba = h2 @ h1.T / temperature
    labels = torch.arange(n)
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return loss_a + loss_b


def open_clip_loss_module():
    """open_clip's ``loss.py`` alone: importing the ``open_clip`` package takes ~10 s (timm,
    torchvision, ...), while ``loss.py`` needs only torch."""
    package = importlib.util.find_spec("open_clip")  # locates it without running __init__
    path = Path(package.submodule_search_locations[0]) / "loss.py"
    spec = importlib.util.spec_from_file_location("open_clip_loss_only", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randn(generator, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=generator, dtype=dtype)


def _unit(generator, *shape):
    return F.normalize(_randn(generator, *shape), dim=-1)


# ----------------------------------------------------------------------------------------
# info_nce and contrastive_objective
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("negatives_kind", ["in-batch", "per-anchor", "queue"])
def test_info_nce_matches_loop_reference(generator, temperature, negatives_kind):
    n, k, d = 5, 4, 3
    anchor, positive = _randn(generator, n, d), _randn(generator, n, d)
    negatives = {
        "in-batch": None,
        "per-anchor": _randn(generator, n, k, d),
        "queue": _randn(generator, k, d),
    }[negatives_kind]
    expected = torch.tensor(
        ref_info_nce(anchor, positive, negatives, temperature), dtype=torch.float64
    )
    got = info_nce(anchor, positive, negatives, temperature)
    assert got.shape == (n,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        contrastive_objective(anchor, positive, negatives, temperature),
        expected.mean(),
        rtol=1e-12,
        atol=1e-12,
    )


def test_in_batch_info_nce_is_cross_entropy_of_the_score_matrix(generator):
    anchor, positive = _randn(generator, 6, 4), _randn(generator, 6, 4)
    logits = anchor @ positive.T / 0.3
    expected = F.cross_entropy(logits, torch.arange(6), reduction="none")
    torch.testing.assert_close(info_nce(anchor, positive, temperature=0.3), expected)


def test_in_batch_equals_explicit_negatives_made_of_the_other_positives(generator):
    n, d = 5, 3
    anchor, positive = _randn(generator, n, d), _randn(generator, n, d)
    others = torch.stack([positive[[m for m in range(n) if m != i]] for i in range(n)])
    torch.testing.assert_close(
        info_nce(anchor, positive, others, 0.7), info_nce(anchor, positive, None, 0.7)
    )


def test_equal_scores_give_log_n_and_a_queue_of_m_gives_log_m_plus_1():
    n, m = 7, 12
    same = torch.ones(n, 4, dtype=torch.float64) / 2  # every score is the same
    expected_in_batch = torch.full((n,), math.log(n), dtype=torch.float64)
    torch.testing.assert_close(info_nce(same, same, temperature=0.1), expected_in_batch)
    queue = torch.ones(m, 4, dtype=torch.float64) / 2
    expected_queue = torch.full((n,), math.log(m + 1), dtype=torch.float64)
    torch.testing.assert_close(info_nce(same, same, queue, 0.1), expected_queue)


def test_info_nce_does_not_normalise_its_inputs(generator):
    anchor, positive = _randn(generator, 4, 3), _randn(generator, 4, 3)
    assert not torch.allclose(info_nce(2 * anchor, positive), info_nce(anchor, positive))
    # scaling the features by c is the same as dividing the temperature by c
    torch.testing.assert_close(
        info_nce(2 * anchor, positive, temperature=1.0), info_nce(anchor, positive, temperature=0.5)
    )


def test_a_single_pair_has_zero_in_batch_loss():
    one = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert info_nce(one, one).item() == 0.0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 5),
    temperature=st.floats(0.05, 5.0),
    seed=st.integers(0, 2**16),
    use_negatives=st.booleans(),
)
def test_info_nce_is_non_negative(n, d, temperature, seed, use_negatives):
    generator = torch.Generator().manual_seed(seed)
    anchor, positive = _randn(generator, n, d), _randn(generator, n, d)
    negatives = _randn(generator, n, 3, d) if use_negatives else None
    assert (info_nce(anchor, positive, negatives, temperature) >= -1e-12).all()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 7), seed=st.integers(0, 2**16), use_negatives=st.booleans())
def test_permuting_the_batch_permutes_the_losses(n, seed, use_negatives):
    generator = torch.Generator().manual_seed(seed)
    anchor, positive = _randn(generator, n, 3), _randn(generator, n, 3)
    negatives = _randn(generator, n, 2, 3) if use_negatives else None
    order = torch.randperm(n, generator=generator)
    permuted_negatives = None if negatives is None else negatives[order]
    torch.testing.assert_close(
        info_nce(anchor[order], positive[order], permuted_negatives, 0.5),
        info_nce(anchor, positive, negatives, 0.5)[order],
    )


# ----------------------------------------------------------------------------------------
# clip_loss
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 1 / 0.07, 100.0])
def test_clip_loss_matches_loop_reference(generator, scale):
    image, text = _unit(generator, 6, 5), _unit(generator, 6, 5)
    expected = torch.tensor(ref_clip_loss(image, text, scale), dtype=torch.float64)
    torch.testing.assert_close(clip_loss(image, text, scale), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_loss_equals_open_clip(generator, dtype):
    image = _unit(generator, 16, 8).to(dtype)
    text = _unit(generator, 16, 8).to(dtype)
    scale = torch.tensor(1 / 0.07, dtype=dtype)
    expected = open_clip_loss_module().ClipLoss()(image, text, scale)
    torch.testing.assert_close(clip_loss(image, text, scale), expected)


def test_clip_loss_is_symmetric(generator):
    image, text = _unit(generator, 8, 4), _unit(generator, 8, 4)
    torch.testing.assert_close(clip_loss(image, text, 10.0), clip_loss(text, image, 10.0))


def test_clip_loss_is_log_n_at_scale_zero_and_zero_when_aligned():
    n = 6
    aligned = torch.eye(n, dtype=torch.float64)  # orthonormal rows, image i == text i
    torch.testing.assert_close(
        clip_loss(aligned, aligned, 0.0), torch.tensor(math.log(n), dtype=torch.float64)
    )
    assert clip_loss(aligned, aligned, 100.0).item() < 1e-30


def test_clip_loss_is_not_one_directional(generator):
    # With a non-symmetric logit matrix the two directions differ; the loss is their mean.
    image, text = _unit(generator, 5, 3), _unit(generator, 5, 3)
    logits = 3.0 * image @ text.T
    labels = torch.arange(5)
    one_way = F.cross_entropy(logits, labels)
    other_way = F.cross_entropy(logits.T, labels)
    assert not torch.isclose(one_way, other_way)
    torch.testing.assert_close(clip_loss(image, text, 3.0), (one_way + other_way) / 2)


def test_clip_loss_gradient_reaches_a_tensor_logit_scale(generator):
    image, text = _unit(generator, 4, 3), _unit(generator, 4, 3)
    log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    clip_loss(image, text, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 0


# ----------------------------------------------------------------------------------------
# nt_xent
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_loop_reference(generator, temperature):
    z1, z2 = _randn(generator, 5, 4), _randn(generator, 5, 4)
    expected = torch.tensor(ref_nt_xent(z1, z2, temperature), dtype=torch.float64)
    torch.testing.assert_close(nt_xent(z1, z2, temperature), expected, rtol=1e-12, atol=1e-12)


def test_nt_xent_is_half_of_googles_tensorflow_loss(generator):
    z1, z2 = _randn(generator, 6, 4), _randn(generator, 6, 4)
    torch.testing.assert_close(2 * nt_xent(z1, z2, 0.2), tf_simclr_loss(z1, z2, 0.2))


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_nt_xent_of_identical_embeddings_is_log_2n_minus_1(n):
    z = torch.ones(n, 3, dtype=torch.float64)
    torch.testing.assert_close(
        nt_xent(z, z, 0.5), torch.tensor(math.log(2 * n - 1), dtype=torch.float64)
    )


def test_nt_xent_uses_cosine_similarity(generator):
    z1, z2 = _randn(generator, 4, 3), _randn(generator, 4, 3)
    scales = torch.rand(4, 1, generator=generator, dtype=torch.float64) + 0.5
    torch.testing.assert_close(nt_xent(z1 * scales, z2, 0.3), nt_xent(z1, z2, 0.3))


# ----------------------------------------------------------------------------------------
# gradients, stability, devices
# ----------------------------------------------------------------------------------------


def test_gradients_match_finite_differences(generator):
    a = _randn(generator, 3, 2).requires_grad_()
    p = _randn(generator, 3, 2).requires_grad_()
    negatives = _randn(generator, 3, 2, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y, z: info_nce(x, y, z, 0.7), (a, p, negatives))
    assert torch.autograd.gradcheck(lambda x, y: info_nce(x, y, None, 0.7), (a, p))
    assert torch.autograd.gradcheck(lambda x, y: nt_xent(x, y, 0.4), (a, p))
    assert torch.autograd.gradcheck(lambda x, y: clip_loss(x, y, 5.0), (a, p))


def _all_losses(a, p, negatives, temperature):
    return [
        info_nce(a, p, temperature=temperature),
        info_nce(a, p, negatives, temperature),
        clip_loss(a, p, 1.0 / temperature),
        nt_xent(a, p, temperature),
    ]


def test_finite_for_scores_of_1e4(generator):
    a = (_randn(generator, 6, 4, dtype=torch.float32) * 50).requires_grad_()
    p = a.detach() + _randn(generator, 6, 4, dtype=torch.float32)
    negatives = _randn(generator, 6, 3, 4, dtype=torch.float32) * 50
    assert (a @ p.T).abs().max() > 1e3
    for loss in _all_losses(a, p, negatives, 0.1):
        assert torch.isfinite(loss).all()
        (grad,) = torch.autograd.grad(loss.sum(), a)
        assert torch.isfinite(grad).all()


def test_bfloat16_is_finite_and_close_to_float32(generator):
    a = _unit(generator, 8, 16).float()
    p = F.normalize(a + 0.3 * _randn(generator, 8, 16).float(), dim=-1)
    negatives = _unit(generator, 8, 5, 16).float()
    for low, high in zip(
        _all_losses(a.bfloat16(), p.bfloat16(), negatives.bfloat16(), 0.1),
        _all_losses(a, p, negatives, 0.1),
        strict=True,
    ):
        assert low.dtype == torch.bfloat16
        assert torch.isfinite(low).all()
        torch.testing.assert_close(low.float(), high, rtol=0.05, atol=0.05)
    big = (a * 1e4).bfloat16()
    assert all(
        torch.isfinite(loss).all()
        for loss in _all_losses(big, big, (negatives * 1e4).bfloat16(), 1.0)
    )


def test_labels_are_built_on_the_inputs_device():
    # On the meta device a label tensor built on the CPU would raise.
    a = torch.empty(4, 3, device="meta")
    negatives = torch.empty(4, 2, 3, device="meta")
    for loss in _all_losses(a, a, negatives, 0.5):
        assert loss.device.type == "meta"


# ----------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------

GOOD = torch.zeros(4, 3)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: info_nce(torch.zeros(3), GOOD), ValueError, "anchor"),
        (lambda: info_nce(GOOD, torch.zeros(5, 3)), ValueError, "batch sizes of anchor"),
        (lambda: info_nce(GOOD, torch.zeros(4, 2)), ValueError, "feature widths D of anchor"),
        (lambda: info_nce(GOOD, GOOD, torch.zeros(5, 2, 3)), ValueError, "negatives"),
        (lambda: info_nce(GOOD, GOOD, torch.zeros(4, 2, 2)), ValueError, "negatives"),
        (lambda: info_nce(GOOD, GOOD, torch.zeros(4, 2, 2, 3)), ValueError, "negatives"),
        (
            lambda: info_nce(GOOD, GOOD, torch.zeros(4, 2, 3, dtype=torch.int64)),
            TypeError,
            "negatives",
        ),
        (
            lambda: info_nce(GOOD, GOOD, torch.zeros(4, 2, 3, dtype=torch.float64)),
            TypeError,
            "negatives",
        ),
        (lambda: info_nce(GOOD.long(), GOOD), TypeError, "anchor"),
        (lambda: info_nce(GOOD, GOOD.long()), TypeError, "positive"),
        (lambda: info_nce(GOOD, GOOD.double()), TypeError, "anchor"),
        (lambda: info_nce(torch.zeros(0, 3), torch.zeros(0, 3)), ValueError, "anchor"),
        (lambda: info_nce(GOOD.tolist(), GOOD), TypeError, "anchor"),
        (lambda: info_nce(GOOD, GOOD, temperature=0.0), ValueError, "temperature"),
        (lambda: info_nce(GOOD, GOOD, temperature=-1.0), ValueError, "temperature"),
        (lambda: info_nce(GOOD, GOOD, temperature=float("nan")), ValueError, "temperature"),
        (lambda: info_nce(GOOD, GOOD, temperature=float("inf")), ValueError, "temperature"),
        (lambda: info_nce(GOOD, GOOD, temperature=torch.ones(2)), ValueError, "temperature"),
        (lambda: info_nce(GOOD, GOOD, temperature="0.1"), TypeError, "temperature"),
        (lambda: contrastive_objective(GOOD, GOOD, temperature=0), ValueError, "temperature"),
        (lambda: clip_loss(GOOD, torch.zeros(3, 3), 1.0), ValueError, "image_features"),
        (lambda: clip_loss(GOOD, torch.zeros(4, 2), 1.0), ValueError, "feature widths"),
        (lambda: clip_loss(GOOD.int(), GOOD, 1.0), TypeError, "image_features"),
        (lambda: clip_loss(GOOD, GOOD, -1.0), ValueError, "logit_scale"),
        (lambda: clip_loss(GOOD, GOOD, float("inf")), ValueError, "logit_scale"),
        (lambda: clip_loss(GOOD, GOOD, torch.tensor(1)), TypeError, "logit_scale"),
        (lambda: clip_loss(GOOD, GOOD, None), TypeError, "logit_scale"),
        (lambda: nt_xent(GOOD, torch.zeros(5, 3), 0.5), ValueError, "batch sizes of z1"),
        (lambda: nt_xent(GOOD, GOOD, 0.0), ValueError, "temperature"),
        (lambda: nt_xent(GOOD[None], GOOD, 0.5), ValueError, "z1"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------------
# Loss modules
# ----------------------------------------------------------------------------------------


def test_info_nce_loss_module_reductions(generator):
    a, p = _randn(generator, 5, 3), _randn(generator, 5, 3)
    per_sample = info_nce(a, p, None, 0.2)
    torch.testing.assert_close(InfoNCELoss(0.2)(a, p), per_sample.mean())
    torch.testing.assert_close(InfoNCELoss(0.2, reduction="sum")(a, p), per_sample.sum())
    torch.testing.assert_close(InfoNCELoss(0.2, reduction="none")(a, p), per_sample)
    with pytest.raises(ValueError, match="reduction"):
        InfoNCELoss(reduction="max")
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0.0)


def test_nt_xent_loss_module(generator):
    z1, z2 = _randn(generator, 5, 3), _randn(generator, 5, 3)
    torch.testing.assert_close(NTXentLoss(0.5)(z1, z2), nt_xent(z1, z2, 0.5))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(-0.5)


def test_clip_loss_module_on_one_process(generator):
    image, text = _unit(generator, 6, 4).float(), _unit(generator, 6, 4).float()
    loss_fn = ClipLoss()
    assert isinstance(loss_fn.logit_scale, torch.nn.Parameter)
    torch.testing.assert_close(loss_fn.scale(), torch.tensor(1 / 0.07))
    loss = loss_fn(image, text)
    torch.testing.assert_close(loss, clip_loss(image, text, 1 / 0.07))
    loss.backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad != 0
    # one owner: a loss with its own learnable scale refuses a model's scale
    with pytest.raises(ValueError, match="two would silently stop learning"):
        loss_fn(image, text, torch.tensor(3.0))
    # a loss without a learnable scale uses the model's, as given
    fixed = ClipLoss(learnable=False)
    torch.testing.assert_close(fixed(image, text, torch.tensor(3.0)), clip_loss(image, text, 3.0))


def test_clip_loss_module_clamps_the_scale_after_the_step_not_in_forward(generator):
    image, text = _unit(generator, 6, 4).float(), _unit(generator, 6, 4).float()
    loss_fn = ClipLoss(init_logit_scale=math.log(100.0))
    with torch.no_grad():
        loss_fn.logit_scale.add_(1.0)  # an optimiser step pushed s above ln 100
    torch.testing.assert_close(loss_fn.scale(), torch.tensor(100.0 * math.e))
    loss_fn(image, text).backward()
    assert loss_fn.logit_scale.grad != 0  # the gradient is never silently zero
    loss_fn.clamp_logit_scale_()
    torch.testing.assert_close(loss_fn.scale(), torch.tensor(100.0))
    with torch.no_grad():
        loss_fn.logit_scale.fill_(-1.0)
    loss_fn.clamp_logit_scale_()
    torch.testing.assert_close(loss_fn.logit_scale.detach(), torch.tensor(0.0))
    # a scale passed in is used unclamped (its owner clamps it)
    fixed = ClipLoss(learnable=False)
    torch.testing.assert_close(fixed(image, text, torch.tensor(1e4)), clip_loss(image, text, 1e4))


def test_clip_loss_module_fixed_scale_is_a_buffer():
    loss_fn = ClipLoss(init_logit_scale=math.log(20.0), learnable=False)
    assert list(loss_fn.parameters()) == []
    assert "logit_scale" in dict(loss_fn.named_buffers())
    torch.testing.assert_close(loss_fn.scale(), torch.tensor(20.0))


def test_clip_loss_module_rejects_bad_settings():
    with pytest.raises(ValueError, match="gather_with_grad"):
        ClipLoss(local_loss=True, gather_with_grad=False)
    with pytest.raises(ValueError, match="init_logit_scale"):
        ClipLoss(init_logit_scale=float("nan"))
    with pytest.raises(ValueError, match="max_logit_scale"):
        ClipLoss(max_logit_scale=float("inf"))
    with pytest.raises(ValueError, match="must not exceed max_logit_scale"):
        ClipLoss(init_logit_scale=10.0)  # exp(10) > 100
    with pytest.raises(ValueError, match="logit_scale"):
        ClipLoss(learnable=False)(GOOD, GOOD, -1.0)


def test_clip_loss_module_rejects_a_negative_tensor_scale_in_debug_mode(debug_mode):
    with pytest.raises(ValueError, match="logit_scale"):
        ClipLoss(learnable=False)(GOOD, GOOD, torch.tensor(-1.0))


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------


def _is_unit(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=1e-5)


def test_clip_model_with_conv_and_text_transformer():
    torch.manual_seed(0)
    model = make_small_clip(vocab_size=20, max_length=6)
    images = torch.rand(3, 1, 8, 8)
    ids = torch.tensor([[1, 5, 6, 0, 0, 0], [1, 7, 0, 0, 0, 0], [1, 8, 9, 10, 0, 0]])
    image_features, text_features, scale = model(images, ids)
    assert image_features.shape == text_features.shape == (3, 32)
    assert _is_unit(image_features) and _is_unit(text_features)
    torch.testing.assert_close(scale, torch.tensor(1 / 0.07))
    # the amount of padding does not change a text's features (the mask works end to end)
    torch.testing.assert_close(model.encode_text(ids[:, :4]), text_features, atol=1e-6, rtol=1e-5)


def test_clip_model_with_a_vision_transformer_tower():
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, in_channels=3, d_model=16, num_heads=2, num_layers=1, d_ff=32
    )
    text = TextTransformer(
        vocab_size=10, d_model=24, num_heads=2, num_layers=1, d_ff=48, max_length=5
    )
    model = CLIPModel(
        vit, text, image_dim=16, text_dim=24, embed_dim=8, init_logit_scale=math.log(100.0)
    )
    with torch.no_grad():
        model.logit_scale.add_(1.0)  # as if an optimiser step had pushed s above ln 100
    image_features, text_features, scale = model(
        torch.rand(2, 3, 32, 32), torch.tensor([[1, 3, 4], [1, 5, 0]])
    )
    assert image_features.shape == text_features.shape == (2, 8)
    torch.testing.assert_close(scale, torch.tensor(100.0 * math.e))  # never clamped in forward
    model.clamp_logit_scale_()
    torch.testing.assert_close(model.scale(), torch.tensor(100.0))  # clamped after the step


def test_small_conv_encoder_and_model_bad_inputs():
    encoder = SmallConvEncoder(in_channels=1, width=4, out_dim=8)
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, 8)
    with pytest.raises(ValueError, match="images"):
        encoder(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="images"):
        encoder(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="width"):
        SmallConvEncoder(width=0)
    with pytest.raises(ValueError, match="embed_dim"):
        CLIPModel(encoder, encoder, 8, 8, 0)
    with pytest.raises(ValueError, match="init_logit_scale"):
        CLIPModel(encoder, encoder, 8, 8, 4, init_logit_scale=float("inf"))
    with pytest.raises(ValueError, match="must not exceed"):
        CLIPModel(encoder, encoder, 8, 8, 4, init_logit_scale=math.log(100.0) + 1.0)


@pytest.fixture(scope="module")
def tiny_text_tower():
    """A randomly initialised 1-layer BERT with MiniLM's real tokenizer (fast to build)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mmlearn.pretrained import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
    )
    return BertModel(config), tokenizer


def test_lit_model_trains_only_the_image_side(tiny_text_tower):
    text_model, tokenizer = tiny_text_tower
    torch.manual_seed(0)
    model = LiTModel(
        SmallConvEncoder(1, width=4, out_dim=16),
        image_dim=16,
        embed_dim=8,
        text_model=text_model,
        tokenizer=tokenizer,
    )
    model.train()
    assert model.training and not model.text_model.training
    texts = ["a handwritten digit one", "the number 2", "a handwritten digit one"]
    image_features, text_features, scale = model(torch.rand(3, 1, 8, 8), texts)
    assert _is_unit(image_features) and _is_unit(text_features)
    torch.testing.assert_close(text_features[0], text_features[2])
    assert len(model._text_cache) == 2  # one MiniLM pass per distinct sentence
    ClipLoss(learnable=False)(image_features, text_features, scale).backward()
    assert all(p.grad is None for p in model.text_model.parameters())
    assert model.image_projection.weight.grad is not None
    assert model.text_projection.weight.grad is not None
    assert model.logit_scale.grad is not None
    assert all(p.grad is not None for p in model.image_encoder.parameters())


def test_lit_model_cache_equals_mean_pooled_text_model(tiny_text_tower):
    from mmlearn.pretrained import encode_sentences

    text_model, tokenizer = tiny_text_tower
    model = LiTModel(SmallConvEncoder(1, 4, 16), 16, 8, text_model=text_model, tokenizer=tokenizer)
    texts = ["the number 7", "an image of the digit seven"]
    cached = model.frozen_text_embeddings(texts)
    expected = encode_sentences(text_model, tokenizer, texts, normalize=False)
    torch.testing.assert_close(cached, expected)
    torch.testing.assert_close(model.frozen_text_embeddings(texts[::-1]), expected.flip(0))
    with pytest.raises(TypeError, match="texts"):
        model.encode_text("the number 7")
    with pytest.raises(ValueError, match="texts"):
        model.encode_text([])
    with pytest.raises(ValueError, match="tokenizer"):
        LiTModel(SmallConvEncoder(1, 4, 16), 16, 8, text_model=text_model)


# ----------------------------------------------------------------------------------------
# Training loop and command line
# ----------------------------------------------------------------------------------------


def test_train_reduces_a_clip_loss_and_records_history():
    torch.manual_seed(0)
    model = make_small_clip(
        vocab_size=12, max_length=3, width=4, d_model=16, num_heads=2, num_layers=1, embed_dim=8
    )
    images = torch.rand(16, 1, 8, 8)
    ids = torch.stack([torch.tensor([1, 3 + i % 9, 0]) for i in range(16)])
    loader = DataLoader(TensorDataset(images, ids, ids != 0), batch_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    step = lambda m, b: clip_step(m, b, ClipLoss(learnable=False), torch.device("cpu"))  # noqa: E731
    calls = []
    history = train(
        model,
        loader,
        step,
        optimizer,
        epochs=12,
        progress=False,
        eval_fn=lambda m: calls.append(m.training) or {"calls": len(calls)},
    )
    assert len(history["loss"]) == 12 and history["calls"] == list(range(1, 13))
    assert calls == [False] * 12  # evaluated in eval mode
    assert history["loss"][-1] < history["loss"][0]
    with pytest.raises(ValueError, match="epochs"):
        train(model, loader, step, optimizer, epochs=0)
    empty = DataLoader(TensorDataset(images[:3]), batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="loader"):
        train(model, empty, step, optimizer, epochs=1)


def test_zero_shot_accuracy_of_an_untrained_model_is_near_chance():
    torch.manual_seed(0)
    data = load_digits_captions()
    prompts = [p for digit in range(10) for p in prompts_en(digit)]
    tokenizer = WordTokenizer.from_texts(data["train"].captions_en + prompts)
    model = make_small_clip(len(tokenizer), 8)
    accuracy = digits_zero_shot_accuracy(model, tokenizer, data["val"], torch.device("cpu"))
    assert 0.0 <= accuracy < 0.35


def test_command_line_trains_and_saves_a_loadable_checkpoint(tmp_path):
    torch.set_num_threads(1)
    metrics = main(
        ["clip", "--data", "digits", "--epochs", "1", "--batch-size", "256", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["test_zero_shot_accuracy"] == metrics["test_zero_shot_accuracy"]
    assert saved["world_size"] == 1 and len(saved["train_loss"]) == 1
    assert np.isfinite(saved["train_loss"][0])
    model = make_small_clip(
        len(saved["vocabulary"]),
        saved["max_length"],
        embed_dim=saved["embed_dim"],
        width=saved["width"],
        num_layers=saved["text_layers"],
    )
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    tokenizer = WordTokenizer(saved["vocabulary"])
    data = load_digits_captions()
    accuracy = digits_zero_shot_accuracy(model, tokenizer, data["test"], torch.device("cpu"))
    assert accuracy == pytest.approx(saved["test_zero_shot_accuracy"])


def test_command_line_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["clip", "--epochs", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["clip", "--data", "imagenet", "--out", str(tmp_path)])
