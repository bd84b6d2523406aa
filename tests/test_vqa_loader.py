"""The VQA v2 loader and the VQA accuracy metric (mmlearn.data.vqa, book section 7.2)."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmlearn.data.vqa import (
    VQAExample,
    answer_vocabulary,
    coco_image_filename,
    load_vqa,
    normalize_answer,
    vqa_accuracy,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vqa"
QUESTIONS = FIXTURES / "v2_OpenEnded_mscoco_val2014_questions.json"
ANNOTATIONS = FIXTURES / "v2_mscoco_val2014_annotations.json"


def reference_accuracy(prediction: str, answers: list[str]) -> float:
    """Brute force: min(matches / 3, 1) over every subset of all-but-one human answers."""
    subsets = list(combinations(range(len(answers)), len(answers) - 1))
    scores = []
    for subset in subsets:
        matches = sum(normalize_answer(answers[i]) == normalize_answer(prediction) for i in subset)
        scores.append(min(matches / 3, 1.0))
    return sum(scores) / len(scores)


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_fixture_loads_in_question_id_order_with_ten_answers_each():
    examples = load_vqa(QUESTIONS, ANNOTATIONS)
    assert [e.question_id for e in examples] == [42000, 42001, 73000, 73001]
    assert all(len(e.answers) == 10 for e in examples)
    first = examples[0]
    assert first == VQAExample(
        question_id=42000,
        image_id=42,
        question="What color is the circle?",
        answers=("red",) * 7 + ("Red", "orange", "red."),
        multiple_choice_answer="red",
        question_type="what color is the",
        answer_type="other",
    )


def test_questions_alone_give_examples_without_answers():
    examples = load_vqa(QUESTIONS)
    assert len(examples) == 4
    assert all(e.answers == () and e.multiple_choice_answer is None for e in examples)


def test_fixture_is_in_the_official_layout():
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    annotations = json.loads(ANNOTATIONS.read_text(encoding="utf-8"))
    assert {"info", "task_type", "data_type", "data_subtype", "questions", "license"} <= set(
        questions
    )
    assert {"info", "data_type", "data_subtype", "annotations", "license"} <= set(annotations)
    answer = annotations["annotations"][0]["answers"][0]
    assert set(answer) == {"answer", "answer_confidence", "answer_id"}


@pytest.mark.parametrize(
    "count, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)
def test_accuracy_hand_computed_by_number_of_agreeing_humans(count, expected):
    answers = ["cat"] * count + ["dog"] * (10 - count)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_accuracy_on_the_fixture():
    examples = {e.question_id: e for e in load_vqa(QUESTIONS, ANNOTATIONS)}
    # "Red" and "red." normalise to "red": all but one ("orange") of ten agree.
    assert vqa_accuracy("red", examples[42000].answers) == pytest.approx(1.0)
    assert vqa_accuracy("orange", examples[42000].answers) == pytest.approx(0.3)
    # "three" is not mapped to "3" by the light normalisation (the official script would).
    assert vqa_accuracy("three", examples[42001].answers) == pytest.approx(0.3)
    assert vqa_accuracy("2", examples[42001].answers) == pytest.approx(0.6)


answer_lists = st.lists(st.sampled_from(["yes", "no", "2", "red", "Red "]), min_size=2, max_size=10)


@given(answer_lists, st.sampled_from(["yes", "no", "2", "red", "blue"]))
def test_accuracy_matches_the_brute_force_reference(answers, prediction):
    assert vqa_accuracy(prediction, answers) == pytest.approx(
        reference_accuracy(prediction, answers), abs=1e-12
    )


@given(answer_lists, st.sampled_from(["yes", "no", "red"]))
def test_accuracy_lies_in_the_unit_interval_and_grows_with_agreement(answers, prediction):
    score = vqa_accuracy(prediction, answers)
    assert 0.0 <= score <= 1.0
    assert vqa_accuracy(prediction, [*answers, prediction]) >= score - 1e-12


def test_normalize_answer():
    assert normalize_answer("  Two   Dogs. ") == "two dogs"
    assert normalize_answer("yes") == "yes"
    with pytest.raises(TypeError, match="answer"):
        normalize_answer(3)


def test_answer_vocabulary_orders_by_frequency_then_alphabet():
    examples = [
        VQAExample(i, 0, "q", multiple_choice_answer=a)
        for i, a in enumerate(["yes", "no", "Yes", "2", "no", "yes"])
    ]
    assert answer_vocabulary(examples) == ["yes", "no", "2"]
    assert answer_vocabulary(examples, top_k=2) == ["yes", "no"]
    with pytest.raises(ValueError, match="top_k"):
        answer_vocabulary(examples, top_k=0)


def test_coco_image_filename():
    assert coco_image_filename(42) == "COCO_val2014_000000000042.jpg"
    assert coco_image_filename(9, "train2014") == "COCO_train2014_000000000009.jpg"
    with pytest.raises(ValueError, match="image_id"):
        coco_image_filename(-1)
    with pytest.raises(ValueError, match="split"):
        coco_image_filename(1, "val2017")


def test_accuracy_rejects_empty_or_string_answers():
    with pytest.raises(ValueError, match="answers"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="answers"):
        vqa_accuracy("yes", "yes")


def test_wrong_top_level_layout_is_rejected(tmp_path):
    bad = write_json(tmp_path / "q.json", [{"question_id": 1}])
    with pytest.raises(ValueError, match="questions_path"):
        load_vqa(bad)
    wrong_key = write_json(tmp_path / "a.json", {"annotation": []})
    with pytest.raises(ValueError, match="annotations_path"):
        load_vqa(QUESTIONS, wrong_key)


def test_missing_fields_and_repeated_ids_are_rejected(tmp_path):
    no_text = write_json(tmp_path / "q1.json", {"questions": [{"question_id": 1, "image_id": 2}]})
    with pytest.raises(ValueError, match="questions_path.*question"):
        load_vqa(no_text)
    twice = {"questions": [{"question_id": 1, "image_id": 2, "question": "a?"}] * 2}
    with pytest.raises(ValueError, match="repeats"):
        load_vqa(write_json(tmp_path / "q2.json", twice))


def test_annotations_must_match_the_questions(tmp_path):
    annotations = json.loads(ANNOTATIONS.read_text(encoding="utf-8"))
    other_image = json.loads(json.dumps(annotations))
    other_image["annotations"][0]["image_id"] = 999
    with pytest.raises(ValueError, match="annotations_path.*42000"):
        load_vqa(QUESTIONS, write_json(tmp_path / "a1.json", other_image))
    unknown = json.loads(json.dumps(annotations))
    unknown["annotations"][0]["question_id"] = 5
    with pytest.raises(ValueError, match="annotations_path.*5"):
        load_vqa(QUESTIONS, write_json(tmp_path / "a2.json", unknown))
    missing_one = json.loads(json.dumps(annotations))
    del missing_one["annotations"][-1]
    with pytest.raises(ValueError, match="annotations_path.*73001"):
        load_vqa(QUESTIONS, write_json(tmp_path / "a3.json", missing_one))
