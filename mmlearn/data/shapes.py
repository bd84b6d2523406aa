"""The shapes world: seeded images of coloured shapes, captions and yes/no questions.

A scene is a small RGB image (32x32 by default) on a black background with
one to three coloured shapes (circle, square, triangle; red, green, blue,
yellow). Every object keeps its exact bounding box, so we always know where
the things a caption or a question names are: that is what makes attention
maps checkable.

Rules of the world, chosen so that every caption and question is unambiguous:

* each shape appears at most once per scene (colours may repeat), so
  "the circle" always names one object;
* boxes are squares that never overlap and never touch (one pixel of
  background at least between two objects);
* a shape is drawn so that its tight pixel bounding box is exactly its box;
* by default (``layout="grid"``) objects sit in distinct 8x8 cells, so that
  each object lies inside one 8x8 patch: a tiny ViT then learns the task in
  seconds. ``layout="free"`` places them anywhere.

Everything is drawn with NumPy from a seeded ``numpy.random.Generator``: the
same seed gives the same scenes on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmlearn._checks import check_positive_int

__all__ = [
    "COLORS",
    "COLOR_RGB",
    "LAYOUTS",
    "QUESTION_KINDS",
    "SHAPES",
    "QuestionDataset",
    "Scene",
    "ShapeObject",
    "caption_en",
    "caption_zh",
    "color_queries",
    "generate_scenes",
    "make_question_dataset",
    "make_question_splits",
    "render_scene",
]

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow")
COLOR_RGB = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
COLORS_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}
QUESTION_KINDS = ("exists", "color", "relation")
LAYOUTS = ("grid", "free")
CELL = 8  # the "grid" layout puts objects in distinct CELL x CELL cells

_MAX_TRIES = 200  # placement attempts per object before the scene is restarted


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: its shape, colour and box ``(x0, y0, x1, y1)``.

    The box is in pixels, ``x`` to the right and ``y`` downwards; ``x1`` and
    ``y1`` are exclusive, so the object covers ``image[:, y0:y1, x0:x1]``.
    """

    shape: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        """The centre ``(x, y)`` of the box, in pixels."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass
class Scene:
    """An image ``(3, H, W)`` float32 in ``[0, 1]`` and the objects drawn in it."""

    image: torch.Tensor
    objects: list[ShapeObject]

    def find(self, shape: str) -> ShapeObject | None:
        """The object with this shape, or None (a shape appears at most once)."""
        return next((obj for obj in self.objects if obj.shape == shape), None)


# --------------------------------------------------------------------------- drawing


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """A boolean ``(size, size)`` mask of one shape filling its box exactly.

    A pixel belongs to the shape when its centre ``(col + 0.5, row + 0.5)`` does:

    * square: every pixel;
    * circle: the disc inscribed in the box, ``dx^2 + dy^2 <= r^2``;
    * triangle: apex at the top middle, base on the bottom row; row ``y`` keeps
      the pixels within half a width ``(y + 1) / size * size / 2`` of the middle.

    In all three cases the top, bottom, left and right rows of the box contain
    at least one pixel, so the mask's tight bounding box is the whole box.
    """
    centres = np.arange(size) + 0.5
    dx = centres[None, :] - size / 2  # horizontal offset of each pixel centre
    dy = centres[:, None] - size / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return dx**2 + dy**2 <= (size / 2) ** 2
    if shape == "triangle":
        half_width = (np.arange(size)[:, None] + 1) / 2  # grows by 1/2 pixel per row
        return np.abs(dx) <= half_width
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_scene(objects: Sequence[ShapeObject], image_size: int = 32) -> torch.Tensor:
    """Draw ``objects`` on a black ``(3, image_size, image_size)`` image."""
    check_positive_int("image_size", image_size)
    image = np.zeros((image_size, image_size, 3), dtype=np.float32)
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        if not (0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size):
            raise ValueError(f"objects: box {obj.box} does not fit a {image_size}px image")
        if x1 - x0 != y1 - y0:
            raise ValueError(f"objects: box {obj.box} must be a square")
        if obj.color not in COLOR_RGB:
            raise ValueError(f"objects: color must be one of {COLORS}, got {obj.color!r}")
        mask = _shape_mask(obj.shape, x1 - x0)
        image[y0:y1, x0:x1][mask] = COLOR_RGB[obj.color]
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------- scenes


def _check_pairs(allowed_pairs: Collection[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Validate ``allowed_pairs`` (``(color, shape)`` tuples); None means all twelve."""
    if allowed_pairs is None:
        return [(color, shape) for color in COLORS for shape in SHAPES]
    pairs = sorted(set(allowed_pairs))  # sorted: the same draws whatever the set's order
    if not pairs:
        raise ValueError("allowed_pairs must contain at least one (color, shape) pair")
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in COLORS or pair[1] not in SHAPES:
            raise ValueError(
                f"allowed_pairs must hold (color, shape) pairs with color in "
                f"{COLORS} and shape in {SHAPES}, got {pair!r}"
            )
    return pairs


def _check_scene_args(
    image_size: int, min_objects: int, max_objects: int, pairs: list[tuple[str, str]], layout: str
) -> None:
    check_positive_int("image_size", image_size)
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    check_positive_int("min_objects", min_objects)
    check_positive_int("max_objects", max_objects)
    if min_objects > max_objects:
        raise ValueError(f"min_objects ({min_objects}) must not exceed max_objects ({max_objects})")
    if layout == "grid" and max_objects > (image_size // CELL) ** 2:
        raise ValueError(
            f"max_objects ({max_objects}) exceeds the {(image_size // CELL) ** 2} "
            f"cells of a {image_size}px grid layout"
        )
    shapes = {shape for _, shape in pairs}
    if max_objects > len(shapes):
        raise ValueError(
            f"max_objects ({max_objects}) exceeds the number of distinct shapes "
            f"allowed ({len(shapes)}): each shape appears at most once per scene"
        )


def _grid_boxes(
    rng: np.random.Generator, image_size: int, num_objects: int
) -> list[tuple[int, int, int, int]]:
    """Boxes in distinct cells of the ``(image_size // CELL)``-square grid of ``CELL`` px cells.

    An object fills its cell but for the cell's last row and column
    (``CELL - 1`` pixels a side), so two objects never touch.
    """
    grid = image_size // CELL
    boxes = []
    for index in rng.choice(grid * grid, size=num_objects, replace=False):
        row, col = divmod(int(index), grid)
        x0, y0 = col * CELL, row * CELL
        boxes.append((x0, y0, x0 + CELL - 1, y0 + CELL - 1))
    return boxes


def _boxes_apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """True when two boxes neither overlap nor touch (a one-pixel gap at least)."""
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def _free_boxes(
    rng: np.random.Generator, image_size: int, num_objects: int
) -> list[tuple[int, int, int, int]] | None:
    """Boxes of ``image_size // 4`` to ``image_size // 3`` pixels anywhere, kept apart.

    Returns None when an object found no free place (the caller draws again).
    """
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(num_objects):
        size = int(rng.integers(image_size // 4, image_size // 3 + 1))
        for _ in range(_MAX_TRIES):
            x0, y0 = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
            box = (x0, y0, x0 + size, y0 + size)
            if all(_boxes_apart(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _random_scene(
    rng: np.random.Generator,
    image_size: int,
    min_objects: int,
    max_objects: int,
    pairs: list[tuple[str, str]],
    layout: str,
) -> Scene:
    """One scene: how many objects, their boxes, then a (colour, distinct shape) for each."""
    while True:
        num_objects = int(rng.integers(min_objects, max_objects + 1))
        if layout == "grid":
            boxes = _grid_boxes(rng, image_size, num_objects)
        else:
            boxes = _free_boxes(rng, image_size, num_objects)
        if boxes is not None:
            break
    objects: list[ShapeObject] = []
    for box in boxes:
        used = {obj.shape for obj in objects}
        choices = [pair for pair in pairs if pair[1] not in used]
        color, shape = choices[rng.integers(len(choices))]
        objects.append(ShapeObject(shape, color, box))
    return Scene(render_scene(objects, image_size), objects)


def generate_scenes(
    num_scenes: int,
    *,
    image_size: int = 32,
    min_objects: int = 1,
    max_objects: int = 3,
    seed: int = 0,
    allowed_pairs: Collection[tuple[str, str]] | None = None,
    layout: str = "grid",
) -> list[Scene]:
    """Generate ``num_scenes`` random scenes, reproducibly from ``seed``.

    Args:
        num_scenes: how many scenes.
        image_size: the side of the square images, in pixels (at least 16).
        min_objects, max_objects: the number of objects per scene is drawn
            uniformly in ``[min_objects, max_objects]`` (at most 3: shapes are distinct).
        seed: the seed; the first ``n`` scenes do not depend on ``num_scenes``.
        allowed_pairs: optional set of ``(color, shape)`` pairs that objects may take,
            for example to hold "red circle" out of a training set.
        layout: ``"grid"`` (default): each object sits in its own 8x8 cell of the image
            (a 4x4 grid for 32x32 images), one pixel smaller than the cell, so every
            object lies inside one 8x8 patch of the book's ViTs.
            ``"free"``: objects of ``image_size // 4`` to ``image_size // 3`` pixels
            anywhere, so an object usually straddles several patches; a small ViT
            then needs far more training to tell the shapes apart.

    Returns:
        A list of :class:`Scene`.
    """
    check_positive_int("num_scenes", num_scenes)
    pairs = _check_pairs(allowed_pairs)
    _check_scene_args(image_size, min_objects, max_objects, pairs, layout)
    rng = np.random.default_rng(seed)
    return [
        _random_scene(rng, image_size, min_objects, max_objects, pairs, layout)
        for _ in range(num_scenes)
    ]


# --------------------------------------------------------------------------- captions


def _left_to_right(scene: Scene) -> list[ShapeObject]:
    return sorted(scene.objects, key=lambda obj: (obj.center[0], obj.center[1]))


def caption_en(scene: Scene) -> str:
    """An English caption naming the objects from left to right.

    Example: ``"a red circle, a green triangle and a blue square"``.
    """
    names = [f"a {obj.color} {obj.shape}" for obj in _left_to_right(scene)]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def caption_zh(scene: Scene) -> str:
    """The Chinese caption, same order: ``"一个红色的圆形、一个绿色的三角形和一个蓝色的正方形"``."""
    names = [f"一个{COLORS_ZH[obj.color]}的{SHAPES_ZH[obj.shape]}" for obj in _left_to_right(scene)]
    if len(names) == 1:
        return names[0]
    return "、".join(names[:-1]) + "和" + names[-1]


# --------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class _Question:
    text_en: str
    text_zh: str
    answer: bool
    box: tuple[int, int, int, int] | None  # the named object's box; None if it is absent


def _exists_question(
    scene: Scene, answer: bool, pairs: list[tuple[str, str]], rng: random.Random
) -> _Question | None:
    """ "is there a red circle?": yes iff an object has that colour and shape."""
    present = {(obj.color, obj.shape): obj for obj in scene.objects}
    if answer:
        color, shape = rng.choice(sorted(present))
        box = present[(color, shape)].box
    else:
        # A hard negative when possible: a shape of the scene in a colour it does not have.
        absent = [pair for pair in pairs if pair not in present]
        hard = [pair for pair in absent if scene.find(pair[1]) is not None]
        if not absent:
            return None
        color, shape = rng.choice(hard or absent)
        box = None
    return _Question(
        f"is there a {color} {shape}?",
        f"图中有{COLORS_ZH[color]}的{SHAPES_ZH[shape]}吗？",
        answer,
        box,
    )


def _color_question(scene: Scene, answer: bool, rng: random.Random) -> _Question:
    """ "is the circle red?": asks the colour of a shape that is in the scene."""
    obj = rng.choice(scene.objects)
    color = obj.color if answer else rng.choice([c for c in COLORS if c != obj.color])
    return _Question(
        f"is the {obj.shape} {color}?",
        f"{SHAPES_ZH[obj.shape]}是{COLORS_ZH[color]}的吗？",
        answer,
        obj.box,
    )


def _relation(a: ShapeObject, b: ShapeObject, relation: str) -> bool | None:
    """Whether ``a`` is entirely above / left of ``b``; None when it is not clear-cut.

    "above" is asked only of boxes that do not share a row (one is entirely above
    the other), "left of" only of boxes that do not share a column.
    """
    start, end = (1, 3) if relation == "above" else (0, 2)
    if a.box[end] <= b.box[start]:
        return True
    if b.box[end] <= a.box[start]:
        return False
    return None


def _relation_question(scene: Scene, answer: bool, rng: random.Random) -> _Question | None:
    """ "is the circle above the square?" / "is the circle left of the square?"."""
    candidates = [
        (a, b, relation)
        for a in scene.objects
        for b in scene.objects
        if a is not b
        for relation in ("above", "left of")
        if _relation(a, b, relation) == answer
    ]
    if not candidates:
        return None
    a, b, relation = rng.choice(candidates)
    relation_zh = "上方" if relation == "above" else "左边"
    return _Question(
        f"is the {a.shape} {relation} the {b.shape}?",
        f"{SHAPES_ZH[a.shape]}在{SHAPES_ZH[b.shape]}的{relation_zh}吗？",
        answer,
        a.box,
    )


def _ask(
    scene: Scene, kind: str, answer: bool, pairs: list[tuple[str, str]], rng: random.Random
) -> _Question | None:
    if kind == "exists":
        return _exists_question(scene, answer, pairs, rng)
    if kind == "color":
        return _color_question(scene, answer, rng)
    return _relation_question(scene, answer, rng)


@dataclass
class QuestionDataset:
    """Yes/no questions about scenes, one question per scene.

    Attributes:
        images: ``(N, 3, H, W)`` float32 in ``[0, 1]``.
        questions: the English questions; ``questions_zh`` the Chinese ones.
        answers: ``(N,)`` long, 1 = yes, 0 = no (exactly balanced for even ``N``).
        kinds: each question's kind, one of ``QUESTION_KINDS``.
        boxes: ``(N, 4)`` long, the box ``(x0, y0, x1, y1)`` of the object the
            question names first; ``-1`` everywhere when that object is not in the
            image (the "no" answers of "exists" questions).
        scenes: the scenes, with all their objects.
    """

    images: torch.Tensor
    questions: list[str]
    questions_zh: list[str]
    answers: torch.Tensor
    kinds: list[str]
    boxes: torch.Tensor
    scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def has_box(self) -> torch.Tensor:
        """``(N,)`` bool: the named object is in the image."""
        return self.boxes[:, 0] >= 0


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if not kinds or any(kind not in QUESTION_KINDS for kind in kinds):
        raise ValueError(f"kinds must be a non-empty sequence of {QUESTION_KINDS}, got {kinds!r}")
    return kinds


def make_question_dataset(
    num_questions: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    kinds: Sequence[str] = QUESTION_KINDS,
    min_objects: int = 2,
    max_objects: int = 3,
    allowed_pairs: Collection[tuple[str, str]] | None = None,
    layout: str = "grid",
) -> QuestionDataset:
    """Generate ``num_questions`` yes/no questions that need both the image and the text.

    Every question's answer depends on the image (the same question is asked of
    images where it is true and of images where it is false) and on the text
    (the same image gets questions answered yes and questions answered no).
    Answers are exactly balanced: ``num_questions // 2`` are yes (one more no
    when ``num_questions`` is odd), in a random order. Kinds are drawn uniformly:

    * ``"exists"``: "is there a red circle?";
    * ``"color"``: "is the circle red?";
    * ``"relation"``: "is the circle above the square?", "is the circle left of the square?"
      (asked only where the answer is clear-cut: the boxes do not share a row, or a column).

    Args:
        num_questions: how many (scene, question, answer) triples.
        image_size, min_objects, max_objects, allowed_pairs, layout: as in
            :func:`generate_scenes`
            (at least 2 objects by default, so that relations can be asked).
        seed: the seed; splits use different seeds (see :func:`make_question_splits`).
        kinds: which question kinds to ask.
    """
    check_positive_int("num_questions", num_questions)
    kinds = _check_kinds(kinds)
    pairs = _check_pairs(allowed_pairs)
    _check_scene_args(image_size, min_objects, max_objects, pairs, layout)
    np_rng = np.random.default_rng(seed)
    rng = random.Random(seed)
    answers = [True] * (num_questions // 2) + [False] * (num_questions - num_questions // 2)
    rng.shuffle(answers)
    scenes, asked, kind_list = [], [], []
    for answer in answers:
        kind = rng.choice(kinds)
        for _ in range(_MAX_TRIES):  # a new scene until this kind/answer can be asked of it
            scene = _random_scene(np_rng, image_size, min_objects, max_objects, pairs, layout)
            question = _ask(scene, kind, answer, pairs, rng)
            if question is not None:
                break
        else:
            raise ValueError(
                f"kinds: cannot ask a {kind!r} question answered {answer} with "
                f"allowed_pairs={pairs} and {min_objects}-{max_objects} objects"
            )
        scenes.append(scene)
        asked.append(question)
        kind_list.append(kind)
    boxes = torch.tensor(
        [q.box if q.box is not None else (-1, -1, -1, -1) for q in asked], dtype=torch.long
    )
    return QuestionDataset(
        images=torch.stack([scene.image for scene in scenes]),
        questions=[q.text_en for q in asked],
        questions_zh=[q.text_zh for q in asked],
        answers=torch.tensor([int(q.answer) for q in asked], dtype=torch.long),
        kinds=kind_list,
        boxes=boxes,
        scenes=scenes,
    )


def make_question_splits(
    sizes: tuple[int, int, int] = (2000, 500, 500), *, seed: int = 0, **kwargs
) -> dict[str, QuestionDataset]:
    """Train, validation and test question sets drawn with three different seeds.

    The split seeds are derived from ``seed`` with ``numpy.random.SeedSequence``, so
    the three splits are independent draws; ``kwargs`` go to :func:`make_question_dataset`.
    """
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, val, test), got {sizes!r}")
    children = np.random.SeedSequence(seed).spawn(3)
    seeds = [int(child.generate_state(1)[0]) for child in children]
    return {
        name: make_question_dataset(size, seed=split_seed, **kwargs)
        for name, size, split_seed in zip(("train", "val", "test"), sizes, seeds, strict=True)
    }


def color_queries(data: QuestionDataset) -> tuple[list[str], list[str], torch.Tensor]:
    """Recast ``"color"`` yes/no questions as four-way queries "what color is the circle?".

    "is the circle red?" becomes "what color is the circle?" with the label
    ``COLORS.index(circle's colour)``: the text says *which* object, the image says
    its colour, so neither modality alone can answer; and the model need not
    compare two colours (the yes/no version asks for that extra step).

    Args:
        data: a :class:`QuestionDataset` whose questions are all of kind ``"color"``
            (``make_question_dataset(..., kinds=("color",))``).

    Returns:
        ``(questions, questions_zh, labels (N,) long in [0, len(COLORS)))``.
    """
    if any(kind != "color" for kind in data.kinds):
        raise ValueError(
            f"data must hold only 'color' questions, got kinds {sorted(set(data.kinds))}"
        )
    shapes = [question.split()[2] for question in data.questions]
    labels = [
        COLORS.index(scene.find(shape).color)
        for scene, shape in zip(data.scenes, shapes, strict=True)
    ]
    return (
        [f"what color is the {shape}?" for shape in shapes],
        [f"{SHAPES_ZH[shape]}是什么颜色？" for shape in shapes],
        torch.tensor(labels, dtype=torch.long),
    )
