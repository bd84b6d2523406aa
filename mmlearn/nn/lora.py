"""LoRA (Hu et al. 2022): a frozen linear layer plus a trainable low-rank update.

``LoRALinear(base, r, alpha)`` computes ``base(x) + (alpha / r) * x A^T B^T``
(row vectors, as ``nn.Linear`` stores ``weight`` as ``(out, in)``): ``A`` is
``(r, in)``, small random; ``B`` is ``(out, r)``, zero at the start, so a new
adapter leaves the model's outputs unchanged. Only ``A`` and ``B`` train; the
base weight and bias are frozen. :meth:`LoRALinear.merge` folds the update into
the weight, ``W <- W + (alpha / r) B A``, so inference costs nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmlearn._checks import check_positive, check_tensor

__all__ = ["LoRALinear", "add_lora", "merge_lora"]


class LoRALinear(nn.Module):
    """Wrap ``base`` (an ``nn.Linear``) with a rank-``r`` update scaled by ``alpha / r``."""

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be a positive integer, got {r!r}")
        check_positive("alpha", alpha)
        self.base = base.requires_grad_(False)
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear, and the paper
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``W + (alpha / r) B A`` (``W`` alone once merged)."""
        if self.merged:
            return self.base.weight
        return self.base.weight + self.scaling * self.lora_b @ self.lora_a

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        output = self.base(x)
        if self.merged:
            return output
        return output + self.scaling * (x @ self.lora_a.T) @ self.lora_b.T

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Fold the update into the base weight (once); later calls use the base alone."""
        if not self.merged:
            self.base.weight += self.scaling * self.lora_b @ self.lora_a
            self.merged = True
        return self.base


def add_lora(
    model: nn.Module, target_names: Sequence[str], r: int = 4, alpha: float = 8.0
) -> list[str]:
    """Replace every ``nn.Linear`` whose attribute name is in ``target_names`` by a LoRALinear.

    For example ``add_lora(lm, ["q_proj", "v_proj"])`` adapts the query and value
    projections of every attention layer (the paper's default). The rest of the model
    is *not* frozen here: freeze it first (``model.requires_grad_(False)``).

    Returns:
        The dotted names of the wrapped layers (an error if there were none).
    """
    if isinstance(target_names, str) or not target_names:
        raise ValueError(f"target_names must be a non-empty list of names, got {target_names!r}")
    wrapped = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in target_names and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, r=r, alpha=alpha))
                wrapped.append(f"{parent_name}.{name}" if parent_name else name)
    if not wrapped:
        raise ValueError(f"target_names: no nn.Linear named {list(target_names)} in the model")
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRALinear of ``model`` into its base weight; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        layer.merge()
    return len(layers)
