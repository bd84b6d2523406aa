"""The schematic diagrams of chapter 4 (mmlearn.viz.diagrams): labels, order, geometry, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.text import Text

from mmlearn.functional import clip_loss
from mmlearn.viz import (
    attention_diagram,
    clip_matrix_diagram,
    distillation_diagram,
    encoder_layer_diagram,
    multi_head_diagram,
)


def texts(fig: Figure) -> list[Text]:
    """Every non-empty text drawn: box labels, titles, tick labels of visible axes."""
    found = [*fig.texts, fig._suptitle] if fig._suptitle not in fig.texts else list(fig.texts)
    for ax in fig.axes:
        found += [*ax.texts, ax.title, ax._left_title, ax._right_title]
        if ax.axison:
            found += [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label, ax.yaxis.label]
    return [t for t in found if t is not None and t.get_visible() and t.get_text().strip()]


def joined(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in texts(fig))


def x_of(ax, label: str) -> list[float]:
    """The x coordinates of the texts of ``ax`` that equal ``label``, left to right."""
    return sorted(t.get_position()[0] for t in ax.texts if t.get_text() == label)


def boxes_overlap(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of texts whose rendered bounding boxes intersect."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    extents = [(t.get_text(), t.get_window_extent(renderer)) for t in texts(fig)]
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(extents, 2)
        if box_a.overlaps(box_b)
    ]


def similarity_matrix(n: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities of n paired unit features, and the features themselves."""
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(n, 8, generator=generator, dtype=torch.float64), dim=-1)
    texts_ = F.normalize(
        images + 0.3 * torch.randn(n, 8, generator=generator, dtype=torch.float64), dim=-1
    )
    return images @ texts_.T, images, texts_


ALL = {
    "attention": lambda: attention_diagram(),
    "attention, no mask": lambda: attention_diagram(masked=False),
    "multi-head": lambda: multi_head_diagram(),
    "multi-head, h = 8": lambda: multi_head_diagram(8),
    "encoder layer": lambda: encoder_layer_diagram(),
    "clip": lambda: clip_matrix_diagram(similarity_matrix()[0], 10.0),
    "distillation": lambda: distillation_diagram(),
    "distillation, numbers": lambda: distillation_diagram(4.0, 0.25),
}


@pytest.mark.parametrize("name", list(ALL))
def test_readable(name):
    fig = ALL[name]()
    assert isinstance(fig, Figure)
    assert fig.get_size_inches()[0] >= 8.0
    small = [(t.get_text(), t.get_fontsize()) for t in texts(fig) if t.get_fontsize() < 9]
    assert small == []
    assert boxes_overlap(fig) == []


def test_overlap_check_can_fail():
    fig = attention_diagram()
    ax = fig.axes[0]
    ax.text(2.4, 1.3, "a label drawn over the MatMul box text", fontsize=10)
    assert boxes_overlap(fig) != []


def test_attention_steps_in_order():
    fig = attention_diagram()
    ax = fig.axes[0]
    order = ["MatMul\n$QK^\\top$", "Scale\n$\\times\\,1/\\sqrt{d_k}$", "Mask\n(optional)"]
    order += ["Softmax\n(each row)", "MatMul\n$A\\,V$"]
    xs = [x_of(ax, label) for label in order]
    assert all(len(x) == 1 for x in xs), xs
    assert [x[0] for x in xs] == sorted(x[0] for x in xs)
    text = joined(fig)
    for shape in ("$(L_q, d_k)$", "$(L_k, d_k)$", "$(L_k, d_v)$", "$(L_q, L_k)$", "$(L_q, d_v)$"):
        assert shape in text
    assert "Mask" not in joined(attention_diagram(masked=False))


def test_attention_bad_argument():
    with pytest.raises(TypeError, match="masked"):
        attention_diagram(masked="yes")


@pytest.mark.parametrize("num_heads, rows", [(1, 1), (3, 3), (8, 3)])
def test_multi_head_rows(num_heads, rows):
    fig = multi_head_diagram(num_heads)
    text = joined(fig)
    assert text.count("Attention\n(head") == rows
    assert "$W^O$" in text and "Concat" in text and "$(L, h\\,d_v)$" in text
    assert f"$h = {num_heads}$" in text
    assert ("5 more heads" in text) == (num_heads == 8)
    assert ("$W_h^Q" in text) == (num_heads == 8)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_multi_head_bad_argument(bad):
    with pytest.raises(ValueError, match="num_heads"):
        multi_head_diagram(bad)


def residuals(ax) -> list[tuple[float, float]]:
    """(start x, end x) of every residual path drawn in ``ax``."""
    lines = [line for line in ax.lines if line.get_gid() == "residual"]
    return [(line.get_xdata()[0], line.get_xdata()[-1]) for line in lines]


def test_encoder_layer_pre_ln_matches_mmlearn():
    fig = encoder_layer_diagram((True,))
    ax = fig.axes[0]
    norms, adds = x_of(ax, "LayerNorm"), x_of(ax, "+")
    (attention,), (ffn,) = x_of(ax, "Multi-head\nattention"), x_of(ax, "FFN")
    assert len(norms) == 2 and len(adds) == 2
    # x = x + Attn(LN(x)); x = x + FFN(LN(x)) (mmlearn.nn.TransformerEncoderLayer, norm_first)
    assert norms[0] < attention < adds[0] < norms[1] < ffn < adds[1]
    (first_start, first_end), (second_start, second_end) = sorted(residuals(ax))
    assert first_start < norms[0] and first_end == pytest.approx(adds[0])
    assert adds[0] < second_start < norms[1] and second_end == pytest.approx(adds[1])


def test_encoder_layer_post_ln():
    fig = encoder_layer_diagram((False,))
    ax = fig.axes[0]
    norms, adds = x_of(ax, "LayerNorm"), x_of(ax, "+")
    (attention,), (ffn,) = x_of(ax, "Multi-head\nattention"), x_of(ax, "FFN")
    # X' = LN(X + MultiHead(X)); Y = LN(X' + FFN(X')): the second residual leaves after the LN
    assert attention < adds[0] < norms[0] < ffn < adds[1] < norms[1]
    (first_start, first_end), (second_start, second_end) = sorted(residuals(ax))
    assert first_start < attention and first_end == pytest.approx(adds[0])
    assert norms[0] < second_start < ffn and second_end == pytest.approx(adds[1])


def test_encoder_layer_default_draws_both():
    fig = encoder_layer_diagram()
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0].startswith("pre-LN") and titles[1].startswith("post-LN")
    assert joined(fig).count("LayerNorm") == 4


@pytest.mark.parametrize("bad, error", [((), ValueError), (True, ValueError), ([1], TypeError)])
def test_encoder_layer_bad_argument(bad, error):
    with pytest.raises(error, match="norm_first"):
        encoder_layer_diagram(bad)


@pytest.mark.parametrize("n", [1, 4, 15])
def test_clip_highlights_exactly_the_diagonal(n):
    fig = clip_matrix_diagram(similarity_matrix(n)[0], 5.0)
    ax = fig.axes[0]
    cells = {
        (patch.get_x() + 0.5, patch.get_y() + 0.5)
        for patch in ax.patches
        if patch.get_gid() == "positive"
    }
    assert cells == {(float(i), float(i)) for i in range(n)}
    assert sum(patch.get_gid() == "positive" for patch in ax.patches) == n


def test_clip_cross_entropies_match_clip_loss():
    similarity, images, texts_ = similarity_matrix(5)
    scale = 10.0
    fig = clip_matrix_diagram(similarity, scale)
    ax = fig.axes[0]
    logits = scale * similarity
    labels = torch.arange(5)
    rows = F.cross_entropy(logits, labels, reduction="none")
    cols = F.cross_entropy(logits.T, labels, reduction="none")
    red = [t for t in ax.texts if t.get_color() == "#d62728" and "\n" not in t.get_text()]
    blue = [t for t in ax.texts if t.get_color() == "#1f77b4" and "\n" not in t.get_text()]
    shown_rows = [float(t.get_text()) for t in sorted(red, key=lambda t: t.get_position()[1])]
    shown_cols = [float(t.get_text()) for t in sorted(blue, key=lambda t: t.get_position()[0])]
    assert shown_rows == pytest.approx(rows.tolist(), abs=0.006)
    assert shown_cols == pytest.approx(cols.tolist(), abs=0.006)
    expected = clip_loss(images, texts_, scale).item()
    assert f"/ 2 = {expected:.3f}" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "similarity, scale, message",
    [
        (torch.zeros(0, 0), 1.0, "similarity"),
        (torch.zeros(3, 4), 1.0, "similarity"),
        (torch.zeros(3), 1.0, "similarity"),
        (torch.eye(3), 0.0, "logit_scale"),
        (torch.eye(3), float("inf"), "logit_scale"),
    ],
)
def test_clip_bad_arguments(similarity, scale, message):
    with pytest.raises(ValueError, match=message):
        clip_matrix_diagram(similarity, scale)


def test_clip_rejects_a_list():
    with pytest.raises(TypeError, match="similarity"):
        clip_matrix_diagram([[1.0]], 1.0)


def test_distillation_labels():
    text = joined(distillation_diagram())
    for label in ("frozen", "KL", "cross-entropy", "soft targets", "$\\times\\,\\alpha\\,T^2$"):
        assert label in text
    assert "$\\times\\,(1-\\alpha)$" in text
    assert text.count("softmax") == 2
    numbers = joined(distillation_diagram(4.0, 0.25))
    assert "$\\times\\,0.25\\cdot4^2$" in numbers and "$\\times\\,0.75$" in numbers
    assert "\\alpha" not in numbers


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
    ],
)
def test_distillation_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distillation_diagram(**kwargs)
