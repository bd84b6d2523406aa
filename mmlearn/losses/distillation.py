"""Module forms of the distillation losses of chapter 4.3.

Each wraps a function of :mod:`mmlearn.functional.distillation` and keeps its
hyper-parameters, so a training loop can hold one object. Only
:class:`FeatureDistillationLoss` has parameters: the learned projection from
the student's width to the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmlearn._checks import check_positive, check_positive_int, check_probability
from mmlearn.functional.distillation import (
    ATTENTION_KINDS,
    REDUCTIONS,
    attention_distillation_loss,
    distillation_loss,
    feature_distillation_loss,
    soft_target_loss,
)


class SoftTargetLoss(nn.Module):
    """{eq}`eq-kd-soft`: cross-entropy against the teacher's softened distribution (no ``T**2``)."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return soft_target_loss(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class DistillationLoss(nn.Module):
    """{eq}`eq-kd-hinton`: ``alpha * T**2 * KL + (1 - alpha) * CE``."""

    def __init__(self, temperature: float, alpha: float) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_probability("alpha", alpha)
        self.temperature = temperature
        self.alpha = alpha

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return distillation_loss(
            student_logits, teacher_logits, labels, self.temperature, self.alpha
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


class AttentionDistillationLoss(nn.Module):
    """{eq}`eq-attention-distillation` with a fixed reduction, kind and layer map."""

    def __init__(
        self,
        reduction: str = "sum",
        layer_map: Sequence[int] | None = None,
        kind: str = "probabilities",
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        self.reduction = reduction
        self.layer_map = None if layer_map is None else list(layer_map)
        self.kind = kind

    def forward(
        self,
        student_attentions: Sequence[torch.Tensor],
        teacher_attentions: Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return attention_distillation_loss(
            student_attentions,
            teacher_attentions,
            reduction=self.reduction,
            layer_map=self.layer_map,
            kind=self.kind,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, layer_map={self.layer_map}, kind={self.kind!r}"


class FeatureDistillationLoss(nn.Module):
    """Hidden-state distillation with a learned projection ``W`` (FitNets, TinyBERT).

    ``MSE(h_s W + b, h_t)``: an ``nn.Linear(student_dim, teacher_dim)`` maps the
    student's features into the teacher's width. Give its parameters to the
    optimizer together with the student's; after training it is thrown away.
    With equal widths and ``project=False`` there is no projection at all.
    """

    def __init__(self, student_dim: int, teacher_dim: int, project: bool = True) -> None:
        super().__init__()
        check_positive_int("student_dim", student_dim)
        check_positive_int("teacher_dim", teacher_dim)
        if not project and student_dim != teacher_dim:
            raise ValueError(
                f"project=False needs student_dim == teacher_dim, got {student_dim} "
                f"and {teacher_dim}"
            )
        self.projection = nn.Linear(student_dim, teacher_dim) if project else None

    def forward(
        self,
        student_hidden: torch.Tensor,
        teacher_hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.projection is None:
            return feature_distillation_loss(student_hidden, teacher_hidden, mask=mask)
        # nn.Linear stores W as (d_t, d_s) and computes x @ W.T: pass the book's (d_s, d_t).
        return feature_distillation_loss(
            student_hidden,
            teacher_hidden,
            weight=self.projection.weight.T,
            bias=self.projection.bias,
            mask=mask,
        )
