"""The transformer stack shared by the AR and NAR models (pre-norm, nanoGPT style).

* ``SinusoidalPositions``: fixed sin/cos positions with a learned scale (VALL-E), computed on the
  fly from integer positions so any length and any per-sample offset works.
* ``Block``: pre-norm self-attention (fused qkv projection, ``F.scaled_dot_product_attention``)
  + GELU MLP. With ``adaptive=True`` both norms are adaptive layer norms whose scale and shift
  come from a conditioning vector (the NAR stage embedding).
* ``KVCache``: preallocated keys/values of every layer for incremental decoding; a decoding step
  writes one slot per layer and attends over the filled prefix, never recomputing the past.

Attention masks are boolean, ``True`` = may attend, shape ``[B, 1, S_query, S_key]``.

Alignment aids and diagnostics (``dmtts.tts.align``) need more than SDPA gives: an additive bias
on the logits of some heads (the beta-binomial prior) and the attention itself (alignment
losses, attention maps). ``Transformer.forward`` takes ``attn_bias`` (``{layer: [B, H, S, S]}``,
added to the logits) and ``attn_out`` (a dict that receives ``{layer: AttentionRecord}`` for the
layers in ``attn_layers``). Those layers compute attention explicitly; every other layer, and
every layer at inference, keeps the fused SDPA kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear(nn.Linear):
    """``nn.Linear`` that also runs with weights stored in lower precision than its input.

    Weight-only fp16/bf16 (``set_linear_dtype``): a decoding step reads half the bytes while
    the activations, norms, attention and KV cache stay float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.dtype == w.dtype:
            return F.linear(x, w, self.bias)
        if x.numel() > 16 * x.shape[-1]:  # many rows (a prompt): upcast the weight, GEMM in x.dtype
            b = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, w.to(x.dtype), b)
        return F.linear(x.to(w.dtype), w, self.bias).to(x.dtype)  # one step: read half the bytes


def set_linear_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights of every ``Linear`` of ``model`` in ``dtype`` (inference only)."""
    for m in model.modules():
        if isinstance(m, Linear):
            m.to(dtype)
    return model


class SinusoidalPositions(nn.Module):
    """``alpha * [sin(p w), cos(p w)]`` for integer positions ``p``; ``alpha`` is learned, or
    fixed at ``fixed_alpha`` when that is > 0 (a buffer: the optimiser cannot shrink it while
    the embeddings it is added to grow)."""

    def __init__(self, d_model: int, fixed_alpha: float = 0.0):
        super().__init__()
        half = d_model // 2
        inv_freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if fixed_alpha > 0:
            self.register_buffer("alpha", torch.full((1,), float(fixed_alpha)))
        else:
            self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``positions``: integer tensor ``[...]`` -> ``[..., d_model]``."""
        angles = positions.to(self.inv_freq.dtype).unsqueeze(-1) * self.inv_freq
        return self.alpha * torch.cat([angles.sin(), angles.cos()], dim=-1)


ADALN_INIT_STD = 0.02


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are predicted from a conditioning vector (per sample)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.proj = Linear(d_model, 2 * d_model)
        # Close to a plain LayerNorm, but not exactly: with a zero weight the conditioning
        # (stage embedding) gets no gradient, and ScaledAdam, whose step is proportional to the
        # parameter's RMS, barely moves a zero tensor. A small weight lets both learn at once.
        nn.init.normal_(self.proj.weight, std=ADALN_INIT_STD)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(cond).unsqueeze(1).chunk(2, dim=-1)  # cond [B, D] -> [B, 1, D]
        return self.norm(x) * (1.0 + scale) + shift


@dataclass
class KVCache:
    """Preallocated keys and values ``[n_layers, B, n_heads, max_len, head_dim]``.

    ``length`` slots are filled; ``key_valid`` ``[B, max_len]`` marks slots that may be attended
    (padding slots of a batched prompt stay ``False`` forever).
    """

    k: torch.Tensor
    v: torch.Tensor
    key_valid: torch.Tensor
    length: int = 0

    @classmethod
    def allocate(cls, n_layers, batch, n_heads, max_len, head_dim, device, dtype) -> "KVCache":
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        return cls(
            k=torch.zeros(shape, device=device, dtype=dtype),
            v=torch.zeros(shape, device=device, dtype=dtype),
            key_valid=torch.zeros(batch, max_len, dtype=torch.bool, device=device),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


@dataclass
class AttentionRecord:
    """One layer's attention: ``scores`` (logits after mask and bias, ``-inf`` where masked) and
    ``probs`` (their softmax), both ``[B, H, S_query, S_key]``."""

    scores: torch.Tensor
    probs: torch.Tensor


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.qkv = Linear(d_model, 3 * d_model)  # fused projection: one matmul per step
        self.out = Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x, mask=None, cache: KVCache | None = None, layer: int = 0, bias=None,
                record: bool = False):
        """``bias``: ``[B, H, S, S_key]`` added to the logits; ``record``: also return the
        :class:`AttentionRecord` (both force the explicit path instead of SDPA)."""
        B, S, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, S, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each [B, H, S, Dh]
        if cache is not None:  # write this chunk into the cache, attend over the filled prefix
            start, end = cache.length, cache.length + S
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
        dropout = self.dropout if self.training else 0.0
        rec = None
        if bias is None and not record:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            if bias is not None:
                scores = scores + bias.to(scores.dtype)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(-1)
            rec = AttentionRecord(scores, probs) if record else None
            y = F.dropout(probs, dropout, self.training) @ v
        y = self.out(y.transpose(1, 2).reshape(B, S, D))
        return (y, rec) if record else y


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float, adaptive: bool = False):
        super().__init__()
        self.adaptive = adaptive
        norm = AdaptiveLayerNorm if adaptive else nn.LayerNorm
        self.norm1, self.norm2 = norm(d_model), norm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.mlp = nn.Sequential(Linear(d_model, ffn_dim), nn.GELU(), Linear(ffn_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def _norm(self, norm, x, cond):
        return norm(x, cond) if self.adaptive else norm(x)

    def forward(self, x, mask=None, cond=None, cache: KVCache | None = None, layer: int = 0, bias=None,
                record: bool = False):
        a = self.attn(self._norm(self.norm1, x, cond), mask, cache, layer, bias, record)
        a, rec = a if record else (a, None)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self._norm(self.norm2, x, cond)))
        return (x, rec) if record else x


class Transformer(nn.Module):
    """A stack of blocks plus the final norm."""

    def __init__(self, n_layers, d_model, n_heads, ffn_dim, dropout, adaptive=False):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.layers = nn.ModuleList(
            Block(d_model, n_heads, ffn_dim, dropout, adaptive) for _ in range(n_layers)
        )
        self.adaptive = adaptive
        self.norm = AdaptiveLayerNorm(d_model) if adaptive else nn.LayerNorm(d_model)

    def forward(self, x, mask=None, cond=None, cache: KVCache | None = None,
                attn_bias: dict | None = None, attn_out: dict | None = None, attn_layers=None):
        """``attn_bias`` ``{layer: [B, H, S, S]}`` is added to those layers' attention logits;
        ``attn_out`` (a dict) receives an :class:`AttentionRecord` for every layer in
        ``attn_layers`` (all layers when ``None``)."""
        for i, block in enumerate(self.layers):
            bias = attn_bias.get(i) if attn_bias else None
            if attn_out is not None and (attn_layers is None or i in attn_layers):
                x, attn_out[i] = block(x, mask, cond, cache, i, bias, record=True)
            else:
                x = block(x, mask, cond, cache, i, bias)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x, cond) if self.adaptive else self.norm(x)

    def allocate_cache(self, batch: int, max_len: int, device, dtype) -> KVCache:
        return KVCache.allocate(len(self.layers), batch, self.n_heads, max_len, self.head_dim, device, dtype)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` bool, ``True`` at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
