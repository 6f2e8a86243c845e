"""The engine's fast paths agree with the plain definitions they replace."""

from itertools import accumulate

import numpy as np
import pytest

from ttsr_bridge.expr.simplify import combine_operators, simplify_tree
from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.search import SearchConfig
from ttsr_bridge.search import mutation_functions as mf
from ttsr_bridge.search.mutate import ALL_MUTATIONS, _conditioned_cumsum, condition_mutation_weights
from ttsr_bridge.search.options import SearchOptions
from ttsr_bridge.search.population import Lineage, PopMember, Population
from ttsr_bridge.search.random_stream import RandomStream
from ttsr_bridge.search.search import _may_simplify
from ttsr_bridge.search.tournament import best_of_sample_batch, tournament_weights


def _opts(unary=("sin", "exp"), nfeatures=3, **kw):
    return SearchOptions(SearchConfig.preset("pysr", unary_operators=unary, **kw), nfeatures)


def _trees(opts, seed=0, n=3000, maxlen=20):
    rs = RandomStream(np.random.default_rng(seed))
    return [mf.gen_random_tree_fixed_size(rs.randint(maxlen) + 1, opts, rs) for _ in range(n)]


@pytest.mark.parametrize("unary", [(), ("sin", "exp", "neg")])
def test_may_simplify_never_misses_a_rewrite(unary):
    opts = _opts(unary, nfeatures=2)
    flagged = 0
    for t in _trees(opts, seed=len(unary)):
        out = combine_operators(simplify_tree(t))
        changed = out.codes != t.codes or out.vals != t.vals
        may = _may_simplify(t.codes)
        flagged += may
        assert may or not changed, t
    assert flagged < 3000  # it does rule trees out


def test_may_simplify_patterns():
    x, y = var(0), var(1)
    assert not _may_simplify(op("+", x, const(1.0)).codes)  # (x + c): already canonical
    assert _may_simplify(op("+", const(1.0), x).codes)  # constant moves right
    assert _may_simplify(op("*", op("*", x, const(2.0)), const(3.0)).codes)  # merge
    assert _may_simplify(op("-", op("-", x, const(2.0)), const(3.0)).codes)
    assert not _may_simplify(op("-", op("*", x, const(2.0)), const(3.0)).codes)
    assert _may_simplify(op("sin", const(2.0)).codes)  # folding
    assert not _may_simplify(op("sin", op("*", x, y)).codes)


def test_conditioned_cumsum_matches_condition_mutation_weights():
    opts = _opts()
    base = list(SearchConfig.preset("pysr").mutation_weights.as_tuple())
    for t in _trees(opts, n=800):
        for curmax in (5, 12, 30):
            parent = PopMember(t, 1.0, 1.0, 0, len(t), 0)
            w = base.copy()
            condition_mutation_weights(w, parent, opts, curmax)
            cum = _conditioned_cumsum(base, parent, opts, curmax, False)
            assert cum == list(accumulate(w))  # the same sequential sums
    assert len(opts.weight_cache) < 100
    w = base.copy()
    w[ALL_MUTATIONS.index("neural")] = 2.0
    cum = _conditioned_cumsum(w, PopMember(Expr([1]), 1.0, 1.0, 0, 1, 0), opts, 30, True)
    assert cum[-1] == cum[-2]  # neural excluded


def test_population_oldest_tracking_matches_argmin():
    rng = np.random.default_rng(0)
    lin = Lineage()
    members = [PopMember(Expr([1]), 1.0, 1.0, lin.birth(), 1, lin.ref()) for _ in range(9)]
    pop = Population(members)
    for step in range(3000):
        i = int(rng.integers(9))
        kind = rng.random()
        if kind < 0.7:  # a new child: the newest birth
            m = PopMember(Expr([1]), 1.0, 1.0, lin.birth(), 1, lin.ref())
        elif kind < 0.85:  # a copy of another member (same birth: ties)
            m = pop.members[int(rng.integers(9))].copy()
        else:  # same birth, new ref (as the end-of-iteration re-ref)
            old = pop.members[i]
            m = PopMember(old.tree, old.cost, old.loss, old.birth, 1, lin.ref())
        pop.set(i, m)
        births = np.array([mm.birth for mm in pop.members])
        assert pop.oldest() == int(np.argmin(births))
        o1, o2 = pop.oldest_two()
        b = births.copy()
        b[o1] = np.iinfo(np.int64).max
        assert (o1, o2) == (int(np.argmin(births)), int(np.argmin(b)))
        assert list(pop.birth) == list(births)


def test_tournament_winner_distribution_with_ties_and_penalty():
    # a row of tied costs and a NaN (0 * inf) member: exact winner probabilities by rank
    S, n, p = 6, 6, 0.5
    cost = np.array([[2.0, 1.0, 1.0, 3.0, 0.0, 5.0]])
    cx = np.array([[1, 1, 1, 1, 2, 1]])
    pen = np.ones((1, 4))
    pen[0, 2] = np.inf  # member 4: 0 * inf = NaN, sorted last
    cw = np.cumsum(tournament_weights(n, p))
    rows = np.zeros(60000, dtype=np.int64)
    win = best_of_sample_batch(cost, cx, pen, rows, n, cw, np.random.default_rng(1))
    counts = np.bincount(win, minlength=S) / len(win)
    w = tournament_weights(n, p)
    # n == S: slot order breaks the tie, so the order is 1, 2, 0, 3, 5, 4(NaN)
    expected = np.zeros(S)
    for rank, slot in enumerate([1, 2, 0, 3, 5, 4]):
        expected[slot] = w[rank]
    assert np.allclose(counts, expected, atol=0.01)
    # n < S: every member of a tie is equally likely to win among equals
    cost2 = np.zeros((1, 8))
    win2 = best_of_sample_batch(cost2, np.ones((1, 8), dtype=np.int64), None, np.zeros(40000, dtype=np.int64),
                                3, np.cumsum(tournament_weights(3, 0.9)), np.random.default_rng(2))
    assert np.allclose(np.bincount(win2, minlength=8) / 40000, 1 / 8, atol=0.01)


def test_rotation_matches_the_node_definition():
    # the fast rotation equals the textbook one on small trees with every pivot choice
    opts = _opts(("sin",), nfeatures=2)
    rs = RandomStream(np.random.default_rng(4))
    t = op("+", op("*", var(0), op("sin", var(1))), const(2.0))
    seen = {tuple(mf.randomly_rotate_tree(t, rs).codes) for _ in range(200)}
    plus, mul, sin = t.codes[0], t.codes[1], t.codes[3]
    # root + with pivot *: * becomes the root and + takes one of *'s children
    assert (mul, plus, 1, 0, sin, 2) in seen  # grandchild x1 (left of *) moves under +
    assert (mul, 1, plus, sin, 2, 0) in seen  # grandchild sin(x2) moves under +
    # root * with the unary pivot sin: sin(x2 * x1)
    assert (plus, sin, mul, 1, 2, 0) in seen
    for tree in _trees(opts, n=500):
        out = mf.randomly_rotate_tree(tree, rs)
        assert out.is_valid() and sorted(out.codes) == sorted(tree.codes)
