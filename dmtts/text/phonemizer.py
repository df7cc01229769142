"""Phonemisation with the ``phonemizer`` package and its espeak-ng backend.

Text is first normalised (:func:`dmtts.text.tts_input_norm.normalize_english` for English), then
phonemised by espeak-ng. The output is a flat list of symbols:

* phones as espeak writes them in IPA, with stress marks attached to the vowel (``ˈoʊ``);
* ``_`` (:data:`WORD_BOUNDARY`) between words;
* each punctuation mark as its own symbol (``,`` ``.`` ``!`` ``?`` ``;`` ``:`` ``…`` ...).

Example: ``"Hello, world!"`` -> ``['h', 'ə', 'l', 'ˈoʊ', ',', '_', 'w', 'ˈɜː', 'l', 'd', '!']``.
"""

from __future__ import annotations

import logging
from typing import Sequence

from dmtts.errors import DmttsError
from dmtts.text.tts_input_norm import basic_cleanup, check_not_empty, normalize_english

WORD_BOUNDARY = "_"
_PHONE_SEP = "|"
_WORD_SEP = " "

__all__ = ["Phonemizer", "WORD_BOUNDARY", "split_phonemized"]


def _punctuation_marks() -> str:
    from phonemizer.punctuation import Punctuation

    return Punctuation.default_marks()


def split_phonemized(phonemized: str, marks: str) -> list[str]:
    """Turn espeak output (``|`` between phones, space between words) into a symbol list."""
    tokens: list[str] = []
    for word in phonemized.split(_WORD_SEP):
        if not word.strip():
            continue
        if tokens and tokens[-1] != WORD_BOUNDARY:
            tokens.append(WORD_BOUNDARY)
        for part in word.split(_PHONE_SEP):
            buf = ""
            for ch in part:
                if ch in marks:
                    if buf:
                        tokens.append(buf)
                        buf = ""
                    tokens.append(ch)
                elif not ch.isspace():
                    buf += ch
            if buf:
                tokens.append(buf)
    while tokens and tokens[-1] == WORD_BOUNDARY:
        tokens.pop()
    return tokens


class Phonemizer:
    """Normalise and phonemise text with espeak-ng.

    Args:
        lang: espeak-ng voice, e.g. ``"en-us"``. Only English (``en*``) gets the number /
            abbreviation normalisation and the Latin-script check.
        with_stress: keep primary/secondary stress marks.
        normalize: apply the text normalisation (on by default).
    """

    def __init__(self, lang: str = "en-us", with_stress: bool = True, normalize: bool = True) -> None:
        try:
            from phonemizer.backend import EspeakBackend
        except ImportError as e:  # pragma: no cover
            raise DmttsError("the 'phonemizer' package is not installed: pip install phonemizer") from e
        self.lang = lang
        self.with_stress = with_stress
        self.normalize = normalize
        quiet = logging.getLogger("dmtts.text.phonemizer.espeak")
        quiet.setLevel(logging.ERROR)
        try:
            self._backend = EspeakBackend(
                lang,
                preserve_punctuation=True,
                with_stress=with_stress,
                language_switch="remove-flags",
                words_mismatch="ignore",
                logger=quiet,
            )
        except RuntimeError as e:
            raise DmttsError(
                f"espeak-ng cannot be used with language '{lang}': {e} "
                "(install espeak-ng, and check the language with 'espeak-ng --voices')"
            ) from e
        self._marks = _punctuation_marks()

    def normalize_text(self, text: str) -> str:
        """The text that is sent to espeak (raises DmttsError for empty / non-Latin English text)."""
        check_not_empty(text)
        if not self.normalize:
            return basic_cleanup(text)
        if self.lang.lower().startswith("en"):
            return normalize_english(text)
        text = basic_cleanup(text)
        check_not_empty(text)
        return text

    def __call__(self, text: str) -> list[str]:
        return self.phonemize(text)

    def phonemize(self, text: str) -> list[str]:
        """Symbols of one text. Raises DmttsError for bad input."""
        return self.phonemize_batch([text])[0]

    def phonemize_batch(self, texts: Sequence[str], num_jobs: int = 1) -> list[list[str]]:
        """Symbols of many texts in one espeak call (faster than one call per text).

        Raises DmttsError if any text is bad; use :meth:`phonemize_batch_safe` to skip failures.
        """
        results = self.phonemize_batch_safe(texts, num_jobs=num_jobs)
        for text, r in zip(texts, results):
            if isinstance(r, DmttsError):
                raise r
        return results  # type: ignore[return-value]

    def phonemize_batch_safe(self, texts: Sequence[str], num_jobs: int = 1) -> list[list[str] | DmttsError]:
        """Like :meth:`phonemize_batch`, but a failing text yields its DmttsError instead of raising."""
        results: list[list[str] | DmttsError] = [DmttsError("not processed")] * len(texts)
        good_idx, good_text = [], []
        for i, text in enumerate(texts):
            try:
                good_text.append(self.normalize_text(text).replace("\n", " "))
                good_idx.append(i)
            except DmttsError as e:
                results[i] = e
        if good_text:
            from phonemizer.separator import Separator

            out = self._backend.phonemize(
                good_text,
                separator=Separator(phone=_PHONE_SEP, word=_WORD_SEP, syllable=None),
                strip=True,
                njobs=max(1, int(num_jobs)),
            )
            for i, text, ph in zip(good_idx, good_text, out):
                tokens = split_phonemized(ph, self._marks)
                if not any(t not in self._marks and t != WORD_BOUNDARY for t in tokens):
                    results[i] = DmttsError(f"espeak-ng produced no phonemes for {text!r}")
                else:
                    results[i] = tokens
        return results
