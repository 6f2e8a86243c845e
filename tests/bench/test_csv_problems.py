"""Fixed-data benchmark problems from a plain CSV: reading, the held-out split, bad input, suite
dispatch, and a real tiny ``ttsr bench`` run (recovery not applicable, R² and solution as usual)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ttsr_bridge.bench.cli import config_from_args
from ttsr_bridge.bench.config import BenchConfig
from ttsr_bridge.bench.engines import get_engine
from ttsr_bridge.bench.problems import (
    CsvOptions,
    DataProblem,
    Problem,
    ProblemError,
    csv_kind,
    load_csv_problem,
    load_problem_file,
    problem_from_mapping,
    problem_to_mapping,
    read_csv_table,
)
from ttsr_bridge.bench.report import summarize
from ttsr_bridge.bench.runner import plan
from ttsr_bridge.bench.suites import get_suite
from ttsr_bridge.cli import build_parser, main


def _write_csv(path: Path, n: int = 40, seed: int = 0) -> Path:
    """``id, a, b, out`` with out = a·b + 1 and a unique ``id`` per row (to check the split)."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-2, 2, n), rng.uniform(-2, 2, n)
    lines = ["id,a,b,out"] + [f"{i},{a[i]:.17g},{b[i]:.17g},{a[i] * b[i] + 1.0:.17g}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_csv_table_default_and_explicit_target(tmp_path):
    p = tmp_path / "d.csv"
    # BOM, spaces around cells, a blank line, an all-empty row, a quoted header cell
    p.write_text('\ufeff x1 , "speed", y\n1, 2, 3\n\n4,5,6\n,,\n7,8,9\n10,11,12e0\n', encoding="utf-8")
    t = read_csv_table(p)
    assert t.feature_names == ("x1", "speed") and t.target == "y"
    assert t.X.shape == (4, 2) and t.X.dtype == np.float64
    assert np.array_equal(t.y, [3, 6, 9, 12])
    assert not t.X.flags.writeable  # the table is a value
    t2 = read_csv_table(p, target="speed")
    assert t2.feature_names == ("x1", "y") and np.array_equal(t2.y, [2, 5, 8, 11])
    assert np.array_equal(t2.X[:, 1], [3, 6, 9, 12])


def test_data_problem_shape_and_no_truth(tmp_path):
    p = load_csv_problem(_write_csv(tmp_path / "tiny.csv"))
    assert isinstance(p, DataProblem) and p.name == "tiny" and not p.has_truth and Problem.has_truth
    assert p.variable_names == ["id", "a", "b"] and p.nfeatures == 3 and p.target == "out"
    assert p.formula is None
    with pytest.raises(ProblemError, match="no ground truth"):
        p.truth()


def test_split_deterministic_disjoint_and_capped(tmp_path):
    p = load_csv_problem(_write_csv(tmp_path / "tiny.csv", n=40))
    X, y, Xt, yt = p.bench_data(0)
    assert X.shape == (30, 3) and Xt.shape == (10, 3) and y.shape == (30,) and yt.shape == (10,)
    ids, tids = X[:, 0], Xt[:, 0]
    assert not set(ids) & set(tids) and set(ids) | set(tids) == set(range(40))
    assert np.array_equal(y, X[:, 1] * X[:, 2] + 1.0)  # rows stay whole
    again = p.bench_data(0)
    assert all(np.array_equal(u, v) for u, v in zip((X, y, Xt, yt), again))
    assert not np.array_equal(tids, p.bench_data(1)[2][:, 0])  # another seed, another split
    # sample / sample_test with generators in the same state give the matching halves
    Xs, _ = p.sample(p.data_rng(0))
    Xts, _ = p.sample_test(p.data_rng(0))
    assert np.array_equal(Xs, X) and np.array_equal(Xts, Xt)

    capped = load_csv_problem(tmp_path / "tiny.csv", CsvOptions(n_points=12))
    Xc, _, Xtc, _ = capped.bench_data(0)
    assert Xc.shape == (12, 3) and Xtc.shape == (10, 3)  # only the fit rows are capped
    assert not set(Xc[:, 0]) & set(Xtc[:, 0])
    assert np.array_equal(capped.bench_data(0)[0], Xc)

    small = load_csv_problem(_write_csv(tmp_path / "small.csv", n=4))
    Xs4, _, Xt4, _ = small.bench_data(0)
    assert len(Xs4) == 3 and len(Xt4) == 1  # at least one row on each side


def _bad(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


ROWS = "1,2\n3,4\n5,6\n7,8\n"


@pytest.mark.parametrize(
    "text, kwargs, match",
    [
        ("", {}, "empty file"),
        ("\n\n", {}, "empty file"),
        ("x,y\n", {}, "0 data row"),
        ("x,y\n1,2\n3,4\n5,6\n", {}, "3 data row.*at least 4"),
        ("y\n1\n2\n3\n4\n", {}, "at least two columns"),
        ("x;y\n1;2\n3;4\n5;6\n7;8\n", {}, "only comma-separated"),
        ("x,y\n" + ROWS, {"target": "z"}, "no target column 'z'.*'x', 'y'"),
        ("x,y\n1,2\n3,abc\n5,6\n7,8\n", {}, r"bad.csv:3, column 'y': 'abc' is not a number"),
        ("x,y\n1,2\n3,4\nnan,6\n7,8\n", {}, r"bad.csv:4, column 'x': non-finite value 'nan'"),
        ("x,y\n1,2\n3,4\n5,-inf\n7,8\n", {}, r":4, column 'y': non-finite value '-inf'"),
        ("x,y\n1,2\n3,1e999\n5,6\n7,8\n", {}, r":3, column 'y': non-finite value '1e999'"),
        ("x,y\n1,2\n3,\n5,6\n7,8\n", {}, r":3, column 'y': empty cell"),
        ("x,y\n1,2\n3,4,5\n5,6\n7,8\n", {}, r"bad.csv:3: expected 2 cells, got 3"),
        ("my x,y\n" + ROWS, {}, "'my x' is not an identifier"),
        ("1x,y\n" + ROWS, {}, "'1x' is not an identifier"),
        ("sin,y\n" + ROWS, {}, "'sin' is an operator/function name"),
        ("x,x\n" + ROWS, {}, r"duplicate column name\(s\) \['x'\]"),
        ("1,2\n" + ROWS, {}, "needs a header row"),
        (",y\n" + ROWS, {}, "column 1 has no name"),
    ],
)
def test_bad_csv_input(tmp_path, text, kwargs, match):
    with pytest.raises(ProblemError, match=match):
        load_csv_problem(_bad(tmp_path, text), CsvOptions(**kwargs))


def test_bad_file_and_problem_names(tmp_path):
    with pytest.raises(ProblemError, match="not found"):
        load_csv_problem(tmp_path / "missing.csv")
    with pytest.raises(ProblemError, match="rename the file"):
        load_csv_problem(_bad(tmp_path, "x,y\n" + ROWS, name="my data.csv"))
    (tmp_path / "latin1.csv").write_bytes(b"x,y\n1,2\n3,4\n5,6\n7,\xe9\n")
    with pytest.raises(ProblemError, match="not UTF-8"):
        load_csv_problem(tmp_path / "latin1.csv")
    for bad in ({"n_points": 0}, {"test_fraction": 1.0}, {"test_fraction": 0.0}):
        with pytest.raises(ProblemError):
            CsvOptions(**bad)


def test_suite_dispatch_csv_prefix_and_auto_detection(tmp_path):
    data = _write_csv(tmp_path / "tiny.csv")
    for spec in (f"csv:{data}", str(data)):
        (p,) = get_suite(spec, CsvOptions(target="a"))
        assert isinstance(p, DataProblem) and p.target == "a" and p.variable_names == ["id", "b", "out"]
    feyn = tmp_path / "my_feynman.csv"
    feyn.write_text("Filename,Number,Output,Formula,# variables,v1_name,v1_low,v1_high,v2_name,v2_low,v2_high\n"
                    "I.test,1,F,m*a,2,m,1,5,a,1,5\n", encoding="utf-8")
    assert csv_kind(feyn) == "feynman" and csv_kind(data) == "data"
    (f,) = get_suite(str(feyn))
    assert isinstance(f, Problem) and f.name == "I.test" and f.formula == "m*a"
    dso = tmp_path / "my_dso.csv"
    dso.write_text('name,variables,expression,train_spec,test_spec,function_set\n'
                   'T-1,1,x1**2,"{""all"": {""U"": [-1, 1, 20]}}",None,Koza\n', encoding="utf-8")
    assert csv_kind(dso) == "dso"
    (d,) = get_suite(str(dso))
    assert isinstance(d, Problem) and d.name == "T-1"


def test_mapping_round_trip_and_problem_file_entry(tmp_path):
    data = _write_csv(tmp_path / "tiny.csv")
    p = load_csv_problem(data, CsvOptions(target="out", n_points=20, test_fraction=0.3))
    m = problem_to_mapping(p)
    assert m["data"] == str(data.resolve()) and m["target"] == "out" and m["n_points"] == 20
    q = problem_from_mapping(m)
    assert isinstance(q, DataProblem) and q.name == p.name and q.test_fraction == 0.3
    assert all(np.array_equal(u, v) for u, v in zip(p.bench_data(3), q.bench_data(3)))
    yml = tmp_path / "probs.yaml"
    yml.write_text("problems:\n  - {name: mine, data: tiny.csv, target: b, n_points: 10, seed: 5,"
                   " operators: {binary: ['+', '*'], unary: []}}\n"
                   "  - {name: sq, formula: 'x**2', variables: {x: [0, 1]}, n_points: 10}\n", encoding="utf-8")
    mine, sq = load_problem_file(yml)  # the data path is relative to the problem file
    assert isinstance(mine, DataProblem) and mine.target == "b" and mine.seed == 5 and mine.n_points == 10
    assert mine.operator_set().names() == (("+", "*"), ())
    assert isinstance(sq, Problem)
    yml.write_text("problems: [{name: m, data: tiny.csv, formula: 'x'}]\n", encoding="utf-8")
    with pytest.raises(ProblemError, match="either a formula or data"):
        load_problem_file(yml)


def test_summary_excludes_problems_without_truth():
    cfg = BenchConfig(problems=("ultra-simple",), engines=("classic", "operon"), seeds=1, budget_evals=10,
                      bootstrap_samples=50)

    def row(problem, engine, recovered, solution):
        return {"problem": problem, "engine": engine, "seed": 0, "status": "ok", "reason": None,
                "recovered": recovered, "solution": solution, "r2_test": 0.9,
                "evals_to_recovery": 10.0 if recovered else None, "seconds": 1.0, "complexity": 3,
                "num_evals": 10.0}

    rows = [row("identity", "classic", True, True), row("identity", "operon", False, True),
            row("data", "classic", None, True), row("data", "operon", None, False)]
    s = summarize(rows, cfg)
    assert s["problems_without_truth"] == ["data"]
    assert s["engines"]["operon"]["recovery"]["rate"] == 0.0 and s["engines"]["operon"]["recovery"]["n"] == 1
    assert s["engines"]["classic"]["recovery"]["rate"] == 1.0 and s["engines"]["classic"]["ok_without_truth"] == 1
    assert s["engines"]["operon"]["solution"]["n"] == 2 and s["engines"]["operon"]["solution"]["rate"] == 0.5
    assert s["comparisons"][0]["n_pairs"] == 1
    assert s["per_problem_recovery"]["data"] == {"classic": None, "operon": None}
    assert s["per_problem_solution"]["data"] == {"classic": 1.0, "operon": 0.0}


def test_bad_csv_leaves_no_output_and_target_needs_a_csv(tmp_path):
    bad = _bad(tmp_path, "x,y\n1,2\n3,nan\n5,6\n7,8\n")
    cfg = BenchConfig(problems=(str(bad),), engines=("operon",), seeds=1, budget_evals=100)
    with pytest.raises(ProblemError, match="non-finite"):
        plan(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no suite is a plain CSV"):
        plan(BenchConfig(problems=("ultra-simple",), engines=("operon",), budget_evals=100, target="y"),
             tmp_path / "out2")
    args = build_parser().parse_args(["bench", "--problems", str(bad), "--target", "x", "--csv-points", "50",
                                      "--budget-evals", "10", "--out", str(tmp_path / "o")])
    cfg = config_from_args(args)
    assert cfg.target == "x" and cfg.csv_options == CsvOptions("x", 50, 0.25)
    assert main(["bench", "--problems", str(bad), "--budget-evals", "10", "--engines", "operon",
                 "--out", str(tmp_path / "o3"), "--no-progress"]) == 2
    assert not (tmp_path / "o3").exists()


def test_real_bench_on_a_csv(tmp_path, capsys):
    for e in ("classic", "operon"):
        reason = get_engine(e).unavailable_reason()
        if reason:
            pytest.skip(f"{e} unavailable: {reason}")
    data = _write_csv(tmp_path / "tiny.csv", n=40)
    out = tmp_path / "out"
    rc = main(["bench", "--problems", str(data), "--problems", "ultra-simple", "--select", "tiny,identity",
               "--target", "out", "--engines", "classic,operon", "--seeds", "1", "--budget-evals", "2000",
               "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    df = pd.read_parquet(out / "runs.parquet")
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["engine", "problem", "reason"]]
    csv_rows = df[df["problem"] == "tiny"]
    assert csv_rows["recovered"].isna().all() and csv_rows["evals_to_recovery"].isna().all()
    assert csv_rows["r2_test"].notna().all() and (csv_rows["n_points"] == 30).all()
    assert (csv_rows["nfeatures"] == 3).all() and csv_rows["complexity"].notna().all()
    assert df.loc[df["problem"] == "identity", "recovered"].notna().all()
    with np.load(out / "data" / "tiny__s0.npz") as d:
        assert d["X"].shape == (30, 3) and d["X_test"].shape == (10, 3)
        assert not set(d["X"][:, 0]) & set(d["X_test"][:, 0])
    assert summary["problems_without_truth"] == ["tiny"]
    for e in ("classic", "operon"):
        assert summary["engines"][e]["recovery"]["n"] == 1  # the CSV runs are not recovery failures
        assert summary["engines"][e]["solution"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "Without a ground truth" in report and "| tiny | n/a | n/a |" in report
    assert (out / "summary.json").is_file() and (out / "recovery_heatmap.png").is_file()
