"""Attention heatmaps: one map, or a grid of layers x heads (book section 4.1).

Rows are queries (who looks), columns are keys (who is looked at); a row sums to 1.
Inputs may be torch tensors on any device (they are detached and copied to the
CPU) or NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mmlearn.viz._arrays import check_labels, to_numpy

__all__ = ["plot_attention", "plot_attention_grid"]


def _label_axes(
    ax: Axes, row_labels: Sequence[str] | None, col_labels: Sequence[str] | None
) -> None:
    """Put token labels on the axes: keys along the bottom (rotated), queries on the left."""
    if col_labels is not None:
        ax.set_xticks(
            range(len(col_labels)), [str(t) for t in col_labels], rotation=90, fontsize="small"
        )
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), [str(t) for t in row_labels], fontsize="small")


def plot_attention(
    weights: torch.Tensor | np.ndarray,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Draw one attention map ``(Lq, Lk)`` as a heatmap with a colour bar.

    Args:
        weights: ``(Lq, Lk)`` attention weights.
        row_labels: ``Lq`` query tokens (left axis); col_labels: ``Lk`` key tokens (bottom).
        ax: draw into this Axes (default: a new figure).
        title: the plot's title (English: Colab has no CJK font).

    Returns:
        The Axes.
    """
    matrix = to_numpy("weights", weights)
    if matrix.ndim != 2:
        raise ValueError(f"weights must be a 2-D (Lq, Lk) map, got shape {matrix.shape}")
    check_labels("row_labels", row_labels, matrix.shape[0])
    check_labels("col_labels", col_labels, matrix.shape[1])
    if ax is None:
        size = min(8.0, 2.5 + 0.25 * max(matrix.shape))
        _, ax = plt.subplots(figsize=(size + 1.0, size), layout="constrained")
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="attention weight")
    _label_axes(ax, row_labels, col_labels)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title is not None:
        ax.set_title(title)
    return ax


def _stack_layers(attentions) -> np.ndarray:
    """Turn the accepted formats into one array ``(layers, heads, L, L)``."""
    if isinstance(attentions, torch.Tensor | np.ndarray):
        stacked = to_numpy("attentions", attentions)
    elif isinstance(attentions, Sequence) and len(attentions) > 0:
        per_layer = [to_numpy(f"attentions[{i}]", a) for i, a in enumerate(attentions)]
        per_layer = [a[0] if a.ndim == 4 and a.shape[0] == 1 else a for a in per_layer]
        if any(a.shape != per_layer[0].shape or a.ndim != 3 for a in per_layer):
            shapes = [a.shape for a in per_layer]
            raise ValueError(
                "attentions must hold one (h, L, L) or (1, h, L, L) map per layer, "
                f"all the same shape; got {shapes}"
            )
        stacked = np.stack(per_layer)
    else:
        raise TypeError(
            "attentions must be a non-empty list of per-layer tensors or a "
            f"(layers, h, L, L) tensor, got {type(attentions).__name__}"
        )
    if stacked.ndim != 4:
        raise ValueError(f"attentions must be (layers, h, L, L), got shape {stacked.shape}")
    return stacked


def _pick(name: str, chosen: Sequence[int] | None, available: int) -> list[int]:
    """Return the chosen indices (default: all), checking each one exists."""
    indices = list(range(available)) if chosen is None else list(chosen)
    if not indices or any(not 0 <= i < available for i in indices):
        raise ValueError(f"{name} must be indices in [0, {available}), got {chosen!r}")
    return indices


def plot_attention_grid(
    attentions,
    tokens: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> Figure:
    """Draw a grid of attention maps: one row per layer, one column per head.

    Args:
        attentions: a list with one ``(h, L, L)`` or ``(1, h, L, L)`` tensor per layer
            (what ``transformers`` returns with ``output_attentions=True`` for one
            sentence, and ``mmlearn.nn.TransformerEncoder`` for a batch of one),
            or a ``(layers, h, L, L)`` tensor.
        tokens: the ``L`` tokens, shown on the outer axes.
        layers, heads: which layers and heads to show (default: all).

    Returns:
        The Figure; all maps share one colour scale and one colour bar.
    """
    stacked = _stack_layers(attentions)
    layer_ids = _pick("layers", layers, stacked.shape[0])
    head_ids = _pick("heads", heads, stacked.shape[1])
    check_labels("tokens", tokens, stacked.shape[-1])
    size = 1.6 if tokens is None else min(3.5, 1.6 + 0.08 * len(tokens))
    margin = 0.0 if tokens is None else 0.08 * max(len(str(t)) for t in tokens)  # label room
    fig, axes = plt.subplots(
        len(layer_ids),
        len(head_ids),
        squeeze=False,
        layout="constrained",
        figsize=(size * len(head_ids) + 1.2 + margin, size * len(layer_ids) + margin),
    )
    vmax = float(stacked[np.ix_(layer_ids, head_ids)].max())
    for row, layer in enumerate(layer_ids):
        for col, head in enumerate(head_ids):
            ax = axes[row, col]
            image = ax.imshow(
                stacked[layer, head],
                cmap="viridis",
                vmin=0.0,
                vmax=vmax,
                aspect="auto",
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            _label_axes(
                ax, tokens if col == 0 else None, tokens if row == len(layer_ids) - 1 else None
            )
            if row == 0:
                ax.set_title(f"head {head}", fontsize="small")
            if col == 0:
                ax.set_ylabel(f"layer {layer}", fontsize="small")
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    return fig
