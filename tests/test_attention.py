"""Scaled dot-product and multi-head attention: mmlearn.functional, mmlearn.nn and the plots.

References (float64): torch.nn.functional.scaled_dot_product_attention, a brute-force
loop over queries and keys, a hand-computed case, and torch.nn.MultiheadAttention
with copied weights (whose masks use the opposite polarity: True = ignore).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from mmlearn.functional import (
    attention,
    causal_mask,
    merge_heads,
    multi_head_attention,
    padding_mask,
    split_heads,
)
from mmlearn.nn import MultiHeadAttention
from mmlearn.viz import plot_attention, plot_attention_grid

F64 = torch.float64


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_mask(*shape: int, seed: int = 0, p: float = 0.6) -> torch.Tensor:
    """A random boolean mask (True = may attend) with at least one True per row."""
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p
    mask[..., 0] = True
    return mask


def brute_force_attention(query, key, value, mask=None):
    """Attention with Python loops over queries and keys: the formula written out."""
    *batch, length_q, d_k = query.shape
    length_k = key.shape[-2]
    q = query.reshape(-1, length_q, d_k)
    k = key.reshape(-1, length_k, d_k)
    v = value.reshape(-1, length_k, value.shape[-1])
    m = (
        None
        if mask is None
        else mask.expand(*batch, length_q, length_k).reshape(-1, length_q, length_k)
    )
    out = torch.zeros(q.shape[0], length_q, v.shape[-1], dtype=F64)
    weights = torch.zeros(q.shape[0], length_q, length_k, dtype=F64)
    for b in range(q.shape[0]):
        for i in range(length_q):
            allowed = [j for j in range(length_k) if m is None or bool(m[b, i, j])]
            scores = {j: float(q[b, i] @ k[b, j]) / math.sqrt(d_k) for j in allowed}
            top = max(scores.values(), default=0.0)
            total = sum(math.exp(s - top) for s in scores.values())
            for j, s in scores.items():
                weights[b, i, j] = math.exp(s - top) / total
                out[b, i] += weights[b, i, j] * v[b, j]
    return out.reshape(*batch, length_q, -1), weights.reshape(*batch, length_q, length_k)


# --- attention against references -----------------------------------------------------------


@pytest.mark.parametrize(
    "shape_q, shape_k, d_v",
    [
        ((5, 8), (7, 8), 3),  # 2-D: one sequence
        ((2, 5, 8), (2, 7, 8), 4),  # 3-D: a batch
        ((2, 3, 5, 8), (2, 3, 7, 8), 6),  # 4-D: batch x heads
    ],
)
def test_attention_matches_sdpa_without_mask(shape_q, shape_k, d_v):
    q, k = randn(*shape_q, seed=1), randn(*shape_k, seed=2)
    v = randn(*shape_k[:-1], d_v, seed=3)
    out, weights = attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-12, atol=1e-12)
    assert weights.shape == (*shape_q[:-1], shape_k[-2])


@pytest.mark.parametrize("mask_shape", [(2, 3, 5, 7), (2, 1, 5, 7), (2, 1, 1, 7), (5, 7), (1, 7)])
def test_attention_matches_sdpa_with_boolean_masks(mask_shape):
    q, k, v = randn(2, 3, 5, 8, seed=1), randn(2, 3, 7, 8, seed=2), randn(2, 3, 7, 4, seed=3)
    mask = random_mask(*mask_shape, seed=4)
    out, weights = attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(weights.masked_select(~mask.expand_as(weights)) == 0)


def test_inverted_mask_gives_a_different_result():
    q, k, v = randn(2, 5, 8, seed=1), randn(2, 7, 8, seed=2), randn(2, 7, 4, seed=3)
    mask = random_mask(2, 5, 7, seed=4, p=0.5)
    inverted = ~mask
    inverted[..., 1] = True  # keep every row of the inverted mask non-empty
    out, _ = attention(q, k, v, mask)
    out_inverted, _ = attention(q, k, v, inverted)
    assert not torch.allclose(out, out_inverted)
    torch.testing.assert_close(
        out_inverted, F.scaled_dot_product_attention(q, k, v, attn_mask=inverted)
    )


@pytest.mark.parametrize("length_q, length_k", [(6, 6), (4, 9), (9, 4)])
def test_causal_mask_matches_sdpa_is_causal_upper_left(length_q, length_k):
    q = randn(2, 3, length_q, 8, seed=1)
    k, v = randn(2, 3, length_k, 8, seed=2), randn(2, 3, length_k, 5, seed=3)
    mask = causal_mask(length_q, length_k)
    expected_mask = torch.ones(length_q, length_k, dtype=torch.bool).tril(diagonal=0)
    assert torch.equal(mask, expected_mask)
    out, weights = attention(q, k, v, mask)
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-12, atol=1e-12
    )
    assert torch.all(weights.triu(diagonal=1) == 0)


def test_attention_matches_brute_force_loop():
    q, k, v = randn(2, 4, 6, seed=1), randn(2, 5, 6, seed=2), randn(2, 5, 3, seed=3)
    mask = random_mask(2, 4, 5, seed=4)
    out, weights = attention(q, k, v, mask)
    out_ref, weights_ref = brute_force_attention(q, k, v, mask)
    torch.testing.assert_close(weights, weights_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-14)


def test_attention_hand_computed_case():
    # One query [2, 0] and keys [2, 0], [0, 0] in d_k = 2: scores 4/sqrt(2) and 0.
    q = torch.tensor([[2.0, 0.0]], dtype=F64)
    k = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=F64)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    out, weights = attention(q, k, v)
    first = math.exp(4 / math.sqrt(2)) / (math.exp(4 / math.sqrt(2)) + 1.0)
    torch.testing.assert_close(weights, torch.tensor([[first, 1 - first]], dtype=F64))
    torch.testing.assert_close(out, torch.tensor([[first, 1 - first]], dtype=F64))


def test_weight_rows_sum_to_one_and_masked_entries_are_exactly_zero():
    q, k, v = randn(3, 6, 8, seed=1), randn(3, 9, 8, seed=2), randn(3, 9, 2, seed=3)
    mask = random_mask(3, 6, 9, seed=5, p=0.4)
    _, weights = attention(q, k, v, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6, dtype=F64))
    assert torch.all(weights[~mask] == 0.0)
    assert torch.all(weights[mask] > 0.0)


def test_fully_masked_rows_give_zeros_without_nan_forward_and_backward():
    q = randn(2, 4, 8, seed=1).requires_grad_()
    k = randn(2, 5, 8, seed=2).requires_grad_()
    v = randn(2, 5, 3, seed=3).requires_grad_()
    mask = random_mask(2, 4, 5, seed=4)
    mask[0, 2] = False  # query 2 of sample 0 may attend to nothing
    mask[1] = False  # sample 1 is fully masked
    out, weights = attention(q, k, v, mask)
    assert torch.all(weights[0, 2] == 0) and torch.all(out[0, 2] == 0)
    assert torch.all(weights[1] == 0) and torch.all(out[1] == 0)
    out.sum().backward()
    for tensor in (q, k, v):
        assert torch.isfinite(tensor.grad).all()
    assert torch.all(q.grad[1] == 0) and torch.all(q.grad[0, 2] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_large_logits_do_not_overflow(dtype):
    # Unscaled q . k = 40 * 40 * 64 = 102400 exceeds float16's maximum (65504).
    d_k = 64
    q = torch.full((1, 1, d_k), 40.0)
    scales = torch.tensor([1.0, 0.99, 0.97, -1.0])[:, None]  # four keys, one dominant
    k = (40.0 * scales * torch.ones(4, d_k))[None]
    v = randn(1, 4, 3, seed=1, dtype=torch.float32)
    out, weights = attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    ref_out, ref_weights = attention(q.double(), k.double(), v.double())
    torch.testing.assert_close(weights.double(), ref_weights, rtol=0, atol=2e-2)
    torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=5e-2)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    length_q=st.integers(1, 6),
    length_k=st.integers(1, 6),
    d_k=st.integers(1, 8),
    d_v=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_attention_properties(batch, length_q, length_k, d_k, d_v, seed):
    q = randn(batch, length_q, d_k, seed=seed)
    k, v = randn(batch, length_k, d_k, seed=seed + 1), randn(batch, length_k, d_v, seed=seed + 2)
    mask = random_mask(batch, length_q, length_k, seed=seed + 3)
    out, weights = attention(q, k, v, mask)
    # Rows are probability distributions, so each output lies in the hull of the values.
    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, length_q, dtype=F64))
    assert torch.all(out <= v.amax(dim=1, keepdim=True) + 1e-12)
    assert torch.all(out >= v.amin(dim=1, keepdim=True) - 1e-12)
    # Reordering the keys (with their values and mask columns) changes nothing.
    perm = torch.randperm(length_k, generator=torch.Generator().manual_seed(seed))
    out_perm, weights_perm = attention(q, k[:, perm], v[:, perm], mask[..., perm])
    torch.testing.assert_close(out_perm, out)
    torch.testing.assert_close(weights_perm, weights[..., perm])


# --- masks and head reshaping ---------------------------------------------------------------


def test_padding_mask_shape_and_meaning():
    valid = torch.tensor([[True, True, False], [True, False, False]])
    mask = padding_mask(valid)
    assert mask.shape == (2, 1, 1, 3)
    q, k, v = randn(2, 2, 4, 4, seed=1), randn(2, 2, 3, 4, seed=2), randn(2, 2, 3, 2, seed=3)
    _, weights = attention(q, k, v, mask)
    assert torch.all(weights[0, :, :, 2] == 0) and torch.all(weights[1, :, :, 1:] == 0)
    torch.testing.assert_close(weights[1, :, :, 0], torch.ones(2, 4, dtype=F64))


def test_split_then_merge_heads_is_the_identity_and_uses_column_blocks():
    x = randn(2, 5, 12, seed=1)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    torch.testing.assert_close(heads[:, 1], x[..., 4:8])  # head 1 = columns 4:8
    torch.testing.assert_close(merge_heads(heads), x)


# --- multi-head attention against torch.nn.MultiheadAttention ------------------------------


def torch_mha_from(w_q, w_k, w_v, w_o, num_heads, biases=None):
    """A torch.nn.MultiheadAttention (batch_first) holding the book's W^Q, W^K, W^V, W^O."""
    d_model = w_q.shape[0]
    kdim, vdim = w_k.shape[0], w_v.shape[0]
    module = nn.MultiheadAttention(
        d_model,
        num_heads,
        bias=biases is not None,
        kdim=kdim,
        vdim=vdim,
        batch_first=True,
        dtype=F64,
    )
    with torch.no_grad():
        if module._qkv_same_embed_dim:
            module.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
        else:
            module.q_proj_weight.copy_(w_q.T)
            module.k_proj_weight.copy_(w_k.T)
            module.v_proj_weight.copy_(w_v.T)
        module.out_proj.weight.copy_(w_o.T)
        if biases is not None:
            module.in_proj_bias.copy_(torch.cat(biases[:3]))
            module.out_proj.bias.copy_(biases[3])
    return module.eval()


def projections(d_model, num_heads, kdim=None, vdim=None, seed=0):
    kdim, vdim = kdim or d_model, vdim or d_model
    return (
        randn(d_model, d_model, seed=seed) / math.sqrt(d_model),
        randn(kdim, d_model, seed=seed + 1) / math.sqrt(kdim),
        randn(vdim, d_model, seed=seed + 2) / math.sqrt(vdim),
        randn(d_model, d_model, seed=seed + 3) / math.sqrt(d_model),
    )


def test_multi_head_attention_matches_torch_with_key_padding_mask():
    d_model, num_heads = 12, 3
    weights_book = projections(d_model, num_heads)
    x = randn(2, 5, d_model, seed=10)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out, weights = multi_head_attention(x, x, x, *weights_book, num_heads, mask=padding_mask(valid))
    reference = torch_mha_from(*weights_book, num_heads)
    # torch's key_padding_mask is True where a key must be IGNORED: the opposite polarity.
    ref_out, ref_weights = reference(x, x, x, key_padding_mask=~valid, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-12, atol=1e-12)
    _, ref_mean = reference(x, x, x, key_padding_mask=~valid)  # averaged over heads
    torch.testing.assert_close(weights.mean(dim=1), ref_mean, rtol=1e-12, atol=1e-12)


def test_multi_head_attention_matches_torch_cross_attention_with_other_widths():
    d_model, num_heads, kdim, vdim = 8, 2, 5, 7
    weights_book = projections(d_model, num_heads, kdim, vdim, seed=3)
    query, key, value = (
        randn(2, 4, d_model, seed=1),
        randn(2, 6, kdim, seed=2),
        randn(2, 6, vdim, seed=3),
    )
    attn_mask = random_mask(4, 6, seed=4)
    out, weights = multi_head_attention(query, key, value, *weights_book, num_heads, mask=attn_mask)
    reference = torch_mha_from(*weights_book, num_heads)
    ref_out, ref_weights = reference(
        query, key, value, attn_mask=~attn_mask, average_attn_weights=False
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-12, atol=1e-12)


def test_head_i_uses_column_block_i():
    d_model, num_heads, d_k = 6, 3, 2
    w_q, w_k, w_v, w_o = projections(d_model, num_heads, seed=7)
    x = randn(1, 4, d_model, seed=8)
    _, weights = multi_head_attention(x, x, x, w_q, w_k, w_v, w_o, num_heads)
    block = slice(1 * d_k, 2 * d_k)
    _, head_1 = attention(x @ w_q[:, block], x @ w_k[:, block], x @ w_v[:, block])
    torch.testing.assert_close(weights[:, 1], head_1)


def copy_into_torch(module: MultiHeadAttention) -> nn.MultiheadAttention:
    """torch.nn.MultiheadAttention with our module's weights (nn.Linear stores W^T)."""
    biases = None
    if module.q_proj.bias is not None:
        biases = (module.q_proj.bias, module.k_proj.bias, module.v_proj.bias, module.out_proj.bias)
    return torch_mha_from(
        module.q_proj.weight.T,
        module.k_proj.weight.T,
        module.v_proj.weight.T,
        module.out_proj.weight.T,
        module.num_heads,
        biases,
    )


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kdim, vdim", [(None, None), (5, 9)])
def test_module_matches_torch_multihead_attention(fused, kdim, vdim):
    torch.manual_seed(0)
    module = MultiHeadAttention(12, 4, fused=fused, kdim=kdim, vdim=vdim).double().eval()
    with torch.no_grad():
        for layer in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
            layer.bias.normal_()  # non-zero biases, so their mapping is checked too
    reference = copy_into_torch(module)
    query = randn(3, 4, 12, seed=1)
    key, value = randn(3, 6, kdim or 12, seed=2), randn(3, 6, vdim or 12, seed=3)
    valid = random_mask(3, 6, seed=4)
    out, weights = module(query, key, value, mask=padding_mask(valid))
    ref_out, _ = reference(query, key, value, key_padding_mask=~valid)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    assert weights is None
    _, weights = module(query, key, value, mask=padding_mask(valid), need_weights=True)
    _, ref_weights = reference(
        query, key, value, key_padding_mask=~valid, average_attn_weights=False
    )
    torch.testing.assert_close(weights, ref_weights, rtol=1e-12, atol=1e-12)


def test_module_without_bias_is_the_functional_formula():
    module = MultiHeadAttention(8, 2, bias=False).double()
    x = randn(2, 5, 8, seed=1)
    out, weights = module(x, x, x, need_weights=True)
    ref_out, ref_weights = multi_head_attention(
        x,
        x,
        x,
        module.q_proj.weight.T,
        module.k_proj.weight.T,
        module.v_proj.weight.T,
        module.out_proj.weight.T,
        num_heads=2,
    )
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "per_head"])
def test_fused_path_equals_explicit_path_in_float32(mask_kind):
    torch.manual_seed(0)
    module = MultiHeadAttention(32, 4).eval()
    x = torch.randn(3, 10, 32)
    masks = {
        "none": None,
        "padding": padding_mask(random_mask(3, 10, seed=1)),
        "causal": causal_mask(10),
        "per_head": random_mask(3, 4, 10, 10, seed=2),
    }
    mask = masks[mask_kind]
    fused, no_weights = module(x, x, x, mask=mask)
    explicit, weights = module(x, x, x, mask=mask, need_weights=True)
    assert no_weights is None and weights.shape == (3, 4, 10, 10)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    module.fused = False
    explicit_again, _ = module(x, x, x, mask=mask)
    torch.testing.assert_close(explicit_again, explicit, rtol=0, atol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_module_fully_masked_row_is_finite_on_both_paths(fused):
    module = MultiHeadAttention(8, 2, fused=fused).double()
    with torch.no_grad():
        module.out_proj.bias.normal_()
    x = randn(2, 4, 8, seed=1).requires_grad_()
    mask = random_mask(2, 4, 4, seed=2)[:, None]  # (B, 1, Lq, Lk)
    mask[0, 0, 1] = False  # query 1 of sample 0 sees no key
    out, _ = module(x, x, x, mask=mask)
    assert torch.isfinite(out).all()
    # Zero attention output, so only out_proj's bias is left.
    torch.testing.assert_close(out[0, 1], module.out_proj.bias)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_dropout_only_acts_in_training():
    torch.manual_seed(0)
    module = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 6, 16)
    module.eval()
    eval_fused, _ = module(x, x, x)
    eval_explicit, _ = module(x, x, x, need_weights=True)
    no_dropout = MultiHeadAttention(16, 4, dropout=0.0).eval()
    no_dropout.load_state_dict(module.state_dict())
    torch.testing.assert_close(eval_fused, no_dropout(x, x, x)[0])
    torch.testing.assert_close(eval_explicit, eval_fused, rtol=1e-5, atol=1e-5)
    module.train()
    for need_weights in (False, True):
        train_out, _ = module(x, x, x, need_weights=need_weights)
        assert not torch.allclose(train_out, eval_fused, atol=1e-3)


def test_module_moves_with_its_parameters_and_learns():
    module = MultiHeadAttention(8, 2).double()
    x = randn(2, 3, 8, seed=1)
    out, _ = module(x, x, x)
    out.pow(2).sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert out.dtype == F64


# --- bad inputs ------------------------------------------------------------------------------

Q, K, V = randn(2, 5, 8), randn(2, 7, 8), randn(2, 7, 4)


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: attention(Q[0, 0], K, V), ValueError, "query"),  # 1-D query
        (lambda: attention(Q, K[0], V), ValueError, "key"),  # rank mismatch
        (lambda: attention(Q, randn(2, 7, 6), V), ValueError, "d_k"),  # d_k mismatch
        (lambda: attention(Q, K, randn(2, 6, 4)), ValueError, "value"),  # Lk mismatch
        (lambda: attention(Q, randn(3, 7, 8), randn(3, 7, 4)), ValueError, "key"),  # batch mismatch
        (lambda: attention(Q, K, V, torch.ones(2, 5, 7)), TypeError, "mask"),  # not bool
        (lambda: attention(Q, K, V, torch.ones(2, 5, 6, dtype=torch.bool)), ValueError, "mask"),
        (lambda: attention(Q.long(), K.long(), V.long()), TypeError, "query"),  # integer dtype
        (lambda: attention(Q, K.float(), V), TypeError, "key"),  # mixed dtypes
        (lambda: attention(Q.numpy(), K, V), TypeError, "query"),  # not a tensor
        (lambda: attention(Q, K, V.long()), TypeError, "value"),
    ],
)
def test_attention_rejects_bad_inputs(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


W = projections(8, 2)


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (
            lambda: multi_head_attention(Q, K, K, *W, 3),
            ValueError,
            "num_heads",
        ),  # 3 does not divide 8
        (lambda: multi_head_attention(Q, K, K, *W, 0), ValueError, "num_heads"),
        (lambda: multi_head_attention(Q, K, K, *W, 2.0), ValueError, "num_heads"),
        (lambda: multi_head_attention(Q, K, K, W[0][:5], *W[1:], 2), ValueError, "w_q"),
        (lambda: multi_head_attention(Q, K, K, W[0], W[1][:, :6], *W[2:], 2), ValueError, "w_k"),
        (lambda: multi_head_attention(Q, K, K, *W[:3], W[3][:6], 2), ValueError, "w_o"),
        (lambda: multi_head_attention(Q, K, K, *W[:3], W[3].float(), 2), TypeError, "w_o"),
        (lambda: multi_head_attention(Q, K, K[:, :6], *W, 2), ValueError, "length"),
        (lambda: multi_head_attention(Q, K[:1], K[:1], *W, 2), ValueError, "batch"),
        (lambda: multi_head_attention(Q[0], K, K, *W, 2), ValueError, "query"),
        (
            lambda: multi_head_attention(
                Q, K, K, *W, 2, mask=torch.ones(2, 3, 5, 7, dtype=torch.bool)
            ),
            ValueError,
            "mask",
        ),  # 3 heads in the mask, 2 in the call
    ],
)
def test_multi_head_attention_rejects_bad_inputs(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: MultiHeadAttention(10, 3), ValueError, "d_model"),
        (lambda: MultiHeadAttention(8, 0), ValueError, "num_heads"),
        (lambda: MultiHeadAttention(8, 2, dropout=1.5), ValueError, "dropout"),
        (
            lambda: MultiHeadAttention(8, 2)(
                torch.randn(2, 3, 6), torch.randn(2, 3, 8), torch.randn(2, 3, 8)
            ),
            ValueError,
            "query",
        ),
        (
            lambda: MultiHeadAttention(8, 2, kdim=5)(
                torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8)
            ),
            ValueError,
            "key",
        ),
        (
            lambda: MultiHeadAttention(8, 2)(
                torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 5, 8)
            ),
            ValueError,
            "value",
        ),
        (
            lambda: MultiHeadAttention(8, 2)(
                torch.randn(2, 3, 8),
                torch.randn(2, 4, 8),
                torch.randn(2, 4, 8),
                mask=torch.ones(3, 4),
            ),
            TypeError,
            "mask",
        ),
        (lambda: causal_mask(0), ValueError, "length_q"),
        (lambda: causal_mask(3, -1), ValueError, "length_k"),
        (lambda: padding_mask(torch.ones(2, 3)), TypeError, "valid"),
        (lambda: padding_mask(torch.ones(3, dtype=torch.bool)), ValueError, "valid"),
    ],
)
def test_module_and_mask_helpers_reject_bad_inputs(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


# --- plots ---------------------------------------------------------------------------------


def test_plot_attention_draws_the_weights_with_labels_and_colour_bar():
    weights = torch.softmax(randn(3, 4, seed=1), dim=-1).requires_grad_()
    ax = plot_attention(
        weights, row_labels=["a", "b", "c"], col_labels=["w", "x", "y", "z"], title="one map"
    )
    assert isinstance(ax, Axes) and ax.get_title() == "one map"
    np.testing.assert_allclose(ax.images[0].get_array(), weights.detach().numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w", "x", "y", "z"]
    assert len(ax.figure.axes) == 2  # the map and its colour bar


def test_plot_attention_rejects_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        plot_attention(torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="col_labels"):
        plot_attention(torch.rand(3, 3), col_labels=["a"])
    with pytest.raises(TypeError, match="weights"):
        plot_attention([[0.5, 0.5]])


def test_plot_attention_grid_accepts_lists_and_stacked_tensors():
    per_layer = [torch.softmax(randn(1, 4, 5, 5, seed=s), dim=-1) for s in range(3)]
    fig = plot_attention_grid(per_layer, tokens=list("abcde"), layers=[0, 2], heads=[1, 3])
    assert isinstance(fig, Figure)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2 * 2 and len(fig.axes) == 2 * 2 + 1  # four maps and the colour bar
    np.testing.assert_allclose(maps[3].images[0].get_array(), per_layer[2][0, 3].numpy())
    stacked = torch.cat(per_layer)  # (layers, h, L, L)
    fig = plot_attention_grid(stacked)
    assert len([ax for ax in fig.axes if ax.images]) == 3 * 4
    with pytest.raises(ValueError, match="heads"):
        plot_attention_grid(stacked, heads=[4])
    with pytest.raises(ValueError, match="tokens"):
        plot_attention_grid(stacked, tokens=["a"])
    with pytest.raises(ValueError, match="attentions"):
        plot_attention_grid([stacked[0], stacked[1, :2]])


# --- accelerators (skipped on a CPU-only machine) --------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_fused_kernels_agree_with_explicit_path_and_never_give_nan(dtype):
    torch.manual_seed(0)
    module = MultiHeadAttention(64, 4).to("cuda", dtype).eval()
    x = torch.randn(2, 33, 64, device="cuda", dtype=dtype)
    valid = torch.ones(2, 33, dtype=torch.bool, device="cuda")
    valid[1, 20:] = False
    mask = padding_mask(valid) & causal_mask(33, device="cuda")
    mask[0, 0, 5] = False  # one query with no key at all
    fused, _ = module(x, x, x, mask=mask)
    explicit, _ = module(x, x, x, mask=mask, need_weights=True)
    assert torch.isfinite(fused).all()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused, explicit, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(fused[0, 5], module.out_proj.bias)
