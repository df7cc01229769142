"""Exported TTS models: a directory ``config.json`` + ``model.safetensors`` + text front-end.

``config.json``::

    {"format": "dmtts-tts", "version": 1, "kind": "ar" | "nar", "model": {TTSModelConfig},
     "text": {"kind": "phonemes" | "bpe", "path": "symbols.txt" | "bpe", "lang": "en-us"},
     "inference": {"max_len_ratio": 10.0, "min_len_ratio": 0.0}, "train_config": {...}}
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from dmtts.errors import DmttsError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def export_model(model, kind: str, mcfg, text, train_cfg, out_dir: str | Path, dtype: str = "float32",
                 summary: dict | None = None) -> Path:
    """Write an exported model directory (atomically: built next to ``out_dir``, then renamed);
    ``dtype="float16"`` stores the weights in half precision (see ``dmtts.utils.storage_state``)."""
    from safetensors.torch import save_file

    from dmtts.config import to_dict
    from dmtts.utils import storage_state

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(storage_state(model.state_dict(), dtype), str(tmp / WEIGHTS_FILE))
    text_info = text.save(tmp)
    tcfg = train_cfg.training
    config = {
        "format": "dmtts-tts",
        "version": 1,
        "kind": kind,
        "model": asdict(mcfg),
        "text": text_info,
        "inference": {"max_len_ratio": tcfg.max_len_ratio, "min_len_ratio": tcfg.min_len_ratio},
        "train_config": to_dict(train_cfg),
    }
    if summary is not None:  # steps trained vs configured, and whether a wall-clock cap cut the run
        config["training"] = summary
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def best_checkpoint(exp_dir: str | Path) -> Path | None:
    """The kept checkpoint of ``exp_dir`` whose step has the lowest validation loss.

    For long runs on a small corpus, where the newest checkpoint may have begun to overfit. The
    validation history comes from the newest checkpoint (it holds every point); only steps whose
    checkpoint is still on disk (``training.keep_last``) compete. None without checkpoints."""
    from dmtts.train.checkpoint import checkpoint_step, latest_checkpoint, list_checkpoints, load_checkpoint

    latest = latest_checkpoint(exp_dir)
    if latest is None:
        return None
    valid = dict(load_checkpoint(latest, restore_rng=False)["train_state"]["history"]["valid"])
    kept = {checkpoint_step(p): p for p in list_checkpoints(exp_dir)}
    scored = [(loss, step) for step, loss in valid.items() if step in kept]
    if not scored:
        raise DmttsError(f"'{exp_dir}': no kept checkpoint has a validation loss (training.valid_interval "
                         f"and save_interval must share steps); export the newest instead")
    return kept[min(scored)[1]]


def export_checkpoint(exp_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None,
                      dtype: str = "float32") -> Path:
    """Export a training checkpoint (default: the newest in ``exp_dir``; ``"best"``: the kept
    checkpoint with the lowest validation loss, see :func:`best_checkpoint`)."""
    from dmtts.config import load_config
    from dmtts.train.checkpoint import latest_checkpoint, load_checkpoint
    from dmtts.tts.config import TTSModelConfig, TTSTrainConfig
    from dmtts.tts.frontend import TTSText
    from dmtts.tts.model import build_model

    exp_dir = Path(exp_dir)
    if checkpoint == "best":
        ckpt = best_checkpoint(exp_dir)
    else:
        ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(exp_dir)
    if ckpt is None:
        raise DmttsError(f"'{exp_dir}' has no checkpoints: train with 'dmtts tts train' first")
    payload = load_checkpoint(ckpt, restore_rng=False)
    cfg = load_config(exp_dir / "config.yaml", TTSTrainConfig)
    mcfg = TTSModelConfig(**payload["model_config"])
    model = build_model(payload["kind"], mcfg)
    model.load_state_dict(payload["model"])
    from dmtts.tts.train_report import training_summary

    return export_model(model, payload["kind"], mcfg, TTSText.from_data_config(cfg.data), cfg, out_dir, dtype,
                        summary=training_summary(payload["train_state"], cfg.training))


def load_exported(model_dir: str | Path, kind: str | None = None, device="cpu", dtype=torch.float32):
    """Load an exported model: returns ``(model (eval mode), TTSText, config dict)``."""
    from safetensors.torch import load_file

    from dmtts.tts.config import TTSModelConfig
    from dmtts.tts.frontend import TTSText
    from dmtts.tts.model import build_model
    from dmtts.tts.transformer import set_linear_dtype
    from dmtts.utils import require_dir

    model_dir = require_dir(model_dir, "TTS model directory", "export one with 'dmtts tts train' or 'dmtts tts export'")
    cfg_path = model_dir / CONFIG_FILE
    if not cfg_path.is_file() or not (model_dir / WEIGHTS_FILE).is_file():
        raise DmttsError(f"'{model_dir}' is not an exported TTS model (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != "dmtts-tts":
        raise DmttsError(f"'{cfg_path}' is not a dmtts TTS model config")
    if kind and config["kind"] != kind:
        raise DmttsError(f"'{model_dir}' holds a {config['kind'].upper()} model, expected {kind.upper()}")
    model = build_model(config["kind"], TTSModelConfig(**config["model"]))
    model.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE)))
    model.to(device=device).eval()
    if dtype != torch.float32:  # weight-only: linear layers in dtype, everything else float32
        set_linear_dtype(model, dtype)
    text = TTSText.load(model_dir, config["text"])
    return model, text, config
