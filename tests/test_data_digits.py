"""The digits-with-captions data set: real sklearn digits, seeded splits and captions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from mmlearn.data.digits import (
    CAPTION_TEMPLATES_EN,
    CAPTION_TEMPLATES_ZH,
    DIGIT_WORDS_EN,
    DIGIT_WORDS_ZH,
    DigitsCaptionDataset,
    caption_digit,
    load_digits_captions,
    prompts_en,
    prompts_zh,
)
from mmlearn.data.tokenizer import split_words


@pytest.fixture(scope="module")
def splits():
    return load_digits_captions(seed=0)


def test_splits_hold_every_real_digit_once(splits):
    original = load_digits()
    assert sum(len(s) for s in splits.values()) == len(original.target) == 1797
    ours = sorted(
        tuple((s.images[i, 0] * 16).round().int().flatten().tolist()) + (int(s.labels[i]),)
        for s in splits.values()
        for i in range(len(s))
    )
    theirs = sorted(
        tuple(image.astype(int).flatten().tolist()) + (int(label),)
        for image, label in zip(original.images, original.target, strict=True)
    )
    assert ours == theirs  # the same (image, label) pairs: nothing lost, nothing duplicated


def test_shapes_dtypes_and_range(splits):
    for split in splits.values():
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.long
        assert split.images.shape == (len(split), 1, 8, 8)
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert len(split.captions_en) == len(split.captions_zh) == len(split)


def test_splits_are_stratified(splits):
    sizes = {name: len(split) for name, split in splits.items()}
    assert sizes == {"train": 1077, "val": 360, "test": 360}
    overall = np.bincount(load_digits().target) / 1797
    for split in splits.values():
        share = np.bincount(split.labels.numpy(), minlength=10) / len(split)
        assert np.abs(share - overall).max() < 0.01


def test_captions_name_the_right_digit(splits):
    for split in splits.values():
        for label, english, chinese in zip(
            split.labels.tolist(), split.captions_en, split.captions_zh, strict=True
        ):
            words = split_words(english)
            assert DIGIT_WORDS_EN[label] in words or str(label) in words
            assert DIGIT_WORDS_ZH[label] in chinese or str(label) in chinese
            others = [w for d, w in enumerate(DIGIT_WORDS_EN) if d != label]
            assert not set(others) & set(words)


def test_captions_use_all_templates(splits):
    train = splits["train"]
    english = Counter(
        next(
            t for t in range(len(CAPTION_TEMPLATES_EN)) if caption_digit(label, t, "en") == caption
        )
        for label, caption in zip(train.labels.tolist(), train.captions_en, strict=True)
    )
    assert set(english) == set(range(len(CAPTION_TEMPLATES_EN)))
    assert min(english.values()) > len(train) / len(CAPTION_TEMPLATES_EN) / 2
    assert len(set(train.captions_zh)) == 10 * len(CAPTION_TEMPLATES_ZH)


def test_same_seed_same_data_other_seed_other_data(splits):
    again = load_digits_captions(seed=0)
    for name in splits:
        assert torch.equal(again[name].images, splits[name].images)
        assert again[name].captions_en == splits[name].captions_en
        assert again[name].captions_zh == splits[name].captions_zh
    other = load_digits_captions(seed=1)
    assert not torch.equal(other["test"].images, splits["test"].images)


def _caption_by_image(data) -> dict[bytes, str]:
    pairs = [
        (s.images[i].numpy().tobytes(), s.captions_en[i])
        for s in data.values()
        for i in range(len(s))
    ]
    counts = Counter(key for key, _ in pairs)
    return {key: caption for key, caption in pairs if counts[key] == 1}  # unique images only


def test_a_sample_keeps_its_caption_whatever_the_split_fractions(splits):
    other = load_digits_captions(seed=0, val_fraction=0.1, test_fraction=0.3)
    assert len(other["test"]) != len(splits["test"])
    first, second = _caption_by_image(splits), _caption_by_image(other)
    assert len(first) > 1700 and first == second


def test_prompts_cover_every_template():
    assert prompts_en(7) == [t.format(word="seven", digit=7) for t in CAPTION_TEMPLATES_EN]
    assert prompts_zh(7) == [t.format(word="七", digit=7) for t in CAPTION_TEMPLATES_ZH]
    assert "a handwritten digit seven" in prompts_en(7)
    assert "一个手写的数字七" in prompts_zh(7)
    assert len({p for d in range(10) for p in prompts_en(d)}) == 10 * len(CAPTION_TEMPLATES_EN)


def test_dataset_wrapper_and_loader(splits):
    dataset = DigitsCaptionDataset(splits["val"], language="zh")
    image, caption, label = dataset[3]
    assert torch.equal(image, splits["val"].images[3])
    assert caption == splits["val"].captions_zh[3] and label == int(splits["val"].labels[3])
    images, captions, labels = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 1, 8, 8) and len(captions) == 4 and labels.shape == (4,)
    assert list(captions) == splits["val"].captions_zh[:4]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: load_digits_captions(seed=-1), ValueError, "seed"),
        (lambda: load_digits_captions(seed=1.5), ValueError, "seed"),
        (lambda: load_digits_captions(val_fraction=0.0), ValueError, "val_fraction"),
        (lambda: load_digits_captions(test_fraction=1.0), ValueError, "test_fraction"),
        (
            lambda: load_digits_captions(val_fraction=0.5, test_fraction=0.5),
            ValueError,
            "val_fraction",
        ),
        (lambda: prompts_en(10), ValueError, "digit"),
        (lambda: prompts_zh(-1), ValueError, "digit"),
        (lambda: prompts_en(True), ValueError, "digit"),
        (lambda: caption_digit(3, template=len(CAPTION_TEMPLATES_EN)), ValueError, "template"),
        (lambda: caption_digit(3, language="fr"), ValueError, "language"),
        (lambda: DigitsCaptionDataset([1, 2, 3]), TypeError, "split"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_dataset_rejects_an_unknown_language(splits):
    with pytest.raises(ValueError, match="language"):
        DigitsCaptionDataset(splits["val"], language="de")
