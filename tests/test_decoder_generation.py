"""The causal decoder, its key-value cache, and greedy / beam / sampling decoding."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmlearn.generation import (
    DecoderStepper,
    RecomputeStepper,
    beam_search,
    generate,
    greedy,
    sample,
)
from mmlearn.nn.captioner import CaptionDecoderLayer, ImageCaptioner
from mmlearn.nn.decoder import DecoderLayer, KVCache, TransformerDecoder

VOCAB, BOS, EOS, PAD = 11, 1, 2, 0


def _lm(seed: int = 0, **kwargs) -> TransformerDecoder:
    torch.manual_seed(seed)
    config = {"d_model": 16, "num_heads": 2, "num_layers": 2, "d_ff": 32, "max_length": 40}
    config.update(kwargs)
    return TransformerDecoder(VOCAB, **config).eval()


def _prompt(batch: int = 3, length: int = 2, seed: int = 1) -> torch.Tensor:
    ids = torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS
    return ids


class FixedStepper:
    """Returns the same logits at every step (for distribution tests)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(ids.shape[0], -1)

    def reorder(self, indices: torch.Tensor) -> None:
        pass


def test_layer_matches_caption_decoder_layer():
    """Same sub-layers, same names: the captioner's layer is an independent reference."""
    torch.manual_seed(0)
    ours = DecoderLayer(16, 2, 32, cross_attention=True).eval()
    reference = CaptionDecoderLayer(16, 2, 32).eval()
    reference.load_state_dict(ours.state_dict())
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5)
    out, _, weights = ours(x, mask, memory_kv=ours.memory_kv(memory), need_weights=True)
    expected, expected_weights = reference(x, memory, need_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


def test_decoder_is_causal():
    model = _lm()
    ids = _prompt(2, 8)
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % VOCAB
    a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_invalid_positions_are_ignored():
    model = _lm()
    ids = _prompt(2, 6)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[:, :2] = False  # left padding
    other = ids.clone()
    other[:, :2] = 7
    a = model(ids, valid=valid).logits[:, 2:]
    b = model(other, valid=valid).logits[:, 2:]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cross", [False, True])
def test_cache_matches_full_recompute_stepwise(cross):
    model = _lm(cross_attention=cross, memory_dim=8 if cross else None)
    ids = _prompt(3, 12)
    memory = torch.randn(3, 5, 8) if cross else None
    full = model(ids, memory).logits
    cache = model.new_cache()
    parts = [model(ids[:, :4], memory, cache=cache).logits]
    parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12 and cache.batch_size == 3


@pytest.mark.parametrize("setting", ["lm", "cross", "prefix"])
def test_cached_greedy_equals_recompute(setting):
    model = _lm(cross_attention=setting == "cross")
    extra = {}
    if setting == "cross":
        extra["memory"] = torch.randn(3, 5, 16)
    if setting == "prefix":
        extra["prefix_embeds"] = torch.randn(3, 4, 16)
    prompt = _prompt(3, 2)
    cached = greedy(DecoderStepper(model, use_cache=True, **extra), prompt, 30)
    full = greedy(DecoderStepper(model, use_cache=False, **extra), prompt, 30)
    assert torch.equal(cached.sequences, full.sequences)
    torch.testing.assert_close(cached.logits, full.logits, atol=1e-5, rtol=1e-5)
    assert cached.sequences.shape == (3, 32)


def test_recompute_stepper_reproduces_captioner_generate():
    torch.manual_seed(0)
    captioner = ImageCaptioner(
        VOCAB,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        image_size=16,
        patch_size=8,
        d_model=16,
        num_heads=2,
        d_ff=32,
        max_length=10,
    ).eval()
    images = torch.rand(4, 3, 16, 16)
    expected = captioner.generate(images)
    stepper = RecomputeStepper(
        lambda ids, memory: captioner.decode(memory, ids)[0], memory=captioner.encode(images)
    )
    prompt = torch.full((4, 1), BOS)
    out = greedy(stepper, prompt, 9, eos_id=EOS, pad_id=PAD).sequences
    assert torch.equal(out, expected[:, : out.shape[1]])
    assert (expected[:, out.shape[1] :] == PAD).all()


def test_greedy_stops_and_pads_after_eos():
    logits = torch.full((VOCAB,), -5.0)
    logits[EOS] = 5.0
    out = greedy(FixedStepper(logits), torch.full((2, 1), BOS), 10, eos_id=EOS, pad_id=PAD)
    assert out.sequences.tolist() == [[BOS, EOS], [BOS, EOS]]


@pytest.mark.parametrize("cross", [False, True])
def test_beam_one_and_top_k_one_equal_greedy(cross):
    model = _lm(cross_attention=cross)
    memory = torch.randn(3, 5, 16) if cross else None
    prompt = _prompt(3, 1)
    reference = greedy(DecoderStepper(model, memory), prompt, 15, eos_id=EOS, pad_id=PAD)
    beam = beam_search(
        DecoderStepper(model, memory), prompt, 15, beam_size=1, eos_id=EOS, pad_id=PAD
    )
    sampled = sample(
        DecoderStepper(model, memory),
        prompt,
        15,
        top_k=1,
        temperature=3.0,
        eos_id=EOS,
        pad_id=PAD,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(beam.sequences, reference.sequences)
    assert torch.equal(sampled.sequences, reference.sequences)
    torch.testing.assert_close(
        beam.scores * (beam.sequences[:, 1:] != PAD).sum(1), reference.scores, atol=1e-4, rtol=1e-5
    )


def _sequence_logprob(
    model: TransformerDecoder, prompt: torch.Tensor, tokens: tuple[int, ...]
) -> float:
    ids = torch.cat([prompt, torch.tensor([tokens])], dim=1)
    logp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
    return sum(float(logp[prompt.shape[1] - 1 + i, t]) for i, t in enumerate(tokens))


def test_wide_beam_finds_the_exhaustive_best():
    """With beam_size >= V^(n-1) beam search is exact: compare with brute force."""
    torch.manual_seed(3)
    model = TransformerDecoder(
        4, d_model=8, num_heads=2, num_layers=1, d_ff=16, max_length=8
    ).eval()
    prompt = torch.tensor([[1]])
    with torch.no_grad():
        best = max(
            itertools.product(range(4), repeat=3),
            key=lambda seq: _sequence_logprob(model, prompt, seq),
        )
        out = beam_search(DecoderStepper(model), prompt, 3, beam_size=16, length_penalty=0.0)
        assert out.sequences[0, 1:].tolist() == list(best)
        assert out.scores.item() == pytest.approx(_sequence_logprob(model, prompt, best), abs=1e-5)


def test_beam_beats_or_ties_greedy_in_log_probability():
    model = _lm(seed=5)
    prompt = _prompt(4, 1)
    g = greedy(DecoderStepper(model), prompt, 6)
    b = beam_search(DecoderStepper(model), prompt, 6, beam_size=4, length_penalty=0.0)
    assert (b.scores >= g.scores - 1e-5).all()


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.5, None), (2.0, 3)])
def test_sampling_follows_the_tempered_distribution(temperature, top_k):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 40_000
    out = sample(
        FixedStepper(logits),
        torch.zeros(n, 1, dtype=torch.long),
        1,
        temperature=temperature,
        top_k=top_k,
        generator=torch.Generator().manual_seed(0),
    )
    freq = torch.bincount(out.sequences[:, 1], minlength=5).float() / n
    scaled = logits / temperature
    if top_k is not None:
        scaled[top_k:] = float("-inf")  # logits are sorted in decreasing order
    expected = torch.softmax(scaled, dim=0)
    assert (freq - expected).abs().max() < 4 * (0.25 / n) ** 0.5
    if top_k is not None:
        assert (freq[top_k:] == 0).all()


def test_generate_dispatches_and_cache_reports_memory():
    model = _lm()
    stepper = DecoderStepper(model)
    out = generate(stepper, _prompt(2, 1), 5, method="beam", beam_size=2)
    assert out.sequences.shape == (2, 6)
    cache = stepper.cache
    assert cache.batch_size == 4  # two beams per prompt
    # keys + values, 2 layers, (B=4, h=2, T=5, d_head=8) float32
    assert cache.nbytes() == 2 * 2 * 4 * 2 * 5 * 8 * 4


def test_tied_embeddings_share_the_matrix():
    model = _lm(tie_embeddings=True)
    assert model.output.weight is model.token_embed.weight
    assert model.output.bias is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 3, "beam_size": 0}, "beam_size"),
        ({"max_new_tokens": 3, "beam_size": 1.5}, "beam_size"),
    ],
)
def test_beam_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        beam_search(DecoderStepper(_lm()), _prompt(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_sample_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sample(DecoderStepper(_lm()), _prompt(), 3, **kwargs)


def test_other_bad_inputs():
    model = _lm()
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy(DecoderStepper(model), _prompt(), -1)
    with pytest.raises(ValueError, match="prompt"):
        greedy(DecoderStepper(model), _prompt().float(), 3)
    with pytest.raises(ValueError, match="method"):
        generate(DecoderStepper(model), _prompt(), 3, method="nucleus")
    with pytest.raises(ValueError, match="max_length"):
        greedy(DecoderStepper(model), _prompt(), 60)
    cache = model.new_cache()
    model(_prompt(3, 2), cache=cache)
    with pytest.raises(ValueError, match="batch size"):
        model(_prompt(2, 1), cache=cache)
    with pytest.raises(TypeError, match="cache"):
        model(_prompt(3, 1), cache={"keys": []})
    with pytest.raises(ValueError, match="memory"):
        _lm(cross_attention=True)(_prompt())
    with pytest.raises(ValueError, match="memory"):
        model(_prompt(), torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.randn(3, 2, 7))
    with pytest.raises(ValueError, match="vocab_size"):
        TransformerDecoder(0)
    assert isinstance(cache, KVCache)
