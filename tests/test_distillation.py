"""Knowledge distillation losses (chapter 4.3) and the distillation helper (chapter 5.3).

Every formula is checked in float64 against an independent reference: a
brute-force loop over samples and classes, PyTorch's ``nn.KLDivLoss`` and
``nn.CrossEntropyLoss``, torchdistill's ``KDLoss`` formula and TinyBERT's
attention loss (both re-typed here from their public sources).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmlearn.distill import (
    DigitsCNN,
    KnowledgeDistiller,
    accuracy,
    digits_mlp,
    digits_student,
    fit_classifier,
    freeze,
    random_shift,
)
from mmlearn.functional import (
    attention_distillation_loss,
    distillation_loss,
    feature_distillation_loss,
    kd_kl_divergence,
    soft_target_loss,
    uniform_layer_map,
)
from mmlearn.losses import (
    AttentionDistillationLoss,
    DistillationLoss,
    FeatureDistillationLoss,
    SoftTargetLoss,
)

DOUBLE = torch.float64


def random_logits(num_samples: int = 5, num_classes: int = 7, seed: int = 0, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(num_samples, num_classes, generator=generator, dtype=DOUBLE)
    teacher = scale * torch.randn(num_samples, num_classes, generator=generator, dtype=DOUBLE)
    labels = torch.randint(num_classes, (num_samples,), generator=generator)
    return student, teacher, labels


def random_attentions(num_layers: int, shape=(2, 3, 4, 5), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(*shape, generator=generator, dtype=DOUBLE).softmax(dim=-1)
        for _ in range(num_layers)
    ]


# --- references -------------------------------------------------------------------


def loop_softmax(row: list[float], temperature: float) -> list[float]:
    top = max(row)
    exps = [math.exp((value - top) / temperature) for value in row]
    total = sum(exps)
    return [value / total for value in exps]


def loop_soft_target(student, teacher, temperature: float) -> float:
    """-mean_n sum_c q_c log p_c with plain Python floats."""
    losses = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        q = loop_softmax(t_row, temperature)
        p = loop_softmax(s_row, temperature)
        losses.append(-sum(qc * math.log(pc) for qc, pc in zip(q, p, strict=True)))
    return sum(losses) / len(losses)


def torch_kd(student, teacher, labels, temperature, alpha):
    """The widespread recipe: KLDivLoss(batchmean) * T^2 mixed with cross-entropy."""
    kl = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    )
    return alpha * temperature**2 * kl + (1 - alpha) * nn.CrossEntropyLoss()(student, labels)


def torchdistill_kd(student, teacher, labels, temperature, alpha_hard):
    """torchdistill's KDLoss: note that its ``alpha`` weights the *hard* term."""
    beta = 1 - alpha_hard
    soft = nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(student / temperature, dim=1), torch.softmax(teacher / temperature, dim=1)
    )
    hard = nn.CrossEntropyLoss()(student, labels)
    return alpha_hard * hard + beta * temperature**2 * soft


def loop_attention_loss(student_layers, teacher_layers, reduction: str) -> float:
    """(1/L) sum_l of the summed (or averaged) squared differences, element by element."""
    per_layer = []
    for student, teacher in zip(student_layers, teacher_layers, strict=True):
        batch, heads, rows, cols = student.shape
        per_sample = []
        for b in range(batch):
            total = 0.0
            for h in range(heads):
                for i in range(rows):
                    for j in range(cols):
                        total += (student[b, h, i, j].item() - teacher[b, h, i, j].item()) ** 2
            per_sample.append(total)
        layer = sum(per_sample) / batch
        if reduction == "mean":
            layer /= heads * rows * cols
        per_layer.append(layer)
    return sum(per_layer) / len(per_layer)


def tinybert_attention_loss(student_scores, teacher_scores, layer_map):
    """TinyBERT's task_distill.py: scores <= -1e2 (masked) set to 0, MSE, summed over layers."""
    loss = 0.0
    for student_index, teacher_index in enumerate(layer_map):
        student = student_scores[student_index]
        teacher = teacher_scores[teacher_index]
        student = torch.where(student <= -1e2, torch.zeros_like(student), student)
        teacher = torch.where(teacher <= -1e2, torch.zeros_like(teacher), teacher)
        loss = loss + F.mse_loss(student, teacher)
    return loss


# --- soft_target_loss (eq-kd-soft) --------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_soft_target_loss_matches_a_python_loop(temperature):
    student, teacher, _ = random_logits()
    expected = loop_soft_target(student, teacher, temperature)
    got = soft_target_loss(student, teacher, temperature)
    assert got.dtype == DOUBLE
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_soft_target_loss_minus_kl_is_the_teacher_entropy():
    student, teacher, _ = random_logits(seed=1)
    temperature = 3.0
    teacher_probs = F.softmax(teacher / temperature, dim=1)
    entropy = -(teacher_probs * teacher_probs.log()).sum(dim=1).mean()
    difference = soft_target_loss(student, teacher, temperature) - kd_kl_divergence(
        student, teacher, temperature
    )
    torch.testing.assert_close(difference, entropy, rtol=1e-12, atol=1e-12)


def test_soft_cross_entropy_and_kl_give_the_same_student_gradients():
    student, teacher, _ = random_logits(seed=2)
    student.requires_grad_(True)
    (grad_ce,) = torch.autograd.grad(soft_target_loss(student, teacher, 2.5), student)
    (grad_kl,) = torch.autograd.grad(kd_kl_divergence(student, teacher, 2.5), student)
    torch.testing.assert_close(grad_ce, grad_kl, rtol=1e-12, atol=1e-14)


def test_soft_target_gradient_has_the_closed_form():
    """d L / d s = (softmax(s/T) - softmax(t/T)) / (N T)."""
    student, teacher, _ = random_logits(num_samples=4, seed=3)
    student.requires_grad_(True)
    temperature = 2.0
    (grad,) = torch.autograd.grad(soft_target_loss(student, teacher, temperature), student)
    expected = F.softmax(student / temperature, dim=1) - F.softmax(teacher / temperature, dim=1)
    torch.testing.assert_close(grad, expected.detach() / (4 * temperature))


def test_module_form_matches_the_function():
    student, teacher, labels = random_logits(seed=4)
    torch.testing.assert_close(
        SoftTargetLoss(3.0)(student, teacher), soft_target_loss(student, teacher, 3.0)
    )
    torch.testing.assert_close(
        DistillationLoss(3.0, 0.4)(student, teacher, labels),
        distillation_loss(student, teacher, labels, 3.0, 0.4),
    )


# --- distillation_loss (eq-kd-hinton) -----------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_distillation_loss_equals_kldivloss_batchmean_times_t2_plus_cross_entropy(
    temperature, alpha
):
    student, teacher, labels = random_logits(seed=5)
    expected = torch_kd(student, teacher, labels, temperature, alpha)
    got = distillation_loss(student, teacher, labels, temperature, alpha)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_distillation_loss_equals_torchdistill_kdloss_with_alpha_swapped(temperature, alpha):
    student, teacher, labels = random_logits(seed=6)
    expected = torchdistill_kd(student, teacher, labels, temperature, alpha_hard=1 - alpha)
    got = distillation_loss(student, teacher, labels, temperature, alpha)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_distillation_loss_kl_term_matches_a_python_loop():
    student, teacher, labels = random_logits(seed=7)
    temperature = 3.0
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        q = loop_softmax(t_row, temperature)
        p = loop_softmax(s_row, temperature)
        kl += sum(qc * math.log(qc / pc) for qc, pc in zip(q, p, strict=True))
    kl /= student.shape[0]
    got = distillation_loss(student, teacher, labels, temperature, alpha=1.0)
    assert got.item() == pytest.approx(temperature**2 * kl, rel=1e-12)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_seed_listing_reduction_mean_shrinks_the_term_by_the_number_of_classes():
    """nn.KLDivLoss() defaults to reduction="mean": it divides by N * C, not N."""
    student, teacher, labels = random_logits(num_classes=10, seed=8)
    temperature = 4.0
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    mean_kl = nn.KLDivLoss()(log_p, q)
    ours = kd_kl_divergence(student, teacher, temperature)
    torch.testing.assert_close(ours / mean_kl, torch.tensor(10.0, dtype=DOUBLE))


def test_zero_kd_term_when_student_equals_teacher():
    _, teacher, labels = random_logits(seed=9)
    student = teacher.clone().requires_grad_(True)
    loss = distillation_loss(student, teacher, labels, temperature=4.0, alpha=1.0)
    assert abs(loss.item()) < 1e-13
    (grad,) = torch.autograd.grad(loss, student)
    assert grad.abs().max().item() < 1e-14


def test_soft_gradient_norm_times_t2_is_nearly_constant_for_large_t():
    """Without T^2 the soft gradient shrinks like 1/T^2; with T^2 it stays put."""
    student, teacher, labels = random_logits(num_samples=16, num_classes=10, seed=10, scale=1.0)
    student.requires_grad_(True)
    norms = []
    for temperature in (8.0, 16.0, 32.0, 64.0):
        (grad,) = torch.autograd.grad(
            distillation_loss(student, teacher, labels, temperature, alpha=1.0), student
        )
        norms.append(grad.norm().item())
    assert max(norms) / min(norms) < 1.05
    (plain,) = torch.autograd.grad(soft_target_loss(student, teacher, 64.0), student)
    assert plain.norm().item() == pytest.approx(norms[-1] / 64.0**2, rel=1e-12)


def test_large_t_soft_gradient_approaches_the_logit_matching_limit():
    """Hinton et al.: for large T, T^2 * grad -> (z - v) / (C N) with zero-mean logits."""
    student, teacher, labels = random_logits(num_samples=6, num_classes=5, seed=11, scale=1.0)
    student = student - student.mean(dim=1, keepdim=True)
    teacher = teacher - teacher.mean(dim=1, keepdim=True)
    student.requires_grad_(True)
    temperature = 1000.0
    (grad,) = torch.autograd.grad(
        distillation_loss(student, teacher, labels, temperature, alpha=1.0), student
    )
    limit = (student - teacher).detach() / (5 * 6)
    torch.testing.assert_close(grad, limit, rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_are_finite_at_logits_of_1e4(dtype):
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=dtype, requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, 0.0]], dtype=dtype)
    labels = torch.tensor([1, 2])
    for loss in (
        soft_target_loss(student, teacher, 1.0),
        kd_kl_divergence(student, teacher, 1.0),
        distillation_loss(student, teacher, labels, 2.0, 0.5),
    ):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(grad).all()
    # each row: the teacher's class gets log-probability -2e4 from the student
    assert soft_target_loss(student, teacher, 1.0).item() == pytest.approx(2e4, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_are_finite_in_half_precision(dtype):
    student, teacher, labels = random_logits(seed=12, scale=50.0)
    student, teacher = student.to(dtype), teacher.to(dtype)
    reference = distillation_loss(student.double(), teacher.double(), labels, 2.0, 0.5)
    got = distillation_loss(student, teacher, labels, 2.0, 0.5)
    assert torch.isfinite(got)
    assert got.float().item() == pytest.approx(reference.item(), rel=5e-2)


logit_rows = st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=6)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), temperature=st.floats(0.1, 50.0), alpha=st.floats(0.0, 1.0))
def test_property_kd_is_non_negative_and_shift_invariant(data, temperature, alpha):
    num_classes = data.draw(st.integers(2, 6))
    num_samples = data.draw(st.integers(1, 4))
    values = st.floats(-30, 30, allow_nan=False)
    matrix = st.lists(
        st.lists(values, min_size=num_classes, max_size=num_classes),
        min_size=num_samples,
        max_size=num_samples,
    )
    student = torch.tensor(data.draw(matrix), dtype=DOUBLE)
    teacher = torch.tensor(data.draw(matrix), dtype=DOUBLE)
    labels = torch.tensor(
        data.draw(
            st.lists(st.integers(0, num_classes - 1), min_size=num_samples, max_size=num_samples)
        )
    )
    kl = kd_kl_divergence(student, teacher, temperature)
    assert kl.item() >= -1e-12
    loss = distillation_loss(student, teacher, labels, temperature, alpha)
    hard = F.cross_entropy(student, labels)
    assert loss.item() >= (1 - alpha) * hard.item() - 1e-9
    shift = data.draw(st.floats(-100, 100))
    shifted = distillation_loss(student + shift, teacher - shift, labels, temperature, alpha)
    assert shifted.item() == pytest.approx(loss.item(), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(row=logit_rows, temperature=st.floats(0.1, 50.0))
def test_property_soft_target_is_at_least_the_teacher_entropy(row, temperature):
    teacher = torch.tensor([row], dtype=DOUBLE)
    student = torch.tensor([row[::-1]], dtype=DOUBLE)
    q = F.softmax(teacher / temperature, dim=1)
    entropy = -(torch.special.xlogy(q, q)).sum().item()
    assert soft_target_loss(student, teacher, temperature).item() >= entropy - 1e-9
    assert soft_target_loss(teacher, teacher, temperature).item() == pytest.approx(
        entropy, rel=1e-9, abs=1e-12
    )


# --- attention distillation (eq-attention-distillation) ---------------------------------


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_attention_loss_matches_a_loop(reduction):
    student = random_attentions(3, seed=1)
    teacher = random_attentions(3, seed=2)
    expected = loop_attention_loss(student, teacher, reduction)
    got = attention_distillation_loss(student, teacher, reduction=reduction)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_attention_mean_reduction_is_sum_over_elements_per_sample():
    student = random_attentions(2, seed=3)
    teacher = random_attentions(2, seed=4)
    elements = 3 * 4 * 5
    torch.testing.assert_close(
        attention_distillation_loss(student, teacher, "sum"),
        elements * attention_distillation_loss(student, teacher, "mean"),
    )


def test_uniform_layer_map_follows_tinybert():
    assert uniform_layer_map(2, 6) == [2, 5]
    assert uniform_layer_map(3, 6) == [1, 3, 5]
    assert uniform_layer_map(4, 12) == [2, 5, 8, 11]
    assert uniform_layer_map(6, 6) == [0, 1, 2, 3, 4, 5]
    assert uniform_layer_map(1, 6) == [5]


@settings(max_examples=50, deadline=None)
@given(num_teacher=st.integers(1, 48), data=st.data())
def test_property_uniform_layer_map_is_increasing_and_ends_at_the_last_layer(num_teacher, data):
    num_student = data.draw(st.integers(1, num_teacher))
    mapping = uniform_layer_map(num_student, num_teacher)
    assert len(mapping) == num_student
    assert mapping[-1] == num_teacher - 1
    assert all(0 <= a < b for a, b in zip(mapping, mapping[1:], strict=False))
    assert mapping[0] >= 0


def test_attention_loss_with_a_layer_map_uses_the_mapped_teacher_layers():
    student = random_attentions(2, seed=5)
    teacher = random_attentions(6, seed=6)
    mapping = uniform_layer_map(2, 6)
    expected = loop_attention_loss(student, [teacher[2], teacher[5]], "sum")
    got = attention_distillation_loss(student, teacher, layer_map=mapping)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    module = AttentionDistillationLoss(layer_map=mapping)
    torch.testing.assert_close(module(student, teacher), got)


def test_attention_scores_with_padding_match_tinybert():
    """TinyBERT: pre-softmax scores with an additive -1e4 mask, zeroed, MSE, summed over layers."""
    generator = torch.Generator().manual_seed(7)
    batch, heads, length = 2, 3, 5
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    additive = (~valid).to(DOUBLE)[:, None, None, :] * -1e4
    student = [
        torch.randn(batch, heads, length, length, generator=generator, dtype=DOUBLE) + additive
        for _ in range(2)
    ]
    teacher = [
        torch.randn(batch, heads, length, length, generator=generator, dtype=DOUBLE) + additive
        for _ in range(6)
    ]
    mapping = uniform_layer_map(2, 6)
    expected = tinybert_attention_loss(student, teacher, mapping)
    got = attention_distillation_loss(
        student,
        teacher,
        reduction="mean",
        layer_map=mapping,
        kind="scores",
        mask=valid[:, None, None, :],
    )
    torch.testing.assert_close(got * len(mapping), expected, rtol=1e-12, atol=1e-12)


def test_attention_scores_with_minus_infinity_need_a_mask(debug_mode):
    scores = torch.zeros(1, 1, 2, 2, dtype=DOUBLE)
    scores[..., 1] = -math.inf
    with pytest.raises(ValueError, match="mask"):
        attention_distillation_loss([scores], [scores.clone()], kind="scores")
    mask = torch.tensor([True, False])[None, None, None, :]
    student = scores.clone().requires_grad_(True)
    loss = attention_distillation_loss([student], [scores + 0.0], kind="scores", mask=mask)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(grad).all()


def test_attention_probabilities_masked_positions_do_not_count():
    student = random_attentions(1, seed=8)
    teacher = random_attentions(1, seed=9)
    mask = torch.zeros(1, 1, 1, 5, dtype=torch.bool)
    mask[..., :2] = True
    expected = loop_attention_loss([student[0][..., :2]], [teacher[0][..., :2]], "sum")
    got = attention_distillation_loss(student, teacher, mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    seed_a=st.integers(0, 10_000),
    seed_b=st.integers(0, 10_000),
    reduction=st.sampled_from(["sum", "mean"]),
)
def test_property_attention_loss_is_symmetric_non_negative_and_zero_on_equal_maps(
    seed_a, seed_b, reduction
):
    first = random_attentions(2, seed=seed_a)
    second = random_attentions(2, seed=seed_b)
    forward = attention_distillation_loss(first, second, reduction)
    backward = attention_distillation_loss(second, first, reduction)
    assert forward.item() >= 0
    assert forward.item() == pytest.approx(backward.item(), rel=1e-12)
    assert attention_distillation_loss(first, first, reduction).item() == 0.0


def test_attention_loss_of_probabilities_is_bounded_by_two_per_row():
    """Each row is a distribution: ||p - q||^2 <= 2, so the "sum" loss <= 2 h Lq."""
    student = [torch.eye(5, dtype=DOUBLE).expand(2, 3, 5, 5)]
    teacher = [torch.eye(5, dtype=DOUBLE).roll(1, dims=1).expand(2, 3, 5, 5)]
    assert attention_distillation_loss(student, teacher).item() == pytest.approx(2 * 3 * 5)


# --- feature distillation -------------------------------------------------------------


def test_feature_distillation_module_matches_an_explicit_projection():
    torch.manual_seed(0)
    module = FeatureDistillationLoss(4, 6).double()
    student = torch.randn(2, 3, 4, dtype=DOUBLE)
    teacher = torch.randn(2, 3, 6, dtype=DOUBLE)
    projected = student @ module.projection.weight.T + module.projection.bias
    expected = ((projected - teacher) ** 2).mean()
    torch.testing.assert_close(module(student, teacher), expected)
    loop = (
        sum(
            (projected[b, i, k].item() - teacher[b, i, k].item()) ** 2
            for b in range(2)
            for i in range(3)
            for k in range(6)
        )
        / 36
    )
    assert module(student, teacher).item() == pytest.approx(loop, rel=1e-12)


def test_feature_distillation_mask_averages_over_real_tokens_only():
    student = torch.randn(2, 3, 4, dtype=DOUBLE)
    teacher = torch.randn(2, 3, 4, dtype=DOUBLE)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected = (
        torch.cat(
            [
                (student[0, :2] - teacher[0, :2]).flatten(),
                (student[1, :1] - teacher[1, :1]).flatten(),
            ]
        )
        .square()
        .mean()
    )
    torch.testing.assert_close(feature_distillation_loss(student, teacher, mask=mask), expected)
    module = FeatureDistillationLoss(4, 4, project=False)
    torch.testing.assert_close(module(student, teacher, mask=mask), expected)


def test_feature_projection_learns_a_linear_map():
    torch.manual_seed(1)
    student = torch.randn(64, 3)
    teacher = student @ torch.randn(3, 5) + 0.5
    module = FeatureDistillationLoss(3, 5)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        loss = module(student, teacher)
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-4


# --- bad inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature_is_rejected(temperature):
    student, teacher, labels = random_logits()
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(student, teacher, temperature)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, labels, temperature, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(temperature, 0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_bad_alpha_is_rejected(alpha):
    student, teacher, labels = random_logits()
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(student, teacher, labels, 2.0, alpha)


def test_float_labels_are_rejected():
    student, teacher, labels = random_logits()
    with pytest.raises(TypeError, match="labels"):
        distillation_loss(student, teacher, labels.double(), 2.0, 0.5)


@pytest.mark.parametrize("bad", [-1, 7])
def test_labels_out_of_range_are_rejected(bad, debug_mode):
    student, teacher, labels = random_logits(num_classes=7)
    labels[0] = bad
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(student, teacher, labels, 2.0, 0.5)


def test_labels_of_the_wrong_length_are_rejected():
    student, teacher, labels = random_logits()
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(student, teacher, labels[:-1], 2.0, 0.5)


def test_mismatched_logits_are_rejected():
    student, teacher, _ = random_logits()
    with pytest.raises(ValueError, match="teacher_logits"):
        soft_target_loss(student, teacher[:, :-1], 2.0)
    with pytest.raises(ValueError, match="student_logits"):
        soft_target_loss(student[0], teacher[0], 2.0)
    with pytest.raises(TypeError, match="teacher_logits"):
        soft_target_loss(student, teacher.long(), 2.0)


def test_mismatched_attention_layers_are_rejected():
    student = random_attentions(2)
    teacher = random_attentions(6)
    with pytest.raises(ValueError, match="layer_map"):
        attention_distillation_loss(student, teacher)
    with pytest.raises(ValueError, match="layer_map"):
        attention_distillation_loss(student, teacher, layer_map=[0, 6])
    with pytest.raises(ValueError, match="layer_map"):
        attention_distillation_loss(student, teacher, layer_map=[5])
    with pytest.raises(ValueError, match="student_attentions"):
        attention_distillation_loss([], teacher)
    with pytest.raises(TypeError, match="student_attentions"):
        attention_distillation_loss(student[0], teacher[:1])


def test_mismatched_attention_shapes_and_options_are_rejected():
    student = random_attentions(1, shape=(2, 3, 4, 4))
    teacher = random_attentions(1, shape=(2, 3, 4, 5))
    with pytest.raises(ValueError, match="student_attentions\\[0\\]"):
        attention_distillation_loss(student, teacher)
    with pytest.raises(ValueError, match="student_attentions\\[0\\]"):
        attention_distillation_loss([student[0][0]], [student[0][0]])
    with pytest.raises(ValueError, match="reduction"):
        attention_distillation_loss(teacher, teacher, reduction="batchmean")
    with pytest.raises(ValueError, match="kind"):
        attention_distillation_loss(teacher, teacher, kind="logits")
    with pytest.raises(ValueError, match="mask"):
        attention_distillation_loss(teacher, teacher, mask=torch.ones(3, 1, 1, 5, dtype=bool))


def test_bad_layer_map_sizes_are_rejected():
    with pytest.raises(ValueError, match="num_student_layers"):
        uniform_layer_map(7, 6)
    with pytest.raises(ValueError, match="num_teacher_layers"):
        uniform_layer_map(1, 0)


def test_bad_feature_inputs_are_rejected():
    with pytest.raises(ValueError, match="teacher_hidden"):
        feature_distillation_loss(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="weight"):
        feature_distillation_loss(torch.randn(2, 4), torch.randn(2, 5), weight=torch.randn(3, 5))
    with pytest.raises(ValueError, match="mask"):
        feature_distillation_loss(
            torch.randn(2, 4), torch.randn(2, 4), mask=torch.ones(3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="student_dim"):
        FeatureDistillationLoss(4, 5, project=False)


# --- the training helper (mmlearn.distill) ----------------------------------------------


class DropoutTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def test_distiller_keeps_the_teacher_frozen_in_eval_mode():
    torch.manual_seed(0)
    teacher, student = DropoutTeacher(), nn.Linear(4, 3)
    distiller = KnowledgeDistiller(teacher, student, temperature=2.0, alpha=0.7)
    distiller.train()
    assert student.training and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    inputs, labels = torch.randn(8, 4), torch.randint(3, (8,))
    first, second = distiller(inputs, labels), distiller(inputs, labels)
    torch.testing.assert_close(first, second)  # no dropout noise in the teacher
    first.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.weight.grad is not None
    with torch.no_grad():
        expected = distillation_loss(student(inputs), teacher(inputs), labels, 2.0, 0.7)
    torch.testing.assert_close(second.detach(), expected)


def test_a_teacher_left_in_train_mode_gives_noisy_targets():
    """The reason for eval(): the seed's listing leaves dropout on in the teacher."""
    torch.manual_seed(0)
    teacher = DropoutTeacher().train()
    inputs = torch.randn(8, 4)
    assert not torch.allclose(teacher(inputs), teacher(inputs))
    freeze(teacher)
    torch.testing.assert_close(teacher(inputs), teacher(inputs))


def test_fit_classifier_learns_and_distillation_trains_only_the_student():
    torch.manual_seed(0)
    inputs = torch.randn(200, 4)
    labels = (inputs @ torch.randn(4, 3)).argmax(dim=1)  # a linear student can fit it
    teacher = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    fit_classifier(teacher, inputs, labels, epochs=30, batch_size=50, lr=1e-2)
    assert accuracy(teacher, inputs, labels) > 0.9
    frozen_copy = [p.detach().clone() for p in teacher.parameters()]
    student = nn.Linear(4, 3)
    history = fit_classifier(
        student,
        inputs,
        labels,
        epochs=20,
        batch_size=50,
        lr=5e-2,
        teacher=teacher,
        temperature=2.0,
        alpha=0.5,
        seed=1,
    )
    assert history[-1] < history[0]
    assert accuracy(student, inputs, labels) > 0.8
    for before, after in zip(frozen_copy, teacher.parameters(), strict=True):
        torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_fit_classifier_is_reproducible_and_applies_augment():
    inputs = torch.randn(60, 4)
    labels = torch.randint(3, (60,))
    calls = []

    def augment(batch, generator):
        calls.append(batch.shape[0])
        return batch + 0.1 * torch.randn(batch.shape, generator=generator)

    results = []
    for _ in range(2):
        torch.manual_seed(3)
        model = nn.Linear(4, 3)
        results.append(
            fit_classifier(model, inputs, labels, epochs=2, batch_size=32, augment=augment, seed=5)
        )
    assert results[0] == results[1]
    assert calls == [32, 28] * 4


def test_fit_classifier_rejects_bad_arguments():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="epochs"):
        fit_classifier(model, torch.randn(5, 4), torch.zeros(5, dtype=torch.long), epochs=0)
    with pytest.raises(ValueError, match="labels"):
        fit_classifier(model, torch.randn(5, 4), torch.zeros(4, dtype=torch.long), epochs=1)
    with pytest.raises(ValueError, match="alpha"):
        KnowledgeDistiller(nn.Linear(4, 3), model, temperature=1.0, alpha=2.0)


def test_cached_teacher_logits_match_asking_the_teacher_every_batch():
    """Without augmentation fit_classifier asks the teacher once; the result must not change."""
    inputs = torch.randn(90, 4)
    labels = torch.randint(3, (90,))
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    histories = []
    for augment in (None, lambda batch, generator: batch):
        torch.manual_seed(1)
        student = nn.Linear(4, 3)
        histories.append(
            fit_classifier(
                student,
                inputs,
                labels,
                epochs=3,
                batch_size=32,
                teacher=teacher,
                temperature=3.0,
                alpha=0.6,
                augment=augment,
                seed=2,
            )
        )
    torch.testing.assert_close(torch.tensor(histories[0]), torch.tensor(histories[1]))


def shift_by_loop(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move an 8x8 image by (dx, dy) pixels with zero fill, pixel by pixel."""
    out = torch.zeros_like(image)
    for row in range(8):
        for col in range(8):
            source_row, source_col = row - dy, col - dx
            if 0 <= source_row < 8 and 0 <= source_col < 8:
                out[row, col] = image[source_row, source_col]
    return out


def test_random_shift_moves_each_image_by_at_most_one_pixel():
    images = torch.rand(40, 1, 8, 8)
    shifted = random_shift(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    seen = set()
    for image, result in zip(images[:, 0], shifted[:, 0], strict=True):
        matches = [
            (dx, dy)
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            if torch.equal(result, shift_by_loop(image, dx, dy))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 4  # the shifts really vary
    flat = random_shift(images.flatten(1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(flat, shifted.flatten(1))
    torch.testing.assert_close(random_shift(images, torch.Generator(), max_shift=0), images)


def test_digits_models_have_the_documented_shapes():
    teacher, student = DigitsCNN(), digits_mlp(16)
    images = torch.rand(5, 1, 8, 8)
    assert teacher(images).shape == (5, 10)
    assert teacher(images.flatten(1)).shape == (5, 10)
    assert teacher.features(images).shape == (5, 128)
    assert student(images.flatten(1)).shape == (5, 10)
    with pytest.raises(ValueError, match="hidden"):
        digits_mlp(0)
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(images, torch.Generator(), max_shift=-1)


def _two_class_digits(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened 'images' whose class is the sign of the mean of the first 8 pixels."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 64, generator=generator)
    return inputs, (inputs[:, :8].mean(1) > 0).long()


def test_digits_student_learns_the_labels_and_is_seeded():
    inputs, labels = _two_class_digits()
    student = digits_student(inputs, labels, seed=0, hidden=16, epochs=60)
    assert not student.training
    assert next(student.parameters()).device == inputs.device
    assert accuracy(student, inputs, labels) >= 0.95
    again = digits_student(inputs, labels, seed=0, hidden=16, epochs=60)
    other = digits_student(inputs, labels, seed=1, hidden=16, epochs=60)
    assert torch.equal(student[0].weight, again[0].weight)
    assert not torch.equal(student[0].weight, other[0].weight)


def test_digits_student_follows_its_teacher_with_alpha_one():
    """With alpha = 1 only the teacher's soft targets count: wrong labels are ignored."""
    inputs, labels = _two_class_digits()
    torch.manual_seed(0)
    teacher = nn.Linear(64, 10)
    student = digits_student(
        inputs,
        (labels + 5) % 10,
        seed=0,
        teacher=teacher,
        temperature=2.0,
        alpha=1.0,
        hidden=32,
        epochs=150,
    )
    with torch.no_grad():
        agree = (student(inputs).argmax(1) == teacher(inputs).argmax(1)).float().mean()
    assert agree >= 0.9
    assert accuracy(student, inputs, (labels + 5) % 10) < 0.5


def test_digits_student_bad_inputs():
    with pytest.raises(TypeError, match="inputs"):
        digits_student(torch.zeros(4, 64, dtype=torch.long), torch.zeros(4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="hidden"):
        digits_student(torch.zeros(4, 64), torch.zeros(4, dtype=torch.long), 0, hidden=0)
