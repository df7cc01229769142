"""Alignment aids for the AR model: teach its audio->text attention to be monotonic early.

A decoder-only codec LM has to discover by itself that audio frame ``t`` should read the phoneme
near ``t/T`` of the text; plain VALL-E needs thousands of GPU-hours of audio to do so. Three
published aids act on a few designated heads (``align.layers`` x ``align.heads``) of the
audio-query x text-key block of the attention, during training only:

* **beta-binomial prior** (RAD-TTS; T5-TTS, Neekhara et al. 2024): ``w * log P[t, j]`` is added to
  the attention logits, ``P[t, j] = BetaBinom(j; N-1, omega*t, omega*(T+1-t))`` for audio slot
  ``t = 1..T`` and text key ``j = 0..N-1``. ``w`` is 1 until ``prior_start_step``, then falls
  linearly to 0 at ``prior_end_step``; from then on training is plain VALL-E, as inference is.
* **forward-sum (CTC) loss** (RAD-TTS, T5-TTS): the heads' logits over the text keys plus a blank
  with a fixed logit, log-softmax, and ``nn.CTCLoss`` with the text positions ``1..N`` in order
  as the target: the likelihood of all monotonic paths through the text.
* **guided attention loss** (DC-TTS, Tachibana et al. 2018): attention mass at ``(t, j)`` costs
  ``1 - exp(-(j/N - t/T)^2 / (2 sigma^2))``.

The AR's training sequence has no prompt split, so the prior spans the whole text and the whole
audio of an utterance. Text ``N`` counts every text slot (``<bos>``/``<eos>`` included); audio
``T`` counts every audio slot (``<bos>`` + codes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dmtts.tts.transformer import AttentionRecord


def prior_weight(step: int, start: int, end: int) -> float:
    """Weight of the prior at optimiser ``step``: 1 up to ``start``, linear to 0 at ``end``."""
    if step <= start:
        return 1.0
    if step >= end:
        return 0.0
    return 1.0 - (step - start) / (end - start)


def beta_binomial_log_prior(text_lens: torch.Tensor, audio_lens: torch.Tensor, L: int, A: int,
                            omega: float = 1.0) -> torch.Tensor:
    """``log P`` ``[B, A, L]`` for audio slot ``t`` (row) and text key ``j`` (column); 0 outside
    each sample's ``audio_lens[b] x text_lens[b]`` block (those slots are masked anyway)."""
    dev = text_lens.device
    n = (text_lens - 1).clamp(min=0).double()[:, None, None]  # N - 1
    T = audio_lens.double()[:, None, None]
    t = torch.arange(1, A + 1, device=dev, dtype=torch.float64)[None, :, None]
    j = torch.arange(L, device=dev, dtype=torch.float64)[None, None, :]
    a = omega * t
    b = omega * (T + 1 - t).clamp(min=1e-3)
    k = torch.minimum(j, n)
    log_comb = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    log_beta = lambda x, y: torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)  # noqa: E731
    logp = log_comb + log_beta(k + a, n - k + b) - log_beta(a, b)
    valid = (t <= T) & (j <= n)
    return torch.where(valid, logp, torch.zeros_like(logp)).float()


def prior_attention_bias(text_lens, audio_lens, L: int, A: int, n_heads: int, layers, heads, weight: float,
                         omega: float = 1.0) -> dict:
    """``{layer: bias [B, H, L+A, L+A]}`` for :meth:`Transformer.forward`: ``weight * log P`` on
    the audio-query x text-key block of the designated heads, zero elsewhere."""
    B = text_lens.shape[0]
    logp = beta_binomial_log_prior(text_lens, audio_lens, L, A, omega) * weight
    bias = torch.zeros(B, n_heads, L + A, L + A, device=text_lens.device)
    for h in heads:
        bias[:, h, L:, :L] = logp
    return {layer: bias for layer in layers}


def _text_block(records: dict, layers, heads, L: int):
    """The designated heads' audio x text block of the records: ``(scores, probs)`` each
    ``[B, n_layers * n_heads, A, L]``."""
    scores = torch.cat([records[layer].scores[:, list(heads), L:, :L] for layer in layers], dim=1)
    probs = torch.cat([records[layer].probs[:, list(heads), L:, :L] for layer in layers], dim=1)
    return scores, probs


def ctc_alignment_loss(records: dict[int, AttentionRecord], layers, heads, text_lens, audio_lens, L: int,
                       blank_logit: float = -1.0) -> torch.Tensor:
    """Forward-sum loss of the designated heads (mean over heads and samples, per text token)."""
    scores, _ = _text_block(records, layers, heads, L)
    B, G, A, _ = scores.shape
    scores = scores.float().masked_fill(~torch.isfinite(scores), -1e4)
    blank = torch.full((B, G, A, 1), blank_logit, device=scores.device)
    logp = torch.cat([blank, scores], dim=-1).log_softmax(-1)  # class 0 = blank, 1..L = text slot
    logp = logp.reshape(B * G, A, L + 1).transpose(0, 1)  # [A, B*G, L+1] as CTCLoss wants
    targets = torch.arange(1, L + 1, device=scores.device).expand(B * G, L)
    in_lens = audio_lens.repeat_interleave(G)
    tgt_lens = text_lens.repeat_interleave(G)
    return F.ctc_loss(logp, targets, in_lens, tgt_lens, blank=0, reduction="mean", zero_infinity=True)


def guided_attention_loss(records: dict[int, AttentionRecord], layers, heads, text_lens, audio_lens, L: int,
                          sigma: float = 0.4) -> torch.Tensor:
    """Mean off-diagonal attention mass of the designated heads (DC-TTS guided attention)."""
    _, probs = _text_block(records, layers, heads, L)
    dev = probs.device
    t = torch.arange(probs.shape[2], device=dev)[None, :, None] / audio_lens[:, None, None].float()
    j = torch.arange(L, device=dev)[None, None, :] / text_lens[:, None, None].float()
    w = 1.0 - torch.exp(-((j - t) ** 2) / (2 * sigma**2))
    valid = (torch.arange(probs.shape[2], device=dev)[None, :, None] < audio_lens[:, None, None]) & (
        torch.arange(L, device=dev)[None, None, :] < text_lens[:, None, None])
    w = (w * valid)[:, None]  # [B, 1, A, L]
    return (probs.float() * w).sum() / (valid.sum() * probs.shape[1]).clamp(min=1)


def ar_loss_with_aids(model, text, text_lens, codes, code_lens, acfg, step: int):
    """The AR's teacher-forced loss plus the aids of ``acfg`` (a ``TTSAlignConfig``) at ``step``.

    ``model`` may be DDP-wrapped. ``stats`` gains ``prior_w`` and, when on, ``ctc`` / ``guided``.
    """
    core = getattr(model, "module", model)
    L, A = text.shape[1], codes.shape[1] + 1
    audio_lens = code_lens + 1  # <bos> + codes
    w = prior_weight(step, acfg.prior_start_step, acfg.prior_end_step) if acfg.prior else 0.0
    bias = None
    if w > 0:
        bias = prior_attention_bias(text_lens, audio_lens, L, A, core.cfg.n_heads, acfg.layers, acfg.heads, w,
                                    acfg.prior_omega)
    need = acfg.ctc_scale > 0 or acfg.guided_scale > 0
    loss, stats = model(text, text_lens, codes, code_lens, attn_bias=bias, attn_layers=acfg.layers if need else ())
    stats["prior_w"] = torch.tensor(w)
    records = stats.pop("attn", None)
    if acfg.ctc_scale > 0:
        ctc = ctc_alignment_loss(records, acfg.layers, acfg.heads, text_lens, audio_lens, L, acfg.ctc_blank_logit)
        loss = loss + acfg.ctc_scale * ctc
        stats["ctc"] = ctc.detach()
    if acfg.guided_scale > 0:
        guided = guided_attention_loss(records, acfg.layers, acfg.heads, text_lens, audio_lens, L, acfg.guided_sigma)
        loss = loss + acfg.guided_scale * guided
        stats["guided"] = guided.detach()
    return loss, stats
