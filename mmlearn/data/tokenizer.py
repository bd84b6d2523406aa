"""A word-level tokenizer for the book's generated captions and questions.

The embedded data sets have small, closed vocabularies, so a whitespace
tokenizer (English) or a character tokenizer (Chinese) is all the book's
small text encoders need. Pretrained models bring their own tokenizers
(see :mod:`mmlearn.pretrained`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

PAD, CLS, UNK = "[PAD]", "[CLS]", "[UNK]"
_WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]|[^\sa-z0-9\u4e00-\u9fff]")


def split_words(text: str) -> list[str]:
    """Lower-case English words, single Chinese characters and punctuation marks."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Map texts to padded id tensors: ``[CLS] w1 w2 ... [PAD] [PAD]``.

    Id 0 is ``[PAD]``, 1 is ``[CLS]`` (the token whose output summarises the
    sentence), 2 is ``[UNK]`` (a word never seen when the vocabulary was built).
    """

    def __init__(self, vocabulary: Sequence[str]):
        words = [word for word in vocabulary if word not in (PAD, CLS, UNK)]
        self.itos: list[str] = [PAD, CLS, UNK, *words]
        self.stoi: dict[str, int] = {word: index for index, word in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Build the vocabulary from ``texts``, most frequent words first."""
        counts = Counter(word for text in texts for word in split_words(text))
        words = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    def encode(
        self, texts: Sequence[str] | str, max_length: int | None = None, add_cls: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(ids, valid)``: ``(B, L)`` token ids and a bool mask of the real tokens."""
        if isinstance(texts, str):
            texts = [texts]
        prefix = [self.stoi[CLS]] if add_cls else []
        rows = [prefix + [self.stoi.get(w, self.stoi[UNK]) for w in split_words(t)] for t in texts]
        length = max((len(row) for row in rows), default=0)
        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be a positive integer, got {max_length}")
            length = max_length
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        for index, row in enumerate(rows):
            row = row[:length]
            ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, ids != self.pad_id

    def bag_of_words(self, texts: Sequence[str] | str) -> torch.Tensor:
        """Word counts ``(N, len(self))``: how often each vocabulary word occurs in each text.

        The simplest text representation, order thrown away. ``[PAD]`` and ``[CLS]``
        are not counted; ``[UNK]`` is (an unknown word is still a word). Returns a
        float tensor on the CPU.
        """
        ids, valid = self.encode(texts)
        counts = torch.zeros(len(ids), len(self))
        counts.scatter_add_(1, ids, valid.float())
        counts[:, [self.pad_id, self.stoi[CLS]]] = 0.0
        return counts

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Turn ids back into tokens, dropping padding."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.itos[i] for i in values if i != self.pad_id]
