#!/usr/bin/env python
"""Speed of the harmonic head's oscillator bank (``dmtts.codec.periodic.harmonic_synthesis``)
against the direct formula it replaces: up-sample every harmonic's amplitude to the sample rate,
multiply by its sine and sum (``F.interpolate`` + broadcasting). Both compute the same sum; the
benchmark checks that (output and amplitude gradient) before it times forward + backward.

    python benchmarks/harmonic_synthesis.py --batch 8 --seconds 1 --harmonics 160

Prints the best of ``--repeats`` interleaved runs of each and their ratio.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import interleaved_best  # noqa: E402
from dmtts.codec.periodic import harmonic_synthesis  # noqa: E402


def upsampled_synthesis(f0, amplitudes, hop, sample_rate, harmonic_numbers):
    """The reference: amplitudes interpolated to every sample, ``Σ_k a_k(n) sin(k φ(n))``."""
    f0_samples = F.interpolate(f0[:, None], scale_factor=hop, mode="linear", align_corners=False)
    phase = (2 * math.pi * torch.frac(torch.cumsum(f0_samples.double() / sample_rate, dim=-1))).float()
    amp = F.interpolate(amplitudes, scale_factor=hop, mode="linear", align_corners=False)
    return (amp * torch.sin(harmonic_numbers[None, :, None] * phase)).sum(1, keepdim=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--harmonics", type=int, default=160, help="160: the whole band above a 50 Hz F0 at 16 kHz")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--hop", type=int, default=320)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frames = int(args.seconds * args.sample_rate / args.hop)
    f0 = 80 + 200 * torch.rand(args.batch, frames)
    amplitudes = torch.rand(args.batch, args.harmonics, frames, requires_grad=True)
    numbers = torch.arange(1.0, args.harmonics + 1)
    grad_out = torch.randn(args.batch, 1, frames * args.hop)

    def run(fn):
        amplitudes.grad = None
        wav = fn(f0, amplitudes, args.hop, args.sample_rate, numbers)
        wav.backward(grad_out)
        return wav.detach(), amplitudes.grad.clone()

    ours, ref = run(harmonic_synthesis), run(upsampled_synthesis)
    out_err = (ours[0] - ref[0]).abs().max().item()
    grad_err = ((ours[1] - ref[1]).abs().max() / ref[1].abs().max()).item()
    if out_err > 1e-3 or grad_err > 1e-4:
        raise SystemExit(f"the two syntheses disagree: output {out_err:.2e}, gradient {grad_err:.2e}")
    best = interleaved_best({"segments": lambda: run(harmonic_synthesis),
                             "upsampled": lambda: run(upsampled_synthesis)}, args.repeats)
    print(f"batch {args.batch} x {args.seconds:g} s, {args.harmonics} harmonics, {args.threads} threads; "
          f"forward + backward, best of {args.repeats}")
    print(f"  agreement: output max |diff| {out_err:.1e}, gradient max relative diff {grad_err:.1e}")
    print(f"  upsampled (reference)  {best['upsampled'] * 1e3:8.1f} ms")
    print(f"  segments (dmtts)       {best['segments'] * 1e3:8.1f} ms   {best['upsampled'] / best['segments']:.2f}x faster")


if __name__ == "__main__":
    main()
