"""DM-Codec-TTS: the AR and NAR codec language models (paper §3.4, VALL-E).

**AR** (``ARModel``): decoder-only transformer over ``[text tokens ; <bos> q1_1 .. q1_T]``.
Attention is bidirectional inside the text prefix (text never sees audio) and causal over the
audio part (audio sees all text and the audio before it). It predicts ``q1_1 .. q1_T, <eos>``
(RVQ level 1 + an end token). Text and audio get their own sinusoidal positions, both from 0.

**NAR** (``NARModel``): the same stack with stage-conditioned adaptive layer norm. For stage
``k`` (2..n_q) the audio input at each frame is the sum of the embeddings of levels ``< k``; the
acoustic prompt frames (a prefix of the sequence) carry the sum of all ``n_q`` levels. Attention
is bidirectional over text + audio. It predicts level ``k`` at the non-prompt frames; the loss
excludes the prompt and the padding.

Token conventions: codes are ``0 .. codebook_size-1``; AR ``<eos> = codebook_size`` and audio
``<bos> = codebook_size + 1``. Text ids come from the text front-end (pad = 0).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dmtts.tts.config import TTSModelConfig
from dmtts.tts.transformer import KVCache, Linear, SinusoidalPositions, Transformer, lengths_to_mask

IGNORE = -100


def ar_attention_mask(text_lens: torch.Tensor, L: int, audio_valid: torch.Tensor) -> torch.Tensor:
    """Mask ``[B, 1, L+A, L+A]`` (True = attend) for the AR sequence ``[text (L) ; audio (A)]``.

    ``audio_valid`` ``[B, A]`` marks real audio slots. Text queries see valid text keys (both
    directions); audio queries see valid text keys and valid audio keys at or before them.
    """
    B, A = audio_valid.shape
    dev = audio_valid.device
    text_valid = lengths_to_mask(text_lens, L)  # [B, L]
    key_valid = torch.cat([text_valid, audio_valid], dim=1)  # [B, L+A]
    S = L + A
    causal = torch.ones(A, A, dtype=torch.bool, device=dev).tril()
    allowed = torch.zeros(S, S, dtype=torch.bool, device=dev)
    allowed[:L, :L] = True  # text <-> text
    allowed[L:, :L] = True  # audio -> text
    allowed[L:, L:] = causal  # audio -> earlier audio
    return (allowed[None] & key_valid[:, None, :]).unsqueeze(1)


class ARModel(nn.Module):
    def __init__(self, cfg: TTSModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.eos_id = cfg.codebook_size
        self.bos_id = cfg.codebook_size + 1
        self.text_emb = nn.Embedding(cfg.text_vocab_size, d, padding_idx=0)
        self.audio_emb = nn.Embedding(cfg.codebook_size + 2, d)
        self.text_pos = SinusoidalPositions(d, fixed_alpha=cfg.text_pos_alpha)
        self.audio_pos = SinusoidalPositions(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.transformer = Transformer(cfg.n_layers, d, cfg.n_heads, cfg.ffn_dim, cfg.dropout)
        self.head = Linear(d, cfg.codebook_size + 1, bias=False)

    # -- embeddings -------------------------------------------------------------------------
    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(text.shape[1], device=text.device)
        return self.text_emb(text) + self.text_pos(pos)

    def embed_audio(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.audio_emb(tokens) + self.audio_pos(positions)

    # -- training ---------------------------------------------------------------------------
    def forward(self, text, text_lens, codes, code_lens, attn_bias: dict | None = None, attn_layers=()):
        """Teacher-forced loss. ``text [B, L]``, ``codes [B, T]`` (level 1), lengths ``[B]``.

        Returns ``(loss, stats)``: mean cross-entropy per predicted token and accuracy.
        ``attn_bias`` (``{layer: [B, H, L+T+1, L+T+1]}``) is added to the attention logits (the
        alignment prior, :mod:`dmtts.tts.align`); for the layers in ``attn_layers`` the attention
        is returned as ``stats["attn"]`` (``{layer: AttentionRecord}``).
        """
        B, L = text.shape
        T = codes.shape[1]
        bos = torch.full((B, 1), self.bos_id, dtype=codes.dtype, device=codes.device)
        audio_in = torch.cat([bos, codes], dim=1)  # [B, T+1]
        audio_valid = lengths_to_mask(code_lens + 1, T + 1)
        targets = torch.cat([codes, torch.full_like(bos, IGNORE)], dim=1).long()
        targets[torch.arange(B), code_lens] = self.eos_id
        targets = targets.masked_fill(~audio_valid, IGNORE)
        pos = torch.arange(T + 1, device=codes.device).expand(B, -1)
        x = torch.cat([self.embed_text(text), self.embed_audio(audio_in.long(), pos)], dim=1)
        mask = ar_attention_mask(text_lens, L, audio_valid)
        records: dict = {}
        h = self.transformer(self.drop(x), mask, attn_bias=attn_bias, attn_out=records if attn_layers else None,
                             attn_layers=set(attn_layers))
        logits = self.head(h[:, L:])
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE)
        with torch.no_grad():
            valid = targets != IGNORE
            acc = (logits.argmax(-1) == targets)[valid].float().mean()
        stats = {"loss": loss.detach(), "acc": acc, "frames": valid.sum()}
        if attn_layers:
            stats["attn"] = records
        return loss, stats

    # -- inference --------------------------------------------------------------------------
    def logits_full(self, text, text_lens, audio_in, audio_valid, audio_pos):
        """Logits of every audio slot recomputed from scratch (reference for the KV cache)."""
        L = text.shape[1]
        x = torch.cat([self.embed_text(text), self.embed_audio(audio_in, audio_pos)], dim=1)
        h = self.transformer(x, ar_attention_mask(text_lens, L, audio_valid))
        return self.head(h[:, L:])

    @torch.inference_mode()
    def generate(self, text: torch.Tensor, *args, **kwargs) -> list[torch.Tensor]:
        """Sample level-1 codes after the prompt. Returns one ``[T_b]`` tensor per sample.
        The arguments are those of :meth:`generate_steps`, which this drains."""
        tokens, done_before = [], None
        lengths = None
        for t, token, done in self.generate_steps(text, *args, **kwargs):
            if lengths is None:
                lengths = torch.full_like(token, -1)
                done_before = torch.zeros_like(done)
            lengths = torch.where(done & ~done_before, torch.full_like(lengths, t), lengths)
            done_before = done
            tokens.append(token)
        if not tokens:  # a cap of 0 frames
            return [torch.zeros(0, dtype=torch.long, device=text.device) for _ in range(text.shape[0])]
        out = torch.stack(tokens, dim=1)
        lengths = torch.where(lengths < 0, torch.full_like(lengths, len(tokens)), lengths)
        return [out[b, : lengths[b]] for b in range(out.shape[0])]

    @torch.inference_mode()
    def generate_steps(
        self,
        text: torch.Tensor,
        text_lens: torch.Tensor,
        prompt: torch.Tensor,
        prompt_lens: torch.Tensor,
        max_new_tokens: torch.Tensor | int,
        min_new_tokens: torch.Tensor | int = 0,
        top_k: int = 0,
        top_p: float = 1.0,
        temperature: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        ras_window: int = 0,
        ras_threshold: float = 0.1,
    ):
        """Sample level-1 codes after the prompt one frame at a time: yields ``(t, token [B],
        done [B])`` after each step (streaming synthesis consumes frames as they come). A row is
        done from the step of its ``<eos>`` (or its length cap) on; its token there and after is 0
        and is not part of its output.

        ``text [B, L]`` (prompt transcript + target text), ``prompt [B, P]`` level-1 codes of
        the acoustic prompt (padded, lengths ``prompt_lens``; may be 0). A sample stops at
        ``<eos>`` or after ``max_new_tokens`` frames; ``temperature <= 0`` or ``top_k == 1``
        is greedy. ``use_cache=False`` recomputes the whole sequence per step (for tests and
        the benchmark only). ``ras_window > 0`` turns on repetition-aware sampling
        (:func:`sample_token_ras`) over the last ``ras_window`` generated tokens.
        """
        B, L = text.shape
        dev = text.device
        P = prompt.shape[1]
        max_new = torch.as_tensor(max_new_tokens, device=dev).expand(B)
        min_new = torch.as_tensor(min_new_tokens, device=dev).expand(B)
        n_steps = int(max_new.max())
        # Audio slots: <bos>, prompt (padded to P), then generated tokens (slot 1+P+t).
        bos = torch.full((B, 1), self.bos_id, dtype=torch.long, device=dev)
        audio_in = torch.cat([bos, prompt.long()], dim=1)
        audio_valid = lengths_to_mask(prompt_lens + 1, P + 1)
        audio_pos = torch.arange(P + 1, device=dev).expand(B, -1)
        gen_pos = prompt_lens + 1  # audio position of the first generated token, per sample
        last_slot = prompt_lens  # slot whose output predicts the first generated token

        out = torch.zeros(B, n_steps, dtype=torch.long, device=dev)  # the history repetition-aware sampling reads
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        if use_cache:
            param = next(self.parameters())
            # without padding every filled slot is attendable: no mask (SDPA's fastest path)
            padded = bool((text_lens < L).any() or (prompt_lens < P).any())
            cache = self.transformer.allocate_cache(B, L + P + 1 + n_steps, dev, param.dtype)
            cache.key_valid[:, :L] = lengths_to_mask(text_lens, L)
            cache.key_valid[:, L : L + P + 1] = audio_valid
            x = torch.cat([self.embed_text(text), self.embed_audio(audio_in, audio_pos)], dim=1)
            mask = ar_attention_mask(text_lens, L, audio_valid)
            h = self.transformer(x.to(param.dtype), mask, cache=cache)
            logits = self.head(h[torch.arange(B), L + last_slot])
        else:
            logits = self.logits_full(text, text_lens, audio_in, audio_valid, audio_pos)
            logits = logits[torch.arange(B), last_slot]

        for t in range(n_steps):
            logits = logits.float()
            if t < int(min_new.max()):
                logits[:, self.eos_id] = torch.where(t < min_new, float("-inf"), logits[:, self.eos_id])
            if ras_window > 0:
                token = sample_token_ras(logits, out[:, max(0, t - ras_window) : t], ras_window, ras_threshold,
                                         top_k, top_p, temperature, generator)
            else:
                token = sample_token(logits, top_k, top_p, temperature, generator)
            hit_eos = (token == self.eos_id) | (t >= max_new)
            done = done | hit_eos
            token = token.masked_fill(done, 0)
            out[:, t] = token
            yield t, token, done
            if bool(done.all()) or t == n_steps - 1:
                break
            pos = gen_pos + t
            if use_cache:
                slot = cache.length
                cache.key_valid[:, slot] = True
                x = self.embed_audio(token[:, None], pos[:, None]).to(cache.k.dtype)
                # one query, keys = every filled slot that is valid (text, prompt, generated)
                step_mask = cache.key_valid[:, None, None, : slot + 1] if padded else None
                logits = self.head(self.transformer(x, step_mask, cache=cache)[:, -1])
            else:
                audio_in = torch.cat([audio_in, token[:, None]], dim=1)
                audio_valid = torch.cat([audio_valid, torch.ones_like(done)[:, None]], dim=1)
                audio_pos = torch.cat([audio_pos, pos[:, None]], dim=1)
                logits = self.logits_full(text, text_lens, audio_in, audio_valid, audio_pos)[:, -1]


def sample_token(logits, top_k=0, top_p=1.0, temperature=1.0, generator=None) -> torch.Tensor:
    """Sample one token per row of ``logits [B, V]`` with top-k, top-p (nucleus) and temperature."""
    if temperature <= 0 or top_k == 1:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_token_ras(logits, history, window=10, threshold=0.1, top_k=0, top_p=1.0, temperature=1.0,
                     generator=None) -> torch.Tensor:
    """Repetition-aware sampling (VALL-E 2, Chen et al. 2024, §3.3.1) of one token per row.

    A token is drawn with top-k / top-p (:func:`sample_token`). If that token already makes up
    more than ``threshold`` of the last ``window`` tokens of the row's ``history [B, <=window]``,
    the row is drawn again from the whole distribution (temperature only, no truncation): a
    nucleus that keeps proposing the same code is how decoding gets stuck in a loop, and the
    untruncated distribution lets it leave.
    """
    token = sample_token(logits, top_k, top_p, temperature, generator)
    if history.shape[1] == 0 or window <= 0:
        return token
    repeats = (history[:, -window:] == token[:, None]).sum(1).float()
    stuck = repeats / window > threshold
    if not bool(stuck.any()):
        return token
    resampled = sample_token(logits, 0, 1.0, temperature if temperature > 0 else 1.0, generator)
    return torch.where(stuck, resampled, token)


class NARModel(nn.Module):
    def __init__(self, cfg: TTSModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.n_stages = cfg.n_q - 1  # stage index s = k - 2 for level k = 2..n_q
        self.text_emb = nn.Embedding(cfg.text_vocab_size, d, padding_idx=0)
        self.audio_embs = nn.ModuleList(nn.Embedding(cfg.codebook_size, d) for _ in range(cfg.n_q))
        self.stage_emb = nn.Embedding(self.n_stages, d)
        self.text_pos = SinusoidalPositions(d)
        self.audio_pos = SinusoidalPositions(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.transformer = Transformer(cfg.n_layers, d, cfg.n_heads, cfg.ffn_dim, cfg.dropout, adaptive=True)
        self.heads = nn.Parameter(torch.randn(self.n_stages, cfg.codebook_size, d) * d**-0.5)

    def _logits(self, text, text_lens, codes, code_lens, prompt_lens, level, target_offset=0):
        """Logits ``[B, T, V]`` of ``level[b]`` (2..n_q) at every audio frame. ``target_offset``
        shifts the positions of the frames after the prompt (a window of a longer utterance)."""
        B, L = text.shape
        T = codes.shape[1]
        dev = codes.device
        frame = torch.arange(T, device=dev)
        in_prompt = frame[None, :] < prompt_lens[:, None]  # [B, T]
        x_audio = torch.zeros(B, T, self.cfg.d_model, device=dev)
        for j in range(self.cfg.n_q):  # level j+1 is known in the prompt, and below k elsewhere
            use = in_prompt | ((j + 1) < level)[:, None]
            x_audio = x_audio + self.audio_embs[j](codes[..., j].long()) * use[..., None]
        x_audio = x_audio + self.audio_pos(frame + torch.as_tensor(target_offset, device=dev).view(-1, 1) * ~in_prompt)
        text_x = self.text_emb(text) + self.text_pos(torch.arange(L, device=dev))
        x = torch.cat([text_x, x_audio.to(text_x.dtype)], dim=1).to(self.heads.dtype)
        key_valid = torch.cat([lengths_to_mask(text_lens, L), lengths_to_mask(code_lens, T)], dim=1)
        mask = key_valid[:, None, None, :]  # bidirectional; padded keys hidden
        stage = level - 2
        h = self.transformer(self.drop(x), mask, cond=self.stage_emb(stage))[:, L:]
        return torch.einsum("btd,bvd->btv", h, self.heads[stage].to(h.dtype))

    def forward(self, text, text_lens, codes, code_lens, prompt_lens, level):
        """Loss of predicting level ``level[b]`` of ``codes [B, T, n_q]`` outside the prompt."""
        logits = self._logits(text, text_lens, codes, code_lens, prompt_lens, level)
        T = codes.shape[1]
        frame = torch.arange(T, device=codes.device)[None, :]
        scored = (frame >= prompt_lens[:, None]) & (frame < code_lens[:, None])
        targets = codes.gather(2, (level - 1).view(-1, 1, 1).expand(-1, T, 1)).squeeze(2).long()
        targets = targets.masked_fill(~scored, IGNORE)
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE)
        with torch.no_grad():
            acc = (logits.argmax(-1) == targets)[scored].float().mean()
        return loss, {"loss": loss.detach(), "acc": acc, "frames": scored.sum()}

    @torch.inference_mode()
    def generate(self, text, text_lens, prompt_codes, prompt_lens, level1, level1_lens, target_offset=0,
                 return_probs: bool = False) -> list:
        """Greedy levels 2..n_q. ``prompt_codes [B, P, n_q]``, ``level1 [B, T]`` (AR output).

        Returns one ``[T_b, n_q]`` tensor per sample (the target frames only, prompt removed).
        ``level1`` may be a window of the AR output that starts ``target_offset`` frames after
        the prompt (streaming synthesis): its frames keep their positions in the utterance.
        ``return_probs``: ``(codes [T_b, n_q], probs [T_b, n_q, codebook_size])`` per sample
        instead, ``probs`` one-hot at level 1 and the model's distribution at the levels it
        predicts (each level still conditioned on the greedy codes below it), for
        ``DMCodec.decode_expected``.
        """
        B = text.shape[0]
        dev = text.device
        total = prompt_lens + level1_lens
        T = int(total.max())
        codes = torch.zeros(B, T, self.cfg.n_q, dtype=torch.long, device=dev)
        for b in range(B):  # sequence b = prompt_b (all levels) followed by target_b
            p, t = int(prompt_lens[b]), int(level1_lens[b])
            codes[b, :p] = prompt_codes[b, :p].long()
            codes[b, p : p + t, 0] = level1[b, :t].long()
        frame = torch.arange(T, device=dev)[None, :]
        target = (frame >= prompt_lens[:, None]) & (frame < total[:, None])
        probs = None
        if return_probs:
            probs = torch.zeros(B, T, self.cfg.n_q, self.cfg.codebook_size, device=dev)
            probs[..., 0, :] = F.one_hot(codes[..., 0], self.cfg.codebook_size).float()
        for k in range(2, self.cfg.n_q + 1):
            level = torch.full((B,), k, dtype=torch.long, device=dev)
            logits = self._logits(text, text_lens, codes, total, prompt_lens, level, target_offset)
            codes[..., k - 1] = torch.where(target, logits.argmax(-1), codes[..., k - 1])
            if probs is not None:
                probs[..., k - 1, :] = logits.float().softmax(-1)
        spans = [(int(prompt_lens[b]), int(total[b])) for b in range(B)]
        if probs is None:
            return [codes[b, lo:hi] for b, (lo, hi) in enumerate(spans)]
        return [(codes[b, lo:hi], probs[b, lo:hi]) for b, (lo, hi) in enumerate(spans)]


def build_model(kind: str, cfg: TTSModelConfig) -> nn.Module:
    if kind == "ar":
        return ARModel(cfg)
    if kind == "nar":
        return NARModel(cfg)
    raise ValueError(f"model kind must be 'ar' or 'nar', got {kind!r}")


__all__ = ["ARModel", "NARModel", "KVCache", "ar_attention_mask", "build_model", "sample_token", "sample_token_ras"]
