"""Grammar-constrained sampling: every sample is a well-formed tree within budget, whatever the
logits (property test with random, extreme and adversarial logits)."""

from __future__ import annotations

import numpy as np

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.expr.tree import Expr
from ttsr_bridge.model.tokenizer import Tokenizer
from ttsr_bridge.propose.sampling import (
    GrammarMasks,
    allowed_tokens,
    sample_constant,
    sample_tokens,
)


def _masks(tok: Tokenizer, ops: OperatorSet, nfeatures: int) -> GrammarMasks:
    v = tok.vocab_size
    leaf, un, bi = np.zeros(v, bool), np.zeros(v, bool), np.zeros(v, bool)
    leaf[tok.var_ids[:nfeatures]] = leaf[tok.ptr_ids] = leaf[tok.lit_ids] = leaf[tok.const_id] = True
    un[[tok.op_token[o.id] for o in ops.unary]] = True
    bi[[tok.op_token[o.id] for o in ops.binary]] = True
    return GrammarMasks(leaf, un, bi, tok.ptr_ids)


def _simulate(tok, masks, budget, n_consts, logit_fn, rng, temperature=1.0, top_k=None):
    n = len(budget)
    need, length = np.ones(n, np.int64), np.zeros(n, np.int64)
    seqs = [[] for _ in range(n)]
    active = np.arange(n)
    while len(active):
        allowed = allowed_tokens(masks, length[active], need[active], budget[active], n_consts[active])
        toks, ok = sample_tokens(logit_fn(len(active)), allowed, temperature, top_k, rng)
        assert ok.all()
        for r, t in zip(active, toks):
            seqs[r].append(int(t))
        need[active] += tok.arity[toks].astype(np.int64) - 1
        length[active] += 1
        active = active[need[active] > 0]
    return seqs


def test_random_logits_always_well_formed_within_budget():
    rng = np.random.default_rng(0)
    tok = Tokenizer()
    ops = OperatorSet.from_names(["+", "*", "/"], ["sin", "exp"])
    nf = 2
    masks = _masks(tok, ops, nf)
    allowed_ops = {-o.id for o in ops.all}
    budget = rng.integers(1, 31, size=400)
    n_consts = rng.integers(0, 5, size=400)
    makers = [
        lambda n: rng.normal(size=(n, tok.vocab_size)) * 5,
        lambda n: np.where(tok.arity >= 1, 50.0, 0.0)[None, :].repeat(n, 0),  # pushes for operators
        lambda n: rng.uniform(-1e30, 1e30, size=(n, tok.vocab_size)),
    ]
    for make in makers:
        for top_k in (None, 3):
            seqs = _simulate(tok, masks, budget, n_consts, make, rng, top_k=top_k)
            for seq, b, k in zip(seqs, budget, n_consts):
                parent = Expr([0] * int(k) if k else [1], [1.0] * int(k) if k else [0.0])
                child = tok.decode_child(seq, parent, lambda: 0.0)
                assert child.is_valid() and len(child) <= b
                assert all(c <= nf for c in child.codes)
                assert all(c >= 0 or c in allowed_ops for c in child.codes)


def test_greedy_and_non_finite_logits():
    rng = np.random.default_rng(1)
    tok = Tokenizer()
    masks = _masks(tok, OperatorSet.from_names(["+"], []), 1)
    allowed = allowed_tokens(masks, np.zeros(3, np.int64), np.ones(3, np.int64), np.full(3, 5), np.zeros(3, np.int64))
    logits = rng.normal(size=(3, tok.vocab_size))
    logits[1, 0] = np.nan
    logits[2, 5] = np.inf
    toks, ok = sample_tokens(logits, allowed, 0.0, None, rng)
    assert ok.tolist() == [True, False, False]
    assert allowed[0, toks[0]]


def test_sample_constant_is_finite_and_near_parent():
    rng = np.random.default_rng(2)
    vals = [sample_constant([3.0], 1.0, rng, probability_negate=0.0) for _ in range(2000)]
    assert all(np.isfinite(vals))
    near = [v for v in vals if 3.0 / 1.25 <= v <= 3.0 * 1.25]
    assert 0.4 < len(near) / len(vals) < 0.7  # about half perturb the parent constant
    assert np.isfinite(sample_constant([], float("nan"), rng))


def test_grammar_table_equals_allowed_tokens():
    from ttsr_bridge.propose.sampling import GrammarTable

    rng = np.random.default_rng(3)
    tok = Tokenizer()
    masks = _masks(tok, OperatorSet.from_names(["+", "*"], ["cos"]), 3)
    table = GrammarTable(masks)
    n = 500
    budget = rng.integers(1, 40, size=n)
    length = rng.integers(0, 39, size=n) % budget
    need = 1 + rng.integers(0, 40, size=n) % np.maximum(budget - length, 1)
    n_consts = rng.integers(0, 25, size=n)
    want = allowed_tokens(masks, length, need, budget, n_consts)
    assert np.array_equal(table.allowed(length, need, budget, n_consts), want)


def test_gumbel_fast_path_equals_reference_formula():
    """Without top-k, sampling is Gumbel-max on tempered, masked float64 logits (the same draws
    as the reference formula, whatever the temperature)."""
    logits = np.random.default_rng(4).normal(size=(7, 30)).astype(np.float32) * 5
    allowed = np.random.default_rng(5).random((7, 30)) < 0.4
    allowed[:, 0] = True
    for temperature in (1.0, 0.3, 2.5):
        toks, ok = sample_tokens(logits, allowed, temperature, None, np.random.default_rng(6))
        noise = np.log(np.maximum(np.random.default_rng(6).standard_exponential(logits.shape), 1e-300))
        want = np.where(allowed, logits.astype(np.float64) / temperature - noise, -np.inf).argmax(axis=1)
        assert ok.all() and np.array_equal(toks, want)
        assert allowed[np.arange(7), toks].all()


def test_compiled_grammar_step_equals_numpy_sampling():
    """grammar_step's compiled path: the tokens of sample_tokens on the table's allowed sets
    (same draws), the same grammar update, non-finite rows flagged."""
    from ttsr_bridge.propose.sampling import GrammarState, GrammarTable, grammar_step

    tok = Tokenizer()
    table = GrammarTable(_masks(tok, OperatorSet.from_names(["+", "*"], ["sin"]), 2))
    arity = tok.arity.astype(np.int64)
    rng = np.random.default_rng(8)
    n = 40
    budget, n_consts = rng.integers(1, 12, size=n), rng.integers(0, 4, size=n)
    for temperature in (1.0, 0.6):
        fast = GrammarState.start(table, budget, n_consts)
        slow = GrammarState.start(table, budget, n_consts)
        logits = rng.normal(size=(n, tok.vocab_size)).astype(np.float32) * 3
        logits[3, 7] = np.nan
        toks, ok, keep = grammar_step(logits, table, fast, arity, temperature, None, np.random.default_rng(9))
        allowed = table.allowed_bins(np.minimum(slow.slack, 2), slow.consts)
        want, want_ok = sample_tokens(logits, allowed, temperature, None, np.random.default_rng(9))
        assert np.array_equal(ok, want_ok) and not ok[3]
        assert np.array_equal(toks[ok], want[ok])
        a = arity[toks]
        assert np.array_equal(fast.need[ok], (slow.need + a - 1)[ok])
        assert np.array_equal(fast.slack[ok], (slow.slack - a)[ok]) and (fast.slack[ok] >= 0).all()
        assert np.array_equal(keep, ok & (fast.need > 0))
