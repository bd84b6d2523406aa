"""Open-ended shapes-world VQA: determinism, answers that match the scene and its pixels."""

from __future__ import annotations

import random
import re

import pytest
import torch

from mmlearn.data.shapes import COLOR_RGB, COLORS, SHAPES, Scene, ShapeObject, render_scene
from mmlearn.data.shapes_vqa import (
    ANSWERS,
    VQA_KINDS,
    answer_question,
    ask,
    make_shapes_vqa,
    make_shapes_vqa_splits,
)


def _expected_answer(scene: Scene, question: str) -> str:
    """The answer, computed here with regular expressions independent of the module's parser."""
    if match := re.fullmatch(r"what color is the (\w+)\?", question):
        (obj,) = [o for o in scene.objects if o.shape == match[1]]
        return obj.color
    if match := re.fullmatch(r"what shape is the (\w+) object\?", question):
        (obj,) = [o for o in scene.objects if o.color == match[1]]
        return obj.shape
    if question == "how many objects are there?":
        return str(len(scene.objects))
    if match := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return str(len([o for o in scene.objects if o.color == match[1]]))
    match = re.fullmatch(r"is there a (\w+) (\w+)\?", question)
    assert match is not None, question
    return "yes" if (match[1], match[2]) in {(o.color, o.shape) for o in scene.objects} else "no"


def _pixel_color(scene: Scene, obj: ShapeObject) -> str:
    """The colour drawn at the centre pixel of the object's box (every shape covers it)."""
    x0, y0, x1, y1 = obj.box
    rgb = scene.image[:, (y0 + y1) // 2, (x0 + x1) // 2]
    return min(COLORS, key=lambda c: float((rgb - torch.tensor(COLOR_RGB[c])).abs().sum()))


def test_same_seed_same_questions_prefix_property_and_other_seed_differs():
    a = make_shapes_vqa(60, seed=7)
    b = make_shapes_vqa(60, seed=7)
    short = make_shapes_vqa(20, seed=7)
    other = make_shapes_vqa(60, seed=8)
    assert a.questions == b.questions and a.answers == b.answers
    assert torch.equal(a.images, b.images) and torch.equal(a.answer_ids, b.answer_ids)
    assert a.questions[:20] == short.questions and torch.equal(a.images[:20], short.images)
    assert a.questions != other.questions


def test_shapes_dtypes_and_vocabulary():
    data = make_shapes_vqa(50, seed=0)
    assert len(data) == 50 and data.images.shape == (50, 3, 32, 32)
    assert data.images.dtype == torch.float32
    assert data.answer_ids.dtype == torch.long and data.answer_ids.shape == (50,)
    assert [ANSWERS[i] for i in data.answer_ids.tolist()] == data.answers
    assert set(data.kinds) <= set(VQA_KINDS)
    assert len(ANSWERS) == len(set(ANSWERS))


def test_answers_match_the_scene_and_the_pixels():
    data = make_shapes_vqa(400, seed=1)
    for scene, image, question, answer, kind in zip(
        data.scenes, data.images, data.questions, data.answers, data.kinds, strict=True
    ):
        assert torch.equal(image, scene.image)
        assert answer == _expected_answer(scene, question) == answer_question(scene, question)
        if kind == "color":  # the answer is the colour actually drawn
            obj = scene.find(question.split()[-1].rstrip("?"))
            assert _pixel_color(scene, obj) == answer
        if kind == "shape":
            colors = [obj.color for obj in scene.objects]
            assert colors.count(question.split()[4]) == 1  # asked only of a unique colour


def test_every_kind_appears_and_exists_is_balanced_with_hard_negatives():
    data = make_shapes_vqa(1200, seed=2)
    assert set(data.kinds) == set(VQA_KINDS)
    exists = [
        (scene, q, a)
        for scene, q, a, kind in zip(
            data.scenes, data.questions, data.answers, data.kinds, strict=True
        )
        if kind == "exists"
    ]
    share_yes = sum(a == "yes" for _, _, a in exists) / len(exists)
    assert abs(share_yes - 0.5) < 0.06
    hard = 0
    for scene, question, answer in exists:
        if answer == "no":
            _, _, _, color, shape = question.rstrip("?").split()
            hard += color in {o.color for o in scene.objects} and scene.find(shape) is not None
    assert hard > 0.5 * sum(a == "no" for _, _, a in exists)
    counts = {a for a, kind in zip(data.answers, data.kinds, strict=True) if kind == "count"}
    assert counts == {"0", "1", "2", "3"}


def test_a_single_kind_and_skipped_scenes():
    data = make_shapes_vqa(80, seed=3, kinds=("shape",), min_objects=2)
    assert set(data.kinds) == {"shape"} and len(data) == 80
    assert set(data.answers) <= set(SHAPES)


def test_ask_returns_none_when_no_colour_is_unique():
    objects = [
        ShapeObject("circle", "red", (0, 0, 7, 7)),
        ShapeObject("square", "red", (8, 0, 15, 7)),
    ]
    scene = Scene(render_scene(objects), objects)
    assert ask(scene, "shape", random.Random(0)) is None
    assert answer_question(scene, "how many red objects are there?") == "2"
    assert answer_question(scene, "is there a red triangle?") == "no"


def test_splits_are_different_draws():
    splits = make_shapes_vqa_splits((30, 20, 10), seed=0)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [30, 20, 10]
    assert not torch.equal(splits["train"].images[:10], splits["test"].images)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_questions": 0}, "num_questions"),
        ({"num_questions": 5, "kinds": ("size",)}, "kinds"),
        ({"num_questions": 5, "kinds": ()}, "kinds"),
        ({"num_questions": 5, "max_objects": 4}, "max_objects"),
        ({"num_questions": 5, "image_size": 8}, "image_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_shapes_vqa(**kwargs)


def test_bad_questions_and_kinds():
    scene = make_shapes_vqa(1, seed=0, min_objects=1, max_objects=1).scenes[0]
    missing = next(shape for shape in SHAPES if scene.find(shape) is None)
    with pytest.raises(ValueError, match="question"):
        answer_question(scene, "why is the sky blue?")
    with pytest.raises(ValueError, match="question"):
        answer_question(scene, f"what color is the {missing}?")
    with pytest.raises(ValueError, match="question"):
        answer_question(scene, "how many purple objects are there?")
    with pytest.raises(ValueError, match="kind"):
        ask(scene, "size", random.Random(0))
    with pytest.raises(ValueError, match="sizes"):
        make_shapes_vqa_splits((10, 10))
