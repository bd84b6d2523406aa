"""The Transformer's formulas (book section 4.1) as pure functions.

Shapes follow the row-vector convention of the book: a sequence is a matrix
whose rows are tokens, and a projection is ``x @ W``. Masks are boolean and
**True means "may attend"**, the convention of
``torch.nn.functional.scaled_dot_product_attention`` (``torch.nn.MultiheadAttention``
uses the opposite one: convert with ``~mask``).
"""

from __future__ import annotations

import math

import torch

from mmlearn._checks import check_mask, check_min_dim, check_positive_int, check_tensor

__all__ = [
    "attention",
    "attention_weights",
    "causal_mask",
    "feed_forward",
    "merge_heads",
    "multi_head_attention",
    "padding_mask",
    "rotary_embedding",
    "split_heads",
]


def _check_same_dtype(
    name: str, value: torch.Tensor, reference: torch.Tensor, reference_name: str = "query"
) -> None:
    """Reject mixed dtypes early (``float32 @ float64`` fails with a cryptic message)."""
    if value.dtype != reference.dtype:
        raise TypeError(
            f"{name} must have dtype {reference.dtype} (like {reference_name}), got {value.dtype}"
        )


def _check_weight(
    name: str, weight: object, rows: int, reference: torch.Tensor, reference_name: str = "query"
) -> torch.Tensor:
    """Check a projection matrix: 2-D, ``rows`` rows, the dtype of ``reference``."""
    check_tensor(name, weight, ndim=2, floating=True)
    _check_same_dtype(name, weight, reference, reference_name)
    if weight.shape[0] != rows:
        raise ValueError(
            f"{name} must have {rows} rows (the width of its input), "
            f"got shape {tuple(weight.shape)}"
        )
    return weight


def causal_mask(
    length_q: int, length_k: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Return the causal mask ``(Lq, Lk)``: True on and below the diagonal.

    Query ``i`` may attend to keys ``0..i``. When ``Lq != Lk`` the diagonal
    starts at the upper-left corner, like ``scaled_dot_product_attention(is_causal=True)``.
    """
    check_positive_int("length_q", length_q)
    length_k = length_q if length_k is None else check_positive_int("length_k", length_k)
    return torch.ones(length_q, length_k, dtype=torch.bool, device=device).tril()


def padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """Turn ``valid (B, Lk)`` (True = real token) into a key mask ``(B, 1, 1, Lk)``.

    The result broadcasts over heads and query positions, so every query of a
    sequence ignores that sequence's padding keys.
    """
    check_tensor("valid", valid, ndim=2)
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be a boolean tensor (True = real token), got {valid.dtype}")
    return valid[:, None, None, :]


def _check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None) -> None:
    """Check attention's inputs: ``(..., Lq, d_k)``, ``(..., Lk, d_k)``, ``(..., Lk, d_v)``."""
    check_tensor("query", query, floating=True)
    check_min_dim("query", query, 2)
    check_tensor("key", key, ndim=query.dim(), floating=True)
    _check_same_dtype("key", key, query)
    if key.shape[:-2] != query.shape[:-2]:
        raise ValueError(
            f"key's leading (batch) dimensions {tuple(key.shape[:-2])} must equal "
            f"query's {tuple(query.shape[:-2])}"
        )
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"key's last dimension d_k ({key.shape[-1]}) must equal query's ({query.shape[-1]})"
        )
    if value is None:
        return
    check_tensor("value", value, ndim=query.dim(), floating=True)
    _check_same_dtype("value", value, query)
    if value.shape[:-2] != key.shape[:-2] or value.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"value of shape {tuple(value.shape)} must have the leading dimensions and the "
            f"length Lk of key {tuple(key.shape)}"
        )


def attention_weights(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the weights of {eq}`eq-attention`: ``softmax(Q K^T / sqrt(d_k))``, ``(..., Lq, Lk)``.

    Masked entries (``mask`` False) are exactly 0 and a query whose keys are all
    masked gets a row of zeros, not NaN.
    """
    _check_qkv(query, key, None)
    check_mask("mask", mask, (*query.shape[:-1], key.shape[-2]))
    # Scale before the product: Q K^T itself may overflow in float16 for large d_k.
    scores = (query * (1.0 / math.sqrt(query.shape[-1]))) @ key.transpose(-2, -1)
    if mask is None:
        return torch.softmax(scores, dim=-1)
    # The most negative finite number, not -inf: a fully masked row then gives a
    # finite (uniform) softmax instead of 0/0 = NaN, in the forward and backward pass.
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    return weights.masked_fill(~mask, 0.0)


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, {eq}`eq-attention`: ``softmax(Q K^T / sqrt(d_k)) V``.

    Args:
        query: ``(..., Lq, d_k)``.
        key: ``(..., Lk, d_k)``, same leading dimensions as ``query``.
        value: ``(..., Lk, d_v)``.
        mask: optional boolean tensor broadcastable to ``(..., Lq, Lk)``; True = may attend.

    Returns:
        ``(output (..., Lq, d_v), weights (..., Lq, Lk))``. Each row of ``weights``
        sums to 1, except a fully masked row, which is all zeros (so its output row is 0).
    """
    _check_qkv(query, key, value)
    weights = attention_weights(query, key, mask)
    return weights @ value, weights


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reshape ``(B, L, h * d)`` into ``(B, h, L, d)``: head ``i`` gets columns ``i*d:(i+1)*d``."""
    check_tensor("x", x, ndim=3)
    check_positive_int("num_heads", num_heads)
    batch, length, width = x.shape
    if width % num_heads != 0:
        raise ValueError(f"the width of x ({width}) must be divisible by num_heads ({num_heads})")
    return x.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Concat of {eq}`eq-multihead`: ``(B, h, L, d)`` -> ``(B, L, h*d)``."""
    check_tensor("x", x, ndim=4)
    batch, num_heads, length, width = x.shape
    return x.transpose(1, 2).reshape(batch, length, num_heads * width)


def _check_projections(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    num_heads: int,
) -> None:
    """Check the inputs and the four projection matrices of multi-head attention."""
    check_tensor("query", query, ndim=3, floating=True)
    check_tensor("key", key, ndim=3, floating=True)
    check_tensor("value", value, ndim=3, floating=True)
    _check_same_dtype("key", key, query)
    _check_same_dtype("value", value, query)
    if key.shape[0] != query.shape[0] or value.shape[0] != query.shape[0]:
        raise ValueError(
            f"query, key and value must have the same batch size, got {query.shape[0]}, "
            f"{key.shape[0]} and {value.shape[0]} (key/value batch mismatch)"
        )
    if value.shape[1] != key.shape[1]:
        raise ValueError(f"value's length ({value.shape[1]}) must equal key's ({key.shape[1]})")
    check_positive_int("num_heads", num_heads)
    _check_weight("w_q", w_q, query.shape[-1], query)
    _check_weight("w_k", w_k, key.shape[-1], query)
    _check_weight("w_v", w_v, value.shape[-1], query)
    _check_weight("w_o", w_o, w_v.shape[1], query)
    if w_k.shape[1] != w_q.shape[1]:
        raise ValueError(
            f"w_k must have h*d_k = {w_q.shape[1]} columns like w_q, got shape {tuple(w_k.shape)}"
        )
    for name, columns in (("w_q", w_q.shape[1]), ("w_v", w_v.shape[1])):
        if columns % num_heads != 0:
            raise ValueError(
                f"{name} has {columns} columns, which num_heads ({num_heads}) does not divide"
            )


def multi_head_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    num_heads: int,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention, {eq}`eq-multihead` and {eq}`eq-head` (no biases, as in the book).

    ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`` where ``W_i^Q`` is the column
    block ``i*d_k:(i+1)*d_k`` of ``w_q`` (the same for ``w_k``; ``w_v`` in blocks of
    ``d_v``); ``MultiHead = Concat(head_1, ..., head_h) W^O``.

    Args:
        query: ``(B, Lq, d_model)``.
        key, value: ``(B, Lk, d_key)`` and ``(B, Lk, d_value)`` (usually both ``d_model``).
        w_q, w_k: ``(d_model, h*d_k)`` and ``(d_key, h*d_k)``.
        w_v: ``(d_value, h*d_v)``.  w_o: ``(h*d_v, d_out)``.
        num_heads: ``h``.
        mask: boolean, broadcastable to ``(B, h, Lq, Lk)``, True = may attend
            (a key-padding mask is ``(B, 1, 1, Lk)``, see :func:`padding_mask`).

    Returns:
        ``(output (B, Lq, d_out), weights (B, h, Lq, Lk))``.
    """
    _check_projections(query, key, value, w_q, w_k, w_v, w_o, num_heads)
    batch, length_q, length_k = query.shape[0], query.shape[1], key.shape[1]
    check_mask("mask", mask, (batch, num_heads, length_q, length_k))
    q = split_heads(query @ w_q, num_heads)  # (B, h, Lq, d_k)
    k = split_heads(key @ w_k, num_heads)  # (B, h, Lk, d_k)
    v = split_heads(value @ w_v, num_heads)  # (B, h, Lk, d_v)
    heads, weights = attention(q, k, v, mask)
    return merge_heads(heads) @ w_o, weights


def feed_forward(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """Position-wise feed-forward network, {eq}`eq-ffn`: ``max(0, x W1 + b1) W2 + b2``.

    Args:
        x: ``(..., d_model)``; every position is transformed independently.
        w1: ``(d_model, d_ff)``, b1: ``(d_ff,)``, w2: ``(d_ff, d_out)``, b2: ``(d_out,)``.
    """
    check_tensor("x", x, floating=True)
    check_min_dim("x", x, 1)
    _check_weight("w1", w1, x.shape[-1], x, "x")
    _check_weight("w2", w2, w1.shape[1], x, "x")
    for name, bias, width in (("b1", b1, w1.shape[1]), ("b2", b2, w2.shape[1])):
        check_tensor(name, bias, ndim=1, floating=True)
        _check_same_dtype(name, bias, x, "x")
        if bias.shape[0] != width:
            raise ValueError(f"{name} must have shape ({width},), got {tuple(bias.shape)}")
    return torch.relu(x @ w1 + b1) @ w2 + b2


def rotary_embedding(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoPE, Su et al. 2021) of queries or keys ``x (..., L, d)``.

    The row at position ``p = start + t`` is cut into halves ``(x1, x2)`` of ``d / 2``
    columns, and column pair ``(x1[i], x2[i])`` is rotated by the angle ``p * theta_i``
    with ``theta_i = base^(-2i / d)``:
    ``(x1 cos - x2 sin, x1 sin + x2 cos)`` (the half-split layout of GPT-NeoX and LLaMA).
    A rotation by ``p * theta`` of the query and by ``s * theta`` of the key leaves
    their dot product depending on ``p - s`` only: attention scores see *relative*
    positions, and no position vector is added to the tokens themselves.

    Args:
        x: ``(..., L, d)`` with ``d`` even, the heads already split.
        start: the position of the first row (the cache length during generation).
        base: the wavelength base; ``theta_0 = 1`` is the fastest rotation.
    """
    check_tensor("x", x, floating=True)
    check_min_dim("x", x, 2)
    if x.shape[-1] % 2 != 0:
        raise ValueError(f"x must have an even last dimension, got shape {tuple(x.shape)}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an int >= 0, got {start!r}")
    if not isinstance(base, int | float) or base <= 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")
    half = x.shape[-1] // 2
    # Angles in float32 at least: in bf16 the angle of position 200 would be off by ~1 rad.
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    exponents = torch.arange(half, device=x.device, dtype=wide) * (2.0 / x.shape[-1])
    theta = base**-exponents
    positions = torch.arange(start, start + x.shape[-2], device=x.device, dtype=wide)
    angles = positions[:, None] * theta[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
