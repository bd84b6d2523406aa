"""Multi-head attention as an ``nn.Module`` (book section 4.1.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn._checks import check_mask, check_positive_int, check_probability, check_tensor
from mmlearn.functional.transformer import attention_weights, merge_heads, split_heads

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Multi-head attention, {eq}`eq-multihead`, with learned projections (and biases).

    How the layers map to the book's matrices: ``nn.Linear`` stores its weight
    transposed, ``(out_features, in_features)``, and computes ``x @ weight.T + bias``. So

    * ``W^Q = q_proj.weight.T`` (``d_model x d_model``), and ``W_i^Q`` is its column
      block ``i*d_head:(i+1)*d_head``, i.e. the row block of ``q_proj.weight``;
    * likewise ``W^K = k_proj.weight.T``, ``W^V = v_proj.weight.T``, ``W^O = out_proj.weight.T``.

    With ``bias=False`` the module computes exactly
    ``mmlearn.functional.multi_head_attention(query, key, value, W^Q, W^K, W^V, W^O, h)``.

    Two paths give the same result:

    * **fused** (``fused=True`` and ``need_weights=False``): PyTorch's
      ``F.scaled_dot_product_attention``, which picks a fast kernel
      (FlashAttention / memory-efficient on GPUs) and never forms the weights;
    * **explicit** (otherwise): :func:`mmlearn.functional.attention_weights` then
      ``weights @ V``. This is the only path that can return the attention maps;
      they are computed, not caught with hooks (hooks see nothing on the fused path).

    Args:
        d_model: width of the queries and of the output.
        num_heads: number of heads ``h``; must divide ``d_model`` (``d_head = d_model / h``).
        dropout: dropout probability on the attention weights (training only).
        bias: whether the four projections have biases.
        fused: use ``F.scaled_dot_product_attention`` when the weights are not needed.
        kdim, vdim: widths of ``key`` and ``value`` for cross-attention (default ``d_model``).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        fused: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("num_heads", num_heads)
        check_probability("dropout", dropout)
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.dropout = dropout
        self.fused = fused
        self.kdim = d_model if kdim is None else check_positive_int("kdim", kdim)
        self.vdim = d_model if vdim is None else check_positive_int("vdim", vdim)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(self.kdim, d_model, bias=bias)
        self.v_proj = nn.Linear(self.vdim, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like ``nn.MultiheadAttention``: Xavier-uniform weights, zero biases."""
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def _check_inputs(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        for name, tensor, width in (
            ("query", query, self.d_model),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            check_tensor(name, tensor, ndim=3, floating=True)
            if tensor.shape[-1] != width:
                raise ValueError(
                    f"{name} must have last dimension {width}, got shape {tuple(tensor.shape)}"
                )
        if key.shape[0] != query.shape[0] or value.shape[0] != query.shape[0]:
            raise ValueError(
                f"query, key and value must have the same batch size, got "
                f"{query.shape[0]}, {key.shape[0]} and {value.shape[0]}"
            )
        if value.shape[1] != key.shape[1]:
            raise ValueError(f"value's length ({value.shape[1]}) must equal key's ({key.shape[1]})")
        target = (query.shape[0], self.num_heads, query.shape[1], key.shape[1])
        check_mask("mask", mask, target)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from query ``(B, Lq, d_model)`` to key ``(B, Lk, kdim)``, value ``(B, Lk, vdim)``.

        Args:
            mask: boolean, broadcastable to ``(B, h, Lq, Lk)``, True = may attend
                (``torch.nn.MultiheadAttention`` uses the opposite polarity). A query whose
                keys are all masked gets a zero attention output (before ``out_proj``).
            need_weights: also return the attention weights ``(B, h, Lq, Lk)``
                (per head, before dropout); forces the explicit path.

        Returns:
            ``(output (B, Lq, d_model), weights or None)``.
        """
        self._check_inputs(query, key, value, mask)
        q = split_heads(self.q_proj(query), self.num_heads)  # (B, h, Lq, d_head)
        k = split_heads(self.k_proj(key), self.num_heads)  # (B, h, Lk, d_head)
        v = split_heads(self.v_proj(value), self.num_heads)  # (B, h, Lk, d_head)
        dropout_p = self.dropout if self.training else 0.0
        if self.fused and not need_weights:
            heads, weights = _fused_attention(q, k, v, mask, dropout_p), None
        else:
            weights = attention_weights(q, k, mask)
            heads = F.dropout(weights, dropout_p, training=self.training) @ v
        return self.out_proj(merge_heads(heads)), (weights if need_weights else None)


def _fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with fully masked query rows set to zero.

    Some SDPA kernels return NaN for a row whose keys are all masked (softmax of
    all ``-inf``). Such rows are opened to every key before the call (so no kernel
    sees an empty row) and their outputs are zeroed after it, which is what the
    explicit path gives.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    has_key = mask.any(dim=-1, keepdim=True)  # (..., Lq, 1): does the query see any key?
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has_key, dropout_p=dropout_p)
    return heads.masked_fill(~has_key, 0.0)
