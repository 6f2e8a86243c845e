"""Tournament selection (SR.jl ``best_of_sample`` in ``src/Population.jl``).

Sample ``tournament_selection_n`` members without replacement, multiply each cost by the
frequency penalty ``exp(adaptive_parsimony_scaling * normalized_frequency[complexity])`` when
``use_frequency_in_tournament``, and take the member of rank ``i`` (0 = best) with probability
proportional to ``p (1 - p)^i``. :func:`best_of_sample_batch` runs one tournament per row of a
``(populations, population_size)`` cost matrix at once.
"""

from __future__ import annotations

import numpy as np

from .adaptive_parsimony import RunningSearchStatistics
from .config import SearchConfig
from .population import PopMember, Population

__all__ = ["best_of_sample", "best_of_sample_batch", "frequency_penalty", "tournament_weights"]


def tournament_weights(n: int, p: float) -> np.ndarray:
    """Normalised ``p (1-p)^k`` for ``k = 0..n-1``."""
    k = np.arange(n)
    w = p * (1.0 - p) ** k
    return w / w.sum()


def frequency_penalty(stats: RunningSearchStatistics, config: SearchConfig, width: int) -> np.ndarray:
    """``(width,)`` multiplier per complexity (1 outside ``1..maxsize`` or when disabled)."""
    out = np.ones(width)
    if config.use_frequency_in_tournament:
        m = min(config.maxsize, width - 1)
        with np.errstate(over="ignore"):  # exp overflows to inf, as in SR.jl
            out[1 : m + 1] = np.exp(config.adaptive_parsimony_scaling * stats.normalized_frequencies[1 : m + 1])
    return out


def best_of_sample_batch(
    cost: np.ndarray,
    complexity: np.ndarray,
    penalty: np.ndarray,
    rows: np.ndarray,
    n: int,
    cum_weights: np.ndarray,
    gen: np.random.Generator,
) -> np.ndarray:
    """Winners (column index) of one tournament in each population ``rows[k]``.

    ``cost``/``complexity``: ``(P, S)``; ``penalty``: ``(P, W)`` frequency multipliers indexed
    by complexity (clipped to ``W-1``); ``cum_weights``: cumulative rank probabilities."""
    k = len(rows)
    S = cost.shape[1]
    keys = gen.random((k, S))
    if n < S:
        sample = np.argpartition(keys, n - 1, axis=1)[:, :n]  # a uniform n-subset per row
    else:
        sample = np.broadcast_to(np.arange(S), (k, S))
    r = rows[:, None]
    adj = cost[r, sample]
    if penalty is not None:
        cx = np.minimum(complexity[r, sample], penalty.shape[1] - 1)
        # 0 * inf (a perfect fit at an over-represented size) is NaN, sorted last as in Julia.
        with np.errstate(invalid="ignore", over="ignore"):
            adj = adj * penalty[r, cx]
    rank = np.searchsorted(cum_weights, gen.random(k) * cum_weights[-1], side="right")
    rank = np.minimum(rank, n - 1)
    order = np.argsort(adj, axis=1, kind="stable")
    ar = np.arange(k)
    return sample[ar, order[ar, rank]]


def best_of_sample(
    pop: Population, stats: RunningSearchStatistics, config: SearchConfig, gen: np.random.Generator
) -> PopMember:
    """One tournament in ``pop`` (the single-population form of :func:`best_of_sample_batch`)."""
    n = config.tournament_selection_n
    width = config.maxsize + 2
    pen = frequency_penalty(stats, config, width)[None, :] if config.use_frequency_in_tournament else None
    cw = np.cumsum(tournament_weights(n, config.tournament_selection_p))
    winner = best_of_sample_batch(
        pop.cost[None, :], pop.complexity[None, :], pen, np.zeros(1, dtype=np.int64), n, cw, gen
    )
    return pop.members[int(winner[0])]
