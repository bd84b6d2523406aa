"""Embedded data sets (generated or shipped with packages) and real-format loaders."""

from mmlearn.data.tokenizer import WordTokenizer, split_words

__all__ = ["WordTokenizer", "split_words"]
