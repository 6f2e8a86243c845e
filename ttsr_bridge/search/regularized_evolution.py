"""Regularised evolution (SR.jl ``src/RegularizedEvolution.jl``), all populations in lockstep.

SR.jl's ``reg_evol_cycle`` runs ``ceil(population_size / tournament_selection_n)`` steps on one
population; a step either (with probability ``1 - crossover_probability``) mutates one
tournament winner and lets the child replace the oldest member, or crosses two winners and
lets the children replace the two oldest. Populations are independent within an iteration, so
running step ``k`` of every population before step ``k + 1`` of any (lockstep) changes nothing
in the per-population algorithm while letting one tournament call, one proposer call and one
compiled evaluation serve all populations.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..expr.tree import Expr
from .mutate import (
    NEURAL,
    CrossoverPlan,
    MutationPlan,
    annealing_probability,
    finish_crossover,
    finish_mutation,
    plan_crossover,
    plan_mutation,
)
from .population import PopMember, Population
from .search_utils import SearchState
from .tournament import best_of_sample_batch

__all__ = ["lockstep_step", "reg_evol_cycle"]


def reg_evol_cycle(state: SearchState, temperature: float, replaced: list[set[int]]) -> float:
    """One ``reg_evol_cycle`` of every population; returns the evaluations made. The slots
    written are added to ``replaced[p]`` (for the cycle's best-seen scan)."""
    cfg = state.config
    n_steps = -(-cfg.population_size // cfg.tournament_selection_n)
    evals = 0.0
    for _ in range(n_steps):
        evals += lockstep_step(state, temperature, replaced)
    return evals


def _oldest(state: SearchState, pop: Population) -> int:
    if not state.config.basic_elitism:
        return pop.oldest()
    b = pop.birth.copy()
    b[int(np.argmin(pop.cost))] = np.iinfo(np.int64).max  # BasicSR keeps its best member
    return int(np.argmin(b))


def _oldest_two(state: SearchState, pop: Population) -> tuple[int, int]:
    if not state.config.basic_elitism:
        return pop.oldest_two()
    b = pop.birth.copy()
    big = np.iinfo(np.int64).max
    b[int(np.argmin(pop.cost))] = big
    o1 = int(np.argmin(b))
    b[o1] = big
    return o1, int(np.argmin(b))


def lockstep_step(state: SearchState, temperature: float, replaced: list[set[int]]) -> float:
    """Step ``k`` of ``reg_evol_cycle`` in every population at once."""
    cfg = state.config
    gen = state.gen
    P = len(state.populations)
    is_mut = gen.random(P) > cfg.crossover_probability
    mut = np.flatnonzero(is_mut)
    cx = np.flatnonzero(~is_mut)
    rows = np.concatenate([mut, cx, cx])
    winners = best_of_sample_batch(
        state.cost, state.complexity, state.penalty, rows, cfg.tournament_selection_n,
        state.cum_tournament, gen,
    ).tolist()
    plans = _plan_mutations(state, mut.tolist(), winners, temperature)
    ncx = len(cx)
    cx_plans = [
        plan_crossover(p, state.populations[p].members[winners[len(mut) + k]],
                       state.populations[p].members[winners[len(mut) + ncx + k]],
                       state.curmaxsizes[p], state.opts, state.rs)
        for k, p in enumerate(cx.tolist())
    ]
    # one compiled evaluation for every child of this step
    trees: list[Expr] = [pl.tree for pl in plans if pl.tree is not None and pl.immediate is None]
    for cp in cx_plans:
        if not cp.failed:
            trees.append(cp.tree1)
            trees.append(cp.tree2)
    losses = state.losses(trees).tolist()
    evals = float(len(trees))
    # The tracer takes the children's trees from the evaluation batch (row = loss index).
    rows = -1
    if state.tracer is not None and state.packed is not None:
        p = state.packed
        rows = state.tracer.tree_table(p.codes, p.vals, p.lengths)
    li = _finish_mutations(state, plans, losses, replaced, rows)
    _finish_crossovers(state, cx_plans, losses, li, replaced, rows)
    return evals


# ---- mutation half ---------------------------------------------------------------------------------
def _plan_mutations(state: SearchState, pops: list[int], winners: list[int], temperature: float) -> list[MutationPlan]:
    opts, rs, lin, simp, bw = state.opts, state.rs, state.lineage, state.simplifier, state.base_weights
    plans = []
    neural = []
    for k, p in enumerate(pops):
        parent = state.populations[p].members[winners[k]]
        plan = plan_mutation(p, parent, temperature, state.curmaxsizes[p], bw, opts, rs, lin, simp)
        if plan.choice == NEURAL:
            neural.append(plan)
        elif plan.choice == "optimize":
            _optimize_as_mutation(state, plan)
        plans.append(plan)
    if neural:
        _propose_batch(state, neural, temperature)
    return plans


def _optimize_as_mutation(state: SearchState, plan: MutationPlan) -> None:
    """The ``optimize`` mutation: constant optimisation of the parent, returned immediately."""
    from .constant_optimization import optimize_constants_batch

    cfg = state.config
    clone = PopMember(plan.parent.tree, plan.parent.cost, plan.parent.loss, state.lineage.birth(),
                      plan.parent.complexity, state.lineage.ref(), plan.parent.ref)
    out, res = optimize_constants_batch(
        [clone], state.data, iterations=cfg.optimizer_iterations, nrestarts=cfg.optimizer_nrestarts,
        f_calls_limit=cfg.optimizer_f_calls_limit, gen=state.gen, lineage=state.lineage,
        baseline=state.baseline, use_baseline=state.use_baseline, parsimony=cfg.parsimony,
    )
    state.num_evals += res.num_evals
    state.raw_evals += res.raw_evals - res.num_evals  # extra (gradient) evaluations
    plan.immediate = out[0]


def _valid_child(state: SearchState, child: object, curmaxsize: int) -> int:
    """Complexity of a usable proposer child, or -1 (not an Expr, malformed, unknown operator
    or feature, over ``curmaxsize`` / ``maxdepth``)."""
    if not isinstance(child, Expr) or not child.codes or not child.is_valid():
        return -1
    opts = state.opts
    allowed = state.allowed_codes
    nf = opts.nfeatures
    for c in child.codes:
        if c > nf or (c < 0 and c not in allowed):
            return -1
    if any(v != v or v in (math.inf, -math.inf) for v in child.vals):
        return -1
    size = opts.complexity(child)
    return size if opts.check_constraints(child, curmaxsize, size) else -1


def _propose_batch(state: SearchState, plans: list[MutationPlan], temperature: float) -> None:
    """All neural moves of this step in ONE ``proposer.propose`` call; unusable children fall
    back to a classic mutation (counted)."""
    from ..propose.protocol import ProposalRequest

    ps = state.proposer_stats
    reqs = []
    for plan in plans:
        members = ()
        if state.proposer_population_mode:
            members = tuple((m.tree, m.loss) for m in state.populations[plan.pop].members)
        reqs.append(ProposalRequest(
            parent=plan.parent.tree, parent_loss=plan.parent.loss, parent_cost=plan.parent.cost,
            population=plan.pop, iteration=state.iteration, temperature=temperature,
            curmaxsize=state.curmaxsizes[plan.pop], context=state.context, members=members,
        ))
    ps.calls += 1
    ps.requests += len(reqs)
    children = list(state.proposer.propose(reqs, state.gen))
    if len(children) != len(reqs):
        raise ValueError(f"proposer returned {len(children)} children for {len(reqs)} requests")
    for plan, req, child in zip(plans, reqs, children):
        plan.request = req
        size = _valid_child(state, child, state.curmaxsizes[plan.pop])
        if size >= 0:
            plan.tree = child
            plan.size = size
            ps.proposed += 1
            continue
        ps.fallback += 1
        classic = plan_mutation(plan.pop, plan.parent, temperature, state.curmaxsizes[plan.pop],
                                state.base_weights, state.opts, state.rs, state.lineage,
                                state.simplifier, exclude_neural=True)
        if classic.choice == "optimize":
            _optimize_as_mutation(state, classic)
        for slot in ("choice", "trace_type", "tree", "size", "failed", "immediate"):
            setattr(plan, slot, getattr(classic, slot))
        plan.fallback = True


def _finish_mutations(state: SearchState, plans: list[MutationPlan], losses: list[float],
                      replaced: list[set[int]], rows: int = -1) -> int:
    """Acceptance + replacement for every planned mutation; returns how many losses it used.
    ``rows``: the tracer's row id of the first evaluated tree (-1: none)."""
    cfg = state.config
    opts, rs, lin = state.opts, state.rs, state.lineage
    skip = cfg.skip_mutation_failures
    traces = state.iteration_traces if state.tracer is not None else None
    now = time.time()  # one clock read for the step's events (SR.jl's per-call ``now``)
    use_freq = cfg.use_frequency
    fast = _Acceptance(state)
    outcomes = []
    li = 0
    pops = state.populations
    for plan in plans:
        row = -1
        if plan.immediate is not None:
            baby, accepted = plan.immediate, True
            result, reason = ("accept", "identity") if plan.trace_type == "identity" else (None, None)
        elif plan.tree is not None and not plan.failed:
            loss = losses[li]
            if rows >= 0:
                row = rows + li
            li += 1
            baby, accepted, result, reason = fast.accept(plan, loss, state.freq_lists[plan.pop] if use_freq else None)
        else:
            freqs = state.freq_lists[plan.pop] if use_freq else None
            baby, accepted, result, reason = finish_mutation(
                plan, math.nan, freqs, opts, rs, lin, state.baseline, state.use_baseline)
        if plan.request is not None:
            outcomes.append(_outcome(state, plan, accepted))
        if skip and not accepted:  # skip_mutation_failures: the population keeps its members
            if traces is not None:
                traces[plan.pop].mutation(plan.parent, baby, plan.trace_type, result, reason, None,
                                          now, row)
            continue
        pop = pops[plan.pop]
        oldest = _oldest(state, pop)
        if traces is not None:
            traces[plan.pop].mutation(plan.parent, baby, plan.trace_type, result, reason,
                                      pop.members[oldest], now, row)
        pop.set(oldest, baby)
        replaced[plan.pop].add(oldest)
    if outcomes:
        from ..propose.protocol import report_feedback

        report_feedback(state.proposer, outcomes)
    return li


class _Acceptance:
    """:func:`~.mutate.finish_mutation` for an evaluated child, with the per-search constants
    hoisted (the hot path of every lockstep step). Same draws, same decisions."""

    __slots__ = ("alpha", "annealing", "lin", "ms", "norm", "parsimony", "rs")

    def __init__(self, state: SearchState):
        cfg = state.config
        self.rs = state.rs
        self.lin = state.lineage
        self.annealing = cfg.annealing
        self.alpha = cfg.alpha
        self.parsimony = cfg.parsimony
        self.ms = state.opts.maxsize
        b = state.baseline
        self.norm = b if (state.use_baseline and b >= 0.01) else 0.01  # loss_to_cost's divisor

    def accept(self, plan: MutationPlan, after_loss: float, freqs: list[float] | None):
        parent = plan.parent
        size = plan.size
        after_cost = after_loss / self.norm + size * self.parsimony
        plan.loss = after_loss
        plan.cost = after_cost
        lin = self.lin
        if after_cost != after_cost:
            return (PopMember(parent.tree, parent.cost, parent.loss, lin.birth(), parent.complexity,
                              lin.ref(), parent.ref), False, "reject", "nan_loss")
        prob = 1.0
        if self.annealing:
            prob *= annealing_probability(after_cost, parent.cost, plan.temperature, self.alpha)
        if freqs is not None:
            ms = self.ms
            old = parent.complexity
            old_f = freqs[old] if 0 < old <= ms else 1e-6
            new_f = freqs[size] if 0 < size <= ms else 1e-6
            prob *= old_f / new_f
        if prob < self.rs.random():
            return (PopMember(parent.tree, parent.cost, parent.loss, lin.birth(), parent.complexity,
                              lin.ref(), parent.ref), False, "reject", "annealing_or_frequency")
        return (PopMember(plan.tree, after_cost, after_loss, lin.birth(), size, lin.ref(), parent.ref),
                True, "accept", "pass")


def _outcome(state: SearchState, plan: MutationPlan, accepted: bool):
    from ..propose.protocol import ProposalOutcome

    ps = state.proposer_stats
    if plan.fallback:
        return ProposalOutcome(plan.request, None, False, math.inf, math.inf)
    if accepted:
        ps.accepted += 1
    if plan.loss < plan.parent.loss:
        ps.improved += 1
    return ProposalOutcome(plan.request, plan.tree, accepted, plan.loss, plan.cost)


# ---- crossover half ----------------------------------------------------------------------------------
_CROSSOVER_PASS = {"result": "accept", "reason": "pass"}
_CROSSOVER_FAILED = {"result": "reject", "reason": "failed_constraint_check"}


def _finish_crossovers(state: SearchState, plans: list[CrossoverPlan], losses: list[float], li: int,
                       replaced: list[set[int]], rows: int = -1) -> None:
    skip = state.config.skip_mutation_failures
    traces = state.iteration_traces if state.tracer is not None else None
    if traces is not None and plans:
        now = time.time()
        # SR.jl's two crossover outcomes, as the trace's JSON (the writer caches them)
        failed_json = state.tracer.details_json(_CROSSOVER_FAILED)
        pass_json = state.tracer.details_json(_CROSSOVER_PASS)
    for cp in plans:
        row = -1
        if cp.failed:
            if skip:
                continue
            b1, b2 = cp.parent1.copy(), cp.parent2.copy()
            details = failed_json if traces is not None else None
        else:
            b1, b2 = finish_crossover(cp, losses[li], losses[li + 1], state.opts, state.lineage,
                                      state.baseline, state.use_baseline)
            if rows >= 0:
                row = rows + li
            li += 2
            details = pass_json if traces is not None else None
        pop = state.populations[cp.pop]
        o1, o2 = _oldest_two(state, pop)
        if traces is not None:
            traces[cp.pop].crossover_pair(cp.parent1, cp.parent2, b1, b2, pop.members[o1],
                                          pop.members[o2], details, now, row)
        pop.set(o1, b1)
        pop.set(o2, b2)
        replaced[cp.pop].add(o1)
        replaced[cp.pop].add(o2)
