"""Where does a vision Transformer look? Attention rollout and patch overlays (book section 3.1).

* :func:`attention_rollout` (Abnar & Zuidema 2020) follows attention through
  all layers, counting the residual connection as half of each layer's mixing.
* :func:`overlay_patch_attention` draws a patch-grid map over its image.
* :func:`word_attention_heatmap` takes one word's cross-attention over the
  image patches and lays it out as the patch grid.
* :func:`attention_in_box` measures how much of a map's mass falls inside an
  object's box, to compare with the share that chance would give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from mmlearn._checks import check_positive_int, check_probability, check_tensor

__all__ = [
    "HEAD_FUSIONS",
    "attention_in_box",
    "attention_rollout",
    "overlay_patch_attention",
    "word_attention_heatmap",
]

HEAD_FUSIONS = ("mean", "max", "min")


def _fuse_heads(weights: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """Combine the heads of ``(..., h, L, L)`` into ``(..., L, L)``."""
    if head_fusion == "mean":
        return weights.mean(dim=-3)
    if head_fusion == "max":
        return weights.amax(dim=-3)
    return weights.amin(dim=-3)


def attention_rollout(
    attentions: Sequence[torch.Tensor] | torch.Tensor,
    head_fusion: str = "mean",
    residual_alpha: float = 0.5,
) -> torch.Tensor:
    """Attention rollout: how much each output token draws on each input token.

    For every layer ``l`` the heads are fused into one matrix ``A_l``, the
    residual connection is added as an identity,
    ``A'_l = (1 - residual_alpha) A_l + residual_alpha I`` (``0.5 A + 0.5 I`` by
    default), each row is renormalised to sum to 1, and the layers are multiplied,
    last layer on the left: ``R = A'_L ... A'_2 A'_1``.

    Args:
        attentions: one tensor per layer, first layer first, each ``(h, L, L)`` or
            ``(B, h, L, L)`` (a ``(layers, h, L, L)`` tensor works too).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
        residual_alpha: the weight of the identity, in ``[0, 1]``.

    Returns:
        ``R (L, L)`` or ``(B, L, L)``; row ``i`` is output token ``i``'s mixture of the
        input tokens (for a ViT, row 0 over columns ``1:`` is the CLS token's map).
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    check_probability("residual_alpha", residual_alpha)
    layers = list(attentions)
    if not layers:
        raise ValueError("attentions must hold at least one layer")
    first = check_tensor("attentions[0]", layers[0], ndim=(3, 4), floating=True)
    length = first.shape[-1]
    if first.shape[-2] != length:
        raise ValueError(
            f"attentions must be self-attention maps (L, L), got shape {tuple(first.shape)}"
        )
    identity = torch.eye(length, dtype=first.dtype, device=first.device)
    rollout = None
    for index, weights in enumerate(layers):
        check_tensor(f"attentions[{index}]", weights, ndim=first.dim(), floating=True)
        if weights.shape != first.shape:
            raise ValueError(
                f"attentions[{index}] has shape {tuple(weights.shape)}, "
                f"but attentions[0] has {tuple(first.shape)}"
            )
        mixed = (1 - residual_alpha) * _fuse_heads(weights, head_fusion) + residual_alpha * identity
        mixed = mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(mixed.dtype).tiny)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def _patch_grid(name: str, patch_weights: torch.Tensor) -> torch.Tensor:
    """Return ``patch_weights`` as a square ``(g, g)`` grid (from ``(P,)`` or ``(g, g)``)."""
    check_tensor(name, patch_weights, ndim=(1, 2), floating=True)
    if patch_weights.dim() == 2:
        if patch_weights.shape[0] != patch_weights.shape[1]:
            raise ValueError(f"{name} must be a square grid, got {tuple(patch_weights.shape)}")
        return patch_weights
    side = math.isqrt(patch_weights.shape[0])
    if side * side != patch_weights.shape[0]:
        raise ValueError(
            f"{name} must hold a square number of patches, got {patch_weights.shape[0]}"
        )
    return patch_weights.reshape(side, side)


def _upsample(grid: torch.Tensor, image_size: int) -> torch.Tensor:
    """Spread a ``(g, g)`` grid over ``(image_size, image_size)`` pixels, patch by patch."""
    if image_size % grid.shape[0] != 0:
        raise ValueError(
            f"the image size ({image_size}) must be a multiple of the patch grid ({grid.shape[0]})"
        )
    return F.interpolate(grid[None, None], size=(image_size, image_size), mode="nearest")[0, 0]


def overlay_patch_attention(
    image: torch.Tensor,
    patch_weights: torch.Tensor,
    ax: plt.Axes | None = None,
    alpha: float = 0.6,
    title: str | None = None,
    cmap: str = "inferno",
) -> plt.Axes:
    """Draw ``image (C, H, W)`` with a patch map laid over it (each patch a flat block).

    Args:
        image: ``(3, H, W)`` or ``(1, H, W)`` in ``[0, 1]``, square.
        patch_weights: ``(P,)`` (row by row over the grid) or ``(g, g)``, with ``H`` a
            multiple of ``g``; shown scaled to its maximum.
        alpha: opacity of the map.
    """
    check_tensor("image", image, ndim=3, floating=True)
    if image.shape[0] not in (1, 3) or image.shape[1] != image.shape[2]:
        raise ValueError(f"image must have shape (3, H, H) or (1, H, H), got {tuple(image.shape)}")
    check_probability("alpha", alpha)
    grid = _patch_grid("patch_weights", patch_weights.detach().cpu().float())
    heat = _upsample(grid, image.shape[1])
    heat = heat / heat.max().clamp_min(torch.finfo(heat.dtype).tiny)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    pixels = image.detach().cpu().permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
    ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    return ax


def word_attention_heatmap(
    cross_attention: torch.Tensor, token_index: int, grid_size: int
) -> torch.Tensor:
    """One text token's attention over the image patches, as a ``(grid, grid)`` map.

    Args:
        cross_attention: one example's cross-attention, ``(h, L_text, P)`` (heads are
            averaged), ``(1, h, L_text, P)`` or ``(L_text, P)``.
        token_index: the text position whose row is wanted.
        grid_size: patches per side; ``P`` must equal ``grid_size ** 2``.
    """
    check_tensor("cross_attention", cross_attention, ndim=(2, 3, 4), floating=True)
    check_positive_int("grid_size", grid_size)
    weights = cross_attention
    if weights.dim() == 4:
        if weights.shape[0] != 1:
            raise ValueError(
                f"cross_attention must hold one example, got batch size {weights.shape[0]}"
            )
        weights = weights[0]
    if weights.dim() == 3:
        weights = weights.mean(dim=0)  # average the heads: (L_text, P)
    if weights.shape[1] != grid_size**2:
        raise ValueError(
            f"cross_attention has {weights.shape[1]} patches, but grid_size "
            f"{grid_size} needs {grid_size**2}"
        )
    if not 0 <= token_index < weights.shape[0]:
        raise ValueError(f"token_index must be in [0, {weights.shape[0]}), got {token_index}")
    return weights[token_index].reshape(grid_size, grid_size)


def attention_in_box(patch_weights: torch.Tensor, box: Sequence[int], image_size: int) -> float:
    """The share of a patch map's mass that falls inside a pixel box ``(x0, y0, x1, y1)``.

    Each patch's weight is spread evenly over its pixels, so a patch half inside
    the box counts half. A map that is uniform over the image puts exactly
    ``box area / image area`` inside the box: that is the share chance gives.
    """
    grid = _patch_grid("patch_weights", patch_weights.detach())
    check_positive_int("image_size", image_size)
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size):
        raise ValueError(
            f"box must satisfy 0 <= x0 < x1 <= {image_size} and "
            f"0 <= y0 < y1 <= {image_size}, got {tuple(box)}"
        )
    pixels = _upsample(grid.double(), image_size)
    total = pixels.sum()
    if total <= 0:
        raise ValueError("patch_weights must have a positive sum")
    return float(pixels[y0:y1, x0:x1].sum() / total)
