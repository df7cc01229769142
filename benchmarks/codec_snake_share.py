#!/usr/bin/env python
"""What the Snake activations cost in a training step of the quality codec: forward + backward of
``recipes/demo/conf/codec_quality.yaml``'s generator on ``--batch`` crops of ``--seconds``, with
the decoder's Snake as it is, and with Snake replaced by a plain per-channel multiply (the lower
bound of any fused Snake kernel: one elementwise pass forward, one backward).

    python benchmarks/codec_snake_share.py --repeats 5

Prints the best of ``--repeats`` interleaved runs of each and their ratio. On the project's
2-core machine (2026-12-03): 0.324 s as is, 0.327 s with the multiply (a later, quieter run:
0.268 and 0.269 s, ratio 0.994): Snake's share is within the noise, so fusing it cannot make the step faster; the convolutions (about 43 % of the step)
and the LSTMs (about 20 %) are where the time goes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._timing import interleaved_best  # noqa: E402
from dmtts.codec import periodic  # noqa: E402
from dmtts.codec.config import training_config  # noqa: E402
from dmtts.codec.model import DMCodec  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "recipes/demo/conf/codec_quality.yaml"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    raw = yaml.safe_load(Path(args.config).read_text())
    cfg = training_config(raw["preset"], {"model": raw["model"]}).model
    cfg.kmeans_init = False  # k-means on the first batch is a one-off, not a step's cost
    torch.manual_seed(0)
    model = DMCodec(cfg).train()
    n_snake = sum(isinstance(m, periodic.Snake) for m in model.modules())
    wav = 0.1 * torch.randn(args.batch, 1, int(args.seconds * cfg.sample_rate))
    snake_forward = periodic.Snake.forward

    def multiply(self, x):
        return x * self.alpha

    def step(forward):
        def run():
            periodic.Snake.forward = forward
            model.zero_grad(set_to_none=True)
            model(wav).wav.pow(2).mean().backward()
        return run

    try:
        best = interleaved_best({"snake": step(snake_forward), "multiply": step(multiply)}, args.repeats)
    finally:
        periodic.Snake.forward = snake_forward
    print(f"generator forward + backward, {args.batch} x {args.seconds:g} s, {n_snake} Snake layers, "
          f"{args.threads} threads (best of {args.repeats}):")
    print(f"  Snake as it is           {best['snake']:.4f} s")
    print(f"  Snake -> plain multiply  {best['multiply']:.4f} s")
    print(f"  ratio                    {best['snake'] / best['multiply']:.3f}  (the most a fused Snake could save)")


if __name__ == "__main__":
    main()
