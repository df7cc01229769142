#!/usr/bin/env python
"""DM-Codec inference speed (paper preset) vs the public SpeechTokenizer implementation.

Prints one table:

* encode / decode real-time factor (seconds of compute per second of audio) for 10 s of audio
  at batch 1, and encode throughput (audio seconds per second) for a batch of 16 x 3 s clips
  (the tokenize path);
* the same for SpeechTokenizer's own code (PyPI ``speechtokenizer``, built from a config with
  random weights at our paper preset's sizes: n_filters 32, D 1024, strides 8-5-4-2, 2-layer
  BiLSTM, 8 x 1024 RVQ) and our time / its time;
* the machine's fp32 matmul rate, the codec's FLOPs per second of audio
  (``torch.utils.flop_counter``; LSTM FLOPs, which it does not see, are added analytically:
  2 * 4H(I + H) per step, layer and direction) and the compute-bound RTF = FLOPs / rate.

Ours runs as it does in the toolkit's inference path: ``torch.inference_mode()``, eval mode,
weight norm folded. SpeechTokenizer runs as shipped (eval mode, inference_mode; its
``torch.nn.utils.weight_norm`` hooks recompute the weights on every call).

    python benchmarks/codec_speed.py [--threads 2] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _flops import step_flops  # noqa: E402
from _timing import best_time, interleaved_best, make_matmul, print_head  # noqa: E402
from dmtts.codec.model import DMCodec  # noqa: E402

ST_CONFIG = {
    "n_filters": 32, "dimension": 1024, "strides": [8, 5, 4, 2], "lstm_layers": 2, "bidirectional": True,
    "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1, "activation": "ELU",
    "sample_rate": 16000, "n_q": 8, "semantic_dimension": 768, "codebook_size": 1024,
}


def load_speechtokenizer_class():
    """Import ``speechtokenizer.model.SpeechTokenizer`` without the package ``__init__``.

    The package's ``__init__`` imports its trainer (accelerate, beartype, lion_pytorch,
    torchaudio), which is not installed here (speechtokenizer is installed with --no-deps);
    the model modules themselves only need torch, numpy and einops.
    """
    spec = importlib.util.find_spec("speechtokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    if "speechtokenizer" not in sys.modules:
        pkg = types.ModuleType("speechtokenizer")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["speechtokenizer"] = pkg
    return importlib.import_module("speechtokenizer.model").SpeechTokenizer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2 = 2 CPU cores)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=10.0, help="batch-1 clip length")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batch-seconds", type=float, default=3.0)
    ap.add_argument("--chunk-frames", type=int, default=DMCodec.inference_chunk_frames,
                    help="CPU inference chunk size in frames (0: whole tensors)")
    ap.add_argument("--no-reference", action="store_true", help="skip the SpeechTokenizer timings")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    sr = 16000
    x1 = (0.1 * torch.randn(1, 1, int(args.seconds * sr))).to(device)
    xb = (0.1 * torch.randn(args.batch, 1, int(args.batch_seconds * sr))).to(device)

    ours = DMCodec.from_preset("paper").to(device).prepare_for_inference()
    ours.inference_chunk_frames = args.chunk_frames
    with torch.inference_mode():
        codes1 = ours.encode(x1)
    frames = codes1.shape[-1]

    def timed(call):
        """``call()`` as the toolkit's inference runs it, waiting for the device to finish."""
        def run():
            with torch.inference_mode():
                call()
            sync(device)
        return run

    fns = {("ours", "enc"): timed(lambda: ours.encode(x1)), ("ours", "dec"): timed(lambda: ours.decode(codes1)),
           ("ours", "batch"): timed(lambda: ours.encode(xb))}
    theirs = None
    if not args.no_reference:
        cls = load_speechtokenizer_class()
        if cls is None:
            print("speechtokenizer is not installed: `pip install --no-deps speechtokenizer` for the reference")
        else:
            torch.manual_seed(0)
            theirs = cls(ST_CONFIG).to(device).eval()
            with torch.inference_mode():
                st_codes = theirs.encode(x1)  # [n_q, B, T]
            assert st_codes.shape[-1] == frames, (st_codes.shape, frames)

            fns.update({("theirs", "enc"): timed(lambda: theirs.encode(x1)),
                        ("theirs", "dec"): timed(lambda: theirs.decode(st_codes)),
                        ("theirs", "batch"): timed(lambda: theirs.encode(xb))})

    # Interleave the runs (ours, theirs, ours, ...) and keep each one's fastest: on a shared
    # machine other load then hits both implementations alike.
    matmul, mm_flops = make_matmul(device=device)
    fns[("machine", "matmul")] = matmul  # measured in the same rounds: same background load
    best = interleaved_best(fns, args.repeats)
    res: dict = {}
    for (who, what), t in best.items():
        if who == "machine":
            continue
        res.setdefault(who, {})[what] = args.batch * args.batch_seconds / t if what == "batch" else t / args.seconds
    rate = mm_flops / min(best[("machine", "matmul")], best_time(matmul, 5))

    ours.inference_chunk_frames = 0  # the model's own FLOPs (chunk halos are our overhead, not the bound's)
    with torch.inference_mode():
        enc_flops = step_flops(lambda: ours.encode(x1), ours, lstm_factor=1) / args.seconds
        dec_flops = step_flops(lambda: ours.decode(codes1), ours, lstm_factor=1) / args.seconds
    bound_enc, bound_dec = enc_flops / rate, dec_flops / rate
    bound_batch = rate / enc_flops  # audio-s/s at the compute bound

    n_params = sum(ours.parameter_counts()[k] for k in ("encoder", "decoder"))
    print(f"DM-Codec speed, paper preset ({n_params / 1e6:.1f} M conv/LSTM parameters), device {device}, "
          f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}, chunk frames {args.chunk_frames}, best of {args.repeats}")
    print(f"fp32 matmul rate: {rate / 1e9:.1f} GFLOP/s;  FLOPs per audio second: encode "
          f"{enc_flops / 1e9:.2f} G, decode {dec_flops / 1e9:.2f} G")
    print()
    head = f"| {'measure':<44} | {'ours':>9} | {'SpeechTokenizer':>15} | {'ours/theirs':>11} | {'compute bound':>13} | {'ours/bound':>10} |"
    print_head(head)
    rows = [
        (f"encode RTF, batch 1, {args.seconds:g} s", "enc", bound_enc, False),
        (f"decode RTF, batch 1, {args.seconds:g} s", "dec", bound_dec, False),
        (f"encode throughput, {args.batch} x {args.batch_seconds:g} s (audio-s/s)", "batch", bound_batch, True),
    ]
    for name, key, bound, higher_better in rows:
        o = res["ours"][key]
        t = res.get("theirs", {}).get(key)
        # ours/theirs and ours/bound are time ratios (< 1: ours faster), also for throughput rows
        ratio = (t / o if higher_better else o / t) if t else None
        vs_bound = bound / o if higher_better else o / bound
        fmt = (lambda v: f"{v:9.1f}") if higher_better else (lambda v: f"{v:9.4f}")
        print(f"| {name:<44} | {fmt(o)} | {(fmt(t) if t else '-'):>15} | "
              f"{(f'{ratio:11.2f}' if ratio else '-'):>11} | {fmt(bound):>13} | {vs_bound:10.2f} |")
    print()
    print("RTF = compute seconds per audio second (lower is better); ratios are time ratios "
          "(ours/theirs < 1: ours is faster; ours/bound 1.0 = at the compute bound).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
