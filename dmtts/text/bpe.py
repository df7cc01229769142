"""A sentencepiece BPE text tokenizer, for languages or corpora where phonemes do not suit.

``train_bpe(texts, out_dir, vocab_size)`` writes ``out_dir/bpe.model`` (sentencepiece),
``out_dir/bpe.vocab`` and ``out_dir/symbols.txt``: a :class:`SymbolTable` whose first ids are
the special tokens (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3) followed by the BPE
pieces, so the TTS model and :class:`TextTokenCollater` treat BPE pieces exactly like phonemes.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable

from dmtts.errors import DmttsError
from dmtts.text.tts_input_norm import basic_cleanup, check_not_empty
from dmtts.text.symbols import SPECIAL_SYMBOLS, SymbolTable
from dmtts.utils import atomic_path, require_file

logger = logging.getLogger(__name__)

MODEL_NAME = "bpe.model"
VOCAB_NAME = "bpe.vocab"
SYMBOLS_NAME = "symbols.txt"

__all__ = ["BpeTokenizer", "train_bpe", "MODEL_NAME", "SYMBOLS_NAME"]


def train_bpe(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> Path:
    """Train a sentencepiece model on ``texts`` and write it plus ``symbols.txt`` to ``out_dir``."""
    import sentencepiece as spm

    if vocab_size < 8:
        raise DmttsError(f"--vocab-size {vocab_size} is too small: use at least 8")
    lines = [basic_cleanup(t) for t in texts if t and t.strip()]
    lines = [t for t in lines if t]
    if not lines:
        raise DmttsError("no non-empty transcripts to train the BPE model on: check the --cuts manifests")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            unk_piece="<unk>",
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise DmttsError(f"sentencepiece could not train a {vocab_size}-piece model: {e} (lower --vocab-size)") from e
    with atomic_path(out_dir / MODEL_NAME) as tmp:
        tmp.write_bytes(model.getvalue())
    tok = BpeTokenizer(out_dir)
    with atomic_path(out_dir / VOCAB_NAME) as tmp:
        sp = tok.sp
        tmp.write_text("".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i)}\n" for i in range(sp.get_piece_size())))
    logger.info("trained a %d-piece %s model on %d transcripts -> %s", vocab_size, model_type, len(lines), out_dir)
    return out_dir


class BpeTokenizer:
    """Tokenize text into sentencepiece pieces. ``path`` is the directory written by
    :func:`train_bpe` (or the ``bpe.model`` file inside it)."""

    def __init__(self, path: str | Path) -> None:
        import sentencepiece as spm

        path = Path(path)
        model_path = path / MODEL_NAME if path.is_dir() else path
        require_file(model_path, "BPE model", "train one with 'dmtts text train-bpe --cuts IN --vocab-size N --out DIR'")
        self.model_path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        symbols_path = model_path.parent / SYMBOLS_NAME
        pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size()) if not self.sp.is_unknown(i)]
        expected = SymbolTable(p for p in pieces if p not in SPECIAL_SYMBOLS)
        if symbols_path.exists():
            self.symbol_table = SymbolTable.from_file(symbols_path)
            if self.symbol_table != expected:
                raise DmttsError(
                    f"'{symbols_path}' does not match '{model_path}': re-run 'dmtts text train-bpe' "
                    "(they must come from the same training)"
                )
        else:
            self.symbol_table = expected
            self.symbol_table.to_file(symbols_path)

    def normalize_text(self, text: str) -> str:
        check_not_empty(text)
        text = basic_cleanup(text)
        check_not_empty(text)
        return text

    def tokenize(self, text: str) -> list[str]:
        """Pieces of ``text`` (sentencepiece marks word starts with ``▁``)."""
        return self.sp.encode(self.normalize_text(text), out_type=str)

    def detokenize(self, pieces: list[str]) -> str:
        return self.sp.decode_pieces([p for p in pieces if p not in SPECIAL_SYMBOLS])
