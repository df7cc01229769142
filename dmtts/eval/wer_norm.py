"""Text normalisers applied to references and ASR hypotheses before WER / WIL.

Two are available (``--text-norm`` of ``dmtts eval codec|codec-curve|tts``); every table names
the one it used:

* ``whisper`` (default): Whisper's English normaliser (``EnglishTextNormalizer`` from the
  ``whisper-normalizer`` package, OpenAI's code), the field's common choice, so our WERs compare
  with published ones. It standardises spelling (British -> American), titles (``Mr`` ->
  ``mister``), contractions, and turns spelled numbers into digits on both sides.
* ``dmtts``: :func:`normalize_text` below, our own. Kept because it adds two things Whisper's
  lacks: ``&`` -> ``and`` (Whisper's deletes ``&``, so ``rock & roll`` against ``rock and roll``
  is an error) and in-word apostrophes removed without expansion (``john's`` -> ``johns``, where
  Whisper's gives ``john is`` and so mismatches an ASR that writes ``Johns``). Its numbers become
  words (the LibriSpeech reference style). Its WERs do not compare with published ones.

Our normaliser (``dmtts``), in order:

1. Unicode NFKC; curly quotes/apostrophes made ASCII; diacritics removed (``café`` -> ``cafe``).
2. Lower case.
3. Text in brackets or parentheses dropped (``[laughter]``, ``(inaudible)``).
4. Symbols spoken as words: ``&`` -> ``and``, ``%`` -> ``percent``, ``$5`` -> ``5 dollars``,
   ``£5`` -> ``5 pounds``, ``€5`` -> ``5 euros``.
5. With ``numbers_to_words=True`` (default): digits become words, because LibriSpeech-style
   references spell numbers out while Whisper writes digits. ``1,000`` -> ``one thousand``,
   ``3.5`` -> ``three point five``, ``21st`` -> ``twenty first``, years 1100-1999 / 2010-2099
   as spoken (``1990`` -> ``nineteen ninety``, ``2021`` -> ``twenty twenty one``).
6. Contractions expanded: ``n't`` -> `` not``, ``'re`` -> `` are``, ``'ll`` -> `` will``,
   ``'ve`` -> `` have``, ``'m`` -> `` am``; other apostrophes removed inside words
   (``john's`` -> ``johns``), so both sides tokenise alike.
7. Hyphens and slashes split words; all other punctuation and symbols are removed.
8. Hesitations ``uh um hmm mm mhm er ah`` removed.
9. Whitespace collapsed and stripped.

Not done (unlike Whisper's): British -> American spelling and words -> digits.
"""

from __future__ import annotations

import importlib.metadata
import re
import unicodedata
from typing import Callable

from dmtts.errors import DmttsError

__all__ = ["TEXT_NORMALIZERS", "DEFAULT_TEXT_NORM", "TextNormalizer", "load_text_normalizer", "normalize_text",
           "number_to_words"]

TEXT_NORMALIZERS = ("whisper", "dmtts")
DEFAULT_TEXT_NORM = "whisper"

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                      "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_FILLERS = {"uh", "um", "umm", "hmm", "mm", "mmm", "mhm", "er", "erm", "ah"}
_CONTRACTIONS = [
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"\bi'm\b"), "i am"),
]


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_to_words(n: int) -> str:
    """Cardinal number in English words (``1234`` -> ``one thousand two hundred thirty four``)."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    for scale, name in _SCALES:
        if n >= scale:
            words += [number_to_words(n // scale), name]
            n %= scale
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def _year_to_words(n: int) -> str:
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{number_to_words(hi)} hundred"
    if lo < 10:
        return f"{number_to_words(hi)} oh {number_to_words(lo)}"
    return f"{number_to_words(hi)} {number_to_words(lo)}"


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _number_match(m: re.Match) -> str:
    whole, frac, suffix = m.group(1).replace(",", ""), m.group(2), (m.group(3) or "").lower()
    n = int(whole)
    if suffix:  # 1st 2nd 3rd 4th
        return f" {_ordinal(number_to_words(n))} "
    if frac is None and "," not in m.group(1) and len(whole) == 4 and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        text = _year_to_words(n)
    else:
        text = number_to_words(n)
    if frac is not None:
        text += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {text} "


_NUMBER_RE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?\b", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"([$£€])\s*(\d[\d,]*(?:\.\d+)?)")
_CURRENCY_NAMES = {"$": "dollars", "£": "pounds", "€": "euros"}


def normalize_text(text: str, numbers_to_words: bool = True) -> str:
    """Normalise ``text`` for WER scoring (see the module docstring for the exact rules)."""
    s = unicodedata.normalize("NFKC", text)
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").replace("\u00b4", "'")
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    s = s.lower()
    s = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", s)
    s = s.replace("&", " and ").replace("%", " percent ")
    s = _CURRENCY_RE.sub(lambda m: f" {m.group(2)} {_CURRENCY_NAMES[m.group(1)]} ", s)
    if numbers_to_words:
        s = _NUMBER_RE.sub(_number_match, s)
    for pattern, repl in _CONTRACTIONS:
        s = pattern.sub(repl, s)
    s = re.sub(r"(?<=\w)'(?=\w)", "", s)       # john's -> johns
    s = re.sub(r"[-/\u2013\u2014]", " ", s)
    # Every remaining punctuation mark / symbol becomes a space.
    s = "".join(" " if unicodedata.category(c)[0] in "PSC" else c for c in s)
    words = [w for w in s.split() if w not in _FILLERS]
    return " ".join(words)


class TextNormalizer:
    """A named text normaliser: ``spec`` (``whisper`` or ``dmtts``, the cache key) and ``name``
    (what the tables print, with the package version)."""

    def __init__(self, spec: str, name: str, fn: Callable[[str], str]) -> None:
        self.spec, self.name, self._fn = spec, name, fn

    def __call__(self, text: str) -> str:
        # Whisper's leaves single spaces but may start/end with one; split/join makes both alike.
        return " ".join(self._fn(text).split())


_LOADED: dict[str, TextNormalizer] = {}


def load_text_normalizer(spec: str = DEFAULT_TEXT_NORM) -> TextNormalizer:
    """``whisper`` (Whisper's English normaliser from ``whisper-normalizer``) or ``dmtts`` (ours)."""
    if spec in _LOADED:
        return _LOADED[spec]
    if spec == "whisper":
        try:
            from whisper_normalizer.english import EnglishTextNormalizer
        except ImportError as e:
            raise DmttsError(f"--text-norm whisper needs the whisper-normalizer package ({e}): "
                             "pip install -c constraints.txt whisper-normalizer, or pass --text-norm dmtts") from None
        version = importlib.metadata.version("whisper-normalizer")
        norm = TextNormalizer(spec, f"Whisper English normaliser (whisper-normalizer {version})",
                              EnglishTextNormalizer())
    elif spec == "dmtts":
        norm = TextNormalizer(spec, "dmtts.eval.wer_norm (numbers as words; not comparable with published WERs)",
                              normalize_text)
    else:
        raise DmttsError(f"unknown text normaliser '{spec}' (--text-norm): choose {' or '.join(TEXT_NORMALIZERS)}")
    _LOADED[spec] = norm
    return norm
