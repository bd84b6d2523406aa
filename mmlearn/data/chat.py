"""Chat data for a small multimodal language model (book section 3.4).

Three pieces, in the order a LLaVA-style model needs them:

* :class:`ChatTokenizer`: a word-level tokenizer whose special tokens make the chat
  template: ``<image>`` (where the image tokens go), ``<user>`` and ``<assistant>``
  (who speaks), ``<eot>`` (end of turn). A conversation reads::

      <user> <image> what color is the circle ? <eot> <assistant> red <eot>
      <user> how many objects are there ? <eot> <assistant> 2 <eot>

* :func:`answer_mask` and :func:`encode_chat`: the labels of a conversation keep only
  the assistant's answer tokens and the ``<eot>`` that closes each answer (so the
  model learns to stop); every other position holds :data:`IGNORE_INDEX`.
* :func:`make_shapes_chat`: shapes-world scenes whose colours follow a skewed prior
  (each shape has a typical colour), with multi-turn questions of six kinds, their
  captions, and POPE-style yes/no probes (:func:`pope_questions`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmlearn._checks import check_positive_int, check_probability, check_tensor
from mmlearn.data.shapes import (
    COLORS,
    SHAPES,
    Scene,
    ShapeObject,
    _grid_boxes,
    _relation,
    caption_en,
    render_scene,
)
from mmlearn.data.shapes_vqa import answer_question, ask

__all__ = [
    "ASSISTANT",
    "CHAT_KINDS",
    "EOT",
    "IGNORE_INDEX",
    "IMAGE",
    "POPE_SETTINGS",
    "TYPICAL_COLOR",
    "USER",
    "ChatTokenizer",
    "ShapesChat",
    "answer_mask",
    "ask_chat",
    "chat_text",
    "collate_chat",
    "encode_chat",
    "encode_prompt",
    "make_shapes_chat",
    "pope_questions",
    "skewed_scenes",
]

PAD, UNK = "<pad>", "<unk>"
IMAGE, USER, ASSISTANT, EOT = "<image>", "<user>", "<assistant>", "<eot>"
SPECIAL_TOKENS = (PAD, UNK, IMAGE, USER, ASSISTANT, EOT)
IGNORE_INDEX = -100  # the default ignore_index of F.cross_entropy
CHAT_KINDS = ("color", "shape", "count", "position", "exists", "describe")
DESCRIBE = "describe the image ."
TYPICAL_COLOR = {"circle": "red", "square": "blue", "triangle": "green"}
POPE_SETTINGS = ("random", "popular", "adversarial")
_TOKEN = re.compile(r"<[a-z]+>|[a-z0-9]+|[^\sa-z0-9]")


class ChatTokenizer:
    """Word-level tokenizer with the chat template's special tokens.

    Ids 0-5 are ``<pad> <unk> <image> <user> <assistant> <eot>``; words follow.
    Special tokens are written in the text as they are (``"<user> <image> hi"``).
    """

    def __init__(self, words: Sequence[str]):
        self.itos: list[str] = [*SPECIAL_TOKENS, *(w for w in words if w not in SPECIAL_TOKENS)]
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> ChatTokenizer:
        """Build the vocabulary from ``texts``, most frequent words first."""
        counts = Counter(token for text in texts for token in cls.split(text))
        return cls(sorted(counts, key=lambda w: (-counts[w], w)))

    @staticmethod
    def split(text: str) -> list[str]:
        """Lower-cased words, punctuation marks and ``<special>`` tokens."""
        return _TOKEN.findall(text.lower())

    def __len__(self) -> int:
        return len(self.itos)

    def __getattr__(self, name: str) -> int:
        """``pad_id``, ``image_id``, ``user_id``, ``assistant_id``, ``eot_id``, ``unk_id``."""
        specials = {
            "pad_id": PAD,
            "unk_id": UNK,
            "image_id": IMAGE,
            "user_id": USER,
            "assistant_id": ASSISTANT,
            "eot_id": EOT,
        }
        if name in specials:
            return self.stoi[specials[name]]
        raise AttributeError(name)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text (unknown words map to ``<unk>``)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [self.stoi.get(token, self.stoi[UNK]) for token in self.split(text)]

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True) -> str:
        """The text of ``ids``; special tokens dropped unless ``skip_special`` is False."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        tokens = [self.itos[i] for i in values]
        if skip_special:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        return " ".join(tokens)


# --------------------------------------------------------------------------- template


def _user_turn(question: str, with_image: bool) -> str:
    return f"{USER} {IMAGE + ' ' if with_image else ''}{question} {EOT} {ASSISTANT}"


def chat_text(turns: Sequence[tuple[str, str]], with_image: bool = True) -> str:
    """The chat template of ``(question, answer)`` turns; the image goes in the first turn."""
    return " ".join(
        f"{_user_turn(q, with_image and i == 0)} {a} {EOT}" for i, (q, a) in enumerate(turns)
    )


def answer_mask(ids: torch.Tensor, assistant_id: int, eot_id: int) -> torch.Tensor:
    """True at the tokens the loss trains: each answer and the ``<eot>`` that ends it.

    A position counts when, among the tokens strictly before it, the last
    ``<assistant>`` comes after the last ``<eot>``: the answer's words, then the
    ``<eot>`` that closes it. ``<assistant>`` itself belongs to the prompt.

    Args:
        ids: ``(B, L)`` or ``(L,)`` token ids.
        assistant_id, eot_id: the ids of ``<assistant>`` and ``<eot>``.

    Returns:
        A boolean tensor shaped like ``ids``.
    """
    check_tensor("ids", ids, ndim=(1, 2))
    if ids.is_floating_point():
        raise TypeError(f"ids must hold integer token ids, got {ids.dtype}")
    positions = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
    none = torch.full_like(positions, -1)
    is_assistant = ids == assistant_id
    last_assistant = torch.where(is_assistant, positions, none).cummax(-1).values
    last_eot = torch.where(ids == eot_id, positions, none).cummax(-1).values
    # what was the last marker *before* each position: an opened answer, or a closed turn?
    before_assistant = torch.cat([none[..., :1], last_assistant[..., :-1]], dim=-1)
    before_eot = torch.cat([none[..., :1], last_eot[..., :-1]], dim=-1)
    return (before_assistant > before_eot) & ~is_assistant


def encode_chat(
    tokenizer: ChatTokenizer, turns: Sequence[tuple[str, str]], with_image: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (L,), labels (L,))`` of one conversation; labels are answer-only."""
    if not turns:
        raise ValueError("turns must hold at least one (question, answer) pair")
    ids = torch.tensor(tokenizer.encode(chat_text(turns, with_image)), dtype=torch.long)
    mask = answer_mask(ids, tokenizer.assistant_id, tokenizer.eot_id)
    return ids, torch.where(mask, ids, torch.full_like(ids, IGNORE_INDEX))


def encode_prompt(
    tokenizer: ChatTokenizer,
    question: str,
    with_image: bool = True,
    history: Sequence[tuple[str, str]] = (),
) -> list[int]:
    """Ids of a prompt that ends with ``<assistant>``: the model writes the answer next."""
    before = chat_text(history, with_image) + " " if history else ""
    image_here = with_image and not history
    return tokenizer.encode(before + _user_turn(question, image_here))


def collate_chat(
    examples: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(ids, labels)`` pairs into ``(B, L)`` tensors (labels padded with -100)."""
    if not examples:
        raise ValueError("examples must not be empty")
    length = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, (example_ids, example_labels) in enumerate(examples):
        ids[row, : len(example_ids)] = example_ids
        labels[row, : len(example_labels)] = example_labels
    return ids, labels


# --------------------------------------------------------------------------- scenes


def _skewed_pair(rng: np.random.Generator, shape: str, typical: float) -> str:
    """A colour for ``shape``: its typical colour with probability ``typical``."""
    if rng.random() < typical:
        return TYPICAL_COLOR[shape]
    return str(rng.choice([c for c in COLORS if c != TYPICAL_COLOR[shape]]))


def skewed_scenes(
    num_scenes: int,
    *,
    seed: int = 0,
    image_size: int = 32,
    typical: float = 0.55,
    max_objects: int = 3,
) -> list[Scene]:
    """Grid-layout scenes of 1 to ``max_objects`` distinct shapes with skewed colours.

    Each shape takes its :data:`TYPICAL_COLOR` with probability ``typical``, another
    colour otherwise: a prior a language model can learn, and lean on when it cannot see.
    """
    check_positive_int("num_scenes", num_scenes)
    check_probability("typical", typical)
    if not 1 <= max_objects <= len(SHAPES):
        raise ValueError(f"max_objects must be in [1, {len(SHAPES)}], got {max_objects}")
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(num_scenes):
        count = int(rng.integers(1, max_objects + 1))
        shapes = rng.choice(SHAPES, size=count, replace=False)
        objects = [
            ShapeObject(str(s), _skewed_pair(rng, str(s), typical), box)
            for s, box in zip(shapes, _grid_boxes(rng, image_size, count), strict=True)
        ]
        scenes.append(Scene(render_scene(objects, image_size), objects))
    return scenes


def _position_question(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    candidates = [
        (a, b, rel)
        for a in scene.objects
        for b in scene.objects
        if a is not b
        for rel in ("above", "left of")
        if _relation(a, b, rel) is not None
    ]
    if not candidates:
        return None
    a, b, rel = rng.choice(candidates)
    answer = "yes" if _relation(a, b, rel) else "no"
    return f"is the {a.shape} {rel} the {b.shape} ?", answer


def ask_chat(scene: Scene, kind: str, rng: random.Random) -> tuple[str, str] | None:
    """A ``(question, answer)`` of ``kind`` about ``scene``, or None if it cannot be asked."""
    if kind == "describe":
        return DESCRIBE, caption_en(scene).replace(",", " ,")
    if kind == "position":
        return _position_question(scene, rng)
    if kind not in CHAT_KINDS:
        raise ValueError(f"kind must be one of {CHAT_KINDS}, got {kind!r}")
    question = ask(scene, kind, rng)
    if question is None:
        return None
    return question.replace("?", " ?"), answer_question(scene, question)


@dataclass
class ShapesChat:
    """Scenes and their conversations.

    Attributes:
        images: ``(N, 3, H, W)`` float32 in ``[0, 1]``.
        scenes: the scenes (objects and boxes).
        conversations: per scene, a list of ``(question, answer, kind)`` turns.
        captions: per scene, its English caption (the answer to ``describe``).
    """

    images: torch.Tensor
    scenes: list[Scene]
    conversations: list[list[tuple[str, str, str]]]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.scenes)


def _check_weights(kind_weights: dict[str, float] | None) -> dict[str, float]:
    weights = dict.fromkeys(CHAT_KINDS, 1.0) if kind_weights is None else dict(kind_weights)
    if not weights or any(k not in CHAT_KINDS or not w > 0 for k, w in weights.items()):
        raise ValueError(
            f"kind_weights must map kinds of {CHAT_KINDS} to positive weights, got {kind_weights!r}"
        )
    return weights


def make_shapes_chat(
    num_scenes: int,
    *,
    seed: int = 0,
    turns: int = 4,
    kind_weights: dict[str, float] | None = None,
    image_size: int = 32,
    typical: float = 0.55,
) -> ShapesChat:
    """Scenes from :func:`skewed_scenes`, each with ``turns`` questions of random kinds.

    Kinds are drawn with ``kind_weights`` (uniform by default), so harder kinds can be
    asked more often; a kind that cannot be asked of a scene, or a question already
    asked in the conversation, is drawn again.
    """
    check_positive_int("turns", turns)
    weights = _check_weights(kind_weights)
    scenes = skewed_scenes(num_scenes, seed=seed, image_size=image_size, typical=typical)
    rng = random.Random(seed)
    kinds, probs = list(weights), list(weights.values())
    conversations = []
    for scene in scenes:
        conversation: list[tuple[str, str, str]] = []
        while len(conversation) < turns:
            kind = rng.choices(kinds, probs)[0]
            asked = ask_chat(scene, kind, rng)
            if asked is not None and all(asked[0] != q for q, _, _ in conversation):
                conversation.append((*asked, kind))
        conversations.append(conversation)
    return ShapesChat(
        torch.stack([s.image for s in scenes]),
        scenes,
        conversations,
        [caption_en(s).replace(",", " ,") for s in scenes],
    )


# --------------------------------------------------------------------------- POPE


def _pope_negative(
    scene: Scene, setting: str, popularity: Sequence[tuple[str, str]], rng: random.Random
) -> tuple[str, str]:
    present = {(o.color, o.shape) for o in scene.objects}
    absent = [p for p in popularity if p not in present]  # most popular first
    if setting == "random":
        return rng.choice(absent)
    if setting == "popular":
        return absent[0]
    # adversarial: the most popular absent object whose shape is in the scene in another colour
    shapes = {shape for _, shape in present}
    return next((p for p in absent if p[1] in shapes), absent[0])


def pope_questions(
    scenes: Sequence[Scene],
    setting: str,
    popularity: Sequence[tuple[str, str]],
    seed: int = 0,
) -> list[tuple[int, str, str]]:
    """POPE-style probes (Li et al. 2023): ``(scene index, question, "yes"/"no")``.

    Each scene gets one "yes" question about an object it has and one "no" question
    about an object it lacks, so the answers are exactly balanced. The absent object is

    * ``"random"``: any absent (colour, shape) pair;
    * ``"popular"``: the absent pair most frequent in the training data (``popularity``,
      all twelve pairs sorted from most to least frequent);
    * ``"adversarial"``: the most frequent absent pair whose shape *is* in the scene
      (in another colour): the object that co-occurs with what is there.
    """
    if setting not in POPE_SETTINGS:
        raise ValueError(f"setting must be one of {POPE_SETTINGS}, got {setting!r}")
    if sorted(popularity) != sorted((c, s) for c in COLORS for s in SHAPES):
        raise ValueError("popularity must list all (color, shape) pairs once")
    rng = random.Random(seed)
    probes = []
    for index, scene in enumerate(scenes):
        obj = rng.choice(scene.objects)
        color, shape = _pope_negative(scene, setting, popularity, rng)
        probes.append((index, f"is there a {obj.color} {obj.shape} ?", "yes"))
        probes.append((index, f"is there a {color} {shape} ?", "no"))
    return probes
