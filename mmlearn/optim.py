"""Optimiser helpers: who gets weight decay, and who clamps the temperature.

Weight decay pulls every parameter towards zero. That is a sensible prior for
the weight matrices of linear, convolutional and embedding layers, and a
wrong one for:

* biases and the gains/shifts of normalisation layers (LayerNorm, BatchNorm):
  decaying a LayerNorm gain towards 0 shrinks the whole layer's output;
* a learned logit scale ``s = ln(1 / tau)``: decay pulls it towards 0, that
  is, the temperature towards 1, whatever the data say;
* gates (for example a ``tanh(gate)`` that starts at 0 so that a new
  cross-attention block starts switched off, as in Flamingo): decay holds
  them shut.

:func:`param_groups` splits a model's trainable parameters into a decayed and
a non-decayed group, the rule of open_clip's and timm's training scripts:
every parameter with fewer than 2 dimensions, every parameter of a
normalisation layer, and every parameter whose name says it is a scale or a
gate gets no decay. :func:`clamp_logit_scales_` is the other half of CLIP's
temperature recipe: after each optimiser step, every module that owns a
logit scale clamps it in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["clamp_logit_scales_", "no_decay", "param_groups"]

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
NO_DECAY_NAMES = ("logit_scale", "logit_bias", "gate", "temperature")


def no_decay(name: str, parameter: nn.Parameter, module: nn.Module) -> bool:
    """True when ``parameter`` (called ``name`` in its ``module``) should get no weight decay."""
    if parameter.ndim < 2 or isinstance(module, NORM_LAYERS):
        return True
    leaf = name.rsplit(".", 1)[-1]
    return any(word in leaf for word in NO_DECAY_NAMES)


def param_groups(model: nn.Module | Sequence[nn.Module], weight_decay: float) -> list[dict]:
    """Two parameter groups for ``torch.optim.AdamW``: decayed weights, and the rest.

    ``AdamW(param_groups(model, 0.01), lr=1e-3)`` decays the weight matrices
    (``ndim >= 2``) of linear, convolutional and embedding layers by
    ``weight_decay`` and leaves biases, normalisation layers, logit scales and
    gates undecayed (see :func:`no_decay`). Frozen parameters
    (``requires_grad=False``) are left out; a parameter shared by two modules
    appears once. Groups that would be empty are dropped.

    ``model`` may also be a list of modules trained together, for example an
    encoder and a head, or a model and a loss that owns a learnable scale:
    ``param_groups([encoder, head], 0.01)``; their parameters are then named
    ``"0.<name>"``, ``"1.<name>"``, ... To train only part of a model, pass
    that part, or set ``requires_grad_(False)`` on the rest.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay},
        {"params": [...], "weight_decay": 0.0}]``, each with a ``"names"`` list
        too (the optimiser ignores it; it shows what went where).
    """
    if isinstance(model, Sequence) and not isinstance(model, str | nn.Module):
        if not model or not all(isinstance(part, nn.Module) for part in model):
            raise TypeError("model must be an nn.Module or a non-empty list of nn.Modules")
        model = nn.ModuleList(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, int | float)
        or not (0.0 <= weight_decay < math.inf)
    ):
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    decay: dict[str, list] = {"params": [], "names": []}
    keep: dict[str, list] = {"params": [], "names": []}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            group = keep if no_decay(name, parameter, module) else decay
            group["params"].append(parameter)
            group["names"].append(f"{module_name}.{name}" if module_name else name)
    groups = [{**decay, "weight_decay": float(weight_decay)}, {**keep, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


@torch.no_grad()
def clamp_logit_scales_(model: nn.Module) -> None:
    """Call ``clamp_logit_scale_()`` on every submodule that has one (after ``optimizer.step()``).

    :class:`mmlearn.nn.CLIPModel`, :class:`mmlearn.nn.LiTModel` and a learnable
    :class:`mmlearn.losses.ClipLoss` clamp their ``s = ln(1 / tau)`` into
    ``[0, ln 100]`` in place, as open_clip does after each step.
    """
    for module in model.modules():
        clamp = getattr(module, "clamp_logit_scale_", None)
        if callable(clamp):
            clamp()
