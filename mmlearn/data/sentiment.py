"""A generated tri-modal sentiment set: a sentence, a drawn face and a prosody-like signal.

Each sample has a sentiment label (``negative``, ``neutral``, ``positive``) and
three views of it, each with its own way of failing, as in real videos:

* **text**: a short English sentence ("the food was really great",
  "the service was not good"). A negated positive word reads negative, a negated
  negative word reads neutral ("the film was not awful"). With probability
  ``irony`` a *negative* sample is sarcastic: it is written with an un-negated
  positive word, so its words alone look positive.
* **face**: a ``16 x 16`` grey image of a face whose mouth is a parabola: corners
  up (smile) for positive, down (frown) for negative, nearly flat for neutral,
  with a random curvature, a random one-pixel shift and pixel noise. With
  probability ``occlusion`` a grey block (a hand, a microphone) hides the mouth.
* **prosody**: a ``(2, 32)`` signal, a pitch contour and an energy contour over
  32 time steps: pitch rises and energy is high when positive, pitch falls and
  energy is low when negative, both flat when neutral, with noise. With
  probability ``monotone`` the speaker is flat whatever the sentiment.

The three failures are drawn independently, so on most samples at least two
views agree with the label: no single view suffices, but their combination
nearly does. Sarcastic samples are where the text and the other two views
disagree. The face and the voice always follow the true label (a sarcastic
speaker frowns and sounds negative).

This is a generated teaching set, not a benchmark: its cues are clean,
its failure modes are known and it has no speakers, accents or cultures.
Everything is drawn from a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmlearn._checks import check_positive_int, check_probability

__all__ = [
    "FACE_SIZE",
    "NEGATIVE_WORDS",
    "NEUTRAL_WORDS",
    "POSITIVE_WORDS",
    "PROSODY_LENGTH",
    "SENTIMENTS",
    "SentimentDataset",
    "draw_face",
    "make_sentiment_dataset",
    "make_sentiment_splits",
    "prosody_signal",
    "sentence",
]

SENTIMENTS = ("negative", "neutral", "positive")  # label ids 0, 1, 2
NEGATIVE, NEUTRAL, POSITIVE = 0, 1, 2
POSITIVE_WORDS = ("good", "great", "wonderful", "lovely", "excellent", "fun")
NEGATIVE_WORDS = ("bad", "awful", "terrible", "boring", "horrible", "dull")
NEUTRAL_WORDS = ("okay", "average", "ordinary", "typical")
SUBJECTS = (
    "the movie",
    "the food",
    "the service",
    "the hotel",
    "my day",
    "the concert",
    "this phone",
    "the book",
)
INTENSIFIERS = ("really", "very", "quite", "so")
FACE_SIZE = 16
PROSODY_LENGTH = 32

_MOUTH_ROW = 11.0  # the mouth's corners sit on this row (y grows downwards)
_MOUTH_HALF_WIDTH = 3.5
_EYE_ROW, _EYE_COLUMNS = 5, (5, 10)


@dataclass
class SentimentDataset:
    """Generated tri-modal sentiment samples.

    Attributes:
        texts: ``N`` English sentences.
        faces: ``(N, 1, 16, 16)`` float32 in ``[0, 1]``.
        prosody: ``(N, 2, 32)`` float32: row 0 the pitch contour, row 1 the energy.
        labels: ``(N,)`` long, the true sentiment (0 negative, 1 neutral, 2 positive).
        text_polarity: ``(N,)`` long, what the words literally say (differs from
            ``labels`` exactly on the sarcastic samples).
        ironic: ``(N,)`` bool, the text is sarcastic.
        occluded: ``(N,)`` bool, the mouth is hidden.
        monotone: ``(N,)`` bool, the prosody carries no sentiment.
    """

    texts: list[str]
    faces: torch.Tensor
    prosody: torch.Tensor
    labels: torch.Tensor
    text_polarity: torch.Tensor
    ironic: torch.Tensor
    occluded: torch.Tensor
    monotone: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)


# --------------------------------------------------------------------------- text


def sentence(polarity: int, rng: np.random.Generator) -> str:
    """A sentence whose words literally express ``polarity`` (0, 1 or 2).

    Positive: an un-negated positive word. Negative: a negative word, or "not" and
    a positive word. Neutral: a neutral word, or "not" and a negative word.
    An intensifier ("really") may precede an un-negated sentiment word.
    """
    if polarity not in (NEGATIVE, NEUTRAL, POSITIVE):
        raise ValueError(f"polarity must be 0, 1 or 2, got {polarity!r}")
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    negated = polarity != POSITIVE and rng.random() < 0.4
    if polarity == POSITIVE or (polarity == NEGATIVE and negated):
        words = POSITIVE_WORDS
    elif polarity == NEGATIVE or negated:
        words = NEGATIVE_WORDS
    else:
        words = NEUTRAL_WORDS
    word = words[rng.integers(len(words))]
    if negated:
        return f"{subject} was not {word}"
    if polarity != NEUTRAL and rng.random() < 0.5:
        return f"{subject} was {INTENSIFIERS[rng.integers(len(INTENSIFIERS))]} {word}"
    return f"{subject} was {word}"


# --------------------------------------------------------------------------- face


def draw_face(
    curvature: float, rng: np.random.Generator, *, occluded: bool = False, noise: float = 0.15
) -> np.ndarray:
    """A ``(16, 16)`` float32 face in ``[0, 1]``; the mouth is ``y = row + c (1 - u^2)``.

    ``u`` runs from -1 to 1 across the mouth, so ``curvature > 0`` puts the middle
    of the mouth below its corners (a smile) and ``curvature < 0`` above them (a frown).
    The mouth moves by up to one pixel in each direction; ``occluded`` covers it.
    """
    check_probability("noise", noise)
    size = FACE_SIZE
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    centre = size / 2
    face = np.where((rows - centre) ** 2 + (cols - centre) ** 2 <= 7.5**2, 0.75, 0.0)
    for column in _EYE_COLUMNS:
        face[_EYE_ROW, column] = 0.0
    shift_x, shift_y = rng.integers(-1, 2, size=2)
    u = (cols - centre - shift_x) / _MOUTH_HALF_WIDTH
    mouth_y = _MOUTH_ROW + shift_y + curvature * (1.0 - u**2)
    on_mouth = (np.abs(u) <= 1.0) & (np.abs(rows - mouth_y) <= 0.6)
    face[on_mouth] = 0.0
    if occluded:
        face[7:15, 2:14] = 0.45
    face = face + noise * rng.standard_normal(face.shape)
    return np.clip(face, 0.0, 1.0).astype(np.float32)


def _curvature(label: int, rng: np.random.Generator) -> float:
    if label == NEUTRAL:
        return float(rng.uniform(-0.4, 0.4))
    magnitude = float(rng.uniform(1.0, 2.0))
    return magnitude if label == POSITIVE else -magnitude


# --------------------------------------------------------------------------- prosody


def prosody_signal(
    label: int, rng: np.random.Generator, *, monotone: bool = False, noise: float = 0.6
) -> np.ndarray:
    """A ``(2, 32)`` float32 pitch and energy contour for sentiment ``label``.

    Pitch: a random speaker baseline plus ``slope * t`` (``t`` from -1 to 1) with a
    slope around +1 (positive), 0 (neutral) or -1 (negative). Energy: a level around
    +0.5, 0 or -0.5 that decays slowly. A monotone speaker has slope 0 and level 0.
    Gaussian noise of standard deviation ``noise`` is added to every time step.
    """
    if label not in (NEGATIVE, NEUTRAL, POSITIVE):
        raise ValueError(f"label must be 0, 1 or 2, got {label!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be non-negative, got {noise!r}")
    t = np.linspace(-1.0, 1.0, PROSODY_LENGTH)
    direction = 0.0 if monotone else float(label - 1)  # -1, 0, +1
    slope = direction + 0.3 * rng.standard_normal()
    level = 0.5 * direction + 0.2 * rng.standard_normal()
    pitch = rng.normal(0.0, 0.5) + slope * t
    energy = level * np.exp(-0.5 * (t + 1.0))
    signal = np.stack([pitch, energy]) + noise * rng.standard_normal((2, PROSODY_LENGTH))
    return signal.astype(np.float32)


# --------------------------------------------------------------------------- data sets


def make_sentiment_dataset(
    num_samples: int,
    *,
    seed: int = 0,
    irony: float = 0.5,
    occlusion: float = 0.3,
    monotone: float = 0.3,
    face_noise: float = 0.15,
    prosody_noise: float = 0.6,
) -> SentimentDataset:
    """Generate ``num_samples`` tri-modal samples, reproducibly from ``seed``.

    Labels are drawn uniformly from the three sentiments; then, independently,
    whether a negative sample's text is sarcastic (probability ``irony``), whether
    the mouth is hidden (``occlusion``) and whether the voice is flat (``monotone``).

    Args:
        num_samples: how many samples.
        seed: the seed; the first ``n`` samples do not depend on ``num_samples``.
        irony: probability that a negative sample is written with positive words.
        occlusion: probability that the face's mouth is covered.
        monotone: probability that the prosody carries no sentiment.
        face_noise: standard deviation of the face's pixel noise (in ``[0, 1]``).
        prosody_noise: standard deviation of the prosody's noise (``>= 0``).
    """
    check_positive_int("num_samples", num_samples)
    for name, value in (
        ("irony", irony),
        ("occlusion", occlusion),
        ("monotone", monotone),
        ("face_noise", face_noise),
    ):
        check_probability(name, value)
    if (
        isinstance(prosody_noise, bool)
        or not isinstance(prosody_noise, int | float)
        or not prosody_noise >= 0
    ):
        raise ValueError(f"prosody_noise must be a non-negative number, got {prosody_noise!r}")
    rng = np.random.default_rng(seed)
    texts, faces, signals, rows = [], [], [], []
    for _ in range(num_samples):
        label = int(rng.integers(3))
        ironic = label == NEGATIVE and rng.random() < irony
        occluded = rng.random() < occlusion
        flat = rng.random() < monotone
        polarity = POSITIVE if ironic else label
        texts.append(sentence(polarity, rng))
        faces.append(draw_face(_curvature(label, rng), rng, occluded=occluded, noise=face_noise))
        signals.append(prosody_signal(label, rng, monotone=flat, noise=prosody_noise))
        rows.append((label, polarity, ironic, occluded, flat))
    labels, polarities, ironic, occluded, flat = zip(*rows, strict=True)
    return SentimentDataset(
        texts=texts,
        faces=torch.from_numpy(np.stack(faces))[:, None],
        prosody=torch.from_numpy(np.stack(signals)),
        labels=torch.tensor(labels, dtype=torch.long),
        text_polarity=torch.tensor(polarities, dtype=torch.long),
        ironic=torch.tensor(ironic, dtype=torch.bool),
        occluded=torch.tensor(occluded, dtype=torch.bool),
        monotone=torch.tensor(flat, dtype=torch.bool),
    )


def make_sentiment_splits(
    sizes: tuple[int, int, int] = (2000, 500, 1000), *, seed: int = 0, **kwargs
) -> dict[str, SentimentDataset]:
    """Train, validation and test sets drawn with three independent seeds.

    The split seeds come from ``numpy.random.SeedSequence(seed).spawn(3)``, as in
    :func:`mmlearn.data.shapes.make_question_splits`; ``kwargs`` go to
    :func:`make_sentiment_dataset`.
    """
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, val, test), got {sizes!r}")
    children = np.random.SeedSequence(seed).spawn(3)
    seeds = [int(child.generate_state(1)[0]) for child in children]
    return {
        name: make_sentiment_dataset(size, seed=split_seed, **kwargs)
        for name, size, split_seed in zip(("train", "val", "test"), sizes, seeds, strict=True)
    }
