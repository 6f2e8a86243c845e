"""Export a trained run to ONNX with an explicit key/value cache (``ttsr export``).

Graph interface (all dynamic axes named; ``L`` = number of layers)::

    inputs : input_ids (batch, seq) int64, attention_mask (batch, past + seq) int64,
             position_ids (batch, seq) int64,
             past_key_{i}, past_value_{i} (batch, heads, past, head_dim) float32, i < L
    outputs: logits (batch, seq, vocab) float32,
             present_key_{i}, present_value_{i} (batch, heads, past + seq, head_dim) float32

``past`` may be 0 (first call). ``attention_mask`` may hold zeros anywhere (left padding, or
padding between a shared prefix and a request) — those positions are never attended to.
The sidecar ``<model>.onnx.json`` (:class:`ExportSidecar` fields) carries the vocabulary, the
tokenizer version, the model config, the context/prompt modes and the maximum lengths.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_io import to_mapping

__all__ = ["SIDECAR_VERSION", "ExportSidecar", "KVCacheWrapper", "export_run", "io_names", "sidecar_path"]

SIDECAR_VERSION = 1


def sidecar_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the exported graph."""
    past = [f"past_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


@dataclass(frozen=True)
class ExportSidecar:
    """What the proposer needs besides the graph (written as JSON next to it)."""

    sidecar_version: int
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


def _wrapper_class():
    import torch
    from transformers.cache_utils import DynamicCache

    class KVCacheWrapper(torch.nn.Module):
        """Flattens the HF cache into explicit tensors so the graph has plain inputs/outputs."""

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
    """``torch.nn.Module`` with the exported signature (see the module docstring)."""
    return _wrapper_class()(model)


def _example_inputs(num_layers: int, num_heads: int, head_dim: int, vocab: int):
    import torch

    b, t, p = 2, 3, 4
    ids = torch.randint(0, vocab, (b, t))
    mask = torch.ones(b, p + t, dtype=torch.long)
    pos = torch.arange(p, p + t).expand(b, t).contiguous()
    past = [torch.zeros(b, num_heads, p, head_dim) for _ in range(2 * num_layers)]
    return (ids, mask, pos, *past)


def export_run(run_dir: str | Path, out_path: str | Path, *, opset: int = 17) -> ExportSidecar:
    """Export the last checkpoint of ``run_dir`` to ``out_path`` (+ sidecar JSON)."""
    import torch

    from .train import last_checkpoint, load_checkpoint_model

    run_dir, out_path = Path(run_dir), Path(out_path)
    model, cfg, tok = load_checkpoint_model(run_dir, attn_implementation="eager")
    ck = last_checkpoint(run_dir)
    mc = cfg.model
    wrapper = KVCacheWrapper(model).eval()
    inputs, outputs = io_names(mc.num_layers)
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dynamic.update({n: {0: "batch", 2: "past"} for n in inputs[3:]})
    dynamic.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in HF code
        torch.onnx.export(
            wrapper, _example_inputs(mc.num_layers, mc.num_heads, mc.head_dim, tok.vocab_size), str(out_path),
            input_names=inputs, output_names=outputs, dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )
    sidecar = ExportSidecar(
        sidecar_version=SIDECAR_VERSION, tokenizer=tok.to_dict(), model=to_mapping(mc),
        num_layers=mc.num_layers, num_heads=mc.num_heads, head_dim=mc.head_dim, vocab_size=tok.vocab_size,
        context_mode=cfg.context_mode, prompt_mode=cfg.prompt_mode, max_prompt_len=cfg.max_prompt_len,
        max_child_len=cfg.max_child_len, max_positions=mc.max_positions,
        step=int(ck.name.split("-")[-1]) if ck is not None else 0, source_run=str(run_dir),
    )
    sidecar_path(out_path).write_text(json.dumps(to_mapping(sidecar), indent=1))
    return sidecar
