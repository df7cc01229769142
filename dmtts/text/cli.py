"""``dmtts phonemize`` and ``dmtts text train-bpe``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dmtts.errors import DmttsError

logger = logging.getLogger(__name__)

PHONEMIZE_CHUNK = 1000  # texts per espeak call


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "phonemize",
        help="normalise + phonemise cut transcripts (espeak-ng) and write a symbol table",
        description=(
            "Write the cuts with supervision.custom['phonemes'] (list of symbols) and a symbol table "
            "('symbol id' per line). An existing --symbols file is extended, never renumbered, so "
            "train/dev/test can share one table. Cuts whose text fails are reported and skipped."
        ),
    )
    p.add_argument("--cuts", required=True, help="input cuts manifest (.jsonl.gz)")
    p.add_argument("--out", required=True, help="output cuts manifest (.jsonl.gz)")
    p.add_argument("--lang", default="en-us", help="espeak-ng language (default: en-us)")
    p.add_argument("--symbols", default=None, help="symbol table to write/extend (default: <out dir>/symbols.txt)")
    p.add_argument(
        "--frozen-symbols",
        action="store_true",
        help="do not add new symbols to an existing --symbols table (unknown ones are reported)",
    )
    p.add_argument("--no-stress", action="store_true", help="drop espeak stress marks")
    p.add_argument("--num-jobs", type=int, default=1, help="parallel espeak jobs (default: 1)")
    p.set_defaults(func=phonemize_main)

    t = subparsers.add_parser("text", help="text front-end tools (BPE)")
    tsub = t.add_subparsers(dest="text_command", metavar="TEXT_COMMAND")
    b = tsub.add_parser(
        "train-bpe",
        help="train a sentencepiece BPE text tokenizer on cut transcripts",
        description="Writes DIR/bpe.model, DIR/bpe.vocab and DIR/symbols.txt (ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3, pieces).",
    )
    b.add_argument("--cuts", required=True, nargs="+", help="training cuts manifest(s)")
    b.add_argument("--vocab-size", type=int, required=True, help="number of BPE pieces")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--model-type", default="bpe", choices=["bpe", "unigram", "char"])
    b.add_argument("--character-coverage", type=float, default=1.0)
    b.set_defaults(func=train_bpe_main)
    t.set_defaults(func=lambda args: _text_help(t))


def _text_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def _load_cuts(path: str):
    from lhotse import CutSet

    from dmtts.utils import require_file

    require_file(path, "--cuts manifest")
    try:
        return CutSet.from_file(path)
    except Exception as e:  # noqa: BLE001 - turn lhotse parse errors into a one-line message
        raise DmttsError(f"cannot read cuts manifest '{path}': {e}") from e


def phonemize_main(args) -> int:
    from lhotse import CutSet
    from tqdm import tqdm

    from dmtts.text.frontend import PHONEMES_KEY
    from dmtts.text.phonemizer import Phonemizer
    from dmtts.text.symbols import SymbolTable
    from dmtts.utils import atomic_path

    out = Path(args.out)
    if not (out.name.endswith(".jsonl.gz") or out.name.endswith(".jsonl")):
        raise DmttsError(f"--out '{out}' must be a .jsonl.gz (or .jsonl) cuts manifest")
    sym_path = Path(args.symbols) if args.symbols else out.parent / "symbols.txt"
    if Path(args.cuts).resolve() == out.resolve():
        raise DmttsError("--out must differ from --cuts")
    cuts = _load_cuts(args.cuts)
    table = SymbolTable.from_file(sym_path) if sym_path.exists() else SymbolTable()
    if args.frozen_symbols and not sym_path.exists():
        raise DmttsError(f"--frozen-symbols needs an existing symbol table, but '{sym_path}' does not exist")
    phonemizer = Phonemizer(args.lang, with_stress=not args.no_stress)
    if not sym_path.exists() and args.lang.startswith("en"):
        # a new English table covers English's phonemes, not only this corpus's (dmtts.text.coverage)
        from dmtts.text.coverage import COVERAGE_TEXT

        table.update(phonemizer.phonemize(COVERAGE_TEXT))

    n_ok = n_failed = 0
    unknown: set[str] = set()
    failures: list[str] = []

    def process(chunk, writer):
        nonlocal n_ok, n_failed
        texts = [s.text or "" for c in chunk for s in c.supervisions]
        results = phonemizer.phonemize_batch_safe(texts, num_jobs=args.num_jobs)
        k = 0
        for cut in chunk:
            sup_results = results[k : k + len(cut.supervisions)]
            k += len(cut.supervisions)
            errors = [r for r in sup_results if isinstance(r, DmttsError)]
            if not cut.supervisions:
                errors = [DmttsError("no supervision")]
            if errors:
                n_failed += 1
                msg = f"{cut.id}: {errors[0]}"
                failures.append(msg)
                logger.warning("skipping cut %s", msg)
                continue
            for sup, tokens in zip(cut.supervisions, sup_results):
                sup.custom = {**(sup.custom or {}), PHONEMES_KEY: tokens}
                if args.frozen_symbols:
                    unknown.update(t for t in tokens if t not in table)
                else:
                    table.update(tokens)
            writer.write(cut)
            n_ok += 1

    with atomic_path(out) as tmp:
        with CutSet.open_writer(tmp) as writer:
            chunk = []
            for cut in tqdm(cuts, desc="phonemize", unit="cut"):
                chunk.append(cut)
                if len(chunk) >= PHONEMIZE_CHUNK:
                    process(chunk, writer)
                    chunk = []
            if chunk:
                process(chunk, writer)
        if n_ok == 0:
            raise DmttsError(
                f"no cut of '{args.cuts}' could be phonemized ({n_failed} failed"
                + (f", e.g. {failures[0]}" if failures else "")
                + ")"
            )
    if not args.frozen_symbols:
        table.to_file(sym_path)
    if unknown:
        logger.warning("%d symbols not in the frozen table '%s': %s", len(unknown), sym_path, " ".join(sorted(unknown)))
    logger.info(
        "phonemized %d cuts -> %s (%d failed and skipped); symbol table %s (%d symbols)",
        n_ok, out, n_failed, sym_path, len(table),
    )
    if n_failed:
        print(f"{n_failed} cuts failed and were skipped:", *failures[:20], sep="\n  ")
    return 0


def train_bpe_main(args) -> int:
    from dmtts.text.bpe import train_bpe

    texts = []
    for path in args.cuts:
        for cut in _load_cuts(path):
            texts.extend(s.text for s in cut.supervisions if s.text)
    train_bpe(texts, args.out, args.vocab_size, model_type=args.model_type, character_coverage=args.character_coverage)
    print(f"BPE model written to {args.out}")
    return 0
