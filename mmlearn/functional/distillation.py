"""Knowledge distillation losses of chapter 4.3 (docs/DESIGN.md section 3.1).

Three families, each as a pure function:

* logit distillation: :func:`soft_target_loss` (the seed's L_KD, {eq}`eq-kd-soft`)
  and :func:`distillation_loss` (Hinton et al.'s recipe, {eq}`eq-kd-hinton`);
* attention distillation: :func:`attention_distillation_loss` (the seed's L_AD,
  {eq}`eq-attention-distillation`), on attention probabilities (the book's
  formula) or on pre-softmax scores (TinyBERT's choice), with
  :func:`uniform_layer_map` to pair a shallow student with a deep teacher;
* feature distillation: :func:`feature_distillation_loss` (FitNets' hint loss,
  TinyBERT's hidden-state loss) through an optional learned projection.

Logits are ``(N, C)``: N samples, C classes. Flatten token-level logits to
``(batch * length, C)`` first (and drop padded positions).

Low precision: the softmaxes, the KL divergence, the cross-entropy and the
squared errors are computed in float32 (float64 inputs stay float64), and the
loss is returned in the student's dtype. In bfloat16 a student close to its
teacher has a KL divergence far below bfloat16's resolution, and computing it
in bfloat16 gets it wrong by tens of percent.

Checks that read tensor values (labels in range, finite scores, a mask that
selects something) run only in debug mode (:func:`mmlearn.set_debug`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmlearn._checks import (
    check_mask,
    check_positive,
    check_positive_int,
    check_probability,
    check_same_size,
    check_tensor,
    debug_enabled,
)

ATTENTION_KINDS = ("probabilities", "scores")
REDUCTIONS = ("sum", "mean")


def _wide(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in at least float32 (float64 stays float64), where the losses are computed."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _check_logit_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Both logits are float ``(N, C)`` tensors of the same shape."""
    check_tensor("student_logits", student_logits, ndim=2, floating=True)
    check_tensor("teacher_logits", teacher_logits, ndim=2, floating=True)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same shape (N, C)"
        )


def _check_labels(labels: torch.Tensor, num_samples: int, num_classes: int) -> None:
    """Class indices: an integer ``(N,)`` tensor with values in ``[0, C)``."""
    check_tensor("labels", labels, ndim=1)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    check_same_size("student_logits", num_samples, "labels", labels.shape[0], "batch sizes")
    if not debug_enabled():  # the range check reads the labels back to the host
        return
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's softened distribution.

    Implements {eq}`eq-kd-soft`, the formula as the book writes it:
    ``mean_n( -sum_c softmax(t_n / T)_c * log_softmax(s_n / T)_c )``.
    There is no ``T**2`` factor here; :func:`distillation_loss` adds it.

    It differs from ``KL(p_t || p_s)`` only by the teacher's entropy, which
    does not depend on the student, so both give the same gradients.

    Args:
        student_logits: ``(N, C)`` raw scores of the student.
        teacher_logits: ``(N, C)`` raw scores of the teacher (detach them yourself,
            or compute them under ``torch.no_grad()``).
        temperature: ``T > 0``; larger ``T`` gives softer targets.

    Returns:
        A scalar tensor.
    """
    _check_logit_pair(student_logits, teacher_logits)
    check_positive("temperature", temperature)
    student = _wide(student_logits)
    teacher_probs = F.softmax(teacher_logits.to(student.dtype) / temperature, dim=-1)
    student_log_probs = F.log_softmax(student / temperature, dim=-1)
    loss = -(teacher_probs * student_log_probs).sum(dim=-1).mean()
    return loss.to(student_logits.dtype)


def kd_kl_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Batch mean of ``KL(softmax(t/T) || softmax(s/T))``, the soft term of {eq}`eq-kd-hinton`.

    Equals ``nn.KLDivLoss(reduction="batchmean")`` applied to the student's
    log-probabilities and the teacher's probabilities. It is computed from two
    ``log_softmax`` calls, so a teacher probability that underflows to 0
    contributes exactly 0 and logits of size 1e4 stay finite.
    """
    _check_logit_pair(student_logits, teacher_logits)
    check_positive("temperature", temperature)
    return _kl_wide(_wide(student_logits), teacher_logits, temperature).to(student_logits.dtype)


def _kl_wide(
    student: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The batch-mean KL of :func:`kd_kl_divergence`, in the dtype of ``student`` (>= float32)."""
    teacher_log_probs = F.log_softmax(teacher_logits.to(student.dtype) / temperature, dim=-1)
    student_log_probs = F.log_softmax(student / temperature, dim=-1)
    teacher_probs = teacher_log_probs.exp()
    return (teacher_probs * (teacher_log_probs - student_log_probs)).sum(dim=-1).mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.'s distillation objective, {eq}`eq-kd-hinton`.

    ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)``,
    the KL term averaged over the batch (``KLDivLoss(reduction="batchmean")``)
    and the cross-entropy computed on the unsoftened logits (``T = 1``).
    The factor ``T**2`` keeps the soft term's gradients of the same size
    whatever the temperature: without it they shrink like ``1 / T**2``.

    Args:
        student_logits: ``(N, C)`` raw scores of the student.
        teacher_logits: ``(N, C)`` raw scores of the teacher.
        labels: ``(N,)`` integer class indices in ``[0, C)``.
        temperature: ``T > 0`` of the soft term.
        alpha: weight in ``[0, 1]`` of the soft term; ``1 - alpha`` goes to the labels.

    Returns:
        A scalar tensor.
    """
    _check_logit_pair(student_logits, teacher_logits)
    check_positive("temperature", temperature)
    check_probability("alpha", alpha)
    _check_labels(labels, student_logits.shape[0], student_logits.shape[1])
    student = _wide(student_logits)
    soft = _kl_wide(student, teacher_logits, temperature)
    hard = F.cross_entropy(student, labels)
    return (alpha * temperature**2 * soft + (1.0 - alpha) * hard).to(student_logits.dtype)


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """TinyBERT's uniform layer map: student layer ``i`` learns from teacher layer ``m(i)``.

    ``m(i) = (i + 1) * L_T // L_S - 1`` (0-based), so the last student layer
    always learns from the last teacher layer. For a 6-layer teacher and a
    2-layer student this is ``[2, 5]``; for 3 student layers ``[1, 3, 5]``.
    """
    check_positive_int("num_student_layers", num_student_layers)
    check_positive_int("num_teacher_layers", num_teacher_layers)
    if num_student_layers > num_teacher_layers:
        raise ValueError(
            f"num_student_layers ({num_student_layers}) must not exceed "
            f"num_teacher_layers ({num_teacher_layers})"
        )
    return [
        (i + 1) * num_teacher_layers // num_student_layers - 1 for i in range(num_student_layers)
    ]


def _select_teacher_layers(
    student_attentions: Sequence[torch.Tensor],
    teacher_attentions: Sequence[torch.Tensor],
    layer_map: Sequence[int] | None,
) -> list[torch.Tensor]:
    """The teacher layer paired with each student layer (identity when ``layer_map`` is None)."""
    num_student, num_teacher = len(student_attentions), len(teacher_attentions)
    if num_student == 0:
        raise ValueError("student_attentions must hold at least one layer, got none")
    if layer_map is None:
        if num_student != num_teacher:
            raise ValueError(
                f"student_attentions has {num_student} layers and teacher_attentions "
                f"{num_teacher}; pass layer_map (e.g. uniform_layer_map"
                f"({num_student}, {num_teacher})) to pair them"
            )
        return list(teacher_attentions)
    if len(layer_map) != num_student:
        raise ValueError(
            f"layer_map must give one teacher layer per student layer ({num_student}), "
            f"got {len(layer_map)}"
        )
    bad = [
        index
        for index in layer_map
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_teacher
    ]
    if bad:
        raise ValueError(
            f"layer_map entries must be ints in [0, {num_teacher}), got {list(layer_map)}"
        )
    return [teacher_attentions[index] for index in layer_map]


def attention_distillation_loss(
    student_attentions: Sequence[torch.Tensor],
    teacher_attentions: Sequence[torch.Tensor],
    reduction: str = "sum",
    layer_map: Sequence[int] | None = None,
    kind: str = "probabilities",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention distillation, {eq}`eq-attention-distillation`: ``(1/L) sum_l ||A_s^l - A_t^l||^2``.

    Args:
        student_attentions: L tensors ``(B, h, Lq, Lk)``, one per student layer.
        teacher_attentions: the teacher's tensors of the same shape; as many as the
            student's, or any number when ``layer_map`` says which to use.
        reduction: ``"sum"`` (the book's formula): the squared Frobenius norm over
            each sample's ``h * Lq * Lk`` elements, averaged over the batch;
            ``"mean"``: the element-wise mean squared error (TinyBERT's ``MSELoss``).
            Either way the L layers are averaged (TinyBERT sums them: multiply by L).
        layer_map: for student layer ``i``, the index of its teacher layer, for
            example :func:`uniform_layer_map`; ``None`` pairs layer ``l`` with layer ``l``.
        kind: ``"probabilities"``: the tensors are attention matrices (rows sum to 1),
            as in the book; ``"scores"``: pre-softmax scores ``Q K^T / sqrt(d_k)``, as
            in TinyBERT. Scores at masked positions are meaningless (``-inf`` or a
            large negative number), so with ``kind="scores"`` every position where
            ``mask`` is False is set to zero in both tensors before comparing.
        mask: optional boolean tensor, broadcastable to ``(B, h, Lq, Lk)``, True =
            the position counts (for example a key-padding mask ``(B, 1, 1, Lk)``).
            Positions where it is False contribute zero (for ``"mean"`` they still
            count in the denominator, as TinyBERT's zeroing does).

    Returns:
        A scalar tensor.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    for name, value in (
        ("student_attentions", student_attentions),
        ("teacher_attentions", teacher_attentions),
    ):
        if isinstance(value, torch.Tensor) or not isinstance(value, Sequence):
            raise TypeError(
                f"{name} must be a list or tuple of per-layer tensors, got {type(value).__name__}"
            )
    teachers = _select_teacher_layers(student_attentions, teacher_attentions, layer_map)
    per_layer = []
    for layer, (student, teacher) in enumerate(zip(student_attentions, teachers, strict=True)):
        check_tensor(f"student_attentions[{layer}]", student, ndim=4, floating=True)
        check_tensor(f"teacher_attentions[{layer}]", teacher, ndim=4, floating=True)
        if student.shape != teacher.shape:
            raise ValueError(
                f"student_attentions[{layer}] {tuple(student.shape)} and its teacher layer "
                f"{tuple(teacher.shape)} must have the same shape (B, h, Lq, Lk)"
            )
        check_mask("mask", mask, student.shape)
        difference = _masked_difference(
            _wide(student), teacher.to(_wide(student).dtype), kind, mask
        )
        squared = difference.square()
        if reduction == "sum":
            per_layer.append(squared.flatten(start_dim=1).sum(dim=1).mean())
        else:
            per_layer.append(squared.mean())
    return torch.stack(per_layer).mean().to(student_attentions[0].dtype)


def _masked_difference(
    student: torch.Tensor, teacher: torch.Tensor, kind: str, mask: torch.Tensor | None
) -> torch.Tensor:
    """``A_s - A_t`` with the positions outside ``mask`` set to zero."""
    if mask is None:
        if (
            kind == "scores"
            and debug_enabled()
            and not (student.isfinite().all() and teacher.isfinite().all())
        ):
            raise ValueError(
                "attention scores hold non-finite values (masked positions?); pass mask "
                "(True = position counts) so that they are zeroed before comparing"
            )
        return student - teacher
    zero = student.new_zeros(())
    student = torch.where(mask, student, zero)
    teacher = torch.where(mask, teacher, zero)
    return student - teacher


def feature_distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feature (hidden-state) distillation: ``MSE(h_s W + b, h_t)``.

    FitNets' hint loss (Romero et al. 2015) and TinyBERT's hidden-state loss:
    the student's features are mapped into the teacher's width by a learned
    projection ``W`` (``(d_s, d_t)``, row-vector convention) and compared with
    the teacher's features by the element-wise mean squared error. With
    ``weight=None`` the widths must already agree. :class:`mmlearn.losses.FeatureDistillationLoss`
    owns the projection as a trainable ``nn.Linear``.

    Args:
        student_hidden: ``(..., d_s)`` student features.
        teacher_hidden: ``(..., d_t)`` teacher features, same leading shape.
        weight: optional ``(d_s, d_t)`` projection.
        bias: optional ``(d_t,)`` bias of the projection.
        mask: optional boolean tensor of the leading shape (for example ``(B, L)``,
            True = real token); the mean runs over the selected positions only.

    Returns:
        A scalar tensor.
    """
    check_tensor("student_hidden", student_hidden, floating=True)
    check_tensor("teacher_hidden", teacher_hidden, floating=True)
    projected = student_hidden
    if weight is not None:
        check_tensor("weight", weight, ndim=2, floating=True)
        check_same_size(
            "student_hidden",
            student_hidden.shape[-1],
            "weight",
            weight.shape[0],
            "feature widths (last dim / rows)",
        )
        projected = projected @ weight
    if bias is not None:
        check_tensor("bias", bias, ndim=1, floating=True)
        check_same_size(
            "bias", bias.shape[0], "teacher_hidden", teacher_hidden.shape[-1], "feature widths"
        )
        projected = projected + bias
    if projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"student_hidden {tuple(student_hidden.shape)} (after the projection "
            f"{tuple(projected.shape)}) and teacher_hidden {tuple(teacher_hidden.shape)} "
            "must have the same shape"
        )
    wide = _wide(projected)
    squared = (wide - teacher_hidden.to(wide.dtype)).square()
    if mask is None:
        return squared.mean().to(projected.dtype)
    check_tensor("mask", mask)
    if mask.dtype != torch.bool or mask.shape != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"mask must be a boolean tensor of shape {tuple(teacher_hidden.shape[:-1])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if debug_enabled() and not mask.any():
        raise ValueError("mask selects no position")
    # The mean over the selected positions, without boolean indexing (whose output
    # size depends on the mask's values, a host sync). An empty mask gives NaN (0 / 0).
    selected = torch.where(mask[..., None], squared, squared.new_zeros(()))
    count = mask.sum() * squared.shape[-1]
    return (selected.sum() / count).to(projected.dtype)
