"""The neural proposer at inference: an exported model run by onnxruntime (no torch).

:class:`OnnxProposer` implements :class:`~ttsr_bridge.propose.protocol.Proposer`. One call
handles every request of one engine step (≈ one per population):

1. each request becomes a prompt with :class:`~ttsr_bridge.model.tokenizer.Tokenizer`, exactly
   as in training: a shared context prefix (same for every request of a search) + a request part;
2. the prefix is run once and its key/value cache copied to every request; identical request
   parts are run once and their cache copied to every sample of that prompt;
3. children are decoded in one batch with the KV cache, one token per step, grammar-constrained
   (:mod:`ttsr_bridge.propose.sampling`): every child is a well-formed prefix tree of size
   ``<= min(curmaxsize, maxsize)`` using only the search's operators and features. A row stops
   as soon as its tree is complete (``<eos>`` is implied), and finished rows leave the batch;
4. ``const`` tokens get values from :func:`~ttsr_bridge.propose.sampling.sample_constant`.

A request that cannot be written in the vocabulary (user operator, > 16 features, prompt too
long) or whose logits turn non-finite gets ``None``; the engine then falls back to a classic move.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..expr.tree import Expr
from ..model.tokenizer import PromptFields, Tokenizer, TokenizerError
from .protocol import ProposalRequest
from .sampling import GrammarMasks, allowed_tokens, sample_constant, sample_tokens

__all__ = ["DEFAULT_MODEL_NAME", "OnnxProposer", "ProposerStats", "default_model_path", "resolve_model_path"]

DEFAULT_MODEL_NAME = "default"


def default_model_path() -> Path:
    """The shipped model, ``ttsr_bridge/data/default_model.onnx`` (raises when absent)."""
    from importlib.resources import files

    path = Path(str(files("ttsr_bridge"))) / "data" / "default_model.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"no default proposer model at {path}: train one (ttsr train), export it "
            f"(ttsr export --out {path}) or pass the path of an exported .onnx model"
        )
    return path


def resolve_model_path(name_or_path: str | Path) -> Path:
    """``"default"`` → :func:`default_model_path`; otherwise an existing .onnx path."""
    if str(name_or_path) == DEFAULT_MODEL_NAME:
        return default_model_path()
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"proposer model not found: {path}")
    return path


@dataclass
class ProposerStats:
    """Counters over the proposer's lifetime (mutable, for logs and the engine's stats)."""

    requests: int = 0
    proposals: int = 0
    unencodable: int = 0  # request not writable in the vocabulary / too long
    bad_logits: int = 0  # non-finite logits: returned None
    model_calls: int = 0
    seconds: float = 0.0


@dataclass
class _Group:
    """Requests sharing one context prefix."""

    prefix: list[int]
    fields: PromptFields  # of the first request (context part is shared)
    rows: list[int] = field(default_factory=list)  # indices into the call's requests
    suffixes: list[list[int]] = field(default_factory=list)


class OnnxProposer:
    """Batched, KV-cached, grammar-constrained sampling of children from an ONNX model."""

    def __init__(self, path: str | Path = DEFAULT_MODEL_NAME, *, temperature: float = 1.0, top_k: int | None = None,
                 batch_size: int = 64, providers: Sequence[str] | None = None, intra_op_threads: int = 2,
                 perturbation_factor: float = 0.129, probability_negate: float = 0.00743):
        import onnxruntime as ort

        self.path = resolve_model_path(path)
        sidecar_file = self.path.with_name(self.path.name + ".json")
        if not sidecar_file.is_file():
            raise FileNotFoundError(f"sidecar {sidecar_file} missing (written by 'ttsr export' next to the model)")
        self.sidecar: dict[str, Any] = json.loads(sidecar_file.read_text())
        self.tokenizer = Tokenizer.from_dict(self.sidecar["tokenizer"])
        self.num_layers = int(self.sidecar["num_layers"])
        self.num_heads = int(self.sidecar["num_heads"])
        self.head_dim = int(self.sidecar["head_dim"])
        self.max_positions = int(self.sidecar["max_positions"])
        self.max_prompt_len = int(self.sidecar["max_prompt_len"])
        self.temperature = float(temperature)
        self.top_k = top_k
        self.batch_size = int(batch_size)
        self.perturbation_factor = perturbation_factor
        self.probability_negate = probability_negate
        self.stats = ProposerStats()
        self.session = ort.InferenceSession(str(self.path), _session_options(ort, intra_op_threads),
                                            providers=list(providers) if providers else _default_providers(ort))
        self._masks_cache: dict[tuple, GrammarMasks] = {}
        self._output_names = [o.name for o in self.session.get_outputs()]

    # ---- Proposer protocol ---------------------------------------------------------------------
    def propose(self, requests: Sequence[ProposalRequest], rng: np.random.Generator) -> list[Expr | None]:
        """One child (or ``None``) per request, in order."""
        import time

        t0 = time.perf_counter()
        out: list[Expr | None] = [None] * len(requests)
        for start in range(0, len(requests), self.batch_size):
            chunk = range(start, min(len(requests), start + self.batch_size))
            for group in self._group(requests, chunk):
                for row, child in zip(group.rows, self._propose_group(group, requests, rng)):
                    out[row] = child
        self.stats.requests += len(requests)
        self.stats.proposals += sum(c is not None for c in out)
        self.stats.seconds += time.perf_counter() - t0
        return out

    def feedback(self, outcomes: Sequence[Any]) -> None:
        """Nothing learnt online (the protocol's optional hook)."""

    # ---- encoding ------------------------------------------------------------------------------
    def _group(self, requests: Sequence[ProposalRequest], chunk: range) -> list[_Group]:
        tok = self.tokenizer
        groups: dict[tuple[int, ...], _Group] = {}
        for i in chunk:
            req = requests[i]
            if tok.context_mode == "rich" and req.context.data_stats is None:
                raise ValueError("this proposer model uses 'rich' context: the search must provide DataStats")
            try:
                fields = PromptFields.from_request(req)
                prefix = tok.encode_context(fields)
                suffix = tok.encode_request(fields)
            except TokenizerError:
                self.stats.unencodable += 1
                continue
            budget = self._budget(req)
            if budget < 1 or len(prefix) + len(suffix) > self.max_prompt_len or \
                    len(prefix) + len(suffix) + budget > self.max_positions:
                self.stats.unencodable += 1
                continue
            g = groups.setdefault(tuple(prefix), _Group(prefix, fields))
            g.rows.append(i)
            g.suffixes.append(suffix)
        return list(groups.values())

    def _budget(self, req: ProposalRequest) -> int:
        return min(req.curmaxsize, req.context.maxsize, int(self.sidecar["max_child_len"]) - 1)

    def _grammar_masks(self, fields: PromptFields) -> GrammarMasks:
        key = (fields.nfeatures, fields.operators.binary_ids, fields.operators.unary_ids)
        masks = self._masks_cache.get(key)
        if masks is None:
            tok = self.tokenizer
            v = tok.vocab_size
            leaf, unary, binary = np.zeros(v, bool), np.zeros(v, bool), np.zeros(v, bool)
            leaf[tok.var_ids[:fields.nfeatures]] = True
            leaf[tok.ptr_ids] = True
            leaf[tok.lit_ids] = True
            leaf[tok.const_id] = True
            for o in fields.operators.unary:
                if o.id in tok.op_token:
                    unary[tok.op_token[o.id]] = True
            for o in fields.operators.binary:
                if o.id in tok.op_token:
                    binary[tok.op_token[o.id]] = True
            masks = GrammarMasks(leaf, unary, binary, tok.ptr_ids)
            self._masks_cache[key] = masks
        return masks

    # ---- model calls ---------------------------------------------------------------------------
    def _run(self, input_ids: np.ndarray, mask: np.ndarray, pos: np.ndarray,
             past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos}
        for i in range(self.num_layers):
            feeds[f"past_key_{i}"] = past[2 * i]
            feeds[f"past_value_{i}"] = past[2 * i + 1]
        res = self.session.run(self._output_names, feeds)
        self.stats.model_calls += 1
        return res[0], res[1:]

    def _prefill(self, group: _Group) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Run the shared prefix once, then every distinct request part once.

        Returns ``(last logits (U, V), cache (U, H, P+S, D) per tensor, mask (U, P+S),
        next positions (U,), unique index of every row (rows,))``.
        """
        p = len(group.prefix)
        empty = [np.zeros((1, self.num_heads, 0, self.head_dim), np.float32) for _ in range(2 * self.num_layers)]
        ids = np.asarray([group.prefix], dtype=np.int64)
        _, prefix_cache = self._run(ids, np.ones((1, p), np.int64), np.arange(p, dtype=np.int64)[None, :], empty)
        unique: dict[tuple[int, ...], int] = {}
        which = np.array([unique.setdefault(tuple(s), len(unique)) for s in group.suffixes], dtype=np.int64)
        suffixes = list(unique)
        u, s = len(suffixes), max(len(x) for x in suffixes)
        # Left-pad each request part after the prefix: [prefix | pad | request]; pads are masked.
        ids = np.full((u, s), self.tokenizer.pad_id, np.int64)
        mask = np.ones((u, p + s), np.int64)
        pos = np.full((u, s), p, np.int64)
        for r, suf in enumerate(suffixes):
            n = len(suf)
            ids[r, s - n:] = suf
            mask[r, p:p + s - n] = 0
            pos[r, s - n:] = np.arange(p, p + n)
        past = [np.ascontiguousarray(np.broadcast_to(t, (u,) + t.shape[1:])) for t in prefix_cache]
        logits, cache = self._run(ids, mask, pos, past)
        lengths = np.array([len(x) for x in suffixes], np.int64)
        return logits[:, -1, :], cache, mask, p + lengths, which

    def _propose_group(self, group: _Group, requests: Sequence[ProposalRequest],
                       rng: np.random.Generator) -> list[Expr | None]:
        logits, cache, mask, next_pos, which = self._prefill(group)
        # Expand unique prompts to one row per request (samples of one prompt share its cache).
        logits, mask, next_pos = logits[which], mask[which], next_pos[which]
        cache = [c[which] for c in cache]
        reqs = [requests[i] for i in group.rows]
        tokens = self._decode(group, reqs, logits, cache, mask, next_pos, rng)
        return [self._to_expr(t, r, rng) for t, r in zip(tokens, reqs)]

    def _decode(self, group: _Group, reqs: list[ProposalRequest], logits: np.ndarray, cache: list[np.ndarray],
                mask: np.ndarray, next_pos: np.ndarray, rng: np.random.Generator) -> list[list[int] | None]:
        """Grammar-constrained sampling until every row's tree is complete."""
        masks = self._grammar_masks(group.fields)
        arity = self.tokenizer.arity.astype(np.int64)
        n = len(reqs)
        budget = np.array([self._budget(r) for r in reqs], np.int64)
        n_consts = np.array([len(r.parent.constant_indices()) for r in reqs], np.int64)
        need, length = np.ones(n, np.int64), np.zeros(n, np.int64)
        out: list[list[int] | None] = [[] for _ in range(n)]
        active = np.arange(n)  # rows still decoding, aligned with logits/cache/mask rows
        while True:
            allowed = allowed_tokens(masks, length[active], need[active], budget[active], n_consts[active])
            tok, ok = sample_tokens(logits, allowed, self.temperature, self.top_k, rng)
            for r, t, good in zip(active.tolist(), tok.tolist(), ok.tolist()):
                if good:
                    out[r].append(t)
                else:
                    out[r] = None
            self.stats.bad_logits += int((~ok).sum())
            need[active] += arity[tok] - 1
            length[active] += 1
            keep = ok & (need[active] > 0)
            if not keep.any():
                break
            active, tok = active[keep], tok[keep]
            if not keep.all():  # finished rows leave the batch
                cache = [c[keep] for c in cache]
                mask, next_pos = mask[keep], next_pos[keep]
            mask = np.concatenate([mask, np.ones((len(active), 1), np.int64)], axis=1)
            logits, cache = self._run(tok[:, None].astype(np.int64), mask, next_pos[:, None], cache)
            logits = logits[:, -1, :]
            next_pos = next_pos + 1
        return out

    def _to_expr(self, tokens: list[int] | None, req: ProposalRequest, rng: np.random.Generator) -> Expr | None:
        if tokens is None:
            return None
        parent_consts = [req.parent.vals[i] for i in req.parent.constant_indices()]

        def const_value() -> float:
            return sample_constant(parent_consts, req.temperature, rng, perturbation_factor=self.perturbation_factor,
                                   probability_negate=self.probability_negate)

        return self.tokenizer.decode_child(tokens, req.parent, const_value)


def _session_options(ort, intra_op_threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(intra_op_threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def _default_providers(ort) -> list[str]:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
