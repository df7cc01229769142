"""``dmtts codec export``: a training checkpoint -> an inference model directory."""

from __future__ import annotations

from pathlib import Path

from dmtts.codec.config import AVG_CANDIDATES, CodecTrainingConfig
from dmtts.codec.model import DMCodec
from dmtts.codec.train_report import run_record
from dmtts.config import from_dict
from dmtts.errors import DmttsError
from dmtts.train.checkpoint import (average_state_dicts, checkpoint_step, checkpoints_ending_at, checkpoints_up_to,
                                    latest_checkpoint, load_checkpoint)


def is_codebook_entry(name: str) -> bool:
    """RVQ codebook state (``embed``, its EMA sums, usage and init flag). ``--avg`` takes it from
    the last checkpoint: dead-code replacement may re-draw an entry between two checkpoints, and
    the mean of two unrelated vectors is neither."""
    return name.startswith("quantizer.")


def load_codec_checkpoint(checkpoint: str | Path) -> tuple[Path, dict]:
    """``(path, payload)`` of a `dmtts codec train` checkpoint given as a file or an experiment
    directory (its latest checkpoint)."""
    path = Path(checkpoint)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise DmttsError(f"'{path}' holds no checkpoints (checkpoints/step-*.pt); pass a checkpoint file "
                             "or an experiment directory of `dmtts codec train`")
        path = latest
    ckpt = load_checkpoint(path, restore_rng=False)
    if "generator" not in ckpt or "config" not in ckpt:
        raise DmttsError(f"'{path}' is not a `dmtts codec train` checkpoint")
    return path, ckpt


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "float32", avg: int | str = 1,
                      avg_candidates: tuple[int, ...] = AVG_CANDIDATES) -> Path:
    """Build a ``DMCodec`` from a training checkpoint (file or exp dir) and ``save_pretrained`` it,
    with the run's record (steps trained / configured, minutes, capped) as ``config.json``'s
    "training" block.

    ``avg > 1`` exports the mean of the generator weights of the ``avg`` newest checkpoints up to
    the chosen one (icefall's ``--avg``): the late checkpoints of a run scatter around the
    trajectory by more than they improve on it, and their mean sits closer to its centre. The
    codebooks come from the last checkpoint (:func:`is_codebook_entry`). ``avg="best"`` takes the
    count of ``avg_candidates`` whose mean has the lowest validation mel loss
    (:func:`choose_average`, the run's dev set), and records the losses in the "training" block."""
    chosen_on_dev = None
    if avg == "best":
        avg, rows = choose_average(checkpoint, avg_candidates)
        chosen_on_dev = {"avg": avg, "valid_mel": {str(r["avg"]): round(r["mel"], 5) for r in rows}}
    if not isinstance(avg, int) or avg < 1:
        raise DmttsError(f"--avg must be at least 1 (1: the checkpoint itself) or 'best', got {avg}")
    path, ckpt = load_codec_checkpoint(checkpoint)
    cfg = from_dict(CodecTrainingConfig, ckpt["config"])
    model = DMCodec(cfg.model)
    state = ckpt["generator"]
    averaged: list[int] = []
    if avg > 1:
        paths = checkpoints_ending_at(path, avg)
        states = [load_checkpoint(p, restore_rng=False)["generator"] for p in paths[:-1]] + [state]
        state = average_state_dicts(states, keep_last=is_codebook_entry)
        averaged = [checkpoint_step(p) for p in paths]
    model.load_state_dict(state)
    history = ckpt.get("history") or []
    seconds = float(history[-1].get("elapsed", 0.0)) if history else 0.0
    record = run_record(int(ckpt["step"]), int(ckpt.get("epoch", 0)), seconds, cfg.train, bool(ckpt.get("capped")))
    if averaged:
        record["averaged_steps"] = averaged
    if chosen_on_dev:
        record["avg_chosen_on_dev"] = chosen_on_dev
    model.eval().save_pretrained(out_dir, dtype=dtype, extra_config={"training": record})
    return Path(out_dir)


def validate_averages(checkpoint: str | Path, counts: list[int], valid_cuts: str | None = None) -> list[dict]:
    """The run's validation losses (multi-scale mel, waveform L1, distillation; its ``valid_cuts``
    and ``max_valid_batches``) of the mean of the ``n`` newest checkpoints up to ``checkpoint``,
    for each ``n`` in ``counts``, averaged as ``export_checkpoint(avg=n)`` does: how to choose
    ``--avg`` on the development set rather than on the test set."""
    from dmtts.codec.train import CodecTrainer
    from dmtts.data.codec_dataset import load_training_cuts

    if not counts or min(counts) < 1:
        raise DmttsError(f"--avg takes checkpoint counts of at least 1, got {counts}")
    path, ckpt = load_codec_checkpoint(checkpoint)
    cfg = from_dict(CodecTrainingConfig, ckpt["config"])
    cuts = valid_cuts or cfg.data.valid_cuts
    if not cuts:
        raise DmttsError(f"the run of '{path}' has no data.valid_cuts: pass --valid-cuts")
    trainer = CodecTrainer(cfg, path.parent.parent, progress=False)
    trainer.valid_cuts = load_training_cuts(cuts, "valid_cuts")
    trainer.distiller.load_state_dict(ckpt["distiller"])
    paths = checkpoints_ending_at(path, max(counts))
    states = {p: load_checkpoint(p, restore_rng=False)["generator"] for p in paths}
    rows = []
    for n in counts:
        chosen = paths[-n:]
        trainer.codec.load_state_dict(average_state_dicts([states[p] for p in chosen], keep_last=is_codebook_entry))
        rows.append({"avg": n, "steps": [checkpoint_step(p) for p in chosen], **trainer.validate()})
    return rows


def choose_average(checkpoint: str | Path, candidates: tuple[int, ...] = AVG_CANDIDATES,
                   valid_cuts: str | None = None) -> tuple[int, list[dict]]:
    """``(n, rows)``: the count of ``candidates`` whose checkpoint mean has the lowest validation
    mel loss (:func:`validate_averages`' rows), among the counts the run kept enough checkpoints
    for; ties go to the smaller count. The rule the quality recipe exports with (``--avg best``),
    so that N is chosen on the development set of each run, not fixed from another one."""
    if not candidates or min(candidates) < 1:
        raise DmttsError(f"--avg-candidates takes checkpoint counts of at least 1, got {list(candidates)}")
    path, _ = load_codec_checkpoint(checkpoint)
    kept = len(checkpoints_up_to(path))
    counts = sorted({n for n in candidates if n <= kept})
    if not counts:
        raise DmttsError(f"--avg best: '{path.parent}' holds {kept} checkpoints up to '{path.name}', fewer than "
                         f"any of --avg-candidates {sorted(candidates)}")
    rows = validate_averages(path, counts, valid_cuts=valid_cuts)
    best = min(rows, key=lambda r: (r["mel"], r["avg"]))
    return best["avg"], rows
