"""The A/B benchmark: real tiny runs, resume after a kill, skipped engines, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ttsr_bridge.bench.cli import config_from_args
from ttsr_bridge.bench.config import BenchConfig
from ttsr_bridge.bench.engines import PySREngine, get_engine
from ttsr_bridge.bench.report import summarize
from ttsr_bridge.bench.runner import plan, r2_score, run_bench
from ttsr_bridge.cli import build_parser
from ttsr_bridge.config_io import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _args(argv):
    return build_parser().parse_args(["bench", *argv])


def test_tiny_real_bench(tmp_path):
    reason = get_engine("classic").unavailable_reason()
    if reason:
        pytest.skip(f"classic engine unavailable: {reason}")
    cfg = BenchConfig(problems=("ultra-simple",), select=("identity", "x_squared"),
                      engines=("classic", "operon", "gplearn"), seeds=1, budget_evals=20000)
    res = run_bench(cfg, tmp_path, progress=False)
    assert len(res.rows) == 6 and res.ran == 6
    df = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(df) == 6 and set(df["engine"]) == {"classic", "operon", "gplearn"}
    assert (df["status"] == "ok").all(), df[["engine", "problem", "reason"]]
    assert df["recovered"].sum() >= 4  # y = x and y = x² are found by every engine
    assert df["git_sha"].notna().all() and "numpy" in json.loads(df["versions"][0])
    rec = df[df["recovered"]]
    assert (rec["evals_to_recovery"] <= rec["num_evals"] + 1e-9).all()
    summary = summarize(res.rows, cfg)
    assert summary["engines"]["gplearn"]["ok"] == 2
    assert len(summary["comparisons"]) == 2


def test_data_shared_and_heldout_kept_apart(tmp_path):
    cfg = BenchConfig(problems=("harder",), select=("sphere_area",), engines=("operon", "gplearn"),
                      seeds=2, budget_evals=500)
    tasks, done = plan(cfg, tmp_path)
    assert not done and len(tasks) == 4
    assert len({t.data_path for t in tasks}) == 2  # one data file per (problem, seed)
    with np.load(tasks[0].data_path) as d:
        assert d["X"].shape == (50, 1) and d["X_test"].shape == (1000, 1)
        assert not np.isin(d["X_test"][:, 0], d["X"][:, 0]).any()


def test_skipped_engine_is_reported_not_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # surely no julia here; pysr is never imported
    assert "julia" in PySREngine("pysr").unavailable_reason()
    cfg = BenchConfig(problems=("ultra-simple",), select=("two_x",), engines=("gplearn", "pysr", "pysr-neural:m.onnx"),
                      seeds=1, budget_evals=2000)
    res = run_bench(cfg, tmp_path / "out", progress=False)
    by = {r["engine"]: r for r in res.rows}
    assert by["gplearn"]["status"] == "ok"
    for e in ("pysr", "pysr-neural:m.onnx"):
        assert by[e]["status"] == "skipped" and "julia" in by[e]["reason"]
    assert "pysr" not in sys.modules
    summary = summarize(res.rows, cfg)
    assert summary["engines"]["pysr"]["skipped"] == 1 and summary["engines"]["pysr"]["reasons"]


def test_engine_lacking_an_operator_is_skipped_for_that_problem(tmp_path):
    cfg = BenchConfig(problems=("nguyen",), select=("nguyen1",), engines=("operon",), seeds=1, budget_evals=1000,
                      binary_operators=("+", "*"), unary_operators=("neg",))
    # nguyen has its own operator set (Koza), which operon supports: runs
    assert run_bench(cfg, tmp_path / "a", progress=False).rows[0]["status"] == "ok"
    p = tmp_path / "p.yaml"
    p.write_text("problems: [{name: q, formula: 'x*x', variables: {x: [0, 1]}, n_points: 10,"
                 " operators: {binary: ['*'], unary: [neg]}}]")
    cfg2 = BenchConfig(problems=(str(p),), engines=("operon",), seeds=1, budget_evals=1000)
    row = run_bench(cfg2, tmp_path / "b", progress=False).rows[0]
    assert row["status"] == "skipped" and "neg" in row["reason"]


def test_resume_after_kill(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ttsr_bridge.cli", "bench", "--problems", "nguyen", "--limit", "6",
           "--engines", "gplearn", "--seeds", "1", "--budget-evals", "3000", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list((out / "rows").glob("*.json"))) < 2:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    first = {p.name: json.loads(p.read_text())["finished_at"] for p in (out / "rows").glob("*.json")}
    assert 2 <= len(first) < 6, "the bench finished before it could be killed"
    assert not list((out / "rows").glob("*.tmp"))
    cfg = config_from_args(_args(cmd[cmd.index("--problems"):-1]))
    res = run_bench(cfg, out, progress=False)
    assert res.resumed == len(first) and res.ran == 6 - len(first)
    after = {p.name: json.loads(p.read_text())["finished_at"] for p in (out / "rows").glob("*.json")}
    assert len(after) == 6 and all(after[k] == v for k, v in first.items())
    assert len(pd.read_parquet(out / "runs.parquet")) == 6


def test_cli_json_and_outputs(tmp_path, capsys):
    from ttsr_bridge.cli import main

    rc = main(["bench", "--problems", "ultra-simple", "--select", "identity", "--engines", "gplearn,operon",
               "--seeds", "2", "--budget-evals", "2000", "--out", str(tmp_path), "--json"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert summary["engines"]["operon"]["ok"] == 2
    for f in ("runs.parquet", "summary.json", "report.md", "recovery_vs_evals.png", "recovery_vs_seconds.png",
              "recovery_heatmap.png"):
        assert (tmp_path / f).is_file(), f
    assert "| gplearn |" in (tmp_path / "report.md").read_text()


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        BenchConfig(budget_evals=10, budget_seconds=1.0)
    with pytest.raises(ConfigError, match="exactly one"):
        BenchConfig()
    with pytest.raises(ConfigError, match="unknown engine"):
        BenchConfig(engines=("foo",), budget_evals=10)
    with pytest.raises(ValueError, match="budget"):
        config_from_args(_args(["--problems", "seeds", "--engines", "operon", "--out", str(tmp_path)]))
    y = tmp_path / "b.yaml"
    y.write_text("problems: [nguyen]\nengines: [operon]\nbudget_seconds: 5\n")
    cfg = config_from_args(_args(["--config", str(y), "--budget-evals", "100", "--out", str(tmp_path)]))
    assert cfg.budget_evals == 100 and cfg.budget_seconds is None and cfg.problems == ("nguyen",)
    for f in sorted((REPO / "benchmarks").glob("bench_*.yaml")):
        config_from_args(_args(["--config", str(f), "--out", str(tmp_path)]))


def test_r2_score():
    y = np.array([1.0, 2.0, 3.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(3, 2.0)) == pytest.approx(0.0)
    assert r2_score(y, np.array([1.0, np.nan, 3.0])) is None
    assert r2_score(np.full(3, 2.0), np.full(3, 2.0)) == 1.0
