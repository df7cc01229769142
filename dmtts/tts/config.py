"""Configuration dataclasses of DM-Codec-TTS: model size, data, optimiser and training loop.

A training run is described by one YAML file loaded into ``TTSTrainConfig`` (unknown keys are
errors). Every key is used: see ``dmtts/tts/train.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TTSModelConfig:
    """Transformer size (shared by AR and NAR). Defaults are the paper's (§3.4)."""

    n_layers: int = 12
    n_heads: int = 16
    d_model: int = 1024
    ffn_dim: int = 4096
    dropout: float = 0.1
    codebook_size: int = 1024  # codes per RVQ level of the codec
    n_q: int = 8  # RVQ levels (AR predicts level 1, NAR levels 2..n_q)
    text_vocab_size: int = 0  # 0: taken from the text front-end at training time
    # AR text positions: 0 = learned scale (VALL-E); > 0 = this fixed scale, so the position
    # signal cannot be drowned by text embeddings that grow to ScaledAdam's RMS cap
    text_pos_alpha: float = 0.0


PRESETS = {
    "paper": TTSModelConfig(),
    "small": TTSModelConfig(n_layers=6, n_heads=8, d_model=512, ffn_dim=2048),
    "tiny": TTSModelConfig(n_layers=3, n_heads=4, d_model=128, ffn_dim=512, dropout=0.1),
}


@dataclass
class TTSDataConfig:
    train_cuts: str = "data/tokenized/libriheavy_cuts_large.jsonl.gz"
    valid_cuts: str = ""  # empty: no validation
    text_frontend: str = "phonemes"  # "phonemes" (supervision.custom["phonemes"]) or "bpe"
    symbol_table: str = ""  # phonemes: the symbol table written by `dmtts phonemize`
    bpe_model: str = ""  # bpe: directory written by `dmtts text train-bpe`
    lang: str = "en-us"  # espeak-ng language of the phoneme front-end (used at inference)
    max_duration: float = 280.0  # seconds of audio per batch (DynamicBucketingSampler)
    num_buckets: int = 30
    shuffle: bool = True
    drop_last: bool = True
    buffer_size: int = 20000
    min_duration: float = 0.5
    max_cut_duration: float = 15.0
    num_workers: int = 2
    # NAR: the acoustic prompt is a prefix of the same utterance, its length a random fraction
    # of the utterance, at most prompt_max_seconds.
    prompt_min_frac: float = 0.2
    prompt_max_frac: float = 0.5
    prompt_max_seconds: float = 3.0


@dataclass
class TTSAlignConfig:
    """Alignment aids of the AR (``dmtts.tts.align``); all off by default and in every preset.

    They act on the audio->text attention of ``heads`` in ``layers`` during training only.
    """

    layers: list[int] = field(default_factory=list)  # e.g. [0, 1]: the lower layers
    heads: list[int] = field(default_factory=list)  # e.g. [0]
    prior: bool = False  # beta-binomial attention prior, annealed away
    prior_omega: float = 1.0  # its scaling factor (RAD-TTS: 1)
    prior_start_step: int = 0  # full prior up to this optimiser step ...
    prior_end_step: int = 0  # ... then linearly to none at this step
    ctc_scale: float = 0.0  # forward-sum (CTC) alignment loss weight; 0 = off
    ctc_blank_logit: float = -1.0
    guided_scale: float = 0.0  # guided attention loss weight; 0 = off
    guided_sigma: float = 0.4

    @property
    def enabled(self) -> bool:
        return self.prior or self.ctc_scale > 0 or self.guided_scale > 0

    def check(self, n_layers: int, n_heads: int, where: str = "align") -> None:
        """Errors that name the key: heads/layers out of range, an aid without heads, a bad schedule."""
        from dmtts.errors import DmttsError

        if not self.enabled:
            return
        if not self.layers or not self.heads:
            raise DmttsError(f"{where}: an alignment aid is on but {where}.layers / {where}.heads are empty: "
                             "name the heads it acts on, e.g. layers: [0, 1], heads: [0]")
        for key, values, n in (("layers", self.layers, n_layers), ("heads", self.heads, n_heads)):
            bad = [v for v in values if not 0 <= v < n]
            if bad:
                raise DmttsError(f"{where}.{key}: {bad} out of range: the model has {n} {key} (0..{n - 1})")
        if self.prior and self.prior_end_step < self.prior_start_step:
            raise DmttsError(f"{where}.prior_end_step ({self.prior_end_step}) must be >= prior_start_step "
                             f"({self.prior_start_step})")


@dataclass
class TTSOptimConfig:
    base_lr: float = 0.05  # ScaledAdam
    clipping_scale: float = 2.0
    warmup_batches: int = 200  # Eden linear warm-up
    lr_batches: float = 5000.0  # Eden decay constants
    lr_epochs: float = 4.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class TTSTrainingConfig:
    num_epochs: int = 4
    max_steps: int = 0  # optimiser steps; 0 = no limit (stop after num_epochs)
    max_minutes: float = 0.0  # wall-clock limit (checkpoint then stop); 0 = none
    accum_grad: int = 1  # batches per optimiser step
    dtype: str = "float32"  # "float32" or "bfloat16" (autocast)
    device: str = "auto"
    num_threads: int = 0  # CPU intra-op threads (0: torch's default)
    seed: int = 42
    log_interval: int = 50
    valid_interval: int = 1000
    save_interval: int = 1000
    keep_last: int = 3
    # start from these weights (an exported model directory, `dmtts tts export`, or a training
    # checkpoint file) with a fresh optimiser and schedule: fine-tuning, or continuing a shipped
    # model. The model config must match. Ignored by --resume (the checkpoint has the weights).
    init_from: str = ""
    # inference defaults stored with the exported model
    max_len_ratio: float = 10.0  # AR stops after this many frames per target text token
    min_len_ratio: float = 0.0


@dataclass
class TTSTrainConfig:
    model_preset: str = "paper"  # paper | small | tiny; `model` keys override it
    model: dict = field(default_factory=dict)
    data: TTSDataConfig = field(default_factory=TTSDataConfig)
    optim: TTSOptimConfig = field(default_factory=TTSOptimConfig)
    align: TTSAlignConfig = field(default_factory=TTSAlignConfig)
    training: TTSTrainingConfig = field(default_factory=TTSTrainingConfig)


def resolve_model_config(cfg: TTSTrainConfig) -> TTSModelConfig:
    """Preset + overrides -> ``TTSModelConfig`` (unknown override keys are errors)."""
    from dataclasses import asdict

    from dmtts.config import from_dict

    validate(cfg)
    merged = asdict(PRESETS[cfg.model_preset])
    merged.update(cfg.model or {})
    return from_dict(TTSModelConfig, merged, "model")


def validate(cfg: TTSTrainConfig) -> None:
    """One-line errors naming the key of a value the training run cannot use (before any model
    or data is built)."""
    from dmtts.config import check_choice
    from dmtts.errors import DmttsError
    from dmtts.text.frontend import FRONTEND_KINDS

    check_choice("model_preset", cfg.model_preset, tuple(PRESETS))
    check_choice("data.text_frontend", cfg.data.text_frontend, FRONTEND_KINDS)
    check_choice("training.dtype", cfg.training.dtype, ("float32", "bfloat16"))
    if cfg.training.accum_grad < 1:
        raise DmttsError(f"training.accum_grad must be >= 1, got {cfg.training.accum_grad}")
    d = cfg.data
    if not 0.0 <= d.prompt_min_frac <= d.prompt_max_frac <= 1.0:
        raise DmttsError(f"data.prompt_min_frac ({d.prompt_min_frac}) and data.prompt_max_frac ({d.prompt_max_frac}) "
                         "must satisfy 0 <= prompt_min_frac <= prompt_max_frac <= 1")
