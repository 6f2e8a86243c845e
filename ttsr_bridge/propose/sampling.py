"""NumPy pieces of neural proposal sampling: grammar masks, token sampling, constants.

Grammar-constrained decoding by arity: while writing a prefix expression, ``need`` is the
number of open operand slots (1 at the start) and ``length`` the number of nodes written.
Every open slot needs at least one more leaf, so a prefix can still be completed within
``budget`` nodes iff ``length + need <= budget``. Writing a leaf keeps that true; a unary
operator needs ``budget - length - need >= 1``; a binary one ``>= 2``. The expression is
complete when ``need == 0``. Masking every other token makes every sample a well-formed tree
of size ``<= budget`` whatever the logits are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GrammarMasks", "GrammarTable", "allowed_tokens", "sample_constant", "sample_tokens"]


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
        slack = np.minimum(np.maximum(budget - length - need, 0), 2)
        return self.table[slack, np.minimum(n_parent_consts, self.n_pointers)]


def sample_tokens(logits: np.ndarray, allowed: np.ndarray, temperature: float, top_k: int | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample one token per row among ``allowed`` (Gumbel-max on tempered logits, optional top-k).

    Returns ``(tokens (rows,), ok (rows,))``; ``ok`` is False where the logits are not finite
    (the caller drops that row) — garbage logits never raise.
    """
    # Few, in-place NumPy calls: this runs once per decoding step.
    scores = logits.astype(np.float64)  # a copy, float64: extreme logits / tiny temperatures stay finite
    ok = np.isfinite(scores).all(axis=1)
    if temperature != 1.0:
        scores *= 1.0 / max(temperature, 1e-6)
    np.putmask(scores, ~allowed, -np.inf)
    if not ok.all():
        scores[~ok] = -np.inf
    if top_k is not None and 0 < top_k < scores.shape[1]:
        kth = np.partition(scores, -top_k, axis=1)[:, -top_k]
        np.putmask(scores, scores < kth[:, None], -np.inf)
    if temperature > 0:
        # Gumbel-max: -log(E) with E ~ Exp(1) is a standard Gumbel draw.
        scores -= np.log(np.maximum(rng.standard_exponential(scores.shape), 1e-300))
    tokens = scores.argmax(axis=1)
    ok &= np.isfinite(scores[np.arange(len(tokens)), tokens])
    return tokens, ok


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
