"""Plots of the book: attention heatmaps, head grids, overlays, similarity matrices, curves,
and the schematic diagrams of chapter 4 (:mod:`mmlearn.viz.diagrams`).

Plot labels are in English so that they render in any runtime (Colab has no CJK font);
Chinese goes in the captions around the figures.
"""

from mmlearn.viz.attention import plot_attention, plot_attention_grid
from mmlearn.viz.diagrams import (
    attention_diagram,
    clip_matrix_diagram,
    distillation_diagram,
    encoder_layer_diagram,
    multi_head_diagram,
)
from mmlearn.viz.embeddings import plot_embeddings_2d, plot_similarity_matrix, project_2d
from mmlearn.viz.rollout import (
    attention_in_box,
    attention_rollout,
    overlay_patch_attention,
    word_attention_heatmap,
)

__all__ = [
    "attention_diagram",
    "clip_matrix_diagram",
    "distillation_diagram",
    "encoder_layer_diagram",
    "multi_head_diagram",
    "plot_embeddings_2d",
    "plot_similarity_matrix",
    "project_2d",
    "plot_attention",
    "plot_attention_grid",
    "attention_in_box",
    "attention_rollout",
    "overlay_patch_attention",
    "word_attention_heatmap",
]
