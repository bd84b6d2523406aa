"""Handwritten digits with captions: a small, real image-text data set.

The images are the 1,797 real 8x8 handwritten digits that ship with
scikit-learn (``sklearn.datasets.load_digits``, the UCI "optical recognition
of handwritten digits" test set), so nothing is downloaded. Each image gets a
caption in English and one in Chinese, built from a few templates
("a handwritten digit seven", "the number 7", "一个手写的数字七", ...). The
template of each sample is drawn once from a seeded generator, so the same
seed always gives the same captions, on every machine.

That is enough to train a CLIP-style dual encoder in seconds on a CPU, to
classify digits zero-shot from text prompts (:func:`prompts_en`), and to
distil a teacher into a student.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "CAPTION_TEMPLATES_EN",
    "CAPTION_TEMPLATES_ZH",
    "DIGIT_WORDS_EN",
    "DIGIT_WORDS_ZH",
    "DigitsCaptionDataset",
    "DigitsSplit",
    "caption_digit",
    "load_digits_captions",
    "prompts_en",
    "prompts_zh",
]

DIGIT_WORDS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_WORDS_ZH = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九")

# "{word}" is the digit's name, "{digit}" the Arabic numeral.
CAPTION_TEMPLATES_EN = (
    "a handwritten digit {word}",
    "the number {digit}",
    "an image of the digit {word}",
    "a scan of a handwritten {digit}",
    "a small picture of the number {word}",
)
CAPTION_TEMPLATES_ZH = (
    "一个手写的数字{word}",
    "数字{digit}",
    "一张数字{word}的图片",
    "手写的{digit}",
    "一幅写着数字{word}的小图",
)

_SPLITS = ("train", "val", "test")


@dataclass
class DigitsSplit:
    """One split: images ``(N, 1, 8, 8)`` in [0, 1], labels ``(N,)`` and two caption lists."""

    images: torch.Tensor
    labels: torch.Tensor
    captions_en: list[str]
    captions_zh: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _check_digit(digit: int) -> int:
    if isinstance(digit, bool) or not isinstance(digit, int | np.integer) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an integer in 0..9, got {digit!r}")
    return int(digit)


def caption_digit(digit: int, template: int = 0, language: str = "en") -> str:
    """The caption of ``digit`` with template number ``template`` in ``language`` ("en"/"zh")."""
    digit = _check_digit(digit)
    templates, words = _language_tables(language)
    if (
        isinstance(template, bool)
        or not isinstance(template, int | np.integer)
        or not 0 <= template < len(templates)
    ):
        raise ValueError(
            f"template must be an integer in 0..{len(templates) - 1}, got {template!r}"
        )
    return templates[int(template)].format(word=words[digit], digit=digit)


def _language_tables(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if language == "en":
        return CAPTION_TEMPLATES_EN, DIGIT_WORDS_EN
    if language == "zh":
        return CAPTION_TEMPLATES_ZH, DIGIT_WORDS_ZH
    raise ValueError(f"language must be 'en' or 'zh', got {language!r}")


def prompts_en(digit: int) -> list[str]:
    """Every English template filled in for ``digit``: the prompt ensemble for zero-shot.

    The zero-shot class embedding of a digit is the normalised mean of the
    normalised embeddings of these prompts (see
    :func:`mmlearn.metrics.zero_shot_classifier`).
    """
    digit = _check_digit(digit)
    return [caption_digit(digit, t, "en") for t in range(len(CAPTION_TEMPLATES_EN))]


def prompts_zh(digit: int) -> list[str]:
    """Every Chinese template filled in for ``digit`` (see :func:`prompts_en`)."""
    digit = _check_digit(digit)
    return [caption_digit(digit, t, "zh") for t in range(len(CAPTION_TEMPLATES_ZH))]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, int | float) or not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )


def _split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test indices (each split keeps the class balance)."""
    from sklearn.model_selection import train_test_split  # imported here: sklearn is slow to load

    indices = np.arange(len(labels))
    rest, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=labels[rest], random_state=seed
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def load_digits_captions(
    seed: int = 0, *, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> dict[str, DigitsSplit]:
    """Load the 1,797 digits with captions, split into ``"train"``, ``"val"`` and ``"test"``.

    Pixel values 0..16 are scaled to [0, 1]. The split is stratified by digit
    and seeded; each sample's English and Chinese templates are drawn from a
    generator seeded with ``seed``, before splitting, so a sample keeps its
    captions whatever the split fractions.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _check_fractions(val_fraction, test_fraction)
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to load

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    rng = np.random.default_rng(seed)
    template_en = rng.integers(len(CAPTION_TEMPLATES_EN), size=len(labels))
    template_zh = rng.integers(len(CAPTION_TEMPLATES_ZH), size=len(labels))
    splits = {}
    for name, index in _split_indices(labels, val_fraction, test_fraction, seed).items():
        splits[name] = DigitsSplit(
            images=images[index].clone(),
            labels=torch.from_numpy(labels[index]),
            captions_en=[caption_digit(int(labels[i]), int(template_en[i]), "en") for i in index],
            captions_zh=[caption_digit(int(labels[i]), int(template_zh[i]), "zh") for i in index],
        )
    return splits


class DigitsCaptionDataset(Dataset):
    """A :class:`~torch.utils.data.Dataset` view of a :class:`DigitsSplit`.

    Item ``i`` is ``(image (1, 8, 8), caption, label)``; the default
    ``DataLoader`` collation stacks the images and labels and keeps the
    captions as a list of strings.
    """

    def __init__(self, split: DigitsSplit, language: str = "en"):
        if not isinstance(split, DigitsSplit):
            raise TypeError(f"split must be a DigitsSplit, got {type(split).__name__}")
        _language_tables(language)
        self.split = split
        self.captions = split.captions_en if language == "en" else split.captions_zh

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int]:
        return self.split.images[index], self.captions[index], int(self.split.labels[index])
