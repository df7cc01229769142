"""ScaledAdam, written from the published description (Zipformer paper, arXiv 2310.11230 §3.5,
and the documentation of icefall's ``optim.py``). Not a copy of icefall's code.

What it does, per optimiser step (icefall's published algorithm; step ``s`` counts from 0):

1. **Clipping of the update-scaled gradient norm.** The norm is
   ``sqrt(Σ_tensors ||g·rms(p)||² + Σ_scalars (g·scalar_lr_scale)²)``, the gradient weighted
   as the update weights it, so it measures the size of the *update*. The norm of every step
   is kept in a ring buffer of ``clipping_update_period`` entries. The threshold
   ``clipping_scale × median`` is set at steps 10, 20 and 40 (from the norms so far, doubled,
   since the norm still changes fast) and then every ``clipping_update_period`` steps;
   between those steps it stays fixed. Before step 10 nothing is clipped. A step whose norm
   exceeds the threshold has every gradient scaled by ``threshold / norm``. Clipping covers
   all parameter groups together (icefall: per group; the same with one group, as dmtts uses).
   Our one addition: a non-finite norm zeroes the step's gradients (not recorded elsewhere).
   Everything stays on the device (a host sync only when the threshold is re-estimated).
2. **Non-scalar parameters** (``numel > 1``): an Adam-style normalised direction
   ``g / sqrt(v̂)`` (``v̂`` = EMA of ``g²`` with ``beta2``, bias-corrected while the correction
   is below 0.99, i.e. during the warm-up of beta2) is scaled by ``lr × rms(p)``, where
   ``rms(p)`` is the parameter's RMS (refreshed every ``size_update_period`` steps) clamped at
   ``param_min_rms`` from below only. So the *relative* change of a parameter does not depend
   on its scale.
3. **Learned parameter scale.** Writing ``p = r·u``, the gradient of the loss w.r.t. ``log r`` is
   ``s = Σ g·p``. Every ``size_update_period`` steps the accumulated ``s`` values are normalised
   by the RMS of their history (an Adam step on ``log r``, learning rate ``lr × scalar_lr_scale``)
   and ``p`` is changed by ``scale_step × p``, with ``scale_step`` clamped to ±0.1, zero while
   the RMS is below ``param_min_rms``, and capped so that the RMS does not exceed
   ``param_max_rms``.
   Both updates go through one momentum buffer (``beta1``, no bias correction).
4. **Scalars** (``numel == 1``): the Adam direction with ``lr × scalar_lr_scale`` and the same
   momentum, clamped to ``[-scalar_max, scalar_max]``.

The global clipping state lives in the optimiser state of the first parameter, so
``state_dict()`` / ``load_state_dict()`` give an exact resume.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["ScaledAdam"]


class ScaledAdam(Optimizer):
    """Adam with updates proportional to parameter RMS, learned parameter scales, and gradient
    clipping relative to the median recent gradient norm.

    Args:
        params: parameters or parameter groups (each group may set its own ``lr``, ...).
        lr: learning rate (an Eden scheduler multiplies it down over training).
        betas: ``(beta1, beta2)``: momentum of the update, EMA of squared gradients.
        eps: added to the Adam denominator.
        scalar_lr_scale: learning-rate factor for scalar parameters and for the parameter-scale
            update.
        param_min_rms, param_max_rms: the RMS that scales updates is at least ``param_min_rms``;
            the learned scale stops below ``param_min_rms`` and does not grow the RMS past
            ``param_max_rms``.
        scalar_max: scalar parameters are clamped to ``[-scalar_max, scalar_max]``.
        size_update_period: every this many steps, refresh the parameter RMS and apply the
            parameter-scale update.
        clipping_scale: clip the update-scaled gradient norm at ``clipping_scale × median`` of
            recent norms; ``None`` disables clipping.
        clipping_update_period: how many recent norms the median is taken over, and how often
            (in steps) the threshold is re-estimated after steps 10, 20 and 40.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 3e-2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        scalar_lr_scale: float = 0.1,
        param_min_rms: float = 1e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_scale: float | None = 2.0,
        clipping_update_period: int = 100,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid lr {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid betas {betas}")
        if not 0 < param_min_rms <= param_max_rms:
            raise ValueError("need 0 < param_min_rms <= param_max_rms")
        if size_update_period < 1 or clipping_update_period < 1:
            raise ValueError("size_update_period and clipping_update_period must be >= 1")
        if clipping_scale is not None and clipping_scale <= 0:
            raise ValueError("clipping_scale must be > 0 (or None to disable clipping)")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, scalar_lr_scale=scalar_lr_scale, param_min_rms=param_min_rms,
            param_max_rms=param_max_rms, scalar_max=scalar_max, size_update_period=size_update_period,
        )
        super().__init__(params, defaults)
        self.clipping_scale = clipping_scale
        self.clipping_update_period = clipping_update_period
        self.last_grad_norm: Tensor | None = None  # update-scaled grad norm of the last step (before clipping)
        self.last_clip_factor: Tensor | None = None  # factor the gradients were multiplied by

    def __setstate__(self, state):
        super().__setstate__(state)

    # ------------------------------------------------------------------------------ clipping
    def _first_param(self) -> Tensor:
        return self.param_groups[0]["params"][0]

    def _update_scaled_norm(self, device: torch.device) -> Tensor:
        """``sqrt(Σ_tensors ||g·rms(p)||² + Σ_scalars (g·scalar_lr_scale)²)`` (rms unclamped, as the
        last refreshed value in the optimiser state)."""
        sumsq = torch.zeros((), device=device, dtype=torch.float32)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                g = p.grad.detach().float()
                if p.numel() == 1:
                    term = (g * group["scalar_lr_scale"]).pow(2).sum()
                else:
                    rms = self.state[p].get("param_rms")
                    if rms is None:  # first gradient of this parameter: its current RMS
                        rms = p.detach().float().pow(2).mean().sqrt()
                    term = (g * rms).pow(2).sum()
                sumsq = sumsq + term.to(device)
        return sumsq.sqrt()

    def _clip_factor(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(factor to multiply all grads by, is_finite) as 0-dim device tensors."""
        norm = self._update_scaled_norm(device)
        finite = torch.isfinite(norm)
        self.last_grad_norm = norm
        factor = torch.ones((), device=device)
        gstate = self.state[self._first_param()]
        period = self.clipping_update_period
        norms = gstate.get("model_norms")
        if norms is None or norms.numel() != period:
            # a new run, or a state saved by an earlier version of this optimiser (which kept a
            # per-step median): start the threshold schedule (steps 10, 20, 40, ...) afresh
            for old_key in ("clip_norm_history", "model_norm_threshold", "model_norm_median"):
                gstate.pop(old_key, None)
            norms = torch.zeros(period, device=device)
            gstate.update(model_norms=norms, clip_step=0, num_clipped=torch.zeros((), device=device))
        step = gstate["clip_step"]
        gstate["clip_step"] = step + 1
        if self.clipping_scale is not None and step > 0:
            norms = norms.to(device)
            norms[step % period] = norm
            gstate["model_norms"] = norms
            early = step in (10, 20, 40) and step < period
            if step % period == 0 or early:
                ordered = norms.sort().values
                if early:  # only `step` norms recorded so far: the largest entries (the rest are 0)
                    ordered = ordered[-step:]
                median = ordered[min(ordered.numel() - 1, (ordered.numel() // 4) * 2)]
                if not bool(torch.isfinite(median)):
                    raise RuntimeError(f"ScaledAdam: the median gradient norm at step {step} is not finite "
                                       "(too many non-finite gradients); lower the learning rate")
                gstate["model_norm_median"] = median
                gstate["model_norm_threshold"] = self.clipping_scale * median * (2.0 if early else 1.0)
                gstate["num_clipped"] = torch.zeros((), device=device)
            threshold = gstate.get("model_norm_threshold")
            if threshold is not None:
                factor = (threshold.to(device) / (norm + 1e-20)).clamp(max=1.0)
                gstate["num_clipped"] = gstate["num_clipped"].to(device) + (factor < 1)
        factor = torch.where(finite, torch.nan_to_num(factor, nan=0.0), torch.zeros_like(factor))
        self.last_clip_factor = factor
        return factor, finite

    # ------------------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return loss
        for g in grads:
            if g.is_sparse:
                raise RuntimeError("ScaledAdam does not support sparse gradients")
        factor, finite = self._clip_factor(grads[0].device)

        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                grad = torch.where(finite, p.grad * factor.to(p.grad.dtype), torch.zeros_like(p.grad))
                if p.numel() == 1:
                    self._step_scalar(group, p, grad)
                else:
                    self._step_tensor(group, p, grad)
        return loss

    @staticmethod
    def _adam_direction(group: dict, state: dict, grad: Tensor, t: int) -> Tensor:
        """``g / (sqrt(v̂) + eps)`` at the ``t``-th step (1-based); ``v̂`` is bias-corrected only
        while the correction ``1 - beta2^t`` is below 0.99 (icefall)."""
        beta2 = group["betas"][1]
        exp_avg_sq: Tensor = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction = 1 - beta2**t
        v = exp_avg_sq / correction if correction < 0.99 else exp_avg_sq
        return grad / v.sqrt().add_(group["eps"])

    @staticmethod
    def _apply_momentum(group: dict, p: Tensor, delta: Tensor, update: Tensor) -> None:
        """``delta`` holds ``beta1 × m`` from the last step: ``m ← beta1·m + (1 - beta1)·update``,
        ``p ← p + m`` (no bias correction for beta1, as icefall)."""
        beta1 = group["betas"][0]
        delta.add_(update, alpha=1 - beta1)
        p.add_(delta)
        delta.mul_(beta1)

    def _step_scalar(self, group: dict, p: Tensor, grad: Tensor) -> None:
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if "delta" not in state:  # also: a state saved before scalars used the shared momentum
            state["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        lr = group["lr"] * group["scalar_lr_scale"]
        update = -lr * self._adam_direction(group, state, grad, state["step"])
        self._apply_momentum(group, p, state["delta"], update)
        p.clamp_(-group["scalar_max"], group["scalar_max"])

    def _step_tensor(self, group: dict, p: Tensor, grad: Tensor) -> None:
        beta2 = group["betas"][1]
        period = group["size_update_period"]
        min_rms, max_rms = group["param_min_rms"], group["param_max_rms"]
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["param_rms"] = p.detach().float().pow(2).mean().sqrt().reshape(()).to(p.device)
            state["scale_grads"] = torch.zeros(period, dtype=torch.float32, device=p.device)
            state["scale_exp_avg_sq"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["step"] += 1
        t = state["step"]  # 1-based; icefall's 0-based step is t - 1

        # --- gradient w.r.t. log(scale) = sum(g * p), one per step, used every `period` steps
        scale_grads: Tensor = state["scale_grads"]
        scale_grads[(t - 1) % period] = (grad.float() * p.float()).sum()
        size_step = t % period == 0
        if size_step:
            state["param_rms"] = p.detach().float().pow(2).mean().sqrt()
        param_rms: Tensor = state["param_rms"]

        # --- Adam direction, scaled by the parameter RMS (clamped from below only)
        update = -group["lr"] * self._adam_direction(group, state, grad, t) * param_rms.clamp(min=min_rms).to(p.dtype)

        # --- learned parameter scale
        if size_step and t > 1:
            beta2_k = beta2**period
            sq = state["scale_exp_avg_sq"]
            sq.mul_(beta2_k).add_((scale_grads**2).mean(), alpha=1 - beta2_k)
            correction = 1 - beta2_k ** (t // period)
            size_lr = group["lr"] * group["scalar_lr_scale"]
            scale_step = -size_lr * correction**0.5 * scale_grads.sum() / (sq.sqrt() + group["eps"])
            scale_step = torch.where(param_rms < min_rms, torch.zeros_like(scale_step), scale_step)
            scale_step = scale_step.clamp(-0.1, 0.1)
            scale_step = torch.minimum(scale_step, (max_rms - param_rms) / param_rms)
            update = update + p * scale_step.to(p.dtype)

        self._apply_momentum(group, p, state["delta"], update)

    # ------------------------------------------------------------------------------ info
    def clipping_stats(self) -> dict:
        """The median update-scaled gradient norm and the threshold of the last estimate, and how
        many steps were clipped since (synchronises with the device: call it for logging)."""
        gstate = self.state.get(self._first_param(), {})
        threshold = gstate.get("model_norm_threshold")
        if threshold is None:
            return {"median_grad_norm": math.nan, "clip_threshold": math.nan, "num_clipped": 0}
        return {
            "median_grad_norm": float(gstate["model_norm_median"]),
            "clip_threshold": float(threshold),
            "num_clipped": int(gstate.get("num_clipped", 0)),
        }
