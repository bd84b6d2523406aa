"""A small BERT-style text encoder with CLS pooling (book section 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from mmlearn._checks import check_positive_int, check_probability, check_tensor
from mmlearn.functional.transformer import padding_mask
from mmlearn.nn.transformer import TransformerEncoder

__all__ = ["TextTransformer", "check_text_inputs"]


def check_text_inputs(
    ids: torch.Tensor, valid: torch.Tensor | None, max_length: int, pad_id: int
) -> torch.Tensor:
    """Check ``ids (B, L)`` and ``valid (B, L)``; return ``valid`` (``ids != pad_id`` if None)."""
    check_tensor("ids", ids, ndim=2)
    if ids.dtype != torch.long:
        raise TypeError(f"ids must be a long tensor of token ids, got {ids.dtype}")
    if ids.shape[1] > max_length:
        raise ValueError(f"ids has length {ids.shape[1]}, more than max_length ({max_length})")
    if valid is None:
        return ids != pad_id
    check_tensor("valid", valid, ndim=2)
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be a boolean tensor (True = real token), got {valid.dtype}")
    if valid.shape != ids.shape:
        raise ValueError(
            f"valid must have the shape of ids {tuple(ids.shape)}, got {tuple(valid.shape)}"
        )
    return valid


class TextTransformer(nn.Module):
    """Token + learned position embeddings, a pre-LN encoder with a padding mask, CLS pooling.

    The input is what :class:`mmlearn.data.tokenizer.WordTokenizer` produces:
    ``ids (B, L)`` that start with ``[CLS]`` and end with ``[PAD]`` tokens. Padding
    keys are masked (:func:`mmlearn.functional.padding_mask`), so no real token
    attends to padding, and the sentence vector is the output at position 0 (CLS).

    Args:
        vocab_size: number of token ids.
        d_model, num_heads, num_layers, d_ff, dropout: the encoder.
        max_length: the longest sequence (the number of position embeddings).
        pad_id: the padding id (its embedding is kept at zero).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        d_ff: int,
        max_length: int,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("max_length", max_length)
        check_probability("dropout", dropout)
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id must be in [0, {vocab_size}), got {pad_id}")
        self.max_length = max_length
        self.pad_id = pad_id
        self.token_embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_length, d_model))
        self.dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            d_model, num_heads, d_ff, num_layers, dropout=dropout, norm_first=True
        )
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        nn.init.zeros_(self.token_embed.weight[pad_id])
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input ``(B, L, d_model)``: token plus position embeddings."""
        return self.dropout(self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]])

    def forward(
        self,
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """Encode ``ids (B, L)``; ``valid (B, L)`` marks real tokens (default ``ids != pad_id``).

        Returns:
            ``(tokens (B, L, d_model), pooled (B, d_model), attentions)``: ``pooled`` is
            the CLS output ``tokens[:, 0]``; ``attentions`` is the list of every layer's
            weights ``(B, h, L, L)`` when ``need_weights``, else None.
        """
        valid = check_text_inputs(ids, valid, self.max_length, self.pad_id)
        tokens, attentions = self.encoder(
            self.embed(ids), mask=padding_mask(valid), need_weights=need_weights
        )
        return tokens, tokens[:, 0], attentions
