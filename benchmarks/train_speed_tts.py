"""The TTS part of ``train_speed.py``: one ScaledAdam optimiser step (forward, backward,
``optimizer.step``) of the AR and NAR models, eager and optionally under ``torch.compile``.

See ``train_speed.py`` for what is measured and how.
"""

from __future__ import annotations

import time

import torch

from _flops import step_flops
from _memory import TEXT_TOKENS_PER_SECOND
from _timing import interleaved_best

TEXT_VOCAB = 100


def model_config(size: str):
    """The ``size`` preset with this benchmark's text vocabulary."""
    from dmtts.tts.config import PRESETS

    mcfg = PRESETS[size]
    return type(mcfg)(**{**mcfg.__dict__, "text_vocab_size": TEXT_VOCAB})


def parameter_counts(size: str) -> dict[str, int]:
    """``{"ar": n, "nar": n}`` at ``size``, counted on the meta device (nothing allocated)."""
    from dmtts.tts.model import build_model

    with torch.device("meta"):
        return {kind: sum(p.numel() for p in build_model(kind, model_config(size)).parameters())
                for kind in ("ar", "nar")}


def tts_batch(kind: str, batch: int, seconds: float, n_q: int, codebook: int):
    g = torch.Generator().manual_seed(0)
    T = int(seconds * 50)
    L = int(seconds * TEXT_TOKENS_PER_SECOND)
    b = {"text": torch.randint(1, TEXT_VOCAB, (batch, L), generator=g),
         "text_lens": torch.full((batch,), L), "codes": torch.randint(0, codebook, (batch, T, n_q), generator=g),
         "code_lens": torch.full((batch,), T)}
    return b


def build_tts_step(kind: str, args, compiled: bool):
    from dmtts.tts.config import TTSDataConfig, TTSOptimConfig
    from dmtts.tts.model import build_model
    from dmtts.tts.train import build_optimizer, compute_loss

    mcfg = model_config(args.tts_size)
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


