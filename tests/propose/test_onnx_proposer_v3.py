"""OnnxProposer on graph version 3 (per-row caches, GroupQueryAttention) against version 2
of the same weights: identical greedy children over a ragged batch, with finished rows
dropped both as trailing views and by copying."""

from __future__ import annotations

import numpy as np
import pytest

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.model.synthetic_data import random_tree
from ttsr_bridge.propose.protocol import ProblemContext, ProposalRequest

OPS = OperatorSet.from_names(["+", "*", "-"], ["sin", "exp"])


@pytest.fixture(scope="module")
def both_versions(tmp_path_factory, tiny_run):
    from ttsr_bridge.model.export import export_run

    root = tmp_path_factory.mktemp("proposer_v2_v3")
    tiny_run(root, seed=2)
    for version in (2, 3):
        export_run(root / "run", root / f"v{version}.onnx", graph_version=version)
    return root / "v2.onnx", root / "v3.onnx"


def _requests(rng, n):
    """Every third request may only make a leaf (size limit 1): those rows finish at the first
    step and, expected shortest, sit in the last batch slots."""
    ctx = ProblemContext(2, OPS, 30)
    return [ProposalRequest(random_tree(rng, int(rng.integers(1, 20)), 2, OPS), 0.1, 0.1, p, 3, 0.3,
                            1 if p % 3 == 0 else int(rng.integers(2, 25)), ctx) for p in range(n)]


@pytest.mark.parametrize("threads", [1, 2])
def test_v3_greedy_children_equal_v2(both_versions, threads):
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    reqs = _requests(np.random.default_rng(6), 40)
    reqs += reqs[:4]  # repeated prompts share their prefill
    v2, v3 = (OnnxProposer(path, temperature=0.0, threads=threads, prefill_tokens=48) for path in both_versions)
    assert v3.graph_version == 3
    a = v2.propose(reqs, np.random.default_rng(0))
    b = v3.propose(reqs, np.random.default_rng(0))
    assert all(c is not None and c.is_valid() and len(c) <= r.curmaxsize for c, r in zip(b, reqs))
    assert [c.codes for c in a] == [c.codes for c in b]


def test_cache_binding_steps_truncates_and_rebuilds_in_place(both_versions):
    """_CacheBinding's in-place steps give the logits of plain (copying) runs, before and after
    dropping trailing slots (a view) and scattered ones (a copy)."""
    import onnxruntime as ort

    from ttsr_bridge.model.export import io_names_v3
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer, _CacheBinding

    prop = OnnxProposer(both_versions[1])
    names, _ = io_names_v3(prop.num_layers)
    sess = ort.InferenceSession(str(both_versions[1]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(9)
    m, pos = 16, np.array([6, 3, 8, 5, 4])
    caches = [rng.normal(size=(5, prop.num_heads, m, prop.head_dim)).astype(np.float32)
              for _ in range(2 * prop.num_layers)]
    plain = [c.copy() for c in caches]
    binding = _CacheBinding(sess, names[5:], caches, pos, prop.tokenizer.vocab_size)

    def plain_step(rows, tok, at):
        nonlocal plain
        feeds = dict(zip(names, [tok[:, None], at[:, None], at.astype(np.int32), np.array(m, np.int32),
                                 np.ones((1, 1, 1, m), bool), *[c[rows] for c in plain]]))
        out = sess.run(None, feeds)
        for c, new in zip(plain, out[1:]):
            c[rows] = new
        return out[0][:, 0]

    for slot, rows, drop in ((np.arange(5), np.arange(5), None), (np.array([0, 1, 2, 4]), np.array([0, 1, 2, 4]), "retire"),
                             (np.arange(3), np.arange(3), "truncate"), (np.arange(2), np.array([0, 2]), "rebuild")):
        if drop == "retire":  # slot 3's row has finished: it is computed as a 1-token row, the others unchanged
            binding.retire(np.array([3]))
        elif drop == "truncate":
            binding.truncate(3)
        elif drop == "rebuild":
            binding.rebuild(np.array([0, 2]))
        tok = rng.integers(0, prop.tokenizer.vocab_size, size=len(rows)).astype(np.int64)
        got = binding.step(slot, tok, pos[rows])
        assert binding.batch == (5 if drop == "retire" else len(slot))  # a retired slot stays until dropped
        assert float(np.abs(got - plain_step(rows, tok, pos[rows])).max()) <= 1e-5
        pos[rows] += 1


def test_fill_row_caches_copies_prefix_and_each_rows_prompt():
    from ttsr_bridge.propose.onnx_proposer import _fill_row_caches

    rng = np.random.default_rng(3)
    prefix = rng.normal(size=(4, 2, 5, 8)).astype(np.float32)  # (2 · layers, heads, P, D)
    packed = rng.normal(size=(4, 2, 30, 8)).astype(np.float32)  # (2 · layers, heads, tokens, D)
    starts, lengths = np.array([0, 12, 7]), np.array([7, 18, 5])
    out = np.full((4, 3, 2, 26, 8), np.nan, np.float32)
    _fill_row_caches(out, prefix, packed, starts, lengths)
    for r, (a, n) in enumerate(zip(starts, lengths)):
        np.testing.assert_array_equal(out[:, r, :, :5], prefix)
        np.testing.assert_array_equal(out[:, r, :, 5:5 + n], packed[:, :, a:a + n])
        assert np.isnan(out[:, r, :, 5 + n:]).all()  # the rest is left unwritten


def test_v3_sampling_is_deterministic_and_valid(both_versions):
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    prop = OnnxProposer(both_versions[1], threads=2)
    reqs = _requests(np.random.default_rng(8), 30)
    a = prop.propose(reqs, np.random.default_rng(1))
    b = prop.propose(reqs, np.random.default_rng(1))
    assert a == b
    assert all(c is not None and c.is_valid() and len(c) <= r.curmaxsize for c, r in zip(a, reqs))
