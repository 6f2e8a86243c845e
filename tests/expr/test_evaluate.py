"""The compiled evaluator against a plain NumPy reference (SR.jl eval_tree_array semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttsr_bridge.expr.evaluate import (
    COMPILED_OPERATOR_IDS,
    EvalData,
    eval_batch,
    eval_batch_codes,
    evaluate,
    loss_batch,
    loss_batch_codes,
    loss_one,
    pack_exprs,
)
from ttsr_bridge.expr.operators import OPERATORS, USER_ID_START, register_operator
from ttsr_bridge.expr.tree import Expr, const, op, var


def reference_eval(expr: Expr, X: np.ndarray) -> tuple[np.ndarray, bool]:
    """Recursive NumPy evaluation; invalid when any constant/intermediate is non-finite."""
    n = X.shape[0]
    valid = True

    def rec(i: int) -> tuple[np.ndarray, int]:
        nonlocal valid
        c = expr.codes[i]
        if c == 0:
            valid &= math.isfinite(expr.vals[i])
            return np.full(n, expr.vals[i]), i + 1
        if c > 0:
            return X[:, c - 1].astype(float), i + 1
        operator = OPERATORS[-c]
        args, j = [], i + 1
        for _ in range(operator.arity):
            a, j = rec(j)
            args.append(a)
        out = np.asarray(operator.numpy(*args), dtype=float) * np.ones(n)
        valid &= bool(np.all(np.isfinite(out)))
        return out, j

    out, end = rec(0)
    assert end == len(expr.codes)
    return out, valid


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(50, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    return EvalData(X, y)


def test_every_builtin_operator_is_compiled():
    builtins = {i for i in OPERATORS if i < USER_ID_START}
    assert builtins <= COMPILED_OPERATOR_IDS


_SPECIAL = np.array(
    [-1e300, -3.0, -2.0, -1.5, -1.0, -0.5, -0.0, 0.0, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 800.0]
)


@pytest.mark.parametrize(
    "opid", sorted(i for i in COMPILED_OPERATOR_IDS if OPERATORS[i].arity == 1)
)
def test_unary_semantics_match_numpy(opid):
    operator = OPERATORS[opid]
    X = _SPECIAL[:, None]
    got = evaluate(Expr([-opid, 1]), X)
    with np.errstate(all="ignore"):
        want = operator.numpy(_SPECIAL.copy())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=operator.name)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-14, err_msg=operator.name)


@pytest.mark.parametrize(
    "opid", sorted(i for i in COMPILED_OPERATOR_IDS if OPERATORS[i].arity == 2)
)
def test_binary_semantics_match_numpy(opid):
    operator = OPERATORS[opid]
    a, b = np.meshgrid(_SPECIAL, _SPECIAL)
    X = np.column_stack([a.ravel(), b.ravel()])
    got = evaluate(Expr([-opid, 1, 2]), X)
    with np.errstate(all="ignore"):
        want = operator.numpy(X[:, 0].copy(), X[:, 1].copy())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=operator.name)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-14, err_msg=operator.name)


def test_safe_pow_cases():
    X = np.array([[-2.0, 3.0], [-2.0, 0.5], [0.0, -1.0], [0.0, 2.0], [4.0, 0.5], [-8.0, -1.0]])
    got = evaluate(Expr([-5, 1, 2]), X)
    np.testing.assert_array_equal(np.isnan(got), [False, True, True, False, False, False])
    np.testing.assert_allclose(got[[0, 3, 4, 5]], [-8.0, 0.0, 2.0, -0.125])


def test_random_trees_match_reference(make_tree, data):
    rng = np.random.default_rng(1)
    exprs = [make_tree(rng, int(rng.integers(0, 12))) for _ in range(400)]
    preds, valid = eval_batch(exprs, data)
    losses = loss_batch(exprs, data)
    n_invalid = 0
    for k, e in enumerate(exprs):
        ref, ref_valid = reference_eval(e, data.X)
        assert valid[k] == ref_valid, e
        if ref_valid:
            np.testing.assert_allclose(preds[k], ref, rtol=1e-9, atol=1e-12)
            want = np.mean((ref - data.y) ** 2)
            if math.isfinite(want):
                assert losses[k] == pytest.approx(want, rel=1e-9)
            else:
                assert losses[k] == math.inf
        else:
            n_invalid += 1
            assert np.all(np.isnan(preds[k]))
            assert losses[k] == math.inf
    assert 10 < n_invalid < 390  # both kinds were exercised


def test_batch_equals_single(make_tree, data):
    rng = np.random.default_rng(2)
    exprs = [make_tree(rng, int(rng.integers(0, 10))) for _ in range(100)]
    losses = loss_batch(exprs, data)
    singles = np.array([loss_one(e, data) for e in exprs])
    np.testing.assert_array_equal(losses, singles)
    p = pack_exprs(exprs)
    np.testing.assert_array_equal(loss_batch_codes(p.codes, p.vals, p.offsets, data), losses)


def test_weighted_loss(data):
    rng = np.random.default_rng(3)
    w = rng.uniform(0.1, 2.0, size=data.n_samples)
    wd = EvalData(data.X, data.y, weights=w)
    e = op("*", var(0), const(1.5))
    pred = 1.5 * data.X[:, 0]
    assert loss_one(e, wd) == pytest.approx(np.sum(w * (pred - data.y) ** 2) / np.sum(w))
    assert loss_batch([e], wd)[0] == pytest.approx(loss_one(e, wd))


def test_invalid_and_nonfinite_constant(data):
    assert loss_one(op("log", op("-", var(0), const(10.0))), data) == math.inf
    assert loss_one(op("+", var(0), const(math.inf)), data) == math.inf
    assert loss_one(op("/", var(0), op("-", var(1), var(1))), data) == math.inf
    # evaluate() does not stop: it returns the NaNs/infs
    out = evaluate(op("log", var(0)), data.X)
    assert np.isnan(out[data.X[:, 0] < 0]).all() and np.isfinite(out[data.X[:, 0] > 0]).all()


def test_malformed_raise(data):
    with pytest.raises(ValueError):
        loss_batch([Expr([-1, 1])], data)
    with pytest.raises(ValueError):
        loss_one(Expr([7]), data)  # feature 6 of 3
    with pytest.raises(ValueError):
        eval_batch([Expr([1, 2])], data)
    p = pack_exprs([Expr([-1, 1]), Expr([1])])
    status = np.empty(2, dtype=np.int64)
    losses = loss_batch_codes(p.codes, p.vals, p.offsets, data, status)
    assert losses[0] == math.inf and status.tolist() == [2, 0]


def test_user_operator_fallback(data):
    userop = register_operator("test_cubeplus", 1, lambda x: x**3 + 1.0)
    assert userop.id >= USER_ID_START
    e_user = Expr([-userop.id, 1])
    e_plain = op("+", op("cube", var(0)), const(1.0))
    losses = loss_batch([e_user, e_plain, op("log", op("-", var(0), const(10.0)))], data)
    assert losses[0] == pytest.approx(losses[1])
    assert losses[2] == math.inf
    preds, valid = eval_batch([e_plain, e_user], data)
    np.testing.assert_allclose(preds[0], preds[1])
    assert valid.all()
    np.testing.assert_allclose(evaluate(e_user, data.X), data.X[:, 0] ** 3 + 1)
    # the low-level kernel reports such trees as malformed instead of guessing
    p = pack_exprs([e_user])
    _, status = eval_batch_codes(p.codes, p.vals, p.offsets, data.Xt)
    assert status[0] == 2


@pytest.mark.parametrize(
    "X, y, w",
    [
        (np.zeros((0, 2)), np.zeros(0), None),
        (np.zeros((3, 2)), np.zeros(4), None),
        (np.array([[np.nan, 1.0]]), np.zeros(1), None),
        (np.ones((2, 2)), np.array([1.0, np.inf]), None),
        (np.ones(3), np.ones(3), None),
        (np.ones((2, 2)), np.ones(2), np.array([1.0, -1.0])),
        (np.ones((2, 2)), np.ones(2), np.ones(3)),
        (np.array([["a", "b"]]), np.ones(1), None),
    ],
)
def test_evaldata_validation(X, y, w):
    with pytest.raises(ValueError):
        EvalData(X, y, w)


def test_evaldata_layout():
    X = np.arange(6, dtype=np.int32).reshape(3, 2)
    d = EvalData(X, [1, 2, 3])
    assert d.Xt.shape == (2, 3) and d.Xt.flags.c_contiguous and d.Xt.dtype == np.float64
    np.testing.assert_array_equal(d.X, X)
