"""Statistics of the A/B benchmark: bootstrap CIs of recovery rates, paired engine
comparisons, medians and IQRs, and loss curves (best training loss so far vs evaluations):
normalisation, step interpolation onto a common grid, paired curve comparison.
Pure NumPy/SciPy; every random draw takes a Generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "RateCI",
    "PairedComparison",
    "bootstrap_rate_ci",
    "paired_comparison",
    "sign_test",
    "wilcoxon_test",
    "median_iqr",
    "LossCurve",
    "CurveComparison",
    "NORMALISED_LOSS_FLOOR",
    "curve_from_row",
    "normalised_loss",
    "curve_grid",
    "curve_on_grid",
    "paired_curve_comparison",
]

#: normalised losses (``best_loss / var(y)``) below this count as an exact fit (see
#: :func:`normalised_loss`)
NORMALISED_LOSS_FLOOR = 1e-12


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


# ---- loss curves -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LossCurve:
    """A run's progress: after each recorded step, the cumulative ``evals`` (the engine's own
    count), ``seconds`` since the start, and the lowest training loss found so far
    (``best_loss``, MSE). Arrays of one length, ``evals`` non-decreasing, ``best_loss``
    non-increasing and finite (enforced: a best-so-far curve is its running minimum)."""

    evals: np.ndarray  # (n,)
    seconds: np.ndarray  # (n,)
    best_loss: np.ndarray  # (n,)

    def __post_init__(self) -> None:
        n = self.evals.shape
        if self.evals.ndim != 1 or self.seconds.shape != n or self.best_loss.shape != n:
            raise ValueError("loss curve arrays must be 1-D and of one length")
        if np.any(np.diff(self.evals) < 0):
            raise ValueError("loss curve evaluations must be non-decreasing")
        if not (np.all(np.isfinite(self.best_loss)) and np.all(np.isfinite(self.evals))):
            raise ValueError("loss curve values must be finite")

    def __len__(self) -> int:
        return int(self.evals.size)

    @classmethod
    def from_points(cls, points: Sequence[Any]) -> LossCurve:
        """From ``(evals, seconds, best_loss)`` triples or mappings with those keys (a row's
        ``curve`` as JSON or Parquet gives it back). Points with a non-finite loss are dropped
        and the loss is made a running minimum."""
        trip = []
        for p in points:
            if isinstance(p, Mapping):
                trip.append((p["evals"], p["seconds"], p["best_loss"]))
            else:
                evals, seconds, loss = p
                trip.append((evals, seconds, loss))
        arr = np.asarray(trip, dtype=np.float64).reshape(-1, 3)
        arr = arr[np.isfinite(arr[:, 2]) & np.isfinite(arr[:, 0])]
        return cls(arr[:, 0].copy(), arr[:, 1].copy(), np.minimum.accumulate(arr[:, 2]) if len(arr) else arr[:, 2].copy())

    def x(self, axis: str) -> np.ndarray:
        """The curve's x coordinate: ``"evals"`` or ``"seconds"``."""
        if axis == "evals":
            return self.evals
        if axis == "seconds":
            return self.seconds
        raise ValueError(f"unknown curve axis {axis!r} (evals or seconds)")


def curve_from_row(value: Any) -> LossCurve | None:
    """A row's ``curve`` value as a :class:`LossCurve`; None when the row has none (older rows
    and ``runs.parquet`` files without the column, engines that report no progress, NaN)."""
    if value is None or isinstance(value, float):  # missing in old rows / pandas NaN
        return None
    points = list(value)
    if not points:
        return None
    curve = LossCurve.from_points(points)
    return curve if len(curve) else None


def normalised_loss(best_loss: np.ndarray | float, y_var: float, floor: float = NORMALISED_LOSS_FLOOR) -> np.ndarray:
    """``best_loss / var(y_fit)`` clipped below at ``floor``: 1 − R² on the training data.

    Chosen over "relative to the best loss any engine reached on the (problem, seed)" because
    it is an absolute scale: a run's normalised curve does not change when an engine is added to
    or removed from the benchmark, 1 means "no better than predicting the mean" on every
    problem, and an engine that fits exactly (loss ≈ 1e-30 from rounding) does not blow up the
    other engines' ratios. The floor makes every fit better than 1e-12 · var(y) (below the
    bench's default early-stop threshold, 1e-10) an equal "exact" fit, so float rounding noise
    never dominates a log-scale average."""
    if not (np.isfinite(y_var) and y_var > 0):
        raise ValueError(f"y_var must be finite and > 0, got {y_var!r}")
    return np.maximum(np.asarray(best_loss, dtype=np.float64) / float(y_var), floor)


def curve_grid(n: int = 20, low: float = 0.01) -> np.ndarray:
    """``n`` log-spaced fractions of the budget from ``low`` to 1 (inclusive)."""
    if n < 2 or not 0 < low < 1:
        raise ValueError("curve_grid needs n >= 2 and 0 < low < 1")
    return np.geomspace(low, 1.0, n)


def curve_on_grid(curve: LossCurve, grid: np.ndarray, *, budget: float, axis: str = "evals") -> np.ndarray:
    """The best loss so far at each ``grid`` fraction of ``budget`` (step interpolation: the
    loss of the last point at or before it); NaN before the curve's first point (unknown,
    nothing evaluated yet). Points past the budget count at the budget: engines check their
    budget between steps, so the final point may overshoot it by up to one step and is still
    the run's result "at the budget"."""
    if not budget > 0:
        raise ValueError("budget must be > 0")
    x = np.minimum(curve.x(axis), budget)
    g = np.asarray(grid, dtype=np.float64) * budget
    # seconds may tie or (clock) wobble; order by x keeping the running minimum
    order = np.argsort(x, kind="stable")
    x, loss = x[order], np.minimum.accumulate(curve.best_loss[order])
    idx = np.searchsorted(x, g * (1 + 1e-12), side="right") - 1
    out = np.full(g.shape, np.nan)
    ok = idx >= 0
    out[ok] = loss[idx[ok]]
    return out


@dataclass(frozen=True)
class CurveComparison:
    """Engine ``a``'s loss curves against engine ``b``'s, paired by (problem, seed).

    Per pair, ``d = mean over the grid of log10(norm_loss_a) − log10(norm_loss_b)`` (grid points
    where both runs have a value); ``mean_diff`` is the mean of ``d`` over pairs with its
    bootstrap CI [``low``, ``high``] (pairs, or whole problems with ``groups``, resampled);
    ``wilcoxon_p``: two-sided Wilcoxon signed-rank test of ``d`` against 0 (None when fewer
    than 2 pairs or all ``d`` are 0). Negative = ``a`` reaches lower losses. ``a_better`` /
    ``b_better``: pairs with ``d`` < 0 / > 0."""

    a: str
    b: str
    n_pairs: int
    mean_diff: float
    low: float
    high: float
    wilcoxon_p: float | None
    a_better: int
    b_better: int
    level: float = 0.95

    @property
    def within_noise(self) -> bool | None:
        """The CI contains 0 (no detectable difference at this level); None with fewer than 2
        pairs (a one-pair bootstrap CI has zero width and says nothing about noise)."""
        if self.n_pairs < 2:
            return None
        return bool(self.low <= 0.0 <= self.high)


def paired_curve_comparison(
    a_name: str,
    b_name: str,
    a_log_curves: np.ndarray,
    b_log_curves: np.ndarray,
    rng: np.random.Generator,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    groups: Sequence[object] | None = None,
) -> CurveComparison:
    """Compare aligned curves ``(n_pairs, n_grid)`` of log10 normalised best loss on a common
    grid (row ``i`` = the same problem and seed in both; NaN = no value there).

    The statistic is the mean log10 loss ratio over the grid; on a log-spaced grid of budget
    fractions that is the area between the two log-loss vs log-evals curves divided by the
    log-width of the grid, so early progress and the final loss weigh alike, per decade of
    evaluations. Pairs without a common grid point are dropped."""
    a = np.asarray(a_log_curves, dtype=np.float64)
    b = np.asarray(b_log_curves, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError("paired curves must be 2-D arrays of one shape (n_pairs, n_grid)")
    both = np.isfinite(a) & np.isfinite(b)
    keep = both.any(axis=1)
    diff = np.where(both, a - b, 0.0).sum(axis=1)[keep] / both.sum(axis=1)[keep]
    keys = np.asarray([str(g) for g in groups])[keep] if groups is not None else None
    n = int(diff.size)
    if n == 0:
        nan = float("nan")
        return CurveComparison(a_name, b_name, 0, nan, nan, nan, None, 0, 0, level)
    boots = _bootstrap_means(diff, rng, n_boot, keys)
    alpha = (1.0 - level) / 2.0
    lo, hi = (float(v) for v in np.quantile(boots, [alpha, 1.0 - alpha]))
    return CurveComparison(
        a=a_name, b=b_name, n_pairs=n, mean_diff=float(diff.mean()), low=lo, high=hi,
        wilcoxon_p=_wilcoxon_one_sample(diff), a_better=int(np.sum(diff < 0)), b_better=int(np.sum(diff > 0)),
        level=level,
    )


def _bootstrap_means(x: np.ndarray, rng: np.random.Generator, n_boot: int, groups: np.ndarray | None) -> np.ndarray:
    """Bootstrap means of ``x``; with ``groups`` whole groups are resampled (cluster bootstrap)."""
    if groups is None:
        return x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    uniq = np.unique(groups)
    sums = np.array([x[groups == u].sum() for u in uniq])
    counts = np.array([(groups == u).sum() for u in uniq], dtype=np.float64)
    idx = rng.integers(0, uniq.size, size=(n_boot, uniq.size))
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def _wilcoxon_one_sample(d: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` against 0 (None when undefined)."""
    from scipy.stats import wilcoxon

    if d.size < 2 or np.all(d == 0):
        return None
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
