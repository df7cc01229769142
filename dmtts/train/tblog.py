"""Tensorboard logging (rank 0 only) and figure helpers for training runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class TrainLogger:
    """Thin wrapper over ``SummaryWriter`` that is a no-op on non-main ranks."""

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}{name}", float(value), step)

    def audio(self, tag: str, wav: torch.Tensor | np.ndarray, step: int, sample_rate: int = 16000) -> None:
        if self.writer is None:
            return
        if isinstance(wav, torch.Tensor):
            wav = wav.detach().float().cpu().numpy()
        self.writer.add_audio(tag, np.clip(np.asarray(wav).reshape(-1), -1, 1), step, sample_rate=sample_rate)

    def mel_image(self, tag: str, mel: torch.Tensor | np.ndarray, step: int) -> None:
        """Log a ``(n_mels, frames)`` log-mel as a heat-map image (low frequencies at the bottom)."""
        if self.writer is None:
            return
        if isinstance(mel, torch.Tensor):
            mel = mel.detach().float().cpu().numpy()
        mel = np.asarray(mel)
        norm = (mel - mel.min()) / max(float(mel.max() - mel.min()), 1e-6)
        self.writer.add_image(tag, norm[::-1].copy()[None], step, dataformats="CHW")

    def image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:
        """Log an ``(H, W, 3)`` (or ``(H, W)``) image: uint8 0..255 or float 0..1 (e.g. a rendered figure)."""
        if self.writer is None:
            return
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_scalars(log_dir: str | Path, prefix: str = "") -> dict[str, list[tuple[int, float]]]:
    """Scalars written under ``log_dir`` (all event files) whose tag starts with ``prefix``:
    ``{tag: [(step, value), ...]}`` sorted by step (the last value wins for a repeated step,
    e.g. after a resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith(prefix):
                series = out.setdefault(tag, {})
                for e in acc.Scalars(tag):
                    series[int(e.step)] = float(e.value)
    return {tag: sorted(series.items()) for tag, series in out.items()}
