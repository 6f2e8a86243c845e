"""Neural proposal sampling: grammar masks, token sampling, constants (NumPy, and one
compiled decode-step kernel).

Grammar-constrained decoding by arity: while writing a prefix expression, ``need`` is the
number of open operand slots (1 at the start) and ``length`` the number of nodes written.
Every open slot needs at least one more leaf, so a prefix can still be completed within
``budget`` nodes iff ``length + need <= budget``. Writing a leaf keeps that true; a unary
operator needs ``budget - length - need >= 1``; a binary one ``>= 2``. The expression is
complete when ``need == 0``. Masking every other token makes every sample a well-formed tree
of size ``<= budget`` whatever the logits are.

:func:`grammar_step` is one decoding step for a batch of rows (mask, sample, update the
grammar state): on the default path (temperature > 0, no top-k) a compiled kernel does in one
call what takes about twenty small NumPy calls, from the same draws with the same float64
arithmetic as :func:`sample_tokens`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["GrammarMasks", "GrammarState", "GrammarTable", "allowed_tokens", "grammar_step", "sample_constant",
           "sample_tokens"]


@dataclass(frozen=True)
class GrammarMasks:
    """Vocabulary masks (each ``(vocab,)`` bool) for one search context: which leaves, unary
    and binary operators may appear, and where the parent-constant pointers sit."""

    leaf: np.ndarray
    unary: np.ndarray
    binary: np.ndarray
    pointer_ids: np.ndarray  # (n_pointers,) token ids of c:0, c:1, ...


def allowed_tokens(masks: GrammarMasks, length: np.ndarray, need: np.ndarray, budget: np.ndarray,
                   n_parent_consts: np.ndarray) -> np.ndarray:
    """(rows, vocab) bool: tokens that keep each row completable within its budget.

    ``length``, ``need``, ``budget``, ``n_parent_consts``: (rows,) ints; rows must have
    ``need >= 1`` (unfinished).
    """
    slack = budget - length - need  # nodes available beyond the minimal completion
    allowed = np.broadcast_to(masks.leaf, (len(length), masks.leaf.shape[0])).copy()
    allowed |= (slack >= 1)[:, None] & masks.unary[None, :]
    allowed |= (slack >= 2)[:, None] & masks.binary[None, :]
    # c:k only when the parent has a k-th constant.
    k = np.arange(len(masks.pointer_ids))
    allowed[:, masks.pointer_ids] &= k[None, :] < n_parent_consts[:, None]
    return allowed


class GrammarTable:
    """:func:`allowed_tokens` precomputed for every (slack, parent constants) state.

    The allowed set depends on a row only through ``min(slack, 2)`` (slack = ``budget - length
    - need``: leaves only / + unary / + binary) and ``min(n_parent_consts, n_pointers)``, so one
    ``(3, n_pointers + 1, vocab)`` table replaces the per-step mask arithmetic of the decoding
    loop by one gather.
    """

    def __init__(self, masks: GrammarMasks):
        n_ptr = len(masks.pointer_ids)
        slack = np.repeat(np.arange(3), n_ptr + 1)
        consts = np.tile(np.arange(n_ptr + 1), 3)
        rows = allowed_tokens(masks, np.zeros_like(slack), np.ones_like(slack), slack + 1, consts)
        self.table = rows.reshape(3, n_ptr + 1, -1)  # (slack bin, parent constants, vocab)
        self.n_pointers = n_ptr

    def allowed(self, length: np.ndarray, need: np.ndarray, budget: np.ndarray,
                n_parent_consts: np.ndarray) -> np.ndarray:
        """Same result as :func:`allowed_tokens` (rows must have ``need >= 1``)."""
        return self.allowed_bins(np.minimum(np.maximum(budget - length - need, 0), 2), self.consts_bin(n_parent_consts))

    def consts_bin(self, n_parent_consts: np.ndarray) -> np.ndarray:
        """The table's constant-count bin of each row (fixed while a row decodes)."""
        return np.minimum(n_parent_consts, self.n_pointers)

    def allowed_bins(self, slack_bin: np.ndarray, consts_bin: np.ndarray) -> np.ndarray:
        """(rows, vocab) bool from precomputed bins: ``slack_bin`` = ``clip(budget − length −
        need, 0, 2)``, ``consts_bin`` from :meth:`consts_bin` (the decoding loop's form)."""
        return self.table[slack_bin, consts_bin]


def sample_tokens(logits: np.ndarray, allowed: np.ndarray, temperature: float, top_k: int | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample one token per row among ``allowed`` (Gumbel-max on tempered logits, optional top-k).

    Returns ``(tokens (rows,), ok (rows,))``; ``ok`` is False where the logits are not finite
    (the caller drops that row) — garbage logits never raise.
    """
    # Few, in-place NumPy calls: this runs once per decoding step. Scores are float64: extreme
    # logits / tiny temperatures stay finite.
    ok = np.isfinite(logits).all(axis=1)
    if temperature > 0 and (top_k is None or not 0 < top_k < logits.shape[1]):
        # Gumbel-max: -log(E) with E ~ Exp(1) is a standard Gumbel draw.
        scores = rng.standard_exponential(logits.shape)
        np.log(np.maximum(scores, 1e-300, out=scores), out=scores)
        tempered = logits if temperature == 1.0 else logits.astype(np.float64) * (1.0 / max(temperature, 1e-6))
        np.subtract(tempered, scores, out=scores)
        np.putmask(scores, ~allowed, -np.inf)
    else:
        scores = logits.astype(np.float64)
        if temperature != 1.0:
            scores *= 1.0 / max(temperature, 1e-6)
        np.putmask(scores, ~allowed, -np.inf)
        if top_k is not None and 0 < top_k < scores.shape[1]:
            kth = np.partition(scores, -top_k, axis=1)[:, -top_k]
            np.putmask(scores, scores < kth[:, None], -np.inf)
        if temperature > 0:
            scores -= np.log(np.maximum(rng.standard_exponential(scores.shape), 1e-300))
    tokens = scores.argmax(axis=1)
    ok &= np.isfinite(scores.max(axis=1))  # the chosen score (NaN-propagating like argmax)
    return tokens, ok


@dataclass
class GrammarState:
    """Per-row grammar state of a decoding batch (arrays aligned, updated in place by
    :func:`grammar_step`): ``need`` open operand slots, ``slack`` = budget − length − need
    (>= 0 while the row decodes), ``consts`` the :meth:`GrammarTable.consts_bin` of each row."""

    need: np.ndarray  # (rows,) int64
    slack: np.ndarray  # (rows,) int64
    consts: np.ndarray  # (rows,) int64

    @classmethod
    def start(cls, table: GrammarTable, budget: np.ndarray, n_parent_consts: np.ndarray) -> GrammarState:
        """Rows about to write their first token (one open slot, ``length`` 0)."""
        return cls(np.ones(len(budget), np.int64), np.asarray(budget, np.int64) - 1, table.consts_bin(n_parent_consts))

    def select(self, rows: np.ndarray) -> GrammarState:
        return GrammarState(self.need[rows], self.slack[rows], self.consts[rows])


def grammar_step(logits: np.ndarray, table: GrammarTable, state: GrammarState, arity: np.ndarray,
                 temperature: float, top_k: int | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One decoding step: sample a token per row among the grammar's allowed ones and update
    ``state`` in place. ``arity``: (vocab,) int64 operand count of every token.

    Returns ``(tokens, ok, keep)``: ``ok`` False where the logits are not finite (the row gets
    no child), ``keep`` True where the row is ok and its tree still open. The tokens are those
    of :func:`sample_tokens` with the allowed sets of :meth:`GrammarTable.allowed_bins`.
    """
    n = len(logits)
    tokens, ok, keep = np.empty(n, np.int64), np.empty(n, np.bool_), np.empty(n, np.bool_)
    if temperature > 0 and (top_k is None or not 0 < top_k < logits.shape[1]):
        # The draws and float64 steps of sample_tokens' Gumbel-max path, in one compiled pass.
        log_e = rng.standard_exponential(logits.shape)
        np.log(np.maximum(log_e, 1e-300, out=log_e), out=log_e)
        _gumbel_grammar_kernel(logits, log_e, float(temperature), table.table, state.need, state.slack,
                               state.consts, arity, tokens, ok, keep)
        return tokens, ok, keep
    allowed = table.allowed_bins(np.minimum(state.slack, 2), state.consts)
    tokens, ok = sample_tokens(logits, allowed, temperature, top_k, rng)
    a = arity[tokens]
    state.need += a - 1  # a token fills one slot and opens `arity`
    state.slack -= a  # length + 1, need + arity − 1
    np.logical_and(ok, state.need > 0, out=keep)
    return tokens, ok, keep


@njit(cache=True, nogil=True)  # nogil: the other proposer thread runs its Python meanwhile
def _gumbel_grammar_kernel(logits, log_e, temperature, table, need, slack, consts, arity, tokens, ok, keep):
    """Per row: argmax over allowed tokens of ``logit / T − log E`` (first maximum, as
    ``np.argmax``), row ok iff all its logits and the chosen score are finite; then the grammar
    update of :func:`grammar_step`."""
    rows, vocab = logits.shape
    scale = 1.0 / max(temperature, 1e-6)
    for r in range(rows):
        allowed = table[min(slack[r], 2), consts[r]]
        finite = True
        best = -np.inf
        arg = 0
        for v in range(vocab):
            x = np.float64(logits[r, v])
            if not np.isfinite(x):
                finite = False
            if allowed[v]:
                score = (x if temperature == 1.0 else x * scale) - log_e[r, v]
                if score > best:
                    best = score
                    arg = v
        tokens[r] = arg
        ok[r] = finite and np.isfinite(best)
        a = arity[arg]
        need[r] += a - 1
        slack[r] -= a
        keep[r] = ok[r] and need[r] > 0


def sample_constant(parent_consts: list[float], temperature: float, rng: np.random.Generator, *,
                    perturbation_factor: float = 0.129, probability_negate: float = 0.00743) -> float:
    """Value of a generic ``const`` token.

    With probability 1/2 (when the parent has constants): a random parent constant perturbed as
    SR.jl's ``mutate_constant`` does — multiply or divide by ``max_change ** u`` with
    ``max_change = perturbation_factor * temperature + 1.1`` and ``u ~ U(0, 1)``, negated with
    ``probability_negate``. Otherwise a standard normal draw, as SR.jl's random leaves. The
    engine's constant optimisation refines either.
    """
    if parent_consts and rng.random() < 0.5:
        value = parent_consts[int(rng.integers(len(parent_consts)))]
        t = temperature if math.isfinite(temperature) and temperature > 0 else 1.0
        factor = (perturbation_factor * t + 1.1) ** rng.random()
        value = value * factor if rng.random() < 0.5 else value / factor
        if rng.random() < probability_negate:
            value = -value
        if math.isfinite(value):
            return float(value)
    return float(rng.standard_normal())
