"""Tiny random TTS models exported as training does (codec + AR + NAR), and a prompt, for the
synthesis, robustness and web-app tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

PRETRAINED = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "pretrained"


def make_tiny_tts_models(root: Path, max_len_ratio: float = 4.0, min_len_ratio: float = 0.0) -> dict:
    from dmtts.codec.model import DMCodec
    from dmtts.text.phonemizer import Phonemizer
    from dmtts.text.symbols import SymbolTable
    from dmtts.tts.config import TTSModelConfig, TTSTrainConfig
    from dmtts.tts.export import export_model
    from dmtts.tts.frontend import TTSText
    from dmtts.tts.model import build_model

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    codec = DMCodec.from_preset("tiny")
    codec.save_pretrained(root / "codec")
    ph = Phonemizer("en-us").phonemize_batch(["Hello world, this is a test.", "The quick brown fox jumps."])
    SymbolTable.from_sequences(ph).to_file(root / "symbols.txt")
    text = TTSText("phonemes", root / "symbols.txt")
    cfg = TTSTrainConfig()
    mcfg = TTSModelConfig(n_layers=1, n_heads=2, d_model=32, ffn_dim=64, codebook_size=codec.config.codebook_size,
                          n_q=codec.config.n_q, text_vocab_size=text.vocab_size)
    cfg.training.max_len_ratio = max_len_ratio
    cfg.training.min_len_ratio = min_len_ratio
    for kind in ("ar", "nar"):
        export_model(build_model(kind, mcfg), kind, mcfg, text, cfg, root / kind)
    prompt = root / "prompt.wav"
    t = np.arange(int(2.5 * 16000)) / 16000
    sf.write(prompt, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    short = root / "short.wav"
    sf.write(short, np.zeros(8000, dtype=np.float32), 16000)
    return {"root": root, "codec": root / "codec", "ar": root / "ar", "nar": root / "nar", "prompt": prompt,
            "short": short}
