"""Synthetic problems: valid, non-degenerate, deduplicated, never a held-out problem."""

from __future__ import annotations

import numpy as np
import pytest

from ttsr_bridge.bench.problems import load_problem_file, dump_problem_file
from ttsr_bridge.bench.suites import get_suite
from ttsr_bridge.bench.synthetic import (
    SyntheticConfig,
    canonical_form,
    generate_problems,
    heldout_canonical_forms,
    problem_canonical_form,
    random_tree,
)
from ttsr_bridge.expr.parser import parse_formula


def test_random_tree_sizes():
    cfg = SyntheticConfig()
    rng = np.random.default_rng(0)
    for size in range(1, 16):
        t = random_tree(size, 2, cfg, rng)
        assert t.is_valid() and len(t) == size
    only_binary = SyntheticConfig(unary_operators=())
    for size in (2, 4, 7):
        t = random_tree(size, 2, only_binary, rng)
        assert t.is_valid() and len(t) % 2 == 1


def test_canonical_form_ignores_names_order_and_rounding():
    a = canonical_form(parse_formula("2*b + a", ["a", "b"]), 2)
    b = canonical_form(parse_formula("x1 + 2*x2", ["x1", "x2"]), 2)
    c = canonical_form(parse_formula("x2*2.0000001 + x1", ["x1", "x2"]), 2)
    assert a == b == c
    assert canonical_form(parse_formula("x1 + 3*x2", ["x1", "x2"]), 2) != a


def test_heldout_forms_cover_builtin_suites():
    forms = heldout_canonical_forms()
    for p in get_suite("seeds") + get_suite("nguyen"):
        assert problem_canonical_form(p) in forms
    # a renamed copy of a held-out formula is recognised
    assert canonical_form(parse_formula("sqrt(u**2 + w**2 + v**2)", ["u", "v", "w"]), 3) in forms


def test_generate_problems_valid_distinct_and_heldout(tmp_path):
    cfg = SyntheticConfig(nfeatures=(1, 2), complexity=(3, 9), n_points=50, test_points=50)
    problems = generate_problems(12, cfg, np.random.default_rng(0))
    assert len(problems) == 12
    forms = [problem_canonical_form(p) for p in problems]
    assert len(set(forms)) == 12
    assert not set(forms) & heldout_canonical_forms()
    for p in problems:
        X, y = p.sample(np.random.default_rng(1))
        assert np.all(np.isfinite(y)) and np.std(y) > 0
        binary, unary = p.operators.names()
        assert binary == cfg.binary_operators and set(unary) <= set(cfg.unary_operators)
        # The search's operators can always express the truth.
        assert {o.name for o in p.truth().operators_used() if o.arity == 1} <= set(unary)
    again = generate_problems(12, cfg, np.random.default_rng(0))
    assert [p.formula for p in again] == [p.formula for p in problems]  # seeded
    back = load_problem_file(dump_problem_file(problems, tmp_path / "synthetic.yaml"))
    assert [p.formula for p in back] == [p.formula for p in problems]


def test_generate_problems_exhausted_raises():
    from ttsr_bridge.bench.problems import ProblemError

    cfg = SyntheticConfig(binary_operators=("+",), unary_operators=(), nfeatures=(1, 1), complexity=(1, 1),
                          constant_probability=0.0, max_attempts_per_problem=20)
    with pytest.raises(ProblemError, match="distinct"):
        generate_problems(3, cfg, np.random.default_rng(0))  # only "x1" exists, and it is held out


def test_config_validation():
    with pytest.raises(ValueError):
        SyntheticConfig(nfeatures=(3, 1))
    with pytest.raises(KeyError):
        SyntheticConfig(unary_operators=("nope",))


def test_operator_subsets_vary_and_can_be_disabled():
    cfg = SyntheticConfig(nfeatures=(1, 2), complexity=(3, 9))
    sets = {p.operators.names()[1] for p in generate_problems(20, cfg, np.random.default_rng(3))}
    assert len(sets) > 3
    fixed = SyntheticConfig(nfeatures=(1, 2), complexity=(3, 9), operator_subsets=False)
    assert {p.operators.names()[1] for p in generate_problems(5, fixed, np.random.default_rng(3))} == {
        fixed.unary_operators}
