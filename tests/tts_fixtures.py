"""Tiny synthetic data for the TTS tests: cuts with phonemes, stored codes, a symbol table, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

PHONES = ["a", "b", "k", "d", "e", "f", "g", "h", ",", "."]
CODEBOOK = 16
N_Q = 8


def make_tts_data(tmp: Path, n_cuts: int = 24, seed: int = 0, codebook: int = CODEBOOK) -> dict:
    """Cuts (0.3-0.8 s) with phonemes and learnable codes; returns paths of cuts + symbol table."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
    from lhotse.features.io import NumpyHdf5Writer

    from dmtts.data.codes import attach_codes
    from dmtts.text.symbols import SymbolTable

    rng = np.random.default_rng(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    wav_path = tmp / "silence.wav"
    sf.write(wav_path, np.zeros(16000, dtype=np.float32), 16000)
    rec = Recording.from_file(wav_path)
    cuts = []
    with NumpyHdf5Writer(tmp / "codes.h5") as writer:
        for i in range(n_cuts):
            n_ph = int(rng.integers(3, 8))
            ph = [PHONES[j] for j in rng.integers(0, 8, n_ph)]
            frames = 3 * n_ph + 2  # ~3 frames per phoneme: duration follows the text
            dur = frames * 0.02
            # level 1 depends on the phoneme under each frame; level k = level 1 + k (mod V)
            lvl1 = np.array([PHONES.index(ph[min(t // 3, n_ph - 1)]) * 2 + (t % 2) for t in range(frames)])
            codes = np.stack([(lvl1 + k) % codebook for k in range(N_Q)], axis=1)
            cut = MonoCut(
                id=f"utt{i:03d}", start=0.0, duration=dur, channel=0, recording=rec,
                supervisions=[SupervisionSegment(id=f"utt{i:03d}", recording_id=rec.id, start=0.0, duration=dur,
                                                 text=" ".join(ph), speaker=f"spk{i % 3}",
                                                 custom={"phonemes": ph})],
            )
            cuts.append(attach_codes(cut, writer, codes))
    cutset = CutSet.from_cuts(cuts)
    cutset.to_file(tmp / "cuts.jsonl.gz")
    table = SymbolTable(PHONES)
    table.to_file(tmp / "symbols.txt")
    return {"cuts": tmp / "cuts.jsonl.gz", "symbols": tmp / "symbols.txt"}


def write_config(path: Path, data: dict, **overrides) -> Path:
    cfg = {
        "model_preset": "tiny",
        "model": {"n_layers": 2, "n_heads": 2, "d_model": 32, "ffn_dim": 64, "codebook_size": CODEBOOK,
                  "dropout": 0.1},
        "data": {"train_cuts": str(data["cuts"]), "valid_cuts": str(data["cuts"]), "symbol_table": str(data["symbols"]),
                 "max_duration": 2.0, "num_buckets": 2, "num_workers": 0, "min_duration": 0.05,
                 "buffer_size": 100, "shuffle": True, "drop_last": False},
        "optim": {"base_lr": 0.05, "warmup_batches": 5, "lr_batches": 1000, "lr_epochs": 100},
        "training": {"num_epochs": 100, "max_steps": 40, "log_interval": 5, "valid_interval": 1000,
                     "save_interval": 1000, "device": "cpu", "seed": 1},
    }
    for key, value in overrides.items():  # "training.max_steps": 10
        sect, name = key.split(".")
        cfg.setdefault(sect, {})[name] = value
    path.write_text(yaml.safe_dump(cfg))
    return path
