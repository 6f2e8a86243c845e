"""The neural proposer at inference: an exported model run by onnxruntime (no torch).

:class:`OnnxProposer` implements :class:`~ttsr_bridge.propose.protocol.Proposer`. One call
handles every request of one engine step (≈ one per population):

1. each request becomes a prompt with :class:`~ttsr_bridge.model.tokenizer.Tokenizer`, exactly
   as in training: a shared context prefix (same for every request of a search) + a request part;
2. the prefix's key/value cache is computed once per search (kept across calls); the request
   parts are *packed*, not padded: the distinct ones (identical parts are run once and shared by
   their samples) are laid end to end and run in calls of about ``prefill_tokens`` tokens,
   with a per-query attention mask (:mod:`ttsr_bridge.model.export`, graph version 2) that
   lets each part attend only the prefix and itself. Their caches, joined, become the graph's
   read-only *context*;
3. children are decoded one token per step for every unfinished row: each new token attends
   the prefix and its own prompt in the context (never copied) and its own earlier tokens (the
   small per-row ``past``), grammar-constrained (:mod:`ttsr_bridge.propose.sampling`): every
   child is a well-formed prefix tree of size ``<= min(curmaxsize, maxsize)`` using only the
   search's operators and features. A row stops as soon as its tree is complete (``<eos>`` is
   implied) and leaves the batch; when half of the rows have left, their prompts leave the
   context. With ``threads > 1`` a batch of at least 16 rows is cut in two parts, each
   prefilled and decoded on its own thread with its own onnxruntime session (onnxruntime
   releases the GIL; one session shared by two threads runs ~15 % slower). A decode step has a
   fixed cost of about twenty rows' and the step count is set by the longest child, so the
   cut (:func:`_cut_for_threads`) puts the few rows expected to be longest (largest parents)
   in one part and the rest in the other, balancing their predicted cost: the two run side by
   side in about two thirds of the whole batch's time, for about 25 % more CPU time. Each part
   samples from its own generator, seeded from the caller's: results do not depend on thread
   timing;
4. ``const`` tokens get values from :func:`~ttsr_bridge.propose.sampling.sample_constant`.

Models exported as graph version 3 (onnxruntime's ``GroupQueryAttention``; the sidecar says
which) run steps 2-3 differently: the packed prompts are prefilled after the cached prefix
as above, then every row gets its own key/value buffer (prefix, its prompt, room for its
child), bound once to an IOBinding as both past and present so that each decode step appends
in place (:class:`_CacheBinding`). Rows are laid out longest expected child first, so rows
that finish early trail the batch and are dropped as a view; scattered finished rows are
copied out when they make up half of the live span. A v3 step costs about half a v2 step's
fixed cost and a little more per row; the thread cut uses v3's own cost ratios.

A request that cannot be written in the vocabulary (user operator, > 16 features, prompt too
long) or whose logits turn non-finite gets ``None``; the engine then falls back to a classic move.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from ..expr.tree import Expr
from ..model.export import GRAPH_VERSIONS, to_context
from ..model.tokenizer import PromptFields, Tokenizer, TokenizerError
from .protocol import ProposalRequest
from .sampling import GrammarMasks, GrammarState, GrammarTable, grammar_step, sample_constant

__all__ = ["DEFAULT_MODEL_NAME", "OnnxProposer", "ProposerStats", "default_model_path", "resolve_model_path"]

DEFAULT_MODEL_NAME = "default"
_PREFIX_CACHE_SIZE = 8  # context prefixes (≈ searches) whose key/value cache is kept
_MIN_CUT_ROWS = 16  # smaller batches are not cut for threads (the fixed step cost dominates)
# Default prompt tokens per prefill call, by graph version: GroupQueryAttention's prompt path
# costs more per token in longer calls (a softmax call per query row and head).
_PREFILL_TOKENS = {2: 96, 3: 48}
_COMPACT_AT = 0.5  # graph version 3: live rows are copied together when they are this fraction of their slots
_MIN_DROP = 4  # graph version 3: trailing finished slots worth a rebinding (each costs a row's compute per step)


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


def _split(group: _Group, max_tokens: int) -> list[_Group]:
    """``group`` as groups of consecutive rows with about equal prompt tokens, each prefilled and
    decoded on its own, so that none holds more than about ``max_tokens`` prompt tokens (every
    decoded token attends its whole part's context)."""
    n = len(group.rows)
    cum = np.cumsum([len(s) for s in group.suffixes])
    parts = min(n, -(-int(cum[-1]) // max_tokens))
    if parts <= 1:
        return [group]
    cuts = [0, *np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts).tolist(), n]
    return [_Group(group.prefix, group.fields, group.rows[a:b], group.suffixes[a:b])
            for a, b in itertools.pairwise(cuts) if b > a]


@dataclass(frozen=True)
class _PartCosts:
    """Relative costs of a part, in decoded row tokens: a decode step's fixed cost (steps are
    set by the part's longest child) and a prompt token's."""

    step: float
    prompt_token: float


# Measured on the default model, CPU onnxruntime. Graph version 2: a step's fixed cost is about
# twenty rows' worth, a prompt token about half a row token. Version 3: GroupQueryAttention
# halves the fixed cost and adds to the per-row one (two tiny GEMMs per row and head).
_PART_COSTS = {2: _PartCosts(step=20.0, prompt_token=0.6), 3: _PartCosts(step=6.0, prompt_token=0.9)}


def _cut_for_threads(group: _Group, expected: np.ndarray, costs: _PartCosts) -> list[_Group]:
    """``group`` in two parts decoded side by side, balancing their predicted cost.

    ``expected``: each row's expected child size (a mutated parent's size: they correlate at
    0.97). Rows sorted by it, the longest ``k`` form one part: a part's decode steps are set by
    its longest child, so the few long children share one long tail while the other part,
    with a short one, takes more rows. ``k`` minimises the larger predicted part cost."""
    order = np.argsort(-expected, kind="stable")
    size = expected[order].astype(float)
    tokens = np.array([len(group.suffixes[i]) for i in order], float)
    work = np.cumsum(size + costs.prompt_token * tokens)
    k = np.arange(1, len(order))  # rows in the first part
    first = costs.step * size[0] + work[k - 1]
    second = costs.step * size[k] + work[-1] - work[k - 1]
    cut = int(k[np.argmin(np.maximum(first, second))])
    return [_Group(group.prefix, group.fields, [group.rows[i] for i in sorted(idx)],
                   [group.suffixes[i] for i in sorted(idx)]) for idx in (order[:cut], order[cut:])]


_SHARED = -1  # owner of the context prefix's keys: every query attends them


@dataclass
class _Context:
    """The packed prompts of one batch as a read-only key/value cache (batch 1).

    ``owner[t]`` says whose key position ``t`` is: :data:`_SHARED` (the context prefix) or the
    index of a distinct request part (prompt).
    """

    tensors: list[np.ndarray]  # the graph's context inputs: per layer key (heads, D, T), value (heads, T, D)
    owner: np.ndarray  # (T,) int64


def _shrink(context: _Context, prompts: np.ndarray) -> _Context:
    """``context`` holding the prefix and the given ``prompts`` only (keys (heads, D, T) are
    cut on axis 2, values (heads, T, D) on axis 1)."""
    alive = np.zeros(int(context.owner.max()) + 2, bool)  # by owner; the last entry is _SHARED's (-1)
    alive[prompts] = alive[_SHARED] = True
    keep = np.flatnonzero(alive[context.owner])
    tensors = [t.take(keep, axis=2 if j % 2 == 0 else 1) for j, t in enumerate(context.tensors)]
    return _Context(tensors, context.owner[keep])


@dataclass
class _Rows:
    """Decoding state of the rows still active, all arrays aligned (row ``i`` of each is the
    same request): the compacted counterpart of the call's per-request arrays."""

    index: np.ndarray  # (rows,) request row in the group
    grammar: GrammarState
    pos: np.ndarray  # (rows,) position of the next token
    visible: np.ndarray | None  # (rows, 1, C + width) attention mask: context part + child positions (v2 only)

    def select(self, keep: np.ndarray) -> _Rows:
        """The rows at indices ``keep``."""
        return _Rows(self.index[keep], self.grammar.select(keep), self.pos[keep],
                     None if self.visible is None else self.visible[keep])


@dataclass
class _Sampled:
    """What a decode loop has sampled, per request row of its group: the tokens (``out``),
    each complete child's length, and ``ok`` False where the logits were not finite."""

    out: np.ndarray  # (rows, longest budget) int64
    lengths: np.ndarray  # (rows,) int64, set when the row's tree is complete
    ok: np.ndarray  # (rows,) bool

    @classmethod
    def start(cls, budget: np.ndarray) -> _Sampled:
        n = len(budget)
        return cls(np.zeros((n, int(budget.max())), np.int64), np.zeros(n, np.int64), np.ones(n, bool))

    def children(self) -> list[list[int] | None]:
        """Each row's tokens, or ``None`` for a row whose logits failed."""
        return [self.out[r, :self.lengths[r]].tolist() if self.ok[r] else None
                for r in range(len(self.ok))]


@dataclass
class _Packed:
    """The distinct request parts of a group laid end to end (prefill input), all positions
    continuing the context prefix of length ``p`` (each prompt reads as in training)."""

    which: np.ndarray  # (rows,) distinct prompt of every row
    lengths: np.ndarray  # (prompts,) tokens of each distinct prompt
    starts: np.ndarray  # (prompts,) its first index in the packed sequence
    ids: np.ndarray  # (tokens,) packed token ids
    owner: np.ndarray  # (tokens,) prompt of each token
    pos: np.ndarray  # (tokens,) position of each token
    last: np.ndarray  # (prompts, V) logits at each prompt's last token (`<child>`), filled by keep_last

    @classmethod
    def of(cls, group: _Group, p: int, vocab: int) -> _Packed:
        unique: dict[tuple[int, ...], int] = {}
        which = np.array([unique.setdefault(tuple(s), len(unique)) for s in group.suffixes], dtype=np.int64)
        lengths = np.array([len(x) for x in unique], np.int64)
        ids = np.fromiter((t for s in unique for t in s), np.int64, int(lengths.sum()))
        owner = np.repeat(np.arange(len(unique), dtype=np.int64), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        pos = p + np.arange(len(ids), dtype=np.int64) - np.repeat(starts, lengths)
        return cls(which, lengths, starts, ids, owner, pos, np.empty((len(unique), vocab), np.float32))

    def span_mask(self, lo: int, hi: int, p: int) -> np.ndarray:
        """``(hi − lo, p + hi − lo)`` bool: every query of the span sees the prefix and,
        causally, its own prompt only."""
        own = (np.arange(lo, hi)[None, :] <= np.arange(lo, hi)[:, None]) & \
            (self.owner[None, lo:hi] == self.owner[lo:hi, None])
        return np.concatenate([np.ones((hi - lo, p), bool), own], axis=1)

    def keep_last(self, logits: np.ndarray, lo: int, hi: int) -> None:
        """Store the logits ``(hi − lo, V)`` of the prompts ending in span ``[lo, hi)``."""
        ends = self.starts + self.lengths - 1
        done = (ends >= lo) & (ends < hi)
        self.last[done] = logits[ends[done] - lo]  # spans are disjoint: threads write different rows


class _CacheBinding:
    """Per-row key/value buffers of a version 3 decode loop, bound once to an onnxruntime
    IOBinding as both ``past_*`` and ``present_*``: GroupQueryAttention appends each step's
    keys in place (no copy of the cache per step). Every input is a NumPy array bound by
    reference and updated in place; ``total_sequence_length`` is the buffer length (each row's
    own length comes from ``seqlens_k``), so its all-true mask never changes shape either.

    A batch slot whose row has finished keeps being computed, as a one-token row
    (:meth:`retire`), until it is dropped: trailing slots by :meth:`truncate` (a view, no copy: the batch is the
    buffers' outer axis), scattered ones by :meth:`rebuild` (a copy of the live caches)."""

    def __init__(self, session, past_names: list[str], caches: list[np.ndarray], pos: np.ndarray, vocab: int):
        self._session, self._past_names, self.vocab = session, past_names, vocab
        self._bind(caches, pos, np.zeros(len(pos), np.int64))

    def _bind(self, caches: list[np.ndarray], pos: np.ndarray, ids: np.ndarray) -> None:
        import onnxruntime as ort

        batch, _, m, _ = caches[0].shape
        self.caches = caches
        self.ids, self.pos = ids.reshape(batch, 1).copy(), pos.reshape(batch, 1).astype(np.int64)
        self.seqlens = self.pos[:, 0].astype(np.int32)
        self.logits = np.empty((batch, 1, self.vocab), np.float32)
        self._total = np.array(m, np.int32)
        self._mask = np.ones((1, 1, 1, m), bool)
        io = self._session.io_binding()
        for name, arr in (("input_ids", self.ids), ("position_ids", self.pos), ("seqlens_k", self.seqlens),
                          ("total_sequence_length", self._total), ("attention_mask", self._mask)):
            io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
        for name, arr in zip(self._past_names, caches):
            value = ort.OrtValue.ortvalue_from_numpy(arr)  # shares the array's memory
            io.bind_ortvalue_input(name, value)
            io.bind_ortvalue_output(name.replace("past_", "present_"), value)
        io.bind_output("logits", "cpu", 0, np.float32, list(self.logits.shape), self.logits.ctypes.data)
        self._io = io

    @property
    def batch(self) -> int:
        return len(self.ids)

    def step(self, slot: np.ndarray, tok: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Feed token ``tok[i]`` at position ``pos[i]`` to batch slot ``slot[i]`` (its cache
        holds positions ``< pos[i]``); returns the logits of those slots ``(len(slot), V)``."""
        self.ids[slot, 0] = tok
        self.pos[slot, 0] = pos
        self.seqlens[slot] = pos  # the row's total length after this token − 1
        self._session.run_with_iobinding(self._io)
        return self.logits[slot, 0]

    def retire(self, slot: np.ndarray) -> None:
        """Batch slots ``slot`` hold finished rows: until they are dropped they are computed as
        one-token rows (length 1, position 0: their attention reads one key instead of the
        whole cache). Each rewrites its cache's first position: a retired slot's cache is
        never read again."""
        self.pos[slot, 0] = 0
        self.seqlens[slot] = 0

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` slots (views of the same buffers)."""
        self._bind([c[:n] for c in self.caches], self.pos[:n, 0], self.ids[:n, 0])

    def rebuild(self, slot: np.ndarray) -> None:
        """Keep the given slots only (renumbered ``0..len(slot)−1`` in that order): a copy."""
        used = int(self.pos[slot, 0].max()) + 1  # cache positions written (the last fed token's included)
        caches = []
        for c in self.caches:
            new = np.empty((len(slot), *c.shape[1:]), np.float32)
            new[:, :, :used] = c[slot, :, :used]
            caches.append(new)
        self._bind(caches, self.pos[slot, 0], self.ids[slot, 0])


class OnnxProposer:
    """Batched, KV-cached, grammar-constrained sampling of children from an ONNX model."""

    def __init__(self, path: str | Path = DEFAULT_MODEL_NAME, *, temperature: float = 1.0, top_k: int | None = None,
                 batch_size: int = 64, providers: Sequence[str] | None = None, threads: int = 2,
                 intra_op_threads: int = 1, perturbation_factor: float = 0.129, probability_negate: float = 0.00743,
                 prefill_tokens: int | None = None, max_context_tokens: int = 2048):
        """``threads``: with 2 or more, a batch is cut in two parts prefilled and decoded on
        parallel Python threads (onnxruntime releases the GIL), and parts of a larger batch
        (``max_context_tokens``) run on that many threads. A decode step is a chain of tiny
        kernels: whole parts per thread use cores far better than onnxruntime's intra-op
        threads. ``threads=1`` spends the least CPU time per child (best when the cores are
        busy anyway, e.g. several searches in parallel).
        ``intra_op_threads``: onnxruntime threads per model call (raise for large models; on
        the tiny default model 2 threads double the CPU time per child and halve the pace).
        ``prefill_tokens``: prompt tokens per prefill call (each call has a fixed cost, and the
        masked attention of a call grows with its square): ``None`` picks the measured best of
        the model's graph version (version 2: 96, 64-128 within 3 %; version 3: 48).
        ``max_context_tokens``: prompt tokens decoded together (long population-mode prompts:
        more, smaller parts)."""
        import onnxruntime as ort

        self.path = resolve_model_path(path)
        sidecar_file = self.path.with_name(self.path.name + ".json")
        if not sidecar_file.is_file():
            raise FileNotFoundError(f"sidecar {sidecar_file} missing (written by 'ttsr export' next to the model)")
        self.sidecar: dict[str, Any] = json.loads(sidecar_file.read_text())
        self.graph_version = self.sidecar.get("graph_version", 1)
        if self.graph_version not in GRAPH_VERSIONS:
            raise ValueError(f"{self.path}: graph version {self.graph_version!r}, this ttsr_bridge reads "
                             f"{' or '.join(map(str, GRAPH_VERSIONS))}: re-export the run with 'ttsr export'")
        self._part_costs = _PART_COSTS[self.graph_version]
        self.tokenizer = Tokenizer.from_dict(self.sidecar["tokenizer"])
        self.num_layers = int(self.sidecar["num_layers"])
        self.num_heads = int(self.sidecar["num_heads"])
        self.head_dim = int(self.sidecar["head_dim"])
        self.max_positions = int(self.sidecar["max_positions"])
        self.max_prompt_len = int(self.sidecar["max_prompt_len"])
        self.temperature = float(temperature)
        self.top_k = top_k
        self.batch_size = int(batch_size)
        self.threads = max(1, int(threads))
        self._lock = threading.Lock()
        self._pool = None  # ThreadPoolExecutor, made on first parallel call
        if prefill_tokens is None:
            prefill_tokens = _PREFILL_TOKENS[self.graph_version]
        self.prefill_tokens = max(1, int(prefill_tokens))
        self.max_context_tokens = max(1, int(max_context_tokens))
        self.perturbation_factor = perturbation_factor
        self.probability_negate = probability_negate
        self.stats = ProposerStats()
        self._providers = list(providers) if providers else _default_providers(ort)
        self._intra_op_threads = intra_op_threads
        self.session = self._new_session()
        # One session per pool thread (made by the pool's initializer): concurrent runs of one
        # session contend on its allocator, ~15 % slower each (measured, two threads); separate
        # sessions run at single-thread speed. Other threads share `self.session` (thread-safe).
        self._thread_sessions = threading.local()
        self._tables: dict[tuple, GrammarTable] = {}
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._context_names = [f"context_{kind}_{i}" for i in range(self.num_layers) for kind in ("key", "value")]
        self._past_names = [f"past_{kind}_{i}" for i in range(self.num_layers) for kind in ("key", "value")]
        self._prefixes: dict[tuple[int, ...], tuple[list[np.ndarray], dict[str, np.ndarray]]] = {}
        self._stacked: dict[int, tuple[list[np.ndarray], np.ndarray]] = {}  # see _stacked_prefix
        self._arity = self.tokenizer.arity.astype(np.int64)
        self._max_child_nodes = int(self.sidecar["max_child_len"]) - 1  # the child's tokens + <eos>
        self._last_context: tuple[Any, list[int]] | None = None  # (ProblemContext, its encoded prefix)

    # ---- Proposer protocol ---------------------------------------------------------------------
    def propose(self, requests: Sequence[ProposalRequest], rng: np.random.Generator) -> list[Expr | None]:
        """One child (or ``None``) per request, in order."""
        import time

        t0 = time.perf_counter()
        out: list[Expr | None] = [None] * len(requests)
        groups = [g for start in range(0, len(requests), self.batch_size)
                  for g in self._group(requests, range(start, min(len(requests), start + self.batch_size)))]
        parts = [part for g in groups for part in _split(g, self.max_context_tokens)]
        if self.threads > 1 and len(parts) == 1 and len(parts[0].rows) >= _MIN_CUT_ROWS:
            parts = _cut_for_threads(parts[0], np.array([self._expected_size(requests[i]) for i in parts[0].rows]),
                                     self._part_costs)
        for group in parts:  # shared state, made before the threads start
            self._prefix_cache(group.prefix)
            self._grammar_table(group.fields)
        if len(parts) > 1 and self.threads > 1:
            seeds = rng.integers(0, 2**63, size=len(parts))
            jobs = [(part, np.random.default_rng(seed), False) for part, seed in zip(parts, seeds)]
        else:  # one thread: prefill calls may still run in parallel
            jobs = [(part, rng, True) for part in parts]
        results = self._map(lambda job: self._propose_group(job[0], requests, job[1], parallel_prefill=job[2]), jobs)
        for group, children in zip(parts, results):
            for row, child in zip(group.rows, children):
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
                prefix = self._encode_context(req, fields)
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

    def _encode_context(self, req: ProposalRequest, fields: PromptFields) -> list[int]:
        """The context prefix, encoded once per ``ProblemContext`` object (one per search)."""
        hit = self._last_context
        if hit is not None and hit[0] is req.context:
            return hit[1]
        prefix = self.tokenizer.encode_context(fields)
        self._last_context = (req.context, prefix)  # holds the object: its id cannot be reused
        return prefix

    def _budget(self, req: ProposalRequest) -> int:
        return min(req.curmaxsize, req.context.maxsize, self._max_child_nodes)

    def _expected_size(self, req: ProposalRequest) -> int:
        """A child's expected size: its parent's (mutations are local), within the budget."""
        return min(len(req.parent), self._budget(req))

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
    def _context_feeds(self, context: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The context inputs by name (built once, reused by every call on that context)."""
        return dict(zip(self._context_names, context))

    def _run(self, input_ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, context: dict[str, np.ndarray],
             past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass: ``input_ids``, ``pos`` (B, S), ``mask`` (B, S, C + P + S), context
        feeds (:meth:`_context_feeds`) → ``(logits (B, S, V), presents)``."""
        feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos, **context}
        feeds.update(zip(self._past_names, past))
        res = self._session().run(self._output_names, feeds)
        self._count_call()
        return res[0], res[1:]

    def _new_session(self):
        return _new_session(self.path, self._intra_op_threads, self._providers)

    def _session(self):
        """The session of this thread: its own on the proposer's pool threads, else :attr:`session`."""
        return getattr(self._thread_sessions, "session", None) or self.session

    def _count_call(self) -> None:
        with self._lock:
            self.stats.model_calls += 1

    def _empty(self, batch: int) -> list[np.ndarray]:
        """An empty cache of ``batch`` rows (the graph's layout: heads, batch, T, D)."""
        return [np.zeros((self.num_heads, batch, 0, self.head_dim), np.float32)] * (2 * self.num_layers)

    def _prefix_cache(self, prefix: list[int]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """Key/value cache of the shared context prefix as ``(presents, context feeds)``, kept
        across calls (it is fixed for a search; a few searches may share the proposer)."""
        key = tuple(prefix)
        with self._lock:
            cached = self._prefixes.pop(key, None)
        if cached is None:
            p = len(prefix)
            ids, pos = np.asarray([prefix], np.int64), np.arange(p, dtype=np.int64)[None]
            if self.graph_version == 3:  # presents (1, heads, P, D); the op's causal mask does the rest
                _, presents = self._run_v3(ids, pos, np.ones((1, 1, p, p), bool), self._empty_v3(1))
                cached = (presents, {})
            else:
                _, presents = self._run(ids, np.tril(np.ones((p, p), bool))[None], pos,
                                        self._context_feeds(to_context(self._empty(1))), self._empty(1))
                cached = (presents, self._context_feeds(to_context(presents)))
        with self._lock:
            while len(self._prefixes) >= _PREFIX_CACHE_SIZE:
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[key] = cached  # most recently used last
        return cached

    def _prefill(self, group: _Group, parallel: bool) -> tuple[np.ndarray, _Context, np.ndarray, np.ndarray]:
        """Run every distinct request part after the (cached) prefix, packed without padding
        (the calls on the thread pool when ``parallel``).

        Returns ``(last logits of every row (rows, V), packed context, next position of every
        row (rows,), distinct prompt of every row (rows,))``.
        """
        p = len(group.prefix)
        prefix_kv, prefix_context = self._prefix_cache(group.prefix)
        pk = _Packed.of(group, p, self.tokenizer.vocab_size)

        def run_span(span: tuple[int, int]) -> list[np.ndarray]:
            lo, hi = span
            logits, presents = self._run(pk.ids[None, lo:hi], pk.span_mask(lo, hi, p)[None], pk.pos[None, lo:hi],
                                         prefix_context, self._empty(1))
            pk.keep_last(logits[0], lo, hi)
            return presents

        spans = self._prefill_spans(pk.starts, pk.lengths)
        # Spans depend on the prefix only: they may run on parallel threads (compute-bound calls).
        parts = self._map(run_span, spans) if parallel else [run_span(x) for x in spans]
        # Joined straight into the context layout (one copy): keys (heads, D, T), values (heads, T, D).
        tensors = [np.concatenate([t[:, 0].transpose(0, 2, 1) for t in ts], axis=2) if j % 2 == 0 else
                   np.concatenate([t[:, 0] for t in ts], axis=1) for j, ts in enumerate(zip(prefix_kv, *parts))]
        context = _Context(tensors, np.concatenate([np.full(p, _SHARED, np.int64), pk.owner]))
        return pk.last[pk.which], context, p + pk.lengths[pk.which], pk.which

    def _map(self, fn, items: list) -> list:
        """``[fn(x) for x in items]``, on the thread pool when ``threads > 1``."""
        if self.threads == 1 or len(items) < 2:
            return [fn(x) for x in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            # The initializer stays referenced by the worker threads: it must not hold `self`.
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ttsr-proposer",
                                            initializer=_init_pool_thread,
                                            initargs=(self._thread_sessions, self.path, self._intra_op_threads,
                                                      self._providers))
        return list(self._pool.map(fn, items))

    def _prefill_spans(self, starts: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int]]:
        """Split the packed prompts into calls of about ``prefill_tokens`` tokens at prompt
        boundaries: linear layers gain little from longer calls, masked attention costs S²."""
        spans, lo = [], 0
        for start, n in zip(starts.tolist(), lengths.tolist()):
            if start + n - lo > self.prefill_tokens and start > lo:
                spans.append((lo, start))
                lo = start
        spans.append((lo, int(starts[-1] + lengths[-1])))
        return spans

    def _propose_group(self, group: _Group, requests: Sequence[ProposalRequest], rng: np.random.Generator,
                       parallel_prefill: bool = False) -> list[Expr | None]:
        reqs = [requests[i] for i in group.rows]
        if self.graph_version == 3:
            # Longest expected children first: rows that finish early sit in the last slots.
            order = np.argsort([-self._expected_size(r) for r in reqs], kind="stable")
            logits, caches, next_pos = self._prefill_v3(group, reqs, order, parallel_prefill)
            tokens = self._decode_v3(group, reqs, order, logits, caches, next_pos, rng)
        else:
            logits, context, next_pos, which = self._prefill(group, parallel_prefill)
            tokens = self._decode(group, reqs, logits, context, next_pos, which, rng)
        return [self._to_expr(t, r, rng) for t, r in zip(tokens, reqs)]

    def _decode_start(self, group: _Group, reqs: list[ProposalRequest]) -> tuple[GrammarTable, np.ndarray, np.ndarray, _Sampled]:
        """What every decode loop starts from: the group's grammar table, each request's node
        budget and parent-constant count, and an empty :class:`_Sampled`."""
        budget = np.array([self._budget(r) for r in reqs], np.int64)
        n_consts = np.array([len(r.parent.constant_indices()) for r in reqs], np.int64)
        return self._grammar_table(group.fields), budget, n_consts, _Sampled.start(budget)

    def _sample(self, logits: np.ndarray, table: GrammarTable, rows: _Rows, rng: np.random.Generator,
                sampled: _Sampled, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Step ``k`` of a decode loop: one grammar-constrained token per active row, written to
        ``sampled.out[:, k]``. Rows whose tree is complete get their length; rows with
        non-finite logits are marked not ok (their child becomes ``None``) and counted. Returns
        the tokens and the positions of the rows that go on (``None``: all of them)."""
        tok, ok, keep = grammar_step(logits, table, rows.grammar, self._arity, self.temperature, self.top_k, rng)
        sampled.out[rows.index, k] = tok
        if keep.all():
            return tok, None
        if not ok.all():
            sampled.ok[rows.index[~ok]] = False
            with self._lock:
                self.stats.bad_logits += int((~ok).sum())
        sampled.lengths[rows.index[~keep]] = k + 1
        return tok, np.flatnonzero(keep)

    def _decode(self, group: _Group, reqs: list[ProposalRequest], logits: np.ndarray, context: _Context,
                next_pos: np.ndarray, which: np.ndarray, rng: np.random.Generator) -> list[list[int] | None]:
        """Grammar-constrained sampling until every row's tree is complete.

        The packed prompts stay in the read-only context; ``past`` holds only the children.
        At step ``k`` every active row has exactly ``k`` child tokens, so ``past`` needs no
        padding and finished rows simply leave the batch; when half of them have left, their
        prompts leave the context (every step attends all of it). The per-row state arrays are
        kept compacted to the active rows (a few small NumPy calls per step).
        """
        table, budget, n_consts, sampled = self._decode_start(group, reqs)
        n = len(reqs)
        width = sampled.out.shape[1]
        visible, c = self._context_view(context, which, width)
        served = n  # active rows when the context was last built
        context_feeds = self._context_feeds(context.tensors)
        past = self._empty(n)
        rows = _Rows(np.arange(n), GrammarState.start(table, budget, n_consts), next_pos, visible)
        k = 0  # child tokens so far, the same for every active row
        while True:
            tok, keep = self._sample(logits, table, rows, rng, sampled, k)
            k += 1
            if keep is not None:  # finished (or failed) rows leave the batch
                if not len(keep):
                    break
                rows, tok = rows.select(keep), tok[keep]
                past = [t.take(keep, axis=1) for t in past]  # contiguous (a boolean index is not)
                if 2 * len(rows.index) <= served:
                    context = _shrink(context, which[rows.index])
                    rows.visible, c = self._context_view(context, which[rows.index], width)
                    context_feeds = self._context_feeds(context.tensors)
                    served = len(rows.index)
            step, past = self._run(tok[:, None], rows.visible[:, :, :c + k], rows.pos[:, None], context_feeds, past)
            logits = step[:, 0, :]
            rows.pos += 1
        return sampled.children()

    def _context_view(self, context: _Context, which: np.ndarray, width: int) -> tuple[np.ndarray, int]:
        """``(visible, C)`` for decoding on ``context``: ``visible`` (rows, 1, C + width) lets
        row ``r`` see the prefix and its own prompt, then its ``width`` child positions."""
        c = len(context.owner)
        visible = np.ones((len(which), 1, c + width), bool)
        visible[:, 0, :c] = (context.owner[None, :] == _SHARED) | (context.owner[None, :] == which[:, None])
        return visible, c

    # ---- graph version 3: per-row caches, GroupQueryAttention -------------------------------------
    def _empty_v3(self, batch: int) -> list[np.ndarray]:
        """An empty version 3 cache of ``batch`` rows (batch, heads, 0, D)."""
        return [np.zeros((batch, self.num_heads, 0, self.head_dim), np.float32)] * (2 * self.num_layers)

    def _run_v3(self, input_ids: np.ndarray, pos: np.ndarray, mask: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass of a version 3 graph, every row with the same past length ``P``
        (prefill): ``input_ids``, ``pos`` (B, S), ``mask`` (1, 1, S, P + S) → ``(logits (B, S, V),
        presents (B, heads, P + S, D))``."""
        total = past[0].shape[2] + input_ids.shape[1]
        feeds = {"input_ids": input_ids, "position_ids": pos, "seqlens_k": np.full(len(input_ids), total - 1, np.int32),
                 "total_sequence_length": np.array(total, np.int32), "attention_mask": mask}
        feeds.update(zip(self._past_names, past))
        res = self._session().run(self._output_names, feeds)
        self._count_call()
        return res[0], res[1:]

    def _prefill_v3(self, group: _Group, reqs: list[ProposalRequest], order: np.ndarray,
                    parallel: bool) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """As :meth:`_prefill`, for a version 3 graph: the distinct prompts are run packed after
        the cached prefix (batch 1: onnxruntime's kernel takes several new tokens after a past
        for one row only), then every row gets its own cache buffer: prefix, its prompt, room
        for its child; batch slot ``i`` holds row ``order[i]``.

        Returns, by slot, ``(last logits (rows, V), caches (rows, heads, M, D) per layer key and
        value, next position (rows,))``."""
        p = len(group.prefix)
        prefix_kv, _ = self._prefix_cache(group.prefix)
        pk = _Packed.of(group, p, self.tokenizer.vocab_size)

        def run_span(span: tuple[int, int]) -> list[np.ndarray]:
            lo, hi = span
            logits, presents = self._run_v3(pk.ids[None, lo:hi], pk.pos[None, lo:hi],
                                            pk.span_mask(lo, hi, p)[None, None], prefix_kv)
            pk.keep_last(logits[0], lo, hi)
            return np.stack([t[0, :, p:] for t in presents])  # the span's own keys/values (2L, heads, span, D)

        spans = self._prefill_spans(pk.starts, pk.lengths)
        parts = self._map(run_span, spans) if parallel else [run_span(x) for x in spans]
        # (2 · layers, heads, tokens, D): every packed prompt token's keys and values.
        packed = np.concatenate(parts, axis=2) if len(parts) > 1 else parts[0]
        which = pk.which[order]
        lengths = pk.lengths[which]
        width = int(lengths.max())
        # Room for the longest prompt and child (+1: margin for a finished row's slot).
        # Positions never written cost nothing but address space.
        m = p + width + max(self._budget(r) for r in reqs) + 1
        # Each slot gets the prefix and its own prompt's tokens only (positions past a row's
        # length are never attended: they stay unwritten), in one compiled pass. One buffer
        # holds every layer's keys and values: each is a contiguous (rows, heads, M, D) view.
        caches = np.empty((len(prefix_kv), len(lengths), self.num_heads, m, self.head_dim), np.float32)
        _fill_row_caches(caches, self._stacked_prefix(prefix_kv), packed, pk.starts[which], lengths)
        caches = list(caches)
        return pk.last[which], caches, p + lengths

    def _stacked_prefix(self, prefix_kv: list[np.ndarray]) -> np.ndarray:
        """A version 3 prefix cache (per layer key and value ``(1, heads, P, D)``) as one
        ``(2 · layers, heads, P, D)`` array (made once per prefix, kept with it)."""
        key = id(prefix_kv)
        hit = self._stacked.get(key)
        if hit is None or hit[0] is not prefix_kv:
            hit = (prefix_kv, np.stack([t[0] for t in prefix_kv]))
            with self._lock:
                if len(self._stacked) >= _PREFIX_CACHE_SIZE:
                    self._stacked.pop(next(iter(self._stacked)))
                self._stacked[key] = hit
        return hit[1]

    def _decode_v3(self, group: _Group, reqs: list[ProposalRequest], order: np.ndarray, logits: np.ndarray,
                   caches: list[np.ndarray], next_pos: np.ndarray,
                   rng: np.random.Generator) -> list[list[int] | None]:
        """As :meth:`_decode`, for a version 3 graph: one step feeds every active row's last
        token to its own cache (updated in place, :class:`_CacheBinding`); slot ``i`` holds row
        ``order[i]`` (:meth:`_prefill_v3`). Finished rows leave the sampling at once and the
        batch when they trail the live slots or make up half of them."""
        table, budget, n_consts, sampled = self._decode_start(group, reqs)
        n = len(reqs)
        binding = _CacheBinding(self._session(), self._past_names, caches, next_pos, self.tokenizer.vocab_size)
        rows = _Rows(order, GrammarState.start(table, budget[order], n_consts[order]), next_pos.astype(np.int64), None)
        slot = np.arange(n)  # batch slot of each active row (ascending)
        k = 0
        while True:
            tok, keep = self._sample(logits, table, rows, rng, sampled, k)
            k += 1
            if keep is not None:
                if not len(keep):
                    break
                gone = np.ones(len(slot), bool)
                gone[keep] = False
                binding.retire(slot[gone])
                rows, tok, slot = rows.select(keep), tok[keep], slot[keep]
                live_span = int(slot[-1]) + 1
                if len(slot) <= _COMPACT_AT * live_span:
                    binding.rebuild(slot)
                    slot = np.arange(len(slot))
                elif binding.batch - live_span >= _MIN_DROP:
                    binding.truncate(live_span)
            logits = binding.step(slot, tok, rows.pos)
            self._count_call()
            rows.pos += 1
        return sampled.children()

    def _to_expr(self, tokens: list[int] | None, req: ProposalRequest, rng: np.random.Generator) -> Expr | None:
        if tokens is None:
            return None
        parent_consts = [req.parent.vals[i] for i in req.parent.constant_indices()]

        def const_value() -> float:
            return sample_constant(parent_consts, req.temperature, rng, perturbation_factor=self.perturbation_factor,
                                   probability_negate=self.probability_negate)

        return self.tokenizer.decode_child(tokens, req.parent, const_value)


@njit(cache=True, nogil=True)  # nogil: the other proposer thread runs meanwhile
def _fill_row_caches(out, prefix, packed, starts, lengths):
    """Graph version 3 per-row caches: ``out[j, r, :, :P]`` = ``prefix[j]`` (the context
    prefix, ``(heads, P, D)``), then ``out[j, r, :, P:P + lengths[r]]`` = ``packed[j, :,
    starts[r]:starts[r] + lengths[r]]`` (row ``r``'s prompt among the packed tokens); the rest
    is left as it is. ``j`` runs over every layer's key and value."""
    n_tensors, rows, heads = out.shape[0], out.shape[1], out.shape[2]
    p = prefix.shape[2]
    for j in range(n_tensors):
        for r in range(rows):
            a, n = starts[r], lengths[r]
            for h in range(heads):
                out[j, r, h, :p] = prefix[j, h]
                out[j, r, h, p:p + n] = packed[j, h, a:a + n]


def _new_session(path: Path, intra_op_threads: int, providers: list[str]):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), _session_options(ort, intra_op_threads), providers=providers)


def _init_pool_thread(sessions: threading.local, path: Path, intra_op_threads: int, providers: list[str]) -> None:
    """Give a pool thread its own session (see ``OnnxProposer._thread_sessions``)."""
    sessions.session = _new_session(path, intra_op_threads, providers)


def _session_options(ort, intra_op_threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(intra_op_threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Spin-waiting worker threads burn the shared cores between the many small kernels.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _default_providers(ort) -> list[str]:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
