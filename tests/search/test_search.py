import json
import math

import numpy as np
import pytest

from ttsr_bridge.expr.tree import Expr
from ttsr_bridge.search import SearchConfig, equation_search

SMALL = dict(populations=4, population_size=20, ncycles_per_iteration=30, niterations=3,
             tournament_selection_n=8, maxsize=15)


def data(f, n=60, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, d))
    return X, f(X)


def snapshot(res):
    return [(m.tree.key(), m.loss, m.birth, m.ref, m.parent) for pop in res.populations for m in pop.members]


def test_same_seed_same_search_and_different_seed_differs():
    X, y = data(lambda X: X[:, 0] ** 2 + X[:, 0])
    cfg = SearchConfig.preset("pysr", random_state=7, **SMALL)
    a, b = equation_search(X, y, cfg), equation_search(X, y, cfg)
    assert snapshot(a) == snapshot(b) and a.num_evals == b.num_evals
    c = equation_search(X, y, cfg.replace(random_state=8))
    assert snapshot(c) != snapshot(a)


def test_population_invariants_after_search():
    X, y = data(lambda X: X[:, 0] * X[:, 1])
    cfg = SearchConfig.preset("pysr", random_state=1, annealing=True, unary_operators=("sin",), **SMALL)
    res = equation_search(X, y, cfg)
    refs = set()
    for pop in res.populations:
        assert len(pop) == cfg.population_size
        for i, m in enumerate(pop.members):
            assert m.tree.is_valid() and m.complexity == len(m.tree) and m.complexity <= cfg.maxsize
            assert pop.cost[i] == m.cost or (math.isinf(m.cost) and math.isinf(pop.cost[i]))
            assert pop.birth[i] == m.birth
            refs.add(m.ref)
    front = res.pareto_front()
    assert front and all(a.loss > b.loss for a, b in zip(front, front[1:]))
    assert res.iterations == cfg.niterations and res.stats.stop_reason == "niterations"


@pytest.mark.parametrize("budget,reason", [({"max_evals": 3000}, "max_evals"),
                                           ({"timeout_in_seconds": 0.3}, "timeout_in_seconds"),
                                           ({"early_stop_condition": 1e-3}, "early_stop_condition")])
def test_budgets_stop_the_search(budget, reason):
    X, y = data(lambda X: 2.0 * X[:, 0])
    cfg = SearchConfig.preset("pysr", random_state=3, **{**SMALL, "niterations": 1000}, **budget)
    res = equation_search(X, y, cfg)
    assert res.stats.stop_reason == reason
    assert res.iterations < 1000
    if reason == "max_evals":
        assert res.num_evals >= 3000 and res.num_evals < 3000 + 10_000


@pytest.mark.parametrize("truth,f", [("x0**2 + x0", lambda X: X[:, 0] ** 2 + X[:, 0]),
                                     ("2.5*x0*x1", lambda X: 2.5 * X[:, 0] * X[:, 1])])
def test_recovers_easy_problems(truth, f):
    from ttsr_bridge.expr.sympy_bridge import equivalent

    X, y = data(f, n=80)
    cfg = SearchConfig.preset("pysr", random_state=0, populations=6, population_size=27,
                              ncycles_per_iteration=60, niterations=6, maxsize=12, early_stop_condition=1e-10)
    res = equation_search(X, y, cfg)
    best = min(res.pareto_front(), key=lambda m: m.loss)
    assert best.loss < 1e-10
    assert equivalent(best.tree, truth, ["x0", "x1"], tol=1e-5)


class RecordingProposer:
    """Returns a fixed child, a malformed one, an oversize one or None, in turn."""

    def __init__(self):
        self.batches = []
        self.outcomes = []

    def propose(self, requests, rng):
        self.batches.append(len(requests))
        out = []
        for i, r in enumerate(requests):
            k = i % 4
            if k == 0:
                out.append(Expr([-3, 1, 0], [0.0, 0.0, 1.5]))  # x1 * 1.5
            elif k == 1:
                out.append(Expr([-3, 1]))  # malformed
            elif k == 2:
                out.append(Expr([-1] * 40 + [1] * 41))  # over maxsize
            else:
                out.append(None)
        return out

    def feedback(self, outcomes):
        self.outcomes.extend(outcomes)


def test_proposer_hook_batches_and_counts_fallbacks():
    X, y = data(lambda X: 1.5 * X[:, 0])
    cfg = SearchConfig.preset("pysr", random_state=2, **SMALL)
    prop = RecordingProposer()
    res = equation_search(X, y, cfg, proposer=prop, neural_weight=5.0)
    ps = res.stats.proposer
    assert ps.calls == len(prop.batches) > 0
    assert max(prop.batches) > 1  # several populations' requests in one call
    assert ps.requests == sum(prop.batches) == ps.proposed + ps.fallback
    assert ps.proposed == sum((b + 3) // 4 for b in prop.batches) > 0  # 3 of 4 are unusable
    assert len(prop.outcomes) == ps.requests
    assert sum(o.accepted for o in prop.outcomes) == ps.accepted
    # no proposer: the neural weight is ignored and nothing is counted
    res0 = equation_search(X, y, cfg, neural_weight=5.0)
    assert res0.stats.proposer.requests == 0


def test_classic_proposer_as_peer():
    from ttsr_bridge.propose.classic import ClassicProposer

    X, y = data(lambda X: X[:, 0] + X[:, 1])
    cfg = SearchConfig.preset("pysr", random_state=4, **SMALL)
    prop = ClassicProposer(cfg)
    res = equation_search(X, y, cfg, proposer=prop, neural_weight=10.0)
    ps = res.stats.proposer
    assert ps.proposed > 0 and ps.fallback <= ps.requests * 0.2
    assert prop.feedback_outcomes == ps.requests


def test_trace_written_and_readable(tmp_path):
    from ttsr_bridge.traces.reader import read_trace

    X, y = data(lambda X: X[:, 0] * 2 + 1)
    cfg = SearchConfig.preset("pysr", random_state=5, crossover_probability=0.2, skip_mutation_failures=False,
                              **{**SMALL, "niterations": 1})
    path = tmp_path / "t.jsonl"
    res = equation_search(X, y, cfg, trace=path)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["record_type"] == "search"
    assert len(lines) == 1 + cfg.populations * res.iterations
    tf = read_trace(path)
    assert len(tf.iterations) == cfg.populations * res.iterations and not tf.errors
    rec = json.loads(lines[1])
    assert len(rec["members"]) == cfg.population_size
    kinds = {e["type"] for entry in rec["mutations"].values() for e in entry["events"]}
    assert {"mutate", "death", "tuning"} <= kinds
    types = {e["mutation"].get("type") for entry in rec["mutations"].values() for e in entry["events"]
             if e["type"] == "mutate"}
    assert types & {"rotate_tree", "add_node:append", "add_node:prepend", "delete_node"}


def test_progress_records_every_drop_of_the_lowest_loss():
    """``SearchResult.progress``: (evals, seconds, lowest member loss) each time it dropped,
    checked after every cycle — finer than one point per iteration, and consistent with the
    hall of fame at the end."""
    X, y = data(lambda X: X[:, 0] ** 3 - X[:, 1])
    cfg = SearchConfig.preset("pysr", random_state=3, **{**SMALL, "niterations": 1})
    res = equation_search(X, y, cfg)
    evals = [p[0] for p in res.progress]
    losses = [p[2] for p in res.progress]
    assert len(res.progress) > res.iterations + 1  # finer than the per-iteration callback
    assert evals == sorted(evals) and evals[0] == cfg.populations * cfg.population_size
    assert all(b < a for a, b in zip(losses, losses[1:]))  # strictly dropping
    assert evals[-1] <= res.num_evals
    # the hall of fame keeps the best member it ever saw
    assert min(m.loss for m in res.pareto_front()) <= losses[-1] + 1e-12


@pytest.mark.parametrize("writer", ["inline", "process"])
def test_trace_from_evaluation_batches_matches_packing_each_tree(tmp_path, monkeypatch, writer):
    """The tracer takes children's trees from the engine's evaluation batch (rows of a tree
    table); the file is the one it writes when it packs every tree itself (clock reads aside)."""
    from ttsr_bridge.traces import tracing

    X, y = data(lambda X: X[:, 0] * X[:, 1] - 1)
    cfg = SearchConfig.preset("pysr", random_state=7, crossover_probability=0.2,
                              skip_mutation_failures=False, **{**SMALL, "niterations": 2})
    monkeypatch.setenv("TTSR_TRACE_WRITER", writer)
    rows_used = []
    table = tracing.TraceWriter.tree_table

    def counting_table(self, codes, vals, offsets):
        rows_used.append(len(offsets) - 1)
        return table(self, codes, vals, offsets)

    monkeypatch.setattr(tracing.TraceWriter, "tree_table", counting_table)
    equation_search(X, y, cfg, trace=tmp_path / "batch.jsonl")
    monkeypatch.setattr(tracing.TraceWriter, "tree_table", lambda self, *a: -1)
    equation_search(X, y, cfg, trace=tmp_path / "each.jsonl")
    assert sum(rows_used) > 100

    def untimed(x):
        if isinstance(x, dict):
            return {k: untimed(v) for k, v in x.items() if k not in ("time", "started_at")}
        if isinstance(x, list):
            return [untimed(v) for v in x]
        return x

    def records(name):
        return [untimed(json.loads(line)) for line in (tmp_path / name).read_text().splitlines()[1:]]

    batch, each = records("batch.jsonl"), records("each.jsonl")
    assert len(batch) == cfg.populations * 2 and batch == each
