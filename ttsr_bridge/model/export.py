"""Export a trained run to ONNX with an explicit key/value cache (``ttsr export``).

The graph is written node by node from the trained weights (not traced), so it holds only the
operations the model needs (about 35 nodes per layer, which onnxruntime fuses further) and a
tiny model's decode step costs a fraction of a millisecond. Graph interface (all dynamic axes
named; ``L`` = number of layers)::

    inputs : input_ids (batch, seq) int64,
             attention_mask (batch, seq, context + past + seq) bool: True where a query may
                 attend a key (keys ordered context, past, new),
             position_ids (batch, seq) int64,
             context_key_{i}, context_value_{i} (1 or batch, heads, context, head_dim) float32,
             past_key_{i}, past_value_{i} (batch, heads, past, head_dim) float32, i < L
    outputs: logits (batch, seq, vocab) float32,
             present_key_{i}, present_value_{i} (batch, heads, past + seq, head_dim) float32

``context`` is a read-only cache every row may attend (shared when its batch is 1) and is not
copied to the outputs: the proposer puts its packed prompts there and decodes with ``past``
holding only the children. ``context`` and ``past`` may be 0 long. The mask is per query, so
the caller decides the pattern: causal with left padding (:func:`causal_mask`), or several
sequences *packed* in one row (each attends a shared prefix and its own tokens only). A query
with no allowed key gets garbage (never used). The numerics are the Llama model's (eager
attention, fp32): logits match the torch model to ≤ 1e-4 (tests/model/test_export.py).

The sidecar ``<model>.onnx.json`` (:class:`ExportSidecar` fields) carries the vocabulary, the
tokenizer version, the model config, the context/prompt modes, the maximum lengths and
``graph_version`` (:data:`GRAPH_VERSION`: the interface above).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config_io import to_mapping

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["GRAPH_VERSION", "SIDECAR_VERSION", "ExportSidecar", "KVCacheWrapper", "build_graph", "causal_mask",
           "export_run", "io_names", "sidecar_path"]

SIDECAR_VERSION = 2
GRAPH_VERSION = 2  # 2: context cache + per-query bool mask; 1 was a traced graph with a (batch, total) mask


def sidecar_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the exported graph."""
    context = [f"context_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    past = [f"past_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *context, *past], ["logits", *present]


def causal_mask(padding_mask: np.ndarray, seq: int) -> np.ndarray:
    """The graph's per-query mask from a Hugging Face style ``(batch, past + seq)`` 0/1 padding
    mask: query ``i`` (absolute position ``past + i``) attends unpadded keys ``j <= past + i``.
    Returns ``(batch, seq, past + seq)`` bool."""
    total = padding_mask.shape[1]
    past = total - seq
    causal = np.arange(total)[None, :] <= (past + np.arange(seq))[:, None]  # (seq, total)
    return causal[None, :, :] & (padding_mask[:, None, :] != 0)


@dataclass(frozen=True)
class ExportSidecar:
    """What the proposer needs besides the graph (written as JSON next to it)."""

    sidecar_version: int
    graph_version: int
    tokenizer: dict[str, Any]
    model: dict[str, Any]
    num_layers: int
    num_heads: int
    head_dim: int
    vocab_size: int
    context_mode: str
    prompt_mode: str
    max_prompt_len: int
    max_child_len: int
    max_positions: int
    step: int
    source_run: str


# ---- the torch reference (parity tests) -------------------------------------------------------
def _wrapper_class():
    import torch
    from transformers.cache_utils import DynamicCache

    class KVCacheWrapper(torch.nn.Module):
        """The Hugging Face model with explicit cache tensors and a ``(batch, total)`` padding
        mask: the reference the exported graph is checked against."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.num_layers = model.config.num_hidden_layers

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for i in range(self.num_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return KVCacheWrapper


def KVCacheWrapper(model):
    """``torch.nn.Module``: the torch model with explicit cache tensors (parity reference)."""
    return _wrapper_class()(model)


# ---- weights ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Weights:
    """The Llama weights as the graph uses them: float32, ``(in, out)`` matrices."""

    embed: np.ndarray  # (V, H)
    cos: np.ndarray  # (max_positions, D): RoPE cos
    sin: np.ndarray  # (max_positions, D): RoPE sin, first half negated (the sign of rotate_half)
    layers: tuple[dict[str, np.ndarray], ...]  # ln1, qkv (H, 3H), o (H, H), ln2, gate_up (H, 2I), down (I, H)
    norm: np.ndarray  # (H,)
    lm_head: np.ndarray  # (H, V)
    eps: float
    num_heads: int
    head_dim: int


def _extract_weights(model) -> _Weights:
    """Read a ``LlamaForCausalLM`` into :class:`_Weights` (attention scaling folded into the query)."""
    import torch

    cfg = model.config
    nh, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    if cfg.num_key_value_heads != nh or getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ValueError("export supports the proposer's Llama layout only (no GQA, no biases)")

    def t(x: torch.Tensor) -> np.ndarray:
        return x.detach().to(torch.float32).cpu().numpy()

    rope = model.model.rotary_emb
    pos = torch.arange(cfg.max_position_embeddings, dtype=torch.float32)
    freqs = pos[:, None] * rope.inv_freq.to(torch.float32)[None, :]  # as HF: position * inv_freq in fp32
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = t(emb.cos() * rope.attention_scaling), t(emb.sin() * rope.attention_scaling)
    scaling = d ** -0.5
    layers = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        wq, wk, wv = t(a.q_proj.weight).T * scaling, t(a.k_proj.weight).T, t(a.v_proj.weight).T
        qkv = np.concatenate([wq, wk, wv], axis=1)
        layers.append({
            "ln1": t(layer.input_layernorm.weight), "qkv": qkv, "o": t(a.o_proj.weight).T,
            "ln2": t(layer.post_attention_layernorm.weight),
            "gate_up": np.concatenate([t(m.gate_proj.weight).T, t(m.up_proj.weight).T], axis=1),
            "down": t(m.down_proj.weight).T,
        })
    return _Weights(
        embed=t(model.model.embed_tokens.weight), cos=cos, sin=sin * np.where(np.arange(d) < d // 2, -1.0, 1.0).astype(np.float32),
        layers=tuple(layers), norm=t(model.model.norm.weight), lm_head=t(model.lm_head.weight).T,
        eps=float(cfg.rms_norm_eps), num_heads=nh, head_dim=d,
    )


# ---- graph ------------------------------------------------------------------------------------
class _GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, opset: int):
        from onnx import helper, numpy_helper

        self.opset = opset

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, *, out: str | None = None, **attrs) -> Any:
        """Append a node; returns its output name (a list when ``n_out > 1``). ``out`` names a
        single output (the graph's interface names)."""
        self._n += 1
        outs = [out] if out is not None else [f"{op_type.lower()}_{self._n}_{k}" for k in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def rms_norm(self, x: str, weight: str) -> str:
        # Same formula as LlamaRMSNorm, in the pattern onnxruntime fuses into SimplifiedLayerNormalization.
        sq = self.op("Pow", [x, "two"])
        if self.opset >= 18:  # axes became an input in opset 18
            var = self.op("ReduceMean", [sq, "last_axis"], keepdims=1)
        else:
            var = self.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        return self.op("Mul", [self.op("Div", [x, self.op("Sqrt", [self.op("Add", [var, "eps"])])]), weight])


def _attention(g: _GraphBuilder, i: int, q: str, k: str, v: str, bias: str, splits: str) -> str:
    """Attention of queries ``q`` (B, heads, S, D) over the read-only context cache and the
    row's own keys (past + new ``k``, ``v``; written as ``present_*_{i}``). Scores of both parts
    are joined for one softmax, so the context is never copied. Returns (B, heads, S, D)."""
    present_k = g.op("Concat", [f"past_key_{i}", k], axis=2, out=f"present_key_{i}")
    present_v = g.op("Concat", [f"past_value_{i}", v], axis=2, out=f"present_value_{i}")

    def scores(keys: str) -> str:
        return g.op("MatMul", [q, g.op("Transpose", [keys], perm=[0, 1, 3, 2])])

    joined = g.op("Concat", [scores(f"context_key_{i}"), scores(present_k)], axis=-1)  # (B, heads, S, C + T)
    probs = g.op("Softmax", [g.op("Add", [joined, bias])], axis=-1)
    p_ctx, p_own = g.op("Split", [probs, splits], n_out=2, axis=-1)
    return g.op("Add", [g.op("MatMul", [p_ctx, f"context_value_{i}"]), g.op("MatMul", [p_own, present_v])])


def _layer(g: _GraphBuilder, x: str, i: int, w: dict[str, np.ndarray], rope: tuple[str, str], bias: str,
           splits: str, hidden: int, inter: int) -> str:
    """One decoder layer (writes ``present_key_{i}``, ``present_value_{i}``). Returns the new hidden state."""
    h = g.rms_norm(x, g.const(f"l{i}.ln1", w["ln1"]))
    qk, v = g.op("Split", [g.op("MatMul", [h, g.const(f"l{i}.qkv", w["qkv"])]),
                           g.const(f"l{i}.split_qkv", np.array([2 * hidden, hidden], np.int64))], n_out=2, axis=-1)
    # RoPE on queries and keys together: x cos + rotate_half(x) sin, where rotate_half swaps the
    # two halves of every head (a reversed slice over an axis of 2) and the sign sits in ``sin``.
    halves = g.op("Reshape", [qk, "qk_halves_shape"])  # (B, S, 2 heads, 2, D/2)
    swapped = g.op("Slice", [halves, "minus_one", "int_min", "axis3", "minus_one"])
    qk = g.op("Add", [g.op("Mul", [halves, rope[0]]), g.op("Mul", [swapped, rope[1]])])
    qk = g.op("Transpose", [g.op("Reshape", [qk, "qk_heads_shape"])], perm=[0, 2, 1, 3])  # (B, 2 heads, S, D)
    q, k = g.op("Split", [qk, "split_heads"], n_out=2, axis=1)
    v = g.op("Transpose", [g.op("Reshape", [v, "heads_shape"])], perm=[0, 2, 1, 3])
    att = g.op("Transpose", [_attention(g, i, q, k, v, bias, splits)], perm=[0, 2, 1, 3])
    att = g.op("Reshape", [att, "hidden_shape"])
    x = g.op("Add", [x, g.op("MatMul", [att, g.const(f"l{i}.o", w["o"])])])
    h = g.rms_norm(x, g.const(f"l{i}.ln2", w["ln2"]))
    gate, up = g.op("Split", [g.op("MatMul", [h, g.const(f"l{i}.gate_up", w["gate_up"])]),
                              g.const(f"l{i}.split2", np.full(2, inter, np.int64))], n_out=2, axis=-1)
    act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])  # SwiGLU: silu(gate) * up
    return g.op("Add", [x, g.op("MatMul", [act, g.const(f"l{i}.down", w["down"])])])


def _constants(g: _GraphBuilder, weights: _Weights) -> None:
    """Shape tensors and scalars shared by every layer."""
    nh, d = weights.num_heads, weights.head_dim
    g.const("two", np.array(2.0, np.float32))
    g.const("eps", np.array(weights.eps, np.float32))
    if g.opset >= 18:
        g.const("last_axis", np.array([-1], np.int64))
    g.const("heads_shape", np.array([0, 0, nh, d], np.int64))
    g.const("qk_halves_shape", np.array([0, 0, 2 * nh, 2, d // 2], np.int64))
    g.const("qk_heads_shape", np.array([0, 0, 2 * nh, d], np.int64))
    g.const("split_heads", np.array([nh, nh], np.int64))
    g.const("hidden_shape", np.array([0, 0, nh * d], np.int64))
    g.const("rope_shape", np.array([0, 0, 1, 2, d // 2], np.int64))
    g.const("minus_one", np.array([-1], np.int64))
    g.const("int_min", np.array([np.iinfo(np.int64).min], np.int64))
    g.const("axis3", np.array([3], np.int64))


def _inputs_to_masks(g: _GraphBuilder, weights: _Weights) -> tuple[str, tuple[str, str], str, str]:
    """Embeddings, RoPE factors (B, S, 1, 2, D/2), additive attention bias (B, 1, S, C + T) and
    the (context, own) split sizes of the key axis, all computed once for every layer."""
    x = g.op("Gather", [g.const("embed", weights.embed), "input_ids"], axis=0)  # (B, S, H)
    rope = tuple(g.op("Reshape", [g.op("Gather", [g.const(name, table), "position_ids"], axis=0), "rope_shape"])
                 for name, table in (("rope_cos", weights.cos), ("rope_sin_signed", weights.sin)))
    # 0 where allowed, float32 min (as HF) elsewhere.
    mask4 = g.op("Unsqueeze", ["attention_mask", g.const("axis1", np.array([1], np.int64))])
    bias = g.op("Where", [mask4, g.const("zero", np.array(0.0, np.float32)),
                          g.const("neg_big", np.array(np.finfo(np.float32).min, np.float32))])
    ctx_len = g.op("Shape", ["context_key_0"], start=2, end=3)
    own_len = g.op("Sub", [g.op("Shape", ["attention_mask"], start=2, end=3), ctx_len])
    return x, rope, bias, g.op("Concat", [ctx_len, own_len], axis=0)


def build_graph(weights: _Weights, *, opset: int = 17) -> onnx.ModelProto:
    """The ONNX model (interface in the module docstring) computing the Llama forward pass."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(opset)
    nh, d = weights.num_heads, weights.head_dim
    hidden, inter = nh * d, weights.layers[0]["down"].shape[0]
    n_layers, vocab = len(weights.layers), weights.embed.shape[0]
    _constants(g, weights)
    x, rope, bias, splits = _inputs_to_masks(g, weights)
    for i, w in enumerate(weights.layers):
        x = _layer(g, x, i, w, rope, bias, splits, hidden, inter)
    g.op("MatMul", [g.rms_norm(x, g.const("norm", weights.norm)), g.const("lm_head", weights.lm_head)], out="logits")
    in_names, out_names = io_names(n_layers)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, ["batch", "seq", "keys"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["context_batch", nh, "context", d])
               for n in in_names[3:3 + 2 * n_layers]]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", nh, "past", d])
               for n in in_names[3 + 2 * n_layers:]]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", nh, "total", d]) for n in out_names[1:]]
    graph = helper.make_graph(g.nodes, "ttsr_proposer", inputs, outputs, initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # The oldest IR version that holds this opset: runtimes older than the onnx package load it.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ttsr_bridge",
                              ir_version=helper.find_min_ir_version_for(opsets))
    import onnx

    onnx.checker.check_model(model)
    return model


def export_run(run_dir: str | Path, out_path: str | Path, *, opset: int = 17) -> ExportSidecar:
    """Export the last checkpoint of ``run_dir`` to ``out_path`` (+ sidecar JSON)."""
    import onnx

    from .train import last_checkpoint, load_checkpoint_model

    if opset < 15:
        raise ValueError(f"opset {opset} < 15: the graph uses Shape(start, end) and Split with tensor inputs")
    run_dir, out_path = Path(run_dir), Path(out_path)
    model, cfg, tok = load_checkpoint_model(run_dir, attn_implementation="eager")
    ck = last_checkpoint(run_dir)
    mc = cfg.model
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_graph(_extract_weights(model), opset=opset), str(out_path))
    sidecar = ExportSidecar(
        sidecar_version=SIDECAR_VERSION, graph_version=GRAPH_VERSION, tokenizer=tok.to_dict(), model=to_mapping(mc),
        num_layers=mc.num_layers, num_heads=mc.num_heads, head_dim=mc.head_dim, vocab_size=tok.vocab_size,
        context_mode=cfg.context_mode, prompt_mode=cfg.prompt_mode, max_prompt_len=cfg.max_prompt_len,
        max_child_len=cfg.max_child_len, max_positions=mc.max_positions,
        step=int(ck.name.split("-")[-1]) if ck is not None else 0, source_run=str(run_dir),
    )
    sidecar_path(out_path).write_text(json.dumps(to_mapping(sidecar), indent=1))
    return sidecar
