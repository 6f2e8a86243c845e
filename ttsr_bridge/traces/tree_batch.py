"""Printing many trees at once: SR.jl's ``string_tree`` form as JSON string literals, vectorised.

The trace writer prints one tree per traced child (tens of thousands per second of search);
printing them one by one in Python was the largest cost of writing a trace. Here a chunk's trees
arrive as flat arrays (the concatenated prefix ``codes`` and ``vals`` of every tree, and each
tree's length) and a fixed number of NumPy passes prints all of them: no per-node Python, and no
compiler to load in the writer process (Numba's start-up alone cost more CPU than a short
traced search spends writing its trace).

How: the text of a tree is a sequence of *pieces* — one piece where each node opens (a leaf's
text, ``name(`` of a call, ``(`` of a wrapped infix node), a separator after a binary node's
first child (`` + `` or ``, ``) and a closer after its last child (``)``). Every node's subtree
end comes from the prefix sums of ``arity - 1`` (the subtree at ``i`` ends at the first
``k >= i`` where the sum drops below its value before ``i``; one sort and one binary search for
all nodes), so every piece gets a position; sorting the pieces by (position, opens first,
innermost closers first) gives the text, which is gathered from a byte table in one indexing.

The output is exactly :func:`ttsr_bridge.expr.printer.string_tree` (``x1..`` names, Julia
floats) wrapped in JSON quotes: operator forms (arity, Julia name, infix or call) come from
:meth:`~.tracing_render._FastStringTree.forms`, which learns them from ``string_tree`` itself,
and constants are formatted by :func:`~ttsr_bridge.expr.printer.format_julia_float` (once per
distinct value). A tree it cannot print exactly (an operator without a learned form, a name that
JSON would escape, a malformed tree) is printed by the Python printer instead, which raises the
proper error for a malformed one. A test compares the two on random trees.

Layout rule (the same as ``string_tree``): an infix binary node is wrapped in parentheses
unless it is the root or the argument of a call (``sin(x1 + x2)``, ``max(x1 + x2, x3)``).

The compiled walk of :mod:`.tree_batch_jit` prints the same text for about a third of the CPU,
but loading it (importing Numba and its cached machine code) costs about 0.5 s of CPU once per
process (1.1 s the first time ever, compiling): a short trace would never repay it, and a
search waits for the writer at its end. So a process loads it
(:func:`load_compiled_walk`) once it has printed :data:`JIT_AFTER_NODES` nodes with NumPy (a
search long enough to repay it), and the trace writer process loads it between two files once it
has printed :data:`PRELOAD_AFTER_NODES` nodes (it serves searches of some size: ``collect``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["JIT_AFTER_NODES", "PRELOAD_AFTER_NODES", "BatchPrinter", "load_compiled_walk",
           "nodes_printed"]

# Nodes printed by NumPy before a printer loads the compiled walk in the middle of a stream:
# about 0.6 s of NumPy printing (a two-second search), about what loading it costs.
JIT_AFTER_NODES = 3_000_000
# ... and before the writer process loads it between two files.
PRELOAD_AFTER_NODES = 200_000

_compiled: Callable[..., list[str] | None] | None = None  # tree_batch_jit.print_trees, once loaded
_numpy_nodes = 0  # nodes printed by NumPy in this process
_no_numba = False


def nodes_printed() -> int:
    """Nodes printed by the NumPy passes in this process so far."""
    return _numpy_nodes


def load_compiled_walk() -> bool:
    """Load the compiled walk for every printer of this process; False where Numba is missing."""
    global _compiled, _no_numba
    if _compiled is None and not _no_numba:
        try:
            from .tree_batch_jit import print_trees, warm_up
        except ImportError:
            _no_numba = True
            return False
        warm_up()
        _compiled = print_trees
    return _compiled is not None

# Fixed pieces of the piece table; operators' pieces follow, then the chunk's leaves.
_EMPTY, _LPAR, _RPAR, _COMMA = 0, 1, 2, 3
_FIXED = (b"", b"(", b")", b", ")


def _json_safe(text: str) -> bool:
    """Printable ASCII that JSON writes as is (no quote, backslash or control character)."""
    return all(32 <= ord(ch) < 127 and ch not in '"\\' for ch in text)


class BatchPrinter:
    """Prints chunks of trees (flat arrays) as JSON string literals; see the module docstring.

    ``forms`` is :meth:`~.tracing_render._FastStringTree.forms` (``(code, arity, name, infix)``
    per operator); ``fallback(codes, vals)`` prints one tree as a plain string (the Python
    printer) where this one cannot; ``format_float`` formats a constant as Julia does.
    ``jit_after_nodes``: nodes printed by NumPy in this process before the compiled walk is
    loaded (``0``: at once; ``None``: this printer never uses it).
    """

    _MEMO_LIMIT = 100_000

    def __init__(self, forms: Sequence[Sequence[Any]],
                 fallback: Callable[[Sequence[int], Sequence[float]], str],
                 format_float: Callable[[float], str], *,
                 jit_after_nodes: int | None = JIT_AFTER_NODES) -> None:
        self._fallback = fallback
        self._fmt = format_float
        self._jit_after = jit_after_nodes
        self._consts: dict[int, bytes] = {}  # float bit pattern -> Julia text
        self._vars: dict[int, bytes] = {}  # code -> b"x<code>"
        self.set_forms(forms)

    def set_forms(self, forms: Sequence[Sequence[Any]]) -> None:
        """Replace the operator table (a writer process gets it from the search's process)."""
        size = 1 + max((-int(f[0]) for f in forms), default=0)
        arity = np.zeros(size, np.int64)  # 0: no form here (the fallback prints the tree)
        infix = np.zeros(size, np.bool_)
        open_piece = np.zeros(size, np.int64)  # a call's ``name(``
        sep_piece = np.full(size, _COMMA, np.int64)  # an infix node's `` name ``
        pieces = list(_FIXED)
        for code, ar, name, inf in forms:
            oid = -int(code)
            if oid <= 0 or int(ar) not in (1, 2) or not isinstance(name, str) or not _json_safe(name):
                continue
            arity[oid] = int(ar)
            if bool(inf) and int(ar) == 2:
                infix[oid] = True
                sep_piece[oid] = len(pieces)
                pieces.append(f" {name} ".encode("ascii"))
            else:
                open_piece[oid] = len(pieces)
                pieces.append(f"{name}(".encode("ascii"))
        self._arity, self._infix = arity, infix
        self._open_piece, self._sep_piece = open_piece, sep_piece
        self._op_pieces = pieces

    # ---- one chunk -------------------------------------------------------------------------
    def print_chunk(self, codes: Any, vals: Any, lens: Any) -> list[str]:
        """JSON string literals of the trees ``codes/vals`` cut by ``lens`` (buffers, lists or
        arrays; int64, float64, int64)."""
        codes, vals, lens = _as(codes, np.int64), _as(vals, np.float64), _as(lens, np.int64)
        if lens.shape[0] == 0:
            return []
        if codes.shape != vals.shape or (lens < 0).any() or int(lens.sum()) != codes.shape[0]:
            raise ValueError("malformed tree chunk: lengths do not cover the nodes")
        walk = self._compiled_walk(codes.shape[0])
        if walk is not None:
            const_piece, texts = self._const_pieces(codes, vals, len(self._op_pieces))
            printed = walk(codes, const_piece, lens, self._arity, self._infix, self._open_piece,
                           self._sep_piece, self._op_pieces + texts)
            if printed is not None:
                return printed
        # The NumPy passes; they also sort out a chunk the compiled walk cannot print whole.
        ok = self._printable(codes, lens)
        if ok.all():
            return self._print(codes, vals, lens)
        # Print the printable trees together, the others one by one in Python.
        keep = np.repeat(ok, lens)
        good = iter(self._print(codes[keep], vals[keep], lens[ok]) if ok.any() else [])
        from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

        starts = np.concatenate(([0], np.cumsum(lens)))
        out = []
        for t, fine in enumerate(ok.tolist()):
            if fine:
                out.append(next(good))
            else:
                a, b = int(starts[t]), int(starts[t + 1])
                out.append(encode_basestring_ascii(
                    self._fallback(codes[a:b].tolist(), vals[a:b].tolist())))
        return out

    def _node_arity(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(operator id per node, arity per node); unknown operators get arity -1."""
        oid = np.where(codes < 0, -codes, 0)
        known = oid < self._arity.shape[0]
        ar = self._arity[np.where(known, oid, 0)]
        ar[(codes < 0) & ((~known) | (ar == 0))] = -1
        return np.where(known, oid, 0), ar

    def _printable(self, codes: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """(T,) whether each tree is well formed with operators printable here."""
        _, ar = self._node_arity(codes)
        nonempty = lens > 0
        ok = nonempty.copy()
        if not nonempty.any():
            return ok
        tree = np.repeat(np.arange(lens.shape[0]), lens)
        unknown = np.zeros(lens.shape[0], np.int64)
        np.add.at(unknown, tree[ar < 0], 1)
        ok &= unknown == 0
        # Well formed: the running sum of (arity - 1) stays >= 0 inside and ends at -1.
        d = np.where(ar < 0, 0, ar) - 1
        s = np.cumsum(d)
        starts = np.cumsum(lens) - lens
        rel = s - (s - d)[starts][tree]
        ends = starts + lens - 1
        ne_ends = ends[nonempty]
        ok[nonempty] &= rel[ne_ends] == -1
        inner = rel.copy()
        inner[ne_ends] = 0
        mins = np.full(lens.shape[0], -1, np.int64)
        mins[nonempty] = np.minimum.reduceat(inner, starts[nonempty])
        ok &= mins >= 0
        return ok

    def _leaf_pieces(self, codes: np.ndarray, vals: np.ndarray, base: int) -> tuple[np.ndarray, list[bytes]]:
        """(piece id per node for the leaves, 0 elsewhere; the leaves' piece texts)."""
        piece, texts = self._const_pieces(codes, vals, base)
        is_var = codes > 0
        if is_var.any():
            uniq, inv = np.unique(codes[is_var], return_inverse=True)
            memo = self._vars
            piece[is_var] = base + len(texts) + inv.reshape(-1)
            for c in uniq.tolist():
                b = memo.get(c)
                if b is None:
                    b = memo[c] = b"x%d" % c
                texts.append(b)
        return piece, texts

    def _const_pieces(self, codes: np.ndarray, vals: np.ndarray, base: int) -> tuple[np.ndarray, list[bytes]]:
        """(piece id per node for the constants, 0 elsewhere; their texts, Julia's form of each
        distinct value)."""
        piece = np.zeros(codes.shape[0], np.int64)
        texts: list[bytes] = []
        is_const = codes == 0
        if is_const.any():
            # By bit pattern: -0.0 and 0.0 print differently, and NaN must equal itself.
            uniq, inv = np.unique(vals.view(np.int64)[is_const], return_inverse=True)
            memo, fmt = self._consts, self._fmt
            for bits in uniq.tolist():
                b = memo.get(bits)
                if b is None:
                    if len(memo) >= self._MEMO_LIMIT:
                        memo.clear()
                    b = memo[bits] = fmt(float(np.int64(bits).view(np.float64))).encode("ascii")
                texts.append(b)
            piece[is_const] = base + inv.reshape(-1)
        return piece, texts

    @property
    def compiled(self) -> bool:
        """Whether the compiled walk prints this printer's next chunk."""
        return self._jit_after is not None and _compiled is not None

    def _compiled_walk(self, nodes: int) -> Callable[..., list[str] | None] | None:
        """The compiled walk, loaded once this process has printed ``jit_after_nodes`` nodes
        with NumPy (counting these ``nodes``); ``None`` until then, or for this printer."""
        global _numpy_nodes
        if self._jit_after is None:
            return None
        if _compiled is None and (_numpy_nodes + nodes <= self._jit_after or not load_compiled_walk()):
            _numpy_nodes += nodes
            return None
        return _compiled

    def _print(self, codes: np.ndarray, vals: np.ndarray, lens: np.ndarray) -> list[str]:
        """The trees, all well formed and printable (see the module docstring for the method)."""
        n = codes.shape[0]
        idx = np.arange(n, dtype=np.int64)
        oid, ar = self._node_arity(codes)
        d = ar - 1
        s = np.cumsum(d)
        before = s - d
        # Subtree ends: first k >= i with s[k] == before[i] - 1, by one sort of (s, k).
        shift = lens.shape[0] + 1  # s >= -T: keys stay non-negative
        keys = np.sort((s + shift) * n + idx)
        end = keys[np.searchsorted(keys, (before - 1 + shift) * n + idx)] % n
        ops = np.flatnonzero(codes < 0)
        binary = ops[ar[ops] == 2]
        first_end = end[binary + 1]
        # An infix node is wrapped when its parent is infix (roots and call arguments are not).
        wrapped = np.zeros(n, np.bool_)
        binfix = self._infix[oid[binary]]
        wrapped[binary + 1] = binfix
        wrapped[first_end + 1] = binfix

        leaf_piece, leaf_texts = self._leaf_pieces(codes, vals, len(self._op_pieces))
        open_piece = leaf_piece
        op_infix = self._infix[oid[ops]]
        open_piece[ops] = np.where(op_infix, np.where(wrapped[ops], _LPAR, _EMPTY),
                                   self._open_piece[oid[ops]])
        close_piece = np.where(op_infix & ~wrapped[ops], _EMPTY, _RPAR)
        sep_piece = self._sep_piece[oid[binary]]

        # Pieces in text order: by position; a node's open first, then the separators and
        # closers there, innermost (latest-starting) node first.
        stride = n + 2
        order_keys = np.concatenate((idx * stride, first_end * stride + 1 + (n - binary),
                                     end[ops] * stride + 1 + (n - ops)))
        pieces = np.concatenate((open_piece, sep_piece, close_piece))
        order = np.argsort(order_keys, kind="stable")
        seq = pieces[order]

        blob, offsets, lengths = piece_table(self._op_pieces + leaf_texts)
        plen = lengths[seq]
        cum = np.cumsum(plen)
        total = int(cum[-1])
        gather = np.repeat(offsets[seq] - (cum - plen), plen) + np.arange(total, dtype=np.int64)
        text = blob[gather].tobytes().decode("ascii")
        # A tree's text starts at its root's open piece.
        starts = np.cumsum(lens) - lens
        first_piece = np.searchsorted(order_keys[order], starts * stride)
        bounds = (cum - plen)[first_piece].tolist()
        bounds.append(total)
        return ['"' + text[bounds[t]:bounds[t + 1]] + '"' for t in range(lens.shape[0])]


def piece_table(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pieces as one byte array, with each piece's offset and length in it."""
    lengths = np.fromiter((len(b) for b in pieces), np.int64, len(pieces))
    offsets = np.cumsum(lengths) - lengths
    return np.frombuffer(b"".join(pieces), np.uint8), offsets, lengths


def _as(data: Any, dtype: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.astype(dtype, copy=False)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype)
    return np.asarray(data, dtype)
