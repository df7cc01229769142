"""``dmtts codec export``: a training checkpoint -> an inference model directory."""

from __future__ import annotations

from pathlib import Path

from dmtts.codec.config import CodecTrainingConfig
from dmtts.codec.model import DMCodec
from dmtts.codec.train_report import run_record
from dmtts.config import from_dict
from dmtts.errors import DmttsError
from dmtts.train.checkpoint import latest_checkpoint, load_checkpoint


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Build a ``DMCodec`` from a training checkpoint (file or exp dir) and ``save_pretrained`` it,
    with the run's record (steps trained / configured, minutes, capped) as ``config.json``'s
    "training" block."""
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
    cfg = from_dict(CodecTrainingConfig, ckpt["config"])
    model = DMCodec(cfg.model)
    model.load_state_dict(ckpt["generator"])
    history = ckpt.get("history") or []
    seconds = float(history[-1].get("elapsed", 0.0)) if history else 0.0
    record = run_record(int(ckpt["step"]), int(ckpt.get("epoch", 0)), seconds, cfg.train, bool(ckpt.get("capped")))
    model.eval().save_pretrained(out_dir, dtype=dtype, extra_config={"training": record})
    return Path(out_dir)
