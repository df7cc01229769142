"""Word error rate and word information lost of one utterance, and their corpus-level pooling.

Both are percentages computed from a jiwer alignment of the normalised texts (the normaliser is
:mod:`dmtts.eval.wer_norm`); the corpus-level rates pool the counts over utterances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from dmtts.eval.wer_norm import DEFAULT_TEXT_NORM, load_text_normalizer


@dataclass
class WordErrors:
    """Alignment counts of one utterance (after normalisation); rates are percentages."""

    hits: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def n_ref(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def n_hyp(self) -> int:
        return self.hits + self.substitutions + self.insertions

    @property
    def wer(self) -> float:
        if self.n_ref == 0:
            return math.nan
        return 100.0 * (self.substitutions + self.deletions + self.insertions) / self.n_ref

    @property
    def wil(self) -> float:
        if self.n_ref == 0:
            return math.nan
        if self.n_hyp == 0:
            return 100.0
        return 100.0 * (1.0 - (self.hits / self.n_ref) * (self.hits / self.n_hyp))

    def __add__(self, other: "WordErrors") -> "WordErrors":
        return WordErrors(self.hits + other.hits, self.substitutions + other.substitutions,
                          self.deletions + other.deletions, self.insertions + other.insertions)


def word_errors(reference: str, hypothesis: str,
                normalizer: str | Callable[[str], str] = DEFAULT_TEXT_NORM) -> WordErrors:
    """Align the normalised ``hypothesis`` to the normalised ``reference`` with jiwer.

    ``normalizer``: ``whisper`` (default), ``dmtts`` (see :mod:`dmtts.eval.wer_norm`) or a callable.
    """
    import jiwer

    normalize = load_text_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    ref = normalize(reference)
    hyp = normalize(hypothesis)
    if not ref:
        return WordErrors(0, 0, 0, len(hyp.split()))
    if not hyp:
        return WordErrors(0, 0, len(ref.split()), 0)
    out = jiwer.process_words(ref, hyp)
    return WordErrors(out.hits, out.substitutions, out.deletions, out.insertions)


def corpus_rates(errors: Sequence[WordErrors]) -> tuple[float, float]:
    """Corpus-level (pooled counts) WER and WIL in %."""
    total = WordErrors(0, 0, 0, 0)
    for e in errors:
        total = total + e
    return total.wer, total.wil
