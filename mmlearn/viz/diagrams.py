"""Schematic diagrams of chapter 4's formulas, drawn with matplotlib at build time.

Each function draws one data flow of the book and returns the matplotlib
Figure: scaled dot-product attention ({eq}`eq-attention`), multi-head
attention ({eq}`eq-multihead`, {eq}`eq-head`), the Transformer encoder layer
({eq}`eq-encoder-layer` and its pre-LN variant), CLIP's similarity matrix with
the two cross-entropies of {eq}`eq-clip-loss`, and Hinton's distillation
objective ({eq}`eq-kd-hinton`). Boxes are operations, arrows carry tensors
and are labelled with their shapes. Labels are English with mathtext (Colab
has no CJK font); the Chinese explanation goes in the text around the figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

from mmlearn._checks import check_positive, check_positive_int, check_probability
from mmlearn.viz._arrays import to_numpy

__all__ = [
    "attention_diagram",
    "clip_matrix_diagram",
    "distillation_diagram",
    "encoder_layer_diagram",
    "multi_head_diagram",
]

FONT = 10  # points: box labels
SMALL = 9  # points: shapes on arrows, notes
COLOURS = {
    "input": "#dbe9f6",
    "op": "#fdf0d5",
    "norm": "#e4f3e0",
    "out": "#f3e1f0",
    "frozen": "#e6e6e6",
}


def _canvas(width: float, height: float, xlim: tuple, ylim: tuple) -> tuple[Figure, Axes]:
    """A figure with one frameless Axes whose data units are equal in x and y."""
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


Point = tuple[float, float]


def _box(
    ax: Axes,
    x: float,
    y: float,
    text: str,
    size: Point = (1.6, 0.8),
    kind: str = "op",
    dashed: bool = False,
) -> tuple[float, float, float, float]:
    """Draw a rounded box centred at (x, y); return its (left, right, bottom, top)."""
    width, height = size
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.1",
            facecolor=COLOURS[kind],
            edgecolor="black",
            linestyle="--" if dashed else "-",
            linewidth=1.0,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT)
    return x - width / 2, x + width / 2, y - height / 2, y + height / 2


def _arrow(
    ax: Axes, start: Point, end: Point, label: str | None = None, where: str = "above", **style
) -> None:
    """An arrow from ``start`` to ``end`` with an optional label beside its middle."""
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=12, linewidth=1.0, color="black", **style
        )
    )
    if label is not None:
        middle_x, middle_y = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        offsets = {"above": (0, 0.12, "bottom", "center"), "below": (0, -0.12, "top", "center")}
        offsets |= {"right": (0.1, 0, "center", "left"), "left": (-0.1, 0, "center", "right")}
        dx, dy, va, ha = offsets[where]
        ax.text(middle_x + dx, middle_y + dy, label, ha=ha, va=va, fontsize=SMALL)


def _adder(ax: Axes, x: float, y: float, radius: float = 0.22) -> None:
    """A circled plus: the residual addition."""
    ax.add_patch(Circle((x, y), radius, facecolor="white", edgecolor="black", linewidth=1.0))
    ax.text(x, y, "+", ha="center", va="center", fontsize=FONT + 2)


def attention_diagram(masked: bool = True) -> Figure:
    """Scaled dot-product attention, {eq}`eq-attention`, as a data flow with shapes.

    ``Q (L_q, d_k)`` and ``K (L_k, d_k)`` give the scores ``QK^T (L_q, L_k)``,
    scaled by ``1/sqrt(d_k)``, optionally masked (True = may attend), turned into
    row-wise softmax weights ``A (L_q, L_k)`` and multiplied with ``V (L_k, d_v)``.

    Args:
        masked: draw the (optional, dashed) masking step between scaling and softmax.

    Returns:
        The Figure.
    """
    if not isinstance(masked, bool):
        raise TypeError(f"masked must be a bool, got {type(masked).__name__}")
    steps = [
        (r"MatMul" "\n" r"$QK^\top$", "op", False),
        (r"Scale" "\n" r"$\times\,1/\sqrt{d_k}$", "op", False),
        *([("Mask\n(optional)", "op", True)] if masked else []),
        ("Softmax\n(each row)", "norm", False),
        (r"MatMul" "\n" r"$A\,V$", "op", False),
    ]
    gap = 2.9
    fig, ax = _canvas(12.0, 3.4, (-1.0, 2.6 + gap * len(steps)), (-1.35, 2.65))
    _box(ax, 0.0, 2.0, r"$Q$: $(L_q, d_k)$", (1.75, 0.7), "input")
    _box(ax, 0.0, 0.6, r"$K$: $(L_k, d_k)$", (1.75, 0.7), "input")
    _box(ax, 0.0, -0.9, r"$V$: $(L_k, d_v)$", (1.75, 0.7), "input")
    centres = [2.4 + gap * i for i in range(len(steps))]
    edges = [
        _box(ax, cx, 1.3, text, (1.65, 0.95), kind, dashed)
        for cx, (text, kind, dashed) in zip(centres, steps, strict=True)
    ]
    _arrow(ax, (0.875, 2.0), (edges[0][0], 1.55))
    _arrow(ax, (0.875, 0.6), (edges[0][0], 1.05))
    shapes = [r"$(L_q, L_k)$"] * (len(steps) - 2) + [r"$A$: $(L_q, L_k)$"]
    for (_, right, _, _), (left, _, _, _), shape in zip(edges[:-1], edges[1:], shapes, strict=True):
        _arrow(ax, (right, 1.3), (left, 1.3), shape, "above")
    if masked:
        ax.text(
            centres[2],
            edges[2][2] - 0.1,
            "score = huge negative\nwhere mask is False",
            ha="center",
            va="top",
            fontsize=SMALL,
        )
    last = edges[-1]
    ax.plot([0.875, centres[-1]], [-0.9, -0.9], color="black", linewidth=1.0)
    _arrow(ax, (centres[-1], -0.9), (centres[-1], last[2]), r"$V$: $(L_k, d_v)$", "right")
    _box(ax, last[1] + 1.25, 1.3, "output", (1.0, 0.7), "out")
    _arrow(ax, (last[1], 1.3), (last[1] + 0.75, 1.3))
    ax.text(last[1] + 1.25, 0.8, r"$(L_q, d_v)$", ha="center", va="top", fontsize=SMALL)
    ax.set_title(
        r"Scaled dot-product attention: $\mathrm{softmax}(QK^\top/\sqrt{d_k})\,V$",
        fontsize=FONT + 1,
    )
    return fig


def _head_rows(num_heads: int) -> list[str]:
    """Which heads get a row: all up to 3, else heads 1, 2 and h with a gap for the rest."""
    if num_heads <= 3:
        return [str(i) for i in range(1, num_heads + 1)]
    return ["1", "2", "h"]


def multi_head_diagram(num_heads: int = 3) -> Figure:
    """Multi-head attention, {eq}`eq-multihead` and {eq}`eq-head`, with shapes.

    The input ``(L, d_model)`` goes to ``h`` parallel heads; head ``i`` projects it
    with ``W_i^Q, W_i^K, W_i^V`` and applies {eq}`eq-attention`; the ``h`` outputs
    ``(L, d_v)`` are concatenated to ``(L, h d_v)`` and projected back by ``W^O``.

    Args:
        num_heads: ``h``; at most three rows are drawn (heads 1, 2 and h beyond that).

    Returns:
        The Figure.
    """
    check_positive_int("num_heads", num_heads)
    rows = _head_rows(num_heads)
    spacing = 1.45
    ys = [spacing * (len(rows) - 1 - r) for r in range(len(rows))]
    top, bottom = ys[0] + 0.55, ys[-1] - 0.55
    fig, ax = _canvas(12.0, 1.3 + 1.05 * len(rows), (-1.0, 15.4), (bottom - 0.2, top + 0.3))
    middle = (top + bottom) / 2
    _box(ax, 0.0, middle, "input\n" r"$Q=K=V=X$" "\n" r"$(L, d_{model})$", (1.8, 1.3), "input")
    concat = _box(ax, 10.0, middle, "Concat", (1.2, top - bottom), "op")
    for name, y in zip(rows, ys, strict=True):
        projection = _box(ax, 3.3, y, rf"$W_{name}^Q,\ W_{name}^K,\ W_{name}^V$", (2.2, 0.75))
        head = _box(ax, 7.0, y, f"Attention\n(head {name})", (1.6, 0.75), "norm")
        _arrow(ax, (0.9, middle), (projection[0], y))
        qkv = rf"$Q_{name}, K_{name}$: $(L, d_k)$" "\n" rf"$V_{name}$: $(L, d_v)$"
        _arrow(ax, (projection[1], y), (head[0], y), qkv, "above")
        _arrow(ax, (head[1], y), (concat[0], y), rf"$\mathrm{{head}}_{name}$: $(L, d_v)$")
    if num_heads > 3:
        ax.text(
            3.3,
            (ys[1] + ys[2]) / 2,
            rf"$\vdots$  ({num_heads - 3} more heads)",
            ha="center",
            va="center",
            fontsize=SMALL,
        )
    out = _box(ax, 12.4, middle, r"$W^O$", (1.0, 0.75), "op")
    _arrow(ax, (concat[1], middle), (out[0], middle), r"$(L, h\,d_v)$", "above")
    _box(ax, 14.6, middle, "output", (1.1, 0.7), "out")
    _arrow(ax, (out[1], middle), (14.05, middle))
    ax.text(14.6, middle - 0.5, r"$(L, d_{model})$", ha="center", va="top", fontsize=SMALL)
    ax.set_title(
        rf"Multi-head attention, $h = {num_heads}$: "
        r"$\mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\,W^O$",
        fontsize=FONT + 1,
    )
    return fig


def _layer_steps(norm_first: bool) -> list[tuple[str, str]]:
    """The steps of one encoder layer in order: boxes, ``"branch"`` points where a residual
    path leaves the stream, and ``"add"`` circles where it comes back."""
    attention, ffn = ("Multi-head\nattention", "op"), ("FFN", "op")
    norm, add = ("LayerNorm", "norm"), ("+", "add")
    if norm_first:
        return [("X", "branch"), norm, attention, add, ("X'", "branch"), norm, ffn, add]
    return [("X", "branch"), attention, add, norm, ("X'", "branch"), ffn, add, norm]


def _draw_layer(ax: Axes, y: float, norm_first: bool) -> None:
    """One encoder layer left to right at height ``y``, with its two residual paths."""
    x, branches, top = 0.5, [], y + 0.8
    _box(ax, -0.4, y, r"$X$" "\n" r"$(B, L, d_{model})$", (1.8, 0.85), "input")
    for text, kind in _layer_steps(norm_first):
        if kind == "branch":
            ax.plot([x, x + 0.45], [y, y], color="black", linewidth=1.0)
            x += 0.45
            ax.plot([x], [y], marker="o", markersize=4, color="black")
            branches.append((x, text))
            continue
        width = 0.44 if kind == "add" else 1.75
        centre = x + 0.4 + width / 2
        _arrow(ax, (x, y), (centre - width / 2, y))
        if kind == "add":
            _adder(ax, centre, y)
            start, name = branches.pop()
            ax.plot(
                [start, start, centre], [y, top, top], color="black", linewidth=1.0, gid="residual"
            )
            _arrow(ax, (centre, top), (centre, y + 0.22))
            ax.text(
                (start + centre) / 2,
                top + 0.06,
                f"residual: ${name}$",
                ha="center",
                va="bottom",
                fontsize=SMALL,
            )
        else:
            _box(ax, centre, y, text, (width, 0.85), kind)
        x = centre + width / 2
    _arrow(ax, (x, y), (x + 0.4, y))
    _box(ax, x + 1.3, y, r"$Y$" "\n" r"$(B, L, d_{model})$", (1.8, 0.85), "out")


def encoder_layer_diagram(norm_first: Sequence[bool] = (True, False)) -> Figure:
    """A Transformer encoder layer with its residual paths, one row per variant.

    * pre-LN (``norm_first=True``, what ``mmlearn.nn.TransformerEncoderLayer`` does
      with ``norm_first=True``; GPT-2, ViT, CLIP): ``X' = X + MultiHead(LN(X))``,
      ``Y = X' + FFN(LN(X'))``;
    * post-LN (``norm_first=False``, {eq}`eq-encoder-layer`, the original
      Transformer): ``X' = LN(X + MultiHead(X))``, ``Y = LN(X' + FFN(X'))``.

    Args:
        norm_first: the variants to draw, top row first.

    Returns:
        The Figure; its Axes ``fig.axes[i]`` holds variant ``norm_first[i]``.
    """
    if isinstance(norm_first, bool) or not isinstance(norm_first, Sequence) or not norm_first:
        raise ValueError(f"norm_first must be a non-empty sequence of bools, got {norm_first!r}")
    if not all(isinstance(value, bool) for value in norm_first):
        raise TypeError(f"norm_first must hold bools only, got {list(norm_first)!r}")
    fig, axes = plt.subplots(
        len(norm_first),
        1,
        figsize=(12.0, 1.9 * len(norm_first)),
        layout="constrained",
        squeeze=False,
    )
    for ax, first in zip(axes[:, 0], norm_first, strict=True):
        ax.set_xlim(-1.4, 14.0)
        ax.set_ylim(-0.55, 1.3)
        ax.set_aspect("equal")
        ax.axis("off")
        _draw_layer(ax, 0.0, first)
        title = (
            "pre-LN (norm_first=True: GPT-2, ViT, CLIP)"
            if first
            else "post-LN (norm_first=False: the original Transformer)"
        )
        ax.set_title(title, fontsize=FONT + 1, loc="left")
    return fig


def _cross_entropies(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of each row and each column of ``logits`` with the diagonal as target."""

    def log_sum_exp(values: np.ndarray, axis: int) -> np.ndarray:
        top = values.max(axis=axis, keepdims=True)
        return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)

    diagonal = np.diag(logits)
    return log_sum_exp(logits, 1) - diagonal, log_sum_exp(logits, 0) - diagonal


def clip_matrix_diagram(similarity: torch.Tensor | np.ndarray, logit_scale: float = 1.0) -> Figure:
    """CLIP's ``N x N`` image-text matrix and the two cross-entropies of {eq}`eq-clip-loss`.

    Row ``i`` (image ``i``) is a softmax over the ``N`` texts, column ``j`` (text
    ``j``) a softmax over the ``N`` images; the diagonal cells (outlined) are the
    positive pairs. The cross-entropy of every row (image -> text) is written on
    the right, that of every column (text -> image) below; the loss is the mean
    of the two directions' means.

    Args:
        similarity: ``(N, N)`` cosine similarities ``u_i^T v_j`` of L2-normalised features.
        logit_scale: ``s = 1/tau``; the logits are ``s * similarity``.

    Returns:
        The Figure; the outlined diagonal cells are Rectangles with gid ``"positive"``.
    """
    matrix = to_numpy("similarity", similarity)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(
            f"similarity must be a non-empty square (N, N) matrix, got shape {matrix.shape}"
        )
    check_positive("logit_scale", logit_scale)
    n = matrix.shape[0]
    rows, cols = _cross_entropies(logit_scale * matrix)
    size = min(10.0, 4.5 + 0.55 * n)
    fig, ax = plt.subplots(figsize=(max(8.0, size + 3.0), size), layout="constrained")
    image = ax.imshow(matrix, cmap="Blues", vmin=-1.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label=r"cosine similarity $u_i^\top v_j$", shrink=0.8)
    for (i, j), value in np.ndenumerate(matrix):
        if n <= 12:
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=SMALL,
                color="white" if value > 0.5 else "black",
            )
    for i in range(n):
        ax.add_patch(
            Rectangle(
                (i - 0.5, i - 0.5),
                1,
                1,
                fill=False,
                edgecolor="#d62728",
                linewidth=2.5,
                gid="positive",
            )
        )
    _clip_margins(ax, n, rows, cols)
    ax.xaxis.tick_top()
    ax.set_xticks(range(n), [f"text {j + 1}" for j in range(n)], rotation=45, ha="left")
    ax.set_yticks(range(n), [f"image {i + 1}" for i in range(n)])
    loss = (rows.mean() + cols.mean()) / 2
    fig.suptitle(
        rf"$L_{{CLIP}}$ = (mean row CE {rows.mean():.3f} + mean column CE "
        rf"{cols.mean():.3f}) / 2 = {loss:.3f}   ($s$ = {logit_scale:.3g})",
        fontsize=FONT,
    )
    return fig


def _clip_margins(ax: Axes, n: int, rows: np.ndarray, cols: np.ndarray) -> None:
    """Write each row's and each column's cross-entropy beside the matrix, with arrows."""
    red, blue, edge = "#d62728", "#1f77b4", n - 0.5
    arrow = dict(arrowstyle="-|>", linewidth=1.2, mutation_scale=10)
    for i, value in enumerate(rows):
        ax.add_patch(FancyArrowPatch((edge + 0.05, i), (edge + 0.45, i), color=red, **arrow))
        ax.text(edge + 0.5, i, f"{value:.2f}", ha="left", va="center", fontsize=SMALL, color=red)
    for j, value in enumerate(cols):
        ax.add_patch(FancyArrowPatch((j, edge + 0.05), (j, edge + 0.4), color=blue, **arrow))
        ax.text(j, edge + 0.45, f"{value:.2f}", ha="center", va="top", fontsize=SMALL, color=blue)
    ax.text(
        edge + 0.5,
        -0.6,
        "image → text\nCE of each row",
        ha="left",
        va="bottom",
        fontsize=SMALL,
        color=red,
    )
    ax.text(
        -0.6,
        edge + 0.55,
        "text → image\nCE of each column",
        ha="right",
        va="top",
        fontsize=SMALL,
        color=blue,
    )
    ax.set_xlim(-0.5, edge + 1.3)
    ax.set_ylim(edge + 0.95, -0.5)
    for spine in ax.spines.values():
        spine.set_visible(False)


def distillation_diagram(temperature: float | None = None, alpha: float | None = None) -> Figure:
    """Hinton's distillation objective, {eq}`eq-kd-hinton`, as a data flow.

    The frozen teacher's logits ``v`` and the student's logits ``z`` (both
    ``(N, C)``) are divided by ``T`` and softmaxed; ``KL(softmax(v/T) ||
    softmax(z/T))`` is weighted by ``alpha * T^2``; the student's unsoftened
    logits meet the hard labels in a cross-entropy weighted by ``1 - alpha``.

    Args:
        temperature: ``T > 0`` to write on the figure (default: the symbol ``T``).
        alpha: ``alpha`` in ``[0, 1]`` to write on the figure (default: the symbol).

    Returns:
        The Figure.
    """
    if temperature is not None:
        check_positive("temperature", temperature)
    if alpha is not None:
        check_probability("alpha", alpha)
    t = "T" if temperature is None else f"{temperature:g}"
    a = r"\alpha" if alpha is None else f"{alpha:g}"
    one_minus = r"(1-\alpha)" if alpha is None else f"{1 - alpha:g}"
    soft_weight = rf"{a}\,{t}^2" if alpha is None or temperature is None else rf"{a}\cdot{t}^2"
    fig, ax = _canvas(12.5, 4.4, (-0.9, 16.1), (-2.2, 3.0))
    _box(ax, 0.0, 1.25, "input $x$\n(batch of N)", (1.5, 0.9), "input")
    teacher = _box(ax, 2.6, 2.3, "Teacher\n(frozen, no grad)", (2.0, 0.85), "frozen", True)
    student = _box(ax, 2.6, 0.2, "Student\n(trained)", (2.0, 0.85), "op")
    _arrow(ax, (0.75, 1.45), (teacher[0], 2.3))
    _arrow(ax, (0.75, 1.05), (student[0], 0.2))
    soft = {}
    for name, y, model, symbol, out in (
        ("teacher", 2.3, teacher, "v", "q"),
        ("student", 0.2, student, "z", "p"),
    ):
        scale = _box(ax, 5.6, y, rf"$\div\,{t}$", (0.9, 0.7))
        _arrow(ax, (model[1], y), (scale[0], y), rf"logits ${symbol}$: $(N, C)$")
        softmax = _box(ax, 7.8, y, "softmax\n" rf"${out}=\sigma({symbol}/{t})$", (1.7, 0.8), "norm")
        _arrow(ax, (scale[1], y), (softmax[0], y), r"$(N, C)$")
        soft[name] = softmax
    ax.text(
        7.8, soft["teacher"][3] + 0.08, "soft targets", ha="center", va="bottom", fontsize=SMALL
    )
    kl = _box(ax, 10.6, 1.25, r"$\mathrm{KL}(q\,\|\,p)$" "\n(batch mean)", (1.8, 0.9), "op")
    _arrow(ax, (soft["teacher"][1], 2.3), (kl[0], 1.5))
    _arrow(ax, (soft["student"][1], 0.2), (kl[0], 1.0))
    _box(ax, 0.0, -1.6, "labels $y$\n$(N,)$", (1.5, 0.8), "input")
    ce = _box(ax, 10.6, -1.6, "cross-entropy\n" r"$\mathcal{H}(y, \sigma(z))$", (1.8, 0.9))
    ax.plot([student[1] + 0.3, student[1] + 0.3], [0.2, -1.35], color="black", linewidth=1.0)
    _arrow(ax, (student[1] + 0.3, -1.35), (ce[0], -1.35), r"logits $z$ ($T=1$)", "above")
    _arrow(ax, (0.75, -1.75), (ce[0], -1.75))
    weights = []
    for source, y, text in (
        (kl, 1.25, rf"$\times\,{soft_weight}$"),
        (ce, -1.6, rf"$\times\,{one_minus}$"),
    ):
        weight = _box(ax, 12.75, y, text, (1.3, 0.6))
        _arrow(ax, (source[1], y), (weight[0], y))
        weights.append(weight)
    _adder(ax, 14.2, -0.18, radius=0.3)
    _arrow(ax, (12.75, weights[0][2]), (14.0, 0.0))
    _arrow(ax, (12.75, weights[1][3]), (14.0, -0.38))
    _box(ax, 15.55, -0.18, "loss\n" r"$\mathcal{L}$", (0.9, 0.8), "out")
    _arrow(ax, (14.5, -0.18), (15.1, -0.18))
    ax.set_title(
        rf"Knowledge distillation: $\mathcal{{L}} = {soft_weight}\,"
        rf"\mathrm{{KL}}(\sigma(v/{t})\,\|\,\sigma(z/{t})) + {one_minus}\,"
        r"\mathcal{H}(y, \sigma(z))$",
        fontsize=FONT + 1,
    )
    return fig
