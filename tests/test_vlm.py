"""The LLaVA-style VisionLanguageModel: splicing, loss, generation, projectors (section 3.4)."""

import pytest
import torch

from mmlearn.data.chat import ChatTokenizer, chat_text, collate_chat, encode_chat, encode_prompt
from mmlearn.functional import merge_heads, split_heads
from mmlearn.nn import VisionTransformer
from mmlearn.nn.decoder import TransformerDecoder
from mmlearn.nn.lora import add_lora
from mmlearn.nn.vlm import (
    PROJECTORS,
    MLPProjector,
    QFormerProjector,
    VisionLanguageModel,
    chat_loss,
    make_projector,
)

TURNS = [
    [("what color is the circle ?", "red"), ("how many objects are there ?", "2")],
    [("describe the image .", "a blue square and a red circle")],
    [("is there a green triangle ?", "no")],
]


@pytest.fixture(scope="module")
def tokenizer():
    return ChatTokenizer.from_texts(chat_text(t) for t in TURNS)


def _model(tokenizer, projector="mlp", seed=0, positions="learned"):
    torch.manual_seed(seed)
    vit = VisionTransformer(16, 8, 3, 16, 2, 1, 32)
    lm = TransformerDecoder(
        len(tokenizer),
        24,
        2,
        2,
        48,
        64,
        tie_embeddings=True,
        pad_id=tokenizer.pad_id,
        positions=positions,
    )
    options = {"num_queries": 3} if projector == "qformer" else {}
    return VisionLanguageModel(
        vit,
        make_projector(projector, 16, 24, **options),
        lm,
        tokenizer.image_id,
        tokenizer.eot_id,
        tokenizer.pad_id,
    ).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("projector", PROJECTORS)
def test_image_tokens_land_at_the_placeholder(tokenizer, images, projector):
    model = _model(tokenizer, projector)
    ids, labels = collate_chat([encode_chat(tokenizer, t) for t in TURNS], tokenizer.pad_id)
    ids[2] = torch.roll(ids[2], 2)  # move row 2's placeholder: positions may differ per row
    ids[2, :2] = tokenizer.user_id
    tokens = model.projector(model.encode_images(images))
    count = tokens.shape[1]
    assert count == (4 if projector == "mlp" else 3)
    embeds, valid, new_labels, start = model.build_inputs(ids, tokens, labels)
    assert embeds.shape[1] == ids.shape[1] + count - 1
    for row in range(3):
        p = int((ids[row] == tokenizer.image_id).nonzero())
        assert start[row] == p
        torch.testing.assert_close(embeds[row, p : p + count], tokens[row])
        text = model.language_model.embed_tokens(ids[row : row + 1])[0]
        torch.testing.assert_close(embeds[row, :p], text[:p])
        torch.testing.assert_close(embeds[row, p + count :], text[p + 1 :])
        assert (new_labels[row, p : p + count] == -100).all()
        assert new_labels[row, p + count :].tolist() == labels[row, p + 1 :].tolist()
    output = model(ids, images, labels=labels)
    assert output.logits.shape[:2] == (3, ids.shape[1] + count - 1)


def test_placeholder_count_must_match_images(tokenizer, images):
    model = _model(tokenizer)
    ids = torch.tensor([encode_prompt(tokenizer, "how many objects are there ?")])
    with pytest.raises(ValueError, match="ids"):
        model(ids)  # one <image>, no image
    two = torch.cat([ids, torch.tensor([[tokenizer.image_id]])], dim=1)
    with pytest.raises(ValueError, match="ids"):
        model(two, images[:1])
    with pytest.raises(ValueError, match="images"):
        model(ids, images[:2])


def test_padding_does_not_change_the_loss(tokenizer, images):
    model = _model(tokenizer)
    examples = [encode_chat(tokenizer, t) for t in TURNS]
    ids, labels = collate_chat(examples, tokenizer.pad_id)
    batched = model(ids, images, labels=labels)
    batched_loss = chat_loss(batched.logits, batched.labels)
    total, count = 0.0, 0
    for row, (one_ids, one_labels) in enumerate(examples):
        out = model(one_ids[None], images[row : row + 1], labels=one_labels[None])
        n = int((out.labels[:, 1:] != -100).sum())
        total += chat_loss(out.logits, out.labels) * n
        count += n
    torch.testing.assert_close(batched_loss, total / count)


def test_loss_counts_answer_tokens_only(tokenizer, images):
    model = _model(tokenizer)
    ids, labels = collate_chat([encode_chat(tokenizer, TURNS[0])], tokenizer.pad_id)
    out = model(ids, images[:1], labels=labels)
    logits = out.logits.clone()
    prompt = (out.labels == -100).nonzero()[:, 1]
    logits[0, prompt[prompt > 0] - 1] += torch.randn_like(logits[0, prompt[prompt > 0] - 1])
    torch.testing.assert_close(chat_loss(logits, out.labels), chat_loss(out.logits, out.labels))


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("projector", PROJECTORS)
def test_cached_generation_equals_uncached(tokenizer, images, projector, positions):
    model = _model(tokenizer, projector, positions=positions)
    prompts = [encode_prompt(tokenizer, q) for q, _ in (TURNS[0][0], TURNS[1][0], TURNS[2][0])]
    cached = model.generate(images, prompts, 6)
    assert cached == model.generate(images, prompts, 6, use_cache=False)
    seeded = [
        model.generate(
            images, prompts, 6, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0)
        )
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_generation_stops_at_end_of_turn_and_max_new_tokens(tokenizer, images):
    model = _model(tokenizer)
    prompts = [encode_prompt(tokenizer, "how many objects are there ?")] * 2
    for n in (1, 3):
        assert all(len(answer) <= n for answer in model.generate(images[:2], prompts, n))
    lm = model.language_model
    with torch.no_grad():  # every hidden state becomes e, and <eot>'s (tied) embedding 100 e
        direction = torch.zeros(lm.d_model)
        direction[0] = 1.0
        lm.final_norm.weight.zero_()
        lm.final_norm.bias.copy_(direction)
        lm.token_embed.weight[tokenizer.eot_id] = 100 * direction
    assert model.generate(images[:2], prompts, 5) == [[], []]


def test_qformer_has_a_fixed_number_of_tokens():
    torch.manual_seed(0)
    qformer = QFormerProjector(vision_dim=12, lm_dim=20, num_queries=5, num_heads=2)
    for patches in (1, 4, 49):
        assert qformer(torch.randn(2, patches, 12)).shape == (2, 5, 20)
    assert MLPProjector(12, 20)(torch.randn(2, 9, 12)).shape == (2, 9, 20)
    qformer(torch.randn(2, 7, 12), need_weights=True)
    assert qformer.last_weights.shape == (2, 2, 5, 7)
    torch.testing.assert_close(qformer.last_weights.sum(-1), torch.ones(2, 2, 5))


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_frozen_parts_get_no_gradient_in_stages_1_and_2(tokenizer, images):
    model = _model(tokenizer).train()
    ids, labels = collate_chat([encode_chat(tokenizer, t) for t in TURNS], tokenizer.pad_id)
    # stage 1: only the projector
    model.vision_encoder.requires_grad_(False)
    model.language_model.requires_grad_(False)
    out = model(ids, images, labels=labels)
    chat_loss(out.logits, out.labels).backward()
    assert not _grads(model.vision_encoder) and not _grads(model.language_model)
    assert _grads(model.projector)
    model.zero_grad(set_to_none=True)
    # stage 2: LoRA adapters of the language model, and the projector
    add_lora(model.language_model, ["q_proj", "v_proj"], r=2)
    out = model(ids, images, labels=labels)
    chat_loss(out.logits, out.labels).backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith("projector") or "lora_" in n for n in trained)
    assert any("lora_b" in n for n in trained)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_attention_maps_cover_the_spliced_sequence(tokenizer, images, positions):
    model = _model(tokenizer, positions=positions)
    ids = torch.tensor([encode_prompt(tokenizer, "what color is the circle ?")])
    maps, start = model.attention_maps(ids, images[:1])
    assert len(maps) == 2 and maps[0].shape == (1, 2, ids.shape[1] + 3, ids.shape[1] + 3)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(1, 2, ids.shape[1] + 3))
    assert maps[0].triu(1).abs().max() == 0  # causal
    assert int(start) == 1
    # the maps are the weights the layer really uses: weights @ values gives its output
    lm = model.language_model
    embeds, valid, _, _ = model.build_inputs(ids, model._image_tokens(images[:1], None))
    x = lm._inputs(None, embeds, 0)
    layer = lm.layers[0]
    values = split_heads(layer.self_attn.v_proj(layer.norm1(x)), layer.num_heads)
    expected, _, _ = layer.self_attention(x, lm._self_mask(valid, x.shape[1]), None)
    torch.testing.assert_close(
        layer.self_attn.out_proj(merge_heads(maps[0] @ values)), expected, atol=1e-5, rtol=1e-5
    )


def test_bad_arguments(tokenizer, images):
    model = _model(tokenizer)
    prompts = [encode_prompt(tokenizer, "how many objects are there ?")]
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(images[:1], prompts, 0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(images[:1], prompts, 3, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(images[:1], prompts, 3, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="projector name"):
        make_projector("linear", 4, 4)
    with pytest.raises(ValueError, match="num_queries"):
        QFormerProjector(4, 4, num_queries=0)
    with pytest.raises(TypeError, match="language_model"):
        VisionLanguageModel(
            model.vision_encoder,
            model.projector,
            TransformerDecoder(10, 8, 2, 1, 16, cross_attention=True),
            2,
            5,
            0,
        )
    with pytest.raises(ValueError, match="labels"):
        chat_loss(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long))
