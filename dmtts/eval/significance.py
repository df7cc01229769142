"""Almost stochastic order (ASO) between systems' per-utterance scores (paper App. C, Table 3).

Implemented from the published descriptions (del Barrio, Cuesta-Albertos & Matrán 2018;
Dror, Shlomov & Reichart 2019, "Deep Dominance"; the bootstrap variant of Ulmer et al. 2022):

* Orient scores so that higher is better (WER/WIL are negated).
* Empirical inverse CDFs ``F^-1`` (system A, n scores) and ``G^-1`` (system B, m scores).
* Violation ratio ``ε_W(F, G) = ∫_{V} (F^-1 - G^-1)^2 dt / ∫_0^1 (F^-1 - G^-1)^2 dt`` with
  ``V = {t : F^-1(t) < G^-1(t)}``, the quantiles where A is worse than B (0.5 when the inverse
  CDFs coincide). ``ε_W = 0`` is first-order stochastic dominance of A over B.
  Both inverse CDFs are step functions, constant between the breakpoints ``i/n`` and ``j/m``, so
  the integrals are computed exactly as sums over those intervals (``dt=None``, the default).
  A ``dt`` step instead evaluates them on the grid ``t = dt/2, 3dt/2, ...`` (the older behaviour;
  deepsig's default is a ``dt = 0.005`` grid). A fixed grid aliases against the steps: on
  per-utterance WERs, which are tied (many 0 %) and few, it moved ε_W by up to 0.03 (grid 0.005,
  n = 80) from the exact value. Cross-checked against ``deepsig`` (Ulmer et al.'s
  implementation) in ``tests/test_eval_significance.py``: on continuous scores the ε_min agree
  within 0.02; on tied scores deepsig's grid misses the exact integral by more (see that test).
* The confidence bound: ``B`` bootstrap replicates ``ε*_b`` (resampling n scores of A and m of B
  with replacement, i.e. sampling their empirical quantile functions), ``σ̂ = std(√(nm/(n+m))
  (ε*_b - ε_W))`` and ``ε_min = clip(ε_W + √((n+m)/(nm)) σ̂ Φ^-1(1 - α'), 0, 1)``: the smallest ε
  for which "A is ε-almost stochastically dominant over B" is accepted at level α', where
  ``α' = α / k`` is Bonferroni-corrected over the ``k = N(N-1)/2`` pairs of N systems.

Decisions (row system A vs column system B), with the threshold τ (default 0.5, as the paper:
"significantly better when ε ≤ 0.5"; Ulmer et al. 2022 suggest the stricter τ = 0.2):

* ★  ``ε_min = 0``: stochastic dominance (the paper's "significantly dominant");
* ✓  ``0 < ε_min < τ``: almost stochastic dominance ("significantly better");
* ✗  ``ε_min ≥ τ``: no significant dominance.

The symbols follow the paper's Table 3 caption ("a ✓ indicates significance, a ★ denotes dominance").
"""

from __future__ import annotations

import io
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import norm

from dmtts.errors import DmttsError
from dmtts.eval.metrics import LOWER_IS_BETTER, METRICS
from dmtts.eval.scores import read_scores_csv, system_name_from_path
from dmtts.utils import atomic_write_text

logger = logging.getLogger(__name__)

DOMINANT, BETTER, NONE = "★", "✓", "✗"


def _quantile_points(n: int, m: int, dt: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Points ``t`` at which to evaluate both inverse CDFs, and the weight (length) of each.

    ``dt=None``: one point inside every interval between consecutive breakpoints ``i/n``, ``j/m``
    (the step functions are constant there), weighted by the interval's length: the integral is
    exact. Else the midpoint grid of step ``dt`` with equal weights.
    """
    if dt is None:
        edges = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
        return (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    k = int(round(1.0 / dt))
    return (np.arange(k) + 0.5) / k, np.full(k, 1.0 / k)


def _inverse_cdf(sorted_scores: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Empirical quantile function F^-1(t) = inf{x : F(x) >= t} of sorted samples (last axis)."""
    n = sorted_scores.shape[-1]
    idx = np.clip(np.ceil(t * n).astype(np.int64) - 1, 0, n - 1)
    return sorted_scores[..., idx]


def violation_ratio(a: np.ndarray, b: np.ndarray, dt: float | None = None) -> np.ndarray:
    """ε_W of A over B (higher is better); ``a``/``b`` may be batches ``[..., n]`` of samples."""
    t, weight = _quantile_points(a.shape[-1], b.shape[-1], dt)
    qa = _inverse_cdf(np.sort(a, axis=-1), t)
    qb = _inverse_cdf(np.sort(b, axis=-1), t)
    diff = qa - qb
    sq = diff ** 2 * weight
    total = sq.sum(axis=-1)
    viol = np.where(diff < 0, sq, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, viol / np.where(total > 0, total, 1.0), 0.5)
    return ratio


def aso_epsilon(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, num_bootstrap: int = 1000,
                dt: float | None = None, seed: int = 0, chunk: int = 100) -> float:
    """ε_min for "A is almost stochastically dominant over B" at level ``alpha`` (higher is better).

    ``alpha`` is the (already Bonferroni-corrected) significance level of this one comparison.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        raise DmttsError(f"ASO needs at least 2 finite scores per system, got {len(a)} and {len(b)}")
    eps = float(violation_ratio(a, b, dt))
    rng = np.random.default_rng(seed)
    n, m = len(a), len(b)
    boots = []
    for s in range(0, num_bootstrap, chunk):
        k = min(chunk, num_bootstrap - s)
        ra = a[rng.integers(0, n, size=(k, n))]
        rb = b[rng.integers(0, m, size=(k, m))]
        boots.append(violation_ratio(ra, rb, dt))
    boots = np.concatenate(boots)
    const = math.sqrt(n * m / (n + m))
    sigma = float(np.std(const * (boots - eps)))
    eps_min = eps + sigma / const * float(norm.ppf(1.0 - alpha))
    return float(np.clip(eps_min, 0.0, 1.0))


def decide(eps_min: float, tau: float = 0.5) -> str:
    if eps_min <= 0.0:
        return DOMINANT
    return BETTER if eps_min < tau else NONE


@dataclass
class SignificanceResult:
    metric: str
    systems: list[str]
    avg: dict[str, float]
    std: dict[str, float]
    n: dict[str, int]
    eps: dict[tuple[str, str], float]  # (row A, column B) -> ε_min of A over B
    alpha: float
    alpha_corrected: float
    tau: float
    lower_is_better: bool
    provenance: str = ""  # which model / normaliser produced the scores (from models.json)

    def symbol(self, a: str, b: str) -> str:
        return "-" if a == b else decide(self.eps[(a, b)], self.tau)


def direction(metric: str, lower_is_better: str | bool = "auto") -> bool:
    if isinstance(lower_is_better, bool):
        return lower_is_better
    value = str(lower_is_better).lower()
    if value == "auto":
        return metric in LOWER_IS_BETTER
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise DmttsError(f"--lower-is-better must be auto, true or false, not '{lower_is_better}'")


def compare_systems(scores: Mapping[str, Sequence[float]], metric: str, alpha: float = 0.05, tau: float = 0.5,
                    lower_is_better: str | bool = "auto", num_bootstrap: int = 1000, dt: float | None = None,
                    seed: int = 0) -> SignificanceResult:
    """ASO ε_min for every ordered pair of systems (``{name: per-utterance scores}``)."""
    if len(scores) < 2:
        raise DmttsError("significance needs at least two systems (two --scores files)")
    if not 0 < alpha < 1:
        raise DmttsError(f"--alpha must be in (0, 1), got {alpha}")
    lower = direction(metric, lower_is_better)
    names = list(scores)
    clean = {}
    for s in names:
        arr = np.asarray(scores[s], dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if len(arr) < 2:
            raise DmttsError(f"system '{s}' has {len(arr)} finite '{metric}' scores; ASO needs at least 2")
        clean[s] = arr
    k = len(names) * (len(names) - 1) // 2
    alpha_c = alpha / k
    eps = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a == b:
                continue
            sa, sb = (-clean[a], -clean[b]) if lower else (clean[a], clean[b])
            eps[(a, b)] = aso_epsilon(sa, sb, alpha_c, num_bootstrap, dt, seed=seed + 1000 * i + j)
    return SignificanceResult(metric, names, {s: float(v.mean()) for s, v in clean.items()},
                              {s: float(v.std(ddof=1)) for s, v in clean.items()},
                              {s: len(v) for s, v in clean.items()}, eps, alpha, alpha_c, tau, lower)


def legend(result: SignificanceResult) -> str:
    arrow = "lower is better" if result.lower_is_better else "higher is better"
    return (f"Row vs column, metric `{result.metric}` ({arrow}); almost stochastic order (Dror et al., 2019) "
            f"at α = {result.alpha:g}, Bonferroni-corrected to α' = {result.alpha_corrected:.4g} over "
            f"{len(result.systems) * (len(result.systems) - 1) // 2} pairs; {DOMINANT} stochastic dominance "
            f"(ε_min = 0), {BETTER} almost stochastic dominance (0 < ε_min < τ = {result.tau:g}), "
            f"{NONE} no significant dominance (ε_min ≥ τ). Avg/Std: mean and standard deviation of the "
            f"per-utterance scores; ε_min values are in significance_{result.metric}.csv."
            + (f" Scores: {result.provenance}." if result.provenance else ""))


def markdown_table(result: SignificanceResult) -> str:
    names = result.systems
    head = ["System", "Avg", "Std", "n", *names]
    lines = [f"## Significance: {result.metric}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in names:
        cells = [a, f"{result.avg[a]:.4g}", f"{result.std[a]:.4g}", str(result.n[a])]
        cells += [result.symbol(a, b) for b in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", legend(result), ""]
    return "\n".join(lines)


def write_significance(result: SignificanceResult, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["system", "avg", "std", "n", *[f"eps_vs_{b}" for b in result.systems],
                *[f"sig_vs_{b}" for b in result.systems]])
    for a in result.systems:
        eps = ["" if a == b else f"{result.eps[(a, b)]:.6f}" for b in result.systems]
        w.writerow([a, f"{result.avg[a]:.6g}", f"{result.std[a]:.6g}", result.n[a], *eps,
                    *[result.symbol(a, b) for b in result.systems]])
    csv_path = out_dir / f"significance_{result.metric}.csv"
    md_path = out_dir / f"significance_{result.metric}.md"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(md_path, markdown_table(result))
    meta = {"metric": result.metric, "alpha": result.alpha, "alpha_corrected": result.alpha_corrected,
            "tau": result.tau, "lower_is_better": result.lower_is_better, "method": "ASO, Dror et al. 2019"}
    atomic_write_text(out_dir / f"significance_{result.metric}.json", json.dumps(meta, indent=2) + "\n")
    return csv_path, md_path


def significance_from_files(paths: Sequence[str | Path], metric: str, out_dir: str | Path,
                            alpha: float = 0.05, tau: float = 0.5, lower_is_better: str | bool = "auto",
                            num_bootstrap: int = 1000, seed: int = 0) -> SignificanceResult:
    if metric not in METRICS:
        raise DmttsError(f"--metric {metric}: choose one of {' '.join(METRICS)}")
    scores: dict[str, list[float]] = {}
    provenance: dict[str, list[str]] = {}
    for p in paths:
        name = system_name_from_path(p)
        if name in scores:
            raise DmttsError(f"two --scores files give the system name '{name}' (the file stem); rename one")
        table = read_scores_csv(p)
        if table and metric not in next(iter(table.values())):
            raise DmttsError(f"'{p}' has no column '{metric}'")
        values = [row[metric] for row in table.values()]
        if sum(math.isfinite(v) for v in values) < 2:  # e.g. ground_truth has no STOI
            logger.warning("'%s' has fewer than 2 '%s' scores; system %s left out of this table", p, metric, name)
            continue
        scores[name] = values
        described = _described(p, metric)
        if described:
            provenance.setdefault(described, []).append(name)
    if len(scores) < 2:
        raise DmttsError(f"fewer than two of the --scores files have '{metric}' scores; nothing to compare")
    result = compare_systems(scores, metric, alpha, tau, lower_is_better, num_bootstrap, seed=seed)
    if len(provenance) == 1:
        result.provenance = next(iter(provenance))
    elif provenance:  # e.g. WERs after different text normalisers: say so in the table
        logger.warning("the --scores files' %s come from different models/normalisers: %s", metric, provenance)
        result.provenance = "; ".join(f"{', '.join(names)}: {d}" for d, names in provenance.items())
    write_significance(result, out_dir)
    return result


def _described(scores_path: str | Path, metric: str) -> str:
    """What produced ``metric`` in a scores file, from the ``models.json`` written next to it by
    ``dmtts eval codec|tts`` (ASR and text normaliser for WER/WIL); empty when unknown."""
    path = Path(scores_path).parent / "models.json"
    try:
        return str(json.loads(path.read_text()).get(metric, ""))
    except (OSError, ValueError):
        return ""
