"""Feed-forward network, positional encoding and encoder layers of mmlearn.nn.

References (float64): a per-position loop for the FFN, the closed form of the
sinusoidal encoding written with math.sin/math.cos, and torch.nn.TransformerEncoderLayer /
torch.nn.TransformerEncoder with copied weights (dropout 0, eval mode).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmlearn.functional import causal_mask, feed_forward, padding_mask
from mmlearn.nn import (
    FeedForward,
    PositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
    sinusoidal_table,
)

F64 = torch.float64


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- feed-forward -----------------------------------------------------------------------------


def test_feed_forward_matches_a_per_position_loop():
    x = randn(2, 3, 4, seed=1)
    w1, b1, w2, b2 = randn(4, 6, seed=2), randn(6, seed=3), randn(6, 5, seed=4), randn(5, seed=5)
    out = feed_forward(x, w1, b1, w2, b2)
    expected = torch.zeros(2, 3, 5, dtype=F64)
    for b in range(2):
        for t in range(3):
            hidden = [max(0.0, float(x[b, t] @ w1[:, j] + b1[j])) for j in range(6)]
            for o in range(5):
                expected[b, t, o] = sum(h * float(w2[j, o]) for j, h in enumerate(hidden)) + b2[o]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_feed_forward_hand_computed_case():
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    w1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)  # hidden = [1, -2] -> relu [1, 0]
    b1 = torch.zeros(2, dtype=F64)
    w2 = torch.tensor([[3.0], [5.0]], dtype=F64)
    b2 = torch.tensor([0.5], dtype=F64)
    torch.testing.assert_close(feed_forward(x, w1, b1, w2, b2), torch.tensor([[3.5]], dtype=F64))


def test_feed_forward_module_is_the_functional_formula():
    module = FeedForward(6, 10, dropout=0.3).double().eval()
    x = randn(2, 4, 6, seed=1)
    expected = feed_forward(
        x,
        module.linear1.weight.T,
        module.linear1.bias,
        module.linear2.weight.T,
        module.linear2.bias,
    )
    torch.testing.assert_close(module(x), expected)
    module.train()
    assert not torch.allclose(module(x), expected)  # dropout is active in training


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (
            lambda: feed_forward(randn(2, 4), randn(3, 6), randn(6), randn(6, 4), randn(4)),
            ValueError,
            "w1",
        ),
        (
            lambda: feed_forward(randn(2, 4), randn(4, 6), randn(5), randn(6, 4), randn(4)),
            ValueError,
            "b1",
        ),
        (
            lambda: feed_forward(randn(2, 4), randn(4, 6), randn(6), randn(5, 4), randn(4)),
            ValueError,
            "w2",
        ),
        (
            lambda: feed_forward(randn(2, 4), randn(4, 6), randn(6), randn(6, 4), randn(3)),
            ValueError,
            "b2",
        ),
        (
            lambda: feed_forward(randn(2, 4).long(), randn(4, 6), randn(6), randn(6, 4), randn(4)),
            TypeError,
            "x",
        ),
        (
            lambda: feed_forward(randn(2, 4), randn(4, 6).float(), randn(6), randn(6, 4), randn(4)),
            TypeError,
            "w1",
        ),
        (lambda: FeedForward(0, 4), ValueError, "d_model"),
        (lambda: FeedForward(4, 4, dropout=-0.1), ValueError, "dropout"),
    ],
)
def test_feed_forward_rejects_bad_inputs(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


# --- positional encoding ------------------------------------------------------------------


@pytest.mark.parametrize("d_model", [8, 7])
def test_positional_encoding_matches_the_closed_form(d_model):
    table = sinusoidal_table(20, d_model)
    for pos in range(20):
        for i in range(d_model):
            angle = pos / 10000 ** ((i - i % 2) / d_model)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[pos, i].item() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(
        table[0], torch.tensor([0.0, 1.0] * (d_model // 2) + [0.0] * (d_model % 2), dtype=F64)
    )


def test_positional_encoding_module_adds_the_table_as_a_buffer():
    module = PositionalEncoding(16, max_len=50)
    assert list(module.parameters()) == []
    assert "pe" in dict(module.named_buffers()) and "pe" not in module.state_dict()
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(
        module(x) - x, sinusoidal_table(50, 16)[:10].float().expand(3, -1, -1)
    )
    assert module.double()(x.double()).dtype == F64


def test_positional_encoding_dropout_only_in_training():
    module = PositionalEncoding(16, dropout=0.5).eval()
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(module(x), x + module.pe[:5])
    module.train()
    assert (module(x) == 0).any()


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: PositionalEncoding(8, max_len=4)(torch.randn(1, 5, 8)), ValueError, "x"),
        (lambda: PositionalEncoding(8)(torch.randn(1, 5, 6)), ValueError, "x"),
        (lambda: PositionalEncoding(8)(torch.randn(8)), ValueError, "x"),
        (lambda: PositionalEncoding(0), ValueError, "d_model"),
        (lambda: PositionalEncoding(8, max_len=0), ValueError, "max_len"),
        (lambda: PositionalEncoding(8, dropout=2.0), ValueError, "dropout"),
    ],
)
def test_positional_encoding_rejects_bad_inputs(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


# --- encoder layers against torch.nn.TransformerEncoderLayer ------------------------------


def copy_layer_into_torch(
    ours: TransformerEncoderLayer, theirs: nn.TransformerEncoderLayer
) -> None:
    """Copy our layer's weights into PyTorch's (nn.Linear stores W^T in both)."""
    attn = ours.self_attn
    with torch.no_grad():
        theirs.self_attn.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        theirs.self_attn.in_proj_bias.copy_(
            torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        )
        theirs.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        theirs.linear1.load_state_dict(ours.ffn.linear1.state_dict())
        theirs.linear2.load_state_dict(ours.ffn.linear2.state_dict())
        theirs.norm1.load_state_dict(ours.norm1.state_dict())
        theirs.norm2.load_state_dict(ours.norm2.state_dict())


def randomise_norms(module: nn.Module) -> None:
    """Give every LayerNorm non-trivial parameters, so that they are checked too."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.LayerNorm):
                sub.weight.uniform_(0.5, 1.5)
                sub.bias.normal_(0.0, 0.1)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_encoder_layer_matches_torch_on_non_padded_positions(norm_first, fused):
    torch.manual_seed(0)
    ours = TransformerEncoderLayer(16, 4, 32, norm_first=norm_first, fused=fused).double().eval()
    randomise_norms(ours)
    theirs = nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=F64
    ).eval()
    copy_layer_into_torch(ours, theirs)
    x = randn(3, 7, 16, seed=1)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False
    valid[2, 2:] = False
    with torch.no_grad():
        out, _ = ours(x, mask=padding_mask(valid))
        expected = theirs(x, src_key_padding_mask=~valid)  # True = padding in torch
    torch.testing.assert_close(out[valid], expected[valid], rtol=1e-12, atol=1e-12)


def test_encoder_layer_with_causal_mask_matches_torch():
    torch.manual_seed(0)
    ours = TransformerEncoderLayer(8, 2, 16).double().eval()
    theirs = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, dtype=F64).eval()
    copy_layer_into_torch(ours, theirs)
    x = randn(2, 5, 8, seed=1)
    out, weights = ours(x, mask=causal_mask(5), need_weights=True)
    expected = theirs(x, src_mask=~causal_mask(5))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert weights.shape == (2, 2, 5, 5) and torch.all(weights.triu(1) == 0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_matches_torch_encoder(norm_first):
    torch.manual_seed(0)
    ours = TransformerEncoder(16, 4, 24, num_layers=3, norm_first=norm_first).double().eval()
    randomise_norms(ours)
    layer = nn.TransformerEncoderLayer(
        16, 4, 24, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=F64
    )
    final = nn.LayerNorm(16, dtype=F64) if norm_first else None
    theirs = nn.TransformerEncoder(layer, 3, norm=final, enable_nested_tensor=False).eval()
    for our_layer, their_layer in zip(ours.layers, theirs.layers, strict=True):
        copy_layer_into_torch(our_layer, their_layer)
    if norm_first:
        theirs.norm.load_state_dict(ours.final_norm.state_dict())
    else:
        assert isinstance(ours.final_norm, nn.Identity)
    x = randn(2, 6, 16, seed=1)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out, attentions = ours(x, mask=padding_mask(valid), need_weights=True)
    with torch.no_grad():
        expected = theirs(x, src_key_padding_mask=~valid)
    torch.testing.assert_close(out[valid], expected[valid], rtol=1e-12, atol=1e-12)
    assert len(attentions) == 3
    for weights in attentions:
        assert weights.shape == (2, 4, 6, 6)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6, dtype=F64))
        assert torch.all(weights[1, :, :, 4:] == 0)


def test_encoder_returns_no_maps_unless_asked_and_final_norm_can_be_chosen():
    encoder = TransformerEncoder(8, 2, 16, num_layers=2)
    x = torch.randn(2, 3, 8)
    assert encoder(x)[1] is None
    assert isinstance(TransformerEncoder(8, 2, 16, 2, norm_first=True).final_norm, nn.LayerNorm)
    assert isinstance(
        TransformerEncoder(8, 2, 16, 2, norm_first=True, final_norm=False).final_norm, nn.Identity
    )
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(8, 2, 16, num_layers=0)
    with pytest.raises(ValueError, match="x"):
        encoder(torch.randn(3, 8))


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(2, 8),
    norm_first=st.booleans(),
    need_weights=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_self_attention_without_positions_is_permutation_equivariant(
    length, norm_first, need_weights, seed
):
    torch.manual_seed(seed)
    layer = TransformerEncoderLayer(8, 2, 16, norm_first=norm_first).double().eval()
    x = randn(2, length, 8, seed=seed)
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(seed + 1))
    out, weights = layer(x, need_weights=need_weights)
    out_perm, weights_perm = layer(x[:, perm], need_weights=need_weights)
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-10, atol=1e-12)
    if need_weights:
        torch.testing.assert_close(weights_perm, weights[:, :, perm][..., perm])
    # Positions break the symmetry: with them the order matters.
    positions = PositionalEncoding(8).double()
    moved, _ = layer(positions(x[:, perm]))
    if not torch.equal(perm, torch.arange(length)):
        assert not torch.allclose(moved, layer(positions(x))[0][:, perm])


def test_training_step_gives_finite_gradients_for_every_parameter():
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 2, 16, num_layers=2, dropout=0.1, norm_first=True).train()
    x = torch.randn(4, 5, 8)
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[0, 3:] = False
    out, _ = encoder(x, mask=padding_mask(valid))
    out[valid].pow(2).mean().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
