"""Vision-language pretraining objectives of ALBEF and BLIP (book section 3.1.2).

* ITC, image-text contrastive: CLIP's symmetric loss on the *unimodal* encoders'
  outputs, {eq}`eq-itc-loss`.
* ITM, image-text matching: a binary "does this text describe this image?" on the
  *fused* ``[CLS]``, {eq}`eq-itm-loss`, with hard negatives drawn from the ITC
  similarities (:func:`itm_hard_negatives`).
* LM, image-grounded language modelling: next-token cross-entropy of a causal
  decoder that attends to the image, {eq}`eq-lm-loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmlearn._checks import check_tensor
from mmlearn.functional.contrastive import clip_loss

__all__ = ["itc_loss", "itm_hard_negatives", "itm_loss", "lm_loss"]


def itc_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """Image-text contrastive loss, {eq}`eq-itc-loss`: :func:`clip_loss` after L2 normalisation.

    Args:
        image_embeds: ``(N, D)`` projections of the image encoder's ``[CLS]``.
        text_embeds: ``(N, D)`` projections of the text encoder's ``[CLS]`` (no fusion).
        logit_scale: ``1 / tau``, already exponentiated.
    """
    check_tensor("image_embeds", image_embeds, ndim=2, floating=True)
    check_tensor("text_embeds", text_embeds, ndim=2, floating=True)
    return clip_loss(
        F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1), logit_scale
    )


def _sample_rows(
    logits: torch.Tensor, exclude: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One column per row, with probability ``softmax(logits)`` over the allowed columns."""
    if not bool((~exclude).any(dim=1).all()):
        raise ValueError("exclude leaves some row with no candidate negative")
    masked = logits.float().masked_fill(exclude, float("-inf"))
    return torch.multinomial(torch.softmax(masked, dim=1), 1, generator=generator)[:, 0]


@torch.no_grad()
def itm_hard_negatives(
    logits_per_image: torch.Tensor,
    *,
    exclude: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one hard negative text per image and one hard negative image per text.

    As in ALBEF and BLIP: image ``i`` gets text ``j != i`` with probability
    proportional to ``softmax_j(s_ij)`` over ``j != i``, so texts that the
    contrastive model confuses with the true one are drawn most often; text ``j``
    gets image ``i != j`` from ``softmax_i(s_ij)``. No gradient flows.

    Args:
        logits_per_image: ``(N, N)`` ITC logits ``s_ij = scale * <image_i, text_j>``.
        exclude: ``(N, N)`` bool, True = pair ``(i, j)`` must not be drawn (e.g. text ``j``
            is the same caption as text ``i``); the diagonal is always excluded.
        generator: for reproducible draws.

    Returns:
        ``(negative_text (N,), negative_image (N,))`` long indices.
    """
    check_tensor("logits_per_image", logits_per_image, ndim=2, floating=True)
    n = logits_per_image.shape[0]
    if logits_per_image.shape[1] != n or n < 2:
        raise ValueError(
            f"logits_per_image must be square with N >= 2, got shape "
            f"{tuple(logits_per_image.shape)}"
        )
    diagonal = torch.eye(n, dtype=torch.bool, device=logits_per_image.device)
    if exclude is not None:
        check_tensor("exclude", exclude, ndim=2)
        if exclude.dtype != torch.bool or exclude.shape != (n, n):
            raise ValueError(
                f"exclude must be a bool tensor of shape {(n, n)}, got "
                f"{exclude.dtype} {tuple(exclude.shape)}"
            )
        diagonal = diagonal | exclude
    negative_text = _sample_rows(logits_per_image, diagonal, generator)
    negative_image = _sample_rows(logits_per_image.T, diagonal.T, generator)
    return negative_text, negative_image


def itm_loss(positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> torch.Tensor:
    """Image-text matching loss, {eq}`eq-itm-loss`: binary cross-entropy over pairs.

    Class 1 is "matched", class 0 "not matched". The loss is the mean of
    ``-log p(1 | pair)`` over the ``N`` positive pairs and ``-log p(0 | pair)`` over
    the ``M`` negative pairs (ALBEF: ``M = 2N``, one negative text per image and
    one negative image per text).

    Args:
        positive_logits: ``(N, 2)`` ITM head outputs for the true pairs.
        negative_logits: ``(M, 2)`` for the negative pairs.
    """
    check_tensor("positive_logits", positive_logits, ndim=2, floating=True)
    check_tensor("negative_logits", negative_logits, ndim=2, floating=True)
    for name, value in (("positive_logits", positive_logits), ("negative_logits", negative_logits)):
        if value.shape[1] != 2 or value.shape[0] == 0:
            raise ValueError(f"{name} must have shape (K >= 1, 2), got {tuple(value.shape)}")
    logits = torch.cat([positive_logits, negative_logits])
    labels = torch.cat(
        [
            torch.ones(len(positive_logits), dtype=torch.long),
            torch.zeros(len(negative_logits), dtype=torch.long),
        ]
    ).to(logits.device)
    return F.cross_entropy(logits.float(), labels)


def lm_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    *,
    pad_id: int | None = None,
    prompt_length: int | torch.Tensor = 0,
) -> torch.Tensor:
    """Language-modelling loss, {eq}`eq-lm-loss`: mean next-token cross-entropy.

    ``logits[:, t]`` predicts ``ids[:, t + 1]`` (the output at position ``t`` has
    seen tokens ``0..t``). A target ``ids[:, j]`` counts unless it is padding or it
    belongs to the prompt (``j < prompt_length``): a prompt such as "a picture of"
    is given to the model, not predicted by it (BLIP).

    Args:
        logits: ``(B, L, V)`` decoder outputs on ``ids``.
        ids: ``(B, L)`` long token ids.
        pad_id: the padding id (those targets are ignored), or None.
        prompt_length: an int, or ``(B,)`` long per sequence; targets at positions
            ``< prompt_length`` are ignored.

    Returns:
        The mean over the counted targets (a scalar).
    """
    check_tensor("logits", logits, ndim=3, floating=True)
    check_tensor("ids", ids, ndim=2)
    if ids.dtype != torch.long or ids.shape != logits.shape[:2] or ids.shape[1] < 2:
        raise ValueError(
            f"ids must be long with shape {tuple(logits.shape[:2])} (L >= 2), "
            f"got {ids.dtype} {tuple(ids.shape)}"
        )
    positions = torch.arange(ids.shape[1], device=ids.device)[None, :]
    prompt = torch.as_tensor(prompt_length, device=ids.device)
    if (
        prompt.dim() > 1
        or (prompt.dim() == 1 and prompt.shape[0] != ids.shape[0])
        or bool((prompt < 0).any())
    ):
        raise ValueError(
            f"prompt_length must be a non-negative int or a (B,) tensor, got {prompt_length!r}"
        )
    counted = (positions >= prompt.reshape(-1, 1)).expand(ids.shape)
    if pad_id is not None:
        counted = counted & (ids != pad_id)
    counted = counted[:, 1:]
    if not bool(counted.any()):
        raise ValueError("no target is left once padding and prompt_length are ignored")
    losses = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none"
    )
    return losses[counted.flatten()].mean()
