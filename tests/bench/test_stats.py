"""Benchmark statistics on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttsr_bridge.bench.stats import bootstrap_rate_ci, median_iqr, paired_comparison, sign_test, wilcoxon_test


def test_bootstrap_degenerate_rates_have_zero_width():
    rng = np.random.default_rng(0)
    ci = bootstrap_rate_ci([True] * 10, rng)
    assert (ci.rate, ci.low, ci.high, ci.n) == (1.0, 1.0, 1.0, 10)
    ci = bootstrap_rate_ci([False] * 7, rng)
    assert (ci.rate, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_bootstrap_matches_normal_approximation():
    rng = np.random.default_rng(1)
    x = np.array([True] * 50 + [False] * 50)
    ci = bootstrap_rate_ci(x, rng, n_boot=20000)
    half = 1.96 * math.sqrt(0.25 / 100)  # ≈ 0.098
    assert ci.rate == 0.5
    assert ci.low == pytest.approx(0.5 - half, abs=0.015)
    assert ci.high == pytest.approx(0.5 + half, abs=0.015)


def test_bootstrap_is_reproducible_and_cluster_wider():
    x = [True, True, True, False, False, False] * 5
    groups = [f"p{i // 6}" for i in range(30)]  # problems are all-or-nothing... per block of 6
    a = bootstrap_rate_ci(x, np.random.default_rng(5))
    b = bootstrap_rate_ci(x, np.random.default_rng(5))
    assert a == b
    strongly = [True] * 15 + [False] * 15
    clustered = bootstrap_rate_ci(strongly, np.random.default_rng(2), groups=[i // 5 for i in range(30)])
    plain = bootstrap_rate_ci(strongly, np.random.default_rng(2))
    assert clustered.high - clustered.low > plain.high - plain.low
    assert bootstrap_rate_ci(x, np.random.default_rng(0), groups=groups).rate == 0.5


def test_sign_test_known_values():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert sign_test(10, 0) == pytest.approx(2 * 0.5**10)
    assert sign_test(8, 2) == pytest.approx(0.109375)


def test_wilcoxon_known_value_and_undefined_cases():
    assert wilcoxon_test([1.0], [2.0]) is None
    assert wilcoxon_test([1, 2, 3], [1, 2, 3]) is None
    # all 6 differences negative with distinct ranks: exact two-sided p = 2/2^6
    assert wilcoxon_test([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12]) == pytest.approx(2 / 64)


def test_paired_comparison():
    a = [True, True, True, False, True]
    b = [True, False, False, False, True]
    ea = [10.0, 20.0, 5.0, None, 40.0]
    eb = [20.0, None, None, None, 80.0]
    c = paired_comparison("neural", "classic", a, b, ea, eb, np.random.default_rng(0))
    assert c.n_pairs == 5 and c.diff.rate == pytest.approx(0.4)
    assert c.a_only == 2 and c.b_only == 0 and c.sign_p == pytest.approx(0.5)
    assert c.n_both_solved == 2 and c.median_evals_ratio == pytest.approx(0.5)
    assert 0.0 <= c.diff.low <= 0.4 <= c.diff.high <= 0.8
    with pytest.raises(ValueError):
        paired_comparison("a", "b", [True], [True, False], [], [], np.random.default_rng(0))


def test_median_iqr():
    assert median_iqr([1, 2, 3, 4, None, float("nan")]) == pytest.approx((2.5, 1.75, 3.25))
    assert all(math.isnan(v) for v in median_iqr([None]))
