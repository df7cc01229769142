"""One interface over the two text front-ends the TTS models can use.

``build_text_frontend(kind, path)`` returns a :class:`TextFrontend`:

* ``kind="phonemes"``: normalise English text, phonemise with espeak-ng; ``path`` is the
  symbol table written by ``dmtts phonemize`` (``symbols.txt``, or the directory holding it).
* ``kind="bpe"``: sentencepiece pieces; ``path`` is the directory written by
  ``dmtts text train-bpe`` (``bpe.model`` + ``symbols.txt``).

Both give ``tokenize(text) -> list[str]``, ``ids(text or tokens) -> list[int]`` (no bos/eos),
``cut_tokens(cut)`` (the training-time tokens of a cut's supervision), a ``symbol_table`` and
``collater()`` (a TextTokenCollater adding bos/eos and padding with 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from dmtts.errors import DmttsError
from dmtts.text.collater import TextTokenCollater
from dmtts.text.symbols import SymbolTable

FRONTEND_KINDS = ("phonemes", "bpe")
PHONEMES_KEY = "phonemes"

__all__ = ["TextFrontend", "PhonemeFrontend", "BpeFrontend", "build_text_frontend", "FRONTEND_KINDS"]


class TextFrontend:
    """Base class: subclasses implement :meth:`tokenize`."""

    kind: str = ""
    symbol_table: SymbolTable

    def __init__(self, symbol_table: SymbolTable, strict: bool = False) -> None:
        self.symbol_table = symbol_table
        self.strict = strict
        self._collater = TextTokenCollater(symbol_table, add_bos=False, add_eos=False, strict=strict)

    @property
    def vocab_size(self) -> int:
        return len(self.symbol_table)

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]

    def ids(self, text_or_tokens: str | Sequence[str]) -> list[int]:
        """Ids (without bos/eos) of a text or of already tokenized symbols; unknown symbols map
        to ``<unk>`` with a warning, or raise DmttsError when the front-end is strict."""
        tokens = self.tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        return self._collater.encode(tokens)

    def cut_tokens(self, cut: Any) -> list[str]:
        """Tokens of a cut's (first) supervision, as used for training."""
        if not cut.supervisions:
            raise DmttsError(f"cut '{cut.id}' has no supervision (no transcript)")
        return self.supervision_tokens(cut.supervisions[0])

    def supervision_tokens(self, sup: Any) -> list[str]:
        return self.tokenize(sup.text)

    def collater(self, add_bos: bool = True, add_eos: bool = True) -> TextTokenCollater:
        return TextTokenCollater(self.symbol_table, add_bos=add_bos, add_eos=add_eos, strict=self.strict)


_STRESS = ("\u02c8", "\u02cc")  # primary, secondary stress marks as espeak writes them


def nearest_symbol(symbol: str, table: SymbolTable) -> str:
    """``symbol`` if the table has it, else the closest form it has: the same phone with another
    stress (``ɑːɹ`` -> ``ˈɑːɹ``) or without its length mark. A prompt transcript or a user's text
    can hold a phone/stress combination the training corpus never had; the same vowel with
    another stress is a far better input for the model than ``<unk>``. Unmatched symbols are
    returned as they are (and become ``<unk>`` with a warning)."""
    if symbol in table:
        return symbol
    bare = symbol.lstrip("".join(_STRESS))
    stressed = [bare] + [mark + bare for mark in _STRESS]
    for candidate in stressed + [c.replace("\u02d0", "") for c in stressed]:
        if candidate in table:
            return candidate
    return symbol


class PhonemeFrontend(TextFrontend):
    kind = "phonemes"

    def __init__(self, symbol_table: SymbolTable, lang: str = "en-us", strict: bool = False) -> None:
        super().__init__(symbol_table, strict)
        self.lang = lang
        self._phonemizer = None

    @property
    def phonemizer(self):
        if self._phonemizer is None:
            from dmtts.text.phonemizer import Phonemizer

            self._phonemizer = Phonemizer(self.lang)
        return self._phonemizer

    def __getstate__(self):  # picklable for DataLoader workers: espeak is reopened lazily
        state = dict(self.__dict__)
        state["_phonemizer"] = None
        return state

    def tokenize(self, text: str) -> list[str]:
        return [nearest_symbol(t, self.symbol_table) for t in self.phonemizer.phonemize(text)]

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
        return [[nearest_symbol(t, self.symbol_table) for t in seq] for seq in self.phonemizer.phonemize_batch(texts)]

    def supervision_tokens(self, sup: Any) -> list[str]:
        """Precomputed ``supervision.custom["phonemes"]`` (from ``dmtts phonemize``), else phonemise."""
        custom = sup.custom or {}
        if PHONEMES_KEY in custom:
            return list(custom[PHONEMES_KEY])
        return self.tokenize(sup.text)


class BpeFrontend(TextFrontend):
    kind = "bpe"

    def __init__(self, path: str | Path, strict: bool = False) -> None:
        from dmtts.text.bpe import BpeTokenizer

        self.tokenizer = BpeTokenizer(path)
        super().__init__(self.tokenizer.symbol_table, strict)

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text)


def build_text_frontend(kind: str, path: str | Path, lang: str = "en-us", strict: bool = False) -> TextFrontend:
    """Build the ``"phonemes"`` or ``"bpe"`` front-end (see the module docstring for ``path``)."""
    path = Path(path)
    if kind == "phonemes":
        sym_path = path / "symbols.txt" if path.is_dir() else path
        return PhonemeFrontend(SymbolTable.from_file(sym_path), lang=lang, strict=strict)
    if kind == "bpe":
        return BpeFrontend(path, strict=strict)
    raise DmttsError(f"unknown text front-end '{kind}': choose one of {', '.join(FRONTEND_KINDS)}")
