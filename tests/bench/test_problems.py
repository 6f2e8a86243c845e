"""Problems, sampling specs, the problem-file reader and the Feynman / DSO readers."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from ttsr_bridge.bench.problems import (
    Problem,
    ProblemError,
    Sampling,
    VariableSpec,
    dump_problem_file,
    dso_operator_set,
    load_dso,
    load_feynman,
    load_problem_file,
    problems_from_mapping,
)
from ttsr_bridge.bench.suites import get_suite, list_suites, select_problems, shared_benchmarks_dir

SHARED = Path("/work/shared/benchmarks")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared benchmark folder /work/shared/benchmarks absent")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "problems.yaml"
    p.write_text(text)
    return p


# ---- sampling specs ----------------------------------------------------------------------------
def test_even_grid_follows_dso_conventions():
    assert np.allclose(VariableSpec("x", -1, 1, 0.1).grid(), np.round(np.arange(-10, 11) / 10, 12))
    # a step wider than the range means "that many points"
    g = VariableSpec("x", -1, 1, 20).grid()
    assert g.size == 20 and g[0] == -1 and g[-1] == 1


def test_grid_product_and_uniform_columns():
    s = Sampling((VariableSpec("a", 0, 1, 0.5), VariableSpec("b", 0, 2, 1.0), VariableSpec("c", 5, 6)))
    X = s.grid_rows(np.random.default_rng(0))
    assert X.shape == (9, 3)
    assert {tuple(r) for r in X[:, :2]} == {(a, b) for a in (0, 0.5, 1) for b in (0, 1, 2)}
    assert np.all((X[:, 2] >= 5) & (X[:, 2] <= 6))


def test_sample_is_seeded_and_within_ranges():
    p = Problem("p", "x*y", (VariableSpec("x", -2, 3), VariableSpec("y", 1, 2)), n_points=50)
    X1, y1 = p.sample(np.random.default_rng(3))
    X2, y2 = p.sample(np.random.default_rng(3))
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert X1.shape == (50, 2) and np.allclose(y1, X1[:, 0] * X1[:, 1])
    assert X1[:, 0].min() >= -2 and X1[:, 0].max() <= 3
    Xt, yt = p.sample_test(np.random.default_rng(4))
    assert Xt.shape == (1000, 2) and np.allclose(yt, Xt[:, 0] * Xt[:, 1])


def test_nonfinite_truth_is_resampled():
    p = Problem("lg", "log(x)", (VariableSpec("x", -1, 1),), n_points=200)
    X, y = p.sample(np.random.default_rng(0))
    assert X.shape == (200, 1) and np.all(X > 0) and np.all(np.isfinite(y))


def test_truth_finite_almost_nowhere_is_rejected():
    p = Problem("bad", "sqrt(x - 100)", (VariableSpec("x", 0, 1),), n_points=10)
    with pytest.raises(ProblemError, match="finite on only"):
        p.sample(np.random.default_rng(0))


def test_noise_is_relative_to_rms():
    p = Problem("n", "3 + 0*x", (VariableSpec("x", 0, 1),), n_points=20000, noise=0.1)
    _, y = p.sample(np.random.default_rng(0))
    assert abs(np.std(y) - 0.3) < 0.01
    _, yt = p.sample_test(np.random.default_rng(0))
    assert np.allclose(yt, 3.0)  # held-out targets are noiseless


def test_data_rng_depends_on_problem_and_seed():
    p = get_suite("ultra-simple")[0]
    a = p.sample(p.data_rng(0))[0]
    assert np.array_equal(a, p.sample(p.data_rng(0))[0])
    assert not np.array_equal(a, p.sample(p.data_rng(1))[0])


# ---- problem file ------------------------------------------------------------------------------
def test_problem_file_roundtrip(tmp_path):
    text = """
problems:
  - name: a
    formula: "x1*x2 + sin(x1)"
    variables: {x1: [-3, 3], x2: {E: [0, 1, 0.25]}}
    n_points: 4
    noise: 0.01
    seed: 5
    test_points: 50
    test_variables: {x1: [-4, 4], x2: [0, 2]}
    operators: {binary: ["+", "*"], unary: [sin]}
"""
    (p,) = load_problem_file(_write(tmp_path, text))
    assert p.variables[1].step == 0.25 and p.seed == 5 and p.operators.names() == (("+", "*"), ("sin",))
    X, y = p.sample(np.random.default_rng(0))
    assert X.shape == (4, 2)  # a 4-point subset of the 5-point grid
    Xt, _ = p.sample_test(np.random.default_rng(0))
    assert Xt.shape == (50, 2) and Xt[:, 0].min() < -3
    out = dump_problem_file([p], tmp_path / "again.yaml")
    (q,) = load_problem_file(out)
    assert q == p


@pytest.mark.parametrize(
    "body, message",
    [
        ("problems: []", "non-empty list"),
        ("problem: []", "unknown top-level key"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1]}, n_points: 5, colour: red}]", "unknown key.*colour"),
        ("problems: [{name: a, formula: x, n_points: 5}]", "missing required key 'variables'"),
        ("problems: [{name: a, formula: x, variables: {x: [1, 0]}, n_points: 5}]", "low < high"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1, 2]}, n_points: 5}]", r"expected \[low, high\]"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1]}}]", "n_points is required"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1]}, n_points: 0}]", "n_points must be an integer"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 'b']}, n_points: 5}]", "must be a number"),
        ("problems: [{name: a, formula: 'x +* 2', variables: {x: [0, 1]}, n_points: 5}]", "cannot parse formula"),
        ("problems: [{name: a, formula: 'x + z', variables: {x: [0, 1]}, n_points: 5}]", "cannot parse formula"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1]}, n_points: 5, operators: {binary: [foo]}}]",
         "unknown operator"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1]}, n_points: 5},"
         " {name: a, formula: x, variables: {x: [0, 1]}, n_points: 5}]", "duplicate problem name"),
        ("problems: [{name: 'a b', formula: x, variables: {x: [0, 1]}, n_points: 5}]", "problem name"),
        ("problems: [{name: a, formula: x, variables: {x: [0, 1]}, n_points: 5, noise: -1}]", "noise"),
    ],
)
def test_problem_file_errors_are_strict_and_clear(tmp_path, body, message):
    with pytest.raises(ProblemError, match=message) as info:
        load_problem_file(_write(tmp_path, body))
    assert "problems.yaml" in str(info.value)


def test_missing_problem_file():
    with pytest.raises(ProblemError, match="not found"):
        load_problem_file("/nonexistent/problems.yaml")


# ---- suites ------------------------------------------------------------------------------------
def test_builtin_suites():
    assert [p.name for p in get_suite("ultra-simple")] == ["identity", "constant_2", "x_plus_1", "two_x", "x_squared"]
    harder = {p.name: p for p in get_suite("harder")}
    assert set(harder) == {"pythagorean_3d", "quadratic_discriminant", "mixed_polynomial", "polynomial_product", "sphere_area"}
    sa = harder["sphere_area"]
    X, y = sa.sample(np.random.default_rng(0))
    assert np.allclose(y, 4 * math.pi * X[:, 0] ** 2)
    assert len(get_suite("seeds")) == 10
    ng = get_suite("nguyen")
    assert len(ng) == 12 and all(p.operators.names()[1] == ("sin", "cos", "exp", "log") for p in ng)
    n8 = {p.name: p for p in ng}["nguyen8"]
    X, _ = n8.sample(np.random.default_rng(0))
    assert X.shape == (20, 1) and X.min() >= 0 and X.max() <= 4
    assert "nguyen" in list_suites()
    with pytest.raises(ProblemError, match="unknown problem suite"):
        get_suite("nope")


def test_select_problems():
    ps = get_suite("nguyen")
    assert [p.name for p in select_problems(ps, ["nguyen1?", "nguyen2"])] == ["nguyen2", "nguyen10", "nguyen11", "nguyen12"]
    with pytest.raises(ProblemError, match="matches no problem"):
        select_problems(ps, ["zzz"])


# ---- shared files ------------------------------------------------------------------------------
@needs_shared
def test_pysr_tuning_suite():
    ps = get_suite("pysr-tuning")
    assert len(ps) == 10 and ps[0].name == "vlad1"
    assert shared_benchmarks_dir().is_dir()


@needs_shared
def test_load_feynman():
    ps = load_feynman(SHARED / "FeynmanEquations.csv", n_points=100)
    assert len(ps) == 100
    by = {p.name: p for p in ps}
    assert by["I.6.2a"].variable_names == ["theta"]  # the BOM does not leak into the header
    assert by["I.9.18"].nfeatures == 9
    p = by["I.6.2a"]
    X, y = p.sample(np.random.default_rng(0))
    assert np.allclose(y, np.exp(-X[:, 0] ** 2 / 2) / np.sqrt(2 * np.pi))
    rng = np.random.default_rng(1)
    for q in ps:  # every equation samples to finite data
        X, y = q.sample(rng, n=20)
        assert X.shape == (20, q.nfeatures) and np.all(np.isfinite(y))


@needs_shared
def test_load_dso():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ps = load_dso(SHARED / "dso_benchmarks.csv")
    assert any("Neat-6" in str(x.message) for x in w)  # harmonic() is not an operator: reported
    by = {p.name: p for p in ps}
    assert len(ps) == 267 and "Neat-6" not in by
    n1 = by["Nguyen-1"]
    assert n1.operators.names() == (("+", "-", "*", "/"), ("sin", "cos", "exp", "log"))
    assert by["Keijzer-1"].sampling.size() == 21
    X, y = by["Keijzer-1"].sample(np.random.default_rng(0))
    assert np.allclose(y, 0.3 * X[:, 0] * np.sin(2 * np.pi * X[:, 0]))
    Xt, _ = by["Keijzer-1"].sample_test(np.random.default_rng(0))
    assert Xt.shape == (2001, 1)
    assert by["Vladislavleva-3"].sample(np.random.default_rng(0))[0].shape == (600, 2)
    assert by["Korns-9"].operators.names()[1] == ("sin", "cos", "exp", "log", "square", "cube", "sqrt", "tan", "tanh")
    with pytest.raises(ProblemError, match="harmonic"):
        load_dso(SHARED / "dso_benchmarks.csv", skip_unsupported=False)


def test_dso_operator_mapping():
    ops = dso_operator_set(["add", "sub", "mul", "div", "n2", "expneg", "const", "1.0", "poly"])
    assert ops.names() == (("+", "-", "*", "/"), ("square", "exp", "neg"))
    with pytest.raises(ProblemError, match="unknown DSO function token"):
        dso_operator_set(["frobnicate"])


def test_problems_from_mapping_default_operators():
    ps = problems_from_mapping(
        {"operators": {"binary": ["+"], "unary": []},
         "problems": [{"name": "a", "formula": "x", "variables": {"x": [0, 1]}, "n_points": 3}]}
    )
    assert ps[0].operators.names() == (("+",), ())


def test_domains_cover_training_and_held_out_ranges(tmp_path: Path) -> None:
    """``Problem.domains``: what ``equivalent`` may assume of each variable (its sign)."""
    from ttsr_bridge.bench.problems import load_problem_file

    f = tmp_path / "p.yaml"
    f.write_text("problems:\n  - {name: t, formula: 'log(x) + y', n_points: 10,\n"
                 "     variables: {x: [0.5, 2], y: [-1, 1]},\n"
                 "     test_variables: {x: [0.1, 3], y: [-1, 1]}}\n")
    (p,) = load_problem_file(f)
    assert p.domains() == {"x": (0.1, 3.0), "y": (-1.0, 1.0)}
    (n7,) = [q for q in get_suite("nguyen") if q.name == "nguyen7"]
    assert n7.domains() == {"x": (0.0, 2.0)}
