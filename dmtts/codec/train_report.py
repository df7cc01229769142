"""What a codec training run reports: the summary of how reconstruction improved, the steps
trained against the steps configured (a wall-clock cap that cut the run short is flagged), and
``loss_curve.png``. ``train_summary.json`` and the exported model's ``config.json`` ("training")
carry the same run record, so evaluation reports can say when a model is undertrained.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from dmtts.utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)


def run_record(step: int, epoch: int, seconds: float, train_cfg, capped: bool) -> dict:
    """Steps trained against steps configured, minutes, and whether ``max_minutes`` cut the run
    short (the same fields as a TTS export's "training" block)."""
    return {
        "steps": int(step),
        "max_steps": int(train_cfg.max_steps),
        "epochs": int(epoch),
        "minutes": round(float(seconds) / 60, 2),
        "max_minutes": float(train_cfg.max_minutes),
        "capped": bool(capped and (train_cfg.max_steps <= 0 or step < train_cfg.max_steps)),
    }


@dataclass(frozen=True)
class CapForecast:
    """Where ``train.max_minutes`` will stop a cosine schedule, from the pace of the first steps."""

    seconds_per_step: float
    stop_step: int  # the step the cap is expected to stop the run at
    max_steps: int  # the schedule's length (train.max_steps)
    lr_fraction: float  # the learning rate there, as a fraction of the peak
    fitting_max_steps: int  # a train.max_steps whose schedule ends inside the cap at this pace

    def message(self, max_minutes: float) -> str:
        return (f"train.max_minutes={max_minutes:g} will stop this run near step {self.stop_step:,} of its "
                f"{self.max_steps:,} ({self.seconds_per_step:.3f} s a step so far), with the cosine learning rate "
                f"at {100 * self.lr_fraction:.0f} % of its peak there; a train.max_steps of about "
                f"{self.fitting_max_steps:,} would end the schedule inside the cap")


def cosine_lr_fraction(step: int, max_steps: int, lr_min_ratio: float) -> float:
    """The learning rate of ``CosineAnnealingLR(T_max=max_steps, eta_min=lr_min_ratio * peak)``
    after ``step`` steps, as a fraction of the peak."""
    return lr_min_ratio + (1.0 - lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max_steps))


def cap_forecast(steps_done: int, seconds: float, step: int, train_cfg, margin: float = 0.97) -> CapForecast | None:
    """Forecast whether the wall-clock cap cuts the cosine schedule short: ``steps_done`` steps of
    this invocation took ``seconds``, and the run is at ``step``. None when the schedule ends inside
    the cap, when there is no cap or no cosine schedule, or before any step was timed.

    ``fitting_max_steps`` keeps ``margin`` of the cap (validation and checkpoints also take time)
    and is rounded down to a hundred."""
    t = train_cfg
    if t.scheduler != "cosine" or t.max_minutes <= 0 or t.max_steps <= 0 or steps_done <= 0 or seconds <= 0:
        return None
    pace = seconds / steps_done
    left = 60.0 * t.max_minutes - seconds  # this invocation's cap, counted from its start
    stop_step = step + int(left / pace)
    if stop_step >= t.max_steps:
        return None
    fitting = int((step - steps_done) + margin * 60.0 * t.max_minutes / pace) // 100 * 100
    return CapForecast(pace, stop_step, t.max_steps, cosine_lr_fraction(stop_step, t.max_steps, t.lr_min_ratio),
                       max(fitting, 100))


def loss_summary(history: list[dict]) -> dict:
    """Mean multi-scale mel loss and waveform L1 of the first and last steps (10 or a fifth)."""
    if len(history) < 2:
        return {}
    k = max(1, min(10, len(history) // 5))

    def mean(key: str, rows: list[dict]) -> float:
        return sum(r[key] for r in rows) / k

    return {"recon_mel_first": mean("mel", history[:k]), "recon_mel_last": mean("mel", history[-k:]),
            "window": k, "wav_l1_first": mean("wav_l1", history[:k]), "wav_l1_last": mean("wav_l1", history[-k:])}


def write_summary(exp_dir: Path, summary: dict) -> None:
    """Print the run's record (with a warning when capped), write ``train_summary.json`` and the plot."""
    if "recon_mel_first" in summary:
        first, last, k = summary["recon_mel_first"], summary["recon_mel_last"], summary["window"]
        change = 100.0 * (last - first) / max(abs(first), 1e-12)
        print(f"reconstruction (multi-scale mel) loss: mean of first {k} steps {first:.4f} -> mean of last {k} "
              f"steps {last:.4f} ({change:+.1f}%); waveform L1 {summary['wav_l1_first']:.5f} -> "
              f"{summary['wav_l1_last']:.5f}; {summary['steps']} steps, {summary['seconds']:.0f} s", flush=True)
    if summary.get("capped"):
        msg = (f"WARNING: the wall-clock cap train.max_minutes={summary['max_minutes']:g} stopped this run after "
               f"{summary['steps']} of its {summary['max_steps']} steps: figures of this model are those of an "
               "undertrained codec (resume with --resume, or raise max_minutes)")
        log.warning(msg)
        print(msg, flush=True)
    atomic_write_text(exp_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")


def plot_losses(history: list[dict], path: Path) -> None:
    """Training mel loss and waveform L1 against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, [r["mel"] for r in history], lw=0.8)
    axes[0].set_title("multi-scale mel loss (train)")
    axes[1].plot(steps, [r["wav_l1"] for r in history], lw=0.8, color="C1")
    axes[1].set_title("waveform L1 (train)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
