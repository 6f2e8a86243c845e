"""ONNX export: logits and cache match torch (≤ 1e-4) with and without past, left padding
and packed sequences included; the sidecar describes the model; the tiny config stays under 10 MB."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    from ttsr_bridge.model.export import export_run

    root = tmp_path_factory.mktemp("export")
    tiny_run(root, seed=5)
    sidecar = export_run(root / "run", root / "m.onnx")
    return root, sidecar


def _heads_first(x):
    """(batch, heads, T, D) ↔ the graph's (heads, batch, T, D) cache layout."""
    return np.ascontiguousarray(np.swapaxes(x, 0, 1))


def _torch_outputs(root, ids, mask, pos, past):
    import torch

    from ttsr_bridge.model.export import KVCacheWrapper
    from ttsr_bridge.model.train import load_checkpoint_model

    model, _, _ = load_checkpoint_model(root / "run")
    with torch.no_grad():
        out = KVCacheWrapper(model)(*(torch.as_tensor(a) for a in (ids, mask, pos, *past)))
    return [o.numpy() for o in out]


@pytest.mark.parametrize("b,t,p", [(3, 7, 0), (2, 1, 9), (4, 3, 5)])
def test_onnx_matches_torch(exported, b, t, p):
    import onnxruntime as ort

    from ttsr_bridge.model.export import causal_mask, io_names, to_context

    root, sc = exported
    rng = np.random.default_rng(b * 100 + t * 10 + p)
    ids = rng.integers(0, sc.vocab_size, size=(b, t)).astype(np.int64)
    mask = np.ones((b, p + t), np.int64)
    mask[0, : max(0, p + t - 3) // 2] = 0  # left padding on the first row
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, p:].astype(np.int64)
    past = [rng.normal(size=(b, sc.num_heads, p, sc.head_dim)).astype(np.float32) for _ in range(2 * sc.num_layers)]
    sess = ort.InferenceSession(str(root / "m.onnx"), providers=["CPUExecutionProvider"])
    names, _ = io_names(sc.num_layers)
    no_context = to_context([np.zeros((sc.num_heads, 1, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers))
    got = sess.run(None, dict(zip(names, [ids, causal_mask(mask, t), pos, *no_context, *map(_heads_first, past)])))
    got = [got[0], *map(_heads_first, got[1:])]
    want = _torch_outputs(root, ids, mask, pos, past)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        # Padded query rows are garbage in both (never used): compare attended rows only.
        assert float(np.abs(g[1:] - w[1:]).max()) <= 1e-4
        assert float(np.abs(g[0, ..., -1:, :] - w[0, ..., -1:, :]).max()) <= 1e-4
    if b == 1 or p == 0:
        return
    # The same past given as a shared read-only context (rows 1.. have no padding): same logits.
    ctx = to_context([_heads_first(x[1:2]) for x in past])
    own = [np.zeros((sc.num_heads, 1, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers)
    got = sess.run(None, dict(zip(names, [ids[1:2], causal_mask(mask[1:2], t), pos[1:2], *ctx, *own])))
    assert float(np.abs(got[0] - want[0][1:2]).max()) <= 1e-4


def test_packed_sequences_match_separate_runs(exported):
    """The proposer's use: a prefix cache as context, two prompts packed after it (per-query
    mask, positions restarting after the prefix), then one decode step per prompt with the
    packed prompts as context and only the new tokens as past — each equal to running that
    prompt alone in torch."""
    import onnxruntime as ort

    from ttsr_bridge.model.export import io_names, to_context

    root, sc = exported
    rng = np.random.default_rng(11)
    prefix, a, b = (rng.integers(0, sc.vocab_size, size=n).astype(np.int64) for n in (4, 5, 3))
    sess = ort.InferenceSession(str(root / "m.onnx"), providers=["CPUExecutionProvider"])
    names, _ = io_names(sc.num_layers)

    def empty(batch):
        return [np.zeros((sc.num_heads, batch, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers)

    causal4 = np.tril(np.ones((4, 4), bool))[None]
    pre = sess.run(None, dict(zip(names, [prefix[None], causal4, np.arange(4)[None], *to_context(empty(1)),
                                          *empty(1)])))[1:]
    owner = np.array([0] * 5 + [1] * 3)
    own = (np.arange(8)[None, :] <= np.arange(8)[:, None]) & (owner[None, :] == owner[:, None])
    mask = np.concatenate([np.ones((8, 4), bool), own], axis=1)[None]
    pos = np.concatenate([np.arange(4, 9), np.arange(4, 7)])[None]
    out = sess.run(None, dict(zip(names, [np.concatenate([a, b])[None], mask, pos, *to_context(pre), *empty(1)])))
    context = to_context([np.concatenate([x, y], axis=2) for x, y in zip(pre, out[1:])])  # prefix + packed prompts
    nxt = np.array([[7], [9]], np.int64)  # one new token per prompt, batch 2
    step_mask = np.zeros((2, 1, 12 + 1), bool)
    step_mask[0, 0, :9] = step_mask[1, 0, :4] = step_mask[1, 0, 9:12] = step_mask[:, 0, 12] = True
    step = sess.run(None, dict(zip(names, [nxt, step_mask, np.array([[9], [7]]), *context, *empty(2)])))
    for seq, last, row in ((a, 4, 0), (b, 7, 1)):
        full = np.concatenate([prefix, seq, nxt[row]])[None, :]
        t = full.shape[1]
        want = _torch_outputs(root, full, np.ones((1, t), np.int64), np.arange(t)[None, :],
                              [np.zeros((1, sc.num_heads, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers))
        assert float(np.abs(out[0][0, last] - want[0][0, -2]).max()) <= 1e-4
        assert float(np.abs(step[0][row, 0] - want[0][0, -1]).max()) <= 1e-4
        assert float(np.abs(step[1][:, row, 0] - want[1][0, :, -1]).max()) <= 1e-4  # layer 0's new key


def test_int8_weights_stay_close_and_propose(exported, int8_matches_fp32):
    """``weights="int8"``: a smaller graph whose next-token distribution stays close to fp32's,
    usable by the proposer."""
    import onnxruntime as ort

    from ttsr_bridge.model.export import export_run, io_names, to_context

    root, sc = exported
    side = export_run(root / "run", root / "m8.onnx", weights="int8")
    assert side.weights == "int8" and (root / "m8.onnx").stat().st_size < (root / "m.onnx").stat().st_size
    names, _ = io_names(sc.num_layers)
    rng = np.random.default_rng(5)
    t = 12
    empty = [np.zeros((sc.num_heads, 2, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers)
    feeds = dict(zip(names, [rng.integers(0, sc.vocab_size, size=(2, t)), np.tril(np.ones((t, t), bool))[None].repeat(2, 0),
                             np.tile(np.arange(t), (2, 1)), *to_context([e[:, :1] for e in empty]), *empty]))
    logits = [ort.InferenceSession(str(root / name), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
              for name in ("m.onnx", "m8.onnx")]
    int8_matches_fp32(*logits, root / "m8.onnx", rng)


def test_sidecar_and_size(exported, tmp_path):
    from ttsr_bridge.model.config import load_train_config
    from ttsr_bridge.model.export import export_run, sidecar_path
    from ttsr_bridge.model.tokenizer import Tokenizer
    from ttsr_bridge.model.train import init_run

    root, sc = exported
    data = json.loads(sidecar_path(root / "m.onnx").read_text())
    assert Tokenizer.from_dict(data["tokenizer"]).vocab_size == sc.vocab_size
    assert data["context_mode"] == "basic" and data["max_child_len"] == 40 and data["num_layers"] == 2
    assert data["graph_version"] == 2
    # The shipped tiny size: ONNX fp32 well under 10 MB.
    from pathlib import Path

    tiny = load_train_config(Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml")
    init_run(tiny, tmp_path / "tiny")
    export_run(tmp_path / "tiny", tmp_path / "tiny.onnx")
    assert (tmp_path / "tiny.onnx").stat().st_size < 10 * 2**20


def test_masked_context_never_leaks(exported):
    """Masked keys keep a weight of e^-60 of the largest (the softmax floor that keeps
    onnxruntime's exp off denormals): a long masked context of huge values changes nothing."""
    import onnxruntime as ort

    from ttsr_bridge.model.export import io_names, to_context

    root, sc = exported
    rng = np.random.default_rng(12)
    names, _ = io_names(sc.num_layers)
    sess = ort.InferenceSession(str(root / "m.onnx"), providers=["CPUExecutionProvider"])
    empty = [np.zeros((sc.num_heads, 2, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers)
    ids, pos = rng.integers(0, sc.vocab_size, size=(2, 3)), np.tile(np.arange(3), (2, 1))
    causal = np.tril(np.ones((3, 3), bool))[None].repeat(2, 0)
    alone = sess.run(None, dict(zip(names, [ids, causal, pos, *to_context([e[:, :1] for e in empty]), *empty])))
    junk = to_context([np.full((sc.num_heads, 1, 500, sc.head_dim), 1e4, np.float32)] * (2 * sc.num_layers))
    hidden = np.concatenate([np.zeros((2, 3, 500), bool), causal], axis=2)
    got = sess.run(None, dict(zip(names, [ids, hidden, pos, *junk, *empty])))
    for g, w in zip(got, alone):
        assert np.isfinite(g).all() and float(np.abs(g - w).max()) <= 1e-5
