"""``equation_search`` (SR.jl's main loop in ``src/SymbolicRegression.jl``), in lockstep.

Phases: ``init_populations → [s_r_cycle (all populations, batched) →
optimize_and_simplify_population → update_hall_of_fame → migrate] × niterations``.

The head-node bookkeeping follows SR.jl's serial mode: after a population's iteration the head
adds its members' complexities to the running frequencies, updates the hall of fame with the
members and the population's best-seen, migrates ``fraction_replaced`` of the best
``topn`` of every population and ``fraction_replaced_hof`` of the Pareto front into it, takes a
normalised copy of the frequencies for that population's next iteration, advances
``cur_maxsize`` and moves the frequency window.

Deviations from SR.jl (documented): the initial populations are handed to the head once (HoF
and frequencies) and then every population runs ``niterations`` full iterations (SR.jl counts
the initial hand-over as one of ``populations × niterations`` cycles); births and refs are
per-search counters (reproducible); a timeout / ``max_evals`` budget is also checked between
cycles so that it stops a long iteration promptly.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

ev = importlib.import_module("ttsr_bridge.expr.evaluate")  # the module, not the re-exported function
from ..expr.operators import BY_NAME
from ..expr.tree import Expr
from .adaptive_parsimony import RunningSearchStatistics
from .config import SearchConfig
from .hall_of_fame import HallOfFame, ParetoEntry
from .migration import migrate
from .mutate import ALL_MUTATIONS
from .mutation_functions import _AR, gen_random_tree
from .options import SearchOptions
from .population import Lineage, PopMember, Population
from .random_stream import RandomStream
from .search_utils import ProposerStats, SearchState, StopReason, get_cur_maxsize
from .single_iteration import optimize_and_simplify_population, s_r_cycle
from .tournament import frequency_penalty

__all__ = ["SearchResult", "SearchStats", "equation_search"]


@dataclass(frozen=True)
class SearchStats:
    """Run counters: the proposer hook, evaluation counts and why the search stopped."""

    proposer: ProposerStats
    raw_evals: float  # every evaluation made (optimiser gradients included)
    stop_reason: str


@dataclass
class SearchResult:
    """What :func:`equation_search` returns."""

    hall_of_fame: HallOfFame
    num_evals: float
    seconds: float
    iterations: int
    stats: SearchStats
    populations: list[Population] = field(default_factory=list)
    variable_names: tuple[str, ...] = ()
    # (evaluations, seconds, lowest member loss so far) each time it dropped, checked after
    # every cycle: the search's loss curve.
    progress: tuple[tuple[float, float, float], ...] = ()

    def pareto_front(self) -> list[PopMember]:
        return self.hall_of_fame.pareto_front()

    def pareto_table(self) -> list[ParetoEntry]:
        return self.hall_of_fame.pareto_table()

    def best(self) -> PopMember | None:
        return self.hall_of_fame.best()

    @property
    def evals_per_second(self) -> float:
        return self.num_evals / self.seconds if self.seconds > 0 else math.inf


def _load_simplifier():
    """``simplify_tree`` then ``combine_operators`` (SR.jl's pair), from ttsr_bridge.expr.

    Most members are already in simplified form; :func:`_may_simplify` recognises those
    exactly (no rewrite pattern anywhere) and returns them unchanged without rebuilding."""
    from ..expr.simplify import combine_operators, simplify_tree

    def simplify(tree: Expr) -> Expr:
        if not _may_simplify(tree.codes):
            return tree
        out = combine_operators(simplify_tree(tree))
        if out.codes == tree.codes and out.vals == tree.vals:
            return tree  # keep identity so that unchanged members are not rebuilt
        return out

    return simplify


_ADD = -BY_NAME["+"].id
_SUB = -BY_NAME["-"].id
_MUL = -BY_NAME["*"].id


def _may_simplify(codes: list[int]) -> bool:
    """False only when neither rewrite of :mod:`ttsr_bridge.expr.simplify` can fire anywhere:
    no operator whose children are all constants (``simplify_tree``'s folding), no ``+``/``*``
    with a constant left child or with a constant right child under the same operator with a
    constant child, no ``-`` nested in ``-`` beside a constant (``combine_operators``). Both
    rewrites are bottom-up, so when no node matches on the original tree none matches later."""
    n = len(codes)
    if n == 1 or 0 not in codes:
        return False
    ar = _AR
    second = [0] * n  # start of the right child of each binary node
    stack: list[int] = []  # child start indices, the leftmost on top
    for i in range(n - 1, -1, -1):
        c = codes[i]
        if c >= 0:
            stack.append(i)
            continue
        if ar[c] == 1:
            if codes[stack[-1]] == 0:
                return True
            stack[-1] = i
            continue
        left = stack.pop()
        right = stack[-1]
        stack[-1] = i
        second[i] = right
        cl = codes[left]
        cr = codes[right]
        if cl != 0 and cr != 0:
            continue
        if cl == 0 and cr == 0:
            return True
        if c == _ADD or c == _MUL:
            if cl == 0 or (cl == c and (codes[left + 1] == 0 or codes[second[left]] == 0)):
                return True
        elif c == _SUB:
            inner = right if cl == 0 else left
            if codes[inner] == c and (codes[inner + 1] == 0 or codes[second[inner]] == 0):
                return True
    return False


def _check_inputs(X, y, config: SearchConfig, variable_names) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not isinstance(config, SearchConfig):
        raise TypeError(f"config must be a SearchConfig, got {type(config).__name__}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (n_samples, n_features) and y (n_samples,), got {X.shape} and {y.shape}")
    names = tuple(variable_names) if variable_names is not None else tuple(f"x{i + 1}" for i in range(X.shape[1]))
    if len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} variable names for {X.shape[1]} features")
    return X, y, names


def _make_state(X, y, config: SearchConfig, weights, proposer, neural_weight: float, names) -> SearchState:
    data = ev.EvalData(X, y, weights)
    opts = SearchOptions(config, X.shape[1])
    gen = np.random.default_rng(config.random_state)
    # SR.jl's update_baseline_loss!: the loss of the constant 1.0
    base = float(ev.loss_batch([Expr([0], [1.0])], data)[0])
    use_baseline = math.isfinite(base)
    state = SearchState(config=config, opts=opts, data=data, gen=gen, rs=RandomStream(gen),
                        lineage=Lineage(), baseline=base if use_baseline else 1.0,
                        use_baseline=use_baseline)
    ops = config.operator_set
    state.allowed_codes = frozenset(-o.id for o in ops.all)
    state.compiled_only = all(o.id in ev.COMPILED_OPERATOR_IDS for o in ops.all)
    w = list(config.mutation_weights.as_tuple())
    if proposer is not None:
        w[ALL_MUTATIONS.index("neural")] = float(neural_weight)
    else:
        w[ALL_MUTATIONS.index("neural")] = 0.0
    state.base_weights = w
    if config.should_simplify:
        state.simplifier = _load_simplifier()
    if proposer is not None:
        from ..propose.protocol import DataStats, ProblemContext

        state.proposer = proposer
        state.proposer_population_mode = getattr(proposer, "mode", "mutation") == "population"
        state.context = ProblemContext(nfeatures=X.shape[1], operators=ops, maxsize=config.maxsize,
                                       variable_names=names, data_stats=DataStats.from_data(X, y))
    return state


def init_populations(state: SearchState) -> None:
    """SR.jl's ``Population(dataset; population_size, nlength=3)`` for every population, all
    evaluated in one compiled call (``population_size`` evaluations each)."""
    cfg = state.config
    P, S = cfg.populations, cfg.population_size
    trees = [gen_random_tree(3, state.opts, state.rs) for _ in range(P * S)]
    losses = state.losses(trees).tolist()
    state.num_evals += len(trees)
    state.populations = [
        Population([state.new_member(trees[p * S + i], losses[p * S + i]) for i in range(S)])
        for p in range(P)
    ]
    state.note_progress(min((v for v in losses if v == v), default=math.inf))  # NaN-free
    state.bind_matrices()
    state.stats = RunningSearchStatistics(cfg.maxsize)
    state.hall_of_fame = HallOfFame(cfg.maxsize)
    state.total_cycles = cfg.niterations * P
    state.cycles_remaining = state.total_cycles
    state.cur_maxsize = get_cur_maxsize(cfg, state.total_cycles, state.cycles_remaining)
    state.curmaxsizes = [state.cur_maxsize] * P
    state.freq_lists = [[]] * P
    state.penalty = np.ones((P, cfg.maxsize + 2))
    state.best_sub_pops = [pop.best_sub_pop(cfg.topn) for pop in state.populations]
    state.best_seen = [HallOfFame(cfg.maxsize) for _ in range(P)]
    for p in range(P):
        _head_receive(state, p, migrate_now=False, count_cycle=False)


def update_hall_of_fame(state: SearchState, p: int) -> None:
    """SR.jl's ``update_hall_of_fame!`` with the population's members, then its best-seen."""
    cfg = state.config
    opts = state.opts
    check = None if (opts.unit_complexity and opts.maxdepth >= cfg.maxsize) else (
        lambda m: opts.check_constraints(m.tree, cfg.maxsize, m.complexity))
    state.hall_of_fame.update(state.populations[p].members, check)
    state.hall_of_fame.update(state.best_seen[p].existing(), check)


def _head_receive(state: SearchState, p: int, *, migrate_now: bool = True, count_cycle: bool = True) -> None:
    """The head node's work when population ``p`` hands in an iteration."""
    cfg = state.config
    pop = state.populations[p]
    state.best_sub_pops[p] = pop.best_sub_pop(cfg.topn)
    state.stats.update_many(pop.complexity)
    update_hall_of_fame(state, p)
    if migrate_now:
        if cfg.migration:
            cands = [m for sub in state.best_sub_pops for m in sub]
            migrate(cands, pop, cfg.fraction_replaced, state.gen, state.lineage)
        if cfg.hof_migration:
            dominating = state.hall_of_fame.pareto_front()
            if dominating:
                migrate(dominating, pop, cfg.fraction_replaced_hof, state.gen, state.lineage)
    # the copy of the statistics this population's next iteration runs with
    snap = state.stats.copy()
    snap.normalize_frequencies()
    freqs = snap.normalized_frequencies.tolist()
    state.freq_lists[p] = freqs
    state.penalty[p] = frequency_penalty(snap, cfg, cfg.maxsize + 2)
    state.curmaxsizes[p] = state.cur_maxsize
    if count_cycle:
        state.cycles_remaining -= 1
        state.cur_maxsize = get_cur_maxsize(cfg, state.total_cycles, state.cycles_remaining)
    state.stats.move_window()


def _start_traces(state: SearchState) -> None:
    if state.tracer is None:
        return
    state.iteration_traces = [
        state.tracer.iteration_start(1, p + 1, state.iteration, pop.members)
        for p, pop in enumerate(state.populations)
    ]


def _write_traces(state: SearchState) -> None:
    if state.tracer is None:
        return
    for it in state.iteration_traces:
        state.tracer.write(it, flush=False)
    state.tracer.flush()
    state.iteration_traces = []


def run_iteration(state: SearchState) -> bool:
    """One iteration of every population plus the head's work; False when a budget stopped it."""
    _start_traces(state)
    s_r_cycle(state)
    stopped = state.out_of_budget()
    if state.tracer is not None:
        state.tracer.flush()  # the writer renders the cycles' events while constants are fitted
    optimize_and_simplify_population(state)
    _write_traces(state)
    for p in range(len(state.populations)):
        _head_receive(state, p)
    state.iteration += 1
    if stopped or state.out_of_budget() or state.early_stop():
        return False
    return True


def _callback_stops(state: SearchState, callback, t0: float, *, set_reason: bool = True) -> bool:
    """Call the user's per-iteration callback; True when it asks the search to stop (the stop
    reason becomes ``callback`` unless a budget already ended the search)."""
    if callback is None:
        return False
    if callback(state.iteration, state.hall_of_fame, state.num_evals, time.time() - t0):
        if set_reason:
            state.stop_reason = StopReason.CALLBACK
        return True
    return False


def equation_search(
    X,
    y,
    config: SearchConfig | None = None,
    *,
    weights=None,
    proposer=None,
    neural_weight: float = 0.0,
    trace=None,
    progress: bool = False,
    variable_names: Sequence[str] | None = None,
    callback: Callable[[int, HallOfFame, float, float], bool] | None = None,
) -> SearchResult:
    """Run the PySR-faithful search on ``X`` ``(n_samples, n_features)``, ``y`` ``(n_samples,)``.

    ``proposer`` (see :mod:`ttsr_bridge.propose.protocol`) is used for the ``neural`` move,
    chosen with weight ``neural_weight`` among the mutation weights. ``trace`` is a path: the
    search then writes an SR.jl-format trace there. ``random_state`` in ``config`` makes the
    run bit-reproducible.

    ``callback(iteration, hall_of_fame, num_evals, seconds) -> bool`` is called after the
    initial populations (iteration 0) and after every iteration (``iteration`` = iterations
    done); returning True stops the search (``stats.stop_reason == "callback"``). It must not
    modify the hall of fame."""
    config = config if config is not None else SearchConfig.preset("pysr")
    X, y, names = _check_inputs(X, y, config, variable_names)
    if neural_weight < 0 or not math.isfinite(neural_weight):
        raise ValueError("neural_weight must be a finite number >= 0")
    if proposer is not None and not callable(getattr(proposer, "propose", None)):
        raise TypeError("proposer must have a propose(requests, rng) method")
    t0 = time.time()
    state = _make_state(X, y, config, weights, proposer, neural_weight, names)
    state.start_time = t0
    if trace is not None:
        from ..traces.tracing import TraceWriter

        state.tracer = TraceWriter(trace, config.options_string())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.niterations, desc="equation_search", unit="it")
    try:
        init_populations(state)
        state.stop_reason = StopReason.NITERATIONS
        if not (state.out_of_budget() or state.early_stop() or _callback_stops(state, callback, t0)):
            for _ in range(config.niterations):
                go_on = run_iteration(state)
                if bar is not None:
                    best = min((m.loss for m in state.hall_of_fame.existing()), default=math.inf)
                    bar.set_postfix(loss=f"{best:.3g}", evals=f"{state.num_evals:.3g}")
                    bar.update(1)
                # the callback also sees the last iteration of a search a budget stopped
                if _callback_stops(state, callback, t0, set_reason=go_on) or not go_on:
                    break
    finally:
        if bar is not None:
            bar.close()
        if state.tracer is not None:
            state.tracer.close()
    return SearchResult(
        hall_of_fame=state.hall_of_fame,
        num_evals=state.num_evals,
        seconds=time.time() - t0,
        iterations=state.iteration,
        stats=SearchStats(proposer=state.proposer_stats, raw_evals=state.raw_evals + state.num_evals,
                          stop_reason=state.stop_reason),
        populations=state.populations,
        variable_names=names,
        progress=tuple(state.progress),
    )
