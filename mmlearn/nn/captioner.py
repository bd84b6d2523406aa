"""An image captioner: a ViT encoder and a causal Transformer decoder (book section 6.3).

The decoder is the original Transformer's (Vaswani et al. 2017), pre-LN: each
layer lets every caption token attend to the tokens before it (causal
self-attention), then to the image tokens (cross-attention), then applies a
feed-forward network. Trained with teacher forcing, it predicts token ``t + 1``
from the image and tokens ``0..t``; at test time :meth:`ImageCaptioner.generate`
decodes greedily, one token at a time, until the end token.

Token conventions: a caption is ``[BOS] w1 ... wn [EOS] [PAD] ...``, right-padded.
Because padding only ever follows the real tokens, the causal mask alone keeps
every real token from seeing padding; no padding mask is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn._checks import check_positive_int, check_probability, check_tensor
from mmlearn.functional.transformer import causal_mask
from mmlearn.nn.attention import MultiHeadAttention
from mmlearn.nn.feedforward import FeedForward
from mmlearn.nn.vision import VisionTransformer

__all__ = ["CaptionDecoderLayer", "ImageCaptioner"]


class CaptionDecoderLayer(nn.Module):
    """A pre-LN decoder layer: causal self-attention, cross-attention, feed-forward.

    ``x = x + SelfAttn(LN(x), mask=causal)``; ``x = x + CrossAttn(LN(x), memory)``;
    ``x = x + FFN(LN(x))``.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm3 = nn.LayerNorm(d_model, eps=1e-5)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Update tokens ``x (B, L, d_model)`` from the image tokens ``memory (B, P, d_model)``.

        Returns ``(x, cross-attention weights (B, h, L, P) or None)``.
        """
        mask = causal_mask(x.shape[1], device=x.device)  # (L, L), True = may attend
        h = self.norm1(x)
        attended, _ = self.self_attn(h, h, h, mask=mask)
        x = x + self.dropout(attended)
        attended, weights = self.cross_attn(
            self.norm2(x), memory, memory, need_weights=need_weights
        )
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.norm3(x)))
        return x, weights


class ImageCaptioner(nn.Module):
    """Encode an image with a ViT, decode a caption with a causal Transformer decoder.

    Args:
        vocab_size: number of token ids.
        bos_id, eos_id, pad_id: the begin, end and padding tokens.
        image_size, patch_size, in_channels: the images, cut into patches.
        d_model, num_heads, num_layers, d_ff, dropout: encoder and decoder sizes
            (each has ``num_layers`` layers).
        max_length: the longest token sequence (``[BOS]`` and ``[EOS]`` included).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int = 0,
        image_size: int = 32,
        patch_size: int = 8,
        in_channels: int = 3,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 64,
        max_length: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("max_length", max_length)
        check_probability("dropout", dropout)
        for name, token in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
                raise ValueError(f"{name} must be an int in [0, {vocab_size}), got {token!r}")
        if len({bos_id, eos_id, pad_id}) != 3:
            raise ValueError(
                f"bos_id ({bos_id}), eos_id ({eos_id}) and pad_id ({pad_id}) "
                f"must be three different ids"
            )
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.max_length = max_length
        self.encoder = VisionTransformer(
            image_size, patch_size, in_channels, d_model, num_heads, num_layers, d_ff, dropout
        )
        self.token_embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_length, d_model))
        self.layers = nn.ModuleList(
            CaptionDecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.output = nn.Linear(d_model, vocab_size)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        nn.init.zeros_(self.token_embed.weight[pad_id])
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The image tokens ``(B, 1 + P, d_model)`` the decoder attends to (CLS and patches)."""
        tokens, _, _ = self.encoder(images)
        return tokens

    def decode(
        self,
        memory: torch.Tensor,
        ids: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Next-token logits ``(B, L, vocab_size)`` for every prefix of ``ids (B, L)``.

        Position ``t`` of the output depends only on ``ids[:, :t + 1]`` and the image.
        Returns ``(logits, per-layer cross-attention weights or None)``.
        """
        check_tensor("ids", ids, ndim=2)
        if ids.dtype != torch.long:
            raise TypeError(f"ids must be a long tensor of token ids, got {ids.dtype}")
        if ids.shape[1] > self.max_length:
            raise ValueError(
                f"ids has length {ids.shape[1]}, more than max_length ({self.max_length})"
            )
        if ids.shape[0] != memory.shape[0]:
            raise ValueError(
                f"batch sizes of ids ({ids.shape[0]}) and images ({memory.shape[0]}) must be equal"
            )
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]
        cross = []
        for layer in self.layers:
            x, weights = layer(x, memory, need_weights=need_weights)
            cross.append(weights)
        return self.output(self.final_norm(x)), (cross if need_weights else None)

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Teacher forcing: ``(logits (B, L, vocab_size), cross-attentions or None)``."""
        return self.decode(self.encode(images), ids, need_weights)

    def loss(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of predicting ``ids[:, 1:]`` from ``ids[:, :-1]``, padding ignored."""
        if ids.shape[1] < 2:
            raise ValueError(
                f"ids must hold at least [BOS] and one more token, got shape {tuple(ids.shape)}"
            )
        logits, _ = self(images, ids[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), ignore_index=self.pad_id)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
        """Greedy decoding: ``(B, L)`` ids that start with ``[BOS]``.

        At each step every unfinished caption takes its most probable next token;
        a caption is finished once it has produced ``[EOS]``, after which it is
        padded. Decoding stops when every caption is finished or ``max_length``
        tokens (``[BOS]`` included) are reached.
        """
        max_length = self.max_length if max_length is None else max_length
        check_positive_int("max_length", max_length)
        if max_length > self.max_length:
            raise ValueError(
                f"max_length ({max_length}) exceeds the model's max_length ({self.max_length})"
            )
        memory = self.encode(images)
        ids = torch.full((images.shape[0], 1), self.bos_id, dtype=torch.long, device=images.device)
        finished = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        while ids.shape[1] < max_length and not finished.all():
            logits, _ = self.decode(memory, ids)
            next_ids = logits[:, -1].argmax(dim=-1)
            next_ids = next_ids.masked_fill(finished, self.pad_id)
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            finished |= next_ids == self.eos_id
        return ids
