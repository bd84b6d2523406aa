"""The position-wise feed-forward network as an ``nn.Module`` (book section 4.1.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn._checks import check_positive_int, check_probability

__all__ = ["FeedForward"]


class FeedForward(nn.Module):
    """``FFN(x) = max(0, x W1 + b1) W2 + b2``, {eq}`eq-ffn`, applied to every position.

    ``W1 = linear1.weight.T`` (``d_model x d_ff``), ``b1 = linear1.bias``,
    ``W2 = linear2.weight.T``, ``b2 = linear2.bias``; in eval mode (or with
    ``dropout=0``) the module equals ``mmlearn.functional.feed_forward`` with these.
    ``dropout`` acts on the hidden ReLU activations, as in ``nn.TransformerEncoderLayer``.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_ff", d_ff)
        check_probability("dropout", dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x (..., d_model)`` to ``(..., d_model)``."""
        return self.linear2(self.dropout(F.relu(self.linear1(x))))
