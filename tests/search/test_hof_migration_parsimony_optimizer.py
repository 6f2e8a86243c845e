import math

import numpy as np
import pytest

from ttsr_bridge.expr.evaluate import EvalData, loss_one
from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.search.adaptive_parsimony import RunningSearchStatistics
from ttsr_bridge.search.constant_optimization import optimize_constants_batch
from ttsr_bridge.search.hall_of_fame import HallOfFame
from ttsr_bridge.search.migration import migrate
from ttsr_bridge.search.population import Lineage, PopMember, Population, loss_to_cost


def m(loss, cx, ref=0, cost=None):
    return PopMember(Expr([0] * 1), loss if cost is None else cost, loss, ref, cx, ref)


def test_hall_of_fame_pareto_and_score():
    hof = HallOfFame(10)
    for loss, cx in [(10.0, 1), (4.0, 3), (5.0, 4), (1.0, 5), (0.9, 9), (3.0, 3)]:
        hof.consider(m(loss, cx))
    assert hof.members[3].loss == 3.0  # the better member of size 3 wins
    front = hof.pareto_front()
    assert [(x.complexity, x.loss) for x in front] == [(1, 10.0), (3, 3.0), (5, 1.0), (9, 0.9)]
    table = hof.pareto_table()
    assert table[0].score == 0.0
    assert table[1].score == pytest.approx(-(math.log(3.0) - math.log(10.0)) / 2)
    assert hof.best().complexity == 5  # highest score among losses <= 1.5 x min
    assert not hof.consider(m(0.1, 11))  # beyond maxsize


def test_migration_poisson_and_birth_reset():
    pop = Population([PopMember(Expr([1]), 1.0, 1.0, i, 1, 100 + i) for i in range(50)])
    cands = [PopMember(Expr([0], [7.0]), 0.5, 0.5, 3, 1, 999)]
    lin = Lineage()
    lin._birth = 1000
    gen = np.random.default_rng(0)
    total = sum(migrate(cands, pop, 0.1, gen, lin) for _ in range(200))
    assert 200 * 50 * 0.1 * 0.1 < total  # each call at most len(candidates) = 1
    migrants = [x for x in pop.members if x.ref == 999]
    assert migrants and all(x.birth > 1000 for x in migrants)
    assert pop.birth.tolist() == [x.birth for x in pop.members]  # rows kept in sync
    assert migrate([], pop, 0.5, gen, lin) == 0


def test_running_search_statistics_window():
    s = RunningSearchStatistics(maxsize=5, window_size=20)
    for size in [1, 2, 2, 3, 3, 3] * 5 + [99, 0]:
        s.update_frequencies(size)
    assert s.frequencies[1:].sum() == 5 + 30
    s.move_window()
    assert s.frequencies[1:].sum() == pytest.approx(20, abs=1e-6)
    assert s.frequencies[1:].min() >= 1.0
    s.normalize_frequencies()
    assert s.normalized_frequencies.sum() == pytest.approx(1.0)


def test_loss_to_cost():
    assert loss_to_cost(2.0, 4.0, True, 5, 0.1) == pytest.approx(0.5 + 0.5)
    assert loss_to_cost(2.0, 0.001, True, 5, 0.0) == pytest.approx(200.0)  # floor 0.01


def test_constant_optimisation_improves_loss():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (100, 2))
    y = 2.5 * X[:, 0] * X[:, 1] + 0.7
    data = EvalData(X, y)
    trees = [op("+", op("*", const(1.0), op("*", var(0), var(1))), const(0.1)),
             op("*", const(0.3), var(0)),  # one constant: Newton
             op("*", var(0), var(1))]  # no constant: untouched
    members = [PopMember(t, loss_one(t, data), loss_one(t, data), 1, len(t), i) for i, t in enumerate(trees)]
    lin = Lineage()
    lin._birth = 100
    out, res = optimize_constants_batch(members, data, iterations=8, nrestarts=2, f_calls_limit=10_000,
                                        gen=rng, lineage=lin, baseline=1.0, use_baseline=True,
                                        parsimony=0.0)
    assert out[0].loss < 1e-12 and out[0].tree.vals[2] == pytest.approx(2.5)
    assert out[1].loss < members[1].loss
    assert out[2] is members[2]
    assert out[0].ref == members[0].ref and out[0].birth > 100
    assert res.num_evals > 0 and res.raw_evals > res.num_evals and res.improved == 2
