"""Does the AR *read*? Alignment diagnostics on a fixed dev batch, run at every validation.

A falling loss does not tell whether the AR uses the text: it can also learn the speaker's code
statistics and memorise. Two measures do:

* **alignment gap** (nats per frame): the teacher-forced cross-entropy with each sample's
  phonemes in reversed (or shuffled) order minus the cross-entropy with the right text. Only the
  real phonemes move; ``<bos>``, ``<eos>`` and padding stay in place, so the text length, the
  set of phonemes and the positions of the special symbols are unchanged and only their order
  differs. A model that reads the text in order pays for the wrong order (gap clearly > 0); a
  model that ignores the text, or only counts its phonemes, has a gap of ~0.
* **diagonality** per layer and head: the share of the audio->text attention (each valid audio
  query's row renormalised over the valid text keys) that lies within ``band`` text positions
  of the best monotonic path through that head's attention (a Viterbi path like Glow-TTS's
  monotonic alignment search: text index non-decreasing, from the first text slot to the last).
  A head that reads has a score near 1; uniform attention scores about ``(2 band + 1) / N``.

``AlignmentProbe`` holds the batch (the first ``n`` validation cuts) and measures a model;
``monotonic_path``, ``band_score`` and ``permute_inner`` are the pure, testable core.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


# -- pure core ------------------------------------------------------------------------------
def permute_inner(text: torch.Tensor, text_lens: torch.Tensor, perms: list) -> torch.Tensor:
    """``text [B, L]`` with sample ``b``'s real symbols (slots ``1 .. text_lens[b]-2``, between
    ``<bos>`` and ``<eos>``) reordered by ``perms[b]`` (a permutation of ``range(n_b)``)."""
    out = text.clone()
    for b, perm in enumerate(perms):
        n = int(text_lens[b]) - 2
        if n > 1:
            idx = torch.as_tensor(perm, dtype=torch.long, device=text.device)
            out[b, 1 : 1 + n] = text[b, 1 : 1 + n][idx]
    return out


def reverse_inner(text: torch.Tensor, text_lens: torch.Tensor) -> torch.Tensor:
    """Each sample's real symbols in reverse order; ``<bos>``/``<eos>``/padding in place."""
    return permute_inner(text, text_lens, [list(range(max(int(n) - 2, 0)))[::-1] for n in text_lens])


def shuffle_inner(text: torch.Tensor, text_lens: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each sample's real symbols in a random order drawn from ``seed`` (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    return permute_inner(text, text_lens, [torch.randperm(max(int(n) - 2, 0), generator=gen) for n in text_lens])


def monotonic_path(logp: np.ndarray, max_jump: int | None = None) -> np.ndarray:
    """Best monotonic path through ``logp [..., T, N]`` (log attention, audio rows x text columns).

    The path visits one text index per row, starts at 0 on row 0, ends at ``N-1`` on row
    ``T-1`` and advances by 0..``max_jump`` per row, maximising the sum of ``logp`` along it.
    ``max_jump`` defaults to 1 (Glow-TTS) or, when there are fewer rows than columns, to the
    smallest step that still reaches the last column. Ties stay on the same column.
    Returns the column per row, ``[..., T]`` int64.
    """
    logp = np.asarray(logp, dtype=np.float64)
    *batch, T, N = logp.shape
    if max_jump is None:
        max_jump = 1 if T >= N else math.ceil((N - 1) / max(T - 1, 1))
    if T == 1:
        return np.zeros((*batch, 1), dtype=np.int64)
    q = np.full((*batch, N), -np.inf)
    q[..., 0] = logp[..., 0, 0]
    back = np.zeros((*batch, T, N), dtype=np.int16)
    for t in range(1, T):
        cands = np.full((*batch, N, max_jump + 1), -np.inf)
        for k in range(max_jump + 1):  # arrive at column j from column j - k
            cands[..., k:, k] = q[..., : N - k]
        back[..., t, :] = cands.argmax(-1)  # first maximum: the smallest jump wins ties
        q = cands.max(-1) + logp[..., t, :]
    path = np.zeros((*batch, T), dtype=np.int64)
    path[..., T - 1] = N - 1
    for t in range(T - 1, 0, -1):
        step = np.take_along_axis(back[..., t, :], path[..., t, None], -1)[..., 0]
        path[..., t - 1] = path[..., t] - step
    return path


def band_score(attn: np.ndarray, path: np.ndarray, band: int = 2) -> np.ndarray:
    """Mean over rows of the attention mass within ``±band`` columns of ``path``.

    ``attn [..., T, N]`` (valid rows and columns only; each row is renormalised to sum to 1),
    ``path [..., T]``. Returns ``[...]`` in [0, 1].
    """
    attn = np.asarray(attn, dtype=np.float64)
    attn = attn / np.clip(attn.sum(-1, keepdims=True), 1e-12, None)
    cols = np.arange(attn.shape[-1])
    inside = np.abs(cols - np.asarray(path)[..., None]) <= band
    return (attn * inside).sum(-1).mean(-1)


# -- measuring a model ----------------------------------------------------------------------
@dataclass
class ProbeResult:
    """One measurement. ``loss``: teacher-forced CE with the right text; ``gap_*``: CE with
    reversed / shuffled phonemes minus ``loss``; ``diag [n_layers, n_heads]``: diagonality per
    head averaged over the probe samples; ``diag_chance``: what uniform attention would score on
    the same samples (the floor: high for short texts, where the band covers much of the text);
    ``png`` / ``image`` (HWC uint8): the attention figure."""

    loss: float
    gap_reversed: float
    gap_shuffled: float
    diag: np.ndarray
    diag_chance: float = float("nan")
    png: bytes = b""
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def diag_best(self) -> float:
        return float(self.diag.max())

    @property
    def best_head(self) -> tuple[int, int]:
        layer, head = np.unravel_index(int(self.diag.argmax()), self.diag.shape)
        return int(layer), int(head)

    def scalars(self) -> dict[str, float]:
        """Tensorboard scalars (``align/`` prefix to be added by the caller)."""
        out = {"gap_reversed": self.gap_reversed, "gap_shuffled": self.gap_shuffled, "diag_best": self.diag_best,
               "diag_chance": self.diag_chance}
        for (layer, head), v in np.ndenumerate(self.diag):
            out[f"diag_L{layer}_H{head}"] = float(v)
        return out


@torch.no_grad()
def audio_text_attention(model, text, text_lens, codes, code_lens, max_bytes: float = 2**29) -> list[np.ndarray]:
    """Per sample, the AR's audio->text attention of every layer: ``[n_layers, H, T_b+1, N_b]``
    (audio queries ``<bos>, q1..qT`` x the sample's valid text keys). Runs one sample at a time
    and as many layers per pass as fit in ``max_bytes`` of recorded attention."""
    n_layers, H = len(model.transformer.layers), model.cfg.n_heads
    out = []
    for b in range(text.shape[0]):
        N, T = int(text_lens[b]), int(code_lens[b])
        S = N + T + 1
        per_pass = max(1, int(max_bytes // (2 * 4 * H * S * S)))
        blocks = []
        for start in range(0, n_layers, per_pass):
            layers = list(range(start, min(start + per_pass, n_layers)))
            _, stats = model(text[b : b + 1, :N], text_lens[b : b + 1], codes[b : b + 1, :T], code_lens[b : b + 1],
                             attn_layers=layers)
            blocks += [stats["attn"][layer].probs[0, :, N:, :N].detach().float().cpu().numpy() for layer in layers]
        out.append(np.stack(blocks))
    return out


def attention_figure(attn: np.ndarray, paths: np.ndarray, scores: np.ndarray,
                     title: str = "") -> tuple[bytes, np.ndarray]:
    """One panel per (layer, head): ``attn [n_layers, H, T, N]`` (text on the y axis, audio frame
    on the x axis) with its monotonic path ``paths [n_layers, H, T]`` and score in the title.
    Returns ``(png bytes, HWC uint8 image)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers, H = attn.shape[:2]
    dpi = 100 if n_layers * H <= 16 else 60  # paper size (12 x 16 panels): keep it a few MB, a few s
    fig, axes = plt.subplots(n_layers, H, figsize=(max(1.8 * H, 5.0), 1.5 * n_layers + 0.5), dpi=dpi, squeeze=False)
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.04, top=1 - 0.5 / (1.5 * n_layers + 0.5),
                        wspace=0.05, hspace=0.25)
    for (layer, head), ax in np.ndenumerate(axes):
        a = attn[layer, head] / np.clip(attn[layer, head].sum(-1, keepdims=True), 1e-12, None)
        ax.imshow(a.T, origin="lower", aspect="auto", interpolation="nearest", cmap="viridis")
        ax.plot(np.arange(a.shape[0]), paths[layer, head], color="red", lw=0.6, alpha=0.7)
        ax.set_title(f"L{layer} H{head}: {scores[layer, head]:.2f}", fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
        if layer == n_layers - 1:
            ax.set_xlabel("audio frame", fontsize=6, labelpad=1)
        if head == 0:
            ax.set_ylabel("text slot", fontsize=6, labelpad=1)
    fig.suptitle(title or "audio->text attention (x: audio frame, y: text slot)", fontsize=8)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buf.getvalue(), image


class AlignmentProbe:
    """The fixed probe batch (its reversed and shuffled texts made once) and ``measure``."""

    def __init__(self, batch: dict, device="cpu", band: int = 2, seed: int = 0, figure_index: int = 0):
        self.device = torch.device(device)
        self.text = batch["text"].to(self.device)
        self.text_lens = batch["text_lens"].to(self.device)
        codes = batch["codes"]
        self.codes = (codes[..., 0] if codes.dim() == 3 else codes).to(self.device)  # level 1
        self.code_lens = batch["code_lens"].to(self.device)
        self.cut_ids = list(batch.get("cut_ids", []))
        self.reversed = reverse_inner(self.text, self.text_lens)
        self.shuffled = shuffle_inner(self.text, self.text_lens, seed)
        self.band = band
        self.figure_index = min(figure_index, self.text.shape[0] - 1)

    @classmethod
    def from_cuts(cls, cuts, dataset, device="cpu", n: int = 8, **kwargs) -> "AlignmentProbe":
        """The first ``n`` cuts of ``cuts`` (e.g. the validation cuts) through ``dataset``
        (a ``TTSDataset``): the same batch at every call."""
        from lhotse import CutSet

        return cls(dataset[CutSet.from_cuts(list(cuts.subset(first=n)))], device, **kwargs)

    def _loss(self, model, text) -> float:
        loss, _ = model(text, self.text_lens, self.codes, self.code_lens)
        return float(loss)

    @torch.no_grad()
    def measure(self, model, figure_path: str | Path | None = None, figure: bool = True,
                title: str = "") -> ProbeResult:
        """Measure ``model`` (an ``ARModel``, possibly DDP-wrapped; run in eval mode without
        gradients, its train/eval mode restored afterwards). ``figure_path``: also write the PNG;
        ``title``: prefix of the figure's title (e.g. the step)."""
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        try:
            loss = self._loss(model, self.text)
            gap_rev = self._loss(model, self.reversed) - loss
            gap_shuf = self._loss(model, self.shuffled) - loss
            attn = audio_text_attention(model, self.text, self.text_lens, self.codes, self.code_lens)
        finally:
            model.train(was_training)
        scores, chance, fig_paths = [], [], None
        for i, a in enumerate(attn):  # a: [n_layers, H, T+1, N]
            a = a / np.clip(a.sum(-1, keepdims=True), 1e-12, None)
            path = monotonic_path(np.log(a + 1e-9))
            scores.append(band_score(a, path, self.band))
            uniform = np.ones(a.shape[-2:])
            chance.append(float(band_score(uniform, monotonic_path(np.log(uniform)), self.band)))
            if i == self.figure_index:
                fig_paths = path
        result = ProbeResult(loss, gap_rev, gap_shuf, np.mean(scores, axis=0), float(np.mean(chance)))
        if figure:
            k = self.figure_index
            name = self.cut_ids[k] if k < len(self.cut_ids) else f"sample {k}"
            title = f"{title}{name}: audio->text attention (red: best monotonic path)"
            result.png, result.image = attention_figure(attn[k], fig_paths, scores[k], title)
            if figure_path is not None:
                from dmtts.utils import atomic_path

                with atomic_path(figure_path) as tmp:
                    Path(tmp).write_bytes(result.png)
        return result


__all__ = ["AlignmentProbe", "ProbeResult", "attention_figure", "audio_text_attention", "band_score",
           "monotonic_path", "permute_inner", "reverse_inner", "shuffle_inner"]
