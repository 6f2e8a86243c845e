"""Loss curves of ``ttsr bench``: recorded by a real tiny classic run, normalised and
interpolated on hand-made curves, compared pairwise on synthetic data, reported and plotted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ttsr_bridge.bench.config import BenchConfig
from ttsr_bridge.bench.engines import CurvePoint, _running_min, get_engine
from ttsr_bridge.bench.report import summarize, write_loss_curve_plot, write_plots, write_report
from ttsr_bridge.bench.runner import read_runs, run_bench
from ttsr_bridge.bench.stats import (
    LossCurve,
    curve_from_row,
    curve_grid,
    curve_on_grid,
    normalised_loss,
    paired_curve_comparison,
)


# ---- recording -------------------------------------------------------------------------------------
def test_classic_run_records_a_best_so_far_curve(tmp_path):
    reason = get_engine("classic").unavailable_reason()
    if reason:
        pytest.skip(f"classic engine unavailable: {reason}")
    cfg = BenchConfig(problems=("harder",), select=("sphere_area",), engines=("classic",), seeds=1,
                      budget_evals=60000)
    row = run_bench(cfg, tmp_path, progress=False).rows[0]
    assert row["status"] == "ok", row["reason"]
    curve = row["curve"]
    assert len(curve) >= 2
    evals = np.array([p["evals"] for p in curve])
    loss = np.array([p["best_loss"] for p in curve])
    secs = np.array([p["seconds"] for p in curve])
    assert np.all(np.diff(evals) >= 0) and np.all(np.diff(loss) <= 0) and np.all(np.diff(secs) >= 0)
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]
    assert evals[0] == 837  # after the initial populations: 31 populations × 27 members
    assert evals[-1] == pytest.approx(row["num_evals"])  # the callback sees the last iteration
    assert row["y_var"] > 0
    # the Parquet file holds it as list<struct>, and reads back as the same points
    back = read_runs(tmp_path / "runs.parquet")[0]
    assert back["curve"] == curve


def test_old_runs_parquet_without_curve_reads_back_and_reports_without_section(tmp_path):
    rows = [_row("p", "classic", 0, None, y_var=None), _row("p", "basic", 0, None, y_var=None)]
    df = pd.DataFrame(rows).drop(columns=["curve", "y_var"])  # an old file: neither column
    df.to_parquet(tmp_path / "runs.parquet", index=False)
    back = read_runs(tmp_path / "runs.parquet")
    assert [r["curve"] for r in back] == [None, None] and back[0]["y_var"] is None
    cfg = _cfg()
    summary = summarize(back, cfg)
    assert summary["loss_curves"] is None
    assert "Loss curves" not in write_report(summary, tmp_path).read_text()
    assert write_loss_curve_plot(back, cfg, tmp_path) is None
    assert not (tmp_path / "loss_curves.png").exists()


def test_running_min_keeps_only_improvements_and_the_end():
    pts = [CurvePoint(500, 0.1, math.inf), CurvePoint(1000, 0.2, 5.0), CurvePoint(1500, 0.3, 5.0),
           CurvePoint(2000, 0.4, 4.0), CurvePoint(2500, 0.5, 6.0), CurvePoint(3000, 0.6, 4.0)]
    assert _running_min(pts) == [CurvePoint(1000, 0.2, 5.0), CurvePoint(2000, 0.4, 4.0), CurvePoint(3000, 0.6, 4.0)]
    assert _running_min([]) == [] and _running_min([CurvePoint(1, 0, math.nan)]) == []


# ---- normalisation and interpolation -----------------------------------------------------------------
def test_loss_curve_from_points_and_rows():
    c = LossCurve.from_points([{"evals": 10, "seconds": 0.1, "best_loss": 4.0}, (20, 0.2, math.inf), (30, 0.3, 5.0)])
    assert c.evals.tolist() == [10, 30] and c.best_loss.tolist() == [4.0, 4.0]  # running minimum
    for missing in (None, float("nan"), []):
        assert curve_from_row(missing) is None
    assert len(curve_from_row(np.array([{"evals": 1.0, "seconds": 0.0, "best_loss": 1.0}], dtype=object))) == 1
    with pytest.raises(ValueError, match="non-decreasing"):
        LossCurve.from_points([(20, 0.0, 1.0), (10, 0.0, 0.5)])


def test_normalised_loss():
    assert normalised_loss(np.array([2.0, 0.5, 0.0]), 4.0).tolist() == [0.5, 0.125, 1e-12]
    assert normalised_loss(1e-20, 1.0, floor=1e-15).item() == 1e-15
    with pytest.raises(ValueError, match="y_var"):
        normalised_loss(1.0, 0.0)


def test_curve_on_grid_is_a_step_function_of_the_budget_fraction():
    c = LossCurve.from_points([(100, 0.1, 8.0), (400, 0.2, 2.0), (1000, 0.3, 1.0), (1100, 0.4, 0.5)])
    grid = np.array([0.05, 0.1, 0.2, 0.4, 0.5, 1.0])
    got = curve_on_grid(c, grid, budget=1000.0)
    # NaN before the first point; the last point (1100, past the 1000 budget) counts at 100%
    np.testing.assert_array_equal(got, [np.nan, 8.0, 8.0, 2.0, 2.0, 0.5])
    by_time = curve_on_grid(c, np.array([0.25, 0.5, 1.0]), budget=0.4, axis="seconds")
    np.testing.assert_array_equal(by_time, [8.0, 2.0, 0.5])
    g = curve_grid(20, 0.01)
    assert g.size == 20 and g[0] == pytest.approx(0.01) and g[-1] == 1.0 and np.all(np.diff(np.log(g)) > 0)


# ---- the paired statistic -----------------------------------------------------------------------------
def _synthetic_log_curves(rng, n_pairs=40, n_grid=20):
    """log10 normalised losses falling with log-evals, a per-problem offset, noise."""
    t = np.linspace(0.0, 1.0, n_grid)
    offset = rng.normal(0.0, 1.0, size=(n_pairs, 1))
    return -1.0 - 4.0 * t[None, :] + offset


def test_identical_curves_differ_by_zero():
    rng = np.random.default_rng(0)
    b = _synthetic_log_curves(rng)
    b[:5, :3] = np.nan  # some runs start late
    c = paired_curve_comparison("a", "b", b.copy(), b, rng, n_boot=500)
    assert (c.n_pairs, c.mean_diff, c.low, c.high, c.wilcoxon_p) == (40, 0.0, 0.0, 0.0, None)
    assert c.within_noise is True and c.a_better == c.b_better == 0


def test_noisy_equal_engines_are_within_noise_and_a_better_engine_is_not():
    # equal engines: the 95% CI holds 0 in about 95% of the seeded draws (run-to-run noise)
    inside = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        b = _synthetic_log_curves(rng)
        same = b + rng.normal(0.0, 0.3, size=(b.shape[0], 1)) + rng.normal(0.0, 0.1, size=b.shape)
        c = paired_curve_comparison("same", "b", same, b, rng, n_boot=1000)
        assert abs(c.mean_diff) < 0.25
        inside += bool(c.within_noise)
    assert 34 <= inside <= 40
    rng = np.random.default_rng(1)
    b = _synthetic_log_curves(rng)
    better = b - 1.0 + rng.normal(0.0, 0.3, size=b.shape)  # 10× lower losses
    c = paired_curve_comparison("better", "b", better, b, rng, n_boot=2000)
    assert c.within_noise is False and c.high < 0 and c.mean_diff == pytest.approx(-1.0, abs=0.1)
    assert c.wilcoxon_p < 1e-6 and c.a_better == 40
    groups = [f"p{i // 4}" for i in range(40)]  # 10 problems × 4 seeds: cluster bootstrap
    cg = paired_curve_comparison("better", "b", better, b, np.random.default_rng(2), groups=groups)
    assert cg.mean_diff == c.mean_diff and cg.high < 0


def test_pairs_without_a_common_point_are_dropped_and_shapes_checked():
    a = np.array([[np.nan, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, np.nan], [1.0, 1.0]])
    c = paired_curve_comparison("a", "b", a, b, np.random.default_rng(0), n_boot=100)
    assert c.n_pairs == 1 and c.mean_diff == -1.0 and c.within_noise is None  # one pair: no noise estimate
    empty = paired_curve_comparison("a", "b", a[:1], b[:1], np.random.default_rng(0))
    assert empty.n_pairs == 0 and math.isnan(empty.mean_diff)
    with pytest.raises(ValueError, match="shape"):
        paired_curve_comparison("a", "b", a, b[:1], np.random.default_rng(0))


# ---- summary, report, plot ----------------------------------------------------------------------------
def _cfg() -> BenchConfig:
    return BenchConfig(problems=("harder",), engines=("classic", "basic"), seeds=3, budget_evals=10000,
                       bootstrap_samples=500)


def _row(problem: str, engine: str, seed: int, curve, *, y_var=2.0) -> dict:
    return {"problem": problem, "suite": "harder", "engine": engine, "seed": seed, "status": "ok", "reason": None,
            "recovered": False, "r2_test": 0.5, "solution": False, "complexity": 5, "model": "x", "num_evals": 10000.0,
            "seconds": 1.0, "evals_to_solution": None, "seconds_to_solution": None, "evals_to_recovery": None,
            "seconds_to_recovery": None, "budget_kind": "evals", "budget_evals": 10000, "budget_seconds": None,
            "nfeatures": 1, "n_points": 50, "git_sha": "x", "versions": "{}", "finished_at": 0.0,
            "y_var": y_var, "curve": curve}


def _pts(*triples):
    return [{"evals": e, "seconds": s, "best_loss": l} for e, s, l in triples]


def test_summary_report_and_plot_from_known_curves(tmp_path):
    rows = []
    for i, p in enumerate(("p1", "p2", "p3", "p4")):
        for seed in range(3):
            base = 2.0 * (1 + i)  # var(y) = 2: classic goes 1 → 0.1 → 0.01 (normalised) per problem
            rows.append(_row(p, "classic", seed, _pts((100, 0.1, base), (1000, 0.2, base / 10), (10000, 1.0, base / 100))))
            rows.append(_row(p, "basic", seed, _pts((100, 0.1, base), (5000, 0.5, base / 10), (10300, 1.1, base / 10))))
    rows.append(_row("p5", "basic", 0, None))  # no curve: left out
    summary = summarize(rows, _cfg())
    lc = summary["loss_curves"]
    assert lc["axis"] == "evals" and lc["budget"] == 10000 and len(lc["grid_fractions"]) == 20
    cl = lc["engines"]["classic"]
    assert cl["runs"] == 12 and lc["engines"]["basic"]["runs"] == 12
    # normalised base/10 / 2 = 0.1, 0.2, 0.3, 0.4 over the problems; quantiles are taken on log10
    # (the plot's scale), so the median is the geometric mean of the middle two
    assert cl["at"]["0.1"]["median"] == pytest.approx(math.sqrt(0.2 * 0.3))
    assert cl["at"]["1"]["median"] == pytest.approx(math.sqrt(0.02 * 0.03))
    assert lc["engines"]["basic"]["at"]["0.5"]["median"] == pytest.approx(math.sqrt(0.2 * 0.3))
    assert lc["engines"]["basic"]["at"]["1"]["median"] == pytest.approx(math.sqrt(0.2 * 0.3))  # 10300 → at 100%
    (c,) = lc["comparisons"]
    assert c["engine"] == "basic" and c["baseline"] == "classic" and c["n_pairs"] == 12
    assert c["mean_log10_ratio"] > 0 and c["low"] > 0 and c["within_noise"] is False  # basic is worse
    assert c["baseline_better"] == 12
    report = write_report(summary, tmp_path).read_text()
    assert "## Loss curves" in report and "| basic | classic | 12 |" in report and "`loss_curves.png`" in report
    paths = write_plots(rows, _cfg(), tmp_path)
    png = tmp_path / "loss_curves.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_gplearn_and_operon_curves(tmp_path):
    cfg = BenchConfig(problems=("harder",), select=("sphere_area",), engines=("gplearn", "operon"), seeds=1,
                      budget_evals=2000, gplearn_population=200, operon_population=200)
    rows = {r["engine"]: r for r in run_bench(cfg, tmp_path, progress=False).rows}
    for e in ("gplearn", "operon"):
        if rows[e]["status"] == "skipped":
            continue  # not installed here
        assert rows[e]["status"] == "ok", rows[e]["reason"]
        curve = LossCurve.from_points(rows[e]["curve"])
        assert curve.evals[-1] == rows[e]["num_evals"] and np.all(np.diff(curve.best_loss) <= 0)
    if rows["gplearn"]["status"] == "ok":  # one point per improving generation of 200 programs
        evals = [p["evals"] for p in rows["gplearn"]["curve"]]
        assert evals[0] == 200 and all(v % 200 == 0 for v in evals) and len(evals) >= 2
    if rows["operon"]["status"] == "ok":
        assert len(rows["operon"]["curve"]) == 1  # no progress report: the final point only


def test_merge_rows_keeps_rows_written_before_the_curve_column(tmp_path):
    import json

    from ttsr_bridge.bench.runner import load_rows, merge_rows

    (tmp_path / "rows").mkdir()
    old = _row("p", "classic", 0, None)
    del old["curve"], old["y_var"]
    new = _row("p", "basic", 0, _pts((10, 0.1, 1.0), (20, 0.2, 0.5)))
    for i, r in enumerate((old, new)):
        (tmp_path / "rows" / f"r{i}.json").write_text(json.dumps(r))
    merge_rows(tmp_path)
    back = {r["engine"]: r for r in read_runs(tmp_path / "runs.parquet")}
    assert back["classic"]["curve"] is None and back["basic"]["curve"] == new["curve"]
    assert summarize(load_rows(tmp_path), _cfg())["loss_curves"]["engines"]["classic"]["runs"] == 0
