#!/usr/bin/env python3
"""Diagnostic (docs/quality.md, "Where the TTS fails"): where do the AR's heads look while it
generates freely? For the first six zero-shot pairs of the demo's quality scale, prints per
layer and head the attention mass on the text and the most attended text position at 0, 25,
50, 75 and 100 % of the generated frames. Run from the repository root with the quality data
made (`recipes/demo/run.sh --scale quality --stop-stage 1`):

    python local/ar_attention_trace.py
"""
import numpy as np
import torch
from lhotse import load_manifest

from dmtts.tts.synthesize import Synthesizer, SynthesisItem, prepare_prompt, parse_asr_arg, transcribe_prompt
from dmtts.data.subsets import load_prompt_audio
from dmtts.tts import transformer as T

root = "recipes/demo"
synth = Synthesizer(f"{root}/pretrained/ar", f"{root}/pretrained/nar", f"{root}/pretrained/codec", top_k=50)
pairs = load_manifest(f"{root}/quality/data/cuts/demo_tts_eval_pairs.jsonl.gz")
LAYERS = range(synth.ar.cfg.n_layers)
rec = {}
orig = T.SelfAttention.forward
def patched(self, x, mask=None, cache=None, layer=0, bias=None, record=False):
    y, r = orig(self, x, mask, cache, layer, bias, record=True)
    rec.setdefault(layer, []).append(r.probs[:, :, -1:].detach().clone() if cache is not None else r.probs.detach().clone())
    return (y, r) if record else y
T.SelfAttention.forward = patched

torch.manual_seed(0)
asr = parse_asr_arg("faster-whisper")
for c in list(pairs)[:6]:
    prompt = prepare_prompt(load_prompt_audio(c, synth.sample_rate), synth.sample_rate, 3.0)
    item = SynthesisItem(c.custom["target_text"], prompt, c.custom.get("prompt_text") or transcribe_prompt(asr, prompt, c.id), c.id)
    print(item.prompt_text, "|", item.text)
    text, text_lens, codes, prompt_lens, max_new, min_new, expected = synth.prepare([item])
    L = text.shape[1]
    n_prompt_sym = len(synth.text.text_symbols(item.prompt_text))
    rec.clear()
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        out = synth.ar.generate(text, text_lens, codes[..., 0], prompt_lens, max_new, min_new, top_k=50, generator=gen)[0]
    n = len(out)
    # per layer: steps after the prefill ([1, H, 1, S]) -> text keys only
    print(f"\n{c.id}: text {L} symbols (prompt part ~{n_prompt_sym + 1}), generated {n} frames, expected {expected[0]}")
    for layer in LAYERS:
        steps = [r[0, :, 0, :L] for r in rec[layer][1:]]  # [H, L] per generated frame after the first
        if not steps:
            continue
        att = torch.stack(steps, 1)  # [H, frames, L]
        line = []
        for h in range(att.shape[0]):
            pos = att[h].argmax(-1).numpy()
            mass = att[h].sum(-1).mean().item()
            q = [int(pos[int(f * (len(pos) - 1))]) for f in (0, 0.25, 0.5, 0.75, 1.0)]
            line.append(f"H{h} mass {mass:.2f} argmax@0/25/50/75/100% {q}")
        print(f"  L{layer}: " + " | ".join(line))
