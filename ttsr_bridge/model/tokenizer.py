"""The proposer's own small vocabulary and prompt layout (no BPE; versioned).

Training (Parquet rows, :mod:`ttsr_bridge.model.dataset`) and inference (``ProposalRequest``,
:mod:`ttsr_bridge.propose.onnx_proposer`) both build a :class:`PromptFields` and call
:meth:`Tokenizer.encode_prompt`, so the model sees exactly the same prompt in both places.

Vocabulary (ids are positions in :attr:`Tokenizer.tokens`; the list is saved in the ONNX
sidecar and checked on load, together with :data:`TOKENIZER_VERSION`):

* specials ``<pad> <bos> <eos> <ops> <parent> <child> <member> <stats> <y>``;
* one token per built-in operator (``op:+``, ``op:sin``, ... in global-id order,
  :mod:`ttsr_bridge.expr.operators`); the same token is used in the "available operators"
  context and inside expressions (position tells them apart). User operators have no token;
* variables ``x1 .. x16`` (:data:`MAX_FEATURES`; more features raise :class:`TokenizerError`);
* context: ``nf:1 .. nf:16`` (number of features), ``iter:0 .. iter:7`` (log2 bucket of the
  iteration), ``loss:0 .. loss:{N_LOSS_BINS-1}`` (:func:`ttsr_bridge.propose.protocol.loss_bin`);
* ``rich`` context only: per-variable binned data statistics ``corr:0..8`` (Pearson
  correlation of y with x_j), ``mono:0..8`` (Spearman), ``scale:0..8`` (rounded log10 of the
  standard deviation, clipped to [-4, 4]);
* constants, the design decision of this module:

  - ``c:0 .. c:15`` are *pointers*: in the parent, the k-th constant (prefix order) is written
    ``c:k``; in the child, ``c:k`` means "the parent's k-th constant, unchanged". Most classic
    moves (add/delete/rotate nodes, swap operands, operator/feature mutation) keep constants,
    so the model copies them exactly without ever seeing digits;
  - literals ``lit:-1 lit:0.5 lit:1 lit:2 lit:3 lit:pi`` for child constants equal to one of
    those values (and which are not copies of a parent constant);
  - ``const``: any other child constant (a perturbed or new value). The proposer samples its
    value (:func:`ttsr_bridge.propose.sampling.sample_constant`: an SR.jl-style perturbation of
    a random parent constant or a standard normal draw) and the engine's constant optimisation
    fits it. A parent constant beyond the 16th and every constant of a population member is
    also written ``const``.

Prompt layout (expressions in prefix order, the :class:`~ttsr_bridge.expr.tree.Expr` order)::

    <bos> nf:N <ops> op... [<stats> <y> scale:b (xj corr:b mono:b scale:b)*N]   # shared prefix
    iter:b <parent> PARENT... loss:b [<member> loss:b MEMBER...]* <child>        # per request
    CHILD... <eos>                                                               # target

The shared prefix depends only on the search (``ProblemContext``), so the proposer runs it
once per batch and copies its key/value cache to every request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..expr.operators import OPERATORS, OperatorSet
from ..expr.tree import Expr
from ..propose.protocol import N_LOSS_BINS, DataStats, ProposalRequest, loss_bin

__all__ = [
    "LITERALS",
    "MAX_CONST_POINTERS",
    "MAX_FEATURES",
    "N_ITER_BUCKETS",
    "TOKENIZER_VERSION",
    "ContextMode",
    "DecodeError",
    "PromptFields",
    "PromptMode",
    "Tokenizer",
    "TokenizerError",
    "iteration_bucket",
]

TOKENIZER_VERSION = 1
MAX_FEATURES = 16
MAX_CONST_POINTERS = 16
N_ITER_BUCKETS = 8
N_STAT_BINS = 9
# (token suffix, value). Order is part of the vocabulary version.
LITERALS: tuple[tuple[str, float], ...] = (
    ("-1", -1.0),
    ("0.5", 0.5),
    ("1", 1.0),
    ("2", 2.0),
    ("3", 3.0),
    ("pi", math.pi),
)
# The operators with a token in vocabulary v1 (global ids, expr/operators.py). Frozen: a
# built-in added later needs a new vocabulary version.
VOCAB_OPERATOR_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, *range(20, 45))
SPECIALS = ("<pad>", "<bos>", "<eos>", "<ops>", "<parent>", "<child>", "<member>", "<stats>", "<y>")

ContextMode = Literal["basic", "rich"]
PromptMode = Literal["mutation", "population"]


class TokenizerError(ValueError):
    """Something that cannot be written in this vocabulary (too many features, user op, ...)."""


class DecodeError(ValueError):
    """A token sequence that is not exactly one well-formed prefix expression."""


def iteration_bucket(iteration: int) -> int:
    """0 → 0, then ``floor(log2(iteration)) + 1`` capped at ``N_ITER_BUCKETS - 1``."""
    if iteration <= 0:
        return 0
    return min(int(iteration).bit_length(), N_ITER_BUCKETS - 1)


def _corr_bin(c: float) -> int:
    if not math.isfinite(c):
        return N_STAT_BINS // 2
    return int(round((min(max(c, -1.0), 1.0) + 1.0) / 2.0 * (N_STAT_BINS - 1)))


def _scale_bin(std: float) -> int:
    if not math.isfinite(std) or std <= 0:
        return 0
    half = N_STAT_BINS // 2
    return int(min(max(round(math.log10(std)), -half), half)) + half


@dataclass(frozen=True)
class PromptFields:
    """Everything a prompt is built from; the same whether it comes from a Parquet row or a
    ``ProposalRequest``. ``members`` holds ``(tree, loss bin)`` pairs (population mode)."""

    nfeatures: int
    operators: OperatorSet
    iteration: int
    parent: Expr
    parent_loss_bin: int
    data_stats: DataStats | None = None
    members: tuple[tuple[Expr, int], ...] = field(default=())

    @classmethod
    def from_request(cls, req: ProposalRequest) -> PromptFields:
        ctx = req.context
        return cls(
            nfeatures=ctx.nfeatures,
            operators=ctx.operators,
            iteration=req.iteration,
            parent=req.parent,
            parent_loss_bin=req.parent_loss_bin,
            data_stats=ctx.data_stats,
            members=tuple((tree, _member_bin(loss, ctx.y_var)) for tree, loss in req.members),
        )


def _member_bin(loss: float, y_var: float) -> int:
    return loss_bin(loss, y_var)


class Tokenizer:
    """Maps prompts and expressions to token ids and back (see the module docstring)."""

    def __init__(self, context_mode: ContextMode = "basic", prompt_mode: PromptMode = "mutation"):
        if context_mode not in ("basic", "rich"):
            raise ValueError(f"context_mode must be 'basic' or 'rich', got {context_mode!r}")
        if prompt_mode not in ("mutation", "population"):
            raise ValueError(f"prompt_mode must be 'mutation' or 'population', got {prompt_mode!r}")
        self.context_mode: ContextMode = context_mode
        self.prompt_mode: PromptMode = prompt_mode
        self.version = TOKENIZER_VERSION
        self.tokens: tuple[str, ...] = _build_tokens()
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self._index_tables()

    # ---- tables ------------------------------------------------------------------------------
    def _index_tables(self) -> None:
        t = self.token_to_id
        self.pad_id, self.bos_id, self.eos_id = t["<pad>"], t["<bos>"], t["<eos>"]
        self.ops_id, self.parent_id, self.child_id = t["<ops>"], t["<parent>"], t["<child>"]
        self.member_id, self.stats_id, self.y_id = t["<member>"], t["<stats>"], t["<y>"]
        self.const_id = t["const"]
        self.op_token: dict[int, int] = {
            oid: t[f"op:{OPERATORS[oid].name}"] for oid in VOCAB_OPERATOR_IDS
        }
        self.var_ids = np.array([t[f"x{j + 1}"] for j in range(MAX_FEATURES)], dtype=np.int64)
        self.ptr_ids = np.array([t[f"c:{k}"] for k in range(MAX_CONST_POINTERS)], dtype=np.int64)
        self.lit_ids = np.array([t[f"lit:{name}"] for name, _ in LITERALS], dtype=np.int64)
        # Per-token expression arity: -1 not an expression token, 0 leaf, 1 unary, 2 binary.
        # (Operator tokens are also used in the context; arity matters only inside a child.)
        arity = np.full(len(self.tokens), -1, dtype=np.int8)
        arity[self.var_ids] = 0
        arity[self.ptr_ids] = 0
        arity[self.lit_ids] = 0
        arity[self.const_id] = 0
        for oid, tok in self.op_token.items():
            arity[tok] = OPERATORS[oid].arity
        self.arity = arity
        # Reverse map from token id to (kind, payload) used by decode.
        self._decode_table: dict[int, tuple[str, float]] = {}
        for oid, tok in self.op_token.items():
            self._decode_table[tok] = ("op", float(oid))
        for j, tok in enumerate(self.var_ids):
            self._decode_table[int(tok)] = ("var", float(j))
        for k, tok in enumerate(self.ptr_ids):
            self._decode_table[int(tok)] = ("ptr", float(k))
        for (_, value), tok in zip(LITERALS, self.lit_ids):
            self._decode_table[int(tok)] = ("lit", value)
        self._decode_table[self.const_id] = ("const", 0.0)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready description (saved in the checkpoint and the ONNX sidecar)."""
        return {
            "version": self.version,
            "context_mode": self.context_mode,
            "prompt_mode": self.prompt_mode,
            "max_features": MAX_FEATURES,
            "max_const_pointers": MAX_CONST_POINTERS,
            "literals": [[name, value] for name, value in LITERALS],
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_dict` output; refuses other vocabulary versions."""
        version = data.get("version")
        if version != TOKENIZER_VERSION:
            raise TokenizerError(
                f"model vocabulary version {version!r} is not supported by this ttsr_bridge "
                f"(tokenizer version {TOKENIZER_VERSION}); re-export or retrain the model"
            )
        tok = cls(data.get("context_mode", "basic"), data.get("prompt_mode", "mutation"))
        if list(data.get("tokens", [])) != list(tok.tokens):
            raise TokenizerError("model vocabulary differs from this tokenizer's (same version, different tokens)")
        return tok

    # ---- expressions -------------------------------------------------------------------------
    def _op_tok(self, oid: int) -> int:
        tok = self.op_token.get(oid)
        if tok is None:
            name = OPERATORS[oid].name if oid in OPERATORS else f"id {oid}"
            raise TokenizerError(f"operator {name!r} has no token in vocabulary v{self.version}")
        return tok

    def _var_tok(self, code: int) -> int:
        if code > MAX_FEATURES:
            raise TokenizerError(f"feature x{code} exceeds the model's maximum of {MAX_FEATURES} features")
        return int(self.var_ids[code - 1])

    def _literal_tok(self, value: float) -> int | None:
        for (_, lit), tok in zip(LITERALS, self.lit_ids):
            if abs(value - lit) <= 1e-12 * max(1.0, abs(lit)):
                return int(tok)
        return None

    def encode_parent(self, expr: Expr) -> list[int]:
        """Parent tree: constants become pointers ``c:k`` (k-th constant in prefix order)."""
        out: list[int] = []
        k = 0
        for code in expr.codes:
            if code < 0:
                out.append(self._op_tok(-code))
            elif code > 0:
                out.append(self._var_tok(code))
            else:
                out.append(int(self.ptr_ids[k]) if k < MAX_CONST_POINTERS else self.const_id)
                k += 1
        return out

    def encode_child(self, child: Expr, parent: Expr) -> list[int]:
        """Child tree: a constant equal to a parent constant becomes that pointer, else a
        literal, else ``const``."""
        pointers: dict[float, int] = {}
        for k, i in enumerate(parent.constant_indices()[:MAX_CONST_POINTERS]):
            pointers.setdefault(parent.vals[i], k)
        out: list[int] = []
        for code, value in zip(child.codes, child.vals):
            if code < 0:
                out.append(self._op_tok(-code))
            elif code > 0:
                out.append(self._var_tok(code))
            elif value in pointers:
                out.append(int(self.ptr_ids[pointers[value]]))
            else:
                lit = self._literal_tok(value)
                out.append(lit if lit is not None else self.const_id)
        return out

    def encode_member(self, expr: Expr) -> list[int]:
        """Population member: constants are literals or ``const`` (pointers refer to the parent)."""
        out: list[int] = []
        for code, value in zip(expr.codes, expr.vals):
            if code < 0:
                out.append(self._op_tok(-code))
            elif code > 0:
                out.append(self._var_tok(code))
            else:
                lit = self._literal_tok(value)
                out.append(lit if lit is not None else self.const_id)
        return out

    def decode_child(
        self,
        ids: Sequence[int],
        parent: Expr,
        const_value: Callable[[], float] | None = None,
    ) -> Expr:
        """Token ids (optionally ending in ``<eos>``) → ``Expr``.

        Pointers resolve to the parent's constants; ``const`` takes ``const_value()`` (NaN when
        not given). Raises :class:`DecodeError` unless ``ids`` is exactly one well-formed
        prefix expression.
        """
        ids = [int(i) for i in ids]
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        parent_consts = [parent.vals[i] for i in parent.constant_indices()]
        codes: list[int] = []
        vals: list[float] = []
        need = 1
        for pos, tok in enumerate(ids):
            if need == 0:
                raise DecodeError(f"tokens continue after a complete expression at position {pos}")
            kind_value = self._decode_table.get(tok)
            if kind_value is None:
                name = self.tokens[tok] if 0 <= tok < len(self.tokens) else f"id {tok}"
                raise DecodeError(f"token {name!r} at position {pos} is not an expression token")
            kind, value = kind_value
            if kind == "op":
                oid = int(value)
                codes.append(-oid)
                vals.append(0.0)
                need += OPERATORS[oid].arity - 1
                continue
            need -= 1
            if kind == "var":
                codes.append(int(value) + 1)
                vals.append(0.0)
                continue
            codes.append(0)
            if kind == "ptr":
                k = int(value)
                if k >= len(parent_consts):
                    raise DecodeError(f"pointer c:{k} at position {pos} but the parent has {len(parent_consts)} constants")
                vals.append(parent_consts[k])
            elif kind == "lit":
                vals.append(value)
            else:
                vals.append(const_value() if const_value is not None else math.nan)
        if need != 0 or not codes:
            raise DecodeError(f"incomplete expression: {need} operand(s) missing after {len(codes)} tokens")
        return Expr(codes, vals)

    def is_well_formed(self, ids: Sequence[int], n_parent_consts: int) -> bool:
        """True when ``ids`` (up to the first ``<eos>``, which must be present) is one
        well-formed prefix expression whose pointers exist in the parent."""
        need = 1
        n = 0
        for tok in ids:
            tok = int(tok)
            if tok == self.eos_id:
                return need == 0 and n > 0
            if need == 0 or not 0 <= tok < len(self.arity) or self.arity[tok] < 0:
                return False
            kind_value = self._decode_table[tok]
            if kind_value[0] == "ptr" and kind_value[1] >= n_parent_consts:
                return False
            need += int(self.arity[tok]) - 1
            n += 1
        return False

    # ---- prompts -----------------------------------------------------------------------------
    def encode_context(self, fields: PromptFields) -> list[int]:
        """The shared prefix: ``<bos> nf:N <ops> op... [<stats> ...]``."""
        n = fields.nfeatures
        if not 1 <= n <= MAX_FEATURES:
            raise TokenizerError(f"nfeatures={n}: the model supports 1..{MAX_FEATURES} features")
        t = self.token_to_id
        out = [self.bos_id, t[f"nf:{n}"], self.ops_id]
        out += sorted(self._op_tok(o.id) for o in fields.operators.all)
        if self.context_mode == "rich":
            out += self._encode_stats(fields.data_stats, n)
        return out

    def _encode_stats(self, stats: DataStats | None, n: int) -> list[int]:
        if stats is None:
            raise TokenizerError("the model uses 'rich' context but no data statistics were given (DataStats)")
        if len(stats.x_std) != n or len(stats.corr_xy) != n or len(stats.monotonic_xy) != n:
            raise TokenizerError(f"data statistics describe {len(stats.x_std)} features, expected {n}")
        t = self.token_to_id
        out = [self.stats_id, self.y_id, t[f"scale:{_scale_bin(stats.y_std)}"]]
        for j in range(n):
            out += [
                int(self.var_ids[j]),
                t[f"corr:{_corr_bin(stats.corr_xy[j])}"],
                t[f"mono:{_corr_bin(stats.monotonic_xy[j])}"],
                t[f"scale:{_scale_bin(stats.x_std[j])}"],
            ]
        return out

    def encode_request(self, fields: PromptFields) -> list[int]:
        """The per-request part: ``iter:b <parent> PARENT loss:b [members] <child>``."""
        t = self.token_to_id
        if not 0 <= fields.parent_loss_bin < N_LOSS_BINS:
            raise TokenizerError(f"loss bin {fields.parent_loss_bin} outside 0..{N_LOSS_BINS - 1}")
        out = [t[f"iter:{iteration_bucket(fields.iteration)}"], self.parent_id]
        out += self.encode_parent(fields.parent)
        out.append(t[f"loss:{fields.parent_loss_bin}"])
        if self.prompt_mode == "population":
            for tree, lbin in fields.members:
                out += [self.member_id, t[f"loss:{min(max(lbin, 0), N_LOSS_BINS - 1)}"]]
                out += self.encode_member(tree)
        out.append(self.child_id)
        return out

    def encode_prompt(self, fields: PromptFields) -> list[int]:
        """Full prompt: shared context prefix + per-request part (ends with ``<child>``)."""
        return self.encode_context(fields) + self.encode_request(fields)

    def encode_example(self, fields: PromptFields, child: Expr) -> tuple[list[int], int]:
        """Training sequence ``prompt + child + <eos>`` and the prompt length (loss mask)."""
        prompt = self.encode_prompt(fields)
        return prompt + self.encode_child(child, fields.parent) + [self.eos_id], len(prompt)

    def describe(self, ids: Sequence[int]) -> str:
        """Human-readable token string (debugging)."""
        return " ".join(self.tokens[int(i)] if 0 <= int(i) < len(self.tokens) else f"?{int(i)}" for i in ids)


def _build_tokens() -> tuple[str, ...]:
    toks: list[str] = list(SPECIALS)
    toks += [f"op:{OPERATORS[oid].name}" for oid in VOCAB_OPERATOR_IDS]
    toks += [f"x{j + 1}" for j in range(MAX_FEATURES)]
    toks += [f"nf:{j + 1}" for j in range(MAX_FEATURES)]
    toks += [f"loss:{b}" for b in range(N_LOSS_BINS)]
    toks += [f"iter:{b}" for b in range(N_ITER_BUCKETS)]
    toks += [f"c:{k}" for k in range(MAX_CONST_POINTERS)]
    toks += [f"lit:{name}" for name, _ in LITERALS]
    toks.append("const")
    for kind in ("corr", "mono", "scale"):
        toks += [f"{kind}:{b}" for b in range(N_STAT_BINS)]
    return tuple(toks)
