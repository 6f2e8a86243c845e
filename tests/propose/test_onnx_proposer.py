"""OnnxProposer with a real exported (untrained) model: valid children in batch, size limits,
None for impossible requests and non-finite logits, no torch on the inference path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ttsr_bridge.expr.operators import OperatorSet, register_operator
from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.model.synthetic_data import random_tree
from ttsr_bridge.propose.protocol import DataStats, ProblemContext, ProposalRequest, Proposer

OPS = OperatorSet.from_names(["+", "*", "-"], ["sin", "exp"])


@pytest.fixture(scope="module", params=[2, 3], ids=["graph_v2", "graph_v3"])
def model_path(request, tmp_path_factory, tiny_run):
    """The same untrained model exported as graph version 2 (shared context, own attention)
    and 3 (per-row caches, onnxruntime's GroupQueryAttention)."""
    from ttsr_bridge.model.export import export_run

    root = tmp_path_factory.mktemp(f"proposer_v{request.param}")
    tiny_run(root, seed=1)
    export_run(root / "run", root / "m.onnx", graph_version=request.param)
    return root / "m.onnx"


def _requests(rng, n, curmaxsize=15, nfeatures=2):
    ctx = ProblemContext(nfeatures, OPS, 30)
    return [ProposalRequest(random_tree(rng, int(rng.integers(1, 12)), nfeatures, OPS), 0.1, 0.1, p,
                            int(rng.integers(0, 50)), 0.3, curmaxsize, ctx) for p in range(n)]


def test_batch_of_valid_children(model_path):
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    rng = np.random.default_rng(0)
    prop = OnnxProposer(model_path, batch_size=16)
    assert isinstance(prop, Proposer)
    for curmax in (1, 3, 15):
        reqs = _requests(rng, 40, curmax)
        reqs += reqs[:5]  # repeated prompts share their prefill
        out = prop.propose(reqs, rng)
        assert len(out) == len(reqs)
        for child in out:
            assert child is not None and child.is_valid() and len(child) <= curmax
            assert child.features_used() <= {0, 1}
            assert {o.id for o in child.operators_used()} <= {o.id for o in OPS.all}
            assert all(np.isfinite(child.vals))
    assert prop.stats.proposals == 135


def test_deterministic_given_rng(model_path):
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    prop = OnnxProposer(model_path, top_k=5)
    reqs = _requests(np.random.default_rng(1), 10)
    a = prop.propose(reqs, np.random.default_rng(7))
    b = prop.propose(reqs, np.random.default_rng(7))
    assert a == b


def test_unencodable_requests_get_none(model_path):
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    prop = OnnxProposer(model_path)
    user = register_operator("ttsr_test_prop_op", 1, np.negative)
    ctx = ProblemContext(2, OPS, 30)
    good = ProposalRequest(op("+", var(0), const(1.0)), 0.1, 0.1, 0, 1, 0.3, 10, ctx)
    bad_op = ProposalRequest(Expr([-user.id, 1]), 0.1, 0.1, 1, 1, 0.3, 10, ctx)
    too_many = ProposalRequest(var(0), 0.1, 0.1, 2, 1, 0.3, 10, ProblemContext(40, OPS, 30))
    no_room = ProposalRequest(var(0), 0.1, 0.1, 3, 1, 0.3, 0, ctx)
    out = prop.propose([good, bad_op, too_many, no_room], np.random.default_rng(0))
    assert out[0] is not None and out[1:] == [None, None, None]
    assert prop.stats.unencodable == 3


def test_nan_weights_return_none(model_path, tmp_path):
    import onnx
    from onnx import numpy_helper

    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    m = onnx.load(str(model_path))
    vocab = json.loads((model_path.parent / "m.onnx.json").read_text())["vocab_size"]
    for init in m.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 2 and arr.shape[1] == vocab:  # the LM head → every logit NaN
            init.CopyFrom(numpy_helper.from_array(np.full_like(arr, np.nan), init.name))
            break
    else:
        pytest.fail("LM head weight not found")
    onnx.save(m, str(tmp_path / "nan.onnx"))
    (tmp_path / "nan.onnx.json").write_text((model_path.parent / "m.onnx.json").read_text())
    prop = OnnxProposer(tmp_path / "nan.onnx")
    out = prop.propose(_requests(np.random.default_rng(2), 6), np.random.default_rng(0))
    assert out == [None] * 6 and prop.stats.bad_logits == 6


def test_rich_model_needs_data_stats(tmp_path, tiny_run):
    from ttsr_bridge.model.export import export_run
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    tiny_run(tmp_path, seed=1, context_mode="rich")
    export_run(tmp_path / "run", tmp_path / "rich.onnx")
    prop = OnnxProposer(tmp_path / "rich.onnx")
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="DataStats"):
        prop.propose(_requests(rng, 2), rng)
    X = rng.normal(size=(30, 2))
    ctx = ProblemContext(2, OPS, 30, data_stats=DataStats.from_data(X, X[:, 0]))
    out = prop.propose([ProposalRequest(var(1), 0.1, 0.1, 0, 3, 0.2, 8, ctx)], rng)
    assert out[0] is not None and out[0].is_valid()


def test_inference_path_imports_no_torch(model_path):
    code = (
        "import sys, numpy as np\n"
        "from ttsr_bridge.propose.onnx_proposer import OnnxProposer\n"
        "from ttsr_bridge.propose.protocol import ProblemContext, ProposalRequest\n"
        "from ttsr_bridge.expr.operators import OperatorSet\n"
        "from ttsr_bridge.expr.tree import var\n"
        f"p = OnnxProposer({str(model_path)!r})\n"
        "ctx = ProblemContext(1, OperatorSet.from_names(['+'], []), 10)\n"
        "out = p.propose([ProposalRequest(var(0), 1.0, 1.0, 0, 0, 0.5, 5, ctx)], np.random.default_rng(0))\n"
        "assert out[0] is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_default_model_resolution(tmp_path):
    from ttsr_bridge.propose import onnx_proposer

    try:
        path = onnx_proposer.default_model_path()
    except FileNotFoundError as e:
        assert "default_model.onnx" in str(e)
        with pytest.raises(FileNotFoundError, match="default"):
            onnx_proposer.OnnxProposer("default")
    else:
        assert onnx_proposer.resolve_model_path("default") == path
    with pytest.raises(FileNotFoundError, match="not found"):
        onnx_proposer.resolve_model_path(tmp_path / "missing.onnx")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        onnx_proposer.OnnxProposer(tmp_path / "x.onnx")


def _torch_greedy(run_dir, prop, req):
    """Reference: greedy grammar-masked decoding with the torch model, one request, no cache."""
    import torch

    from ttsr_bridge.model.tokenizer import PromptFields
    from ttsr_bridge.model.train import load_checkpoint_model

    model, _, tok = load_checkpoint_model(run_dir)
    fields = PromptFields.from_request(req)
    ids = tok.encode_prompt(fields)
    table = prop._grammar_table(fields)
    budget = prop._budget(req)
    n_consts = len(req.parent.constant_indices())
    out, need = [], 1
    while need > 0:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1].numpy()
        allowed = table.allowed(np.array([len(out)]), np.array([need]), np.array([budget]), np.array([n_consts]))[0]
        t = int(np.where(allowed, logits, -np.inf).argmax())
        out.append(t)
        need += int(tok.arity[t]) - 1
    return out


@pytest.mark.parametrize("prefill_tokens", [16, 4096])
def test_packed_greedy_decoding_matches_torch(model_path, prefill_tokens):
    """Greedy children from the packed, cached ONNX path equal greedy decoding with the torch
    model on each prompt alone (several prefill calls, repeated prompts, rows finishing early)."""
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    class Recording(OnnxProposer):
        def _to_expr(self, tokens, req, rng):
            self.seen.append(tokens)
            return super()._to_expr(tokens, req, rng)

    prop = Recording(model_path, temperature=0.0, prefill_tokens=prefill_tokens, threads=1)
    prop.seen = []
    reqs = _requests(np.random.default_rng(4), 6, curmaxsize=9)
    reqs += reqs[:2]
    rng = np.random.default_rng(0)
    prop.propose(reqs, rng)
    prop.propose(reqs, rng)  # second call: the prefix key/value cache is reused
    run_dir = model_path.parent / "run"
    want = [_torch_greedy(run_dir, prop, r) for r in reqs]
    assert prop.seen[: len(reqs)] == want
    assert prop.seen[len(reqs):] == want
    # Two threads (two parts decoded in parallel): the same greedy trees.
    two = OnnxProposer(model_path, temperature=0.0, prefill_tokens=prefill_tokens, threads=2).propose(reqs, rng)
    one = prop.propose(reqs, rng)
    assert [c.codes for c in two] == [c.codes for c in one]


def test_old_graph_version_is_rejected(model_path, tmp_path):
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    data = json.loads((model_path.parent / "m.onnx.json").read_text())
    del data["graph_version"]
    (tmp_path / "old.onnx").write_bytes(model_path.read_bytes())
    (tmp_path / "old.onnx.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="re-export"):
        OnnxProposer(tmp_path / "old.onnx")


def test_parts_and_threads_give_valid_children(model_path):
    """Small context parts (many parts) and two threads: every child valid, deterministic."""
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    prop = OnnxProposer(model_path, threads=2, max_context_tokens=40, prefill_tokens=24)
    reqs = _requests(np.random.default_rng(8), 30, curmaxsize=12)
    a = prop.propose(reqs, np.random.default_rng(1))
    b = prop.propose(reqs, np.random.default_rng(1))
    assert a == b
    assert all(c is not None and c.is_valid() and len(c) <= 12 for c in a)


def test_thread_parts_decode_the_same_greedy_children(model_path):
    """A batch of 2 × 8+ rows is decoded as two parts on two threads: greedy children equal
    the single-batch ones (each part attends only its own prompts), at the price of more calls."""
    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    reqs = _requests(np.random.default_rng(9), 20, curmaxsize=10)
    one = OnnxProposer(model_path, temperature=0.0, threads=1)
    two = OnnxProposer(model_path, temperature=0.0, threads=2)
    a = one.propose(reqs, np.random.default_rng(0))
    b = two.propose(reqs, np.random.default_rng(0))
    assert [c.codes for c in a] == [c.codes for c in b]
    assert two.stats.model_calls > one.stats.model_calls  # two parts: two decode loops
    small = OnnxProposer(model_path, temperature=0.0, threads=2)
    small.propose(reqs[:10], np.random.default_rng(0))  # < 2 × 8 rows: one part
    ref = OnnxProposer(model_path, temperature=0.0, threads=1)
    ref.propose(reqs[:10], np.random.default_rng(0))
    assert small.stats.model_calls == ref.stats.model_calls


def test_pool_threads_have_their_own_sessions_and_are_released(model_path):
    """Each pool thread runs its own onnxruntime session (one shared session is slower under
    concurrent runs); the proposer, its threads and sessions go away with it."""
    import gc
    import threading
    import weakref

    from ttsr_bridge.propose.onnx_proposer import OnnxProposer

    prop = OnnxProposer(model_path, threads=2)
    children = prop.propose(_requests(np.random.default_rng(3), 20, curmaxsize=10), np.random.default_rng(0))
    assert all(c is not None and c.is_valid() for c in children)
    in_pool = prop._map(lambda _: (threading.current_thread().name, prop._session()), [0, 1, 2, 3])
    assert all(name.startswith("ttsr-proposer") and sess is not prop.session for name, sess in in_pool)
    assert prop._session() is prop.session  # the caller's thread
    ref = weakref.ref(prop)
    del prop, in_pool
    gc.collect()
    assert ref() is None
