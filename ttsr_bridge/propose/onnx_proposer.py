"""The neural proposer at inference: an exported model run by onnxruntime (no torch).

:class:`OnnxProposer` implements :class:`~ttsr_bridge.propose.protocol.Proposer`. One call
handles every request of one engine step (≈ one per population):

1. each request becomes a prompt with :class:`~ttsr_bridge.model.tokenizer.Tokenizer`, exactly
   as in training: a shared context prefix (same for every request of a search) + a request part;
2. the prompts are *packed*, not padded: one sequence holds the shared prefix once, then every
   distinct request part (identical request parts are run once and shared by their samples),
   and the per-query attention mask (:mod:`ttsr_bridge.model.export`, graph version 2) lets
   each request part attend only the prefix and itself. One model call fills the key/value
   cache of the whole batch (long batches: a few calls of at most ``prefill_tokens`` tokens);
3. children are decoded with that one packed cache, one token per step for every unfinished
   row (each new token attends the prefix, its prompt and its own earlier tokens),
   grammar-constrained (:mod:`ttsr_bridge.propose.sampling`): every child is a well-formed
   prefix tree of size ``<= min(curmaxsize, maxsize)`` using only the search's operators and
   features. A row stops as soon as its tree is complete (``<eos>`` is implied);
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
from .sampling import GrammarMasks, GrammarTable, sample_constant, sample_tokens

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


_SHARED = -1  # owner of the context prefix's keys: every query attends them


class _PackedCache:
    """One growing key/value cache (batch 1) holding a batch's prompts and children, packed.

    ``owner[t]`` says whose key position ``t`` is: :data:`_SHARED` (the context prefix), a
    unique prompt ``u`` (its request part), or ``n_prompts + r`` (child tokens of row ``r``).
    """

    def __init__(self, tensors: list[np.ndarray], owner: np.ndarray):
        self.tensors = tensors  # per layer key, value: (1, heads, T, head_dim)
        self.owner = owner  # (T,) int64

    @property
    def length(self) -> int:
        return int(self.owner.shape[0])


class OnnxProposer:
    """Batched, KV-cached, grammar-constrained sampling of children from an ONNX model."""

    def __init__(self, path: str | Path = DEFAULT_MODEL_NAME, *, temperature: float = 1.0, top_k: int | None = None,
                 batch_size: int = 64, providers: Sequence[str] | None = None, intra_op_threads: int = 2,
                 perturbation_factor: float = 0.129, probability_negate: float = 0.00743,
                 prefill_tokens: int = 1024):
        import onnxruntime as ort

        from ..model.export import GRAPH_VERSION

        self.path = resolve_model_path(path)
        sidecar_file = self.path.with_name(self.path.name + ".json")
        if not sidecar_file.is_file():
            raise FileNotFoundError(f"sidecar {sidecar_file} missing (written by 'ttsr export' next to the model)")
        self.sidecar: dict[str, Any] = json.loads(sidecar_file.read_text())
        if self.sidecar.get("graph_version") != GRAPH_VERSION:
            raise ValueError(f"{self.path}: graph version {self.sidecar.get('graph_version', 1)!r}, this ttsr_bridge "
                             f"needs {GRAPH_VERSION}: re-export the run with 'ttsr export'")
        self.tokenizer = Tokenizer.from_dict(self.sidecar["tokenizer"])
        self.num_layers = int(self.sidecar["num_layers"])
        self.num_heads = int(self.sidecar["num_heads"])
        self.head_dim = int(self.sidecar["head_dim"])
        self.max_positions = int(self.sidecar["max_positions"])
        self.max_prompt_len = int(self.sidecar["max_prompt_len"])
        self.temperature = float(temperature)
        self.top_k = top_k
        self.batch_size = int(batch_size)
        self.prefill_tokens = max(1, int(prefill_tokens))
        self.perturbation_factor = perturbation_factor
        self.probability_negate = probability_negate
        self.stats = ProposerStats()
        self.session = ort.InferenceSession(str(self.path), _session_options(ort, intra_op_threads),
                                            providers=list(providers) if providers else _default_providers(ort))
        self._tables: dict[tuple, GrammarTable] = {}
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._past_names = [f"past_{kind}_{i}" for i in range(self.num_layers) for kind in ("key", "value")]
        self._arity = self.tokenizer.arity.astype(np.int64)

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

    def _grammar_table(self, fields: PromptFields) -> GrammarTable:
        key = (fields.nfeatures, fields.operators.binary_ids, fields.operators.unary_ids)
        table = self._tables.get(key)
        if table is None:
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
            table = GrammarTable(GrammarMasks(leaf, unary, binary, tok.ptr_ids))
            self._tables[key] = table
        return table

    # ---- model calls ---------------------------------------------------------------------------
    def _run(self, input_ids: np.ndarray, mask: np.ndarray, pos: np.ndarray,
             past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass, batch 1: ``input_ids``, ``pos`` (S,), ``mask`` (S, T) →
        ``(logits (S, V), presents)``."""
        feeds = {"input_ids": input_ids[None, :], "attention_mask": mask[None, :, :], "position_ids": pos[None, :]}
        feeds.update(zip(self._past_names, past))
        res = self.session.run(self._output_names, feeds)
        self.stats.model_calls += 1
        return res[0][0], res[1:]

    def _prefill(self, group: _Group) -> tuple[np.ndarray, _PackedCache, np.ndarray, np.ndarray]:
        """Run the shared prefix and every distinct request part, packed in one sequence.

        Returns ``(last logits of every row (rows, V), cache, next position of every row
        (rows,), unique prompt of every row (rows,))``.
        """
        p = len(group.prefix)
        unique: dict[tuple[int, ...], int] = {}
        which = np.array([unique.setdefault(tuple(s), len(unique)) for s in group.suffixes], dtype=np.int64)
        suffixes = list(unique)
        lengths = np.array([len(x) for x in suffixes], np.int64)
        ids = np.fromiter((t for s in (group.prefix, *suffixes) for t in s), np.int64, p + int(lengths.sum()))
        owner = np.repeat(np.arange(-1, len(suffixes), dtype=np.int64), np.concatenate([[p], lengths]))
        # Positions restart after the prefix for every request part: each prompt reads as in training.
        starts = p + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pos = np.arange(len(ids), dtype=np.int64) - np.repeat(np.concatenate([[0], starts - p]), np.concatenate([[p], lengths]))
        ends = starts + lengths - 1  # index of each prompt's last token (`<child>`)
        cache = _PackedCache([np.zeros((1, self.num_heads, 0, self.head_dim), np.float32)
                              for _ in range(2 * self.num_layers)], owner[:0])
        last = np.empty((len(suffixes), self.tokenizer.vocab_size), np.float32)
        for lo, hi in self._prefill_spans(p, starts, lengths):
            q_owner = owner[lo:hi]
            key_owner = owner[:hi]
            # Causal, and only the shared prefix or the query's own prompt.
            mask = (np.arange(hi)[None, :] <= np.arange(lo, hi)[:, None]) & \
                ((key_owner[None, :] == _SHARED) | (key_owner[None, :] == q_owner[:, None]))
            logits, cache.tensors = self._run(ids[lo:hi], mask, pos[lo:hi], cache.tensors)
            done = (ends >= lo) & (ends < hi)
            last[done] = logits[ends[done] - lo]
        cache.owner = owner
        return last[which], cache, p + lengths[which], which

    def _prefill_spans(self, p: int, starts: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int]]:
        """Split the packed prompt into calls of about ``prefill_tokens`` tokens at prompt
        boundaries (bounds the (S, T) attention of one call)."""
        spans, lo = [], 0
        for start, n in zip(starts.tolist(), lengths.tolist()):
            if start + n - lo > self.prefill_tokens and start > lo:
                spans.append((lo, start))
                lo = start
        spans.append((lo, int(starts[-1] + lengths[-1])))
        return spans

    def _propose_group(self, group: _Group, requests: Sequence[ProposalRequest],
                       rng: np.random.Generator) -> list[Expr | None]:
        logits, cache, next_pos, which = self._prefill(group)
        reqs = [requests[i] for i in group.rows]
        tokens = self._decode(group, reqs, logits, cache, next_pos, which, rng)
        return [self._to_expr(t, r, rng) for t, r in zip(tokens, reqs)]

    def _decode(self, group: _Group, reqs: list[ProposalRequest], logits: np.ndarray, cache: _PackedCache,
                next_pos: np.ndarray, which: np.ndarray, rng: np.random.Generator) -> list[list[int] | None]:
        """Grammar-constrained sampling until every row's tree is complete."""
        table = self._grammar_table(group.fields)
        n = len(reqs)
        budget = np.array([self._budget(r) for r in reqs], np.int64)
        n_consts = np.array([len(r.parent.constant_indices()) for r in reqs], np.int64)
        need, length = np.ones(n, np.int64), np.zeros(n, np.int64)
        out = np.zeros((n, int(budget.max())), np.int64)
        ok_rows = np.ones(n, bool)
        # visible[r, t]: row r may attend key t. Prompt keys are fixed; each step adds one key per active row.
        t0 = cache.length
        visible = np.zeros((n, t0 + n * int(budget.max())), bool)
        visible[:, :t0] = (cache.owner[None, :] == _SHARED) | (cache.owner[None, :] == which[:, None])
        active = np.arange(n)  # rows still decoding, aligned with logits rows
        t = t0
        while True:
            allowed = table.allowed(length[active], need[active], budget[active], n_consts[active])
            tok, ok = sample_tokens(logits, allowed, self.temperature, self.top_k, rng)
            out[active, length[active]] = tok
            ok_rows[active[~ok]] = False
            self.stats.bad_logits += int((~ok).sum())
            need[active] += self._arity[tok] - 1
            length[active] += 1
            keep = ok & (need[active] > 0)
            if not keep.any():
                break
            active, tok = active[keep], tok[keep]
            m = len(active)
            visible[active, t + np.arange(m)] = True  # each new token sees itself
            logits, cache.tensors = self._run(tok, visible[active, :t + m], next_pos[active], cache.tensors)
            next_pos[active] += 1
            t += m
        return [out[r, :length[r]].tolist() if ok_rows[r] else None for r in range(n)]

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
