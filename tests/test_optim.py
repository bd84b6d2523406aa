"""Parameter groups (who gets weight decay), the logit-scale clamp, and the version floors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import mmlearn
from mmlearn._compat import MIN_TORCH, parse_version, require
from mmlearn.losses import ClipLoss
from mmlearn.nn import make_small_clip
from mmlearn.nn.fusion import CrossAttentionBlock
from mmlearn.optim import clamp_logit_scales_, param_groups


def _names(groups: list[dict]) -> tuple[set[str], set[str]]:
    by_decay = {group["weight_decay"]: set(group["names"]) for group in groups}
    return by_decay.get(0.01, set()), by_decay.get(0.0, set())


def test_clip_model_groups_by_hand():
    model = make_small_clip(vocab_size=12, max_length=5, num_layers=1)
    decayed, kept = _names(param_groups(model, 0.01))
    assert "logit_scale" in kept
    assert "image_projection.weight" in decayed and "text_projection.weight" in decayed
    assert "image_encoder.features.0.weight" in decayed  # a conv kernel
    assert "image_encoder.features.0.bias" in kept
    for name in kept:  # biases, norms, the scale: nothing with a weight matrix
        assert dict(model.named_parameters())[name].ndim < 2
    norm_names = {
        f"{module_name}.{leaf}"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        for leaf in ("weight", "bias")
    }
    assert norm_names and norm_names <= kept
    # every trainable parameter lands in exactly one group
    assert decayed | kept == {name for name, _ in model.named_parameters()}
    assert not decayed & kept


def test_groups_skip_frozen_and_shared_parameters_and_empty_groups():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.LayerNorm(3))
    model[3].requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert [len(group["params"]) for group in groups] == [1, 1]  # shared weight once, bias once
    only_bias = param_groups(nn.LayerNorm(4), 0.1)
    assert len(only_bias) == 1 and only_bias[0]["weight_decay"] == 0.0


def test_gates_get_no_decay_even_as_matrices():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)
            self.gate = nn.Parameter(torch.zeros(2, 2))

    decayed, kept = _names(param_groups(Gated(), 0.01))
    assert decayed == {"proj.weight"} and kept == {"proj.bias", "gate"}


def test_flamingo_gates_and_norms_of_a_cross_attention_block_are_not_decayed():
    block = CrossAttentionBlock(d_model=8, num_heads=2, d_ff=16, gated=True)
    decayed, kept = _names(param_groups(block, 0.01))
    assert {"attn_gate", "ffn_gate"} <= kept
    assert all(dict(block.named_parameters())[name].ndim >= 2 for name in decayed)
    assert not any("norm" in name for name in decayed)


def test_adamw_with_groups_leaves_biases_and_the_scale_undecayed():
    """With a zero gradient, AdamW changes only what it decays."""
    model = make_small_clip(vocab_size=12, max_length=5, num_layers=1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (p.ndim >= 2 and before[name].abs().sum() > 0), name


def test_a_list_of_modules_is_grouped_as_one_model():
    """An encoder and a head, or a model and a loss that owns a scale, share one optimiser."""
    encoder, head, loss = nn.Linear(3, 4), nn.Linear(4, 2), ClipLoss()
    decayed, kept = _names(param_groups([encoder, head, loss], 0.01))
    assert decayed == {"0.weight", "1.weight"}
    assert kept == {"0.bias", "1.bias", "2.logit_scale"}
    head.requires_grad_(False)  # a frozen part is left out, a shared module counted once
    groups = param_groups((encoder, head, encoder), 0.01)
    assert sum(len(group["params"]) for group in groups) == 2


def test_param_groups_bad_inputs():
    with pytest.raises(TypeError, match="model"):
        param_groups([nn.Linear(2, 2), nn.Linear(2, 2).weight], 0.1)
    with pytest.raises(TypeError, match="model"):
        param_groups([], 0.1)
    with pytest.raises(TypeError, match="model"):
        param_groups(nn.Linear(2, 2).parameters(), 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(nn.Linear(2, 2), -0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(nn.Linear(2, 2), True)


def test_clamp_logit_scales_reaches_every_owner_but_not_frozen_scales():
    model = make_small_clip(vocab_size=12, max_length=5, num_layers=1)
    wrapper = nn.ModuleDict(
        {"model": model, "loss": ClipLoss(), "fixed": ClipLoss(learnable=False)}
    )
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
        wrapper["loss"].logit_scale.fill_(-2.0)
        wrapper["fixed"].logit_scale.fill_(-3.0)  # a buffer: nobody trains it
    clamp_logit_scales_(wrapper)
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    assert wrapper["loss"].logit_scale.item() == 0.0
    assert wrapper["fixed"].logit_scale.item() == -3.0
    model.logit_scale.requires_grad_(False)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    mmlearn.clamp_logit_scales_(model)
    assert model.logit_scale.item() == 7.0  # frozen by the user: left as set


def test_a_scale_above_the_cap_keeps_learning_until_the_clamp():
    """The gradient is not zero above ln 100: a step can bring the scale back down."""
    model = make_small_clip(vocab_size=12, max_length=5, num_layers=1)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 0.5)
    images = torch.rand(4, 1, 8, 8)
    ids = torch.randint(1, 12, (4, 5))
    loss = ClipLoss(learnable=False)(*model(images, ids))
    loss.backward()
    assert model.logit_scale.grad != 0


@pytest.mark.parametrize(
    "version, expected", [("2.4.0", (2, 4)), ("2.14.1+cu130", (2, 14)), ("3.0.0a0+git123", (3, 0))]
)
def test_parse_version(version, expected):
    assert parse_version(version) == expected


def test_version_floors_are_enforced():
    require("2.4.1")
    require(torch.__version__)
    with pytest.raises(ImportError, match="torch >= 2.4"):
        require("2.3.1+cpu")
    with pytest.raises(ImportError, match="Python >= 3.10"):
        require("2.4.0", (3, 9))
    with pytest.raises(ValueError, match="version"):
        parse_version("nightly")


def test_pyproject_states_the_same_floors():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()  # no tomllib on 3.10
    assert 'requires-python = ">=3.10"' in text
    assert re.findall(r'"torch>=([0-9.]+)"', text) == [f"{MIN_TORCH[0]}.{MIN_TORCH[1]}"]
