"""The codec part of ``train_speed.py``: one generator + discriminator optimiser step of the public
SpeechTokenizer trainer and of ``dmtts.codec.train.CodecTrainer``, built for the same input.

See ``train_speed.py`` for what is measured and how.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

from _flops import step_flops
from _memory import max_rss_bytes
from _timing import interleaved_best
from codec_speed import ST_CONFIG, load_speechtokenizer_class

SR = 16000
# The public training config (spt_base_cfg.json): generator sizes as in codec_speed.ST_CONFIG
# but with 64 base filters, and the trainer's loss weights and mel scales.
ST_TRAIN_CONFIG = {**ST_CONFIG, "n_filters": 64}
ST_MEL_WEIGHTS = [45.0, 1.0, 1.0, 1.0]
ST_MEL_BASE = {"n_fft": 1024, "hop_size": 240, "win_size": 1024, "num_mels": 80, "fmin": 0, "fmax": None}
ST_LAMBDA = {"commit": 10.0, "recon": 500.0, "distill": 120.0}
SEMANTIC_DIM = 768
PUBLIC_BATCH = 6  # spt_base_cfg.json batch_size (x 3 s segments)


# ---------------------------------------------------------------------------------------------
# the public SpeechTokenizer step

def install_torchaudio_standin() -> None:
    """A stand-in ``torchaudio`` with the two transforms ``speechtokenizer.discriminators`` and
    ``speechtokenizer.trainer.loss`` use. torchaudio on PyPI pins an older torch than the one
    installed here; these two are small and their behaviour is documented:

    * ``Spectrogram(power=None)``: the complex STFT of ``[..., N]`` with the given window,
      ``center`` and, when ``normalized``, divided by the window's L2 norm;
    * ``MelScale(...).fb``: the ``[n_stft, n_mels]`` filter bank (HTK mel scale, Slaney area
      normalisation: the same filters as ``dmtts.audio.mel_filterbank``).
    """
    if "torchaudio" in sys.modules:
        return
    from dmtts.audio import mel_filterbank

    class Spectrogram(torch.nn.Module):
        def __init__(self, n_fft=400, win_length=None, hop_length=None, pad=0, window_fn=torch.hann_window,
                     power=2.0, normalized=False, center=True, pad_mode="reflect", **_):
            super().__init__()
            if power is not None or pad:
                raise NotImplementedError("the stand-in only supports power=None, pad=0 (all speechtokenizer uses)")
            self.n_fft, self.win_length = n_fft, win_length or n_fft
            self.hop_length = hop_length or self.win_length // 2
            self.register_buffer("window", window_fn(self.win_length), persistent=False)
            self.normalized, self.center, self.pad_mode = normalized, center, pad_mode or "reflect"

        def forward(self, x):
            lead = x.shape[:-1]
            spec = torch.stft(x.reshape(-1, x.shape[-1]), self.n_fft, self.hop_length, self.win_length,
                              window=self.window, center=self.center, pad_mode=self.pad_mode, return_complex=True)
            if self.normalized:
                spec = spec / self.window.pow(2).sum().sqrt()
            return spec.reshape(*lead, *spec.shape[-2:])

    class MelScale(torch.nn.Module):
        def __init__(self, n_mels=128, sample_rate=16000, f_min=0.0, f_max=None, n_stft=201, norm=None,
                     mel_scale="htk"):
            super().__init__()
            if norm != "slaney" or mel_scale != "htk":
                raise NotImplementedError("the stand-in only supports norm='slaney', mel_scale='htk'")
            self.fb = mel_filterbank(sample_rate, 2 * (n_stft - 1), n_mels, f_min, f_max).T.contiguous()

    ta = types.ModuleType("torchaudio")
    ta.transforms = types.ModuleType("torchaudio.transforms")
    ta.transforms.Spectrogram, ta.transforms.MelScale = Spectrogram, MelScale
    sys.modules["torchaudio"], sys.modules["torchaudio.transforms"] = ta, ta.transforms


def build_public_step(x: torch.Tensor, semantic: torch.Tensor):
    """The public trainer's step, built from the public modules (see the module docstring)."""
    import importlib

    cls = load_speechtokenizer_class()
    if cls is None:
        raise SystemExit("speechtokenizer is not installed: `pip install --no-deps speechtokenizer`")
    install_torchaudio_standin()
    disc_mod = importlib.import_module("speechtokenizer.discriminators")
    if "speechtokenizer.trainer" not in sys.modules:  # its __init__ imports the trainer's extra deps
        trainer_pkg = types.ModuleType("speechtokenizer.trainer")
        trainer_pkg.__path__ = [str(Path(sys.modules["speechtokenizer"].__path__[0]) / "trainer")]
        sys.modules["speechtokenizer.trainer"] = trainer_pkg
    loss_mod = importlib.import_module("speechtokenizer.trainer.loss")
    torch.manual_seed(0)
    gen = cls(ST_TRAIN_CONFIG).train()
    for m in gen.modules():  # k-means initialisation (a one-off of the first step) off, as in ours
        if hasattr(m, "inited") and hasattr(m, "embed_avg"):
            torch.nn.init.kaiming_uniform_(m.embed)
            m.embed_avg.copy_(m.embed)
            m.inited.fill_(1)
    discs = [disc_mod.MultiPeriodDiscriminator(), disc_mod.MultiScaleDiscriminator(),
             disc_mod.MultiScaleSTFTDiscriminator(32)]
    for d in discs:
        d.train()
    d_params = [p for d in discs for p in d.parameters()]
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(d_params, lr=1e-4, betas=(0.9, 0.99))
    mel_kwargs = []
    for i in range(len(ST_MEL_WEIGHTS)):  # the trainer halves n_fft, hop and window per scale
        div = 2 ** i
        mel_kwargs.append({"n_fft": ST_MEL_BASE["n_fft"] // div, "hop_size": ST_MEL_BASE["hop_size"] // div,
                           "win_size": ST_MEL_BASE["win_size"] // div, "num_mels": ST_MEL_BASE["num_mels"],
                           "sample_rate": SR, "fmin": ST_MEL_BASE["fmin"], "fmax": ST_MEL_BASE["fmax"]})
    L = loss_mod

    def step() -> dict:
        x_hat, loss_q, feature = gen(x)
        opt_d.zero_grad()
        d_out = [d(x, x_hat.detach()) for d in discs]  # (real logits, fake logits, real fmaps, fake fmaps)
        loss_d = sum(L.discriminator_loss(o[0], o[1]) for o in d_out)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_out = [d(x, x_hat) for d in discs]
        mel = sum(w * L.mel_loss(x, x_hat, **kw) for w, kw in zip(ST_MEL_WEIGHTS, mel_kwargs))
        fm = sum(L.feature_loss(o[2], o[3]) for o in g_out)
        adv = sum(L.adversarial_loss(o[1]) for o in g_out)
        recon = L.recon_loss(x, x_hat)
        distill = L.d_axis_distill_loss(feature, semantic)
        total = (fm + adv + mel + ST_LAMBDA["commit"] * loss_q + ST_LAMBDA["recon"] * recon
                 + ST_LAMBDA["distill"] * distill)
        total.backward()
        opt_g.step()
        return {"gen": total.item(), "disc": loss_d.item(), "mel": mel.item()}

    n_params = (sum(p.numel() for p in gen.parameters()), sum(p.numel() for p in d_params))
    return step, gen, n_params


# ---------------------------------------------------------------------------------------------
# the dmtts step

PUBLIC_SIZE_DISCRIMINATORS = {"mpd_channels": [32, 128, 512, 1024], "msd_channels": 16, "msd_max_channels": 1024,
                              "stft_filters": 32}


def build_dmtts_step(x: torch.Tensor, semantic: torch.Tensor, preset: str, public_discriminators: bool):
    from dmtts.codec.config import training_config
    from dmtts.codec.train import CodecTrainer

    overrides = {"model": {"kmeans_init": False},  # a one-off of the first step; off in both systems
                 "distill": {"mode": "sm", "sm_layer": "1", "sm_dim": SEMANTIC_DIM},
                 "data": {"batch_size": x.shape[0], "crop_seconds": x.shape[-1] / SR},
                 "train": {"device": "cpu", "num_threads": 0}}
    if public_discriminators:
        overrides["discriminator"] = PUBLIC_SIZE_DISCRIMINATORS
    cfg = training_config(preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = CodecTrainer(cfg, tmp)
    batch = {"audio": x, "lm_feats": None, "sm_feats": semantic}

    def step() -> dict:
        s = trainer.train_step(batch)
        trainer.step += 1
        return s

    n_params = (sum(p.numel() for p in trainer.gen.parameters()), sum(p.numel() for p in trainer.disc.parameters()))
    return step, trainer.gen, n_params


CODEC_SYSTEMS = {
    "SpeechTokenizer": lambda x, s: build_public_step(x, s),
    "dmtts official+pub-D": lambda x, s: build_dmtts_step(x, s, "official", True),
    "dmtts paper": lambda x, s: build_dmtts_step(x, s, "paper", False),
}


def codec_inputs(batch: int, seconds: float):
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(batch, 1, int(seconds * SR), generator=g)
    semantic = torch.randn(batch, int(seconds * 50), SEMANTIC_DIM, generator=g)  # HuBERT rate: 50 Hz
    return x, semantic


def codec_memory_child(name: str, batch: int, seconds: float) -> dict:
    """In a fresh process: build one system, then peak RSS of a warm-up step + a measured step."""
    x, sem = codec_inputs(batch, seconds)
    step, _, _ = CODEC_SYSTEMS[name](x, sem)
    built = max_rss_bytes()
    step()
    step()
    return {"built": built, "peak": max_rss_bytes()}


def run_codec(args, rate_fn) -> tuple[list[dict], float]:
    """Rows of the codec table and the matmul rate measured in the same rounds."""
    memory = {}
    if not args.no_memory:  # first, while this process holds no system: the children's peaks add to ours
        for name in CODEC_SYSTEMS:
            out = subprocess.run([sys.executable, str(Path(__file__).with_name("train_speed.py")),
                                  "--codec-memory-child", name, "--threads", str(args.threads),
                                  "--codec-batch", str(args.codec_batch), "--codec-seconds", str(args.codec_seconds)],
                                 capture_output=True, text=True, check=True)
            memory[name] = json.loads(out.stdout.strip().splitlines()[-1])
    x, sem = codec_inputs(args.codec_batch, args.codec_seconds)
    systems = {name: build(x, sem) for name, build in CODEC_SYSTEMS.items()}
    rows = []
    flops = {}
    for name, (step, gen, _) in systems.items():
        step()  # warm-up (allocator, first-touch of optimizer state)
        flops[name] = step_flops(step, gen)
    fns = {name: s[0] for name, s in systems.items()}
    mm, mm_flops = rate_fn
    fns["matmul"] = mm
    best = interleaved_best(fns, args.repeats)
    rate = mm_flops / best["matmul"]
    for name, (_, _, n_params) in systems.items():
        mem = memory.get(name, {})
        rows.append({"system": name, "time": best[name], "flops": flops[name], "gen_params": n_params[0],
                     "disc_params": n_params[1], "rss_step": mem.get("peak", 0) - mem.get("built", 0),
                     "rss_peak": mem.get("peak", 0)})
    ref = next(r for r in rows if r["system"] == "SpeechTokenizer")["time"]
    for r in rows:
        r["ratio"] = r["time"] / ref
        r["mfu"] = r["flops"] / (r["time"] * rate)
    return rows, rate
