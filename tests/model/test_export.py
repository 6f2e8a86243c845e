"""ONNX export: logits and cache match torch (≤ 1e-4) with and without past, left padding
and packed sequences included; the sidecar describes the model; the tiny config stays under 10 MB."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttsr_bridge.config_io import from_mapping
from ttsr_bridge.model.config import TrainConfig

CFG = {"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_positions": 192},
       "max_prompt_len": 128, "max_child_len": 40, "seed": 5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ttsr_bridge.model.export import export_run
    from ttsr_bridge.model.train import init_run

    root = tmp_path_factory.mktemp("export")
    init_run(from_mapping(TrainConfig, CFG), root / "run")
    sidecar = export_run(root / "run", root / "m.onnx")
    return root, sidecar


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

    from ttsr_bridge.model.export import causal_mask, io_names

    root, sc = exported
    rng = np.random.default_rng(b * 100 + t * 10 + p)
    ids = rng.integers(0, sc.vocab_size, size=(b, t)).astype(np.int64)
    mask = np.ones((b, p + t), np.int64)
    mask[0, : max(0, p + t - 3) // 2] = 0  # left padding on the first row
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, p:].astype(np.int64)
    past = [rng.normal(size=(b, sc.num_heads, p, sc.head_dim)).astype(np.float32) for _ in range(2 * sc.num_layers)]
    sess = ort.InferenceSession(str(root / "m.onnx"), providers=["CPUExecutionProvider"])
    names, _ = io_names(sc.num_layers)
    got = sess.run(None, dict(zip(names, [ids, causal_mask(mask, t), pos, *past])))
    want = _torch_outputs(root, ids, mask, pos, past)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        # Padded query rows are garbage in both (never used): compare attended rows only.
        assert float(np.abs(g[1:] - w[1:]).max()) <= 1e-4
        assert float(np.abs(g[0, ..., -1:, :] - w[0, ..., -1:, :]).max()) <= 1e-4


def test_packed_sequences_match_separate_runs(exported):
    """Two prompts packed after a shared prefix (per-query mask, positions restarting after the
    prefix) give each prompt's logits as when run alone, then one decode step for both."""
    import onnxruntime as ort

    from ttsr_bridge.model.export import io_names

    root, sc = exported
    rng = np.random.default_rng(11)
    prefix, a, b = (rng.integers(0, sc.vocab_size, size=n).astype(np.int64) for n in (4, 5, 3))
    sess = ort.InferenceSession(str(root / "m.onnx"), providers=["CPUExecutionProvider"])
    names, _ = io_names(sc.num_layers)
    empty = [np.zeros((1, sc.num_heads, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers)
    ids = np.concatenate([prefix, a, b])[None, :]
    owner = np.array([-1] * 4 + [0] * 5 + [1] * 3)
    n = len(owner)
    mask = (np.arange(n)[None, :] <= np.arange(n)[:, None]) & ((owner[None, :] == -1) | (owner[None, :] == owner[:, None]))
    pos = np.concatenate([np.arange(4), np.arange(4, 9), np.arange(4, 7)])[None, :]
    out = sess.run(None, dict(zip(names, [ids, mask[None], pos, *empty])))
    nxt = np.array([[7, 9]], np.int64)  # one new token per prompt
    step_mask = np.zeros((1, 2, n + 2), bool)
    step_mask[0, 0, :9] = step_mask[0, 1, :4] = step_mask[0, 1, 9:12] = True
    step_mask[0, 0, n] = step_mask[0, 1, n + 1] = True
    step = sess.run(None, dict(zip(names, [nxt, step_mask, np.array([[9, 7]]), *out[1:]])))
    for seq, last, row in ((a, 8, 0), (b, 11, 1)):
        full = np.concatenate([prefix, seq, nxt[0, row:row + 1]])[None, :]
        t = full.shape[1]
        want = _torch_outputs(root, full, np.ones((1, t), np.int64), np.arange(t)[None, :],
                              [np.zeros((1, sc.num_heads, 0, sc.head_dim), np.float32)] * (2 * sc.num_layers))[0]
        assert float(np.abs(out[0][0, last] - want[0, -2]).max()) <= 1e-4
        assert float(np.abs(step[0][0, row] - want[0, -1]).max()) <= 1e-4


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
