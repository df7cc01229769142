"""``dmtts codec {train,encode,decode,reconstruct,export,validate,import,info}``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmtts.codec.config import AVG_CANDIDATES
from dmtts.errors import DmttsError
from dmtts.utils import STORAGE_DTYPES


def register(subparsers) -> None:
    from dmtts.train.cli_args import add_training_arguments

    p = subparsers.add_parser("codec", help="train, run and export DM-Codec",
                              description="DM-Codec: training, encoding/decoding, export and model info.")
    sub = p.add_subparsers(dest="codec_command", metavar="SUBCOMMAND")

    t = sub.add_parser("train", help="train a codec (GAN + distillation); torchrun for DDP")
    add_training_arguments(t, "YAML: 'preset: paper|official|tiny' plus overrides")
    t.set_defaults(func=_train)

    e = sub.add_parser("encode", help="audio file -> codes (.npy, int16 [n_q, T])")
    e.add_argument("--model", required=True, help="exported model directory (or preset:NAME for random weights)")
    e.add_argument("--in", dest="inp", required=True, help="input audio (any rate; resampled to the model's)")
    e.add_argument("--out", required=True, help="output .npy")
    e.add_argument("--n-q", type=int, default=None, help="number of RVQ levels (default: all)")
    e.add_argument("--chunk-seconds", type=float, default=30.0, help="encode long audio in chunks of this size")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=_encode)

    d = sub.add_parser("decode", help="codes (.npy [n_q, T]) -> audio")
    d.add_argument("--model", required=True)
    d.add_argument("--in", dest="inp", required=True, help="codes .npy written by `dmtts codec encode`")
    d.add_argument("--out", required=True, help="output audio file (.wav)")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_decode)

    r = sub.add_parser("reconstruct", help="audio -> codes -> audio")
    r.add_argument("--model", required=True)
    r.add_argument("--in", dest="inp", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--n-q", type=int, default=None)
    r.add_argument("--chunk-seconds", type=float, default=30.0)
    r.add_argument("--device", default="cpu")
    r.set_defaults(func=_reconstruct)

    x = sub.add_parser("export", help="training checkpoint -> model dir (config.json + model.safetensors), "
                                      "weight norm folded")
    x.add_argument("--checkpoint", required=True, help="checkpoint file, or an experiment dir (latest checkpoint)")
    x.add_argument("--out", required=True, help="output model directory")
    x.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32",
                   help="storage precision of the weights (float16: half the size; loaded as float32)")
    x.add_argument("--avg", type=_avg_count, default=1,
                   help="export the mean weights of this many newest checkpoints up to --checkpoint (icefall's "
                        "--avg; the codebooks come from the last one), or 'best': the count of --avg-candidates "
                        "whose mean has the lowest validation mel loss on the run's valid_cuts (`codec validate`)")
    x.add_argument("--avg-candidates", type=int, nargs="+", default=list(AVG_CANDIDATES),
                   help="checkpoint counts that --avg best scores (those the run kept enough checkpoints for)")
    x.set_defaults(func=_export)

    v = sub.add_parser("validate", help="validation losses of checkpoint averages: choose export --avg on dev",
                       description="The run's validation losses (mel, waveform L1, distillation) of the mean of "
                                   "the N newest checkpoints up to --checkpoint, for each N of --avg, averaged as "
                                   "`dmtts codec export --avg N` does.")
    v.add_argument("--checkpoint", required=True, help="checkpoint file, or an experiment dir (latest checkpoint)")
    v.add_argument("--avg", type=int, nargs="+", default=[1, 2, 4, 8], help="checkpoint counts to score")
    v.add_argument("--valid-cuts", default=None, help="validation cuts with teacher features (default: the run's)")
    v.add_argument("--out", default=None, help="also write the table here (.csv)")
    v.set_defaults(func=_validate)

    m = sub.add_parser("import", help="released SpeechTokenizer / DM-Codec checkpoint -> model dir",
                       description="Convert a public SpeechTokenizer or DM-Codec release (config.json + .pt "
                                   "state dict) into a dmtts codec export (weight norm folded). The 1024->768 "
                                   "'transform' distillation projection is kept aside in "
                                   "semantic_projection.safetensors and named in config.json.")
    m.add_argument("--from", dest="source", required=True, choices=["speechtokenizer", "dm-codec"],
                   help="release format (DM-Codec's is SpeechTokenizer's)")
    m.add_argument("--config", required=True, help="the release's config.json")
    m.add_argument("--checkpoint", required=True, help="the release's generator state dict (.pt)")
    m.add_argument("--out", required=True, help="output model directory")
    m.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32", help="storage precision of the weights")
    m.set_defaults(func=_import)

    i = sub.add_parser("info", help="parameter counts, frame rate and bitrate")
    g = i.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="paper | official | tiny")
    g.add_argument("--model", help="exported model directory")
    i.set_defaults(func=_info)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _train(args: argparse.Namespace) -> int:
    from dmtts.codec.config import load_training_config
    from dmtts.codec.train import train

    cfg = load_training_config(args.config)
    train(cfg, args.exp_dir, resume=args.resume, progress=not args.no_progress)
    return 0


def _load_wav(path: str, model):
    import torch

    from dmtts.audio import load_audio

    wav, _ = load_audio(path, sample_rate=model.sample_rate)
    return torch.from_numpy(wav)[None, None]


def _encode_file(args, model):
    import torch

    wav = _load_wav(args.inp, model).to(args.device)
    with torch.inference_mode():
        codes = model.encode_long(wav, n_q=args.n_q, chunk_seconds=args.chunk_seconds)
    return codes, wav.shape[-1]


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    from dmtts.codec.model import load_codec
    from dmtts.utils import atomic_path

    model = load_codec(args.model, args.device)
    codes, _ = _encode_file(args, model)
    arr = codes[0].cpu().numpy().astype(np.int16)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise DmttsError(f"--out '{out}' must end in .npy")
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    print(f"{args.inp}: {arr.shape[1]} frames x {arr.shape[0]} levels -> {out} "
          f"({model.bitrate(arr.shape[0]):.0f} bps)")
    return 0


def _decode(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dmtts.audio import save_audio
    from dmtts.codec.model import load_codec

    path = Path(args.inp)
    if not path.is_file():
        raise DmttsError(f"codes file '{path}' does not exist")
    try:
        arr = np.load(path)
    except Exception as e:
        raise DmttsError(f"cannot read codes file '{path}' ({e}): pass a .npy written by `dmtts codec encode`") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise DmttsError(f"codes file '{path}' must hold an integer array [n_q, T], got {arr.dtype} {arr.shape}")
    model = load_codec(args.model, args.device)
    if arr.shape[0] > model.n_q and arr.shape[1] <= model.n_q:
        arr = arr.T  # (T, n_q) layout, as stored on cuts
    with torch.inference_mode():
        wav = model.decode_long(torch.from_numpy(arr.astype(np.int64))[None].to(args.device))
    save_audio(args.out, wav[0, 0].cpu(), model.sample_rate)
    print(f"{path}: {arr.shape[1]} frames -> {args.out} ({wav.shape[-1] / model.sample_rate:.2f} s)")
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    import torch

    from dmtts.audio import save_audio
    from dmtts.codec.model import load_codec

    model = load_codec(args.model, args.device)
    codes, n = _encode_file(args, model)
    with torch.inference_mode():
        wav = model.decode_long(codes)[..., :n]
    save_audio(args.out, wav[0, 0].cpu(), model.sample_rate)
    print(f"{args.inp} -> {codes.shape[1]} levels x {codes.shape[2]} frames -> {args.out}")
    return 0


def _avg_count(value: str) -> int | str:
    """``--avg``: a checkpoint count of at least 1, or ``best``."""
    if value == "best":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a checkpoint count or 'best', got '{value}'") from None


def _export(args: argparse.Namespace) -> int:
    import json

    from dmtts.codec.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, dtype=args.dtype, avg=args.avg,
                            avg_candidates=tuple(args.avg_candidates))
    training = json.loads((Path(out) / "config.json").read_text()).get("training", {})
    if "avg_chosen_on_dev" in training:
        losses = ", ".join(f"{n}: {mel:.4f}" for n, mel in training["avg_chosen_on_dev"]["valid_mel"].items())
        print(f"--avg best: validation mel loss of each checkpoint mean ({losses})")
    n = len(training.get("averaged_steps", [])) or 1
    averaged = f", the mean of {n} checkpoints" if n > 1 else ""
    print(f"exported {args.checkpoint} -> {out} (config.json + model.safetensors in {args.dtype}, "
          f"weight norm folded{averaged})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    import csv

    from dmtts.codec.export import validate_averages
    from dmtts.utils import atomic_path

    rows = validate_averages(args.checkpoint, sorted(set(args.avg)), valid_cuts=args.valid_cuts)
    best = min(rows, key=lambda r: r["mel"])
    print("avg  steps                 mel      wav_l1   distill")
    for r in rows:
        steps = f"{r['steps'][0]}..{r['steps'][-1]}"
        mark = "  <- lowest mel" if r is best else ""
        print(f"{r['avg']:>3}  {steps:<20}  {r['mel']:.4f}  {r['wav_l1']:.5f}  {r['distill']:.4f}{mark}")
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["avg", "first_step", "last_step", "mel", "wav_l1", "distill"])
            for r in rows:
                w.writerow([r["avg"], r["steps"][0], r["steps"][-1], f"{r['mel']:.5f}", f"{r['wav_l1']:.6f}",
                            f"{r['distill']:.5f}"])
    return 0


def _import(args: argparse.Namespace) -> int:
    from dmtts.codec.import_public import import_public_checkpoint

    out = import_public_checkpoint(args.config, args.checkpoint, args.out, source=args.source, dtype=args.dtype)
    print(f"imported {args.checkpoint} ({args.source}) -> {out} (config.json + model.safetensors, weight norm "
          "folded" + (", semantic_projection.safetensors" if (out / "semantic_projection.safetensors").is_file()
                      else "") + ")")
    return 0


def _info(args: argparse.Namespace) -> int:
    from dmtts.codec.model import DMCodec, load_codec

    if args.preset:
        model = DMCodec.from_preset(args.preset)
        name = f"preset {args.preset}"
    else:
        model = load_codec(args.model)
        name = args.model
    counts = model.parameter_counts()
    c = model.config
    print(f"DM-Codec ({name})")
    for part in ("encoder", "quantizer", "decoder", "total"):
        extra = " (codebook entries)" if part == "quantizer" else ""
        print(f"  {part:<10} {counts[part]:>12,d} parameters{extra}")
    print(f"  sample rate {c.sample_rate} Hz, hop {model.hop_length} samples, frame rate {model.frame_rate:g} Hz")
    print(f"  RVQ {c.n_q} levels x {c.codebook_size} codes, dim {c.dimension}; "
          f"bitrate {model.bitrate():.0f} bps ({model.bitrate(1):.0f} bps per level)")
    return 0
