#!/usr/bin/env python3
"""Diagnostic prototype (docs/quality.md, "Where the TTS fails"): alignment-guided AR decoding.

While the AR generates, the attention of layer 1, heads 0-1 (the heads the beta-binomial prior
trained, whose mass on the text is 0.7-0.98 in free running) is confined to a window
[p - BACK, p + AHEAD] of text positions around the furthest position p they have reached
(monotonic), ``<eos>`` is forbidden until p is within END_MARGIN symbols of the end of the text,
and forced once p has stayed there for END_FRAMES frames. It patches the model classes, then
runs the `dmtts` command line unchanged:

    GUIDE=on python local/ar_guided_decoding.py synthesize --ar ... --nar ... --codec ... --pairs ...

GUIDE=off runs the stock decoder through the same path. On the shipped models it did not make
the speech intelligible (WER 109 / 103 / 96 % against 100 / 115 / 98 % unguided, by sampling
setting), so it stays a diagnostic, not a synthesis option.
"""
import os
import sys

import torch

from dmtts.tts import transformer as T
from dmtts.tts import model as M

LAYER, HEADS = 1, [0, 1]
BACK, AHEAD = int(os.environ.get("BACK", 1)), int(os.environ.get("AHEAD", 3))
END_MARGIN = int(os.environ.get("END_MARGIN", 3))
END_FRAMES = int(os.environ.get("END_FRAMES", 15))
state = {}

orig_attn = T.SelfAttention.forward
def attn(self, x, mask=None, cache=None, layer=0, bias=None, record=False):
    g = state.get("on")
    if not g or layer != LAYER or cache is None or x.shape[1] != 1:
        return orig_attn(self, x, mask, cache, layer, bias, record)
    B, S, D = x.shape
    H = self.n_heads
    q, k, v = self.qkv(x).view(B, S, 3, H, D // H).permute(2, 0, 3, 1, 4)
    start, end = cache.length, cache.length + S
    cache.k[layer, :, :, start:end] = k
    cache.v[layer, :, :, start:end] = v
    k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # [B, H, 1, S_kv]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    L = state["L"]
    text_lens = state["text_lens"]
    keys = torch.arange(L, device=x.device)
    p = state["p"]
    if p is not None:
        lo, hi = (p - BACK).clamp(min=0), p + AHEAD
        outside = (keys[None] < lo[:, None]) | (keys[None] > hi[:, None]) | (keys[None] >= text_lens[:, None])
        sub = scores[:, HEADS, :, :L]
        sub = sub.masked_fill(outside[:, None, None, :], float("-inf"))
        scores[:, HEADS, :, :L] = sub
    probs = scores.softmax(-1)
    text_att = probs[:, HEADS, 0, :L].mean(1)  # [B, L]
    pos = text_att.argmax(-1)
    state["p"] = pos if p is None else torch.maximum(pos, p)
    y = probs @ v
    return self.out(y.transpose(1, 2).reshape(B, S, D))
T.SelfAttention.forward = attn

class _Wrap(torch.nn.Module):
    def __init__(self, inner, fn):
        super().__init__()
        self.inner, self.fn = inner, fn

    def forward(self, h):
        return self.fn(h)


orig_gen = M.ARModel.generate_steps
def gen_steps(self, text, text_lens, *a, **kw):
    state.clear()
    state.update(on=os.environ.get("GUIDE", "on") == "on", L=text.shape[1], text_lens=text_lens, p=None,
                 at_end=torch.zeros_like(text_lens))
    head = self.head
    eos = self.eos_id
    def guided_head(h):
        logits = head(h)
        if state["on"] and state["p"] is not None and logits.dim() == 2:
            p = state["p"]
            not_yet = p < text_lens - END_MARGIN
            logits[:, eos] = torch.where(not_yet, float("-inf"), logits[:, eos])
            state["at_end"] = torch.where(not_yet, torch.zeros_like(p), state["at_end"] + 1)
            force = state["at_end"] > END_FRAMES
            if bool(force.any()):
                logits[force] = float("-inf")
                logits[force, eos] = 0.0
        return logits
    self.head = _Wrap(head, guided_head)
    try:
        yield from orig_gen(self, text, text_lens, *a, **kw)
    finally:
        self.head = head
M.ARModel.generate_steps = gen_steps

if __name__ == "__main__":
    from dmtts.cli import main
    sys.exit(main(sys.argv[1:]))
