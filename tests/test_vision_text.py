"""PatchEmbedding, VisionTransformer and TextTransformer against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlearn.nn import PatchEmbedding, TextTransformer, VisionTransformer


@settings(max_examples=15, deadline=None)
@given(
    patch=st.sampled_from([2, 4, 8]),
    grid=st.integers(1, 4),
    channels=st.sampled_from([1, 3]),
    d_model=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_patch_embedding_equals_unfold_and_linear(patch, grid, channels, d_model, seed):
    torch.manual_seed(seed)
    size = patch * grid
    embed = PatchEmbedding(size, patch, channels, d_model).double()
    images = torch.randn(2, channels, size, size, dtype=torch.float64)
    # Reference: cut the patches with unfold (channel, row, column order), then x @ W + b.
    patches = F.unfold(images, kernel_size=patch, stride=patch).transpose(1, 2)  # (B, P, C*p*p)
    weight = embed.proj.weight.reshape(d_model, -1).T  # the conv kernel as a matrix
    expected = patches @ weight + embed.proj.bias
    assert torch.allclose(embed(images), expected, atol=1e-12)
    assert embed.num_patches == grid * grid


def test_patch_tokens_go_row_by_row():
    embed = PatchEmbedding(8, 4, 1, 1).double()
    with torch.no_grad():
        embed.proj.weight.fill_(1.0)
        embed.proj.bias.zero_()
    image = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    image[0, 0, 0:4, 4:8] = 1.0  # the top-right patch
    assert embed(image)[0, :, 0].tolist() == [0.0, 16.0, 0.0, 0.0]


def test_vit_cls_first_then_position_embeddings():
    torch.manual_seed(0)
    vit = VisionTransformer(16, 4, 3, 8, 2, 2, 16).double().eval()
    images = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    x = vit.embed(images)
    assert x.shape == (3, 17, 8)
    assert torch.allclose(x[:, 0], (vit.cls_token + vit.pos_embed[:, 0])[0].expand(3, -1))
    assert torch.allclose(x[:, 1:], vit.patch_embed(images) + vit.pos_embed[:, 1:])
    tokens, pooled, attentions = vit(images, need_weights=True)
    assert tokens.shape == (3, 17, 8) and torch.equal(pooled, tokens[:, 0])
    assert len(attentions) == 2 and attentions[0].shape == (3, 2, 17, 17)
    assert torch.allclose(attentions[1].sum(-1), torch.ones(3, 2, 17, dtype=torch.float64))
    reference, _ = vit.encoder(x)  # pre-LN encoder with its final LayerNorm
    assert torch.allclose(tokens, reference, atol=1e-12)
    assert vit.encoder.layers[0].norm_first
    assert vit(images)[2] is None


def test_vit_fused_and_explicit_paths_agree():
    torch.manual_seed(1)
    vit = VisionTransformer(16, 4, 3, 16, 4, 2, 32).eval()
    images = torch.rand(2, 3, 16, 16)
    fused, _, _ = vit(images)
    explicit, _, _ = vit(images, need_weights=True)
    assert torch.allclose(fused, explicit, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    extra=st.integers(0, 3),
    seed=st.integers(0, 1000),
)
def test_text_outputs_ignore_padding(lengths, extra, seed):
    """Real tokens' outputs depend neither on how much padding follows nor on the padded ids."""
    torch.manual_seed(seed)
    model = TextTransformer(20, 8, 2, 2, 16, max_length=10).double().eval()
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0] = 1
        ids[row, 1:length] = torch.randint(3, 20, (length - 1,))
    valid = ids != 0
    tokens, pooled, _ = model(ids, valid)
    longer = torch.cat([ids, torch.zeros(len(lengths), extra, dtype=torch.long)], dim=1)
    tokens_long, pooled_long, _ = model(longer)
    assert torch.allclose(pooled, pooled_long, atol=1e-12)
    garbage = torch.where(valid, ids, torch.randint(3, 20, ids.shape))  # junk in padding slots
    tokens_junk, _, _ = model(garbage, valid)
    assert torch.allclose(tokens[valid], tokens_long[:, :width][valid], atol=1e-12)
    assert torch.allclose(tokens[valid], tokens_junk[valid], atol=1e-12)
    assert torch.equal(pooled, tokens[:, 0])


def test_text_attention_never_reaches_padding():
    torch.manual_seed(2)
    model = TextTransformer(10, 8, 2, 2, 16, max_length=6).eval()
    ids = torch.tensor([[1, 4, 5, 0, 0, 0], [1, 4, 5, 6, 7, 8]])
    _, _, attentions = model(ids, need_weights=True)
    for weights in attentions:
        assert torch.all(weights[0, :, :, 3:] == 0)
        assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)))


def test_pad_embedding_is_zero():
    model = TextTransformer(10, 8, 2, 1, 16, max_length=6, pad_id=0)
    assert torch.all(model.token_embed.weight[0] == 0)


def test_vision_text_bad_inputs():
    with pytest.raises(ValueError, match="image_size"):
        PatchEmbedding(30, 8, 3, 16)
    with pytest.raises(ValueError, match="image_size"):
        VisionTransformer(30, 8, 3, 16, 2, 1, 32)
    vit = VisionTransformer(16, 4, 3, 8, 2, 1, 16)
    with pytest.raises(ValueError, match="images"):
        vit(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="images"):
        vit(torch.rand(3, 16, 16))
    text = TextTransformer(10, 8, 2, 1, 16, max_length=4)
    with pytest.raises(TypeError, match="ids"):
        text(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_length"):
        text(torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="valid"):
        text(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid"):
        text(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(ValueError, match="pad_id"):
        TextTransformer(10, 8, 2, 1, 16, max_length=4, pad_id=10)
