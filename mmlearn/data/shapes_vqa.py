"""Open-ended visual questions about the shapes world, answered from a fixed vocabulary.

Where :func:`mmlearn.data.shapes.make_question_dataset` asks yes/no questions,
this module asks the four kinds of question of the VQA benchmark's simplest
part (Antol et al. 2015), each answered by one word of :data:`ANSWERS`:

* ``"color"``: "what color is the triangle?" -> ``red`` (asked of a shape in the scene);
* ``"shape"``: "what shape is the blue object?" -> ``circle`` (asked only of a colour
  that exactly one object has, so the answer is unique);
* ``"count"``: "how many red objects are there?" -> ``0`` to ``3``, or
  "how many objects are there?" -> ``1`` to ``3`` (half of the count questions each);
* ``"exists"``: "is there a blue square?" -> ``yes`` / ``no``, half and half; a "no"
  names, when the scene allows it, a colour and a shape that are both in the scene but
  not together (a hard negative: only binding colour to shape answers it).

Scenes come from :func:`mmlearn.data.shapes.generate_scenes` (one question per
scene); answers are computed from the scene's objects, never from the pixels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmlearn._checks import check_positive_int
from mmlearn.data.shapes import COLORS, SHAPES, Scene, generate_scenes

__all__ = [
    "ANSWERS",
    "VQA_KINDS",
    "ShapesVQADataset",
    "answer_question",
    "ask",
    "make_shapes_vqa",
    "make_shapes_vqa_splits",
]

VQA_KINDS = ("color", "shape", "count", "exists")
ANSWERS = ("yes", "no", *COLORS, *SHAPES, "0", "1", "2", "3")
_ANSWER_ID = {answer: index for index, answer in enumerate(ANSWERS)}


@dataclass
class ShapesVQADataset:
    """Questions about shapes-world scenes, one per scene, with one-word answers.

    Attributes:
        images: ``(N, 3, H, W)`` float32 in ``[0, 1]``.
        questions: the English questions.
        answers: the answers, words of :data:`ANSWERS`.
        answer_ids: ``(N,)`` long, each answer's index in :data:`ANSWERS`.
        kinds: each question's kind, one of :data:`VQA_KINDS`.
        scenes: the scenes, with their objects.
    """

    images: torch.Tensor
    questions: list[str]
    answers: list[str]
    answer_ids: torch.Tensor
    kinds: list[str]
    scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.questions)


def answer_question(scene: Scene, question: str) -> str:
    """Answer one of this module's questions from the scene's objects (the ground truth).

    It parses the four templates; any other question raises ``ValueError``.
    """
    words = question.rstrip("?").split()
    if words[:3] == ["what", "color", "is"] and len(words) == 5:
        obj = scene.find(words[4])
        if obj is None:
            raise ValueError(f"question asks the color of a {words[4]!r} that is not in the scene")
        return obj.color
    if words[:3] == ["what", "shape", "is"] and len(words) == 6:
        matches = [obj for obj in scene.objects if obj.color == words[4]]
        if len(matches) != 1:
            raise ValueError(f"question: {len(matches)} objects are {words[4]}, not exactly one")
        return matches[0].shape
    if words[:2] == ["how", "many"]:
        if words[2] == "objects":
            return str(len(scene.objects))
        if words[2] not in COLORS:
            raise ValueError(f"question counts objects of an unknown color {words[2]!r}")
        return str(sum(obj.color == words[2] for obj in scene.objects))
    if words[:2] == ["is", "there"] and len(words) == 5:
        present = any(obj.color == words[3] and obj.shape == words[4] for obj in scene.objects)
        return "yes" if present else "no"
    raise ValueError(f"question is not one of the shapes-VQA templates: {question!r}")


def _exists_question(scene: Scene, rng: random.Random) -> str:
    present = {(obj.color, obj.shape) for obj in scene.objects}
    if rng.random() < 0.5:
        color, shape = rng.choice(sorted(present))
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        colors = {c for c, _ in present}
        shapes = {s for _, s in present}
        hardest = [(c, s) for c, s in absent if c in colors and s in shapes]
        hard = [(c, s) for c, s in absent if c in colors or s in shapes]
        color, shape = rng.choice(hardest or hard or absent)
    return f"is there a {color} {shape}?"


def ask(scene: Scene, kind: str, rng: random.Random) -> str | None:
    """A question of ``kind`` about ``scene``, or None when that kind cannot be asked of it."""
    if kind == "color":
        return f"what color is the {rng.choice(scene.objects).shape}?"
    if kind == "shape":
        colors = [obj.color for obj in scene.objects]
        unique = sorted(color for color in set(colors) if colors.count(color) == 1)
        return f"what shape is the {rng.choice(unique)} object?" if unique else None
    if kind == "count":
        if rng.random() < 0.5:
            return "how many objects are there?"
        return f"how many {rng.choice(COLORS)} objects are there?"
    if kind == "exists":
        return _exists_question(scene, rng)
    raise ValueError(f"kind must be one of {VQA_KINDS}, got {kind!r}")


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if not kinds or any(kind not in VQA_KINDS for kind in kinds):
        raise ValueError(f"kinds must be a non-empty sequence of {VQA_KINDS}, got {kinds!r}")
    return kinds


def _ask_scenes(
    scenes: list[Scene], kinds: tuple[str, ...], num_questions: int, rng: random.Random
) -> tuple[list[Scene], list[str], list[str]] | None:
    """Ask each scene a question of a random kind until ``num_questions`` are asked.

    Returns ``(scenes asked, questions, kinds)``, or None when the scenes ran out.
    """
    kept, questions, kind_list = [], [], []
    for scene in scenes:
        kind = rng.choice(kinds)
        question = ask(scene, kind, rng)
        if question is None:
            continue
        kept.append(scene)
        questions.append(question)
        kind_list.append(kind)
        if len(kept) == num_questions:
            return kept, questions, kind_list
    return None


def make_shapes_vqa(
    num_questions: int,
    *,
    seed: int = 0,
    kinds: Sequence[str] = VQA_KINDS,
    image_size: int = 32,
    min_objects: int = 1,
    max_objects: int = 3,
    layout: str = "grid",
) -> ShapesVQADataset:
    """Generate ``num_questions`` (image, question, answer) triples, reproducibly from ``seed``.

    Each scene gets one question of a kind drawn uniformly from ``kinds``; a scene
    of which that kind cannot be asked (a "shape" question when no colour is unique)
    is skipped. ``image_size``, ``min_objects``, ``max_objects`` and ``layout`` go to
    :func:`mmlearn.data.shapes.generate_scenes`.
    """
    check_positive_int("num_questions", num_questions)
    kinds = _check_kinds(kinds)
    scene_args = {
        "image_size": image_size,
        "seed": seed,
        "min_objects": min_objects,
        "max_objects": max_objects,
        "layout": layout,
    }
    num_scenes = num_questions + num_questions // 4 + 16  # a few scenes get skipped
    for _ in range(4):
        drawn = _ask_scenes(
            generate_scenes(num_scenes, **scene_args), kinds, num_questions, random.Random(seed)
        )
        if drawn is not None:
            break
        num_scenes *= 2  # the first scenes stay the same: the result does not change
    else:
        raise ValueError(
            f"kinds: too few scenes admit questions of kinds {kinds} "
            f"with {min_objects}-{max_objects} objects"
        )
    kept, questions, kind_list = drawn
    answers = [
        answer_question(scene, question) for scene, question in zip(kept, questions, strict=True)
    ]
    return ShapesVQADataset(
        images=torch.stack([scene.image for scene in kept]),
        questions=questions,
        answers=answers,
        answer_ids=torch.tensor([_ANSWER_ID[answer] for answer in answers], dtype=torch.long),
        kinds=kind_list,
        scenes=kept,
    )


def make_shapes_vqa_splits(
    sizes: tuple[int, int, int] = (3000, 500, 1000), *, seed: int = 0, **kwargs
) -> dict[str, ShapesVQADataset]:
    """Train, validation and test sets drawn with three independent seeds.

    The split seeds come from ``numpy.random.SeedSequence(seed).spawn(3)``;
    ``kwargs`` go to :func:`make_shapes_vqa`.
    """
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, val, test), got {sizes!r}")
    children = np.random.SeedSequence(seed).spawn(3)
    seeds = [int(child.generate_state(1)[0]) for child in children]
    return {
        name: make_shapes_vqa(size, seed=split_seed, **kwargs)
        for name, size, split_seed in zip(("train", "val", "test"), sizes, seeds, strict=True)
    }
