"""Pictures of an embedding space: similarity matrices and 2-D maps of features.

A trained CLIP puts each image next to its caption: the image-text similarity
matrix of a batch lights up on its diagonal (:func:`plot_similarity_matrix`),
and a 2-D projection of the features shows one cluster per class
(:func:`plot_embeddings_2d`). Inputs may be torch tensors on any device or
NumPy arrays; labels on the plots are English (Colab has no CJK font).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

from mmlearn.viz._arrays import check_labels, to_numpy

__all__ = ["plot_embeddings_2d", "plot_similarity_matrix", "project_2d"]

METHODS = ("pca", "tsne")
_ANNOTATE_MAX = 12  # write the numbers into the cells of matrices up to this size


def plot_similarity_matrix(
    sim: torch.Tensor | np.ndarray,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "text",
    ylabel: str = "image",
) -> Axes:
    """Draw a similarity matrix (e.g. images x texts) as a heatmap; small ones get numbers.

    Args:
        sim: ``(N_rows, N_cols)`` similarities, e.g. ``image_features @ text_features.T``.
        row_labels, col_labels: one label per row / column (English).
        ax: draw into this Axes (default: a new figure).
        title, xlabel, ylabel: texts of the plot.

    Returns:
        The Axes.
    """
    matrix = to_numpy("sim", sim)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"sim must be a non-empty 2-D matrix, got shape {matrix.shape}")
    check_labels("row_labels", row_labels, matrix.shape[0])
    check_labels("col_labels", col_labels, matrix.shape[1])
    if ax is None:
        size = min(9.0, 3.0 + 0.35 * max(matrix.shape))
        _, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    image = ax.imshow(matrix, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="similarity")
    if max(matrix.shape) <= _ANNOTATE_MAX:
        middle = (matrix.max() + matrix.min()) / 2
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(
                col,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize="x-small",
                color="black" if value > middle else "white",
            )
    if col_labels is not None:
        ax.set_xticks(
            range(len(col_labels)), [str(t) for t in col_labels], rotation=90, fontsize="small"
        )
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), [str(t) for t in row_labels], fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax


def project_2d(
    features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0
) -> np.ndarray:
    """Project ``(N, D)`` features to ``(N, 2)`` with PCA or t-SNE (scikit-learn, seeded)."""
    from sklearn.decomposition import PCA  # imported here: sklearn is slow to load
    from sklearn.manifold import TSNE

    points = to_numpy("features", features)
    if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] < 2:
        raise ValueError(
            f"features must be (N, D) with N >= 3 and D >= 2, got shape {points.shape}"
        )
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(points)
    if method == "tsne":
        perplexity = min(30.0, (points.shape[0] - 1) / 3)
        return TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(points)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def plot_embeddings_2d(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    method: str = "pca",
    ax: Axes | None = None,
    label_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes:
    """Scatter ``(N, D)`` features in 2-D (PCA or t-SNE), one colour per label.

    Args:
        features: ``(N, D)`` features (for example image embeddings).
        labels: ``(N,)`` integer class of each point.
        method: ``"pca"`` (linear, fast, distances meaningful) or ``"tsne"``
            (non-linear, shows clusters, distances between clusters are not meaningful).
        ax: draw into this Axes (default: a new figure).
        label_names: legend text of each class (default: the integer).
        title: the plot's title (default: the method).

    Returns:
        The Axes.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    classes = np.asarray(to_numpy("labels", torch.as_tensor(labels))).astype(np.int64)
    points = project_2d(features, method)
    if classes.shape != (points.shape[0],):
        raise ValueError(f"labels must have shape ({points.shape[0]},), got {classes.shape}")
    if (
        label_names is not None
        and classes.size
        and not 0 <= classes.min() <= classes.max() < len(label_names)
    ):
        raise ValueError(
            f"label_names has {len(label_names)} names, too few for labels in "
            f"[{classes.min()}, {classes.max()}]"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 5.0), layout="constrained")
    colours = plt.get_cmap("tab10")
    for index, value in enumerate(np.unique(classes)):
        chosen = classes == value
        name = str(value) if label_names is None else str(label_names[value])
        ax.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=12,
            alpha=0.8,
            color=colours(index % 10),
            label=name,
        )
    ax.legend(loc="best", fontsize="small", markerscale=1.5, ncols=2)
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    ax.set_title(title if title is not None else f"Embeddings ({method.upper()})")
    return ax
