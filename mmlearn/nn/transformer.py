"""Transformer encoder layers that can return their attention maps (book section 4.1)."""

from __future__ import annotations

import torch
from torch import nn

from mmlearn._checks import check_positive_int, check_tensor
from mmlearn.nn.attention import MultiHeadAttention
from mmlearn.nn.feedforward import FeedForward

__all__ = ["TransformerEncoder", "TransformerEncoderLayer"]


class TransformerEncoderLayer(nn.Module):
    """One encoder block: self-attention and a feed-forward network, each with a residual.

    * post-LN (``norm_first=False``, the original Transformer and PyTorch's default):
      ``x = LN(x + Attn(x))``, then ``x = LN(x + FFN(x))``;
    * pre-LN (``norm_first=True``, GPT-2, ViT, CLIP): ``x = x + Attn(LN(x))``, then
      ``x = x + FFN(LN(x))``, which trains stably without learning-rate warm-up.

    Same parameters and results as ``nn.TransformerEncoderLayer(d_model, num_heads,
    d_ff, dropout, batch_first=True, norm_first=...)`` (ReLU, LayerNorm eps 1e-5),
    except that masks use True = may attend and the attention maps can be returned.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, fused=fused)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _attend(
        self, x: torch.Tensor, mask: torch.Tensor | None, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        output, weights = self.self_attn(x, x, x, mask=mask, need_weights=need_weights)
        return self.dropout1(output), weights

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Transform ``x (B, L, d_model)``.

        Args:
            mask: boolean, broadcastable to ``(B, h, L, L)``, True = may attend; for
                padding pass ``mmlearn.functional.padding_mask(valid)`` (``(B, 1, 1, L)``).
            need_weights: also return this layer's attention weights ``(B, h, L, L)``.

        Returns:
            ``(x (B, L, d_model), weights or None)``.
        """
        if self.norm_first:
            attended, weights = self._attend(self.norm1(x), mask, need_weights)
            x = x + attended
            x = x + self.dropout2(self.ffn(self.norm2(x)))
        else:
            attended, weights = self._attend(x, mask, need_weights)
            x = self.norm1(x + attended)
            x = self.norm2(x + self.dropout2(self.ffn(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` :class:`TransformerEncoderLayer` blocks.

    ``final_norm``: a pre-LN stack adds its residuals to an un-normalised stream,
    so its output needs one more LayerNorm (as in GPT-2, ViT and CLIP); a post-LN
    stack already ends with one. By default (``None``) the final LayerNorm is
    used exactly when ``norm_first=True``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        fused: bool = True,
        final_norm: bool | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_layers", num_layers)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, norm_first, fused)
            for _ in range(num_layers)
        )
        use_final_norm = norm_first if final_norm is None else final_norm
        self.final_norm = nn.LayerNorm(d_model, eps=1e-5) if use_final_norm else nn.Identity()

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Run ``x (B, L, d_model)`` through every layer.

        Returns:
            ``(x (B, L, d_model), attentions)`` where ``attentions`` is the list of every
            layer's weights ``(B, h, L, L)`` (first layer first) when ``need_weights``
            is True, else None.
        """
        check_tensor("x", x, ndim=3, floating=True)
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, mask=mask, need_weights=need_weights)
            attentions.append(weights)
        return self.final_norm(x), (attentions if need_weights else None)
