"""Corpus BLEU (Papineni et al. 2002) for generated captions (book section 6.3).

``BLEU = BP * exp(sum_n w_n log p_n)`` with uniform weights ``w_n = 1 / N``:

* ``p_n``, the modified n-gram precision, pools the whole corpus: the number of
  candidate n-grams that also occur in a reference (each clipped to the largest
  count it has in any one reference of that candidate), over the number of
  candidate n-grams;
* ``BP = 1`` if the candidates' total length ``c`` exceeds the effective reference
  length ``r`` (for each candidate, the reference length closest to it, ties to the
  shorter), else ``exp(1 - r / c)``.

No smoothing: if some order has no matching n-gram, BLEU is 0. Inputs are
token lists, so the tokenisation is the caller's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from mmlearn._checks import check_positive_int

__all__ = ["corpus_bleu", "ngram_counts"]


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """How often each n-gram (a tuple of ``n`` tokens) occurs in ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_n: int = 4,
) -> float:
    """Corpus-level BLEU-``max_n`` of tokenised ``candidates`` against their ``references``.

    Args:
        candidates: one token list per generated text.
        references: for each candidate, a non-empty list of reference token lists.
        max_n: the largest n-gram order (BLEU-4 by default).

    Returns:
        BLEU in ``[0, 1]``.
    """
    check_positive_int("max_n", max_n)
    if len(candidates) != len(references):
        raise ValueError(
            f"candidates ({len(candidates)}) and references ({len(references)}) "
            f"must have the same length"
        )
    if not candidates:
        raise ValueError("candidates must not be empty")
    matches, totals = [0] * max_n, [0] * max_n
    candidate_length = reference_length = 0
    for candidate, refs in zip(candidates, references, strict=True):
        if not refs:
            raise ValueError("references must hold at least one reference per candidate")
        candidate_length += len(candidate)
        reference_length += min(
            (len(ref) for ref in refs), key=lambda length: (abs(length - len(candidate)), length)
        )
        for n in range(1, max_n + 1):
            counts = ngram_counts(candidate, n)
            best = Counter()
            for ref in refs:
                best |= ngram_counts(ref, n)  # element-wise max over the references
            matches[n - 1] += sum(min(count, best[gram]) for gram, count in counts.items())
            totals[n - 1] += sum(counts.values())
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    brevity = (
        1.0
        if candidate_length > reference_length
        else math.exp(1.0 - reference_length / candidate_length)
    )
    return brevity * math.exp(log_precision)
