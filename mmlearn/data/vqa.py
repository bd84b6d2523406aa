"""A loader for the VQA v2 question and annotation files, and the VQA accuracy metric.

VQA v2 (Goyal et al., 2017) ships, per split, one questions file and (except
for the test splits) one annotations file:

- ``v2_OpenEnded_mscoco_<split>_questions.json``:
  ``{"questions": [{"image_id", "question", "question_id"}, ...], ...}``
- ``v2_mscoco_<split>_annotations.json``:
  ``{"annotations": [{"question_id", "image_id", "answers": [{"answer", ...}, ...],
  "multiple_choice_answer", "question_type", "answer_type"}, ...], ...}``

Each question has ten human answers. The images are MS COCO images, named
``COCO_<split>_<image_id as 12 digits>.jpg`` in the 2014 splits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "VQAExample",
    "answer_vocabulary",
    "coco_image_filename",
    "load_vqa",
    "normalize_answer",
    "vqa_accuracy",
]


@dataclass(frozen=True)
class VQAExample:
    """One question about one image, with its human answers when the split has them."""

    question_id: int
    image_id: int
    question: str
    answers: tuple[str, ...] = ()
    multiple_choice_answer: str | None = None
    question_type: str | None = None
    answer_type: str | None = None


def _read_list(path: str | Path, key: str, argument: str) -> list[dict]:
    """Read ``path`` (JSON) and return the list stored under ``key``."""
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise ValueError(f"{argument} must be a JSON object with a list under {key!r}: {path}")
    return document[key]


def _require(record: dict, fields: Sequence[str], argument: str, index: int) -> None:
    missing = [field for field in fields if field not in record]
    if missing:
        raise ValueError(f"{argument}: entry {index} lacks the field(s) {missing}")


def _read_questions(path: str | Path) -> dict[int, dict]:
    questions: dict[int, dict] = {}
    for index, record in enumerate(_read_list(path, "questions", "questions_path")):
        _require(record, ("question_id", "image_id", "question"), "questions_path", index)
        if record["question_id"] in questions:
            raise ValueError(f"questions_path: question_id {record['question_id']} repeats")
        questions[record["question_id"]] = record
    return questions


def _read_annotations(path: str | Path, questions: dict[int, dict]) -> dict[int, dict]:
    annotations: dict[int, dict] = {}
    fields = ("question_id", "image_id", "answers")
    for index, record in enumerate(_read_list(path, "annotations", "annotations_path")):
        _require(record, fields, "annotations_path", index)
        question = questions.get(record["question_id"])
        if question is None:
            raise ValueError(
                f"annotations_path: question_id {record['question_id']} "
                "has no question in questions_path"
            )
        if question["image_id"] != record["image_id"]:
            raise ValueError(
                f"annotations_path: question_id {record['question_id']} is on "
                f"image {record['image_id']}, its question on {question['image_id']}"
            )
        annotations[record["question_id"]] = record
    unanswered = sorted(set(questions) - set(annotations))
    if unanswered:
        raise ValueError(f"annotations_path has no annotation for question_id(s) {unanswered[:5]}")
    return annotations


def load_vqa(
    questions_path: str | Path, annotations_path: str | Path | None = None
) -> list[VQAExample]:
    """Load VQA v2 questions (and, when given, their annotations), ordered by question id.

    Without ``annotations_path`` (the test splits) every example has empty
    ``answers``. With it, every question must have exactly one annotation on
    the same image, or a ``ValueError`` names the offending id.
    """
    questions = _read_questions(questions_path)
    annotations = {} if annotations_path is None else _read_annotations(annotations_path, questions)
    examples = []
    for question_id in sorted(questions):
        question = questions[question_id]
        note = annotations.get(question_id, {})
        examples.append(
            VQAExample(
                question_id=question_id,
                image_id=question["image_id"],
                question=question["question"],
                answers=tuple(answer["answer"] for answer in note.get("answers", ())),
                multiple_choice_answer=note.get("multiple_choice_answer"),
                question_type=note.get("question_type"),
                answer_type=note.get("answer_type"),
            )
        )
    return examples


def normalize_answer(answer: str) -> str:
    """Lower-case, trim, collapse inner whitespace and drop a final full stop.

    The official evaluation script does more (it also maps number words to
    digits, removes articles and most punctuation); this light version is
    enough for the book's generated answers and is applied to both sides.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    return " ".join(answer.lower().split()).removesuffix(".").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA accuracy of one predicted answer against the human answers.

    ``min(#humans who gave the prediction / 3, 1)`` (Antol et al., 2015),
    averaged, as the official evaluation code does, over the ten ways of
    leaving one of the ten human answers out. An answer given by 1, 2, 3 or at
    least 4 of 10 people scores 0.3, 0.6, 0.9 or 1.
    """
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError("answers must be a non-empty sequence of strings (the human answers)")
    predicted = normalize_answer(prediction)
    matches = [normalize_answer(answer) == predicted for answer in answers]
    total = sum(matches)
    scores = [min((total - left_out) / 3.0, 1.0) for left_out in matches]
    return sum(scores) / len(scores)


def answer_vocabulary(examples: Sequence[VQAExample], top_k: int | None = None) -> list[str]:
    """The most frequent ``multiple_choice_answer`` values, most frequent first.

    VQA models are usually trained as classifiers over the most frequent
    answers of the training split. Ties break alphabetically.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    counts = Counter(
        normalize_answer(example.multiple_choice_answer)
        for example in examples
        if example.multiple_choice_answer is not None
    )
    ranked = sorted(counts, key=lambda answer: (-counts[answer], answer))
    return ranked if top_k is None else ranked[:top_k]


def coco_image_filename(image_id: int, split: str = "val2014") -> str:
    """The COCO 2014 file name of ``image_id``, e.g. ``COCO_val2014_000000000042.jpg``."""
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
        raise ValueError(f"image_id must be a non-negative integer, got {image_id!r}")
    if split not in ("train2014", "val2014", "test2015"):
        raise ValueError(f"split must be 'train2014', 'val2014' or 'test2015', got {split!r}")
    return f"COCO_{split}_{image_id:012d}.jpg"
