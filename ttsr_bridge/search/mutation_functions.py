"""SR.jl's mutation functions (``src/MutationFunctions.jl``, v2.0.0-alpha.9) on prefix lists.

Every function takes a tree and returns a NEW :class:`Expr` (the input is never modified), so a
population member's tree can be shared safely. A subtree is a contiguous slice of the code
list, so every move is a list splice. "Pick a random node matching a filter" is SR.jl's
``rand(NodeSampler(; tree, filter))``: uniform over the matching nodes.
"""

from __future__ import annotations

from ..expr.operators import OPERATORS
from ..expr.tree import Expr
from .options import SearchOptions
from .random_stream import RandomStream

__all__ = [
    "append_random_op",
    "crossover_trees",
    "delete_random_op",
    "gen_random_tree",
    "gen_random_tree_fixed_size",
    "insert_random_op",
    "make_random_leaf",
    "mutate_constant",
    "mutate_factor",
    "mutate_feature",
    "mutate_operator",
    "prepend_random_op",
    "randomize_tree",
    "randomly_rotate_tree",
    "swap_operands",
]

class _ArityTable(dict):
    """negative code -> arity, filled on first use (operators may be registered late); a plain
    dict subscript is the cheapest lookup in the hot loops."""

    def __missing__(self, code: int) -> int:
        a = OPERATORS[-code].arity
        self[code] = a
        return a


_AR = _ArityTable()


def _arity(code: int) -> int:
    return _AR[code]


def _new(codes: list[int], vals: list[float]) -> Expr:
    e = Expr.__new__(Expr)
    e.codes = codes
    e.vals = vals
    return e


def _end(codes: list[int], i: int) -> int:
    """subtree_end with the arity cache (hot path)."""
    c = codes[i]
    if c >= 0:
        return i + 1
    ar = _AR
    need = 1
    j = i
    while need:
        c = codes[j]
        if c < 0:
            need += ar[c] - 1
        else:
            need -= 1
        j += 1
    return j


# ---- leaves and random nodes -------------------------------------------------------------------
def make_random_leaf(opts: SearchOptions, rs: RandomStream) -> tuple[int, float]:
    """``make_random_leaf``: a constant (``sample_value``) or a feature, with equal odds."""
    if rs.coin():
        return 0, opts.sample_value(rs)
    return rs.randint(opts.nfeatures) + 1, 0.0


def _random_arity(opts: SearchOptions, rs: RandomStream) -> int:
    """Arity of a new operator: proportional to the number of operators of each arity
    (SR.jl's ``csum = (0, cumsum(nops)...)`` draw)."""
    r = rs.random() * (opts.nuna + opts.nbin)
    return 1 if r < opts.nuna else 2


def _random_op(opts: SearchOptions, arity: int, rs: RandomStream) -> int:
    ops = opts.unary_codes if arity == 1 else opts.binary_codes
    return ops[rs.randint(len(ops))]


def _random_node_with_leaves(opts: SearchOptions, arity: int, rs: RandomStream) -> tuple[list[int], list[float]]:
    """A random operator of ``arity`` over :func:`make_random_leaf` leaves (inlined: the same
    draws in the same order as ``_random_op`` then ``make_random_leaf`` per child)."""
    ops = opts.unary_codes if arity == 1 else opts.binary_codes
    rnd = rs.random
    codes = [ops[int(rnd() * len(ops))]]
    vals = [0.0]
    nf = opts.nfeatures
    for _ in range(arity):
        if rnd() < 0.5:
            codes.append(0)
            vals.append(opts.sample_value(rs))
        else:
            codes.append(int(rnd() * nf) + 1)
            vals.append(0.0)
    return codes, vals


# ---- point mutations -----------------------------------------------------------------------------
def mutate_factor(temperature: float, opts: SearchOptions, rs: RandomStream) -> float:
    """SR.jl's ``mutate_factor``: scale by ``maxChange^U`` or its inverse, then flip the sign
    when ``rand() > probability_negate_constant``. (That comparison is SR.jl's as written, so
    the sign flips in ~99% of constant mutations; kept for fidelity.)"""
    max_change = opts.perturbation_factor * temperature + 1.0 + 0.1
    factor = max_change ** rs.random()
    if not rs.coin():
        factor = 1.0 / factor
    if rs.random() > opts.probability_negate_constant:
        factor = -factor
    return factor


def mutate_constant(tree: Expr, temperature: float, opts: SearchOptions, rs: RandomStream) -> Expr:
    """Multiply one random constant by :func:`mutate_factor` (unchanged if no constant)."""
    codes = tree.codes
    idx = [i for i, c in enumerate(codes) if c == 0]
    if not idx:
        return tree
    i = idx[rs.randint(len(idx))]
    vals = tree.vals.copy()
    vals[i] = vals[i] * mutate_factor(temperature, opts, rs)
    return _new(codes.copy(), vals)


def mutate_operator(tree: Expr, opts: SearchOptions, rs: RandomStream) -> Expr:
    """Replace one random operator by a random operator of the same arity (may be itself)."""
    codes = tree.codes
    idx = [i for i, c in enumerate(codes) if c < 0]
    if not idx:
        return tree
    i = idx[rs.randint(len(idx))]
    new_codes = codes.copy()
    new_codes[i] = _random_op(opts, _arity(codes[i]), rs)
    return _new(new_codes, tree.vals.copy())


def mutate_feature(tree: Expr, nfeatures: int, rs: RandomStream) -> Expr:
    """Point one random variable leaf at a different feature (needs >= 2 features)."""
    if nfeatures <= 1:
        return tree
    codes = tree.codes
    idx = [i for i, c in enumerate(codes) if c > 0]
    if not idx:
        return tree
    i = idx[rs.randint(len(idx))]
    old = codes[i] - 1
    new = rs.randint(nfeatures - 1)
    if new >= old:
        new += 1  # uniform over the other features
    new_codes = codes.copy()
    new_codes[i] = new + 1
    return _new(new_codes, tree.vals.copy())


def swap_operands(tree: Expr, rs: RandomStream) -> Expr:
    """Swap the two children of a random binary operator."""
    codes = tree.codes
    idx = [i for i, c in enumerate(codes) if c < 0 and _arity(c) == 2]
    if not idx:
        return tree
    i = idx[rs.randint(len(idx))]
    l0 = i + 1
    r0 = _end(codes, l0)
    e = _end(codes, r0)
    vals = tree.vals
    return _new(
        codes[:l0] + codes[r0:e] + codes[l0:r0] + codes[e:],
        vals[:l0] + vals[r0:e] + vals[l0:r0] + vals[e:],
    )


# ---- growing and shrinking -------------------------------------------------------------------------
def append_random_op(tree: Expr, opts: SearchOptions, rs: RandomStream) -> Expr:
    """Replace a random leaf by a new operator whose children are random leaves."""
    codes = tree.codes
    idx = [i for i, c in enumerate(codes) if c >= 0]
    i = idx[rs.randint(len(idx))]
    arity = _random_arity(opts, rs)
    nc, nv = _random_node_with_leaves(opts, arity, rs)
    return _new(codes[:i] + nc + codes[i + 1:], tree.vals[:i] + nv + tree.vals[i + 1:])


def prepend_random_op(tree: Expr, opts: SearchOptions, rs: RandomStream) -> Expr:
    """A new random operator on top of the tree; the old tree is one of its children."""
    arity = _random_arity(opts, rs)
    op = _random_op(opts, arity, rs)
    carry = rs.randint(arity)
    codes = [op]
    vals = [0.0]
    for j in range(arity):
        if j == carry:
            codes += tree.codes
            vals += tree.vals
        else:
            c, v = make_random_leaf(opts, rs)
            codes.append(c)
            vals.append(v)
    return _new(codes, vals)


def insert_random_op(tree: Expr, opts: SearchOptions, rs: RandomStream) -> Expr:
    """Insert a random operator above a random node; the node becomes one of its children."""
    codes = tree.codes
    vals = tree.vals
    i = rs.randint(len(codes))
    e = _end(codes, i)
    arity = _random_arity(opts, rs)
    op = _random_op(opts, arity, rs)
    carry = rs.randint(arity)
    nc = [op]
    nv = [0.0]
    for j in range(arity):
        if j == carry:
            nc += codes[i:e]
            nv += vals[i:e]
        else:
            c, v = make_random_leaf(opts, rs)
            nc.append(c)
            nv.append(v)
    return _new(codes[:i] + nc + codes[e:], vals[:i] + nv + vals[e:])


def delete_random_op(tree: Expr, rs: RandomStream) -> Expr:
    """Replace a random operator node by one of its children (SR.jl's ``delete_random_op!``)."""
    codes = tree.codes
    idx = [i for i, c in enumerate(codes) if c < 0]
    if not idx:
        return tree
    i = idx[rs.randint(len(idx))]
    children = _children(codes, i)
    cs, ce = children[rs.randint(len(children))]
    e = children[-1][1]
    vals = tree.vals
    return _new(codes[:i] + codes[cs:ce] + codes[e:], vals[:i] + vals[cs:ce] + vals[e:])


# ---- random trees ------------------------------------------------------------------------------------
def gen_random_tree(length: int, opts: SearchOptions, rs: RandomStream) -> Expr:
    """SR.jl's ``gen_random_tree``: the constant ``1.0`` (``init_value``) grown by ``length``
    :func:`append_random_op` calls (the initial populations use ``length = 3``)."""
    tree = _new([0], [1.0])
    for _ in range(length):
        tree = append_random_op(tree, opts, rs)
    return tree


def _arity_picker(remaining: int, opts: SearchOptions, rs: RandomStream) -> int:
    """SR.jl's ``_arity_picker``: an arity that fits in ``remaining`` nodes, proportional to the
    number of operators of each arity; 0 when none fits."""
    total = opts.nuna + (opts.nbin if remaining >= 2 else 0)
    if total == 0:
        return 0
    thresh = rs.randint(total) + 1
    if remaining >= 2 and thresh > opts.nuna:
        return 2
    return 1


def gen_random_tree_fixed_size(node_count: int, opts: SearchOptions, rs: RandomStream) -> Expr:
    """SR.jl's ``gen_random_tree_fixed_size``: grow a random leaf by expanding random leaves
    until the tree has ``node_count`` nodes (or no operator fits the remaining room)."""
    c, v = make_random_leaf(opts, rs)
    codes = [c]
    vals = [v]
    cur = 1
    while True:
        remaining = node_count - cur
        if remaining == 0:
            break
        arity = _arity_picker(remaining, opts, rs)
        if arity == 0:
            break
        leaves = [i for i, cc in enumerate(codes) if cc >= 0]
        i = leaves[rs.randint(len(leaves))]
        nc, nv = _random_node_with_leaves(opts, arity, rs)
        codes = codes[:i] + nc + codes[i + 1:]
        vals = vals[:i] + nv + vals[i + 1:]
        cur += arity
    return _new(codes, vals)


def randomize_tree(tree: Expr, curmaxsize: int, opts: SearchOptions, rs: RandomStream) -> Expr:
    """A fresh random tree of a random size in ``1:curmaxsize``."""
    return gen_random_tree_fixed_size(rs.randint(curmaxsize) + 1, opts, rs)


# ---- rotation and crossover --------------------------------------------------------------------------
def _children(codes: list[int], i: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each child of operator ``i``."""
    j = i + 1
    e = _end(codes, j)
    if _AR[codes[i]] == 1:
        return [(j, e)]
    return [(j, e), (e, _end(codes, e))]


def _rotation_roots(codes: list[int]) -> list[int]:
    """Operator nodes with at least one operator child, in prefix order. In prefix order the
    first child of node ``i`` starts at ``i + 1``; when that child is a leaf, the second child
    (if any) starts at ``i + 2``, so no subtree ends are needed."""
    ar = _AR
    n1 = len(codes) - 1
    return [i for i in range(n1) if codes[i] < 0 and (codes[i + 1] < 0 or (ar[codes[i]] == 2 and codes[i + 2] < 0))]


def randomly_rotate_tree(tree: Expr, rs: RandomStream) -> Expr:
    """SR.jl's ``randomly_rotate_tree!``: pick a random operator node with an operator child
    (the root is chosen with probability 1/#valid, the rest uniformly: overall uniform), take a
    random operator child as pivot and a random child of the pivot as grandchild, then make the
    pivot the subtree's root, the old root the pivot's child and the grandchild the old root's
    child (a generalised tree rotation)."""
    codes, vals = tree.codes, tree.vals
    valid = _rotation_roots(codes)
    if not valid:
        return tree
    r = valid[rs.randint(len(valid))]
    ar = _AR
    # the root's children [s0, e0) and [e0, re) (binary) or [s0, re) (unary)
    s0 = r + 1
    e0 = _end(codes, s0)
    if ar[codes[r]] == 1:
        rs.randint(1)  # the pivot is drawn among the operator children even when there is one
        ps, pe, re = s0, e0, e0
    else:
        re = _end(codes, e0)
        if codes[s0] < 0 and codes[e0] < 0:
            first = rs.randint(2) == 0
        else:
            rs.randint(1)
            first = codes[s0] < 0
        ps, pe = (s0, e0) if first else (e0, re)
    # the pivot's children; the grandchild is [gs, ge)
    q0 = ps + 1
    if ar[codes[ps]] == 1:
        rs.randint(1)
        gs, ge = q0, pe
    else:
        q1 = _end(codes, q0)
        gs, ge = (q0, q1) if rs.randint(2) == 0 else (q1, pe)
    # pivot, its children before the grandchild, [old root, its children with the pivot
    # replaced by the grandchild], the pivot's children after the grandchild
    return _new(
        codes[:r] + [codes[ps]] + codes[q0:gs] + [codes[r]] + codes[s0:ps] + codes[gs:ge] + codes[pe:re]
        + codes[ge:pe] + codes[re:],
        vals[:r] + [0.0] + vals[q0:gs] + [0.0] + vals[s0:ps] + vals[gs:ge] + vals[pe:re] + vals[ge:pe]
        + vals[re:],
    )


def crossover_trees(tree1: Expr, tree2: Expr, rs: RandomStream) -> tuple[Expr, Expr]:
    """Swap a uniformly random subtree of ``tree1`` with one of ``tree2``."""
    c1, v1, c2, v2 = tree1.codes, tree1.vals, tree2.codes, tree2.vals
    i = rs.randint(len(c1))
    j = rs.randint(len(c2))
    ie = _end(c1, i)
    je = _end(c2, j)
    out1 = _new(c1[:i] + c2[j:je] + c1[ie:], v1[:i] + v2[j:je] + v1[ie:])
    out2 = _new(c2[:j] + c1[i:ie] + c2[je:], v2[:j] + v1[i:ie] + v2[je:])
    return out1, out2

