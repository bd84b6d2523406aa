"""Rotary position embeddings (RoPE): the formula and the decoder that uses it."""

from __future__ import annotations

import math

import pytest
import torch

from mmlearn.functional import rotary_embedding
from mmlearn.nn.decoder import TransformerDecoder


def _rotate_by_loop(x: torch.Tensor, start: int, base: float) -> torch.Tensor:
    """Brute force: a 2x2 rotation matrix per position and column pair (x[i], x[i + d/2])."""
    d = x.shape[-1]
    out = torch.empty_like(x)
    for t in range(x.shape[-2]):
        for i in range(d // 2):
            angle = (start + t) * base ** (-2 * i / d)
            rotation = torch.tensor(
                [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                dtype=x.dtype,
            )
            pair = torch.stack([x[..., t, i], x[..., t, i + d // 2]], dim=-1)
            rotated = pair @ rotation.T
            out[..., t, i], out[..., t, i + d // 2] = rotated[..., 0], rotated[..., 1]
    return out


@pytest.mark.parametrize(("start", "base"), [(0, 10000.0), (5, 100.0)])
def test_matches_a_loop_of_rotation_matrices(start, base):
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(rotary_embedding(x, start, base), _rotate_by_loop(x, start, base))


def test_matches_hugging_face_llama():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    config = transformers.LlamaConfig(
        hidden_size=32, num_attention_heads=2, num_key_value_heads=2, rope_theta=500.0
    )
    q, k = torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    cos, sin = LlamaRotaryEmbedding(config=config)(q, torch.arange(3, 10)[None])
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(rotary_embedding(q, 3, 500.0), expected_q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotary_embedding(k, 3, 500.0), expected_k, atol=1e-5, rtol=1e-5)


def test_scores_depend_on_the_offset_only():
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def score(query_position: int, key_position: int) -> torch.Tensor:
        rotated_q = rotary_embedding(q[None], query_position)[0]
        rotated_k = rotary_embedding(k[None], key_position)[0]
        return rotated_q @ rotated_k

    torch.testing.assert_close(score(7, 3), score(4, 0))
    torch.testing.assert_close(score(30, 29), score(1, 0))
    assert not torch.allclose(score(7, 3), score(7, 4))  # a different offset changes the score


def test_position_zero_is_identity_and_norms_are_kept():
    x = torch.randn(3, 10, 8, dtype=torch.float64)
    rotated = rotary_embedding(x)
    torch.testing.assert_close(rotated[:, 0], x[:, 0])
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))


def test_start_continues_the_sequence():
    x = torch.randn(2, 9, 8)
    torch.testing.assert_close(rotary_embedding(x)[:, 4:], rotary_embedding(x[:, 4:], start=4))


def test_keeps_dtype():
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    out = rotary_embedding(x, 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), rotary_embedding(x.float(), 3), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"x": torch.randn(2, 5, 7)}, "x"),
        ({"x": torch.randn(8)}, "x"),
        ({"x": torch.ones(2, 4, dtype=torch.long)}, "x"),
        ({"x": torch.randn(2, 4), "start": -1}, "start"),
        ({"x": torch.randn(2, 4), "start": 1.5}, "start"),
        ({"x": torch.randn(2, 4), "base": 1.0}, "base"),
    ],
)
def test_bad_inputs(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        rotary_embedding(**kwargs)


def _lm(positions: str, seed: int = 0) -> TransformerDecoder:
    torch.manual_seed(seed)
    return TransformerDecoder(11, 16, 2, 2, 32, 40, positions=positions).eval()


def test_rope_decoder_has_no_position_vectors():
    assert _lm("rope").pos_embed is None
    names = {name for name, _ in _lm("rope").named_parameters()}
    assert names == {name for name, _ in _lm("learned").named_parameters()} - {"pos_embed"}


def test_rope_decoder_sees_relative_positions_only():
    """Shifting a sequence right by masked-out tokens changes nothing with RoPE: the scores
    of the real tokens depend on their offsets. Learned position vectors do change."""
    ids = torch.randint(3, 11, (2, 6), generator=torch.Generator().manual_seed(0))
    shifted = torch.cat([torch.zeros(2, 4, dtype=torch.long), ids], dim=1)
    valid = torch.cat([torch.zeros(2, 4, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)], 1)
    for positions, invariant in (("rope", True), ("learned", False)):
        model = _lm(positions)
        plain = model(ids).logits
        moved = model(shifted, valid=valid).logits[:, 4:]
        assert torch.allclose(plain, moved, atol=1e-5) == invariant, positions


def test_rope_decoder_is_causal_and_cache_matches_recompute():
    model = _lm("rope")
    ids = torch.randint(3, 11, (3, 12), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 11
    torch.testing.assert_close(model(changed).logits[:, :8], full[:, :8])
    cache = model.new_cache()
    parts = [model(ids[:, :5], cache=cache).logits]
    parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"positions": "absolute"}, "positions"),
        ({"positions": "rope", "rope_base": 0.5}, "rope_base"),
        ({"positions": "rope", "d_model": 12, "num_heads": 4}, "rope"),
    ],
)
def test_bad_decoder_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TransformerDecoder(11, **{"d_model": 16, "num_heads": 2, **kwargs})
