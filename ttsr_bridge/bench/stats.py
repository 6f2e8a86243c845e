"""Statistics of the A/B benchmark: bootstrap CIs of recovery rates, paired engine
comparisons, medians and IQRs. Pure NumPy/SciPy; every random draw takes a Generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "RateCI",
    "PairedComparison",
    "bootstrap_rate_ci",
    "paired_comparison",
    "sign_test",
    "wilcoxon_test",
    "median_iqr",
]


@dataclass(frozen=True)
class RateCI:
    """A rate over ``n`` runs with its percentile-bootstrap ``level`` confidence interval."""

    rate: float
    low: float
    high: float
    n: int
    level: float = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """Engine ``a`` against engine ``b`` on the (problem, seed) pairs both ran.

    ``diff`` = recovery(a) − recovery(b) with its bootstrap CI (pairs resampled together);
    ``a_only``/``b_only``: pairs only one of them recovered; ``sign_p``: two-sided sign test on
    those discordant pairs; ``wilcoxon_p``: Wilcoxon signed-rank test on the evaluations to
    solution of the pairs both solved (None when fewer than 2 such pairs or all ties)."""

    a: str
    b: str
    n_pairs: int
    diff: RateCI
    a_only: int
    b_only: int
    sign_p: float
    n_both_solved: int
    wilcoxon_p: float | None
    median_evals_ratio: float | None  # median of evals(a)/evals(b) over pairs both solved


def bootstrap_rate_ci(
    outcomes: Sequence[bool] | np.ndarray,
    rng: np.random.Generator,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    groups: Sequence[object] | None = None,
) -> RateCI:
    """Percentile-bootstrap CI of the mean of 0/1 ``outcomes``. With ``groups`` (e.g. problem
    names) whole groups are resampled (cluster bootstrap), since seeds of a problem correlate."""
    x = np.asarray(outcomes, dtype=np.float64)
    n = x.size
    if n == 0:
        return RateCI(float("nan"), float("nan"), float("nan"), 0, level)
    if groups is None:
        idx = rng.integers(0, n, size=(n_boot, n))
        means = x[idx].mean(axis=1)
    else:
        keys = np.asarray([str(g) for g in groups])
        uniq = np.unique(keys)
        sums = np.array([x[keys == u].sum() for u in uniq])
        counts = np.array([(keys == u).sum() for u in uniq], dtype=np.float64)
        idx = rng.integers(0, uniq.size, size=(n_boot, uniq.size))
        means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return RateCI(float(x.mean()), float(lo), float(hi), n, level)


def sign_test(n_plus: int, n_minus: int) -> float:
    """Two-sided exact sign test p-value (ties already removed)."""
    from scipy.stats import binomtest

    n = n_plus + n_minus
    if n == 0:
        return 1.0
    return float(binomtest(n_plus, n, 0.5, alternative="two-sided").pvalue)


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired samples (None when undefined)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2 or np.all(d == 0):
        return None
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(
    a_name: str,
    b_name: str,
    a_recovered: Sequence[bool],
    b_recovered: Sequence[bool],
    a_evals: Sequence[float | None],
    b_evals: Sequence[float | None],
    rng: np.random.Generator,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
) -> PairedComparison:
    """Compare two engines on aligned pairs (index ``i`` = the same problem and seed)."""
    ra = np.asarray(a_recovered, dtype=bool)
    rb = np.asarray(b_recovered, dtype=bool)
    if ra.shape != rb.shape:
        raise ValueError("paired samples must have the same length")
    n = ra.size
    d = ra.astype(np.float64) - rb.astype(np.float64)
    if n:
        idx = rng.integers(0, n, size=(n_boot, n))
        boots = d[idx].mean(axis=1)
        alpha = (1.0 - level) / 2.0
        lo, hi = (float(v) for v in np.quantile(boots, [alpha, 1.0 - alpha]))
        diff = RateCI(float(d.mean()), lo, hi, n, level)
    else:
        diff = RateCI(float("nan"), float("nan"), float("nan"), 0, level)
    a_only = int(np.sum(ra & ~rb))
    b_only = int(np.sum(rb & ~ra))
    both = [(float(x), float(y)) for x, y in zip(a_evals, b_evals) if _finite(x) and _finite(y)]
    ea = [x for x, _ in both]
    eb = [y for _, y in both]
    ratio = float(np.median(np.asarray(ea) / np.asarray(eb))) if both and all(y > 0 for y in eb) else None
    return PairedComparison(
        a=a_name, b=b_name, n_pairs=n, diff=diff, a_only=a_only, b_only=b_only,
        sign_p=sign_test(a_only, b_only), n_both_solved=len(both), wilcoxon_p=wilcoxon_test(ea, eb),
        median_evals_ratio=ratio,
    )


def _finite(v: float | None) -> bool:
    return v is not None and np.isfinite(v)


def median_iqr(values: Sequence[float | None]) -> tuple[float, float, float]:
    """``(median, q25, q75)`` of the finite values (NaNs when there are none)."""
    x = np.asarray([v for v in values if _finite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    return float(med), float(q25), float(q75)
