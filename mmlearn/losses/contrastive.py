"""Module forms of the contrastive losses, including a CLIP loss for many processes.

* :class:`InfoNCELoss` wraps :func:`mmlearn.functional.info_nce` ({eq}`eq-infonce`);
* :class:`NTXentLoss` wraps :func:`mmlearn.functional.nt_xent` ({eq}`eq-nt-xent`);
* :class:`ClipLoss` is CLIP's symmetric loss ({eq}`eq-clip-loss`) with its own
  logit scale or a model's, and, under ``torch.distributed``, features
  gathered from every rank so that each image sees the whole global batch of
  texts as negatives (as open_clip's ``ClipLoss``);
* :class:`SigLipLoss` wraps :func:`mmlearn.functional.siglip_loss`
  ({eq}`eq-siglip-loss`) with a learnable scale and bias (one process).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn._checks import check_positive
from mmlearn.distributed import gather_features, rank_and_world_size
from mmlearn.functional.contrastive import (
    _check_logit_scale,
    _check_pair,
    clip_loss,
    info_nce,
    nt_xent,
    siglip_loss,
)

__all__ = ["ClipLoss", "InfoNCELoss", "NTXentLoss", "SigLipLoss"]

REDUCTIONS = ("mean", "sum", "none")


class InfoNCELoss(nn.Module):
    """InfoNCE, {eq}`eq-infonce`, with a fixed temperature and a reduction.

    ``reduction="mean"`` gives the objective J_CL ({eq}`eq-cl-objective`);
    ``"none"`` the ``(N,)`` per-anchor losses.
    """

    def __init__(self, temperature: float = 1.0, reduction: str = "mean"):
        super().__init__()
        check_positive("temperature", temperature)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.temperature = float(temperature)
        self.reduction = reduction

    def forward(
        self, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        losses = info_nce(anchor, positive, negatives, self.temperature)
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent loss, {eq}`eq-nt-xent` (the paper's mean over 2N views)."""

    def __init__(self, temperature: float):
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class ClipLoss(nn.Module):
    """CLIP's symmetric contrastive loss, {eq}`eq-clip-loss`, on one or many processes.

    **Logit scale: one owner.** The scale ``exp(s)`` with ``s = ln(1 / tau)``
    (CLIP starts at ``tau = 0.07``) is owned by exactly one object:

    * the loss, ``learnable=True``: ``s`` is a parameter of the loss (give the
      loss's parameters to the optimiser, and call :meth:`clamp_logit_scale_`
      after each ``optimizer.step()``); passing a scale to ``forward`` is then
      an error, since the loss's own parameter would silently stop learning;
    * nobody, ``learnable=False``: ``s`` is a fixed buffer, a default that a
      scale passed to ``forward`` replaces;
    * a model (as :class:`mmlearn.nn.CLIPModel`): build the loss with
      ``learnable=False`` and pass the model's ``exp(s)`` to ``forward``.

    The scale is used as it is: ``forward`` never clamps it, so its gradient
    is never silently zero. The cap ``s <= max_logit_scale = ln 100`` (and
    ``s >= 0``) is applied by the owner *in place after the optimiser step*,
    as open_clip's training loop does; :func:`mmlearn.train.train` does it for
    every module of the model that has a ``clamp_logit_scale_`` method. A
    clamp inside ``forward`` would zero the gradient above the cap, and
    AdamW's momentum could then leave ``s`` stuck above it for good.

    **Many processes.** When ``torch.distributed`` is initialised with
    ``world_size > 1``, the features of all ranks are gathered
    (:func:`mmlearn.distributed.gather_features`), so each image is
    contrasted with the texts of the whole global batch ``B = world_size * b``.
    Every rank must pass the same local batch size ``b`` (use
    ``drop_last=True``).

    * ``local_loss=False``: every rank computes the full ``B x B`` loss.
    * ``local_loss=True``: rank r only computes the rows of its own ``b``
      images and texts against all ``B`` candidates (``b x B`` logits, less
      memory); their targets are the columns ``r * b + i``. The mean of the
      ranks' local losses is the global loss. This needs a gather *with*
      gradients: the rows that rank r's features touch on the other ranks
      give gradients that only come back through the gather. Without them the
      gradients are silently wrong, so that combination is rejected.

    **World-size factor.** Each rank's loss *value* equals the single-process
    loss on the global batch (``local_loss=False``) or its rank's share of it
    (``local_loss=True``; their mean is the global loss). With
    ``gather_with_grad=True`` the gradient that reaches rank r's features is
    ``world_size`` times the gradient of the single-process global loss with
    respect to those rows: the backward of the gather sums the contributions
    of all ranks. ``DistributedDataParallel`` then averages the parameter
    gradients over the ranks, which divides by ``world_size`` again, so the
    parameters get exactly the single-process gradient of the global loss.
    (With ``gather_with_grad=False, local_loss=False`` each rank only gets the
    gradient through its own rows, factor 1, and DDP's average leaves the
    parameters with ``1 / world_size`` of the single-process gradient.)

    Args:
        init_logit_scale: initial ``ln(1 / tau)``; default ``ln(1 / 0.07)``; at most
            ``max_logit_scale``.
        max_logit_scale: the cap on ``ln(scale)`` applied by :meth:`clamp_logit_scale_`;
            default ``ln 100``.
        learnable: the loss owns and trains the scale (parameter) or keeps it fixed (buffer).
        gather_with_grad: gather other ranks' features with gradients.
        local_loss: compute only this rank's rows (see above).
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
        learnable: bool = True,
        gather_with_grad: bool = True,
        local_loss: bool = False,
    ):
        super().__init__()
        if not math.isfinite(init_logit_scale):
            raise ValueError(f"init_logit_scale must be finite, got {init_logit_scale!r}")
        if not math.isfinite(max_logit_scale):
            raise ValueError(f"max_logit_scale must be finite, got {max_logit_scale!r}")
        if init_logit_scale > max_logit_scale:
            raise ValueError(
                f"init_logit_scale ({init_logit_scale!r}) must not exceed "
                f"max_logit_scale ({max_logit_scale!r})"
            )
        if local_loss and not gather_with_grad:
            raise ValueError(
                "local_loss=True requires gather_with_grad=True: each rank's local loss also "
                "depends on the features of the other ranks, whose gradients only come back "
                "through a gather with gradients; without it the gradients are silently wrong"
            )
        value = torch.tensor(float(init_logit_scale))
        if learnable:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)
        self.max_logit_scale = float(max_logit_scale)
        self.gather_with_grad = gather_with_grad
        self.local_loss = local_loss

    @property
    def learnable(self) -> bool:
        """True when the loss owns a trainable scale."""
        return isinstance(self.logit_scale, nn.Parameter)

    def scale(self) -> torch.Tensor:
        """The stored scale, exponentiated: ``exp(s)`` (no clamp, so the gradient flows)."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp a learnable ``s`` into ``[0, max_logit_scale]`` in place (after the step)."""
        if self.learnable and self.logit_scale.requires_grad:
            self.logit_scale.clamp_(0.0, self.max_logit_scale)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of L2-normalised ``(b, D)`` image and text features (row i pairs with row i).

        ``logit_scale``: a model's already exponentiated scale; only when the loss
        was built with ``learnable=False`` (otherwise the scale would have two owners).
        """
        if logit_scale is None:
            scale = self.scale()
        elif self.learnable:
            raise ValueError(
                "logit_scale was passed to a ClipLoss that owns a learnable scale: one of the "
                "two would silently stop learning. Build the loss with learnable=False to use "
                "the model's scale, or pass no logit_scale to use the loss's own"
            )
        else:
            scale = logit_scale
        rank, world_size = rank_and_world_size()
        if world_size == 1:
            return clip_loss(image_features, text_features, scale)
        _check_pair("image_features", image_features, "text_features", text_features)
        _check_logit_scale(scale)
        all_images = gather_features(image_features, self.gather_with_grad)
        all_texts = gather_features(text_features, self.gather_with_grad)
        if not self.local_loss:
            return clip_loss(all_images, all_texts, scale)
        return _local_clip_loss(image_features, text_features, all_images, all_texts, scale, rank)

    def extra_repr(self) -> str:
        return (
            f"max_logit_scale={self.max_logit_scale:.4f}, "
            f"gather_with_grad={self.gather_with_grad}, local_loss={self.local_loss}"
        )


def _local_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    all_images: torch.Tensor,
    all_texts: torch.Tensor,
    scale: torch.Tensor,
    rank: int,
) -> torch.Tensor:
    """This rank's rows of the global CLIP loss: targets are offset by ``rank * b``."""
    local_batch = image_features.shape[0]
    logits_per_image = scale * image_features @ all_texts.T
    logits_per_text = scale * text_features @ all_images.T
    labels = torch.arange(local_batch, device=logits_per_image.device) + rank * local_batch
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


class SigLipLoss(nn.Module):
    """SigLIP's sigmoid loss, {eq}`eq-siglip-loss`, with a learnable scale and bias.

    Stores ``t' = ln t`` (default ``ln 10``) and ``b`` (default ``-10``), the
    initial values of Zhai et al. (2023), as parameters when ``learnable``
    (add the loss's parameters to the optimiser) or as buffers otherwise, and
    passes ``exp(t')`` and ``b`` to :func:`mmlearn.functional.siglip_loss`.
    This module computes the loss of one process's batch; it does not
    exchange features between ranks (the paper's chunked multi-device
    version is not implemented), so it refuses to run with ``world_size > 1``.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(10.0),
        init_logit_bias: float = -10.0,
        learnable: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("init_logit_scale", init_logit_scale),
            ("init_logit_bias", init_logit_bias),
        ):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        scale, bias = torch.tensor(float(init_logit_scale)), torch.tensor(float(init_logit_bias))
        if learnable:
            self.logit_scale, self.logit_bias = nn.Parameter(scale), nn.Parameter(bias)
        else:
            self.register_buffer("logit_scale", scale)
            self.register_buffer("logit_bias", bias)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Loss of L2-normalised ``(N, D)`` image and text features (row i pairs with row i)."""
        if rank_and_world_size()[1] > 1:
            raise RuntimeError(
                "SigLipLoss computes a single-process loss; with world_size > 1 "
                "each rank would miss the pairs across ranks"
            )
        return siglip_loss(image_features, text_features, self.logit_scale.exp(), self.logit_bias)

    def extra_repr(self) -> str:
        return f"t={self.logit_scale.exp().item():.4g}, b={self.logit_bias.item():.4g}"
