"""Sinusoidal positional encoding (book section 4.1)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmlearn._checks import check_min_dim, check_positive_int, check_probability, check_tensor

__all__ = ["PositionalEncoding", "sinusoidal_table"]


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """Return the table ``PE (max_len, d_model)`` of Vaswani et al. (2017), in float64.

    ``PE[pos, 2i] = sin(pos / 10000^(2i/d_model))`` and
    ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model))``; so ``PE[0] = [0, 1, 0, 1, ...]``.
    """
    check_positive_int("max_len", max_len)
    check_positive_int("d_model", d_model)
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    even = torch.arange(0, d_model, 2, dtype=torch.float64)  # the 2i of the formula
    frequency = torch.exp(-math.log(10000.0) * even / d_model)  # 1 / 10000^(2i/d_model)
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])  # odd d_model: one fewer
    return table


class PositionalEncoding(nn.Module):
    """Add the sinusoidal positional encoding to a sequence, then apply dropout.

    The table is a buffer, not a parameter: it is not trained, it moves with
    ``.to(device)``, and it is not stored in ``state_dict`` (it is recomputed).

    Args:
        d_model: width of the token vectors.
        max_len: the longest sequence the module accepts.
        dropout: dropout on the sum (the original Transformer uses 0.1).
    """

    pe: torch.Tensor

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        check_probability("dropout", dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model).float(), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``dropout(x + PE[:L])`` for ``x (..., L, d_model)``."""
        check_tensor("x", x, floating=True)
        check_min_dim("x", x, 2)
        max_len, d_model = self.pe.shape
        if x.shape[-1] != d_model or x.shape[-2] > max_len:
            raise ValueError(
                f"x must have shape (..., L <= {max_len}, {d_model}), got {tuple(x.shape)}"
            )
        return self.dropout(x + self.pe[: x.shape[-2]].to(x.dtype))
