#!/usr/bin/env python
"""Balance of the generator's loss terms in the ``paper`` and ``official`` presets.

Both presets use the same paper weights (X = 120: mel 45, L1 ≈ 500, commitment ≈ 10, distill 120)
but different *terms* (7-scale L1+L2 64-bin mel vs 45 x one 80-bin L1 scale + 3 more; commitment
summed vs averaged over the 8 levels; hinge + relative feature matching vs LSGAN + absolute L1
feature matching; half-sum vs sum of the LM and SM distillation losses). This trains each preset
for ``--steps`` steps from the same seed on the same cuts and prints, for the mean of the last
``--window`` steps, every weighted term ``λ·L`` and its share of the generator loss.

Reduced width, the presets' loss config: the codec is the ``tiny`` width (n_filters 8, latent 64,
128 codes x 8 levels) in both runs, so the comparison isolates the loss configuration; every
discriminator keeps its preset's layout and options (periods, MSD layout and spectral norm, STFT
normalisation / centring) with every channel count divided by ``--disc-divisor``. Data: 1 s crops,
batch 4, adversarial losses from step 1 (both presets' default), distillation ``lm+sm`` against
the cuts' teacher features.

    python benchmarks/codec_loss_balance.py \\
        --cuts recipes/demo/data/teachers/demo_cuts_train_with_feats.jsonl.gz --out docs/presets_balance.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmtts.codec.config import training_config  # noqa: E402
from dmtts.codec.train import CodecTrainer  # noqa: E402

TERMS = (  # (stats key, weight key, label)
    ("wav_l1", "lambda_wav", "λ_t·L1 (waveform)"),
    ("mel", "lambda_mel", "λ_f·mel"),
    ("adv", "lambda_adv", "λ_g·adversarial"),
    ("fm", "lambda_fm", "λ_fm·feature matching"),
    ("commit", "lambda_commit", "λ_w·commitment"),
    ("distill", "lambda_distill", "λ_distill·distillation"),
)


def reduced_overrides(preset: str, divisor: int, cuts: str, steps: int, lm_dim: int, sm_dim: int,
                      conv_init: str = "") -> dict:
    d = training_config(preset).discriminator

    def div(n: int) -> int:
        return max(1, n // divisor)

    disc = {
        "mpd_channels": [div(c) for c in d.mpd_channels],
        "msd_channels": div(d.msd_channels),
        "msd_max_channels": div(d.msd_max_channels),
        "msd_layer_channels": [div(c) for c in d.msd_layer_channels],
        "stft_filters": div(d.stft_filters),
    }
    if d.msd_groups:  # keep the grouped layout valid at the reduced width
        chans = [disc["msd_channels"]] + disc["msd_layer_channels"]
        disc["msd_groups"] = [min(g, a, b) for g, a, b in zip(d.msd_groups, chans, chans[1:])]
    return {
        "model": {"n_filters": 8, "dimension": 64, "codebook_size": 128, "kmeans_iters": 10,
                  **({"conv_init": conv_init} if conv_init else {})},
        "discriminator": disc,
        "distill": {"mode": "lm+sm", "lm_dim": lm_dim, "sm_dim": sm_dim},
        "data": {"train_cuts": cuts, "valid_cuts": "", "batch_size": 4, "crop_seconds": 1.0},
        "train": {"max_steps": steps, "num_threads": 0, "valid_every": 0, "checkpoint_every": 0,
                  "tb_audio_every": 0, "adversarial_start_step": 0},
    }


def feature_dims(cuts_path: str) -> tuple[int, int]:
    from lhotse import CutSet

    cut = next(iter(CutSet.from_file(cuts_path)))
    return int(cut.load_lm_feats().shape[-1]), int(cut.load_sm_feats().shape[-1])


def run_preset(preset: str, args, lm_dim: int, sm_dim: int) -> dict:
    from lhotse import CutSet

    cfg = training_config(preset, reduced_overrides(preset, args.disc_divisor, args.cuts, args.steps, lm_dim, sm_dim,
                                                    args.conv_init))
    trainer = CodecTrainer(cfg, Path(args.work_dir) / preset)
    # drive train_step directly: the loss terms of every step are needed, not only the logged ones
    trainer.train_cuts = CutSet.from_file(args.cuts)
    trainer.train_ds = trainer._dataset(random_crop=True)
    rows, t0 = [], time.time()
    while len(rows) < args.steps:
        for batch in trainer._train_loader():
            rows.append(trainer.train_step(batch))
            trainer.step += 1
            if len(rows) >= args.steps:
                break
        trainer.epoch += 1
    last = rows[-args.window:]
    mean = {k: sum(r[k] for r in last) / len(last) for k in last[0]}
    c = cfg.loss
    weighted = {key: getattr(c, wkey) * mean[key] for key, wkey, _ in TERMS}
    return {"preset": preset, "seconds": time.time() - t0, "raw": {k: mean[k] for k, _, _ in TERMS},
            "conv_init": cfg.model.conv_init,
            "weights": {k: getattr(c, w) for k, w, _ in TERMS}, "weighted": weighted, "gen": mean["gen"],
            "disc": mean["disc"], "config": {"commitment_reduction": c.commitment_reduction,
                                             "distill_combine": cfg.distill.combine,
                                             "adversarial": c.adversarial, "feature_matching": c.feature_matching}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", required=True, help="training cuts with lm_feats and sm_feats")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--window", type=int, default=10, help="average the last this many steps")
    ap.add_argument("--disc-divisor", type=int, default=8, help="divide every discriminator channel count by this")
    ap.add_argument("--presets", nargs="+", default=["paper", "official"])
    ap.add_argument("--conv-init", default="", choices=["", "scaled", "torch"],
                    help="override model.conv_init in every preset (default: each preset's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default="/tmp/dmtts_loss_balance")
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm_dim, sm_dim = feature_dims(args.cuts)
    results = [run_preset(p, args, lm_dim, sm_dim) for p in args.presets]

    print(f"mean of steps {args.steps - args.window + 1}-{args.steps}; codec at tiny width, discriminators at "
          f"1/{args.disc_divisor} width, batch 4 x 1 s, lm+sm distillation\n")
    head = "| term | " + " | ".join(f"{r['preset']}: λ | {r['preset']}: L | {r['preset']}: λ·L (share)"
                                     for r in results) + " |"
    print(head)
    print("|" + "---|" * (1 + 3 * len(results)))
    for key, _, label in TERMS:
        cells = []
        for r in results:
            share = 100 * r["weighted"][key] / r["gen"] if r["gen"] else float("nan")
            cells += [f"{r['weights'][key]:g}", f"{r['raw'][key]:.4g}", f"{r['weighted'][key]:.4g} ({share:.1f} %)"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| generator loss | " + " | ".join(f" | | {r['gen']:.4g}" for r in results) + " |")
    for r in results:
        print(f"{r['preset']}: {r['config']}, conv_init {r['conv_init']}, discriminator loss {r['disc']:.4g}, "
              f"{r['seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"steps": args.steps, "window": args.window,
                                              "disc_divisor": args.disc_divisor, "cuts": args.cuts,
                                              "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
