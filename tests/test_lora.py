"""LoRA: a frozen linear layer plus a zero-initialised low-rank update (book section 3.4)."""

import pytest
import torch
from torch import nn

from mmlearn.nn.lora import LoRALinear, add_lora, merge_lora


def test_zero_b_equals_the_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    x = torch.randn(3, 4, 6)
    expected = base(x)
    layer = LoRALinear(base, r=2, alpha=4.0)
    assert torch.equal(layer(x), expected)


def test_update_is_b_a_scaled_by_alpha_over_r():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 5, dtype=torch.float64), r=3, alpha=6.0)
    nn.init.normal_(layer.lora_b)
    x = torch.randn(7, 6, dtype=torch.float64)
    w = layer.base.weight + 2.0 * layer.lora_b @ layer.lora_a  # alpha / r = 2
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias)


def test_merge_gives_the_same_outputs():
    torch.manual_seed(1)
    layer = LoRALinear(nn.Linear(8, 4), r=2, alpha=8.0)
    nn.init.normal_(layer.lora_b)
    x = torch.randn(5, 8)
    before = layer(x)
    merged = layer.merge()
    torch.testing.assert_close(merged(x), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)
    layer.merge()  # a second merge must not add the update twice
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)


def test_only_a_and_b_train():
    layer = LoRALinear(nn.Linear(4, 4), r=2)
    layer(torch.randn(3, 4)).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.lora_a.grad is not None and layer.lora_b.grad is not None
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"lora_a", "lora_b"}


def test_add_lora_wraps_named_layers_and_merge_lora():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    before = model(x)
    wrapped = add_lora(model, ["0"], r=2)
    assert wrapped == ["0"] and isinstance(model[0], LoRALinear)
    assert isinstance(model[2], nn.Linear)
    torch.testing.assert_close(model(x), before)
    nn.init.normal_(model[0].lora_b)
    changed = model(x)
    assert merge_lora(model) == 1
    torch.testing.assert_close(model(x), changed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("r", [0, -1, 1.5, True])
def test_bad_rank(r):
    with pytest.raises(ValueError, match="r must"):
        LoRALinear(nn.Linear(3, 3), r=r)


def test_bad_arguments():
    with pytest.raises(TypeError, match="base"):
        LoRALinear(nn.Conv1d(3, 3, 1))
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(3, 3), alpha=0.0)
    with pytest.raises(ValueError, match="target_names"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), ["q_proj"])
    with pytest.raises(ValueError, match="target_names"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), "0")
