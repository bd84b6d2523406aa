"""Fusion: cross-attention vs PyTorch, early fusion's joint sequence, information flow, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmlearn.data import WordTokenizer, make_question_dataset
from mmlearn.nn import FUSIONS, CrossAttentionBlock, MultimodalTransformer, UnimodalBaseline

SMALL = {
    "image_size": 16,
    "patch_size": 4,
    "d_model": 16,
    "num_heads": 2,
    "num_layers": 2,
    "d_ff": 32,
    "max_length": 8,
}


def _inputs(batch: int = 3, seed: int = 0, vocab: int = 12):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 16, 16, generator=generator, dtype=torch.float64)
    ids = torch.randint(3, vocab, (batch, 6), generator=generator)
    ids[:, 0] = 1  # [CLS]
    ids[0, 4:] = 0  # padding in the first example
    return images, ids, ids != 0


def _torch_mha_like(block: CrossAttentionBlock, kdim: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention`` (separate q/k/v weights since kdim != d_model), weights copied."""
    ours = block.cross_attn
    ref = nn.MultiheadAttention(
        ours.d_model, ours.num_heads, kdim=kdim, vdim=kdim, batch_first=True
    ).double()
    with torch.no_grad():
        ref.q_proj_weight.copy_(ours.q_proj.weight)
        ref.k_proj_weight.copy_(ours.k_proj.weight)
        ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref


@settings(max_examples=10, deadline=None)
@given(
    kdim=st.sampled_from([5, 12, 24]),
    heads=st.sampled_from([1, 2, 4]),
    length=st.integers(1, 5),
    patches=st.integers(1, 7),
    seed=st.integers(0, 1000),
)
def test_cross_attention_equals_torch_multihead_attention(kdim, heads, length, patches, seed):
    torch.manual_seed(seed)
    d_model = 8
    block = CrossAttentionBlock(d_model, heads, 16, kdim=kdim).double().eval()
    with torch.no_grad():  # non-zero biases, so that their placement is tested too
        for layer in (
            block.cross_attn.q_proj,
            block.cross_attn.k_proj,
            block.cross_attn.v_proj,
            block.cross_attn.out_proj,
        ):
            layer.bias.normal_()
    ref = _torch_mha_like(block, kdim)
    x = torch.randn(2, length, d_model, dtype=torch.float64)
    context = torch.randn(2, patches, kdim, dtype=torch.float64)
    context_valid = torch.ones(2, patches, dtype=torch.bool)
    context_valid[1, patches // 2 + 1 :] = False
    query = block.norm1(x)
    expected, expected_weights = ref(
        query, context, context, key_padding_mask=~context_valid, average_attn_weights=False
    )  # True = ignore, in PyTorch
    output, weights = block.cross_attn(
        query, context, context, mask=context_valid[:, None, None, :], need_weights=True
    )
    assert torch.allclose(output, expected, atol=1e-12)
    assert torch.allclose(weights, expected_weights, atol=1e-12)
    # The whole block: two pre-LN residual sub-layers around that attention.
    y, block_weights = block(x, context, context_valid, need_weights=True)
    h = x + expected
    reference = h + block.ffn.linear2(F.relu(block.ffn.linear1(block.norm2(h))))
    assert torch.allclose(y, reference, atol=1e-12)
    assert block_weights.shape == (2, heads, length, patches)


def test_gated_block_is_identity_at_init_and_learns_its_gate():
    torch.manual_seed(0)
    block = CrossAttentionBlock(8, 2, 16, kdim=6, gated=True)
    x, context = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    y, _ = block(x, context)
    assert torch.equal(y, x)
    y.pow(2).sum().backward()  # d tanh(alpha) / d alpha = 1 at alpha = 0: the gate can open
    assert block.attn_gate.grad.abs() > 0 and block.ffn_gate.grad is not None
    with torch.no_grad():
        block.attn_gate.fill_(0.5)
    assert not torch.allclose(block(x, context)[0], x)


def test_early_fusion_joint_sequence_and_mask():
    torch.manual_seed(0)
    model = MultimodalTransformer(12, 2, fusion="early", **SMALL).double().eval()
    images, ids, valid = _inputs()
    x, joint_valid = model.joint_sequence(images, ids, valid)
    patches = (16 // 4) ** 2
    assert x.shape == (3, 6 + patches, 16)
    assert torch.equal(joint_valid, torch.cat([valid, torch.ones(3, patches, dtype=torch.bool)], 1))
    text = model.token_embed(ids) + model.text_pos[:, :6] + model.type_embed.weight[0]
    image = model.patch_embed(images) + model.image_pos + model.type_embed.weight[1]
    assert torch.allclose(x, torch.cat([text, image], dim=1), atol=1e-12)
    _, attentions = model(images, ids, valid, need_weights=True)
    joint = attentions["joint"]
    assert len(joint) == 2 and joint[0].shape == (3, 2, 6 + patches, 6 + patches)
    assert torch.all(joint[1][0, :, :, 4:6] == 0)  # nobody attends to the first example's padding
    assert joint[1][0, :, :, 6:].sum() > 0  # ... but everybody may attend to its patches


def _text_tokens(model, images, ids, valid):
    return model.features(images, ids, valid).text_tokens


@pytest.mark.parametrize("fusion", FUSIONS)
def test_information_flow(fusion):
    """Changing only the image reaches the text tokens of early and cross fusion, not concat's."""
    torch.manual_seed(0)
    model = MultimodalTransformer(12, 2, fusion=fusion, **SMALL).double().eval()
    images, ids, valid = _inputs()
    other_images = torch.rand_like(images)
    before = _text_tokens(model, images, ids, valid)
    after = _text_tokens(model, other_images, ids, valid)
    if fusion == "concat":
        assert torch.equal(before, after)
    else:
        assert (before - after).abs().amax() > 1e-6
    logits, logits_other = model(images, ids, valid)[0], model(other_images, ids, valid)[0]
    assert (logits - logits_other).abs().amax() > 1e-9  # the answer always sees the image
    # The other way: changing only the text reaches the image tokens of early fusion only.
    other_ids = ids.flip(0)
    image_before = model.features(images, ids, valid).image_tokens
    image_after = model.features(images, other_ids).image_tokens
    if fusion == "early":
        assert (image_before - image_after).abs().amax() > 1e-6
    else:
        assert torch.equal(image_before, image_after)


def test_gated_cross_model_ignores_the_image_at_init():
    torch.manual_seed(0)
    model = MultimodalTransformer(12, 2, fusion="cross", gated=True, **SMALL).double().eval()
    images, ids, valid = _inputs()
    assert torch.equal(
        _text_tokens(model, images, ids, valid),
        _text_tokens(model, torch.rand_like(images), ids, valid),
    )


def test_cross_attention_maps_and_other_widths():
    torch.manual_seed(0)
    model = MultimodalTransformer(12, 3, fusion="cross", d_vision=24, **SMALL).double().eval()
    images, ids, valid = _inputs()
    logits, attentions = model(images, ids, valid, need_weights=True)
    assert logits.shape == (3, 3)
    assert set(attentions) == {"image", "text", "cross"}
    for weights in attentions["cross"]:
        assert weights.shape == (3, 2, 6, 16)
        assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 6, dtype=torch.float64))
    assert attentions["image"][0].shape == (3, 2, 17, 17)
    assert model(images, ids, valid)[1] is None


def test_fused_and_explicit_paths_agree_for_every_fusion():
    images, ids, valid = _inputs()
    for fusion in FUSIONS:
        torch.manual_seed(0)
        model = MultimodalTransformer(12, 2, fusion=fusion, **SMALL).eval()
        fast = model(images.float(), ids, valid)[0]
        slow = model(images.float(), ids, valid, need_weights=True)[0]
        assert torch.allclose(fast, slow, atol=1e-5)


def test_unimodal_baselines_ignore_the_other_input():
    images, ids, valid = _inputs()
    torch.manual_seed(0)
    image_only = UnimodalBaseline(12, 2, modality="image", **SMALL).double().eval()
    text_only = UnimodalBaseline(12, 2, modality="text", **SMALL).double().eval()
    other_ids = ids.flip(0)
    assert torch.equal(image_only(images, ids, valid)[0], image_only(images, other_ids)[0])
    assert torch.equal(text_only(images, ids, valid)[0], text_only(torch.rand_like(images), ids)[0])


@pytest.mark.parametrize("fusion", [*FUSIONS, "image", "text"])
def test_each_model_overfits_a_tiny_batch(fusion):
    data = make_question_dataset(8, seed=1, image_size=16)
    assert len(set(data.questions)) == len(data.questions)  # so that text alone can fit them
    tokenizer = WordTokenizer.from_texts(data.questions)
    ids, valid = tokenizer.encode(data.questions, max_length=8)
    torch.manual_seed(0)
    kwargs = {**SMALL, "num_layers": 1}
    if fusion in FUSIONS:
        model = MultimodalTransformer(len(tokenizer), 2, fusion=fusion, **kwargs)
    else:
        model = UnimodalBaseline(len(tokenizer), 2, modality=fusion, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(data.images, ids, valid)[0], data.answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_fusion_bad_inputs():
    with pytest.raises(ValueError, match="fusion"):
        MultimodalTransformer(12, 2, fusion="late", **SMALL)
    with pytest.raises(ValueError, match="gated"):
        MultimodalTransformer(12, 2, fusion="concat", gated=True, **SMALL)
    with pytest.raises(ValueError, match="d_vision"):
        MultimodalTransformer(12, 2, fusion="early", d_vision=8, **SMALL)
    with pytest.raises(ValueError, match="modality"):
        UnimodalBaseline(12, 2, modality="audio", **SMALL)
    with pytest.raises(ValueError, match="image_size"):
        MultimodalTransformer(12, 2, fusion="cross", **{**SMALL, "image_size": 18})
    images, ids, valid = _inputs()
    for fusion in FUSIONS:
        model = MultimodalTransformer(12, 2, fusion=fusion, **SMALL).double()
        with pytest.raises(ValueError, match="ids"):
            model(images, ids[:2], valid[:2])
        with pytest.raises(ValueError, match="images"):
            model(images[:, :, :8], ids, valid)
    with pytest.raises(ValueError, match="images"):
        UnimodalBaseline(12, 2, **SMALL).double()(images[:2], ids, valid)
