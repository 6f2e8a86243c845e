"""Tokenizer: vocabulary, prompt layout, encode/decode round trips, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttsr_bridge.expr.operators import OperatorSet, register_operator
from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.model.synthetic_data import DEFAULT_OPERATORS, random_tree
from ttsr_bridge.model.tokenizer import (
    MAX_FEATURES,
    TOKENIZER_VERSION,
    DecodeError,
    PromptFields,
    Tokenizer,
    TokenizerError,
    iteration_bucket,
)
from ttsr_bridge.propose.protocol import N_LOSS_BINS, DataStats, ProblemContext, ProposalRequest


def _fields(parent: Expr, nf: int = 3, stats: DataStats | None = None, members=()) -> PromptFields:
    return PromptFields(nf, DEFAULT_OPERATORS, 7, parent, 4, stats, members)


def test_vocabulary_is_small_unique_and_versioned():
    tok = Tokenizer()
    assert len(set(tok.tokens)) == tok.vocab_size < 200
    d = tok.to_dict()
    assert d["version"] == TOKENIZER_VERSION and Tokenizer.from_dict(d).tokens == tok.tokens
    with pytest.raises(TokenizerError, match="version"):
        Tokenizer.from_dict({**d, "version": 999})
    with pytest.raises(TokenizerError, match="differs"):
        Tokenizer.from_dict({**d, "tokens": d["tokens"][:-1]})


def test_child_round_trip_random_trees():
    rng = np.random.default_rng(0)
    tok = Tokenizer()
    for _ in range(300):
        parent = random_tree(rng, int(rng.integers(1, 30)), 4, DEFAULT_OPERATORS)
        # A child equal to the parent: all constants are pointers → exact round trip.
        ids = tok.encode_child(parent, parent) + [tok.eos_id]
        assert tok.decode_child(ids, parent) == parent
        assert tok.is_well_formed(ids, len(parent.constant_indices()))


def test_child_constants_pointer_literal_const():
    tok = Tokenizer()
    parent = op("+", op("*", var(0), const(2.5)), const(-0.3))
    child = op("+", op("*", const(-0.3), const(2.0)), op("sin", const(7.7)))
    ids = tok.encode_child(child, parent)
    assert tok.describe(ids) == "op:+ op:* c:1 lit:2 op:sin const"
    decoded = tok.decode_child(ids, parent, lambda: 1.25)
    assert decoded.vals == [0.0, 0.0, -0.3, 2.0, 0.0, 1.25]
    assert math.isnan(tok.decode_child(ids, parent).vals[-1])  # no sampler → NaN placeholder


def test_prompt_layout_and_example():
    tok = Tokenizer()
    parent = op("cos", var(1))
    ids, n_prompt = tok.encode_example(_fields(parent), op("sin", var(1)))
    assert tok.describe(ids) == (
        "<bos> nf:3 <ops> op:+ op:- op:* op:/ op:exp op:sin op:cos iter:3 <parent> op:cos x2 loss:4 "
        "<child> op:sin x2 <eos>"
    )
    assert tok.describe(ids[:n_prompt]).endswith("<child>")


def test_rich_and_population_prompts():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    stats = DataStats.from_data(X, X[:, 0] * 2)
    rich = Tokenizer("rich", "population")
    fields = _fields(var(0), stats=stats, members=((op("exp", var(2)), 3), (const(1.0), 12)))
    text = rich.describe(rich.encode_prompt(fields))
    assert "<stats> <y>" in text and "x1 corr:8 mono:8" in text
    assert "<member> loss:3 op:exp x3 <member> loss:12 lit:1 <child>" in text
    with pytest.raises(TokenizerError, match="rich"):
        rich.encode_prompt(_fields(var(0)))


def test_prompt_from_request_matches_fields():
    tok = Tokenizer()
    ctx = ProblemContext(3, DEFAULT_OPERATORS, 30)
    parent = op("+", var(0), const(1.5))
    req = ProposalRequest(parent, 0.02, 0.02, 0, 7, 0.5, 20, ctx)
    f = PromptFields.from_request(req)
    assert f.parent_loss_bin == req.parent_loss_bin
    assert tok.encode_prompt(f) == tok.encode_prompt(PromptFields(3, DEFAULT_OPERATORS, 7, parent, req.parent_loss_bin))


@pytest.mark.parametrize("ids_text", ["op:+ x1", "x1 x2", "op:sin", "", "<bos>", "c:3"])
def test_decode_ill_formed_raises(ids_text):
    tok = Tokenizer()
    ids = [tok.token_to_id[t] for t in ids_text.split()]
    with pytest.raises(DecodeError):
        tok.decode_child(ids, op("+", var(0), const(1.0)))
    assert not tok.is_well_formed(ids + [tok.eos_id], 1)


def test_unrepresentable_inputs_raise_clearly():
    tok = Tokenizer()
    with pytest.raises(TokenizerError, match="features"):
        tok.encode_parent(var(MAX_FEATURES))
    with pytest.raises(TokenizerError, match="features"):
        tok.encode_context(_fields(var(0), nf=MAX_FEATURES + 1))
    user = register_operator("ttsr_test_tok_op", 1, np.negative)
    with pytest.raises(TokenizerError, match="no token"):
        tok.encode_parent(Expr([-user.id, 1]))
    with pytest.raises(TokenizerError, match="loss bin"):
        tok.encode_request(PromptFields(1, DEFAULT_OPERATORS, 0, var(0), N_LOSS_BINS))


def test_iteration_bucket_monotone():
    b = [iteration_bucket(i) for i in range(300)]
    assert b[0] == 0 and b == sorted(b) and max(b) == 7


def test_operator_context_sorted_by_id():
    tok = Tokenizer()
    a = PromptFields(1, OperatorSet.from_names(["*", "+"], ["cos", "sin"]), 0, var(0), 0)
    b = PromptFields(1, OperatorSet.from_names(["+", "*"], ["sin", "cos"]), 0, var(0), 0)
    assert tok.encode_context(a) == tok.encode_context(b)
