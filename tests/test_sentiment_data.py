"""The generated tri-modal sentiment set: determinism, shapes, cues that match the labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlearn.data.sentiment import (
    FACE_SIZE,
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
    PROSODY_LENGTH,
    draw_face,
    make_sentiment_dataset,
    make_sentiment_splits,
    prosody_signal,
    sentence,
)


def _literal_polarity(text: str) -> int:
    """What a sentence literally says, read with rules written independently of the generator."""
    words = text.split()
    negated = "not" in words
    if any(word in POSITIVE_WORDS for word in words):
        return 0 if negated else 2
    if any(word in NEGATIVE_WORDS for word in words):
        return 1 if negated else 0
    assert any(word in NEUTRAL_WORDS for word in words) and not negated
    return 1


def _slope(signal: torch.Tensor) -> float:
    """Least-squares slope of a pitch contour over t in [-1, 1]."""
    t = np.linspace(-1.0, 1.0, PROSODY_LENGTH)
    return float(np.polyfit(t, signal.numpy(), 1)[0])


def test_same_seed_same_data_prefix_property_and_other_seed_differs():
    a = make_sentiment_dataset(40, seed=3)
    b = make_sentiment_dataset(40, seed=3)
    short = make_sentiment_dataset(10, seed=3)
    other = make_sentiment_dataset(40, seed=4)
    assert a.texts == b.texts and torch.equal(a.faces, b.faces)
    assert torch.equal(a.prosody, b.prosody) and torch.equal(a.labels, b.labels)
    assert a.texts[:10] == short.texts and torch.equal(a.faces[:10], short.faces)
    assert a.texts != other.texts


def test_shapes_and_dtypes():
    data = make_sentiment_dataset(25, seed=0)
    assert len(data) == 25 and len(data.texts) == 25
    assert data.faces.shape == (25, 1, FACE_SIZE, FACE_SIZE) and data.faces.dtype == torch.float32
    assert 0.0 <= data.faces.min() and data.faces.max() <= 1.0
    assert data.prosody.shape == (25, 2, PROSODY_LENGTH) and data.prosody.dtype == torch.float32
    for tensor in (data.labels, data.text_polarity):
        assert tensor.shape == (25,) and tensor.dtype == torch.long
    for tensor in (data.ironic, data.occluded, data.monotone):
        assert tensor.shape == (25,) and tensor.dtype == torch.bool


def test_text_says_the_label_except_on_sarcastic_negatives():
    data = make_sentiment_dataset(600, seed=1, irony=0.5)
    literal = torch.tensor([_literal_polarity(text) for text in data.texts])
    assert torch.equal(literal, data.text_polarity)
    assert torch.equal(data.text_polarity != data.labels, data.ironic)
    assert (data.labels[data.ironic] == 0).all()  # only negative samples are sarcastic
    assert (data.text_polarity[data.ironic] == 2).all()  # ... and they read positive
    assert data.ironic.any() and (data.labels == 0).any()


def test_rates_of_the_three_failures_match_the_parameters():
    data = make_sentiment_dataset(4000, seed=2, irony=0.4, occlusion=0.2, monotone=0.35)
    negative = data.labels == 0
    assert abs(data.ironic[negative].float().mean().item() - 0.4) < 0.04
    assert abs(data.occluded.float().mean().item() - 0.2) < 0.03
    assert abs(data.monotone.float().mean().item() - 0.35) < 0.03
    counts = torch.bincount(data.labels, minlength=3).float() / len(data)
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.03)


def test_no_irony_means_text_always_matches():
    data = make_sentiment_dataset(300, seed=0, irony=0.0)
    assert not data.ironic.any() and torch.equal(data.text_polarity, data.labels)


@pytest.mark.parametrize("polarity", [0, 1, 2])
def test_sentence_reads_as_its_polarity(polarity):
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert _literal_polarity(sentence(polarity, rng)) == polarity


def _mouth_rows(face: np.ndarray) -> tuple[float, float]:
    """Mean row of the dark mouth pixels in its middle column and in its two end columns."""
    centres = np.arange(FACE_SIZE) + 0.5
    inside = (centres[:, None] - 8) ** 2 + (centres[None, :] - 8) ** 2 < 7.0**2
    mouth = (face == 0.0) & inside
    mouth[:7] = False  # the eyes (row 5) are not the mouth
    columns = np.flatnonzero(mouth.any(axis=0))
    rows = np.arange(FACE_SIZE)

    def mean_row(column: int) -> float:
        return float(rows[mouth[:, column]].mean())

    middle = mean_row(int(columns[len(columns) // 2]))
    return middle, (mean_row(int(columns[0])) + mean_row(int(columns[-1]))) / 2


@pytest.mark.parametrize("curvature", [1.0, 1.2, 1.5, 1.8, 2.0])
def test_smile_has_its_middle_below_its_corners_and_frown_above(curvature):
    rng = np.random.default_rng(int(curvature * 10))
    middle, corners = _mouth_rows(draw_face(curvature, rng, noise=0.0))
    assert middle > corners  # y grows downwards: a smile
    middle, corners = _mouth_rows(draw_face(-curvature, rng, noise=0.0))
    assert middle < corners  # a frown


def test_occlusion_hides_the_mouth():
    rng = np.random.default_rng(0)
    smile = draw_face(2.0, rng, occluded=True, noise=0.0)
    frown = draw_face(-2.0, np.random.default_rng(0), occluded=True, noise=0.0)
    np.testing.assert_array_equal(smile, frown)  # nothing left to tell them apart
    assert (smile[7:15, 2:14] == 0.45).all()


def test_prosody_slope_follows_the_label_and_monotone_is_flat():
    data = make_sentiment_dataset(900, seed=5, monotone=0.3, prosody_noise=0.0)
    slopes = torch.tensor([_slope(signal[0]) for signal in data.prosody])
    energy = data.prosody[:, 1].mean(dim=1)
    speaking = ~data.monotone
    means = [slopes[speaking & (data.labels == label)].mean().item() for label in range(3)]
    assert means[0] < -0.8 and abs(means[1]) < 0.1 and means[2] > 0.8
    assert abs(slopes[data.monotone].mean().item()) < 0.1
    levels = [energy[speaking & (data.labels == label)].mean().item() for label in range(3)]
    assert levels[0] < levels[1] < levels[2]


def test_splits_are_different_draws():
    splits = make_sentiment_splits((30, 20, 10), seed=0)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [30, 20, 10]
    assert splits["train"].texts[:10] != splits["test"].texts


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 5, "irony": 1.5}, "irony"),
        ({"num_samples": 5, "occlusion": -0.1}, "occlusion"),
        ({"num_samples": 5, "monotone": 2}, "monotone"),
        ({"num_samples": 5, "face_noise": 3.0}, "face_noise"),
        ({"num_samples": 5, "prosody_noise": -1.0}, "prosody_noise"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_sentiment_dataset(**kwargs)


def test_bad_helper_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="polarity"):
        sentence(3, rng)
    with pytest.raises(ValueError, match="label"):
        prosody_signal(-1, rng)
    with pytest.raises(ValueError, match="sizes"):
        make_sentiment_splits((10, 10))
