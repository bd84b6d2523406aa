"""The image captioner (causal decoder, greedy decoding) and corpus BLEU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmlearn.caption_metrics import corpus_bleu, ngram_counts
from mmlearn.nn.captioner import ImageCaptioner

VOCAB, BOS, EOS, PAD = 12, 1, 3, 0


def _model(seed: int = 0, **kwargs) -> ImageCaptioner:
    torch.manual_seed(seed)
    config = {
        "image_size": 16,
        "patch_size": 8,
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 2,
        "d_ff": 32,
        "max_length": 8,
    }
    config.update(kwargs)
    return ImageCaptioner(VOCAB, bos_id=BOS, eos_id=EOS, pad_id=PAD, **config).eval()


def _inputs(generator: torch.Generator, batch: int = 3, length: int = 6):
    images = torch.rand(batch, 3, 16, 16, generator=generator)
    ids = torch.randint(4, VOCAB, (batch, length), generator=generator)
    ids[:, 0] = BOS
    return images, ids


def test_shapes(generator):
    model = _model()
    images, ids = _inputs(generator)
    logits, cross = model(images, ids, need_weights=True)
    assert logits.shape == (3, 6, VOCAB)
    assert len(cross) == 2 and cross[0].shape == (3, 2, 6, 1 + 4)  # CLS + 2x2 patches
    assert torch.allclose(cross[0].sum(-1), torch.ones(3, 2, 6))


@pytest.mark.parametrize("position", [1, 3, 5])
def test_decoder_is_causal(generator, position):
    model = _model()
    images, ids = _inputs(generator)
    changed = ids.clone()
    changed[:, position] = (ids[:, position] - 4 + 1) % (VOCAB - 4) + 4  # another real token
    before, _ = model(images, ids)
    after, _ = model(images, changed)
    torch.testing.assert_close(before[:, :position], after[:, :position])  # the past is unchanged
    assert not torch.allclose(before[:, position:], after[:, position:])  # the future sees it


def test_logits_depend_on_the_image(generator):
    model = _model()
    images, ids = _inputs(generator)
    other = torch.rand(images.shape, generator=generator)
    assert not torch.allclose(model(images, ids)[0], model(other, ids)[0])


def test_loss_is_next_token_cross_entropy_and_ignores_padding(generator):
    model = _model()
    images, ids = _inputs(generator, length=5)
    ids[:, -1] = EOS
    logits, _ = model(images, ids[:, :-1])
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(model.loss(images, ids), expected)
    padded = torch.cat([ids, torch.full((3, 3), PAD)], dim=1)
    torch.testing.assert_close(model.loss(images, padded), expected)


def test_greedy_decoding_takes_the_argmax_and_pads_after_the_end(generator):
    model = _model(seed=0)
    images, _ = _inputs(generator, batch=16)
    with torch.no_grad():
        model.output.bias[EOS] = 0.4  # with this bias some (not all) captions end early
    generated = model.generate(images)
    assert generated.shape[1] <= 8 and (generated[:, 0] == BOS).all()
    logits, _ = model(images, generated[:, :-1])
    for row in range(len(generated)):
        tokens = generated[row].tolist()
        end = tokens.index(EOS) if EOS in tokens else len(tokens) - 1
        greedy = logits[row, :end].argmax(-1).tolist()
        assert tokens[1 : end + 1] == greedy  # every token is the argmax given its prefix
        assert all(token == PAD for token in tokens[end + 1 :])  # padding after [EOS]
    ended = (generated == EOS).any(dim=1)
    assert ended.any() and not ended.all()  # both cases are exercised
    assert generated.shape[1] == 8  # one caption never ended: decoding ran to max_length


def test_greedy_decoding_stops_when_every_caption_has_ended(generator):
    model = _model()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.output.bias[EOS] = 1.0  # [EOS] always wins
    generated = model.generate(torch.rand(4, 3, 16, 16, generator=generator))
    assert generated.tolist() == [[BOS, EOS]] * 4


def test_greedy_decoding_respects_max_length(generator):
    model = _model()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.output.bias[5] = 1.0  # never ends
    generated = model.generate(torch.rand(2, 3, 16, 16, generator=generator), max_length=4)
    assert generated.tolist() == [[BOS, 5, 5, 5]] * 2


def test_bad_arguments(generator):
    with pytest.raises(ValueError, match="eos_id"):
        ImageCaptioner(VOCAB, bos_id=1, eos_id=1)
    with pytest.raises(ValueError, match="bos_id"):
        ImageCaptioner(VOCAB, bos_id=VOCAB, eos_id=3)
    with pytest.raises(ValueError, match="vocab_size"):
        ImageCaptioner(0, bos_id=1, eos_id=3)
    model = _model()
    images, ids = _inputs(generator)
    with pytest.raises(ValueError, match="max_length"):
        model(images, torch.full((3, 9), BOS))
    with pytest.raises(TypeError, match="ids"):
        model(images, ids.float())
    with pytest.raises(ValueError, match="batch"):
        model(images[:2], ids)
    with pytest.raises(ValueError, match="ids"):
        model.loss(images, ids[:, :1])
    with pytest.raises(ValueError, match="max_length"):
        model.generate(images, max_length=9)


# --------------------------------------------------------------------------- BLEU

CANDIDATE = "the cat sat on the mat".split()
REFERENCE = "the cat is on the mat".split()


def test_bleu_by_hand():
    # unigrams 5/6 (clipped "the" x2), bigrams 3/5, trigrams 1/4, 4-grams 0/3; equal lengths
    assert corpus_bleu([CANDIDATE], [[REFERENCE]], max_n=1) == pytest.approx(5 / 6)
    assert corpus_bleu([CANDIDATE], [[REFERENCE]], max_n=2) == pytest.approx(math.sqrt(0.5))
    assert corpus_bleu([CANDIDATE], [[REFERENCE]], max_n=3) == pytest.approx(0.5)
    assert corpus_bleu([CANDIDATE], [[REFERENCE]], max_n=4) == 0.0


def test_bleu_clipping_brevity_and_several_references():
    assert corpus_bleu([["the"] * 4], [[["the", "cat"]]], max_n=1) == pytest.approx(1 / 4)
    short = ["the", "cat"]  # precision 1, c = 2, r = 6: BP = exp(1 - 6 / 2)
    assert corpus_bleu([short], [[REFERENCE]], max_n=1) == pytest.approx(math.exp(-2))
    # the closest reference length (2) is used, and n-grams may match any reference
    assert corpus_bleu([short], [[REFERENCE, ["a", "cat"]]], max_n=1) == pytest.approx(1.0)
    assert corpus_bleu([REFERENCE, short], [[REFERENCE], [short]]) == pytest.approx(1.0)


def test_bleu_pools_counts_over_the_corpus():
    # sentence 1: unigrams 2/2, sentence 2: 0/2 -> pooled 2/4, not a mean of sentence scores
    candidates = [["a", "b"], ["c", "d"]]
    references = [[["a", "b"]], [["e", "f"]]]
    assert corpus_bleu(candidates, references, max_n=1) == pytest.approx(0.5)
    assert ngram_counts(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}


def test_bleu_bad_arguments():
    with pytest.raises(ValueError, match="candidates"):
        corpus_bleu([CANDIDATE], [[REFERENCE], [REFERENCE]])
    with pytest.raises(ValueError, match="candidates"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="references"):
        corpus_bleu([CANDIDATE], [[]])
    with pytest.raises(ValueError, match="max_n"):
        corpus_bleu([CANDIDATE], [[REFERENCE]], max_n=0)
