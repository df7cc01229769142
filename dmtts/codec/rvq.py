"""Residual vector quantizer with EMA codebooks (DESIGN §5, paper appendix E).

* Euclidean nearest neighbour; codebooks are buffers updated by an exponential moving average
  (decay 0.99) of the assigned vectors, with Laplace smoothing of the cluster sizes.
* k-means initialisation on the first training batch.
* Dead-code replacement: an entry is dead when its EMA usage falls below
  ``threshold_ema_dead_code`` times the *mean* EMA usage (the usage every entry would have if the
  frames of a step were spread uniformly, N / K). The threshold is relative because an absolute
  one (EnCodec's 2.0) declares most codes dead every step whenever a step has fewer than 2 frames
  per code (demo: 200 frames / 128 codes; the paper's 900 frames / 1024 codes per GPU), and the
  codebook then never holds stable meanings. With decay 0.99 and the default 0.1, an entry that
  stops being chosen is replaced after about 230 steps, i.e. on usage accumulated over many
  steps. Dead entries are re-drawn from the current batch's residuals (their EMA statistics are
  reset consistently, so the replacement survives the next EMA update).
* Codebook health: ``RVQOutput.replaced`` holds the entries replaced per level this step;
  :func:`codebook_health` adds the codes used and the perplexity of each level's code histogram
  (the trainer computes it on logging steps only).
* Quantisation uses a *detached* residual (``r_{k+1} = r_k - q_k.detach()``) and one
  straight-through estimator on the sum (the EnCodec/AudioCraft fix): the decoder input is
  ``x + (sum_k q_k - x).detach()``. Each level's output returned for distillation is
  ``r_k + (q_k - r_k).detach()`` so that a loss on it reaches the encoder.
* Commitment loss: ``sum_k mean((r_k - q_k.detach())^2)`` (paper eq. 9, summed over levels).
  Every residual ``r_k = x - sum_{j<k} q_j`` keeps its gradient to the encoder, so every level's
  commitment (and distillation) term reaches it. ``residual_gradient = False`` (the public
  SpeechTokenizer code, ``loss.commit_residual_gradient: false``): ``r_{k+1}`` is detached, as
  the public ``r_k - (r_k + (q_k - r_k).detach())`` is in effect, so only level 1's terms reach
  the encoder; values and codes are the same either way.
* DDP: the k-means result and the replacement vectors are broadcast from rank 0, and the EMA
  statistics (counts and sums) are all-reduced, so every rank holds identical codebooks.
* ``n_q`` truncation: encode/decode/forward may use only the first ``n_q`` levels.
* Precision: the quantizer always runs in fp32, also inside a bf16 ``torch.autocast`` region
  (autocast is switched off and the latents are cast up). Under autocast the distance ``addmm``
  would otherwise run in bf16, whose 8-bit mantissa changes the nearest entry for 3-6 % of the
  frames per level: training would then learn from other codes than inference produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dmtts.train.distributed import all_reduce_sum, broadcast
from dmtts.utils import fp32_region


def _sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd k-means; returns ``(centroids[K, D], cluster_sizes[K])``."""
    means = _sample_vectors(samples, num_clusters)
    bins = torch.zeros(num_clusters, device=samples.device)
    for _ in range(num_iters):
        dists = torch.cdist(samples, means)
        buckets = dists.argmin(dim=-1)
        bins = torch.bincount(buckets, minlength=num_clusters).to(samples.dtype)
        new_means = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = new_means / bins.clamp(min=1)[:, None]
        means = torch.where((bins == 0)[:, None], means, new_means)
    return means, bins


class EuclideanCodebook(nn.Module):
    def __init__(self, dim: int, codebook_size: int, decay: float = 0.99, epsilon: float = 1e-5,
                 kmeans_init: bool = True, kmeans_iters: int = 10, threshold_ema_dead_code: float = 0.1):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.epsilon = decay, epsilon
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        embed = torch.zeros(codebook_size, dim) if kmeans_init else nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([0.0 if kmeans_init else 1.0]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size) if kmeans_init else torch.ones(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    # -- training-time updates (all run without autograd) --------------------------------------
    @torch.no_grad()
    def init_embed_(self, data: torch.Tensor) -> None:
        embed, sizes = kmeans(data.float(), self.codebook_size, self.kmeans_iters)
        broadcast(embed)
        broadcast(sizes)
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed * sizes.clamp(min=1)[:, None])
        self.cluster_size.copy_(sizes)
        self.inited.fill_(1.0)

    @torch.no_grad()
    def ema_update_(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.codebook_size).to(x.dtype)  # [N, K]
        counts = onehot.sum(0)
        sums = onehot.t() @ x  # [K, D]
        all_reduce_sum(counts)
        all_reduce_sum(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    @torch.no_grad()
    def expire_codes_(self, x: torch.Tensor) -> int:
        """Replace entries whose EMA usage is under ``threshold_ema_dead_code`` times the mean
        usage N / K by batch vectors.

        The replacement's EMA usage restarts at the mean usage, so a fresh entry gets about as
        many steps to win frames as it takes an unused entry to decay to the threshold.
        Returns how many entries were replaced.
        """
        if self.threshold_ema_dead_code <= 0:
            return 0
        mean_usage = float(self.cluster_size.sum()) / self.codebook_size
        dead = self.cluster_size < self.threshold_ema_dead_code * mean_usage  # identical on every rank
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        new = _sample_vectors(x, n_dead).contiguous()
        broadcast(new)
        self.embed[dead] = new
        self.cluster_size[dead] = mean_usage
        self.embed_avg[dead] = new * mean_usage
        return n_dead

    # -- quantisation ---------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest codebook entries of ``x[N, D]`` -> ``codes[N]``.

        argmin_k ||x - e_k||^2 = argmin_k (||e_k||^2 - 2 x.e_k): the ||x||^2 term is the same
        for every k and is skipped; one fused ``addmm`` does the rest.
        """
        embed = self.embed.to(x.dtype)
        dist = torch.addmm(embed.pow(2).sum(1)[None], x, embed.t(), alpha=-2.0)
        return dist.argmin(dim=-1)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)


@dataclass
class RVQOutput:
    quantized: torch.Tensor  # [B, D, T] decoder input (single straight-through on the sum)
    codes: torch.Tensor  # [B, n_q, T] int64
    levels: list[torch.Tensor]  # per level [B, D, T], straight-through w.r.t. its residual
    commit_loss: torch.Tensor  # scalar
    dead_codes: int = 0
    replaced: list[int] = field(default_factory=list)  # training only: entries replaced per level


def code_statistics(codes: torch.Tensor, codebook_size: int) -> tuple[int, float]:
    """(distinct codes used, perplexity of the code histogram) of ``codes[N]``.

    The perplexity is exp(entropy) of the empirical distribution: K for a uniform use of K codes,
    1 for a single code.
    """
    counts = torch.bincount(codes.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return int((counts > 0).sum()), float(torch.exp(entropy))


def codebook_health(codes: torch.Tensor, replaced: list[int], codebook_size: int) -> dict[str, float]:
    """Per level k: ``used_lk``, ``perplexity_lk`` of ``codes[B, n_q, T]`` and ``replaced_lk``."""
    out: dict[str, float] = {}
    for k in range(codes.shape[1]):
        used, perplexity = code_statistics(codes[:, k], codebook_size)
        out[f"used_l{k + 1}"] = float(used)
        out[f"perplexity_l{k + 1}"] = perplexity
        if k < len(replaced):
            out[f"replaced_l{k + 1}"] = float(replaced[k])
    return out


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, dim: int = 1024, n_q: int = 8, codebook_size: int = 1024, decay: float = 0.99,
                 epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 0.1):
        super().__init__()
        self.n_q, self.dim, self.codebook_size = n_q, dim, codebook_size
        self.residual_gradient = True  # see the module docstring; set by the trainer from the config
        self.layers = nn.ModuleList(
            EuclideanCodebook(dim, codebook_size, decay, epsilon, kmeans_init, kmeans_iters, threshold_ema_dead_code)
            for _ in range(n_q)
        )

    def _check_nq(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else int(n_q)
        if not 1 <= n_q <= self.n_q:
            from dmtts.errors import DmttsError

            raise DmttsError(f"n_q={n_q} is out of range: this codec has {self.n_q} RVQ levels (use 1..{self.n_q})")
        return n_q

    def forward(self, x: torch.Tensor, n_q: int | None = None, decoder_levels: int | None = None) -> RVQOutput:
        """Quantise latents ``x[B, D, T]``; updates codebooks when ``self.training``.

        ``decoder_levels`` (quantizer dropout): ``quantized`` is the sum of only the first that
        many levels, while codes, levels, commitment and codebook updates cover all ``n_q``.
        Runs in fp32 whatever the autocast state; the outputs are fp32 (gradients reach ``x`` in
        its own dtype through the cast)."""
        n_q = self._check_nq(n_q)
        if decoder_levels is not None and not 1 <= decoder_levels <= n_q:
            from dmtts.errors import DmttsError

            raise DmttsError(f"decoder_levels={decoder_levels} is out of range: use 1..{n_q}")
        with fp32_region(x):
            return self._forward_fp32(x.float(), n_q, decoder_levels or n_q)

    def _forward_fp32(self, x: torch.Tensor, n_q: int, decoder_levels: int) -> RVQOutput:
        B, D, T = x.shape
        residual = x.transpose(1, 2).reshape(-1, D)  # [N, D], keeps the graph to the encoder
        flat_x = residual
        quantized_sum = torch.zeros_like(residual)
        codes, levels = [], []
        commit = x.new_zeros(())
        replaced: list[int] = []
        for layer in self.layers[:n_q]:
            if self.training and not bool(layer.inited.item()):
                layer.init_embed_(residual.detach())
            r_det = residual.detach()
            idx = layer.quantize(r_det)
            q = layer.dequantize(idx).to(residual.dtype)  # codebook vectors (no graph)
            if self.training:
                layer.ema_update_(r_det.float(), idx)
            commit = commit + F.mse_loss(residual, q.detach())
            levels.append((residual + (q - residual).detach()).reshape(B, T, D).transpose(1, 2))
            if len(codes) < decoder_levels:
                quantized_sum = quantized_sum + q
            codes.append(idx.reshape(B, T))
            residual = residual - q.detach()
            if not self.residual_gradient:
                residual = residual.detach()
            if self.training:
                replaced.append(layer.expire_codes_(r_det.float()))
        quantized = flat_x + (quantized_sum - flat_x).detach()
        return RVQOutput(
            quantized=quantized.reshape(B, T, D).transpose(1, 2),
            codes=torch.stack(codes, dim=1),
            levels=levels,
            commit_loss=commit,
            dead_codes=sum(replaced),
            replaced=replaced,
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """``x[B, D, T]`` -> ``codes[B, n_q, T]`` (no codebook updates)."""
        n_q = self._check_nq(n_q)
        B, D, T = x.shape
        with fp32_region(x):
            residual = x.float().transpose(1, 2).reshape(-1, D)
            codes = []
            for layer in self.layers[:n_q]:
                idx = layer.quantize(residual)
                codes.append(idx.reshape(B, T))
                residual = residual - layer.dequantize(idx)
        return torch.stack(codes, dim=1)

    def decode_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs[B, K, T, codebook_size]`` (K <= n_q; a distribution over each level's codes)
        -> the expected latent ``[B, D, T]``: the sum over levels of the probability-weighted
        codebook vectors. One-hot ``probs`` give :meth:`decode` of their codes; an uncertain level
        contributes its mean vector instead of one guessed entry (the mean-squared-error
        estimate of the latent, by linearity of the residual sum)."""
        if probs.dim() != 4 or probs.shape[1] > self.n_q or probs.shape[-1] != self.codebook_size:
            from dmtts.errors import DmttsError

            raise DmttsError(f"probs must have shape [B, K<= {self.n_q}, T, {self.codebook_size}], got {tuple(probs.shape)}")
        out = None
        for k in range(probs.shape[1]):
            embed = self.layers[k].embed
            q = probs[:, k].to(embed.dtype) @ embed  # [B, T, D]
            out = q if out is None else out + q
        return out.transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes[B, K, T]`` (K <= n_q) -> quantized latents ``[B, D, T]``."""
        if codes.dim() != 3 or codes.shape[1] > self.n_q:
            from dmtts.errors import DmttsError

            raise DmttsError(f"codes must have shape [B, K<= {self.n_q}, T], got {tuple(codes.shape)}")
        out = None
        for k in range(codes.shape[1]):
            idx = codes[:, k].long()
            if int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size:
                from dmtts.errors import DmttsError

                raise DmttsError(f"code values must be in [0, {self.codebook_size}); level {k + 1} has "
                                 f"{int(idx.min())}..{int(idx.max())}")
            q = self.layers[k].dequantize(idx)  # [B, T, D]
            out = q if out is None else out + q
        return out.transpose(1, 2)


def quantizer_dropout_levels(p: float, n_q: int, seed: int, step: int) -> int | None:
    """Quantizer dropout (``train.quantizer_dropout``): with probability ``p`` the number of
    levels the decoder gets at ``step``, uniform in 1..n_q-1; else None (all of them). A function
    of the seed and the step only, so every rank and a resumed run draw the same."""
    if p <= 0:
        return None
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if torch.rand((), generator=g).item() >= p:
        return None
    return int(torch.randint(1, n_q, (), generator=g).item())
