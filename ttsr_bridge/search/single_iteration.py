"""One iteration of every population (SR.jl ``src/SingleIteration.jl``): ``s_r_cycle`` runs
``ncycles_per_iteration`` regularised-evolution cycles at temperatures ``LinRange(1, 0)``
(annealing) or all 1, collecting each population's best member per size seen after each
cycle; ``optimize_and_simplify_population`` then simplifies every member, optimises the
constants of a random ``optimize_probability`` fraction, and gives every member a new ref."""

from __future__ import annotations

import math

import numpy as np

from .constant_optimization import optimize_constants_batch
from .hall_of_fame import HallOfFame
from .population import PopMember
from .regularized_evolution import reg_evol_cycle
from .search_utils import SearchState

__all__ = ["optimize_and_simplify_population", "s_r_cycle", "temperatures"]


def temperatures(ncycles: int, annealing: bool) -> np.ndarray:
    """SR.jl: ``LinRange(1, annealing ? 0 : 1, ncycles)`` (``[1]`` for one cycle)."""
    if ncycles <= 1:
        return np.ones(1)
    return np.linspace(1.0, 0.0 if annealing else 1.0, ncycles)


def s_r_cycle(state: SearchState) -> float:
    """``s_r_cycle`` for every population; fills ``state.best_seen``. Returns the evaluations.
    Stops early (between cycles) when a budget (timeout / max_evals) runs out."""
    cfg = state.config
    P = len(state.populations)
    state.best_seen = [HallOfFame(cfg.maxsize) for _ in range(P)]
    evals = 0.0
    first = True
    for temperature in temperatures(cfg.ncycles_per_iteration, cfg.annealing).tolist():
        replaced: list[set[int]] = [set() for _ in range(P)]
        e = reg_evol_cycle(state, temperature, replaced)
        evals += e
        state.num_evals += e
        # SR.jl scans every member after every cycle; members that stayed were already
        # considered after an earlier cycle, so after the first scan only new slots matter.
        low = math.inf
        for p, pop in enumerate(state.populations):
            bs = state.best_seen[p]
            slots = range(pop.n) if first else replaced[p]
            for i in slots:
                m = pop.members[i]
                bs.consider(m)
                if m.loss < low:
                    low = m.loss
        state.note_progress(low)
        first = False
        if state.out_of_budget():
            break
    return evals


def optimize_and_simplify_population(state: SearchState) -> float:
    """Simplify all members, optimise some constants (one batched call for all populations),
    and re-ref every member (tracing ``tuning`` + ``death``). Returns the evaluations."""
    cfg = state.config
    simp = state.simplifier if cfg.should_simplify else None
    todo: list[tuple[int, int]] = []
    for p, pop in enumerate(state.populations):
        do_opt = state.gen.random(pop.n) < cfg.optimize_probability
        for j, m in enumerate(pop.members):
            if simp is not None:
                tree = simp(m.tree)
                if tree is not m.tree:
                    # the cost is not recomputed (SR.jl sets the tree in place), the
                    # complexity cache is
                    m = PopMember(tree, m.cost, m.loss, m.birth, state.opts.complexity(tree), m.ref, m.parent)
                    pop.set(j, m)
            if cfg.should_optimize_constants and do_opt[j]:
                todo.append((p, j))
    evals = 0.0
    optimized = set()
    if todo:
        members = [state.populations[p].members[j] for p, j in todo]
        out, res = optimize_constants_batch(
            members, state.data, iterations=cfg.optimizer_iterations,
            nrestarts=cfg.optimizer_nrestarts, f_calls_limit=cfg.optimizer_f_calls_limit,
            gen=state.gen, lineage=state.lineage, baseline=state.baseline,
            use_baseline=state.use_baseline, parsimony=cfg.parsimony,
        )
        evals += res.num_evals
        state.raw_evals += res.raw_evals - res.num_evals  # extra (gradient) evaluations
        low = math.inf
        for (p, j), m in zip(todo, out):
            state.populations[p].set(j, m)
            optimized.add((p, j))
            if m.loss < low:
                low = m.loss
    state.num_evals += evals
    if optimized:
        state.note_progress(low)
    _new_refs(state, optimized)
    return evals


def _new_refs(state: SearchState, optimized: set[tuple[int, int]]) -> None:
    traces = state.iteration_traces if state.tracer is not None else None
    for p, pop in enumerate(state.populations):
        for j, m in enumerate(pop.members):
            old_ref = m.ref
            nm = PopMember(m.tree, m.cost, m.loss, m.birth, m.complexity, state.lineage.ref(), old_ref)
            pop.set(j, nm)
            if traces is not None:
                traces[p].optimization(nm, old_ref, nm.ref, (p, j) in optimized)
