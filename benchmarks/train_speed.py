#!/usr/bin/env python
"""Training-step throughput: DM-Codec against the public SpeechTokenizer step, and the TTS models' MFU.

Prints two tables.

**Codec** — one generator + discriminator optimiser step at the public SpeechTokenizer
configuration (``config/spt_base_cfg.json`` of github.com/ZhangXInFD/SpeechTokenizer: n_filters
64, D 1024, strides 8-5-4-2, 2-layer BiLSTM, 8 x 1024 RVQ, 768-d distillation target, Adam lr 1e-4 betas (0.9, 0.99), losses: LSGAN adversarial, 2 x L1 feature matching,
45/1/1/1 x four-scale 80-bin mel L1, 500 x waveform L1, 10 x commitment, 120 x D-axis
distillation) for:

* ``SpeechTokenizer``: the public code. Its generator (``speechtokenizer.model``), its three
  discriminators (``speechtokenizer.discriminators``: HiFi-GAN MPD with periods 2-3-5-7-11 and
  32-128-512-1024-1024 channels, HiFi-GAN MSD with 3 scales (first spectrally normed) up to 1024
  channels, EnCodec MS-STFT with 32 filters at n_fft 1024/2048/512/256/128) and its loss functions
  (``speechtokenizer.trainer.loss``), all imported from the PyPI package, run in the order of its
  trainer's loop: generator forward; discriminator zero_grad/forward on (x, x_hat.detach())/
  backward/step; generator zero_grad/forward of the discriminators on (x, x_hat)/backward/step.
  torchaudio, which two of those modules import, cannot be installed next to this torch; a
  small stand-in (:func:`install_torchaudio_standin`) supplies the two transforms they use
  (complex ``Spectrogram``, HTK/Slaney ``MelScale`` filter bank).
* ``dmtts official+pub-D``: ``dmtts.codec.train.CodecTrainer.train_step`` with the ``official``
  preset (the same generator sizes and loss terms) and discriminators sized like the public ones
  (MPD 32-128-512-1024, MSD up to 1024 channels, MS-STFT 32 filters).
* ``dmtts paper``: the same with the paper preset's smaller discriminators (what
  ``dmtts codec train`` runs by default; n_filters 32).

Each system reports step time (best of N, interleaved), the step's FLOPs
(``torch.utils.flop_counter`` over forward + backward; LSTMs analytically: 3 x their forward
FLOPs), achieved GFLOP/s, peak RSS above the built models (a child process per system, one
warm-up step then one measured step, ``ru_maxrss`` deltas), and the time ratio against the
public step.

**TTS** — one ScaledAdam optimiser step (forward, backward, ``optimizer.step``) of the AR and
NAR models at the paper size (12 layers, d 1024, 16 heads, FFN 4096) on a batch of
``--tts-batch`` utterances of ``--tts-seconds`` seconds (50 codec frames per second, 12 text
tokens per second). MFU = FLOPs of the forward + backward (flop counter, attention included) /
(step time x the fp32 matmul rate measured in the same interleaved rounds). ``--compile`` adds
the same step with the model wrapped in ``torch.compile`` (inductor, static shapes: the
steady-state speed for one batch shape; compilation takes minutes per new shape on this CPU).

**Sizes and memory.** The defaults are the sizes ``docs/benchmarks.md`` reports: codec batch
1 x 3 s (about 10 GiB: the three systems and their optimiser states sit in one process) and
TTS batch 1 x 6 s at the paper size (about 10 GiB). ``--public-batch`` runs the public config's
codec batch, 6 x 3 s (about 27 GiB). Before building anything the script estimates the run's
peak memory (``_memory.py``) and stops with what it needs when the machine has less available
(``--no-memory-check`` runs anyway); at the end it prints the measured peak.

Modules: ``train_speed_codec.py``, ``train_speed_tts.py`` and ``train_speed_stages.py`` build
and time the three parts; ``_flops.py``, ``_timing.py`` and ``_memory.py`` are shared with the
other benchmarks.

    python benchmarks/train_speed.py [--threads 2] [--repeats 3] [--parts codec,tts] [--compile]
    python benchmarks/train_speed.py --parts tts --tts-size tiny --tts-seconds 1 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _memory import (GIB, TEXT_TOKENS_PER_SECOND, check_fits, codec_need_gib, max_rss_bytes,  # noqa: E402
                     stages_need_gib, tts_need_gib)
from _timing import best_time, make_matmul, print_head  # noqa: E402
from train_speed_codec import PUBLIC_BATCH, codec_memory_child, run_codec  # noqa: E402
from train_speed_stages import STAGES_PEAK_PARAMS, run_stages  # noqa: E402
from train_speed_tts import model_config, parameter_counts, run_tts  # noqa: E402

PARTS = ("codec", "tts", "stages")


def fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2 = 2 CPU cores)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; each system keeps its fastest")
    ap.add_argument("--parts", default="codec,tts", help="comma list of: codec, tts, stages")
    ap.add_argument("--codec-batch", type=int, default=1,
                    help="codec batch (default 1, as docs/benchmarks.md; the public config: 6, see --public-batch)")
    ap.add_argument("--public-batch", action="store_true",
                    help=f"codec batch {PUBLIC_BATCH} x 3 s, the public config's (about 27 GiB of memory)")
    ap.add_argument("--codec-seconds", type=float, default=3.0, help="public config segment_size / 16 kHz (3 s)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-system peak-RSS child processes")
    ap.add_argument("--tts-size", default="paper", help="TTS model preset (paper | small | tiny)")
    ap.add_argument("--tts-batch", type=int, default=1, help="utterances per TTS batch (default 1)")
    ap.add_argument("--tts-seconds", type=float, default=6.0, help="seconds per TTS utterance (default 6)")
    ap.add_argument("--compile", action="store_true", help="also time the TTS steps under torch.compile")
    ap.add_argument("--stage-seconds", type=float, default=10.0, help="clip length of the stages part")
    ap.add_argument("--no-memory-check", action="store_true",
                    help="run even when the estimated peak memory exceeds what is available")
    ap.add_argument("--codec-memory-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.public_batch:
        args.codec_batch, args.codec_seconds = PUBLIC_BATCH, 3.0
    args.parts = set(args.parts.split(","))
    unknown = args.parts - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; use codec, tts and/or stages")
    from dmtts.tts.config import PRESETS

    if args.tts_size not in PRESETS:
        ap.error(f"--tts-size: unknown preset '{args.tts_size}'; use {', '.join(PRESETS)}")
    return args


def memory_needs(args) -> dict[str, float]:
    """Estimated peak RSS (GiB) of each part this run does."""
    needs = {}
    if "codec" in args.parts:
        needs["codec"] = codec_need_gib(args.codec_batch, args.codec_seconds)
    if "tts" in args.parts:
        mcfg = model_config(args.tts_size)
        needs["tts"] = tts_need_gib(mcfg.n_layers, mcfg.d_model, parameter_counts(args.tts_size), args.tts_batch,
                                    args.tts_seconds, copies=2 if args.compile else 1)
    if "stages" in args.parts:
        needs["stages"] = stages_need_gib(STAGES_PEAK_PARAMS, args.stage_seconds)
    return needs


def print_codec(args, rate_fn) -> None:
    rows, rate = run_codec(args, rate_fn)
    print()
    print(f"Codec: one generator + discriminator step, batch {args.codec_batch} x {args.codec_seconds:g} s; "
          f"fp32 matmul rate in the same rounds {rate / 1e9:.1f} GFLOP/s")
    print_head(f"| {'system':<22} | {'G / D params':>13} | {'step s':>7} | {'vs public':>9} | {'TFLOP/step':>10} | "
               f"{'GFLOP/s':>7} | {'MFU':>5} | {'RSS step':>9} | {'RSS peak':>9} |")
    for r in rows:
        params = f"{r['gen_params'] / 1e6:.1f}M/{r['disc_params'] / 1e6:.1f}M"
        rss = (fmt_bytes(r["rss_step"]), fmt_bytes(r["rss_peak"])) if r["rss_peak"] else ("-", "-")
        print(f"| {r['system']:<22} | {params:>13} | {r['time']:7.2f} | {r['ratio']:8.2f}x | "
              f"{r['flops'] / 1e12:10.3f} | {r['flops'] / r['time'] / 1e9:7.1f} | {100 * r['mfu']:4.0f}% | "
              f"{rss[0]:>9} | {rss[1]:>9} |")


def print_tts(args, rate_fn) -> None:
    rows, rate = run_tts(args, rate_fn)
    print()
    print(f"TTS: one ScaledAdam step, {args.tts_size} size, batch {args.tts_batch} x {args.tts_seconds:g} s "
          f"({int(args.tts_seconds * 50)} frames + {int(args.tts_seconds * TEXT_TOKENS_PER_SECOND)} text tokens "
          f"each); fp32 matmul rate in the same rounds {rate / 1e9:.1f} GFLOP/s")
    print_head(f"| {'model':<14} | {'params':>7} | {'step s':>7} | {'optimizer s':>11} | {'TFLOP fwd+bwd':>13} | "
               f"{'MFU':>5} | {'MFU fwd+bwd':>11} | {'first step s':>12} |")
    for r in rows:
        name = r["model"].upper() + (" compiled" if r["compiled"] else " eager")
        print(f"| {name:<14} | {r['params'] / 1e6:6.1f}M | {r['time']:7.2f} | {r['opt_time']:11.2f} | "
              f"{r['flops'] / 1e12:13.3f} | {100 * r['mfu']:4.0f}% | {100 * r['mfu_fwd_bwd']:10.0f}% | "
              f"{r['first_step_s']:12.1f} |")
    print("MFU = forward+backward FLOPs / (whole step time x matmul rate); 'MFU fwd+bwd' leaves the "
          "optimizer's time out; 'first step' includes compilation for compiled rows.")


def print_stages(args, rate_fn) -> None:
    print()
    mm, mm_flops = rate_fn
    rate = mm_flops / best_time(mm, 3)
    print(f"Offline stages, one process, inference mode (audio seconds processed per second of compute); "
          f"fp32 matmul rate just before {rate / 1e9:.1f} GFLOP/s:")
    print_head(f"| {'stage':<16} | {'what':<100} | {'audio-s/s':>9} | {'GFLOP/audio-s':>13} |")
    for stage, what, speed, how, flops in run_stages(args):
        fl = f"{flops / 1e9:13.2f}" if flops else f"{'-':>13}"
        print(f"| {stage:<16} | {(what + '; ' + how):<100} | {speed:9.2f} | {fl} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.codec_memory_child:
        print(json.dumps(codec_memory_child(args.codec_memory_child, args.codec_batch, args.codec_seconds)))
        return 0
    needs = memory_needs(args)
    if args.no_memory_check:
        memory_line = f"memory check skipped; estimated peak RSS {max(needs.values()):.1f} GiB"
    else:
        memory_line = check_fits(needs, "use smaller sizes (--codec-batch, --codec-seconds, --tts-batch, "
                                        "--tts-seconds, --tts-size small), fewer --parts or a larger machine")
    load0 = os.getloadavg()
    rate_fn = make_matmul()
    print(f"device cpu, {args.threads} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, best of {args.repeats} interleaved rounds, "
          f"load average at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min)")
    print(memory_line)
    for part, run in (("codec", print_codec), ("tts", print_tts), ("stages", print_stages)):
        if part in args.parts:
            run(args, rate_fn)
    load1 = os.getloadavg()
    print(f"\nload average at end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}; "
          f"peak RSS of this process {max_rss_bytes() / GIB:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
