"""Summaries of benchmark rows: ``summary.json``, ``report.md`` and PNG plots (matplotlib Agg).

Rows of problems without a ground truth (fixed CSV data: ``recovered`` is None) are left out of
every recovery statistic (rates, paired comparisons, recovery curves, heat map) — never counted
as failures — and count in the solution rate, R², complexity, evaluations and seconds.

Loss curves (rows with a ``curve``, see :mod:`.engines`): each run's best training loss so far
is normalised by var(y_fit) (:func:`~.stats.normalised_loss`, floor 1e-12) and read as a step
function at ``CURVE_GRID_POINTS`` log-spaced fractions of the budget (evaluations, or seconds
for a time budget) from ``CURVE_GRID_LOW`` to 1. ``summary["loss_curves"]`` holds the median /
IQR per engine at 10%, 50% and 100% of the budget and the paired curve comparison of every
engine against the baseline (:func:`~.stats.paired_curve_comparison`, bootstrap over problems);
``loss_curves.png`` plots them. Without any curve the section is None / absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ttsr_bridge.config_io import to_mapping

from .config import BenchConfig
from .stats import (
    NORMALISED_LOSS_FLOOR,
    bootstrap_rate_ci,
    curve_from_row,
    curve_grid,
    curve_on_grid,
    median_iqr,
    normalised_loss,
    paired_comparison,
    paired_curve_comparison,
)

__all__ = ["summarize", "write_report", "write_plots", "write_loss_curve_plot", "loss_curves_on_grid",
           "CURVE_GRID_POINTS", "CURVE_GRID_LOW", "CURVE_FRACTIONS"]

CURVE_GRID_POINTS = 20  # grid of the paired curve statistic
CURVE_GRID_LOW = 0.01  # first grid point, as a fraction of the budget
CURVE_FRACTIONS = (0.1, 0.5, 1.0)  # budget fractions in the report's table


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf → None, recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _ci(ci) -> dict:
    return {"rate": ci.rate, "low": ci.low, "high": ci.high, "n": ci.n}


def _has_truth(row: dict) -> bool:
    """Whether recovery applies to the row's problem (``recovered`` is None without a truth)."""
    return row["recovered"] is not None


def _engine_summary(rows: Sequence[dict], config: BenchConfig, rng: np.random.Generator) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    reasons = sorted({r["reason"] for r in rows if r["status"] in ("skipped", "error") and r["reason"]})
    with_truth = [r for r in ok if _has_truth(r)]
    rec = [bool(r["recovered"]) for r in with_truth]
    sol = [bool(r["solution"]) for r in ok]
    groups = [r["problem"] for r in ok]
    med_r2 = median_iqr([r["r2_test"] for r in ok])
    med_ev = median_iqr([r["evals_to_recovery"] for r in ok])
    med_s = median_iqr([r["seconds"] for r in ok])
    med_c = median_iqr([r["complexity"] for r in ok])
    return {
        "runs": len(rows), "ok": len(ok),
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "reasons": reasons[:20],
        "recovery": _ci(bootstrap_rate_ci(rec, rng, n_boot=config.bootstrap_samples,
                                          groups=[r["problem"] for r in with_truth])),
        "ok_without_truth": len(ok) - len(with_truth),
        "solution": _ci(bootstrap_rate_ci(sol, rng, n_boot=config.bootstrap_samples, groups=groups)),
        "r2_test": {"median": med_r2[0], "q25": med_r2[1], "q75": med_r2[2]},
        "evals_to_recovery": {"median": med_ev[0], "q25": med_ev[1], "q75": med_ev[2]},
        "seconds": {"median": med_s[0], "q25": med_s[1], "q75": med_s[2]},
        "complexity": {"median": med_c[0], "q25": med_c[1], "q75": med_c[2]},
        "total_evals": float(np.nansum([r["num_evals"] or 0.0 for r in ok])),
        "total_seconds": float(np.nansum([r["seconds"] or 0.0 for r in ok])),
    }


def _comparisons(rows: Sequence[dict], config: BenchConfig, rng: np.random.Generator) -> list[dict]:
    """Each engine against the baseline (the first engine) on pairs both ran."""
    by = {(r["engine"], r["problem"], r["seed"]): r for r in rows if r["status"] == "ok" and _has_truth(r)}
    out = []
    base = config.baseline
    for e in config.engines[1:]:
        keys = sorted({(p, s) for (eng, p, s) in by if eng == e} & {(p, s) for (eng, p, s) in by if eng == base})
        a = [by[(e, *k)] for k in keys]
        b = [by[(base, *k)] for k in keys]
        c = paired_comparison(
            e, base, [r["recovered"] for r in a], [r["recovered"] for r in b],
            [r["evals_to_recovery"] for r in a], [r["evals_to_recovery"] for r in b], rng,
            n_boot=config.bootstrap_samples,
        )
        out.append({
            "engine": c.a, "baseline": c.b, "n_pairs": c.n_pairs, "recovery_diff": _ci(c.diff),
            "engine_only": c.a_only, "baseline_only": c.b_only, "sign_test_p": c.sign_p,
            "both_recovered": c.n_both_solved, "wilcoxon_p_evals": c.wilcoxon_p,
            "median_evals_ratio": c.median_evals_ratio,
        })
    return out


def summarize(rows: Sequence[dict], config: BenchConfig, *, git_sha: str = "", versions: str = "") -> dict:
    """The benchmark summary (what ``summary.json`` holds and ``--json`` prints)."""
    rng = np.random.default_rng(config.bootstrap_seed)
    engines = {e: _engine_summary([r for r in rows if r["engine"] == e], config, rng) for e in config.engines}
    problems = sorted({r["problem"] for r in rows})
    no_truth = _problems_without_truth(rows)
    per_problem = {
        p: {e: _rate([r for r in rows if r["problem"] == p and r["engine"] == e and r["status"] == "ok"])
            for e in config.engines}
        for p in problems
    }
    per_problem_solution = {
        p: {e: _solution_rate([r for r in rows if r["problem"] == p and r["engine"] == e and r["status"] == "ok"])
            for e in config.engines}
        for p in problems
    }
    return _clean({
        "config": to_mapping(config),
        "git_sha": git_sha,
        "versions": json.loads(versions) if versions else {},
        "n_problems": len(problems),
        "problems_without_truth": no_truth,
        "engines": engines,
        "comparisons": _comparisons(rows, config, rng),
        "loss_curves": _loss_curve_summary(rows, config),
        "per_problem_recovery": per_problem,
        "per_problem_solution": per_problem_solution,
    })


# ---- loss curves -----------------------------------------------------------------------------------
def _curve_axis(config: BenchConfig) -> tuple[str, float]:
    """The curves' x axis and the budget on it: evaluations, or seconds for a time budget."""
    if config.budget_evals is not None:
        return "evals", float(config.budget_evals)
    return "seconds", float(config.budget_seconds)


def loss_curves_on_grid(rows: Sequence[dict], config: BenchConfig,
                        fractions: np.ndarray) -> dict[str, dict[tuple[str, int], np.ndarray]]:
    """Per engine, per (problem, seed): log10 normalised best loss at each budget fraction
    (NaN before the run's first point). Runs without a curve or a usable var(y) are left out."""
    axis, budget = _curve_axis(config)
    out: dict[str, dict[tuple[str, int], np.ndarray]] = {e: {} for e in config.engines}
    for r in rows:
        if r["status"] != "ok" or r["engine"] not in out:
            continue
        curve = curve_from_row(r.get("curve"))
        y_var = r.get("y_var")
        if curve is None or y_var is None or not (math.isfinite(y_var) and y_var > 0):
            continue
        loss = curve_on_grid(curve, fractions, budget=budget, axis=axis)
        with np.errstate(invalid="ignore"):  # NaN (before the first point) stays NaN
            out[r["engine"]][(r["problem"], int(r["seed"]))] = np.log10(normalised_loss(loss, y_var))
    return out


def _quantiles(log_values: np.ndarray) -> dict:
    """Median and IQR of normalised losses given as log10 values (NaNs ignored)."""
    x = log_values[np.isfinite(log_values)]
    if x.size == 0:
        return {"median": None, "q25": None, "q75": None, "n": 0}
    q25, med, q75 = (float(10.0 ** v) for v in np.quantile(x, [0.25, 0.5, 0.75]))
    return {"median": med, "q25": q25, "q75": q75, "n": int(x.size)}


def _loss_curve_summary(rows: Sequence[dict], config: BenchConfig) -> dict | None:
    """``summary["loss_curves"]``; None when no run has a curve."""
    fracs = np.asarray(CURVE_FRACTIONS)
    at = loss_curves_on_grid(rows, config, fracs)
    if not any(at.values()):
        return None
    grid = curve_grid(CURVE_GRID_POINTS, CURVE_GRID_LOW)
    on_grid = loss_curves_on_grid(rows, config, grid)
    axis, budget = _curve_axis(config)
    engines = {}
    for e, runs in at.items():
        mat = np.array(list(runs.values())).reshape(len(runs), fracs.size)
        engines[e] = {"runs": len(runs), "at": {f"{f:g}": _quantiles(mat[:, i]) for i, f in enumerate(fracs)}}
    rng = np.random.default_rng((config.bootstrap_seed, 1))  # its own stream: other figures unchanged
    comparisons = []
    base = config.baseline
    for e in config.engines[1:]:
        keys = sorted(set(on_grid[e]) & set(on_grid[base]))
        a = np.array([on_grid[e][k] for k in keys]).reshape(len(keys), grid.size)
        b = np.array([on_grid[base][k] for k in keys]).reshape(len(keys), grid.size)
        c = paired_curve_comparison(e, base, a, b, rng, n_boot=config.bootstrap_samples,
                                    groups=[k[0] for k in keys])
        comparisons.append({
            "engine": c.a, "baseline": c.b, "n_pairs": c.n_pairs, "mean_log10_ratio": c.mean_diff,
            "low": c.low, "high": c.high, "wilcoxon_p": c.wilcoxon_p, "engine_better": c.a_better,
            "baseline_better": c.b_better, "within_noise": c.within_noise,
        })
    return {
        "axis": axis, "budget": budget, "normalisation": "best_loss / var(y_fit)", "floor": NORMALISED_LOSS_FLOOR,
        "grid_fractions": [float(g) for g in grid], "engines": engines, "comparisons": comparisons,
    }


def _problems_without_truth(rows: Sequence[dict]) -> list[str]:
    """Problems every row of which has ``recovered`` None (fixed data, no ground truth)."""
    problems = sorted({r["problem"] for r in rows})
    return [p for p in problems if not any(_has_truth(r) for r in rows if r["problem"] == p)]


def _rate(rows: Sequence[dict]) -> float | None:
    """Recovery rate of the rows with a truth; None when there are none (not applicable)."""
    rows = [r for r in rows if _has_truth(r)]
    return float(np.mean([bool(r["recovered"]) for r in rows])) if rows else None


def _solution_rate(rows: Sequence[dict]) -> float | None:
    return float(np.mean([bool(r["solution"]) for r in rows])) if rows else None


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def write_report(summary: dict, out: Path) -> Path:
    """``report.md``: per-engine table, paired comparisons, per-problem recovery."""
    cfg = summary["config"]
    budget = f"{cfg['budget_evals']} evaluations" if cfg["budget_evals"] is not None else f"{cfg['budget_seconds']} s"
    lines = [
        "# A/B benchmark report", "",
        f"Suites: {', '.join(cfg['problems'])} ({summary['n_problems']} problems); seeds: {cfg['seeds']}; "
        f"budget: {budget} per run; git {summary['git_sha'][:12]}.", "",
        "Recovery = a reported model symbolically equivalent to the truth; solution = held-out R² > "
        f"{cfg['solution_r2']}. 95% CIs: bootstrap over problems (seeds kept together).", "",
    ]
    no_truth = summary.get("problems_without_truth", [])
    if no_truth:
        lines += [
            (f"Without a ground truth (fixed CSV data): {', '.join(no_truth)}. Recovery does not apply to "
             "them (n/a): they are left out of every recovery rate, comparison and plot, and count in "
             "solution, R², complexity, evaluations and seconds."),
            "",
        ]
    lines += [
        "| engine | runs ok | skipped | errors | recovery [95% CI] | solution [95% CI] | median R² | "
        "median evals to recovery (IQR) | median seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e, s in summary["engines"].items():
        rc, sc, ev = s["recovery"], s["solution"], s["evals_to_recovery"]
        recovery = f"{_fmt(rc['rate'])} [{_fmt(rc['low'])}, {_fmt(rc['high'])}]"
        if not rc["n"] and s.get("ok_without_truth"):
            recovery = "n/a (no truth)"
        lines.append(
            f"| {e} | {s['ok']} | {s['skipped']} | {s['errors']} | {recovery} | "
            f"{_fmt(sc['rate'])} [{_fmt(sc['low'])}, {_fmt(sc['high'])}] | {_fmt(s['r2_test']['median'], 4)} | "
            f"{_fmt(ev['median'])} ({_fmt(ev['q25'])}–{_fmt(ev['q75'])}) | {_fmt(s['seconds']['median'])} |"
        )
    reasons = [(e, r) for e, s in summary["engines"].items() for r in s["reasons"]]
    if reasons:
        lines += ["", "Skipped / failed runs:", ""] + [f"* {e}: {r}" for e, r in reasons]
    if summary["comparisons"]:
        lines += ["", "## Paired comparisons against the baseline", "",
                  "| engine | baseline | pairs | recovery diff [95% CI] | only engine | only baseline | sign test p | "
                  "both recovered | Wilcoxon p (evals) | median evals ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            d = c["recovery_diff"]
            lines.append(
                f"| {c['engine']} | {c['baseline']} | {c['n_pairs']} | {_fmt(d['rate'])} [{_fmt(d['low'])}, {_fmt(d['high'])}] | "
                f"{c['engine_only']} | {c['baseline_only']} | {_fmt(c['sign_test_p'])} | {c['both_recovered']} | "
                f"{_fmt(c['wilcoxon_p_evals'])} | {_fmt(c['median_evals_ratio'])} |"
            )
    engines = list(summary["engines"])
    lines += ["", "## Recovery rate per problem", "", "| problem | " + " | ".join(engines) + " |",
              "|---|" + "---|" * len(engines)]
    for p, rates in summary["per_problem_recovery"].items():
        cells = ["n/a" if p in no_truth else _fmt(rates.get(e), 2) for e in engines]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    if no_truth:
        lines += ["", f"## Solution rate per problem (held-out R² > {cfg['solution_r2']})", "",
                  "| problem | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
        for p, rates in summary.get("per_problem_solution", {}).items():
            lines.append(f"| {p} | " + " | ".join(_fmt(rates.get(e), 2) for e in engines) + " |")
    lines += _loss_curve_lines(summary.get("loss_curves"))
    plots = "`recovery_vs_evals.png`, `recovery_vs_seconds.png`, `recovery_heatmap.png`"
    if summary.get("loss_curves"):
        plots += ", `loss_curves.png`"
    lines += ["", f"Plots: {plots}.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _loss_curve_lines(lc: dict | None) -> list[str]:
    """The report's "Loss curves" section (nothing when no run has a curve)."""
    if not lc:
        return []
    unit = "evaluations" if lc["axis"] == "evals" else "seconds"
    fracs = list(next(iter(lc["engines"].values()))["at"])
    intro = (
        f"Best training loss so far / var(y_fit) (1 − R² on the fit data, floored at {lc['floor']:g}), at "
        f"fractions of the budget ({_fmt(lc['budget'])} {unit}); median (IQR) over runs with a value there "
        "(a run has none before its first recorded point)."
    )
    lines = [
        "", "## Loss curves", "", intro, "",
        "| engine | runs with a curve | " + " | ".join(f"at {float(f):.0%}" for f in fracs) + " |",
        "|---|---|" + "---|" * len(fracs),
    ]
    for e, s in lc["engines"].items():
        cells = [f"{_fmt(q['median'])} ({_fmt(q['q25'])}–{_fmt(q['q75'])})" if q["n"] else "–"
                 for q in s["at"].values()]
        lines.append(f"| {e} | {s['runs']} | " + " | ".join(cells) + " |")
    if lc["comparisons"]:
        method = (
            f"Paired curve comparison: per (problem, seed), the mean over {len(lc['grid_fractions'])} "
            f"log-spaced budget fractions ({lc['grid_fractions'][0]:g}–1) of log10(loss engine / loss baseline); "
            "mean over pairs with a 95% bootstrap CI (problems resampled), Wilcoxon signed-rank p. Negative = "
            "the engine reaches lower losses; within noise = the CI contains 0."
        )
        header = (
            "| engine | baseline | pairs | mean log10 loss ratio [95% CI] | engine better | baseline better | "
            "Wilcoxon p | within noise |"
        )
        lines += ["", method, "", header, "|---|---|---|---|---|---|---|---|"]
        for c in lc["comparisons"]:
            noise = "–" if c["within_noise"] is None else ("yes" if c["within_noise"] else "no")
            lines.append(
                f"| {c['engine']} | {c['baseline']} | {c['n_pairs']} | {_fmt(c['mean_log10_ratio'])} "
                f"[{_fmt(c['low'])}, {_fmt(c['high'])}] | {c['engine_better']} | {c['baseline_better']} | "
                f"{_fmt(c['wilcoxon_p'])} | {noise} |"
            )
    return lines


def _curve(rows: Sequence[dict], key: str, grid: np.ndarray) -> np.ndarray:
    ok = [r for r in rows if r["status"] == "ok" and _has_truth(r)]
    if not ok:
        return np.full(grid.shape, np.nan)
    vals = np.array([r[key] if r["recovered"] and r[key] is not None else np.inf for r in ok], dtype=np.float64)
    return np.array([(vals <= g).mean() for g in grid])


def write_plots(rows: Sequence[dict], config: BenchConfig, out: Path) -> list[Path]:
    """Recovery vs budget (evaluations, seconds) per engine, and a problem × engine heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, label, fname in (("evals_to_recovery", "evaluations", "recovery_vs_evals.png"),
                              ("seconds_to_recovery", "seconds", "recovery_vs_seconds.png")):
        vals = [r[key] for r in rows if r["status"] == "ok" and r[key]]
        hi = max([r["num_evals" if key.startswith("evals") else "seconds"] or 0 for r in rows if r["status"] == "ok"] + vals + [1.0])
        lo = max(min(vals + [hi]) / 2, hi * 1e-4)
        grid = np.geomspace(lo, hi, 60)
        fig, ax = plt.subplots(figsize=(6, 4))
        for e in config.engines:
            ax.step(grid, _curve([r for r in rows if r["engine"] == e], key, grid), where="post", label=e)
        ax.set_xscale("log")
        ax.set_xlabel(f"budget ({label}, each engine's own count)")
        ax.set_ylabel("fraction of (problem, seed) recovered")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=100)
        plt.close(fig)
        paths.append(out / fname)
    problems = sorted({r["problem"] for r in rows})
    no_truth = set(_problems_without_truth(rows))
    mat = np.full((len(problems), len(config.engines)), np.nan)  # NaN cells are left blank
    for i, p in enumerate(problems):
        for j, e in enumerate(config.engines):
            rr = [bool(r["recovered"]) for r in rows
                  if r["problem"] == p and r["engine"] == e and r["status"] == "ok" and _has_truth(r)]
            if rr:
                mat[i, j] = np.mean(rr)
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(config.engines), 1 + 0.3 * len(problems)))
    im = ax.imshow(np.ma.masked_invalid(mat), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(config.engines)), config.engines, rotation=30, ha="right")
    ax.set_yticks(range(len(problems)), [f"{p} (no truth)" if p in no_truth else p for p in problems])
    fig.colorbar(im, ax=ax, label="recovery rate")
    fig.tight_layout()
    fig.savefig(out / "recovery_heatmap.png", dpi=100)
    plt.close(fig)
    paths.append(out / "recovery_heatmap.png")
    curves = write_loss_curve_plot(rows, config, out)
    if curves is not None:
        paths.append(curves)
    return paths


def write_loss_curve_plot(rows: Sequence[dict], config: BenchConfig, out: Path) -> Path | None:
    """``loss_curves.png``: median normalised best loss vs budget per engine with its IQR band,
    log-log; None (nothing written) when no run has a curve."""
    grid = curve_grid(4 * CURVE_GRID_POINTS, CURVE_GRID_LOW)  # finer than the statistic's: smooth steps
    curves = loss_curves_on_grid(rows, config, grid)
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis, budget = _curve_axis(config)
    # the last step (the value at 100%) is drawn a little past the budget so that it shows
    x = np.append(grid, grid[-1] * 1.06) * budget
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for e, runs in curves.items():
        if not runs:
            continue
        mat = np.array(list(runs.values())).reshape(len(runs), grid.size)
        has = np.isfinite(mat).any(axis=0)
        q = np.full((3, grid.size), np.nan)
        q[:, has] = np.nanquantile(mat[:, has], [0.25, 0.5, 0.75], axis=0)
        q = 10.0 ** np.concatenate([q, q[:, -1:]], axis=1)
        (line,) = ax.step(x, q[1], where="post", label=f"{e} ({len(runs)} runs)")
        ax.fill_between(x, q[0], q[2], step="post", alpha=0.2, color=line.get_color())
        ax.plot(x[-2], q[1][-2], "o", color=line.get_color(), markersize=4)  # the median at the budget
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("evaluations (each engine's own count)" if axis == "evals" else "seconds")
    ax.set_ylabel("best training loss / var(y)  (median, IQR)")
    ax.set_title("Loss curves (best so far, normalised per problem)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
