import numpy as np
import pytest

from ttsr_bridge.expr.tree import const, op, var
from ttsr_bridge.search import SearchConfig
from ttsr_bridge.search import mutation_functions as mf
from ttsr_bridge.search.options import SearchOptions
from ttsr_bridge.search.random_stream import RandomStream


@pytest.fixture
def setup():
    cfg = SearchConfig.preset("pysr", unary_operators=("sin", "exp"), maxsize=20)
    return SearchOptions(cfg, 3), RandomStream(np.random.default_rng(0))


def random_trees(opts, rs, n=200):
    return [mf.gen_random_tree_fixed_size(rs.randint(15) + 1, opts, rs) for _ in range(n)]


MOVES = {
    "mutate_constant": lambda t, o, r: mf.mutate_constant(t, 1.0, o, r),
    "mutate_operator": lambda t, o, r: mf.mutate_operator(t, o, r),
    "mutate_feature": lambda t, o, r: mf.mutate_feature(t, o.nfeatures, r),
    "swap_operands": lambda t, o, r: mf.swap_operands(t, r),
    "append": lambda t, o, r: mf.append_random_op(t, o, r),
    "prepend": lambda t, o, r: mf.prepend_random_op(t, o, r),
    "insert": lambda t, o, r: mf.insert_random_op(t, o, r),
    "delete": lambda t, o, r: mf.delete_random_op(t, r),
    "rotate": lambda t, o, r: mf.randomly_rotate_tree(t, r),
    "randomize": lambda t, o, r: mf.randomize_tree(t, 10, o, r),
}


@pytest.mark.parametrize("name", sorted(MOVES))
def test_every_mutation_gives_valid_trees_and_leaves_parent_alone(setup, name):
    opts, rs = setup
    allowed = set(opts.binary_codes + opts.unary_codes)
    for t in random_trees(opts, rs):
        before = t.key()
        child = MOVES[name](t, opts, rs)
        assert t.key() == before  # trees are values
        assert child.is_valid()
        assert all(c <= opts.nfeatures for c in child.codes)
        assert all(c in allowed for c in child.codes if c < 0)


def test_size_effects(setup):
    opts, rs = setup
    for t in random_trees(opts, rs):
        assert len(mf.swap_operands(t, rs)) == len(t)
        assert len(mf.randomly_rotate_tree(t, rs)) == len(t)
        assert len(mf.mutate_operator(t, opts, rs)) == len(t)
        assert len(mf.append_random_op(t, opts, rs)) in (len(t) + 1, len(t) + 2)
        d = mf.delete_random_op(t, rs)
        assert len(d) < len(t) or len(t) == 1 or t.codes.count(0) + len(t.feature_indices()) == len(t)
        a, b = mf.crossover_trees(t, t, rs)
        assert len(a) + len(b) == 2 * len(t)
    for n in range(1, 16):
        assert len(mf.gen_random_tree_fixed_size(n, opts, rs)) == n


def test_rotation_is_a_rotation(setup):
    opts, rs = setup
    t = op("+", op("*", var(0), var(1)), var(2))  # (x1*x2)+x3 -> x1*(x2+x3) or x2... rotations
    seen = {tuple(mf.randomly_rotate_tree(t, rs).codes) for _ in range(50)}
    mul, add = t.codes[1], t.codes[0]
    assert (mul, 1, add, 2, 3) in seen  # pivot x1*x2 up, grandchild x2 moves to old root
    assert (mul, add, 1, 3, 2) in seen


def test_mutate_feature_changes_feature_and_constant_factor(setup):
    opts, rs = setup
    t = op("+", var(0), const(2.0))
    for _ in range(20):
        assert mf.mutate_feature(t, 3, rs).codes[1] in (2, 3)
    factors = [mf.mutate_factor(1.0, opts, rs) for _ in range(2000)]
    mx = opts.perturbation_factor + 1.1
    assert all(1 / mx - 1e-12 <= abs(f) <= mx + 1e-12 for f in factors)
    # SR.jl flips the sign when rand() > probability_negate_constant (kept as written)
    assert np.mean(np.array(factors) < 0) > 0.95


def test_gen_random_tree_starts_from_one(setup):
    opts, rs = setup
    t = mf.gen_random_tree(0, opts, rs)
    assert t.codes == [0] and t.vals == [1.0]
    assert len(mf.gen_random_tree(3, opts, rs)) <= 7
