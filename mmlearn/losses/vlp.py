"""Module forms of the vision-language pretraining losses (ITC, ITM, LM)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmlearn.functional.vlp import itc_loss, itm_loss, lm_loss

__all__ = ["ITCLoss", "ITMLoss", "LMLoss"]


class ITCLoss(nn.Module):
    """:func:`mmlearn.functional.itc_loss` with a learnable temperature.

    Stores ``s = ln(1 / tau)`` (initially ``ln(1 / 0.07)``, as CLIP and ALBEF) and uses
    ``exp(min(s, ln 100))``, so the scale never exceeds 100.
    """

    def __init__(
        self, init_logit_scale: float = math.log(1 / 0.07), max_logit_scale: float = math.log(100)
    ) -> None:
        super().__init__()
        if not math.isfinite(init_logit_scale) or not math.isfinite(max_logit_scale):
            raise ValueError(
                f"init_logit_scale and max_logit_scale must be finite, got "
                f"{init_logit_scale!r} and {max_logit_scale!r}"
            )
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)

    def scale(self) -> torch.Tensor:
        """The exponentiated, capped scale ``1 / tau``."""
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Loss of ``(N, D)`` image and text projections (normalised inside)."""
        return itc_loss(image_embeds, text_embeds, self.scale())


class ITMLoss(nn.Module):
    """:func:`mmlearn.functional.itm_loss`: class 1 for the true pairs, 0 for the negatives."""

    def forward(self, positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> torch.Tensor:
        return itm_loss(positive_logits, negative_logits)


class LMLoss(nn.Module):
    """:func:`mmlearn.functional.lm_loss` with fixed ``pad_id`` and ``prompt_length``."""

    def __init__(self, pad_id: int | None = None, prompt_length: int = 0) -> None:
        super().__init__()
        self.pad_id, self.prompt_length = pad_id, prompt_length

    def forward(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return lm_loss(logits, ids, pad_id=self.pad_id, prompt_length=self.prompt_length)

    def extra_repr(self) -> str:
        return f"pad_id={self.pad_id}, prompt_length={self.prompt_length}"
