"""The word tokenizer of the embedded captions."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mmlearn.data import WordTokenizer, split_words


def test_split_words_handles_english_chinese_and_punctuation():
    assert split_words("A red Circle, above.") == ["a", "red", "circle", ",", "above", "."]
    assert split_words("红色的圆") == ["红", "色", "的", "圆"]


def test_vocabulary_is_ordered_by_frequency_after_special_tokens():
    tokenizer = WordTokenizer.from_texts(["b a", "a c", "a"])
    assert tokenizer.itos[:3] == ["[PAD]", "[CLS]", "[UNK]"]
    assert tokenizer.itos[3:] == ["a", "b", "c"]


def test_encode_pads_marks_valid_tokens_and_maps_unknown_words():
    tokenizer = WordTokenizer.from_texts(["red circle", "blue square"])
    ids, valid = tokenizer.encode(["red circle", "green"])
    assert ids.shape == (2, 3) and ids.dtype == torch.long
    assert valid.tolist() == [[True, True, True], [True, True, False]]
    assert ids[1, 1].item() == tokenizer.stoi["[UNK]"]
    assert tokenizer.decode(ids[0]) == ["[CLS]", "red", "circle"]


def test_encode_truncates_to_max_length():
    tokenizer = WordTokenizer.from_texts(["one two three four"])
    ids, valid = tokenizer.encode("one two three four", max_length=3)
    assert ids.shape == (1, 3) and bool(valid.all())


def test_encode_rejects_a_non_positive_max_length():
    tokenizer = WordTokenizer.from_texts(["a"])
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode("a", max_length=0)


def test_bag_of_words_counts_every_word_like_a_loop():
    texts = ["a red circle and a red square", "green", "a blue wedge", "红色的圆, 红色"]
    tokenizer = WordTokenizer.from_texts(["a red circle and a square", "green blue", "红色的圆"])
    counts = tokenizer.bag_of_words(texts)
    assert counts.shape == (4, len(tokenizer)) and counts.dtype == torch.float32
    for row, text in zip(counts, texts, strict=True):  # brute force: count the words
        expected = Counter(
            tokenizer.stoi.get(word, tokenizer.stoi["[UNK]"]) for word in split_words(text)
        )
        assert {i: int(c) for i, c in enumerate(row.tolist()) if c} == dict(expected)
    assert counts[2, tokenizer.stoi["[UNK]"]] == 1  # "wedge" is unknown, and counted
    assert (
        counts[:, tokenizer.pad_id].eq(0).all() and counts[:, tokenizer.stoi["[CLS]"]].eq(0).all()
    )
    assert tokenizer.bag_of_words("green").equal(counts[1:2])
