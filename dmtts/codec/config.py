"""Codec configuration dataclasses and presets (``paper``, ``official``, ``tiny``).

A training config YAML names a preset and overrides any key of it::

    preset: tiny
    distill: {mode: lm+sm, lm_dim: 384, sm_dim: 384}
    data: {train_cuts: data/cuts/demo_cuts_train.jsonl.gz}

Unknown keys are rejected (``dmtts.config.from_dict``); the fully resolved config is written to
``<exp_dir>/config.yaml``.

Loss weights: the paper (§4) gives them relative to one free factor X: λ_distill = X,
λ_f (mel) = 0.375X, λ_t (waveform L1) = 4.15X, λ_w (commitment) = 0.085X, λ_g = λ_fm = 1. We use
**X = 120**, which makes the *weights* the public DM-Codec/SpeechTokenizer code's numbers
(λ_distill 120, λ_f 45, λ_t 498 ≈ 500, λ_w 10.2 ≈ 10). The *terms* they multiply are not the
public code's, so the same weights do not give the same loss balance: the paper preset's mel term
is a sum over 7 scales of L1 + L2 on 64-bin log-mels (public: 45 × one 1024-window L1 term plus
three more scales at weight 1, 80 bins), its commitment term sums the 8 levels (public: their
mean, so 8x smaller at equal λ_w), its adversarial/feature-matching terms are hinge/relative
(public: LSGAN summed over sub-discriminators, absolute L1 x 2). docs/presets.md gives the
measured balance of the weighted terms in both presets after 100 steps. Every weight and every
one of these choices is a config key; the ``official`` preset holds the public code's values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from dmtts.config import from_dict, read_yaml, to_dict
from dmtts.errors import DmttsError

PAPER_X = 120.0


#: ``dmtts codec export --avg best`` scores the means of these checkpoint counts on the run's dev set
#: (those it kept enough checkpoints for) and exports the one with the lowest validation mel loss
AVG_CANDIDATES = (1, 2, 4, 8, 12, 16)


@dataclass
class CodecModelConfig:
    """Generator architecture: SEANet encoder/decoder and RVQ (DESIGN §5)."""

    sample_rate: int = 16000
    n_filters: int = 32
    dimension: int = 1024
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])  # encoder order; hop = product
    n_residual_layers: int = 1
    residual_kernel_size: int = 3
    dilation_base: int = 2
    lstm_layers: int = 2
    compress: int = 2
    true_skip: bool = False
    n_q: int = 8
    codebook_size: int = 1024
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    # an entry is dead (re-drawn from the batch) when its EMA usage is under this fraction of the
    # mean usage N/K; 0 switches replacement off (see dmtts/codec/rvq.py for why it is relative)
    dead_code_threshold: float = 0.1
    conv_init: str = "scaled"  # scaled: variance-preserving, zero bias | torch: PyTorch default (public code)
    # Decoder options for periodic structure (issue 16; dmtts/codec/periodic.py). The paper and
    # official presets keep SEANet's ELU and waveform output.
    decoder_activation: str = "elu"  # elu | snake (x + sin^2(ax)/a, learned a per channel)
    # waveform (SEANet) | istft (predict magnitude + phase, inverse STFT) | harmonic (istft plus
    # harmonics at a predicted, YIN-supervised F0 under a predicted spectral envelope)
    decoder_head: str = "waveform"
    istft_hop: int = 320  # istft head: frame hop of the predicted STFT (320, 40, 8 or 2 with the paper strides)
    istft_n_fft: int = 0  # istft head: FFT size (0: 4 * istft_hop)
    istft_residual_layers: int = 3  # istft head: dilated residual units (1, 3, 9, ...) before the head
    harmonic_f0_min: float = 50.0  # harmonic head: F0 range in Hz (also the YIN search range)
    harmonic_f0_max: float = 600.0
    harmonic_envelope_bins: int = 129  # harmonic head: linear-frequency bins of the envelope, 0..Nyquist
    # harmonic head: rotate the aperiodic (iSTFT) part's phase by a pseudo-random angle per frame
    # (random in training, a fixed table by absolute frame at inference), so frames that repeat
    # cannot overlap-add into a comb at the frame rate (dmtts/codec/periodic.py, ISTFTHead)
    harmonic_noise_rotation: bool = False
    # add YIN log-F0, voicing and aperiodicity of the input (1x1 conv) to the encoder output
    # before the RVQ, so the tokens carry pitch from the start (dmtts/codec/pitch.py)
    encoder_pitch: bool = False
    # multiplies the log-F0 side input (in octaves) before its projection: the RVQ spends its bits
    # where the latent varies most, so a larger scale buys F0 precision through quantization
    encoder_pitch_scale: float = 1.0


@dataclass
class DiscriminatorConfig:
    use_mpd: bool = True
    mpd_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    use_msd: bool = True
    msd_scales: int = 3
    msd_channels: int = 16  # first layer; grows x4 per grouped layer up to msd_max_channels
    msd_max_channels: int = 256
    # explicit grouped-layer layout of each MSD (HiFi-GAN: channels [128, 256, 512, 1024, 1024],
    # strides [2, 2, 4, 4, 1], groups [4, 16, 16, 16, 16]); empty: 4 layers of stride 4 whose
    # channels grow x4 from msd_channels up to msd_max_channels
    msd_layer_channels: list[int] = field(default_factory=list)
    msd_strides: list[int] = field(default_factory=list)
    msd_groups: list[int] = field(default_factory=list)
    msd_spectral_norm_first: bool = False  # HiFi-GAN: spectral norm on the first (full-rate) MSD
    use_stft: bool = True
    stft_filters: int = 32
    stft_n_ffts: list[int] = field(default_factory=lambda: [1024, 2048, 512, 256, 128])
    # EnCodec / public code: the STFT divided by sqrt(sum(window^2)) and no centre padding
    stft_normalized: bool = False
    stft_center: bool = True


@dataclass
class LossConfig:
    adversarial: str = "hinge"  # hinge | lsgan
    feature_matching: str = "relative"  # relative (eq. 8) | l1 (HiFi-GAN: 2 * sum of mean |diff|)
    mel_windows: list[int] = field(default_factory=lambda: [2 ** i for i in range(5, 12)])
    mel_hops: list[int] = field(default_factory=list)  # empty: window // 4
    mel_bins: int = 64
    mel_l2: bool = True  # eq. 5: L1 + L2 per scale
    mel_scale_weights: list[float] = field(default_factory=list)  # empty: 1 per scale
    mel_fmax: float = 8000.0
    lambda_wav: float = 4.15 * PAPER_X
    lambda_mel: float = 0.375 * PAPER_X
    lambda_commit: float = 0.085 * PAPER_X
    lambda_adv: float = 1.0
    lambda_fm: float = 1.0
    lambda_distill: float = PAPER_X
    # multi-resolution linear-frequency STFT loss (spectral convergence + log-magnitude L1, mean
    # over resolutions; Parallel WaveGAN): resolves harmonics an 80-bin mel does not. Off: []
    stft_ffts: list[int] = field(default_factory=list)
    lambda_stft: float = 0.0
    # harmonic decoder head only: L1 on log F0 (voiced frames) and voicing BCE against YIN targets
    lambda_f0: float = 0.0
    lambda_voicing: float = 0.0
    # commitment over the RVQ levels: sum (paper eq. 9) | mean (public code: 1/8 of the sum)
    commitment_reduction: str = "sum"
    # residuals of RVQ levels >= 2 keep their gradient to the encoder (dmtts) or are detached,
    # so only level 1's commitment/distillation terms reach it (public code; dmtts/codec/rvq.py)
    commit_residual_gradient: bool = True


@dataclass
class DistillConfig:
    mode: str = "none"  # none | lm | sm | lm+sm | cls | word_emb
    lm_layer: str = "1"  # RVQ output the LM student projects: 1 | 1:8 | 8
    sm_layer: str = "1:8"
    axis: str = "d"  # d (paper) | t (ablation)
    lambda_lm: float = 1.0
    lambda_sm: float = 1.0
    # lm+sm: half (paper eq. 13: ½(λ_LM·L_L + λ_SM·L_S); one teacher: λ·L) | sum (public code:
    # λ_LM·L_L + λ_SM·L_S; one teacher: L unweighted). For the Fig. 3 sweep (λ_LM + λ_SM = 1)
    # "sum" gives the distillation term twice the weight "half" gives it; see docs/presets.md.
    combine: str = "half"
    lm_dim: int = 768
    sm_dim: int = 768


@dataclass
class DataConfig:
    train_cuts: str = ""
    valid_cuts: str = ""
    crop_seconds: float = 3.0
    batch_size: int = 6  # cuts per batch per process
    sampler: str = "simple"  # simple | dynamic_bucketing
    num_buckets: int = 10  # dynamic_bucketing only
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = 0
    max_valid_batches: int = 10


@dataclass
class TrainConfig:
    num_epochs: int = 100
    max_steps: int = 0  # 0: no limit
    max_minutes: float = 0.0  # wall-clock cap of this invocation (checkpoint, then stop); 0: none
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    scheduler: str = "exponential"  # exponential (x lr_decay per epoch) | cosine (over max_steps)
    # cosine only: the learning rate ends at this fraction of lr instead of 0 (so adversarial
    # steps near the end of a run still learn)
    lr_min_ratio: float = 0.0
    lr_decay: float = 0.98
    bf16: bool = False
    device: str = "auto"
    seed: int = 42
    grad_clip: float = 0.0  # 0: off
    # reconstruction-only warm-up: before this step the discriminators are neither trained nor
    # used and the generator learns from the waveform, mel, commitment and distillation losses
    # alone (0 = adversarial from the first step, as in the paper)
    adversarial_start_step: int = 0
    # quantizer dropout (SoundStream, EnCodec): the probability that a step decodes only the first
    # n levels, n uniform in 1..n_q-1, so that the decoder learns every bitrate and tolerates
    # missing upper levels (what a NAR's wrong codes are). The RVQ, its commitment loss and the
    # distillation still see every level. 0: off (the paper). The draw is a function of the seed
    # and the step: identical on every rank and after --resume.
    quantizer_dropout: float = 0.0
    log_every: int = 10
    valid_every: int = 500
    checkpoint_every: int = 1000
    keep_last: int = 3
    tb_audio_every: int = 1000
    num_threads: int = 0  # torch intra-op threads per process (0: torch default)


@dataclass
class CodecTrainingConfig:
    preset: str = "paper"
    model: CodecModelConfig = field(default_factory=CodecModelConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# presets: overrides applied on top of the dataclass defaults (= the paper)

_PRESET_OVERRIDES: dict[str, dict[str, Any]] = {
    "paper": {},
    # The public SpeechTokenizer / DM-Codec code's values.
    "official": {
        "model": {"n_filters": 64, "conv_init": "torch"},
        "discriminator": {  # HiFi-GAN MPD / MSD and EnCodec's MS-STFT, as the public code builds them
            "mpd_channels": [32, 128, 512, 1024],
            "msd_channels": 128,
            "msd_max_channels": 1024,
            "msd_layer_channels": [128, 256, 512, 1024, 1024],
            "msd_strides": [2, 2, 4, 4, 1],
            "msd_groups": [4, 16, 16, 16, 16],
            "msd_spectral_norm_first": True,
            "stft_normalized": True,
            "stft_center": False,
        },
        "distill": {"combine": "sum", "lambda_lm": 0.5, "lambda_sm": 0.5},
        "loss": {
            "adversarial": "lsgan",
            "feature_matching": "l1",
            "mel_windows": [1024, 512, 256, 128],
            "mel_hops": [240, 120, 60, 30],
            "mel_bins": 80,
            "mel_l2": False,
            "mel_scale_weights": [45.0, 1.0, 1.0, 1.0],
            "lambda_wav": 500.0,
            "lambda_mel": 1.0,
            "lambda_commit": 10.0,
            "commitment_reduction": "mean",
            "commit_residual_gradient": False,
            "lambda_distill": 120.0,
        },
        "train": {"betas": [0.9, 0.99], "scheduler": "cosine", "max_steps": 300000},
    },
    # Small enough to train for a few minutes on 2 CPU cores (tests and the demo).
    "tiny": {
        "model": {"n_filters": 8, "dimension": 64, "codebook_size": 128, "kmeans_iters": 10},
        "discriminator": {
            "mpd_periods": [2, 3, 5],
            "mpd_channels": [8, 16, 32],
            "msd_scales": 2,
            "msd_channels": 8,
            "msd_max_channels": 32,
            "stft_filters": 8,
            "stft_n_ffts": [512, 256, 128],
        },
        "loss": {"mel_windows": [64, 128, 256, 512, 1024]},
        "data": {"batch_size": 4, "crop_seconds": 1.0},
        "train": {"lr": 3e-4, "log_every": 5, "valid_every": 100, "checkpoint_every": 100},
    },
}

PRESETS = tuple(_PRESET_OVERRIDES)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset_dict(name: str) -> dict:
    if name not in _PRESET_OVERRIDES:
        raise DmttsError(f"unknown codec preset '{name}'; choose one of {', '.join(PRESETS)}")
    base = to_dict(CodecTrainingConfig())
    merged = _deep_merge(base, _PRESET_OVERRIDES[name])
    merged["preset"] = name
    return merged


def training_config(preset: str = "paper", overrides: dict | None = None) -> CodecTrainingConfig:
    """Resolved training config: the preset with ``overrides`` (a nested dict) applied."""
    data = preset_dict(preset)
    if overrides:
        data = _deep_merge(data, overrides)
    cfg = from_dict(CodecTrainingConfig, data)
    validate(cfg)
    validate_periodic(cfg)
    return cfg


def model_config(preset: str) -> CodecModelConfig:
    return training_config(preset).model


def load_training_config(path: str | Path) -> CodecTrainingConfig:
    """Load a codec training YAML (``preset:`` + overrides); errors name the file and the key."""
    data = read_yaml(path)
    preset = data.pop("preset", "paper")
    try:
        return training_config(preset, data)
    except DmttsError as e:
        raise DmttsError(f"{path}: {e}") from None


_LAYER_CHOICES = ("1", "1:8", "8")
_MODES = ("none", "lm", "sm", "lm+sm", "cls", "word_emb")


def validate(cfg: CodecTrainingConfig) -> None:
    from dmtts.config import check_choice

    d, l, m = cfg.distill, cfg.loss, cfg.model
    for key, value, choices in (
            ("distill.mode", d.mode, _MODES), ("distill.lm_layer", d.lm_layer, _LAYER_CHOICES),
            ("distill.sm_layer", d.sm_layer, _LAYER_CHOICES), ("distill.axis", d.axis, ("d", "t")),
            ("distill.combine", d.combine, {"half": "paper eq. 13", "sum": "public code"}),
            ("loss.adversarial", l.adversarial, ("hinge", "lsgan")),
            ("loss.feature_matching", l.feature_matching, ("relative", "l1")),
            ("loss.commitment_reduction", l.commitment_reduction, ("sum", "mean")),
            ("data.sampler", cfg.data.sampler, ("simple", "dynamic_bucketing")),
            ("train.scheduler", cfg.train.scheduler, ("exponential", "cosine")),
            ("model.conv_init", m.conv_init, ("scaled", "torch"))):
        check_choice(key, value, choices)
    if l.mel_hops and len(l.mel_hops) != len(l.mel_windows):
        raise DmttsError("loss.mel_hops must be empty or have one hop per entry of loss.mel_windows")
    if l.mel_scale_weights and len(l.mel_scale_weights) != len(l.mel_windows):
        raise DmttsError("loss.mel_scale_weights must be empty or have one weight per mel window")
    dc = cfg.discriminator
    n_layers = {len(dc.msd_layer_channels), len(dc.msd_strides), len(dc.msd_groups)}
    if len(n_layers) > 1:
        raise DmttsError("discriminator.msd_layer_channels, msd_strides and msd_groups must have the same "
                         "length (one entry per grouped MSD layer), or all be empty")
    prev = dc.msd_channels
    for c, g in zip(dc.msd_layer_channels, dc.msd_groups):
        if g < 1 or prev % g or c % g:
            raise DmttsError(f"discriminator.msd_groups: {g} groups do not divide an MSD layer of {prev} -> {c} "
                             "channels")
        prev = c
    if cfg.train.scheduler == "cosine" and cfg.train.max_steps <= 0:
        raise DmttsError("train.scheduler 'cosine' needs train.max_steps > 0 (the cosine period)")
    if m.n_q < 1 or m.codebook_size < 2:
        raise DmttsError("model.n_q must be >= 1 and model.codebook_size >= 2")
    if not 0.0 <= cfg.train.quantizer_dropout <= 1.0:
        raise DmttsError(f"train.quantizer_dropout must be a probability in [0, 1], got {cfg.train.quantizer_dropout}")
    if cfg.train.quantizer_dropout > 0 and m.n_q < 2:
        raise DmttsError("train.quantizer_dropout needs model.n_q >= 2 (with one level there is none to drop)")
    if m.codebook_size > 32768:
        raise DmttsError("model.codebook_size must be <= 32768 (codes are stored as int16)")


def validate_periodic(cfg: CodecTrainingConfig) -> None:
    """Checks of the decoder options of issue 16 (activation, iSTFT head, STFT loss, lr floor)."""
    m, l = cfg.model, cfg.loss
    if m.decoder_activation not in ("elu", "snake"):
        raise DmttsError(f"model.decoder_activation must be 'elu' or 'snake', got '{m.decoder_activation}'")
    if m.decoder_head not in ("waveform", "istft", "harmonic"):
        raise DmttsError(f"model.decoder_head must be 'waveform', 'istft' or 'harmonic', got '{m.decoder_head}'")
    if m.decoder_head == "harmonic":
        if not 0 < m.harmonic_f0_min < m.harmonic_f0_max < m.sample_rate / 2 or m.harmonic_envelope_bins < 2:
            raise DmttsError(f"model.harmonic_f0_min/max ({m.harmonic_f0_min}, {m.harmonic_f0_max}) must satisfy "
                             f"0 < min < max < {m.sample_rate / 2} and harmonic_envelope_bins >= 2")
    elif m.harmonic_noise_rotation:
        raise DmttsError("model.harmonic_noise_rotation needs model.decoder_head: harmonic (it rotates the "
                         "aperiodic part; an iSTFT-only head carries the harmonics in that phase)")
    if m.decoder_head != "harmonic" and (l.lambda_f0 > 0 or l.lambda_voicing > 0):
        raise DmttsError("loss.lambda_f0 / lambda_voicing need model.decoder_head: harmonic (only it predicts F0)")
    if m.decoder_head in ("istft", "harmonic"):
        hops, hop = [], 1
        for s in m.strides:  # the hops the decoder passes through: 320, 40, 8, 2 for (2, 4, 5, 8)
            hop *= s
        current = hop
        hops.append(current)
        for s in reversed(m.strides):
            current //= s
            hops.append(current)
        if m.istft_hop not in hops[:-1]:
            raise DmttsError(f"model.istft_hop {m.istft_hop} must be one of {hops[:-1]} (the decoder's frame hops "
                             f"for strides {m.strides})")
        n_fft = m.istft_n_fft or 4 * m.istft_hop
        if n_fft < m.istft_hop or (n_fft - m.istft_hop) % 2:
            raise DmttsError(f"model.istft_n_fft {n_fft} must be >= istft_hop {m.istft_hop} with an even difference")
    if any(n < 16 for n in l.stft_ffts) or l.lambda_stft < 0:
        raise DmttsError("loss.stft_ffts must be FFT sizes >= 16 and loss.lambda_stft >= 0")
    if l.lambda_stft > 0 and not l.stft_ffts:
        raise DmttsError("loss.lambda_stft > 0 needs loss.stft_ffts (e.g. [512, 1024, 2048])")
    if not 0.0 <= cfg.train.lr_min_ratio < 1.0:
        raise DmttsError(f"train.lr_min_ratio must be in [0, 1), got {cfg.train.lr_min_ratio}")


def checkpoint_model_config(saved: dict | None) -> dict | None:
    """A checkpoint's model config with today's defaults filled in: a key added since it was
    saved (an option that is off by default) does not make its run a different model."""
    if saved is None:
        return None
    try:
        return to_dict(from_dict(CodecModelConfig, saved))
    except DmttsError:  # a key this version does not know: a different model
        return saved
