"""Exact recovery with the ``pysr`` preset at small budgets (the issue's done criterion, in
miniature: ``python -m ttsr_bridge.bench.recovery_check`` runs the full check).

Budgets are evaluation counts (deterministic for a given ``random_state``); the wall-clock
limits (search and SymPy check) are only safety nets for a loaded machine. Each problem needs
well under a fifth of its budget here."""

import itertools

import numpy as np
import pytest

from ttsr_bridge.bench.recovery_check import RecoveryWatcher, check_problem
from ttsr_bridge.bench.suites import get_suite
from ttsr_bridge.search import SearchConfig, equation_search


def _problem(suite: str, name: str):
    return next(p for p in get_suite(suite) if p.name == name)


@pytest.mark.parametrize("suite,name", [("harder", "polynomial_product"),
                                        ("harder", "quadratic_discriminant"),
                                        ("nguyen", "nguyen1")])
def test_pysr_preset_recovers_the_truth(suite, name):
    r = check_problem(_problem(suite, name), time_limit=60.0, seed=0, max_evals=600_000,
                      sympy_timeout=60.0)
    assert r.recovered, r
    assert r.stop_reason == "callback"
    assert r.evaluations < 600_000


@pytest.mark.slow
def test_pysr_preset_recovers_a_trigonometric_nguyen_problem():
    # Nguyen-5 (sin(x**2)*cos(x) - 1, Koza operators): ~0.5M evaluations at seed 0
    r = check_problem(_problem("nguyen", "nguyen5"), time_limit=120.0, seed=0, max_evals=2_000_000,
                      sympy_timeout=60.0)
    assert r.recovered, r


def test_callback_sees_every_iteration_and_can_stop_the_search():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (40, 2))
    y = X[:, 0] * X[:, 1]
    cfg = SearchConfig.preset("pysr", populations=3, population_size=16, tournament_selection_n=8,
                              ncycles_per_iteration=10, niterations=5, random_state=1)
    calls = []

    def cb(iteration, hof, num_evals, seconds):
        calls.append((iteration, num_evals, seconds, len(hof.existing())))
        return iteration == 2

    res = equation_search(X, y, cfg, callback=cb)
    assert [c[0] for c in calls] == [0, 1, 2]
    assert all(a[1] < b[1] for a, b in itertools.pairwise(calls))  # evaluations grow
    assert all(c[3] > 0 for c in calls)
    assert res.iterations == 2 and res.stats.stop_reason == "callback"
    full = equation_search(X, y, cfg, callback=lambda *a: False)
    assert full.iterations == 5 and full.stats.stop_reason == "niterations"


def test_watcher_only_asks_sympy_about_low_loss_members():
    from ttsr_bridge.expr.tree import const, op, var
    from ttsr_bridge.search.hall_of_fame import HallOfFame
    from ttsr_bridge.search.population import PopMember

    truth = op("*", var(0), var(0))
    y = np.linspace(-1, 1, 30) ** 2
    w = RecoveryWatcher(truth, ["x"], y)
    hof = HallOfFame(10)
    hof.consider(PopMember(op("+", var(0), const(1.0)), 0.5, 0.5, 1, 3, 1))
    assert not w(1, hof, 100.0, 0.1) and w.checks == 0  # loss far too high: no SymPy call
    hof.consider(PopMember(op("*", var(0), op("/", var(0), const(1.0000000001))), 0.0, 1e-25, 2, 5, 2))
    assert w(2, hof, 200.0, 0.2) and w.checks == 1
    assert w.found is not None and w.found_at == (2, 200.0, 0.2)


def test_recovery_check_cli_iteration_budget(capsys):
    import json

    from ttsr_bridge.bench.recovery_check import main

    with pytest.raises(SystemExit) as e:
        main(["--suite", "nguyen", "--select", "nguyen7", "--niterations", "0"])
    assert e.value.code == 2 and "--niterations must be >= 1" in capsys.readouterr().err
    # Nguyen-7 is not recovered in one iteration: each run ends on its iteration budget
    assert main(["--suite", "nguyen", "--select", "nguyen7", "--niterations", "1", "--seed", "3",
                 "--seeds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["problem"], r["seed"]) for r in out["results"]] == [("nguyen7", 3), ("nguyen7", 4)]
    assert all(r["stop_reason"] == "niterations" and r["iterations"] == 1 for r in out["results"])
    s = out["summary"]
    assert (s["problems"], s["runs"], s["recovered_by_problem"]) == (1, 2, {"nguyen7": 0})
    with pytest.raises(SystemExit):
        main(["--suite", "nguyen", "--seeds", "0"])
