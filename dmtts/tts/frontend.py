"""The TTS models' view of the text front-end (``dmtts.text.frontend``): phonemes or BPE.

Training reads the symbols of each cut (``supervision.custom["phonemes"]`` for phonemes, the
BPE pieces of ``supervision.text`` for bpe); inference turns raw text into the same symbols.
Ids come from the run's symbol table through ``TextTokenCollater`` (<bos>/<eos>, pad 0; an
unknown symbol becomes ``<unk>`` with a warning). ``save``/``load`` put what inference needs
into an exported model directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dmtts.errors import DmttsError
from dmtts.text.frontend import PhonemeFrontend

FRONTENDS = ("phonemes", "bpe")
SYMBOLS_FILE = "symbols.txt"
BPE_DIR = "bpe"
STRESS_MARKS = ("ˈ", "ˌ")  # espeak's primary and secondary stress, attached to the vowel symbols


class UnstressedPhonemeFrontend(PhonemeFrontend):
    """Phonemes without stress marks: the front-end of a symbol table written by
    ``dmtts phonemize --no-stress``."""

    @property
    def phonemizer(self):
        if self._phonemizer is None:
            from dmtts.text.phonemizer import Phonemizer

            self._phonemizer = Phonemizer(self.lang, with_stress=False)
        return self._phonemizer


class TTSText:
    def __init__(self, kind: str, path: str | Path, lang: str = "en-us"):
        from dmtts.text.frontend import build_text_frontend

        if kind not in FRONTENDS:
            raise DmttsError(f"text front-end '{kind}' is unknown: use one of {', '.join(FRONTENDS)}")
        if not str(path):
            what = "data.symbol_table (from 'dmtts phonemize')" if kind == "phonemes" else "data.bpe_model (from 'dmtts text train-bpe')"
            raise DmttsError(f"the '{kind}' text front-end needs {what}: set it in the config")
        self.kind, self.path, self.lang = kind, Path(path), lang
        self.frontend = build_text_frontend(kind, path, lang=lang)
        table = self.frontend.symbol_table
        if kind == "phonemes" and not any(m in s for s in table.symbols for m in STRESS_MARKS):
            # cuts phonemized with --no-stress: text phonemized here (synthesis, cuts without
            # phonemes) must drop the stress marks too, or every stressed vowel becomes <unk>
            self.frontend = UnstressedPhonemeFrontend(table, lang=lang)
        self.collater = self.frontend.collater(add_bos=True, add_eos=True)

    @property
    def vocab_size(self) -> int:
        return self.frontend.vocab_size

    def cut_symbols(self, cut) -> list[str]:
        """Training symbols of a cut's supervision."""
        return self.frontend.cut_tokens(cut)

    def text_symbols(self, text: str) -> list[str]:
        """Symbols of raw text (DmttsError for empty text, or non-Latin text with phonemes)."""
        symbols = self.frontend.tokenize(text)
        if not symbols:
            raise DmttsError(f"text {text!r} gives no {self.kind} symbols: give a sentence with words")
        return symbols

    def join_words(self, first: list[str], second: list[str]) -> list[str]:
        """``first`` followed by ``second`` as two runs of words (a word boundary between them)."""
        if self.kind != "phonemes" or not first or not second:
            return first + second
        from dmtts.text.phonemizer import WORD_BOUNDARY

        if first[-1] == WORD_BOUNDARY or second[0] == WORD_BOUNDARY:
            return first + second
        return first + [WORD_BOUNDARY] + second

    def collate(self, sequences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.collater(sequences)

    def save(self, out_dir: str | Path) -> dict:
        """Copy what inference needs into ``out_dir``; return the config entry describing it."""
        out_dir = Path(out_dir)
        if self.kind == "phonemes":
            self.frontend.symbol_table.to_file(out_dir / SYMBOLS_FILE)
            return {"kind": "phonemes", "path": SYMBOLS_FILE, "lang": self.lang}
        src = self.path if self.path.is_dir() else self.path.parent
        dst = out_dir / BPE_DIR
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        return {"kind": "bpe", "path": BPE_DIR, "lang": self.lang}

    @classmethod
    def load(cls, model_dir: str | Path, info: dict) -> "TTSText":
        return cls(info["kind"], Path(model_dir) / info["path"], lang=info.get("lang", "en-us"))

    @classmethod
    def from_data_config(cls, data) -> "TTSText":
        path = data.symbol_table if data.text_frontend == "phonemes" else data.bpe_model
        return cls(data.text_frontend, path, lang=data.lang)
