"""Data subcommands: ``prepare``, ``download``, ``subset``, ``make-demo-corpus``.

``segment`` (windows of cuts with their own transcripts) needs an ASR model, so its command is
registered from ``dmtts.teachers.cli``, next to the teacher extraction it feeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _prepare(args: argparse.Namespace) -> int:
    from dmtts.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(num_jobs=args.num_jobs, min_duration=args.min_duration,
                             max_duration=args.max_duration, text_norm=args.text_norm, overwrite=args.overwrite,
                             seed=args.seed, held_out_speakers=args.held_out_speakers,
                             trim_silence=args.trim_silence, trim_threshold_db=args.trim_threshold_db)
    report = prepare(args.corpus, args.corpus_dir, args.output_dir, args.parts, options, args.audio_dir)
    print(report.summary())
    return 0


def _download(args: argparse.Namespace) -> int:
    from dmtts.data.download import download

    print(download(args.corpus, args.target_dir, args.parts))
    return 0


def _make_demo_corpus(args: argparse.Namespace) -> int:
    from dmtts.data.demo_corpus import make_demo_corpus, make_unseen_corpus

    if args.unseen:
        print(make_unseen_corpus(args.output_dir, args.num_jobs))
        return 0
    print(make_demo_corpus(args.output_dir, args.num_speakers, args.utts_per_speaker, args.seed,
                           args.num_jobs))
    return 0


def _subset(args: argparse.Namespace) -> int:
    from dmtts.data import subsets

    cuts = subsets.load_cuts(args.cuts)
    exclude = None
    if args.exclude_speakers_in:
        exclude = {c.supervisions[0].speaker for c in subsets.load_cuts(args.exclude_speakers_in)
                   if c.supervisions}
    if args.protocol == "codec-eval":
        out = subsets.codec_eval_subset(cuts, args.num, args.seed, exclude_speakers=exclude)
    else:
        out = subsets.tts_eval_pairs(cuts, args.min_duration, args.max_duration, args.prompt_duration,
                                     args.seed, prompt_crop=args.prompt_crop,
                                     exclude_speakers=exclude, num=args.num)
    subsets.save_cuts(out, args.out)
    print(f"{len(out)} cuts -> {args.out}")
    return 0


def register(subparsers) -> None:
    from dmtts.data.prepare import CORPORA
    from dmtts.data.transcript_norm import TEXT_NORMS

    p = subparsers.add_parser("prepare", help="corpus -> lhotse manifests and 16 kHz cuts",
                              description="Prepare a local corpus into data/manifests and data/cuts.")
    p.add_argument("corpus", choices=CORPORA)
    p.add_argument("--corpus-dir", required=True, type=Path,
                   help="LibriSpeech/LibriTTS: the directory holding the parts; VCTK: the corpus root; "
                        "libriheavy: the directory with libriheavy_cuts_*.jsonl.gz; demo: the generated corpus")
    p.add_argument("--output-dir", required=True, type=Path, help="e.g. data (gets manifests/ and cuts/)")
    p.add_argument("--parts", nargs="+", default=None, help="parts to prepare (default: all found)")
    p.add_argument("--audio-dir", type=Path, default=None, help="libriheavy: local LibriLight audio root")
    p.add_argument("--num-jobs", type=int, default=1)
    p.add_argument("--min-duration", type=float, default=None, help="drop cuts shorter than this (s)")
    p.add_argument("--max-duration", type=float, default=None, help="drop cuts longer than this (s)")
    p.add_argument("--text-norm", choices=TEXT_NORMS, default="clean")
    p.add_argument("--seed", type=int, default=42, help="demo: seed of the train/dev/test split")
    p.add_argument("--held-out-speakers", type=int, default=1, help="demo: speakers kept out of train")
    p.add_argument("--trim-silence", action="store_true",
                   help="cut leading and trailing silence from every cut, so prompts and endings are speech")
    p.add_argument("--trim-threshold-db", type=float, default=40.0,
                   help="with --trim-silence: frames this many dB below the cut's loudest frame are silence")
    p.add_argument("--overwrite", action="store_true", help="redo parts whose cuts already exist")
    p.set_defaults(func=_prepare)

    p = subparsers.add_parser("download", help="download a corpus (needs internet)")
    p.add_argument("corpus", choices=["librispeech", "libritts", "vctk", "libriheavy"])
    p.add_argument("--target-dir", required=True, type=Path)
    p.add_argument("--parts", nargs="+", default=None)
    p.set_defaults(func=_download)

    p = subparsers.add_parser("make-demo-corpus", help="synthesize the offline multi-speaker demo corpus")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--num-speakers", type=int, default=8,
                   help="voices (2-22); the last speaker id is the held-out zero-shot voice")
    p.add_argument("--utts-per-speaker", type=int, default=40)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-jobs", type=int, default=2, help="synthesizer processes run at once")
    p.add_argument("--unseen", action="store_true",
                   help="instead: espeak-ng voices reading hand-written sentences that the demo corpus never "
                        "has (a zero-shot check beyond the recipe's own voices and grammar)")
    p.set_defaults(func=_make_demo_corpus)

    p = subparsers.add_parser("subset", help="evaluation subsets (codec reconstruction, zero-shot TTS pairs)")
    sub = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    s = sub.add_parser("codec-eval", help="N random utterances (paper: 300 of test-clean, seed 42)")
    s.add_argument("--num", type=int, default=300)
    presets = {
        "librispeech-tts-eval": ("VALL-E protocol: 4-10 s targets, random 3 s prompt crop", 4.0, 10.0),
        "vctk-tts-eval": ("3 s prompt + text of a different utterance of the same speaker", None, None),
    }
    for name, (help_text, lo, hi) in presets.items():
        t = sub.add_parser(name, help=help_text)
        t.add_argument("--num", type=int, default=None, help="keep a random subset of this many pairs")
        t.add_argument("--min-duration", type=float, default=lo)
        t.add_argument("--max-duration", type=float, default=hi)
        t.add_argument("--prompt-duration", type=float, default=3.0)
        t.add_argument("--prompt-crop", choices=["random", "start", "end"], default="random",
                       help="where the prompt crop sits in its utterance (end: ends on speech when trimmed)")
    for s in sub.choices.values():
        s.add_argument("--exclude-speakers-in", type=Path, default=None,
                       help="drop speakers that occur in this cut manifest (e.g. the training cuts)")
        s.add_argument("--cuts", required=True, type=Path)
        s.add_argument("--out", required=True, type=Path)
        s.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=_subset)
