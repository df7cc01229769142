"""LM / SM representation distillation (paper §3.1, appendix B, D; DESIGN §5).

* Student: a linear projection W of a chosen RVQ output to the teacher dimension: ``"1"`` (RVQ-1),
  ``"1:8"`` (mean of all levels' outputs) or ``"8"`` (the last level). Defaults: LM on RVQ-1,
  SM on the mean of RVQ-1..8.
* Teacher targets are made T' frames long by zero-padding or truncating the token/time axis
  (:func:`fit_length`); for ``cls`` the [CLS] row (row 0 of the LM features) is repeated T' times.
* D-axis loss (eq. 1–2, default): per feature dimension d, the cosine similarity over the T'
  axis; ``-mean_{b,d} log σ(cos)``. T-axis ablation: the cosine per time step over D.
* ``combine: half`` (paper): ``L_LS = ½(λ_LM·L_L + λ_SM·L_S)`` for ``lm+sm`` (eq. 13);
  ``λ_LM·L_L`` for ``lm``, ``cls``, ``word_emb`` and ``λ_SM·L_S`` for ``sm``.
  ``combine: sum`` (public code): ``λ_LM·L_L + λ_SM·L_S`` for ``lm+sm``, the loss unweighted
  for one teacher.

Modes ``lm``, ``cls`` and ``word_emb`` all read ``cut.lm_feats``; they differ in how the teacher
features were extracted (``dmtts teachers extract --lm-target avg|cls|word_emb``) and, for
``cls``, in repeating row 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmtts.codec.config import DistillConfig

LM_MODES = ("lm", "lm+sm", "cls", "word_emb")
SM_MODES = ("sm", "lm+sm")


def _cosine_loss(student: torch.Tensor, teacher: torch.Tensor, axis: str) -> torch.Tensor:
    """``-mean log σ(cos)`` with the cosine taken over time (``axis="d"``: one per feature
    dimension, shape (B, D)) or over features (``axis="t"``: one per frame, shape (B, T))."""
    if student.shape != teacher.shape or student.dim() != 3:
        raise ValueError(f"{axis}_axis_loss needs two [B, T, D] tensors of equal shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    over, kept = (1, "(B, D)") if axis == "d" else (2, "(B, T)")
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=over, eps=1e-8)
    expected = tuple(n for i, n in enumerate(student.shape) if i != over)
    assert cos.shape == expected, f"{axis.upper()}-axis cosine must be {kept} = {expected}, got {tuple(cos.shape)}"
    return -F.logsigmoid(cos).mean()


def d_axis_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``-mean_{b,d} log σ(cos_T(student[b, :, d], teacher[b, :, d]))`` for ``[B, T, D]`` inputs."""
    return _cosine_loss(student, teacher, "d")


def t_axis_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Ablation: ``-mean_{b,t} log σ(cos_D(student[b, t], teacher[b, t]))``."""
    return _cosine_loss(student, teacher, "t")


def fit_length(feats: torch.Tensor, frames: int) -> torch.Tensor:
    """Zero-pad or truncate ``[B, n, D]`` along ``n`` to ``frames``."""
    n = feats.shape[1]
    if n >= frames:
        return feats[:, :frames]
    return F.pad(feats, (0, 0, 0, frames - n))


def select_levels(levels: list[torch.Tensor], which: str) -> torch.Tensor:
    """RVQ output used as the student: ``[B, D, T]`` -> ``[B, T, D]``."""
    if which == "1":
        out = levels[0]
    elif which == "8":
        out = levels[-1]
    elif which == "1:8":
        out = torch.stack(levels, dim=0).mean(dim=0)
    else:
        raise ValueError(f"unknown RVQ layer choice {which!r} (use 1, 1:8 or 8)")
    return out.transpose(1, 2)


class Distiller(nn.Module):
    """Student projections and the combined distillation loss for one ``DistillConfig``."""

    def __init__(self, cfg: DistillConfig, codec_dim: int):
        super().__init__()
        self.cfg = cfg
        self.uses_lm = cfg.mode in LM_MODES
        self.uses_sm = cfg.mode in SM_MODES
        self.lm_proj = nn.Linear(codec_dim, cfg.lm_dim) if self.uses_lm else None
        self.sm_proj = nn.Linear(codec_dim, cfg.sm_dim) if self.uses_sm else None
        self._loss = d_axis_loss if cfg.axis == "d" else t_axis_loss

    @property
    def enabled(self) -> bool:
        return self.uses_lm or self.uses_sm

    def lm_target(self, lm_feats: torch.Tensor, frames: int) -> torch.Tensor:
        if self.cfg.mode == "cls":
            return lm_feats[:, :1].expand(-1, frames, -1)
        return fit_length(lm_feats, frames)

    def forward(self, levels: list[torch.Tensor], lm_feats: torch.Tensor | None = None,
                sm_feats: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns ``(L_distill, {"distill_lm": .., "distill_sm": ..})`` (0 in mode ``none``)."""
        frames = levels[0].shape[-1]
        parts: dict[str, float] = {}
        total = levels[0].new_zeros((), dtype=torch.float32)
        l_lm = l_sm = None
        if self.uses_lm:
            if lm_feats is None:
                raise ValueError(f"distill mode '{self.cfg.mode}' needs LM teacher features (cut.lm_feats)")
            student = self.lm_proj(select_levels(levels, self.cfg.lm_layer))
            l_lm = self._loss(student, self.lm_target(lm_feats.to(student.dtype), frames))
            parts["distill_lm"] = float(l_lm.detach())
        if self.uses_sm:
            if sm_feats is None:
                raise ValueError(f"distill mode '{self.cfg.mode}' needs SM teacher features (cut.sm_feats)")
            student = self.sm_proj(select_levels(levels, self.cfg.sm_layer))
            l_sm = self._loss(student, fit_length(sm_feats.to(student.dtype), frames))
            parts["distill_sm"] = float(l_sm.detach())
        half = self.cfg.combine == "half"
        if l_lm is not None and l_sm is not None:
            total = (0.5 if half else 1.0) * (self.cfg.lambda_lm * l_lm + self.cfg.lambda_sm * l_sm)
        elif l_lm is not None:
            total = self.cfg.lambda_lm * l_lm if half else l_lm
        elif l_sm is not None:
            total = self.cfg.lambda_sm * l_sm if half else l_sm
        return total, parts
