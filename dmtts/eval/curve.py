"""Codec learning curves: score every kept checkpoint of a training run on an evaluation set.

``dmtts eval codec-curve --exp-dir exp/codec --cuts eval_cuts.jsonl.gz --output-dir DIR`` loads each
``checkpoints/step-*.pt`` of a ``dmtts codec train`` run, reconstructs the cuts with all RVQ
levels and scores them (STOI, PESQ and Whisper WER by default), then writes

* ``DIR/curve.csv``: step, training minutes, mean training mel loss around that step, and the
  metrics (WER in %, corpus level); the ground truth's WER is in ``DIR/ground_truth_wer.txt``;
* ``DIR/curve.png``: the metrics against steps, with the wall-clock minutes on a second axis;
* ``DIR/codebook.csv`` / ``DIR/codebook.png``: per RVQ level, codes used per batch, the
  perplexity of the batch's code histogram and the dead codes replaced, against steps (from the
  run's tensorboard logs, ``codebook/*``).

Scores of a checkpoint already in ``curve.csv`` are reused, so a rerun after more training only
scores the new checkpoints. Training time comes from the run's history (``elapsed``, seconds
since the start, kept across resumes).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Sequence

from dmtts.errors import DmttsError
from dmtts.utils import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

CURVE_COLUMNS = ("step", "minutes", "train_mel")


def _step_of(path: Path) -> int:
    return int(path.stem.split("-")[-1])


def _read_curve(path: Path) -> dict[int, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {int(row["step"]): row for row in csv.DictReader(f)}


def _train_mel(history: list[dict], step: int, window: int = 50) -> float:
    rows = [r["mel"] for r in history if step - window < r["step"] <= step]
    return sum(rows) / len(rows) if rows else float("nan")


def codec_learning_curve(exp_dir: str | Path, cuts: str | Path, out_dir: str | Path,
                         metrics: Sequence[str] = ("stoi", "pesq", "wer"), n_q: int | None = None,
                         models=None, device: str = "cpu", limit: int | None = None,
                         every_steps: int = 0) -> Path:
    """Score the checkpoints of ``exp_dir`` (those whose step is a multiple of ``every_steps``
    when it is > 0, and always the last); returns the path of ``curve.csv``."""
    import torch

    from dmtts.codec.config import CodecTrainingConfig
    from dmtts.codec.model import DMCodec
    from dmtts.config import from_dict
    from dmtts.eval.codec_eval import GROUND_TRUTH, evaluate_codec
    from dmtts.eval.metrics import EvalModels
    from dmtts.train.checkpoint import list_checkpoints, load_checkpoint

    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    checkpoints = list_checkpoints(exp_dir)
    if not checkpoints:
        raise DmttsError(f"'{exp_dir}' holds no checkpoints (checkpoints/step-*.pt): pass the --exp-dir of "
                         "a `dmtts codec train` run")
    out_dir.mkdir(parents=True, exist_ok=True)
    curve_path = out_dir / "curve.csv"
    done = _read_curve(curve_path)
    models = models or EvalModels(device=device)
    history = load_checkpoint(checkpoints[-1], restore_rng=False).get("history", [])
    elapsed = {r["step"]: r.get("elapsed") for r in history}
    rows = dict(done)
    last = _step_of(checkpoints[-1])
    for path in checkpoints:
        step = _step_of(path)
        if step in done or (every_steps > 0 and step % every_steps and step != last):
            continue
        ckpt = load_checkpoint(path, restore_rng=False)
        cfg = from_dict(CodecTrainingConfig, ckpt["config"])
        codec = DMCodec(cfg.model)
        codec.load_state_dict(ckpt["generator"])
        codec.eval()
        q = n_q or codec.n_q
        work = out_dir / f"step-{step:08d}"
        with torch.inference_mode():
            result = evaluate_codec(cuts, work, codec=codec, n_qs=[q], models=models, metrics=list(metrics),
                                    name="dmcodec", device=device, n_figure=0, limit=limit)
        summary = _summary_values(Path(result["summary_csv"]))
        system = summary[f"dmcodec_nq{q}"]
        seconds = elapsed.get(step)
        row = {"step": str(step), "minutes": f"{seconds / 60:.4g}" if seconds is not None else "",
               "train_mel": f"{_train_mel(history, step):.4f}"}
        row.update({m: system.get(m, "") for m in metrics})
        if GROUND_TRUTH in summary and "wer" in metrics:
            atomic_write_text(out_dir / "ground_truth_wer.txt", summary[GROUND_TRUTH].get("wer", "") + "\n")
        rows[step] = row
        _write_curve(curve_path, rows, metrics)  # after every checkpoint: a crash loses nothing
        logger.info("step %d: %s", step, {m: row[m] for m in metrics})
    _write_curve(curve_path, rows, metrics)
    _plot_curve(out_dir / "curve.png", rows, metrics, out_dir / "ground_truth_wer.txt")
    codebook_curves(exp_dir / "tensorboard", out_dir)
    return curve_path


def codebook_curves(tb_dir: Path, out_dir: Path) -> Path | None:
    """``codebook.csv`` + ``codebook.png`` from the ``codebook/*`` scalars of a training run."""
    from dmtts.train.tblog import read_scalars

    if not tb_dir.is_dir():
        return None
    series = read_scalars(tb_dir, "codebook/")
    if not series:
        return None
    tags = sorted(series, key=lambda t: (t.split("_l")[0], int(t.rsplit("_l", 1)[1])))
    steps = sorted({st for t in tags for st, _ in series[t]})
    values = {t: dict(series[t]) for t in tags}
    lines = ["step," + ",".join(t.split("/", 1)[1] for t in tags)]
    for st in steps:
        lines.append(",".join([str(st)] + [f"{values[t][st]:.4g}" if st in values[t] else "" for t in tags]))
    atomic_write_text(out_dir / "codebook.csv", "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [("perplexity", "perplexity of the batch's codes"), ("used", "codes used per batch"),
             ("replaced", "dead codes replaced per step")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (kind, title) in zip(axes, kinds):
        for t in tags:
            if t.split("/", 1)[1].startswith(kind + "_l"):
                pts = series[t]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=t.rsplit("_", 1)[1])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(out_dir / "codebook.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out_dir / "codebook.png"


def _summary_values(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["system"]: row for row in csv.DictReader(f)}


def _write_curve(path: Path, rows: dict[int, dict[str, str]], metrics: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*CURVE_COLUMNS, *metrics], lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for step in sorted(rows):
        w.writerow(rows[step])
    atomic_write_text(path, buf.getvalue())


def _plot_curve(path: Path, rows: dict[int, dict[str, str]], metrics: Sequence[str], gt_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(rows)
    panels = ["train_mel", *metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2))
    for ax, key in zip(axes, panels):
        values = [float(rows[s][key]) if rows[s].get(key) not in (None, "") else float("nan") for s in steps]
        ax.plot(steps, values, marker="o", ms=3)
        ax.set_title({"train_mel": "train mel loss", "wer": "WER % (Whisper tiny.en)"}.get(key, key.upper()))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "wer" and gt_path.is_file() and gt_path.read_text().strip():
            ax.axhline(float(gt_path.read_text()), color="k", ls="--", lw=0.8, label="ground truth")
            ax.legend(fontsize=7)
        minutes = [rows[s].get("minutes") for s in steps]
        if all(minutes):
            top = ax.secondary_xaxis("top", functions=(
                lambda x, s=steps, m=[float(v) for v in minutes]: _interp(x, s, m),
                lambda x, s=steps, m=[float(v) for v in minutes]: _interp(x, m, s)))
            top.set_xlabel("minutes", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _interp(x, xs, ys):
    import numpy as np

    if len(xs) < 2:
        return np.asarray(x, dtype=float) * 0 + (ys[0] if ys else 0)
    return np.interp(x, xs, ys)


def compare_training_curves(runs: dict[str, Path], tags: Sequence[str], out_dir: str | Path,
                            smooth: int = 1) -> tuple[Path, Path]:
    """Overlay scalar tags of several training runs: ``train_curves.csv`` + ``train_curves.png``.

    ``runs`` maps a name to an experiment dir (its ``tensorboard/`` is read). ``smooth`` > 1
    averages each series over that many logged points, centred (the CSV keeps raw values). A
    tag a run never logged (e.g. ``train/distill_lm`` without an LM teacher) is left blank.
    """
    import numpy as np

    from dmtts.train.tblog import read_scalars

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for name, exp_dir in runs.items():
        tb = Path(exp_dir) / "tensorboard"
        if not tb.is_dir():
            raise DmttsError(f"{exp_dir} has no tensorboard/ directory: pass training experiment dirs (NAME=DIR)")
        scalars = read_scalars(tb, "")
        for tag in tags:
            if tag in scalars:
                series[(name, tag)] = scalars[tag]
    if not series:
        raise DmttsError(f"none of the tags {', '.join(tags)} was logged by these runs")
    columns = [(n, t) for n in runs for t in tags if (n, t) in series]
    steps = sorted({st for key in columns for st, _ in series[key]})
    values = {key: dict(series[key]) for key in columns}
    # csv quotes a run name with a comma in it ("lr 1e-3 (9,357 steps)"), so the file stays parseable
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step"] + [f"{n}:{t}" for n, t in columns])
    for st in steps:
        writer.writerow([st] + [f"{values[k][st]:.6g}" if st in values[k] else "" for k in columns])
    csv_path = out_dir / "train_curves.csv"
    atomic_write_text(csv_path, buffer.getvalue())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in tags if any((n, t) in series for n in runs)]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
    for ax, tag in zip(axes[0], shown):
        for name in runs:
            if (name, tag) not in series:
                continue
            xs = np.array([p[0] for p in series[(name, tag)]], dtype=float)
            ys = np.array([p[1] for p in series[(name, tag)]], dtype=float)
            if smooth > 1 and len(ys) >= smooth:
                ys = np.convolve(ys, np.ones(smooth) / smooth, mode="same")
                edge = smooth // 2
                xs, ys = xs[edge: len(xs) - edge], ys[edge: len(ys) - edge]
            ax.plot(xs, ys, lw=1.0, label=name)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png_path = out_dir / "train_curves.png"
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return csv_path, png_path
