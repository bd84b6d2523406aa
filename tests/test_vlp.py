"""Vision-language pretraining: ITC, ITM with hard negatives, LM, and the pretraining model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmlearn.functional import clip_loss, itc_loss, itm_hard_negatives, itm_loss, lm_loss
from mmlearn.generation import greedy
from mmlearn.losses import ITCLoss, ITMLoss, LMLoss
from mmlearn.nn import MultimodalTransformer, VisionLanguagePretrainer, append_eos

VOCAB, EOS, PAD = 12, 11, 0


def test_itc_is_clip_loss_on_normalised_features():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    expected = clip_loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), 10.0)
    torch.testing.assert_close(itc_loss(a, b, 10.0), expected)
    torch.testing.assert_close(itc_loss(3 * a, b, 10.0), expected)  # scale-free
    module = ITCLoss(init_logit_scale=math.log(10.0))
    torch.testing.assert_close(module(a, b), expected)


def test_itm_loss_hand_computed():
    positive = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # p(match) = 1/2, 3/4
    negative = torch.tensor([[math.log(4.0), 0.0]])  # p(no match) = 4/5
    expected = -(math.log(0.5) + math.log(0.75) + math.log(0.8)) / 3
    assert itm_loss(positive, negative).item() == pytest.approx(expected, rel=1e-6)
    assert ITMLoss()(positive, negative).item() == pytest.approx(expected, rel=1e-6)


def test_itm_loss_stable_for_large_logits():
    positive = torch.tensor([[0.0, 1e4]])
    negative = torch.tensor([[1e4, 0.0]], dtype=torch.bfloat16)
    assert itm_loss(positive, negative.float()).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(itm_loss(positive.bfloat16(), negative))


def test_hard_negatives_never_the_positive_and_respect_exclude():
    torch.manual_seed(0)
    logits = torch.randn(6, 6) * 5
    logits.fill_diagonal_(100.0)  # the positive is by far the most similar
    exclude = torch.zeros(6, 6, dtype=torch.bool)
    exclude[0, 1] = exclude[1, 0] = True  # texts 0 and 1 are the same caption
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        text, image = itm_hard_negatives(logits, exclude=exclude, generator=generator)
        assert (text != torch.arange(6)).all() and (image != torch.arange(6)).all()
        assert text[0] != 1 and image[1] != 0 and text[1] != 0 and image[0] != 1


def test_hard_negatives_follow_the_similarity_distribution():
    """Large-sample frequencies match softmax over the allowed pairs, in both directions.

    Items fall in 4 classes and ``s_ij = L[class(i), class(j)]``, so a row of class c
    draws a text of class k with probability proportional to ``n_k(c) * exp(L[c, k])``,
    where ``n_k(c)`` counts the class-k columns other than the row's own.
    """
    table = torch.tensor(
        [[3.0, 2.0, 0.0, -1.0], [1.0, 3.0, 1.0, 0.5], [0.0, 2.0, 3.0, 1.0], [1.5, 0.0, 0.5, 3.0]]
    )
    n, repeats = 400, 25
    classes = torch.arange(n) % 4
    logits = table[classes][:, classes]
    generator = torch.Generator().manual_seed(1)
    counts = {"text": torch.zeros(4, 4), "image": torch.zeros(4, 4)}
    for _ in range(repeats):
        text, image = itm_hard_negatives(logits, generator=generator)
        counts["text"].index_put_((classes, classes[text]), torch.ones(n), accumulate=True)
        counts["image"].index_put_((classes, classes[image]), torch.ones(n), accumulate=True)
    per_class = n // 4
    sizes = torch.full((4, 4), float(per_class)) - torch.eye(4)  # the own item is excluded
    draws = per_class * repeats
    tolerance = 4 * (0.25 / draws) ** 0.5
    for name, scores in (("text", table), ("image", table.T)):
        expected = sizes * scores.exp()
        expected = expected / expected.sum(dim=1, keepdim=True)
        assert (counts[name] / draws - expected).abs().max() < tolerance, name


def test_hard_negative_bad_inputs():
    with pytest.raises(ValueError, match="logits_per_image"):
        itm_hard_negatives(torch.randn(3, 4))
    with pytest.raises(ValueError, match="logits_per_image"):
        itm_hard_negatives(torch.randn(1, 1))
    with pytest.raises(ValueError, match="exclude"):
        itm_hard_negatives(torch.randn(3, 3), exclude=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="exclude"):
        itm_hard_negatives(torch.randn(2, 2), exclude=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive_logits"):
        itm_loss(torch.randn(3, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="negative_logits"):
        itm_loss(torch.randn(3, 2), torch.randn(0, 2))


def _loop_lm_loss(logits, ids, pad_id, prompt_length):
    """Brute force: one -log softmax per counted target."""
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for j in range(1, ids.shape[1]):
            if ids[b, j] == pad_id or j < prompt_length[b]:
                continue
            total -= torch.log_softmax(logits[b, j - 1], dim=0)[ids[b, j]].item()
            count += 1
    return total / count


def test_lm_loss_against_a_loop_and_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, VOCAB)
    ids = torch.randint(1, VOCAB, (3, 6))
    ids[0, 4:] = PAD
    ids[2, 5:] = PAD
    prompt = torch.tensor([0, 3, 2])
    expected = _loop_lm_loss(logits, ids, PAD, prompt)
    assert lm_loss(logits, ids, pad_id=PAD, prompt_length=prompt).item() == pytest.approx(
        expected, rel=1e-5
    )
    assert LMLoss(pad_id=PAD, prompt_length=2)(logits, ids).item() == pytest.approx(
        _loop_lm_loss(logits, ids, PAD, [2, 2, 2]), rel=1e-5
    )
    uniform = torch.zeros(1, 3, 4)
    assert lm_loss(uniform, torch.tensor([[1, 2, 3]])).item() == pytest.approx(math.log(4))


def test_lm_loss_ignores_padding_and_prompt_positions():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    ids = torch.tensor([[1, 4, 5, PAD, PAD], [1, 6, 7, 8, PAD]])
    loss = lm_loss(logits, ids, pad_id=PAD, prompt_length=2)
    loss.backward()
    # counted targets: (0, j=2), (1, j=2), (1, j=3) -> logits rows (0,1), (1,1), (1,2)
    used = logits.grad.abs().sum(-1) > 0
    assert used.tolist() == [[False, True, False, False, False], [False, True, True, False, False]]
    changed = logits.detach().clone()
    changed[0, 2:] = 100.0  # predictions of padding targets and beyond
    changed[:, 0] = -7.0  # predictions of prompt targets
    assert lm_loss(changed, ids, pad_id=PAD, prompt_length=2).item() == pytest.approx(
        loss.item(), rel=1e-6
    )


def test_lm_loss_bad_inputs():
    logits = torch.randn(2, 4, VOCAB)
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="ids"):
        lm_loss(logits, ids[:, :3])
    with pytest.raises(ValueError, match="prompt_length"):
        lm_loss(logits, ids, prompt_length=-1)
    with pytest.raises(ValueError, match="prompt_length"):
        lm_loss(logits, ids, prompt_length=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="no target"):
        lm_loss(logits, ids, prompt_length=4)
    with pytest.raises(ValueError, match="logits"):
        lm_loss(logits[0], ids)


def _model(**flags) -> VisionLanguagePretrainer:
    torch.manual_seed(0)
    return VisionLanguagePretrainer(
        VOCAB,
        eos_id=EOS,
        pad_id=PAD,
        image_size=16,
        patch_size=8,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        max_length=8,
        embed_dim=8,
        **flags,
    )


def _batch(n: int = 4):
    images = torch.rand(n, 3, 16, 16)
    ids = torch.tensor([[1, 3, 4, 5, 0, 0, 0, 0]] * n)
    ids[:, 2] = torch.arange(n) % 5 + 4
    return images, ids, ids != PAD


def test_append_eos():
    ids = torch.tensor([[1, 3, 4, 0], [1, 5, 0, 0]])
    assert append_eos(ids, ids != 0, 9).tolist() == [[1, 3, 4, 9], [1, 5, 9, 0]]
    with pytest.raises(ValueError, match="EOS"):
        append_eos(ids[:, :3], ids[:, :3] != 0, 9)


@pytest.mark.parametrize("flags", [{}, {"itc": False}, {"itm": False}, {"lm": False}])
def test_pretrainer_losses_follow_the_flags(flags):
    model = _model(**flags)
    out = model(*_batch(), generator=torch.Generator().manual_seed(0))
    enabled = {name for name in ("itc", "itm", "lm") if flags.get(name, True)}
    assert set(out) == enabled | {"loss"}
    torch.testing.assert_close(out["loss"], sum(out[name] for name in enabled))
    out["loss"].backward()
    decoder_grad = model.decoder.output.weight.grad
    assert (decoder_grad is not None) == ("lm" in enabled)


def test_pretrainer_lm_loss_is_the_decoders():
    model = _model(itc=False, itm=False)
    images, ids, valid = _batch()
    targets = append_eos(ids, valid, EOS)
    tokens, _ = model.encode_image(images)
    expected = lm_loss(model.decoder(targets, tokens).logits, targets, pad_id=PAD)
    torch.testing.assert_close(model(images, ids, valid)["lm"], expected)


def test_unimodal_text_embedding_ignores_the_image_and_fusion_does_not():
    model = _model().eval()
    images, ids, valid = _batch()
    tokens, _ = model.encode_image(images)
    other, _ = model.encode_image(torch.rand_like(images))
    text = model.encode_text(ids, valid)
    torch.testing.assert_close(text, model.encode_text(ids, valid))
    assert not torch.allclose(model.fuse(tokens, ids, valid), model.fuse(other, ids, valid))


def test_to_classifier_transfers_everything_but_the_head():
    model = _model()
    classifier = model.to_classifier(4)
    assert isinstance(classifier, MultimodalTransformer)
    source = model.encoder.state_dict()
    for name, value in classifier.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(value, source[name]), name
    assert classifier.head[-1].out_features == 4
    images, ids, valid = _batch()
    torch.testing.assert_close(
        classifier.features(images, ids, valid).pooled,
        model.fuse(model.encode_image(images)[0], ids, valid),
    )


def test_caption_stepper_decodes():
    model = _model().eval()
    images = torch.rand(3, 3, 16, 16)
    out = greedy(
        model.caption_stepper(images), torch.ones(3, 1, dtype=torch.long), 7, eos_id=EOS, pad_id=PAD
    )
    full = greedy(
        model.caption_stepper(images, use_cache=False),
        torch.ones(3, 1, dtype=torch.long),
        7,
        eos_id=EOS,
        pad_id=PAD,
    )
    assert torch.equal(out.sequences, full.sequences)


def test_pretrainer_bad_arguments():
    with pytest.raises(ValueError, match="itc"):
        _model(itc=False, itm=False, lm=False)
    with pytest.raises(ValueError, match="embed_dim"):
        VisionLanguagePretrainer(VOCAB, eos_id=EOS, embed_dim=0)


def test_shared_text_encoder_lm_is_causal_and_trains_the_fusion_weights():
    model = _model(itc=False, itm=False, share_text_encoder=True)
    assert model.decoder is None
    images, ids, valid = _batch()
    tokens, _ = model.encode_image(images)
    changed = ids.clone()
    changed[:, 3] = 7
    a, b = model.lm_logits(tokens, ids), model.lm_logits(tokens, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])
    model(images, ids, valid)["loss"].backward()
    assert model.encoder.cross_blocks[0].cross_attn.q_proj.weight.grad is not None
    out = greedy(model.caption_stepper(images), torch.ones(4, 1, dtype=torch.long), 5)
    assert out.sequences.shape == (4, 6)
