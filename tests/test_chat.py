"""Chat template, answer-only labels and the shapes-world chat data (book section 3.4)."""

import pytest
import torch

from mmlearn.data.chat import (
    CHAT_KINDS,
    IGNORE_INDEX,
    POPE_SETTINGS,
    TYPICAL_COLOR,
    ChatTokenizer,
    answer_mask,
    chat_text,
    collate_chat,
    encode_chat,
    encode_prompt,
    make_shapes_chat,
    pope_questions,
    skewed_scenes,
)
from mmlearn.data.shapes import COLORS, SHAPES
from mmlearn.data.shapes_vqa import answer_question

PAIRS = [(c, s) for c in COLORS for s in SHAPES]


@pytest.fixture(scope="module")
def data():
    return make_shapes_chat(40, seed=3, turns=4, image_size=24)


@pytest.fixture(scope="module")
def tokenizer(data):
    return ChatTokenizer.from_texts(
        chat_text([(q, a) for q, a, _ in c]) for c in data.conversations
    )


def test_tokenizer_keeps_special_tokens_whole(tokenizer):
    ids = tokenizer.encode("<user> <image> what color is the circle ? <eot> <assistant>")
    assert ids[:2] == [tokenizer.user_id, tokenizer.image_id]
    assert ids[-2:] == [tokenizer.eot_id, tokenizer.assistant_id]
    assert tokenizer.decode(ids) == "what color is the circle ?"
    assert tokenizer.encode("zebra") == [tokenizer.unk_id]


def _brute_force_mask(tokens):
    """Walk the tokens: inside an answer from after <assistant> up to its <eot>."""
    mask, inside = [], False
    for token in tokens:
        if token == "<assistant>":
            mask.append(False)
            inside = True
        elif token == "<eot>":
            mask.append(inside)
            inside = False
        else:
            mask.append(inside)
    return mask


def test_answer_mask_keeps_answers_and_their_eot_only(tokenizer):
    turns = [("how many objects are there ?", "2"), ("describe the image .", "a red circle")]
    ids, labels = encode_chat(tokenizer, turns)
    kept = [
        tokenizer.itos[i]
        for i, label in zip(ids.tolist(), labels.tolist(), strict=True)
        if label != IGNORE_INDEX
    ]
    assert kept == ["2", "<eot>", "a", "red", "circle", "<eot>"]
    tokens = [tokenizer.itos[i] for i in ids.tolist()]
    assert answer_mask(ids, tokenizer.assistant_id, tokenizer.eot_id).tolist() == _brute_force_mask(
        tokens
    )
    assert (labels[labels != IGNORE_INDEX] == ids[labels != IGNORE_INDEX]).all()


def test_answer_mask_batched_equals_rows(data, tokenizer):
    examples = [encode_chat(tokenizer, [(q, a) for q, a, _ in c]) for c in data.conversations]
    ids, labels = collate_chat(examples, tokenizer.pad_id)
    mask = answer_mask(ids, tokenizer.assistant_id, tokenizer.eot_id)
    for row, (example_ids, example_labels) in enumerate(examples):
        assert mask[row, : len(example_ids)].tolist() == (example_labels != IGNORE_INDEX).tolist()
        assert not mask[row, len(example_ids) :].any()
        assert (labels[row, len(example_ids) :] == IGNORE_INDEX).all()


def test_answer_mask_rejects_bad_ids():
    with pytest.raises(TypeError, match="ids"):
        answer_mask(torch.zeros(2, 3), 4, 5)
    with pytest.raises(ValueError, match="ids"):
        answer_mask(torch.zeros(1, 2, 3, dtype=torch.long), 4, 5)


def test_prompt_ends_with_assistant_and_image_only_first(tokenizer):
    prompt = encode_prompt(tokenizer, "what shape is the red object ?")
    assert prompt[-1] == tokenizer.assistant_id and prompt.count(tokenizer.image_id) == 1
    follow_up = encode_prompt(
        tokenizer,
        "how many objects are there ?",
        history=[("what shape is the red object ?", "circle")],
    )
    assert follow_up.count(tokenizer.image_id) == 1
    assert follow_up.count(tokenizer.assistant_id) == 2
    assert tokenizer.image_id not in encode_prompt(tokenizer, "hi ?", with_image=False)


def test_answers_are_the_ground_truth(data):
    for scene, conversation in zip(data.scenes, data.conversations, strict=True):
        assert len({q for q, _, _ in conversation}) == len(conversation)  # no repeats
        for question, answer, kind in conversation:
            assert kind in CHAT_KINDS
            if kind in ("color", "shape", "count", "exists"):
                assert answer == answer_question(scene, question.replace(" ?", "?"))


def test_position_answers_follow_boxes(data):
    for scene, conversation in zip(data.scenes, data.conversations, strict=True):
        for question, answer, kind in conversation:
            if kind != "position":
                continue
            words = question.split()
            a, b = scene.find(words[2]), scene.find(words[-2])
            if "above" in words:
                truth = a.box[3] <= b.box[1]
            else:
                truth = a.box[2] <= b.box[0]
            assert answer == ("yes" if truth else "no")


def test_skewed_scenes_follow_the_typical_colour():
    scenes = skewed_scenes(600, seed=0, image_size=24, typical=0.7)
    objects = [o for s in scenes for o in s.objects]
    share = sum(o.color == TYPICAL_COLOR[o.shape] for o in objects) / len(objects)
    assert 0.65 < share < 0.75
    assert all(len({o.shape for o in s.objects}) == len(s.objects) for s in scenes)


@pytest.mark.parametrize("setting", POPE_SETTINGS)
def test_pope_is_balanced_and_true(data, setting):
    popularity = sorted(PAIRS, key=lambda p: p != ("red", "circle"))
    probes = pope_questions(data.scenes, setting, popularity, seed=1)
    assert [a for _, _, a in probes].count("yes") == len(data.scenes)
    for index, question, answer in probes:
        assert answer == answer_question(data.scenes[index], question.replace(" ?", "?"))
        if setting == "adversarial" and answer == "no":
            shape = question.split()[-2]
            present_shapes = {o.shape for o in data.scenes[index].objects}
            if any(
                s in present_shapes
                for c, s in PAIRS
                if (c, s) not in {(o.color, o.shape) for o in data.scenes[index].objects}
            ):
                assert shape in present_shapes


def test_bad_arguments_name_themselves(data):
    with pytest.raises(ValueError, match="setting"):
        pope_questions(data.scenes, "hard", PAIRS)
    with pytest.raises(ValueError, match="popularity"):
        pope_questions(data.scenes, "random", PAIRS[:5])
    with pytest.raises(ValueError, match="kind_weights"):
        make_shapes_chat(2, kind_weights={"colour": 1.0})
    with pytest.raises(ValueError, match="turns"):
        make_shapes_chat(2, turns=0)
    with pytest.raises(ValueError, match="turns"):
        encode_chat(ChatTokenizer([]), [])
    with pytest.raises(ValueError, match="examples"):
        collate_chat([], 0)
