"""The Vision Transformer (ViT, Dosovitskiy et al. 2021): patches as tokens (book section 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from mmlearn._checks import check_positive_int, check_probability, check_tensor
from mmlearn.nn.transformer import TransformerEncoder

__all__ = ["PatchEmbedding", "VisionTransformer"]


class PatchEmbedding(nn.Module):
    """Cut an image into ``patch_size x patch_size`` patches and project each to ``d_model``.

    A convolution whose kernel and stride both equal the patch size sees each
    patch exactly once: it is the same as flattening every patch (channel, row,
    column order, as ``F.unfold`` does) and multiplying by one shared matrix,
    ``conv.weight.reshape(d_model, -1).T``, plus the bias. The output tokens go
    row by row over the patch grid (left to right, top to bottom).
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, d_model: int) -> None:
        super().__init__()
        check_positive_int("image_size", image_size)
        check_positive_int("patch_size", patch_size)
        check_positive_int("in_channels", in_channels)
        check_positive_int("d_model", d_model)
        if image_size % patch_size != 0:
            raise ValueError(
                f"image_size ({image_size}) must be divisible by patch_size ({patch_size})"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to patch tokens ``(B, num_patches, d_model)``."""
        check_tensor("images", images, ndim=4, floating=True)
        expected = (self.in_channels, self.image_size, self.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {tuple(images.shape)}"
            )
        patches = self.proj(images)  # (B, d_model, grid, grid)
        return patches.flatten(2).transpose(1, 2)  # (B, grid*grid, d_model)


class VisionTransformer(nn.Module):
    """A ViT encoder: ``[CLS] + patch tokens``, learned position embeddings, a pre-LN encoder.

    ``x = concat(CLS, PatchEmbedding(images)) + pos``, then ``num_layers`` pre-LN
    blocks and a final LayerNorm (as in ViT and CLIP). The CLS token is
    concatenated *before* the position embeddings are added, so it has its own
    position embedding (index 0).

    Args:
        image_size, patch_size, in_channels: the input images ``(B, in_channels,
            image_size, image_size)``, cut into ``(image_size / patch_size)^2`` patches.
        d_model, num_heads, num_layers, d_ff, dropout: the encoder.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_channels: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        d_ff: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_probability("dropout", dropout)
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, d_model))
        self.dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            d_model, num_heads, d_ff, num_layers, dropout=dropout, norm_first=True
        )
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def grid_size(self) -> int:
        """Patches per side: the patch tokens form a ``grid_size x grid_size`` grid."""
        return self.patch_embed.grid_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's input ``(B, 1 + num_patches, d_model)``: CLS, patches, + positions."""
        patches = self.patch_embed(images)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return self.dropout(torch.cat([cls, patches], dim=1) + self.pos_embed)

    def forward(
        self,
        images: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """Encode images ``(B, C, H, W)``.

        Returns:
            ``(tokens (B, 1 + P, d_model), pooled (B, d_model), attentions)``:
            ``pooled`` is the CLS token's output ``tokens[:, 0]``; ``attentions`` is the
            list of every layer's weights ``(B, h, 1 + P, 1 + P)`` when ``need_weights``,
            else None (token 0 is CLS, token ``1 + i`` is patch ``i``).
        """
        tokens, attentions = self.encoder(self.embed(images), need_weights=need_weights)
        return tokens, tokens[:, 0], attentions
