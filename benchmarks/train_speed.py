#!/usr/bin/env python
"""Training-step throughput: DM-Codec against the public SpeechTokenizer step, and the TTS models' MFU.

Prints two tables.

**Codec** — one generator + discriminator optimiser step at the public SpeechTokenizer
configuration (``config/spt_base_cfg.json`` of github.com/ZhangXInFD/SpeechTokenizer: n_filters
64, D 1024, strides 8-5-4-2, 2-layer BiLSTM, 8 x 1024 RVQ, batch 6 x 3 s, 768-d distillation
target, Adam lr 1e-4 betas (0.9, 0.99), losses: LSGAN adversarial, 2 x L1 feature matching,
45/1/1/1 x four-scale 80-bin mel L1, 500 x waveform L1, 10 x commitment, 120 x D-axis
distillation) for:

* ``SpeechTokenizer``: the public code. Its generator (``speechtokenizer.model``), its three
  discriminators (``speechtokenizer.discriminators``: HiFi-GAN MPD with periods 2-3-5-7-11 and
  32-128-512-1024-1024 channels, HiFi-GAN MSD with 3 scales (first spectrally normed) up to 1024
  channels, EnCodec MS-STFT with 32 filters at n_fft 1024/2048/512/256/128) and its loss functions
  (``speechtokenizer.trainer.loss``), all imported from the PyPI package, run in the order of its
  trainer's loop: generator forward; discriminator zero_grad/forward on (x, x_hat.detach())/
  backward/step; generator zero_grad/forward of the discriminators on (x, x_hat)/backward/step.
  torchaudio, which two of those modules import, cannot be installed next to this torch; a
  small stand-in (:func:`install_torchaudio_standin`) supplies the two transforms they use
  (complex ``Spectrogram``, HTK/Slaney ``MelScale`` filter bank).
* ``dmtts official+pub-D``: ``dmtts.codec.train.CodecTrainer.train_step`` with the ``official``
  preset (the same generator sizes and loss terms) and discriminators sized like the public ones
  (MPD 32-128-512-1024, MSD up to 1024 channels, MS-STFT 32 filters).
* ``dmtts paper``: the same with the paper preset's smaller discriminators (what
  ``dmtts codec train`` runs by default; n_filters 32).

Each system reports step time (best of N, interleaved), the step's FLOPs
(``torch.utils.flop_counter`` over forward + backward; LSTMs analytically: 3 x their forward
FLOPs), achieved GFLOP/s, peak RSS above the built models (a child process per system, one
warm-up step then one measured step, ``ru_maxrss`` deltas), and the time ratio against the
public step.

**TTS** — one ScaledAdam optimiser step (forward, backward, ``optimizer.step``) of the AR and
NAR models at the paper size (12 layers, d 1024, 16 heads, FFN 4096) on a batch of
``--tts-batch`` utterances of ``--tts-seconds`` seconds (50 codec frames per second, 12 text
tokens per second). MFU = FLOPs of the forward + backward (flop counter, attention included) /
(step time x the fp32 matmul rate measured in the same interleaved rounds). ``--compile`` adds
the same step with the model wrapped in ``torch.compile`` (inductor, static shapes: the
steady-state speed for one batch shape; compilation takes minutes per new shape on this CPU).

    python benchmarks/train_speed.py [--threads 2] [--repeats 3] [--parts codec,tts] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from codec_speed import ST_CONFIG, load_speechtokenizer_class  # noqa: E402

SR = 16000
# The public training config (spt_base_cfg.json): generator sizes as in codec_speed.ST_CONFIG
# but with 64 base filters, and the trainer's loss weights and mel scales.
ST_TRAIN_CONFIG = {**ST_CONFIG, "n_filters": 64}
ST_MEL_WEIGHTS = [45.0, 1.0, 1.0, 1.0]
ST_MEL_BASE = {"n_fft": 1024, "hop_size": 240, "win_size": 1024, "num_mels": 80, "fmin": 0, "fmax": None}
ST_LAMBDA = {"commit": 10.0, "recon": 500.0, "distill": 120.0}
SEMANTIC_DIM = 768
TEXT_TOKENS_PER_SECOND = 12  # phonemes per second of read speech (LibriSpeech averages ~12-14)
TEXT_VOCAB = 100


# ---------------------------------------------------------------------------------------------
# measurement helpers

def max_rss_bytes() -> int:
    """Peak resident memory of this process. ``VmHWM`` rather than ``ru_maxrss``: Linux keeps
    ``ru_maxrss`` across ``execve``, so a child would report its (larger) parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def lstm_forward_flops(module: torch.nn.Module, fn) -> int:
    """FLOPs of the LSTMs in ``module`` during ``fn()`` (the flop counter does not see them):
    2 * 4H(I + H) per time step, layer and direction."""
    total = [0]

    def hook(mod, inputs, _out):
        x = inputs[0]
        steps = x.shape[0] * x.shape[1]
        h, dirs = mod.hidden_size, 2 if mod.bidirectional else 1
        for layer in range(mod.num_layers):
            i = mod.input_size if layer == 0 else h * dirs
            total[0] += dirs * steps * 2 * 4 * h * (i + h)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.LSTM)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def step_flops(fn, module: torch.nn.Module | None = None, lstm_factor: int = 3) -> int:
    """FLOPs of one ``fn()``: flop counter + ``lstm_factor`` x the LSTMs' forward FLOPs (3 for a
    training step: their backward costs about twice their forward, like any matmul; 1 for
    inference)."""
    from torch.utils.flop_counter import FlopCounterMode

    lstm = 0
    with FlopCounterMode(display=False) as counter:
        if module is None:
            fn()
        else:
            lstm = lstm_forward_flops(module, fn)
    return counter.get_total_flops() + lstm_factor * lstm


def make_matmul(n: int = 2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: torch.mm(a, b)), 2 * n ** 3


def interleaved_best(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Run every function ``warmup`` times, then ``repeats`` rounds of all of them in turn, and
    keep each one's fastest: on a shared machine background load then hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t)
    return best


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


def run_codec(args, rate_fn) -> list[dict]:
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
        mem = {}
        if not args.no_memory:
            out = subprocess.run([sys.executable, __file__, "--codec-memory-child", name, "--threads", str(args.threads),
                                  "--codec-batch", str(args.codec_batch), "--codec-seconds", str(args.codec_seconds)],
                                 capture_output=True, text=True, check=True)
            mem = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"system": name, "time": best[name], "flops": flops[name], "gen_params": n_params[0],
                     "disc_params": n_params[1], "rss_step": mem.get("peak", 0) - mem.get("built", 0),
                     "rss_peak": mem.get("peak", 0)})
    ref = next(r for r in rows if r["system"] == "SpeechTokenizer")["time"]
    for r in rows:
        r["ratio"] = r["time"] / ref
        r["mfu"] = r["flops"] / (r["time"] * rate)
    return rows, rate


# ---------------------------------------------------------------------------------------------
# TTS

def tts_batch(kind: str, batch: int, seconds: float, n_q: int, codebook: int):
    g = torch.Generator().manual_seed(0)
    T = int(seconds * 50)
    L = int(seconds * TEXT_TOKENS_PER_SECOND)
    b = {"text": torch.randint(1, TEXT_VOCAB, (batch, L), generator=g),
         "text_lens": torch.full((batch,), L), "codes": torch.randint(0, codebook, (batch, T, n_q), generator=g),
         "code_lens": torch.full((batch,), T)}
    return b


def build_tts_step(kind: str, args, compiled: bool):
    from dmtts.tts.config import PRESETS, TTSDataConfig, TTSOptimConfig
    from dmtts.tts.model import build_model
    from dmtts.tts.train import build_optimizer, compute_loss

    mcfg = PRESETS[args.tts_size]
    mcfg = type(mcfg)(**{**mcfg.__dict__, "text_vocab_size": TEXT_VOCAB})
    torch.manual_seed(0)
    model = build_model(kind, mcfg).train()
    optimizer, _ = build_optimizer(model, TTSOptimConfig())
    # static shapes: this batch's shape only (dynamic=True failed in inductor on the AR step with
    # torch 2.13, see docs/benchmarks.md)
    run_model = torch.compile(model, dynamic=False) if compiled else model
    batch = tts_batch(kind, args.tts_batch, args.tts_seconds, mcfg.n_q, mcfg.codebook_size)
    dcfg = TTSDataConfig()
    gen = torch.Generator()

    def fwd_bwd():
        gen.manual_seed(0)  # same NAR prompt lengths and levels in every call
        loss, _ = compute_loss(run_model, kind, batch, torch.device("cpu"), dcfg, mcfg.n_q, gen)
        loss.backward()
        return loss

    def step():
        loss = fwd_bwd()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def count():
        f = step_flops(fwd_bwd)
        model.zero_grad(set_to_none=True)
        return f

    def opt_only():
        for p in model.parameters():  # gradients of the right size: the optimiser's own cost
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        optimizer.step()

    n_params = sum(p.numel() for p in model.parameters())
    return step, count, opt_only, fwd_bwd, n_params, model


def run_tts(args, rate_fn) -> tuple[list[dict], float]:
    variants = [("ar", False), ("nar", False)]
    if args.compile:
        variants += [("ar", True), ("nar", True)]
    built = {}
    compile_s = {}
    for kind, compiled in variants:
        t = time.perf_counter()
        built[(kind, compiled)] = build_tts_step(kind, args, compiled)
        step = built[(kind, compiled)][0]
        step()  # warm-up; with torch.compile this is the compilation
        compile_s[(kind, compiled)] = time.perf_counter() - t
    flops = {}
    for (kind, compiled), b in built.items():
        if not compiled:
            flops[kind] = b[1]()
    mm, mm_flops = rate_fn
    fns = {key: b[0] for key, b in built.items()}
    fns[("opt", "ar")] = built[("ar", False)][2]
    fns[("opt", "nar")] = built[("nar", False)][2]
    fns["matmul"] = mm
    best = interleaved_best(fns, args.repeats, warmup=0)
    rate = mm_flops / best["matmul"]
    rows = []
    for (kind, compiled), b in built.items():
        t = best[(kind, compiled)]
        opt_t = best[("opt", kind)]
        rows.append({"model": kind, "compiled": compiled, "time": t, "opt_time": opt_t, "flops": flops[kind],
                     "params": b[4], "mfu": flops[kind] / (t * rate),
                     "mfu_fwd_bwd": flops[kind] / (max(t - opt_t, 1e-9) * rate),
                     "first_step_s": compile_s[(kind, compiled)]})
    return rows, rate


# ---------------------------------------------------------------------------------------------
# the other corpus-sized stages (inputs of docs/scaling.md)

def demo_speech(seconds: float):
    """``seconds`` of real speech from the demo corpus (recipes/demo/download), or None."""
    import numpy as np

    from dmtts.audio import load_audio

    root = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "download"
    parts, total = [], 0
    for f in sorted(root.rglob("*.flac")):
        wav, _ = load_audio(f, SR)
        parts.append(wav)
        total += len(wav)
        if total >= seconds * SR:
            return np.concatenate(parts)[: int(seconds * SR)].astype("float32")
    return None


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run_stages(args) -> list[tuple[str, str, float, str]]:
    """(stage, what, audio seconds per second, how) for the offline stages, batch 1 unless said."""
    from transformers import BertConfig, BertModel, HubertConfig, HubertModel

    from dmtts.codec.model import DMCodec
    from dmtts.tts.config import PRESETS
    from dmtts.tts.model import build_model

    secs = args.stage_seconds
    rows = []
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(1, int(secs * SR), generator=g)
    torch.manual_seed(0)
    with torch.inference_mode():
        hubert = HubertModel(HubertConfig()).eval()  # hubert-base sizes, random weights
        from torch.nn.utils import parametrize

        for m in hubert.modules():  # fold the positional conv's weight norm (fixed at inference;
            if parametrize.is_parametrized(m):  # the flop counter cannot trace the parametrization)
                for name in list(m.parametrizations):
                    parametrize.remove_parametrizations(m, name)
        t = best_time(lambda: hubert(wav), args.repeats)
        rows.append(("teachers extract", "SM: HuBERT-base forward", secs / t, f"{secs:g} s clip",
                     step_flops(lambda: hubert(wav)) / secs))
        bert = BertModel(BertConfig()).eval()  # bert-base sizes
        n_tok = int(secs * 3.5)  # ~2.7 words/s of read speech, ~1.3 word pieces per word
        ids = torch.randint(1000, 20000, (1, n_tok), generator=g)
        t = best_time(lambda: bert(ids), args.repeats)
        rows.append(("teachers extract", f"LM: BERT-base forward ({n_tok} tokens)", secs / t, f"{secs:g} s of text",
                     step_flops(lambda: bert(ids)) / secs))
        del hubert, bert
        codec = DMCodec.from_preset("paper").prepare_for_inference()
        xb = 0.1 * torch.randn(16, 1, 3 * SR, generator=g)
        t = best_time(lambda: codec.encode(xb), args.repeats)
        codec.inference_chunk_frames = 0  # the model's own FLOPs (chunk halos are overhead)
        enc_flops = step_flops(lambda: codec.encode(xb[:1]), codec, lstm_factor=1) / 3  # per audio second
        codec.inference_chunk_frames = DMCodec.inference_chunk_frames
        rows.append(("tokenize", "DM-Codec paper encode, batch 16 x 3 s", 48 / t, "batched", enc_flops))
        codes = codec.encode(wav[:, None])
        t = best_time(lambda: codec.decode(codes), args.repeats)
        t_decode = t
        mcfg = PRESETS["paper"]
        mcfg = type(mcfg)(**{**mcfg.__dict__, "text_vocab_size": TEXT_VOCAB})
        ar = build_model("ar", mcfg).eval()
        nar = build_model("nar", mcfg).eval()
        L, P, steps = int((secs + 3) * TEXT_TOKENS_PER_SECOND), 150, 50
        text = torch.randint(1, TEXT_VOCAB, (1, L), generator=g)
        prompt = torch.randint(0, 1024, (1, P), generator=g)
        lens = lambda n: torch.tensor([n])  # noqa: E731

        def ar_run():
            ar.generate(text, lens(L), prompt, lens(P), max_new_tokens=steps, min_new_tokens=steps, top_k=1)

        t_ar_step = best_time(ar_run, 1) / steps  # includes the prefill once: slightly pessimistic
        T = int(secs * 50)
        pc = torch.randint(0, 1024, (1, P, 8), generator=g)
        lvl1 = torch.randint(0, 1024, (1, T), generator=g)
        t_nar = best_time(lambda: nar.generate(text, lens(L), pc, lens(P), lvl1, lens(T)), 1)
        t_synth = T * t_ar_step + t_nar + t_decode
        rows.append(("synthesize", f"AR (fp32 KV cache, {t_ar_step * 1e3:.0f} ms/frame) + NAR 7 passes "
                     f"({t_nar:.1f} s) + codec decode ({t_decode:.2f} s), batch 1", secs / t_synth,
                     f"{secs:g} s utterance, 3 s prompt", None))
        del ar, nar, codec
    speech = demo_speech(secs)
    if speech is not None:
        from dmtts.eval.metrics import load_mos, load_speaker_encoder, load_transcriber

        for name, load, call in (
            ("ASR: faster-whisper tiny.en", lambda: load_transcriber("faster-whisper"), lambda m: m.transcribe([speech])),
            ("SIM: resemblyzer GE2E", lambda: load_speaker_encoder("resemblyzer"), lambda m: m.embed([speech])),
            ("MOS: DNSMOS (ONNX)", lambda: load_mos("dnsmos"), lambda m: m(speech)),
        ):
            try:
                model = load()
            except Exception as e:  # an optional eval model that is not installed: say so, go on
                print(f"eval {name}: not measured ({e})")
                continue
            t = best_time(lambda: call(model), args.repeats)
            rows.append(("eval", name, secs / t, f"{secs:g} s of demo speech", None))
    return rows


# ---------------------------------------------------------------------------------------------

def print_head(head: str) -> None:
    """A markdown table's header line and its separator."""
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")


def fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2 = 2 CPU cores)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; each system keeps its fastest")
    ap.add_argument("--parts", default="codec,tts", help="comma list of: codec, tts, stages")
    ap.add_argument("--codec-batch", type=int, default=6, help="public config batch_size (default 6)")
    ap.add_argument("--codec-seconds", type=float, default=3.0, help="public config segment_size / 16 kHz (3 s)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-system peak-RSS child processes")
    ap.add_argument("--tts-size", default="paper", help="TTS model preset (paper | small | tiny)")
    ap.add_argument("--tts-batch", type=int, default=2, help="utterances per TTS batch")
    ap.add_argument("--tts-seconds", type=float, default=8.0, help="seconds per TTS utterance")
    ap.add_argument("--compile", action="store_true", help="also time the TTS steps under torch.compile")
    ap.add_argument("--stage-seconds", type=float, default=10.0, help="clip length of the stages part")
    ap.add_argument("--codec-memory-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.codec_memory_child:
        print(json.dumps(codec_memory_child(args.codec_memory_child, args.codec_batch, args.codec_seconds)))
        return 0
    parts = set(args.parts.split(","))
    unknown = parts - {"codec", "tts", "stages"}
    if unknown:
        ap.error(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; use codec, tts and/or stages")
    load0 = os.getloadavg()
    rate_fn = make_matmul()
    print(f"device cpu, {args.threads} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, best of {args.repeats} interleaved rounds, "
          f"load average at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min)")
    if "codec" in parts:
        rows, rate = run_codec(args, rate_fn)
        print()
        print(f"Codec: one generator + discriminator step, batch {args.codec_batch} x {args.codec_seconds:g} s; "
              f"fp32 matmul rate in the same rounds {rate / 1e9:.1f} GFLOP/s")
        head = (f"| {'system':<22} | {'G / D params':>13} | {'step s':>7} | {'vs public':>9} | {'TFLOP/step':>10} | "
                f"{'GFLOP/s':>7} | {'MFU':>5} | {'RSS step':>9} | {'RSS peak':>9} |")
        print_head(head)
        for r in rows:
            params = f"{r['gen_params'] / 1e6:.1f}M/{r['disc_params'] / 1e6:.1f}M"
            rss = (fmt_bytes(r["rss_step"]), fmt_bytes(r["rss_peak"])) if r["rss_peak"] else ("-", "-")
            print(f"| {r['system']:<22} | {params:>13} | {r['time']:7.2f} | {r['ratio']:8.2f}x | "
                  f"{r['flops'] / 1e12:10.3f} | {r['flops'] / r['time'] / 1e9:7.1f} | {100 * r['mfu']:4.0f}% | "
                  f"{rss[0]:>9} | {rss[1]:>9} |")
    if "tts" in parts:
        rows, rate = run_tts(args, rate_fn)
        print()
        print(f"TTS: one ScaledAdam step, {args.tts_size} size, batch {args.tts_batch} x {args.tts_seconds:g} s "
              f"({int(args.tts_seconds * 50)} frames + {int(args.tts_seconds * TEXT_TOKENS_PER_SECOND)} text tokens "
              f"each); fp32 matmul rate in the same rounds {rate / 1e9:.1f} GFLOP/s")
        head = (f"| {'model':<14} | {'params':>7} | {'step s':>7} | {'optimizer s':>11} | {'TFLOP fwd+bwd':>13} | "
                f"{'MFU':>5} | {'MFU fwd+bwd':>11} | {'first step s':>12} |")
        print_head(head)
        for r in rows:
            name = r["model"].upper() + (" compiled" if r["compiled"] else " eager")
            print(f"| {name:<14} | {r['params'] / 1e6:6.1f}M | {r['time']:7.2f} | {r['opt_time']:11.2f} | "
                  f"{r['flops'] / 1e12:13.3f} | {100 * r['mfu']:4.0f}% | {100 * r['mfu_fwd_bwd']:10.0f}% | "
                  f"{r['first_step_s']:12.1f} |")
        print("MFU = forward+backward FLOPs / (whole step time x matmul rate); 'MFU fwd+bwd' leaves the "
              "optimizer's time out; 'first step' includes compilation for compiled rows.")
    if "stages" in parts:
        print()
        mm, mm_flops = rate_fn
        rate = mm_flops / best_time(mm, 3)
        print(f"Offline stages, one process, inference mode (audio seconds processed per second of compute); "
              f"fp32 matmul rate just before {rate / 1e9:.1f} GFLOP/s:")
        head = f"| {'stage':<16} | {'what':<100} | {'audio-s/s':>9} | {'GFLOP/audio-s':>13} |"
        print_head(head)
        for stage, what, speed, how, flops in run_stages(args):
            fl = f"{flops / 1e9:13.2f}" if flops else f"{'-':>13}"
            print(f"| {stage:<16} | {(what + '; ' + how):<100} | {speed:9.2f} | {fl} |")
    load1 = os.getloadavg()
    print(f"\nload average at end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
