"""Search state and helpers (SR.jl ``src/SearchUtils.jl``): the state shared by the phases,
``get_cur_maxsize``, the stop checks, and the batched evaluation of children."""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ev = importlib.import_module("ttsr_bridge.expr.evaluate")  # the module, not the re-exported function
from ..expr.tree import Expr
from .adaptive_parsimony import RunningSearchStatistics
from .config import SearchConfig
from .hall_of_fame import HallOfFame
from .options import SearchOptions
from .population import Lineage, PopMember, Population
from .random_stream import RandomStream
from .tournament import tournament_weights

__all__ = ["ProposerStats", "SearchState", "StopReason", "get_cur_maxsize"]


class StopReason:
    NITERATIONS = "niterations"
    TIMEOUT = "timeout_in_seconds"
    MAX_EVALS = "max_evals"
    EARLY_STOP = "early_stop_condition"
    CALLBACK = "callback"  # equation_search's callback asked to stop


@dataclass
class ProposerStats:
    """Counters of the proposer hook (all zero without a proposer)."""

    requests: int = 0  # neural moves chosen (= requests sent to the proposer)
    proposed: int = 0  # valid children returned and evaluated
    fallback: int = 0  # None / invalid / over-size children replaced by a classic mutation
    accepted: int = 0  # proposed children accepted by annealing / frequency
    improved: int = 0  # proposed children with a lower loss than their parent
    calls: int = 0  # proposer.propose calls (one per lockstep step with neural moves)


def get_cur_maxsize(config: SearchConfig, total_cycles: int, cycles_remaining: int) -> int:
    """SR.jl's ``get_cur_maxsize``: grows from 3 to ``maxsize`` over the first
    ``warmup_maxsize_by`` fraction of the search."""
    elapsed = total_cycles - cycles_remaining
    frac = elapsed / total_cycles if total_cycles > 0 else 1.0
    w = config.warmup_maxsize_by
    if w > 0 and frac <= w:
        return min(config.maxsize, 3 + int(math.floor((config.maxsize - 3) * frac / w)))
    return config.maxsize


@dataclass
class SearchState:
    """Everything the phases share. Populations' cost/birth/complexity rows are views into the
    ``(populations, population_size)`` matrices ``cost``, ``birth``, ``complexity``."""

    config: SearchConfig
    opts: SearchOptions
    data: ev.EvalData
    gen: np.random.Generator
    rs: RandomStream
    lineage: Lineage
    baseline: float
    use_baseline: bool
    populations: list[Population] = field(default_factory=list)
    cost: np.ndarray | None = None
    birth: np.ndarray | None = None
    complexity: np.ndarray | None = None
    stats: RunningSearchStatistics | None = None
    # per-population snapshot of the normalised frequencies (taken at dispatch, SR.jl's
    # deepcopy of RunningSearchStatistics), as lists for the acceptance test and a penalty matrix
    freq_lists: list[list[float]] = field(default_factory=list)
    penalty: np.ndarray | None = None
    curmaxsizes: list[int] = field(default_factory=list)
    cur_maxsize: int = 0
    cycles_remaining: int = 0
    total_cycles: int = 0
    hall_of_fame: HallOfFame | None = None
    best_seen: list[HallOfFame] = field(default_factory=list)
    best_sub_pops: list[list[PopMember]] = field(default_factory=list)
    num_evals: float = 0.0
    raw_evals: float = 0.0
    iteration: int = 0
    start_time: float = field(default_factory=time.time)
    # Lowest loss of any member so far, and (evals, seconds, loss) each time it dropped (checked
    # after every cycle: a loss curve finer than the per-iteration hall of fame).
    best_loss: float = math.inf
    progress: list[tuple[float, float, float]] = field(default_factory=list)
    base_weights: list[float] = field(default_factory=list)
    cum_tournament: np.ndarray | None = None
    simplifier: Any = None
    compiled_only: bool = True
    allowed_codes: frozenset = frozenset()
    # proposer hook
    proposer: Any = None
    proposer_population_mode: bool = False
    context: Any = None
    proposer_stats: ProposerStats = field(default_factory=ProposerStats)
    # tracing: one IterationTrace per population during an iteration (None when off)
    tracer: Any = None
    iteration_traces: list[Any] = field(default_factory=list)
    packed: Any = None  # the last ``losses`` batch, packed (the tracer sends its rows)
    stop_reason: str = ""

    # ---- construction helpers ---------------------------------------------------------------
    def bind_matrices(self) -> None:
        """Stack the populations' rows into matrices (views) for vectorised tournaments."""
        P = len(self.populations)
        S = self.config.population_size
        self.cost = np.empty((P, S))
        self.birth = np.empty((P, S), dtype=np.int64)
        self.complexity = np.empty((P, S), dtype=np.int64)
        for p, pop in enumerate(self.populations):
            pop.rebind(self.cost[p], self.birth[p], self.complexity[p])
        self.cum_tournament = np.cumsum(
            tournament_weights(self.config.tournament_selection_n, self.config.tournament_selection_p)
        )

    # ---- evaluation ---------------------------------------------------------------------------
    def losses(self, trees: Sequence[Expr]) -> np.ndarray:
        """MSE of each tree (inf when invalid), one compiled call; counts nothing. The trees'
        packed form is left in ``packed`` (``None`` where they were not packed)."""
        self.packed = None
        if not trees:
            return np.empty(0)
        if not self.compiled_only:
            return ev.loss_batch(trees, self.data)
        p = self.packed = ev.pack_exprs(trees)
        return ev.loss_batch_codes(p.codes, p.vals, p.offsets, self.data)

    def cost_of(self, loss: float, complexity: int) -> float:
        from .population import loss_to_cost

        return loss_to_cost(loss, self.baseline, self.use_baseline, complexity, self.config.parsimony)

    def new_member(self, tree: Expr, loss: float, parent: int = -1) -> PopMember:
        cx = self.opts.complexity(tree)
        return PopMember(tree, self.cost_of(loss, cx), loss, self.lineage.birth(), cx, self.lineage.ref(), parent)

    # ---- budgets ------------------------------------------------------------------------------
    def note_progress(self, loss: float) -> None:
        """Record a new lowest member loss (called with the lowest loss of a cycle)."""
        if loss < self.best_loss:
            self.best_loss = loss
            self.progress.append((self.num_evals, time.time() - self.start_time, loss))

    def out_of_budget(self) -> bool:
        """Timeout / max_evals (checked often, so that a budget stops the search promptly)."""
        cfg = self.config
        if cfg.timeout_in_seconds is not None and time.time() - self.start_time > cfg.timeout_in_seconds:
            self.stop_reason = StopReason.TIMEOUT
            return True
        if cfg.max_evals is not None and self.num_evals >= cfg.max_evals:
            self.stop_reason = StopReason.MAX_EVALS
            return True
        return False

    def early_stop(self) -> bool:
        """SR.jl's ``check_for_loss_threshold``: some hall-of-fame member meets the condition
        (a number ``t`` means ``loss < t``)."""
        cond = self.config.early_stop_condition
        if cond is None or self.hall_of_fame is None:
            return False
        for m in self.hall_of_fame.existing():
            hit = (m.loss < cond) if not callable(cond) else bool(cond(m.loss, m.complexity))
            if hit:
                self.stop_reason = StopReason.EARLY_STOP
                return True
        return False
