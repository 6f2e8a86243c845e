"""`ttsr fit`: CSV and problem-file inputs, JSON summary, trace, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ttsr_bridge.cli import main

FAST = ["--niterations", "4", "--seed", "1", "--quiet"]


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "data.csv"
    p.write_text(text)
    return p


def _good_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 3, 50)
    b = rng.uniform(1, 3, 50)
    rows = "\n".join(f"{x},{z},{x * z + 1.0}" for x, z in zip(a, b))
    return _csv(tmp_path, "speed,mass,energy\n" + rows + "\n")


def test_fit_csv_writes_json_and_trace(tmp_path, capsys):
    data = _good_csv(tmp_path)
    out = tmp_path / "out" / "summary.json"
    trace = tmp_path / "trace.jsonl"
    rc = main(["fit", "--data", str(data), "--target", "energy", "--json", str(out), "--trace", str(trace), *FAST])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "complexity" in printed and "best:" in printed
    summary = json.loads(out.read_text())
    assert summary["variables"] == ["speed", "mass"]
    assert summary["evaluations"] > 0 and summary["seconds"] > 0
    assert summary["best"]["complexity"] >= 1
    # SymPy syntax over the CSV's column names, never x1/x2.
    assert "x1" not in summary["best"]["equation"]
    assert summary["pareto_front"][0]["complexity"] <= summary["pareto_front"][-1]["complexity"]
    from ttsr_bridge.traces.reader import read_trace

    tf = read_trace(trace)
    assert tf.search is not None and len(tf.iterations) > 0


def test_fit_problem_file_reports_recovery(tmp_path):
    problem = tmp_path / "p.yaml"
    problem.write_text(
        "problems:\n"
        "  - {name: lin, formula: '3*x + 1', variables: {x: [-2, 2]}, n_points: 40}\n"
        "  - {name: sq, formula: 'x**2', variables: {x: [-2, 2]}, n_points: 40}\n"
    )
    out = tmp_path / "s.json"
    rc = main(["fit", "--problem", str(problem), "--name", "sq", "--json", str(out), "--niterations", "10",
               "--seed", "0", "--quiet"])
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["truth"] == "x**2" and s["recovered"] is True


@pytest.mark.parametrize(
    "text, args, match",
    [
        ("a,b\n1,2\n", ["--target", "zz"], "no target column 'zz'"),
        ("a,b\n1,x\n2,3\n", ["--target", "b"], ":2, column 'b': 'x' is not a number"),
        ("a,b\n1,nan\n2,3\n", ["--target", "b"], ":2, column 'b': non-finite value 'nan'"),
        ("a,b\n1,2\n2,inf\n", ["--target", "b"], ":3, column 'b': non-finite value 'inf'"),
        ("a,b\n1,\n2,3\n", ["--target", "b"], "empty cell"),
        ("a,b\n", ["--target", "b"], "0 data row(s); need at least 2"),
        ("a,b\n1,2\n", ["--target", "b"], "1 data row(s); need at least 2"),
        ("a,b\n1,2\n3\n", ["--target", "b"], ":3: expected 2 cells, got 1"),
        ("b\n1\n2\n", ["--target", "b"], "need at least two columns"),
        ("my x,b\n1,2\n2,3\n", ["--target", "b"], "is not an identifier"),
        ("sin,b\n1,2\n2,3\n", ["--target", "b"], "operator/function name"),
    ],
)
def test_fit_bad_csv_clear_error(tmp_path, capsys, text, args, match):
    p = _csv(tmp_path, text)
    rc = main(["fit", "--data", str(p), *args, *FAST])
    assert rc == 2
    assert match in capsys.readouterr().err


def test_fit_argument_errors(tmp_path, capsys):
    assert main(["fit", *FAST]) == 2
    assert "exactly one of" in capsys.readouterr().err
    p = _good_csv(tmp_path)
    assert main(["fit", "--data", str(p), *FAST]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "missing.csv"), "--target", "y", *FAST]) == 2
    assert "not found" in capsys.readouterr().err
