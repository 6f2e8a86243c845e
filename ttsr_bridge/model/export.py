"""Export a trained run to ONNX with an explicit key/value cache (``ttsr export``).

The graph is written node by node from the trained weights (not traced), so it holds only the
operations the model needs (about 35 nodes per layer; onnxruntime's ``RotaryEmbedding``) and a
tiny model's decode step costs a fraction of a millisecond. Graph interface (all dynamic axes
named; ``L`` = number of layers)::

    inputs : input_ids (batch, seq) int64,
             attention_mask (batch, seq, context + past + seq) bool: True where a query may
                 attend a key (keys ordered context, past, new),
             position_ids (batch, seq) int64,
             context_key_{i} (heads, head_dim, context) float32 (transposed),
             context_value_{i} (heads, context, head_dim) float32,
             past_key_{i}, past_value_{i} (heads, batch, past, head_dim) float32, i < L
    outputs: logits (batch, seq, vocab) float32,
             present_key_{i}, present_value_{i} (heads, batch, past + seq, head_dim) float32

(The cache is laid out heads first — Hugging Face's is (batch, heads, ...) — so attention
needs no transposes of it.)

``context`` is a read-only cache shared by every row and never copied to the outputs
(:func:`to_context` builds it from presents): the proposer puts its packed prompts there and
decodes with ``past`` holding only the children. ``context`` and ``past`` may be 0 long. The
mask is per query, so the caller decides the pattern: causal with left padding
(:func:`causal_mask`), or several sequences *packed* in one row (each attends a shared prefix
and its own tokens only). A query with no allowed key gets garbage (never used). Numerics are
the Llama model's (eager attention, fp32): logits match torch to ≤ 1e-4
(tests/model/test_export.py); masked keys weigh e^-60 of the largest score instead of 0
(:func:`_clamp_masked`: keeps onnxruntime's softmax off denormal floats, 10× slower). The
graph needs onnxruntime (``com.microsoft`` domain).

**Graph version 3** (:func:`build_graph_v3`, ``export_run(..., graph_version=3)``): attention
is onnxruntime's fused ``com.microsoft.GroupQueryAttention`` (rotary, causal mask, per-row
lengths and the cache update in one kernel): about 12 nodes per layer instead of about 40 (the
default model's optimised graph: 52 nodes instead of 179), half the fixed cost of a decode step.
Every row has its own right-padded cache (``(batch, heads, M, head_dim)``, no shared context);
the caller may bind one buffer as both past and present for in-place updates. Interface in
:func:`build_graph_v3`; parity with torch in tests/model/test_export_v3.py.

The sidecar ``<model>.onnx.json`` (:class:`ExportSidecar` fields) carries the vocabulary, the
tokenizer version, the model config, the context/prompt modes, the maximum lengths and
``graph_version`` (2: the interface above, :data:`GRAPH_VERSION`, the default; 3: see above).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..config_io import to_mapping

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "GRAPH_VERSION",
    "GRAPH_VERSIONS",
    "SIDECAR_VERSION",
    "ExportSidecar",
    "KVCacheWrapper",
    "WeightFormat",
    "build_graph",
    "build_graph_v3",
    "causal_mask",
    "export_run",
    "io_names",
    "io_names_v3",
    "sidecar_path",
    "to_context",
]

SIDECAR_VERSION = 2
WeightFormat = Literal["fp32", "int8"]
_MS = "com.microsoft"  # onnxruntime's operator domain (RotaryEmbedding)
_SOFTMAX_FLOOR = 60.0  # masked scores are lifted to (row max − this): their exp stays a normal float
GRAPH_VERSION = 2  # 2: context cache + per-query bool mask; 1 was a traced graph with a (batch, total) mask
GRAPH_VERSIONS = (2, 3)  # what export_run writes and the proposer reads; 3: GroupQueryAttention, per-row caches


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


def to_context(presents: list[np.ndarray]) -> list[np.ndarray]:
    """Present (or past) tensors of batch 1, ``(heads, 1, T, D)`` per layer key and value, as
    the graph's context inputs: keys ``(heads, D, T)``, values ``(heads, T, D)``."""
    out = []
    for j, t in enumerate(presents):
        if t.ndim != 4 or t.shape[1] != 1:
            raise ValueError(f"a context is made from a batch of 1 (heads, 1, T, D), got shape {t.shape}")
        out.append(np.ascontiguousarray(t[:, 0].transpose(0, 2, 1) if j % 2 == 0 else t[:, 0]))
    return out


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
    weights: str = "fp32"  # WeightFormat


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
class _LayerWeights:
    """One decoder layer's weights, ``(in, out)`` matrices."""

    ln1: np.ndarray  # (H,) input RMSNorm
    qkv: np.ndarray  # (H, 3H): query (attention scaling folded in), key, value
    o: np.ndarray  # (H, H)
    ln2: np.ndarray  # (H,) post-attention RMSNorm
    gate_up: np.ndarray  # (H, 2I)
    down: np.ndarray  # (I, H)


@dataclass(frozen=True)
class _Weights:
    """The Llama weights as the graph uses them: float32, ``(in, out)`` matrices."""

    embed: np.ndarray  # (V, H)
    cos: np.ndarray  # (max_positions, D/2): RoPE cos (the two halves of Llama's table are equal)
    sin: np.ndarray  # (max_positions, D/2)
    layers: tuple[_LayerWeights, ...]
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
        layers.append(_LayerWeights(
            ln1=t(layer.input_layernorm.weight), qkv=qkv, o=t(a.o_proj.weight).T,
            ln2=t(layer.post_attention_layernorm.weight),
            gate_up=np.concatenate([t(m.gate_proj.weight).T, t(m.up_proj.weight).T], axis=1),
            down=t(m.down_proj.weight).T,
        ))
    return _Weights(
        embed=t(model.model.embed_tokens.weight), cos=np.ascontiguousarray(cos[:, : d // 2]),
        sin=np.ascontiguousarray(sin[:, : d // 2]),
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

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, *, out: str | None = None, domain: str = "",
           **attrs) -> Any:
        """Append a node; returns its output name (a list when ``n_out > 1``). ``out`` names a
        single output (the graph's interface names)."""
        self._n += 1
        outs = [out] if out is not None else [f"{op_type.lower()}_{self._n}_{k}" for k in range(n_out)]
        if domain:
            attrs["domain"] = domain
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


@dataclass(frozen=True)
class _Shapes:
    """Shape tensors computed once from the inputs: explicit (a -1 is ambiguous when C = 0) and
    used with ``allowzero=1`` (else a 0 means "copy the input's dimension")."""

    splits: str  # [C, T]: the key axis = context + own keys
    q_rows: str  # [heads, B·S, D]
    p_rows: str  # [heads, B·S, C]
    s_ctx: str  # [heads, B, S, C]
    a_ctx: str  # [heads, B, S, D]


def _clamp_masked(g: _GraphBuilder, scores: str) -> str:
    """``scores`` raised to at least their row maximum − :data:`_SOFTMAX_FLOOR`.

    Masked keys carry float32 min. onnxruntime's CPU softmax (MLAS) computes their
    ``exp(x − max)`` through denormal floats, about 10× slower than a normal one: with the
    proposer's packed, mostly masked rows that was half the cost of a decode step. Their weight
    becomes ``exp(−_SOFTMAX_FLOOR)`` ≈ 1e-26 of the largest instead of 0: below float32
    resolution of the sums it joins. A query with no allowed key stays garbage (never used)."""
    top = g.op("ReduceMax", [scores], axes=[-1], keepdims=1) if g.opset < 18 else \
        g.op("ReduceMax", [scores, "last_axis"], keepdims=1)
    return g.op("Max", [scores, g.op("Sub", [top, "softmax_floor"])])


def _attention(g: _GraphBuilder, i: int, qk: str, v: str, bias: str, sh: _Shapes) -> str:
    """Attention of the queries over the read-only context cache and the rows' own keys (past +
    new; written as ``present_*_{i}``). ``qk`` (B, S, 2H) holds the rotated queries and keys,
    ``v`` (B, S, H) the values. Scores of both parts are joined for one softmax, so the context
    is never copied. Everything is laid out heads first, (heads, B, S, ·): the context part is
    one (B·S, D) × (D, C) product per head (the context is shared by every row) and the own part
    needs no transposes of the cache. Returns (B, S, H)."""
    qk = g.op("Transpose", [g.op("Reshape", [qk, "qk_shape"])], perm=[2, 3, 0, 1, 4])  # (2, heads, B, S, D)
    q5, k5 = g.op("Split", [qk, "ones2"], n_out=2, axis=0)
    k4 = g.op("Reshape", [k5, sh.a_ctx], allowzero=1)  # (heads, B, S, D)
    v4 = g.op("Transpose", [g.op("Reshape", [v, "heads_shape"])], perm=[2, 0, 1, 3])
    present_k = g.op("Concat", [f"past_key_{i}", k4], axis=2, out=f"present_key_{i}")  # (heads, B, T, D)
    present_v = g.op("Concat", [f"past_value_{i}", v4], axis=2, out=f"present_value_{i}")
    s_ctx = g.op("MatMul", [g.op("Reshape", [q5, sh.q_rows], allowzero=1), f"context_key_{i}"])  # (heads, B·S, C)
    q4 = g.op("Reshape", [q5, sh.a_ctx], allowzero=1)
    s_own = g.op("MatMul", [q4, g.op("Transpose", [present_k], perm=[0, 1, 3, 2])])  # (heads, B, S, T)
    joined = g.op("Concat", [g.op("Reshape", [s_ctx, sh.s_ctx], allowzero=1), s_own], axis=-1)
    probs = g.op("Softmax", [_clamp_masked(g, g.op("Add", [joined, bias]))], axis=-1)  # (heads, B, S, C + T)
    p_ctx, p_own = g.op("Split", [probs, sh.splits], n_out=2, axis=-1)
    a_ctx = g.op("MatMul", [g.op("Reshape", [p_ctx, sh.p_rows], allowzero=1), f"context_value_{i}"])
    att = g.op("Add", [g.op("Reshape", [a_ctx, sh.a_ctx], allowzero=1), g.op("MatMul", [p_own, present_v])])
    return g.op("Reshape", [g.op("Transpose", [att], perm=[1, 2, 0, 3]), "hidden_shape"])


def _layer(g: _GraphBuilder, x: str, i: int, w: _LayerWeights, bias: str, sh: _Shapes, nh: int,
           inter: int) -> str:
    """One decoder layer (writes ``present_key_{i}``, ``present_value_{i}``). Returns the new hidden state."""
    hidden = w.o.shape[0]
    h = g.rms_norm(x, g.const(f"l{i}.ln1", w.ln1))
    qk, v = g.op("Split", [g.op("MatMul", [h, g.const(f"l{i}.qkv", w.qkv)]),
                           g.const(f"l{i}.split_qkv", np.array([2 * hidden, hidden], np.int64))], n_out=2, axis=-1)
    # RoPE rotates every head alike, so queries and keys go through one op as 2 × heads heads.
    qk = g.op("RotaryEmbedding", [qk, "position_ids", "rope_cos", "rope_sin"], domain=_MS, num_heads=2 * nh,
              interleaved=0)
    x = g.op("Add", [x, g.op("MatMul", [_attention(g, i, qk, v, bias, sh), g.const(f"l{i}.o", w.o)])])
    return _mlp(g, x, i, w, inter)


def _mlp(g: _GraphBuilder, x: str, i: int, w: _LayerWeights, inter: int) -> str:
    """The second half of decoder layer ``i``: ``x + down(silu(gate(h)) * up(h))``, ``h`` = RMSNorm(x)."""
    h = g.rms_norm(x, g.const(f"l{i}.ln2", w.ln2))
    gate, up = g.op("Split", [g.op("MatMul", [h, g.const(f"l{i}.gate_up", w.gate_up)]),
                              g.const(f"l{i}.split2", np.full(2, inter, np.int64))], n_out=2, axis=-1)
    act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])  # SwiGLU: silu(gate) * up
    return g.op("Add", [x, g.op("MatMul", [act, g.const(f"l{i}.down", w.down)])])


def _norm_and_rope_constants(g: _GraphBuilder, weights: _Weights) -> None:
    """RMSNorm constants and the RoPE tables (every graph version)."""
    g.const("two", np.array(2.0, np.float32))
    g.const("eps", np.array(weights.eps, np.float32))
    if g.opset >= 18:
        g.const("last_axis", np.array([-1], np.int64))
    g.const("rope_cos", weights.cos)
    g.const("rope_sin", weights.sin)


def _constants(g: _GraphBuilder, weights: _Weights) -> None:
    """Weights and shape tensors shared by every layer (graph version 2)."""
    nh, d = weights.num_heads, weights.head_dim
    _norm_and_rope_constants(g, weights)
    g.const("softmax_floor", np.array(_SOFTMAX_FLOOR, np.float32))
    g.const("heads_shape", np.array([0, 0, nh, d], np.int64))
    g.const("qk_shape", np.array([0, 0, 2, nh, d], np.int64))
    g.const("ones2", np.array([1, 1], np.int64))
    g.const("hidden_shape", np.array([0, 0, nh * d], np.int64))
    g.const("n_heads", np.array([nh], np.int64))
    g.const("head_dim", np.array([d], np.int64))


def _inputs_to_masks(g: _GraphBuilder, weights: _Weights) -> tuple[str, str, _Shapes]:
    """Embeddings, additive attention bias (1, B, S, C + T) and the attention's shape tensors,
    all computed once for every layer."""
    x = g.op("Gather", [g.const("embed", weights.embed), "input_ids"], axis=0)  # (B, S, H)
    # 0 where allowed, float32 min (as HF) elsewhere.
    mask4 = g.op("Unsqueeze", ["attention_mask", g.const("axis0", np.array([0], np.int64))])
    bias = g.op("Where", [mask4, g.const("zero", np.array(0.0, np.float32)),
                          g.const("neg_big", np.array(np.finfo(np.float32).min, np.float32))])
    ctx_len = g.op("Shape", ["context_value_0"], start=1, end=2)
    own_len = g.op("Sub", [g.op("Shape", ["attention_mask"], start=2, end=3), ctx_len])
    b_s = g.op("Shape", ["input_ids"])
    rows = g.op("ReduceProd", [b_s], keepdims=1)  # [B·S]

    def cat(*parts: str) -> str:
        return g.op("Concat", list(parts), axis=0)

    shapes = _Shapes(splits=cat(ctx_len, own_len), q_rows=cat("n_heads", rows, "head_dim"),
                     p_rows=cat("n_heads", rows, ctx_len), s_ctx=cat("n_heads", b_s, ctx_len),
                     a_ctx=cat("n_heads", b_s, "head_dim"))
    return x, bias, shapes


def build_graph(weights: _Weights, *, opset: int = 17) -> onnx.ModelProto:
    """The ONNX model (interface in the module docstring) computing the Llama forward pass."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(opset)
    nh, d = weights.num_heads, weights.head_dim
    inter = weights.layers[0].down.shape[0]
    n_layers, vocab = len(weights.layers), weights.embed.shape[0]
    _constants(g, weights)
    x, bias, shapes = _inputs_to_masks(g, weights)
    for i, w in enumerate(weights.layers):
        x = _layer(g, x, i, w, bias, shapes, nh, inter)
    g.op("MatMul", [g.rms_norm(x, g.const("norm", weights.norm)), g.const("lm_head", weights.lm_head)], out="logits")
    in_names, out_names = io_names(n_layers)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, ["batch", "seq", "keys"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [nh, d, "context"] if "key" in n else
                                             [nh, "context", d]) for n in in_names[3:3 + 2 * n_layers]]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [nh, "batch", "past", d])
               for n in in_names[3 + 2 * n_layers:]]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [nh, "batch", "total", d]) for n in out_names[1:]]
    return _finish(g, inputs, outputs)


def _finish(g: _GraphBuilder, inputs: list, outputs: list) -> onnx.ModelProto:
    """The checked model of ``g``'s nodes with the given graph inputs and outputs."""
    from onnx import helper

    opset = g.opset
    graph = helper.make_graph(g.nodes, "ttsr_proposer", inputs, outputs, initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(_MS, 1)]
    # The oldest IR version that holds this opset: runtimes older than the onnx package load it.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ttsr_bridge",
                              ir_version=helper.find_min_ir_version_for(opsets[:1]))
    import onnx

    onnx.checker.check_model(model)
    return model


# ---- graph version 3: onnxruntime's fused GroupQueryAttention ----------------------------------
def io_names_v3(num_layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of a graph version 3 model (interface: :func:`build_graph_v3`)."""
    past = [f"past_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    return ["input_ids", "position_ids", "seqlens_k", "total_sequence_length", "attention_mask", *past], \
        ["logits", *present]


def _layer_v3(g: _GraphBuilder, x: str, i: int, w: _LayerWeights, bias: str, nh: int, inter: int) -> str:
    """One decoder layer around ``com.microsoft.GroupQueryAttention`` (rotary, causal mask,
    per-row lengths and the cache update in one kernel). Writes ``present_key_{i}``,
    ``present_value_{i}``; returns the new hidden state."""
    h = g.rms_norm(x, g.const(f"l{i}.ln1", w.ln1))
    qkv = g.op("MatMul", [h, g.const(f"l{i}.qkv", w.qkv)])  # (B, S, 3H): packed, as the op takes it
    g._n += 1
    att = f"gqa_{g._n}"
    g.nodes.append(g.helper.make_node(
        "GroupQueryAttention",
        [qkv, "", "", f"past_key_{i}", f"past_value_{i}", "seqlens_k", "total_sequence_length", "rope_cos",
         "rope_sin", "position_ids", bias],
        [att, f"present_key_{i}", f"present_value_{i}"], name=f"GroupQueryAttention_{g._n}", domain=_MS,
        num_heads=nh, kv_num_heads=nh, do_rotary=1, rotary_interleaved=0, scale=1.0))  # scaling is in the query weights
    x = g.op("Add", [x, g.op("MatMul", [att, g.const(f"l{i}.o", w.o)])])
    return _mlp(g, x, i, w, inter)


def build_graph_v3(weights: _Weights, *, opset: int = 17) -> onnx.ModelProto:
    """Graph version 3: the Llama forward pass with ``GroupQueryAttention`` (about 12 nodes a
    layer instead of about 40). Interface (``M`` = cache buffer length)::

        inputs : input_ids, position_ids (batch, seq) int64,
                 seqlens_k (batch,) int32: each row's total length (cache + new tokens) − 1,
                 total_sequence_length () int32: the largest total length of the batch,
                 attention_mask (batch or 1, 1, seq, total_sequence_length) bool: True where a
                     query may attend a key (on top of the op's own causal mask and lengths),
                 past_key_{i}, past_value_{i} (batch, heads, M, head_dim) float32
        outputs: logits (batch, seq, vocab) float32,
                 present_key_{i}, present_value_{i} (batch, heads, M', head_dim) float32

    Each row's cache is its own (right-padded to ``M``); a row's new keys are written at
    ``seqlens_k + 1 − seq`` onwards and rotated by ``position_ids``. When the caller binds
    the same buffer as ``past_*`` and ``present_*`` (onnxruntime IOBinding) the cache is updated
    in place (``M' = M``), else copied (``M' = max(M, total)``). onnxruntime's CPU kernel takes
    ``seq > 1`` with a non-empty past for ``batch == 1`` only, and head sizes that are multiples of 16."""
    from onnx import TensorProto, helper

    if weights.head_dim % 16:
        raise ValueError(f"graph version 3 needs a head size multiple of 16 (onnxruntime), got {weights.head_dim}")
    g = _GraphBuilder(opset)
    nh, d = weights.num_heads, weights.head_dim
    inter = weights.layers[0].down.shape[0]
    n_layers, vocab = len(weights.layers), weights.embed.shape[0]
    _norm_and_rope_constants(g, weights)
    x = g.op("Gather", [g.const("embed", weights.embed), "input_ids"], axis=0)  # (B, S, H)
    # float32 min as HF; masked keys exist in packed prefill calls only (decode steps mask nothing).
    bias = g.op("Where", ["attention_mask", g.const("zero", np.array(0.0, np.float32)),
                          g.const("neg_big", np.array(np.finfo(np.float32).min, np.float32))])
    for i, w in enumerate(weights.layers):
        x = _layer_v3(g, x, i, w, bias, nh, inter)
    g.op("MatMul", [g.rms_norm(x, g.const("norm", weights.norm)), g.const("lm_head", weights.lm_head)], out="logits")
    in_names, out_names = io_names_v3(n_layers)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
              helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, ["mask_batch", 1, "seq", "total"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", nh, "past", d]) for n in in_names[5:]]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", nh, "present", d]) for n in out_names[1:]]
    return _finish(g, inputs, outputs)


def _quantize_int8(model: onnx.ModelProto, out_path: Path) -> None:
    """Write ``model`` with int8 weights: every weight MatMul becomes onnxruntime's
    ``DynamicQuantizeMatMul`` (per-channel int8 weights, activations quantized per call).
    A quarter of the weight bytes (the tiny model then fits a core's L2 cache) and integer
    kernels: about 25-35 % less CPU time per call, logits within a few 1e-2 of fp32."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root_logger = logging.getLogger()
    level = root_logger.level
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(src))
        root_logger.setLevel(logging.ERROR)  # the quantizer advises "pre-processing" (for CNNs) on the root logger
        try:
            # Shape inference cannot type com.microsoft outputs: they are float32 here.
            quantize_dynamic(src, out_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root_logger.setLevel(level)


def export_run(run_dir: str | Path, out_path: str | Path, *, opset: int = 17,
               weights: WeightFormat = "fp32", graph_version: int = GRAPH_VERSION) -> ExportSidecar:
    """Export the last checkpoint of ``run_dir`` to ``out_path`` (+ sidecar JSON).

    ``weights``: ``"fp32"`` (exact, the default) or ``"int8"`` (:func:`_quantize_int8`, faster
    on CPU). ``graph_version``: 2 (:func:`build_graph`) or 3 (:func:`build_graph_v3`, fused
    attention)."""
    import onnx

    from .train import last_checkpoint, load_checkpoint_model

    if opset < 15:
        raise ValueError(f"opset {opset} < 15: the graph uses Shape(start, end) and Split with tensor inputs")
    if weights not in ("fp32", "int8"):
        raise ValueError(f"weights must be 'fp32' or 'int8', got {weights!r}")
    if graph_version not in GRAPH_VERSIONS:
        raise ValueError(f"graph_version must be one of {GRAPH_VERSIONS}, got {graph_version!r}")
    run_dir, out_path = Path(run_dir), Path(out_path)
    model, cfg, tok = load_checkpoint_model(run_dir, attn_implementation="eager")
    ck = last_checkpoint(run_dir)
    mc = cfg.model
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = (build_graph_v3 if graph_version == 3 else build_graph)(_extract_weights(model), opset=opset)
    if weights == "int8":
        _quantize_int8(graph, out_path)
    else:
        onnx.save(graph, str(out_path))
    sidecar = ExportSidecar(
        sidecar_version=SIDECAR_VERSION, graph_version=graph_version, tokenizer=tok.to_dict(), model=to_mapping(mc),
        num_layers=mc.num_layers, num_heads=mc.num_heads, head_dim=mc.head_dim, vocab_size=tok.vocab_size,
        context_mode=cfg.context_mode, prompt_mode=cfg.prompt_mode, max_prompt_len=cfg.max_prompt_len,
        max_child_len=cfg.max_child_len, max_positions=mc.max_positions,
        step=int(ck.name.split("-")[-1]) if ck is not None else 0, source_run=str(run_dir), weights=weights,
    )
    sidecar_path(out_path).write_text(json.dumps(to_mapping(sidecar), indent=1))
    return sidecar
