"""The stages part of ``train_speed.py``: the speed of the other corpus-sized offline stages
(teacher extraction, tokenization, synthesis, evaluation), the inputs of ``docs/scaling.md``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from _flops import step_flops
from _memory import TEXT_TOKENS_PER_SECOND
from _timing import best_time
from train_speed_tts import TEXT_VOCAB, model_config

SR = 16000
# parameters held at once: paper-size AR + NAR (372.8 M) and the paper codec (about 32 M)
STAGES_PEAK_PARAMS = 405e6


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


def run_stages(args) -> list[tuple[str, str, float, str]]:
    """(stage, what, audio seconds per second, how) for the offline stages, batch 1 unless said."""
    from transformers import BertConfig, BertModel, HubertConfig, HubertModel

    from dmtts.codec.model import DMCodec
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
        mcfg = model_config("paper")
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


