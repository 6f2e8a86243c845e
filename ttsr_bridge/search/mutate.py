"""``next_generation`` and ``crossover_generation`` (SR.jl ``src/Mutate.jl``, v2.0.0-alpha.9),
split in two halves so that a lockstep step can evaluate every population's child in ONE
batched call:

1. :func:`plan_mutation` conditions the weights (``condition_mutation_weights!``), samples the
   mutation, and applies it up to ``max_attempts = 10`` times until the child passes
   ``check_constraints``; ``simplify`` / ``do_nothing`` / ``optimize`` return immediately.
2. the caller evaluates all planned children;
3. :func:`finish_mutation` applies SR.jl's acceptance: reject ``nan_loss``; otherwise
   ``p = exp(-(after_cost - before_cost) / (temperature * alpha))`` when ``annealing`` times
   ``old_frequency / new_frequency`` when ``use_frequency``; reject ``annealing_or_frequency``
   when ``p < rand()``, else accept ``pass``. A rejected child is a copy of the parent with a
   new ref (SR.jl's ``create_child``), which replaces the oldest member only when
   ``skip_mutation_failures`` is off.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate

from ..expr.tree import Expr
from . import mutation_functions as mf
from .config import MUTATION_NAMES
from .options import SearchOptions
from .population import Lineage, PopMember, loss_to_cost
from .random_stream import RandomStream

__all__ = [
    "MAX_ATTEMPTS",
    "NEURAL",
    "CrossoverPlan",
    "MutationPlan",
    "annealing_probability",
    "apply_mutation",
    "condition_mutation_weights",
    "finish_crossover",
    "finish_mutation",
    "plan_crossover",
    "plan_mutation",
]

NEURAL = "neural"
ALL_MUTATIONS: tuple[str, ...] = MUTATION_NAMES + (NEURAL,)
_IDX = {n: i for i, n in enumerate(ALL_MUTATIONS)}
MAX_ATTEMPTS = 10
IMMEDIATE = frozenset({"simplify", "do_nothing", "optimize"})

# Indices into the weight list (hot path).
_W_CONST, _W_OP, _W_FEAT, _W_SWAP = _IDX["mutate_constant"], _IDX["mutate_operator"], _IDX["mutate_feature"], _IDX["swap_operands"]
_W_ADD, _W_INS, _W_DEL, _W_SIMP = _IDX["add_node"], _IDX["insert_node"], _IDX["delete_node"], _IDX["simplify"]
_W_OPT = _IDX["optimize"]
_GROWING = frozenset({_W_ADD, _W_INS})  # add_node / insert_node grow the tree by the new arity


class MutationPlan:
    """One ``next_generation`` in flight. ``tree`` is the child to evaluate (None when the
    constraint check failed or the result is immediate); ``trace_type`` is the recorded name
    (``add_node`` is recorded as ``add_node:append`` / ``add_node:prepend``, ``do_nothing`` as
    ``identity``, as SR.jl records them)."""

    __slots__ = (
        "choice",
        "cost",
        "failed",
        "fallback",
        "immediate",
        "loss",
        "parent",
        "pop",
        "request",
        "size",
        "temperature",
        "trace_type",
        "tree",
    )

    def __init__(self, pop: int, parent: PopMember, temperature: float):
        self.pop = pop
        self.parent = parent
        self.temperature = temperature
        self.choice = ""
        self.trace_type = ""
        self.tree: Expr | None = None
        self.size = -1
        self.failed = False
        self.immediate: PopMember | None = None
        self.request = None  # ProposalRequest for the neural move
        self.fallback = False
        self.loss = math.nan
        self.cost = math.nan


class CrossoverPlan:
    """One ``crossover_generation`` in flight (two children, or failed)."""

    __slots__ = ("failed", "parent1", "parent2", "pop", "size1", "size2", "tree1", "tree2")

    def __init__(self, pop: int, parent1: PopMember, parent2: PopMember):
        self.pop = pop
        self.parent1 = parent1
        self.parent2 = parent2
        self.tree1: Expr | None = None
        self.tree2: Expr | None = None
        self.size1 = -1
        self.size2 = -1
        self.failed = False


def condition_mutation_weights(weights: list[float], parent: PopMember, opts: SearchOptions, curmaxsize: int) -> None:
    """SR.jl's ``condition_mutation_weights!`` (in place on a copy of the weight list)."""
    codes = parent.tree.codes
    if len(codes) == 1:
        weights[_W_OP] = 0.0
        weights[_W_SWAP] = 0.0
        weights[_W_DEL] = 0.0
        weights[_W_SIMP] = 0.0
        if codes[0] != 0:
            weights[_W_OPT] = 0.0
            weights[_W_CONST] = 0.0
        else:
            weights[_W_FEAT] = 0.0
        return
    # a tree of 2+ nodes has an operator at its root, so without unary operators it always
    # has a binary node
    if opts.nuna and not any(c < 0 and c in opts.binary_set for c in codes):
        weights[_W_SWAP] = 0.0
    nconst = codes.count(0)
    if nconst < 8:
        weights[_W_CONST] *= nconst / 8.0
    if opts.nfeatures <= 1:
        weights[_W_FEAT] = 0.0
    if parent.complexity >= curmaxsize:
        weights[_W_ADD] = 0.0
        weights[_W_INS] = 0.0
    if not opts.should_simplify:
        weights[_W_SIMP] = 0.0


def _sample_index(weights: list[float], rs: RandomStream) -> int:
    """Index of a mutation drawn proportionally to ``weights``; -1 when they sum to 0.
    (The running sums are the sequential sums a loop would make, so the draw is exact: the
    first index whose running sum exceeds ``r`` has a positive weight.)"""
    cum = list(accumulate(weights))
    total = cum[-1]
    if total <= 0:
        return -1
    i = bisect_right(cum, rs.random() * total)
    if i >= len(cum):  # r rounded up to the total: the last positive weight
        i = max(k for k, w in enumerate(weights) if w > 0)
    return i


def _conditioned_cumsum(base_weights: list[float], parent: PopMember, opts: SearchOptions, curmaxsize: int,
                        exclude_neural: bool) -> list[float]:
    """Running sums of the weights :func:`condition_mutation_weights` gives for ``parent``.

    The conditioned weights depend on the parent only through a few facts (a single leaf and
    its kind; a binary node present; min(#constants, 8); complexity >= curmaxsize), so they
    are computed once per combination and cached on ``opts`` (the entry keeps the base list
    alive and is checked by identity, so a new base list never hits a stale entry)."""
    codes = parent.tree.codes
    if len(codes) == 1:
        key = (id(base_weights), exclude_neural, True, codes[0] != 0)
    else:
        swap = not opts.nuna or any(c < 0 and c in opts.binary_set for c in codes)
        nconst = codes.count(0)
        key = (id(base_weights), exclude_neural, False, swap, min(8, nconst),
               parent.complexity >= curmaxsize)
    cache = opts.weight_cache
    hit = cache.get(key)
    if hit is not None and hit[0] is base_weights:
        return hit[1]
    weights = base_weights.copy()
    if exclude_neural:
        weights[-1] = 0.0
    condition_mutation_weights(weights, parent, opts, curmaxsize)
    cum = list(accumulate(weights))
    if len(cache) > 4096:  # bounded: at most a few hundred keys per base list in practice
        cache.clear()
    cache[key] = (base_weights, cum)
    return cum


def _sample(weights: list[float], rs: RandomStream) -> str:
    """Name of a mutation drawn proportionally to ``weights`` (``do_nothing`` if all are 0)."""
    i = _sample_index(weights, rs)
    return "do_nothing" if i < 0 else ALL_MUTATIONS[i]


def _m_rotate(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "rotate_tree"
    return mf.randomly_rotate_tree(tree, rs)


def _m_add(tree, plan, opts, curmaxsize, rs):
    if rs.random() < 0.5:
        plan.trace_type = "add_node:append"
        return mf.append_random_op(tree, opts, rs)
    plan.trace_type = "add_node:prepend"
    return mf.prepend_random_op(tree, opts, rs)


def _m_delete(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "delete_node"
    return mf.delete_random_op(tree, rs)


def _m_operator(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "mutate_operator"
    return mf.mutate_operator(tree, opts, rs)


def _m_swap(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "swap_operands"
    return mf.swap_operands(tree, rs)


def _m_constant(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "mutate_constant"
    return mf.mutate_constant(tree, plan.temperature, opts, rs)


def _m_feature(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "mutate_feature"
    return mf.mutate_feature(tree, opts.nfeatures, rs)


def _m_insert(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "insert_node"
    return mf.insert_random_op(tree, opts, rs)


def _m_randomize(tree, plan, opts, curmaxsize, rs):
    plan.trace_type = "randomize"
    return mf.randomize_tree(tree, curmaxsize, opts, rs)


# ``_dispatch_mutations!``: the tree-returning mutations by name and by weight index
_APPLY = {
    "rotate_tree": _m_rotate,
    "add_node": _m_add,
    "delete_node": _m_delete,
    "mutate_operator": _m_operator,
    "swap_operands": _m_swap,
    "mutate_constant": _m_constant,
    "mutate_feature": _m_feature,
    "insert_node": _m_insert,
    "randomize": _m_randomize,
}
_APPLY_BY_INDEX = tuple(_APPLY.get(n) for n in ALL_MUTATIONS)


def apply_mutation(choice: str, tree: Expr, plan: MutationPlan, opts: SearchOptions, curmaxsize: int,
                   rs: RandomStream) -> Expr:
    """One application of a tree-returning mutation (``_dispatch_mutations!``)."""
    fn = _APPLY.get(choice)
    if fn is None:
        raise ValueError(f"unknown mutation {choice!r}")
    return fn(tree, plan, opts, curmaxsize, rs)


def plan_mutation(
    pop: int,
    parent: PopMember,
    temperature: float,
    curmaxsize: int,
    base_weights: list[float],
    opts: SearchOptions,
    rs: RandomStream,
    lineage: Lineage,
    simplifier,
    *,
    exclude_neural: bool = False,
) -> MutationPlan:
    """First half of ``next_generation``: choose and apply the mutation (no evaluation)."""
    plan = MutationPlan(pop, parent, temperature)
    cum = _conditioned_cumsum(base_weights, parent, opts, curmaxsize, exclude_neural)
    total = cum[-1]
    if total <= 0:
        ci = -1
    else:
        ci = bisect_right(cum, rs.random() * total)
        if ci >= len(cum):  # r rounded up to the total: the last positive weight
            ci = max(k for k in range(len(cum)) if cum[k] > (cum[k - 1] if k else 0.0))
    choice = ALL_MUTATIONS[ci] if ci >= 0 else "do_nothing"
    plan.choice = choice
    if choice == NEURAL:
        plan.trace_type = NEURAL
        return plan  # filled in by the proposer batch
    fn = _APPLY_BY_INDEX[ci] if ci >= 0 else None
    if fn is None:  # simplify / do_nothing / optimize
        _immediate(plan, choice, parent, lineage, simplifier, opts)
        return plan
    tree = parent.tree
    # check_constraints inlined: size <= curmaxsize, and depth <= maxdepth only when the
    # size bound does not already imply it
    unit = opts.unit_complexity
    if unit and ci in _GROWING and not opts.nuna and len(tree.codes) + 2 > curmaxsize:
        # with binary operators only every attempt adds exactly two nodes, so all
        # MAX_ATTEMPTS attempts would fail the size check: fail without building them
        if ci == _W_ADD:
            plan.trace_type = "add_node:append" if rs.random() < 0.5 else "add_node:prepend"
        else:
            plan.trace_type = "insert_node"
        plan.failed = True
        return plan
    need_depth = opts.maxdepth < curmaxsize
    for _ in range(MAX_ATTEMPTS):
        child = fn(tree, plan, opts, curmaxsize, rs)
        size = len(child.codes) if unit else opts.complexity(child)
        if size <= curmaxsize and not (need_depth and child.depth() > opts.maxdepth):
            plan.tree = child
            plan.size = size
            return plan
    plan.failed = True
    return plan


def _immediate(plan: MutationPlan, choice: str, parent: PopMember, lineage: Lineage, simplifier,
               opts: SearchOptions) -> None:
    """``simplify`` and ``do_nothing`` keep the parent's cost/loss and return at once; the
    ``optimize`` mutation (weight 0 by default) is resolved by the caller, which owns the
    data (``plan.immediate`` stays None and ``plan.choice == "optimize"``)."""
    if choice == "do_nothing":
        plan.trace_type = "identity"
        plan.immediate = PopMember(parent.tree, parent.cost, parent.loss, lineage.birth(),
                                   parent.complexity, lineage.ref(), parent.ref)
    elif choice == "simplify":
        plan.trace_type = "simplify"
        tree = simplifier(parent.tree) if simplifier is not None else parent.tree
        plan.immediate = PopMember(tree, parent.cost, parent.loss, lineage.birth(),
                                   opts.complexity(tree) if tree is not parent.tree else parent.complexity,
                                   lineage.ref(), parent.ref)
    else:
        plan.trace_type = "optimize"


def annealing_probability(after_cost: float, before_cost: float, temperature: float, alpha: float) -> float:
    """``exp(-(after - before) / (temperature * alpha))`` with Julia's IEEE semantics
    (x/0 = ±Inf, 0/0 = NaN; NaN < rand() is false, so a NaN probability accepts)."""
    delta = after_cost - before_cost
    denom = temperature * alpha
    if denom == 0.0:
        if delta != delta or delta == 0.0:
            return math.nan
        return 0.0 if delta > 0 else math.inf
    x = -delta / denom
    if x != x:
        return math.nan
    if x > 700:
        return math.inf
    return math.exp(x)


def finish_mutation(
    plan: MutationPlan,
    after_loss: float,
    freqs: list[float] | None,
    opts: SearchOptions,
    rs: RandomStream,
    lineage: Lineage,
    baseline: float,
    use_baseline: bool,
) -> tuple[PopMember, bool, str, str]:
    """Second half of ``next_generation`` for an evaluated (or failed) child.

    ``freqs``: normalised frequency per complexity (index 0..maxsize; None when
    ``use_frequency`` is off). Returns ``(baby, accepted, result, reason)``."""
    parent = plan.parent
    if plan.failed:
        return _clone(parent, lineage), False, "reject", "failed_constraint_check"
    cfg = opts.config
    after_cost = loss_to_cost(after_loss, baseline, use_baseline, plan.size, cfg.parsimony)
    plan.loss = after_loss
    plan.cost = after_cost
    if after_cost != after_cost:
        return _clone(parent, lineage), False, "reject", "nan_loss"
    prob = 1.0
    if cfg.annealing:
        prob *= annealing_probability(after_cost, parent.cost, plan.temperature, cfg.alpha)
    if freqs is not None:
        ms = opts.maxsize
        old = parent.complexity
        new = plan.size
        old_f = freqs[old] if 0 < old <= ms else 1e-6
        new_f = freqs[new] if 0 < new <= ms else 1e-6
        prob *= old_f / new_f
    if prob < rs.random():
        return _clone(parent, lineage), False, "reject", "annealing_or_frequency"
    baby = PopMember(plan.tree, after_cost, after_loss, lineage.birth(), plan.size, lineage.ref(), parent.ref)
    return baby, True, "accept", "pass"


def _clone(parent: PopMember, lineage: Lineage) -> PopMember:
    """SR.jl's ``create_child(member, copy(member.tree), before_cost, before_loss)``."""
    return PopMember(parent.tree, parent.cost, parent.loss, lineage.birth(), parent.complexity,
                     lineage.ref(), parent.ref)


def plan_crossover(pop: int, p1: PopMember, p2: PopMember, curmaxsize: int, opts: SearchOptions,
                   rs: RandomStream) -> CrossoverPlan:
    """``crossover_generation`` up to evaluation: cross until both children pass the
    constraints, at most 1 + ``max_tries`` (10) times."""
    plan = CrossoverPlan(pop, p1, p2)
    tries = 1
    while True:
        c1, c2 = mf.crossover_trees(p1.tree, p2.tree, rs)
        s1 = opts.complexity(c1)
        s2 = opts.complexity(c2)
        if opts.check_constraints(c1, curmaxsize, s1) and opts.check_constraints(c2, curmaxsize, s2):
            plan.tree1, plan.tree2, plan.size1, plan.size2 = c1, c2, s1, s2
            return plan
        if tries > 10:
            plan.failed = True
            return plan
        tries += 1


def finish_crossover(plan: CrossoverPlan, loss1: float, loss2: float, opts: SearchOptions,
                     lineage: Lineage, baseline: float, use_baseline: bool) -> tuple[PopMember, PopMember]:
    """The two evaluated children (``parent`` refs: parent1 for child1, parent2 for child2)."""
    par = opts.config.parsimony
    b1 = PopMember(plan.tree1, loss_to_cost(loss1, baseline, use_baseline, plan.size1, par), loss1,
                   lineage.birth(), plan.size1, lineage.ref(), plan.parent1.ref)
    b2 = PopMember(plan.tree2, loss_to_cost(loss2, baseline, use_baseline, plan.size2, par), loss2,
                   lineage.birth(), plan.size2, lineage.ref(), plan.parent2.ref)
    return b1, b2
