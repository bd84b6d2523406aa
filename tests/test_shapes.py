"""The shapes world: determinism, boxes that match the pixels, captions, balanced questions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlearn.data.shapes import (
    COLOR_RGB,
    COLORS,
    LAYOUTS,
    QUESTION_KINDS,
    SHAPES,
    ShapeObject,
    caption_en,
    caption_zh,
    color_queries,
    generate_scenes,
    make_question_dataset,
    make_question_splits,
    render_scene,
)


def _tight_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def test_same_seed_same_scenes_and_prefix_property():
    a = generate_scenes(12, seed=3)
    b = generate_scenes(12, seed=3)
    c = generate_scenes(5, seed=3)
    d = generate_scenes(12, seed=4)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.image, y.image) and x.objects == y.objects
    assert all(x.objects == y.objects for x, y in zip(a[:5], c, strict=True))
    assert any(x.objects != y.objects for x, y in zip(a, d, strict=True))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    image_size=st.sampled_from([16, 24, 32, 48]),
    layout=st.sampled_from(LAYOUTS),
)
def test_boxes_inside_image_apart_and_matching_pixels(seed, image_size, layout):
    for scene in generate_scenes(4, seed=seed, image_size=image_size, layout=layout):
        assert scene.image.shape == (3, image_size, image_size)
        assert scene.image.dtype == torch.float32
        assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
        shapes = [obj.shape for obj in scene.objects]
        assert len(shapes) == len(set(shapes))  # each shape at most once
        drawn = scene.image.sum(dim=0) > 0
        covered = torch.zeros_like(drawn)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size
            inside = torch.zeros_like(drawn)
            inside[y0:y1, x0:x1] = drawn[y0:y1, x0:x1]
            assert _tight_box(inside) == obj.box  # the drawn pixels fill the box exactly
            rgb = torch.tensor(COLOR_RGB[obj.color])
            pixels = scene.image[:, y0:y1, x0:x1].permute(1, 2, 0)[inside[y0:y1, x0:x1]]
            assert torch.allclose(pixels, rgb.expand_as(pixels))
            covered |= inside
        assert torch.equal(covered, drawn)  # nothing drawn outside the boxes
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                apart_x = a.box[2] < b.box[0] or b.box[2] < a.box[0]
                apart_y = a.box[3] < b.box[1] or b.box[3] < a.box[1]
                assert apart_x or apart_y


def test_grid_layout_puts_each_object_in_its_own_patch():
    cells = set()
    for scene in generate_scenes(50, seed=7, image_size=32):
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert x0 // 8 == (x1 - 1) // 8 and y0 // 8 == (y1 - 1) // 8  # one 8x8 patch
            cells.add((x0 // 8, y0 // 8))
    assert len(cells) == 16  # every cell gets used
    free = generate_scenes(50, seed=7, image_size=32, layout="free")
    assert any(obj.box[0] // 8 != (obj.box[2] - 1) // 8 for s in free for obj in s.objects)


def test_shapes_are_different_masks():
    images = [render_scene([ShapeObject(shape, "red", (2, 2, 12, 12))], 16) for shape in SHAPES]
    areas = [int((image.sum(dim=0) > 0).sum()) for image in images]
    assert areas[1] == 100  # the square fills its box
    assert areas[2] < areas[0] < areas[1]  # triangle < circle < square


def test_allowed_pairs_respected():
    allowed = {("red", "circle"), ("blue", "square"), ("green", "triangle")}
    scenes = generate_scenes(200, seed=1, allowed_pairs=allowed)
    pairs = {(obj.color, obj.shape) for scene in scenes for obj in scene.objects}
    assert pairs == allowed


def test_object_count_range():
    scenes = generate_scenes(100, seed=2, min_objects=2, max_objects=3)
    counts = {len(scene.objects) for scene in scenes}
    assert counts == {2, 3}


def test_captions_left_to_right_in_both_languages():
    scene = generate_scenes(1, seed=0)[0]
    scene.objects = [
        ShapeObject("square", "blue", (20, 2, 28, 10)),
        ShapeObject("circle", "red", (2, 20, 10, 28)),
    ]
    assert caption_en(scene) == "a red circle and a blue square"
    assert caption_zh(scene) == "一个红色的圆形和一个蓝色的正方形"
    scene.objects.append(ShapeObject("triangle", "yellow", (12, 12, 18, 18)))
    assert caption_en(scene) == "a red circle, a yellow triangle and a blue square"
    assert caption_zh(scene) == "一个红色的圆形、一个黄色的三角形和一个蓝色的正方形"


def _truth(scene, question: str) -> bool:
    """Re-derive a question's answer from the scene's objects, independently of the generator."""
    words = question.rstrip("?").split()
    if words[:2] == ["is", "there"]:
        color, shape = words[3], words[4]
        return any(o.color == color and o.shape == shape for o in scene.objects)
    first = scene.find(words[2])
    if words[3] in COLORS:
        return first.color == words[3]
    second = scene.find(words[-1])
    if words[3] == "above":
        return first.box[3] <= second.box[1]
    assert words[3:5] == ["left", "of"]
    return first.box[2] <= second.box[0]


def test_questions_balanced_correct_and_boxed():
    data = make_question_dataset(301, seed=5)
    assert len(data) == 301 and data.images.shape == (301, 3, 32, 32)
    assert int(data.answers.sum()) == 150  # floor(N / 2) yes
    assert set(data.kinds) == set(QUESTION_KINDS)
    for i, scene in enumerate(data.scenes):
        assert torch.equal(data.images[i], scene.image)
        assert _truth(scene, data.questions[i]) == bool(data.answers[i])
        named = (
            data.questions[i].split()[-1].rstrip("?")
            if data.kinds[i] == "exists"
            else data.questions[i].split()[2]
        )
        obj = scene.find(named)
        if data.has_box[i]:
            assert tuple(data.boxes[i].tolist()) == obj.box
        else:  # only "no" answers of "exists" questions lack a box
            assert data.kinds[i] == "exists" and data.answers[i] == 0
    assert data.questions_zh[0].endswith("吗？")


def test_every_kind_is_balanced_and_text_alone_cannot_answer():
    data = make_question_dataset(1200, seed=0)
    for kind in QUESTION_KINDS:
        answers = data.answers[torch.tensor([k == kind for k in data.kinds])].float()
        assert abs(answers.mean().item() - 0.5) < 0.08
    # the most frequent questions are asked both where they are true and where they are false
    by_text: dict[str, set[int]] = {}
    for question, answer in zip(data.questions, data.answers.tolist(), strict=True):
        by_text.setdefault(question, set()).add(answer)
    frequent = sorted(by_text, key=data.questions.count, reverse=True)[:10]
    assert all(by_text[q] == {0, 1} for q in frequent)


def test_splits_differ_and_are_reproducible():
    a = make_question_splits((20, 10, 10), seed=0)
    b = make_question_splits((20, 10, 10), seed=0)
    assert [len(a[k]) for k in ("train", "val", "test")] == [20, 10, 10]
    assert torch.equal(a["test"].images, b["test"].images)
    assert not torch.equal(a["train"].images[:10], a["val"].images)
    assert not torch.equal(a["val"].images, a["test"].images)


def test_kinds_subset():
    data = make_question_dataset(20, seed=0, kinds=("color",))
    assert set(data.kinds) == {"color"} and bool(data.has_box.all())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_scenes": 0}, "num_scenes"),
        ({"num_scenes": 2, "image_size": 8}, "image_size"),
        ({"num_scenes": 2, "min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"num_scenes": 2, "max_objects": 4}, "max_objects"),
        ({"num_scenes": 2, "allowed_pairs": {("purple", "circle")}}, "allowed_pairs"),
        ({"num_scenes": 2, "allowed_pairs": set()}, "allowed_pairs"),
        ({"num_scenes": 2, "layout": "circle"}, "layout"),
    ],
)
def test_generate_scenes_bad_inputs(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_scenes(**kwargs)


def test_color_queries_name_the_object_and_label_its_colour():
    data = make_question_dataset(60, seed=3, kinds=("color",))
    questions, questions_zh, labels = color_queries(data)
    assert labels.dtype == torch.long and labels.shape == (60,)
    for i, (question, scene) in enumerate(zip(questions, data.scenes, strict=True)):
        asked = data.questions[i].split()[2]  # "is the circle red?" -> "circle"
        assert question == f"what color is the {asked}?"
        assert COLORS[labels[i]] == scene.find(asked).color
        x0, y0, x1, y1 = data.boxes[i].tolist()  # the box is the named object's
        assert tuple(data.boxes[i].tolist()) == scene.find(asked).box
        assert scene.image[:, y0:y1, x0:x1].sum() > 0
    assert questions_zh[0].endswith("是什么颜色？")
    assert len(set(labels.tolist())) == len(COLORS)
    # the same query gets different answers on different images: text alone cannot answer
    assert len({labels[i].item() for i, q in enumerate(questions) if q == questions[0]}) > 1
    with pytest.raises(ValueError, match="data"):
        color_queries(make_question_dataset(10, seed=0, kinds=("exists",)))


def test_question_bad_inputs():
    with pytest.raises(ValueError, match="kinds"):
        make_question_dataset(4, kinds=("count",))
    with pytest.raises(ValueError, match="num_questions"):
        make_question_dataset(0)
    with pytest.raises(ValueError, match="sizes"):
        make_question_splits((10, 10))
    with pytest.raises(ValueError, match="kinds"):  # relations need two objects
        make_question_dataset(4, kinds=("relation",), min_objects=1, max_objects=1)
    with pytest.raises(ValueError, match="objects"):
        render_scene([ShapeObject("circle", "red", (30, 0, 40, 10))], 32)
