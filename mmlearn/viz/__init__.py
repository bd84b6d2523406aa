"""Plots of the book: attention heatmaps, head grids, overlays, similarity matrices, curves.

Plot labels are in English so that they render in any runtime (Colab has no CJK font);
Chinese goes in the captions around the figures.
"""
