import math

import numpy as np
import pytest

from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.search import SearchConfig
from ttsr_bridge.search.adaptive_parsimony import RunningSearchStatistics
from ttsr_bridge.search.mutate import (
    ALL_MUTATIONS,
    MutationPlan,
    annealing_probability,
    condition_mutation_weights,
    finish_mutation,
)
from ttsr_bridge.search.options import SearchOptions
from ttsr_bridge.search.population import Lineage, PopMember, Population
from ttsr_bridge.search.random_stream import RandomStream
from ttsr_bridge.search.tournament import best_of_sample, tournament_weights


def member(cost, cx=3, ref=0):
    return PopMember(Expr([0], [1.0]), cost, cost, ref, cx, ref)


def test_tournament_rank_probabilities():
    # population == sample: the winner's rank distribution must be p(1-p)^i normalised
    cfg = SearchConfig.preset("pysr", population_size=5, tournament_selection_n=5,
                              tournament_selection_p=0.5, use_frequency_in_tournament=False)
    pop = Population([member(float(c), ref=c) for c in (4, 0, 3, 1, 2)])
    gen = np.random.default_rng(0)
    stats = RunningSearchStatistics(cfg.maxsize)
    n = 20000
    counts = np.zeros(5)
    for _ in range(n):
        counts[int(best_of_sample(pop, stats, cfg, gen).cost)] += 1
    expected = tournament_weights(5, 0.5) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # 4 dof, p ~ 4e-4


def test_tournament_frequency_penalty_steers_away_from_crowded_size():
    cfg = SearchConfig.preset("pysr", population_size=2, tournament_selection_n=2, tournament_selection_p=1.0)
    pop = Population([member(1.0, cx=3, ref=1), member(1.1, cx=5, ref=2)])
    stats = RunningSearchStatistics(cfg.maxsize)
    stats.frequencies[3] += 1000
    stats.normalize_frequencies()
    gen = np.random.default_rng(1)
    assert all(best_of_sample(pop, stats, cfg, gen).ref == 2 for _ in range(20))
    off = cfg.replace(use_frequency_in_tournament=False)
    assert all(best_of_sample(pop, stats, off, gen).ref == 1 for _ in range(20))


def test_annealing_probability_julia_semantics():
    assert annealing_probability(2.0, 1.0, 1.0, 1.0) == pytest.approx(math.exp(-1))
    assert annealing_probability(0.5, 1.0, 0.5, 2.0) == pytest.approx(math.exp(0.5))
    assert annealing_probability(2.0, 1.0, 0.0, 3.17) == 0.0
    assert math.isnan(annealing_probability(1.0, 1.0, 0.0, 3.17))  # NaN: accepted as in Julia


def _plan(parent, tree, temperature=1.0):
    p = MutationPlan(0, parent, temperature)
    p.tree, p.size, p.trace_type = tree, len(tree), "mutate_operator"
    return p


def test_finish_mutation_acceptance_rates_and_reasons():
    cfg = SearchConfig.preset("pysr", annealing=True, alpha=1.0, use_frequency=False)
    opts = SearchOptions(cfg, 1)
    rs = RandomStream(np.random.default_rng(0))
    lin = Lineage()
    parent = PopMember(op("+", var(0), const(1.0)), 1.0, 1.0, 1, 3, 10**9)
    child = op("+", var(0), const(2.0))
    acc = 0
    n = 4000
    for _ in range(n):
        baby, ok, result, reason = finish_mutation(_plan(parent, child), 2.0, None, opts, rs, lin, 1.0, True)
        acc += ok
        assert (result, reason) == (("accept", "pass") if ok else ("reject", "annealing_or_frequency"))
        assert baby.parent == 10**9 and baby.ref != 10**9
        if not ok:
            assert baby.tree is parent.tree and baby.loss == 1.0
    assert acc / n == pytest.approx(math.exp(-1), abs=0.03)
    failed = _plan(parent, child)
    failed.failed = True
    assert finish_mutation(failed, math.nan, None, opts, rs, lin, 1.0, True)[2:] == ("reject", "failed_constraint_check")


def test_frequency_ratio_in_acceptance():
    cfg = SearchConfig.preset("pysr", annealing=False, use_frequency=True)
    opts = SearchOptions(cfg, 1)
    rs = RandomStream(np.random.default_rng(0))
    freqs = [0.0] * (cfg.maxsize + 1)
    freqs[3], freqs[5] = 0.1, 0.4
    parent = PopMember(op("+", var(0), const(1.0)), 1.0, 1.0, 1, 3, 10**9)
    child = op("+", var(0), op("*", const(2.0), var(0)))
    n = 4000
    acc = sum(finish_mutation(_plan(parent, child), 0.5, freqs, opts, rs, Lineage(), 1.0, True)[1] for _ in range(n))
    assert acc / n == pytest.approx(0.25, abs=0.03)


def test_condition_mutation_weights():
    cfg = SearchConfig.preset("pysr")
    opts = SearchOptions(cfg, 1)
    idx = {n: i for i, n in enumerate(ALL_MUTATIONS)}
    w = list(cfg.mutation_weights.as_tuple())
    leaf = PopMember(Expr([1]), 1.0, 1.0, 0, 1, 0)
    condition_mutation_weights(w, leaf, opts, 30)
    assert w[idx["mutate_operator"]] == w[idx["delete_node"]] == w[idx["mutate_constant"]] == 0
    w = list(cfg.mutation_weights.as_tuple())
    t = op("sin", var(0)) if False else op("+", var(0), var(0))
    big = PopMember(t, 1.0, 1.0, 0, 30, 0)
    condition_mutation_weights(w, big, opts, 30)
    assert w[idx["add_node"]] == w[idx["insert_node"]] == w[idx["mutate_constant"]] == 0
    assert w[idx["mutate_feature"]] == 0  # one feature only
    assert w[idx["swap_operands"]] > 0
