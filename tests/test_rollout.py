"""Attention rollout, word heatmaps, the in-box share, overlays; batched inference and timing."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlearn.inference import measure_latency, predict_batched
from mmlearn.nn import MultimodalTransformer
from mmlearn.viz import (
    attention_in_box,
    attention_rollout,
    overlay_patch_attention,
    word_attention_heatmap,
)


def _random_attention(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def _rollout_by_loops(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's recipe written with explicit loops, for one (h, L, L) stack."""
    length = attentions[0].shape[-1]
    result = torch.eye(length, dtype=torch.float64)
    for layer in attentions:
        heads = layer.shape[0]
        mixed = torch.zeros(length, length, dtype=torch.float64)
        for i in range(length):
            for j in range(length):
                mean = sum(layer[h, i, j] for h in range(heads)) / heads
                mixed[i, j] = 0.5 * mean + (0.5 if i == j else 0.0)
        for i in range(length):
            mixed[i] = mixed[i] / mixed[i].sum()
        product = torch.zeros(length, length, dtype=torch.float64)
        for i in range(length):
            for j in range(length):
                product[i, j] = sum(mixed[i, k] * result[k, j] for k in range(length))
        result = product
    return result


def test_rollout_equals_loop_reference():
    attentions = [_random_attention(3, 5, 5, seed=s) for s in range(3)]
    assert torch.allclose(attention_rollout(attentions), _rollout_by_loops(attentions), atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    layers=st.integers(1, 4),
    heads=st.integers(1, 4),
    length=st.integers(1, 7),
    fusion=st.sampled_from(["mean", "max", "min"]),
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_rollout_rows_sum_to_one(layers, heads, length, fusion, alpha, seed):
    attentions = torch.stack(
        [_random_attention(2, heads, length, length, seed=seed + i) for i in range(layers)]
    )
    rollout = attention_rollout(attentions, head_fusion=fusion, residual_alpha=alpha)
    assert rollout.shape == (2, length, length)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, length, dtype=torch.float64))
    assert torch.all(rollout >= 0)


def test_identity_attention_gives_identity():
    eye = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    assert torch.allclose(attention_rollout([eye, eye, eye]), torch.eye(6, dtype=torch.float64))


def test_one_layer_gives_half_attention_plus_half_identity():
    weights = _random_attention(4, 5, 5, seed=3)  # (h, L, L)
    expected = 0.5 * weights.mean(0) + 0.5 * torch.eye(5, dtype=torch.float64)
    assert torch.allclose(attention_rollout([weights]), expected, atol=1e-12)
    # the keepdim pitfall: normalising by a (L,) row-sum vector without keepdim divides columns
    max_fused = 0.5 * weights.amax(0) + 0.5 * torch.eye(5, dtype=torch.float64)
    expected_max = max_fused / max_fused.sum(-1, keepdim=True)
    assert torch.allclose(attention_rollout([weights], head_fusion="max"), expected_max)
    assert not torch.allclose(expected_max, max_fused / max_fused.sum(-1))


def test_rollout_with_fully_masked_rows_stays_finite():
    weights = _random_attention(2, 4, 4)
    weights[:, 3] = 0.0  # a padding query that attended to nothing
    rollout = attention_rollout([weights, weights])
    assert torch.isfinite(rollout).all()
    assert torch.allclose(rollout.sum(-1), torch.ones(4, dtype=torch.float64))


def test_word_attention_heatmap_picks_the_row_and_averages_heads():
    cross = _random_attention(1, 3, 5, 16)
    grid = word_attention_heatmap(cross, token_index=2, grid_size=4)
    assert grid.shape == (4, 4)
    assert torch.allclose(grid.flatten(), cross[0, :, 2].mean(0))
    assert torch.allclose(word_attention_heatmap(cross[0, 0], 1, 4).flatten(), cross[0, 0, 1])


def test_attention_in_box_against_pixel_counting():
    uniform = torch.full((16,), 1 / 16, dtype=torch.float64)
    box = (3, 5, 13, 15)
    assert attention_in_box(uniform, box, 32) == pytest.approx(100 / 1024)
    one_hot = torch.zeros(16, dtype=torch.float64)
    one_hot[5] = 1.0  # patch (row 1, column 1) covers pixels 8..15 x 8..15
    assert attention_in_box(one_hot, (8, 8, 16, 16), 32) == pytest.approx(1.0)
    assert attention_in_box(one_hot, (12, 8, 16, 16), 32) == pytest.approx(0.5)
    assert attention_in_box(one_hot, (0, 0, 8, 8), 32) == 0.0


def test_overlay_draws_image_and_map():
    image = torch.rand(3, 16, 16)
    ax = overlay_patch_attention(image, torch.rand(16), title="x")
    assert len(ax.images) == 2 and ax.images[1].get_array().shape == (16, 16)
    ax = overlay_patch_attention(torch.rand(1, 16, 16), torch.rand(2, 2))
    assert ax.images[1].get_array().max() == pytest.approx(1.0)  # scaled to its maximum


def test_rollout_and_viz_bad_inputs():
    weights = _random_attention(2, 4, 4)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout([weights], head_fusion="sum")
    with pytest.raises(ValueError, match="residual_alpha"):
        attention_rollout([weights], residual_alpha=1.5)
    with pytest.raises(ValueError, match="attentions"):
        attention_rollout([])
    with pytest.raises(ValueError, match=r"attentions\[1\]"):
        attention_rollout([weights, _random_attention(2, 5, 5)])
    with pytest.raises(ValueError, match="grid_size"):
        word_attention_heatmap(_random_attention(2, 3, 15), 0, 4)
    with pytest.raises(ValueError, match="token_index"):
        word_attention_heatmap(_random_attention(2, 3, 16), 3, 4)
    with pytest.raises(ValueError, match="box"):
        attention_in_box(torch.rand(16), (0, 0, 40, 8), 32)
    with pytest.raises(ValueError, match="patch_weights"):
        attention_in_box(torch.rand(15), (0, 0, 8, 8), 32)
    with pytest.raises(ValueError, match="image"):
        overlay_patch_attention(torch.rand(3, 16, 12), torch.rand(16))


def _tiny_model() -> MultimodalTransformer:
    torch.manual_seed(0)
    return MultimodalTransformer(
        10,
        2,
        fusion="cross",
        image_size=16,
        patch_size=4,
        d_model=8,
        num_heads=2,
        num_layers=1,
        d_ff=16,
        max_length=6,
    )


def test_predict_batched_equals_one_big_batch_and_restores_mode():
    model = _tiny_model()
    images, ids = torch.rand(7, 3, 16, 16), torch.randint(1, 10, (7, 6))
    model.train()
    logits = predict_batched(model, (images, ids), batch_size=3, device="cpu")
    assert model.training
    model.eval()
    with torch.no_grad():
        assert torch.allclose(logits, model(images, ids)[0], atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        predict_batched(model, (images, ids), batch_size=0, device="cpu")
    with pytest.raises(ValueError, match="inputs"):
        predict_batched(model, (images, ids[:3]), batch_size=3, device="cpu")


def test_measure_latency_table():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x * 2

    table = measure_latency(fn, [1, 4], lambda b: (torch.ones(b, 3),), warmup=2, repeats=3)
    assert isinstance(table, pd.DataFrame)
    assert table["batch_size"].tolist() == [1, 4]
    assert calls == [1] * 5 + [4] * 5
    assert (table["latency_ms"] > 0).all()
    assert torch.allclose(
        torch.tensor(table["throughput"].values),
        torch.tensor((table["batch_size"] / table["latency_ms"] * 1e3).values),
    )
    with pytest.raises(ValueError, match="batch_sizes"):
        measure_latency(fn, [0], lambda b: (torch.ones(b, 3),))
    with pytest.raises(ValueError, match="warmup"):
        measure_latency(fn, [1], lambda b: (torch.ones(b, 3),), warmup=-1)
