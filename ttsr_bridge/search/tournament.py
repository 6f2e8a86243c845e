"""Tournament selection (SR.jl ``best_of_sample`` in ``src/Population.jl``).

Sample ``tournament_selection_n`` members without replacement, multiply each cost by the
frequency penalty ``exp(adaptive_parsimony_scaling * normalized_frequency[complexity])`` when
``use_frequency_in_tournament``, and take the member of rank ``i`` (0 = best) with probability
proportional to ``p (1 - p)^i``. :func:`best_of_sample_batch` runs one tournament per row of a
``(populations, population_size)`` cost matrix at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True)
def _tournament_kernel(cost, complexity, penalty, rows, n, cum_weights, keys, u, use_penalty, out):
    """Compiled tournaments. Per row: a uniform ordered ``n``-sample without replacement
    (partial Fisher-Yates driven by ``keys[t, :n]``; all members in slot order when
    ``n >= S``), the rank ``searchsorted(cum_weights, u * total, "right")`` (clipped), and the
    member of that rank in the stable order of penalised costs (NaN last, as Julia's sort),
    found by repeated minimum (the rank is almost always 0)."""
    k = rows.shape[0]
    S = cost.shape[1]
    W = penalty.shape[1]
    total = cum_weights[-1]
    m = min(S, n)
    perm = np.empty(S, dtype=np.int64)
    adj = np.empty(S)
    used = np.empty(S, dtype=np.bool_)
    for t in range(k):
        row = rows[t]
        for j in range(S):
            perm[j] = j
        if n < S:
            key = keys[t]
            for i in range(m):
                j = i + int(key[i] * (S - i))
                if j >= S:
                    j = S - 1
                tmp = perm[i]
                perm[i] = perm[j]
                perm[j] = tmp
        for i in range(m):
            col = perm[i]
            a = cost[row, col]
            if use_penalty:
                cx = complexity[row, col]
                cx = min(cx, W - 1)
                a = a * penalty[row, cx]  # 0 * inf -> NaN, sorted last
            adj[i] = a
            used[i] = False
        x = u[t] * total
        rank = 0
        while rank < cum_weights.shape[0] and cum_weights[rank] <= x:
            rank += 1
        rank = min(rank, m - 1)
        pick = 0
        for _r in range(rank + 1):
            pick = -1
            for i in range(m):
                if used[i]:
                    continue
                if pick < 0:
                    pick = i
                    continue
                va = adj[i]
                vb = adj[pick]
                if va < vb or (vb != vb and va == va):
                    pick = i
            used[pick] = True
        out[t] = perm[pick]


def best_of_sample_batch(
    cost: np.ndarray,
    complexity: np.ndarray,
    penalty: np.ndarray | None,
    rows: np.ndarray,
    n: int,
    cum_weights: np.ndarray,
    gen: np.random.Generator,
) -> np.ndarray:
    """Winners (column index) of one tournament in each population ``rows[k]``.

    ``cost``/``complexity``: ``(P, S)``; ``penalty``: ``(P, W)`` frequency multipliers indexed
    by complexity (clipped to ``W-1``), or None; ``cum_weights``: cumulative rank
    probabilities. Draws ``(k, n)`` uniforms (the samples, when ``n < S``) then ``k`` uniforms
    (the ranks) from ``gen``; the selection itself is one compiled call."""
    k = len(rows)
    S = cost.shape[1]
    n = int(n)
    keys = gen.random((k, n)) if n < S else np.empty((k, 0))
    u = gen.random(k)
    out = np.empty(k, dtype=np.int64)
    use_penalty = penalty is not None
    pen = penalty if use_penalty else np.ones((1, 1))
    _tournament_kernel(cost, complexity, pen, np.asarray(rows, dtype=np.int64), n,
                       cum_weights, keys, u, use_penalty, out)
    return out


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
