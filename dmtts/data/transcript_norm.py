"""Transcript normalisation applied by every corpus preparer, so all corpora look alike.

``clean`` (the default) keeps case and punctuation (useful for TTS and cased LM teachers) and
only makes the text canonical: Unicode NFKC, typographic quotes and dashes as ASCII, no control
characters, single spaces. ``upper`` gives LibriSpeech-style text (upper case, letters, digits,
apostrophes); ``lower`` the same in lower case. The raw text is always kept in
``supervision.custom["orig_text"]``.
"""

from __future__ import annotations

import re
import unicodedata

TEXT_NORMS = ("clean", "upper", "lower")

_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": " - ", "\u2212": "-", "\u2026": "...", "\u00a0": " ",
})


def clean_text(text: str) -> str:
    """Canonical form of a transcript; case and punctuation kept."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def normalize_transcript(text: str, mode: str = "clean") -> str:
    """Normalise ``text`` with one of ``TEXT_NORMS``."""
    if mode not in TEXT_NORMS:
        raise ValueError(f"unknown text normalisation '{mode}'; choose from {TEXT_NORMS}")
    text = clean_text(text)
    if mode == "clean":
        return text
    text = re.sub(r"[^\w' ]+", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside words
    text = re.sub(r"\s+", " ", text.replace("_", " ")).strip()
    return text.upper() if mode == "upper" else text.lower()
