"""ONNX export, graph version 3 (onnxruntime's GroupQueryAttention, per-row caches): logits
match torch (≤ 1e-4) for a prefix, packed prompts after it and ragged decode steps, with the
caches copied or updated in place; int8 stays close; the sidecar says version 3."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    from ttsr_bridge.model.export import export_run

    root = tmp_path_factory.mktemp("export_v3")
    tiny_run(root, seed=7)
    sidecar = export_run(root / "run", root / "m3.onnx", graph_version=3)
    return root, sidecar


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_logits(root, ids: np.ndarray) -> np.ndarray:
    """Logits ``(T, V)`` of one sequence run alone in torch (no cache)."""
    import torch

    from ttsr_bridge.model.train import load_checkpoint_model

    model, _, _ = load_checkpoint_model(root / "run")
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids[None])).logits[0].numpy()


def _run(sess, names, ids, pos, seqlens, total, mask, past):
    feeds = dict(zip(names, [ids, pos, np.asarray(seqlens, np.int32), np.array(total, np.int32), mask, *past]))
    out = sess.run(None, feeds)
    return out[0], out[1:]


def test_prefix_packed_prompts_and_ragged_decode_match_torch(exported):
    """The proposer's use: a prefix (batch 1), two prompts packed after it (positions restart
    after the prefix, each attends the prefix and itself), then per-row caches of different
    lengths (right-padded buffers) decoded one token per row — each equal to torch on that
    row's sequence alone."""
    from ttsr_bridge.model.export import io_names_v3

    root, sc = exported
    rng = np.random.default_rng(3)
    names, _ = io_names_v3(sc.num_layers)
    sess = _session(root / "m3.onnx")
    nh, d, n2 = sc.num_heads, sc.head_dim, 2 * sc.num_layers
    prefix, a, b = (rng.integers(0, sc.vocab_size, size=n).astype(np.int64) for n in (4, 6, 3))
    p = len(prefix)

    pre_logits, pre = _run(sess, names, prefix[None], np.arange(p)[None], [p - 1], p, np.ones((1, 1, p, p), bool),
                           [np.zeros((1, nh, 0, d), np.float32)] * n2)
    assert float(np.abs(pre_logits[0] - _torch_logits(root, prefix)).max()) <= 1e-4

    owner = np.array([0] * len(a) + [1] * len(b))
    s = len(owner)
    own = (np.arange(s)[None, :] <= np.arange(s)[:, None]) & (owner[None, :] == owner[:, None])
    mask = np.concatenate([np.ones((s, p), bool), own], axis=1)[None, None]
    pos = np.concatenate([np.arange(p, p + len(a)), np.arange(p, p + len(b))])[None]
    packed_logits, packed = _run(sess, names, np.concatenate([a, b])[None], pos, [p + s - 1], p + s, mask, pre)
    for seq, lo in ((a, 0), (b, len(a))):
        want = _torch_logits(root, np.concatenate([prefix, seq]))[p:]
        assert float(np.abs(packed_logits[0, lo:lo + len(seq)] - want).max()) <= 1e-4

    # Per-row caches, right-padded to m: row 0 = prefix + a, row 1 = prefix + b; padding is junk.
    m = p + len(a) + 3
    caches = []
    for t in packed:
        c = rng.normal(size=(2, nh, m, d)).astype(np.float32) * 100
        c[:, :, :p] = t[0, :, :p]
        c[0, :, p:p + len(a)] = t[0, :, p:p + len(a)]
        c[1, :, p:p + len(b)] = t[0, :, p + len(a):p + s]
        caches.append(c)
    nxt = np.array([[5], [9]], np.int64)
    lengths = np.array([p + len(a), p + len(b)])
    step_logits, present = _run(sess, names, nxt, lengths[:, None], lengths, m, np.ones((1, 1, 1, m), bool), caches)
    for row, seq in enumerate((a, b)):
        want = _torch_logits(root, np.concatenate([prefix, seq, nxt[row]]))[-1]
        assert float(np.abs(step_logits[row, 0] - want).max()) <= 1e-4
        assert np.array_equal(present[0][row, :, :lengths[row]], caches[0][row, :, :lengths[row]])  # kept


def test_shared_buffers_are_updated_in_place(exported):
    """Past and present bound to the same buffers (IOBinding): the new keys land in place at
    each row's own length and the logits equal those of the copying run."""
    import onnxruntime as ort

    from ttsr_bridge.model.export import io_names_v3

    root, sc = exported
    rng = np.random.default_rng(4)
    names, outs = io_names_v3(sc.num_layers)
    sess = _session(root / "m3.onnx")
    m, lengths = 12, np.array([3, 7, 5])
    caches = [rng.normal(size=(3, sc.num_heads, m, sc.head_dim)).astype(np.float32) for _ in range(2 * sc.num_layers)]
    ids = rng.integers(0, sc.vocab_size, size=(3, 1)).astype(np.int64)
    args = (ids, lengths[:, None].astype(np.int64), lengths, m, np.ones((1, 1, 1, m), bool))
    want_logits, want = _run(sess, names, *args, [c.copy() for c in caches])
    io = sess.io_binding()
    io.bind_output("logits")
    for name, arr in zip(names[:5], [*args[:2], args[2].astype(np.int32), np.array(m, np.int32), args[4]]):
        io.bind_cpu_input(name, np.ascontiguousarray(arr))
    for name, out, arr in zip(names[5:], outs[1:], caches):
        value = ort.OrtValue.ortvalue_from_numpy(arr)
        io.bind_ortvalue_input(name, value)
        io.bind_ortvalue_output(out, value)
    sess.run_with_iobinding(io)
    assert float(np.abs(io.get_outputs()[0].numpy() - want_logits).max()) <= 1e-5
    for got, w in zip(caches, want):
        for row, n in enumerate(lengths):
            assert float(np.abs(got[row, :, :n + 1] - w[row, :, :n + 1]).max()) <= 1e-6


def test_int8_v3_stays_close_and_proposes(exported, int8_matches_fp32):
    from ttsr_bridge.model.export import export_run, io_names_v3

    root, sc = exported
    side = export_run(root / "run", root / "m3_8.onnx", weights="int8", graph_version=3)
    assert side.weights == "int8" and side.graph_version == 3
    names, _ = io_names_v3(sc.num_layers)
    rng = np.random.default_rng(5)
    t = 12
    ids = rng.integers(0, sc.vocab_size, size=(2, t)).astype(np.int64)
    empty = [np.zeros((2, sc.num_heads, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers)
    logits = [_run(_session(root / name), names, ids, np.tile(np.arange(t), (2, 1)), [t - 1] * 2, t,
                   np.ones((1, 1, t, t), bool), empty)[0] for name in ("m3.onnx", "m3_8.onnx")]
    int8_matches_fp32(*logits, root / "m3_8.onnx", rng)


def test_sidecar_says_version_3_and_bad_versions_are_refused(exported, tmp_path):
    from ttsr_bridge.model.export import build_graph_v3, export_run, sidecar_path

    root, sc = exported
    assert json.loads(sidecar_path(root / "m3.onnx").read_text())["graph_version"] == 3 == sc.graph_version
    with pytest.raises(ValueError, match="graph_version"):
        export_run(root / "run", tmp_path / "x.onnx", graph_version=4)

    class Odd:  # only the head size is read before the check
        head_dim = 8

    with pytest.raises(ValueError, match="multiple of 16"):
        build_graph_v3(Odd())
