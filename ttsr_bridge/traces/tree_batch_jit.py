"""The compiled pass of :class:`~.tree_batch.BatchPrinter`: one walk over every node of a chunk.

:mod:`.tree_batch` prints a chunk's trees with a fixed number of NumPy passes (sorts, prefix sums,
gathers), about 4 µs per tree, which was two fifths of the trace writer's CPU. This module does
the same in one compiled walk per tree (tens of nanoseconds per node): the writer process
imports it (Numba: about 0.5 s of CPU, once per process; :func:`warm_up` then loads the
machine code, so that no chunk waits for a compile) only after it has printed enough
nodes for that to pay (:data:`~.tree_batch.JIT_AFTER_NODES`), so a short traced search never
waits for it. The output is byte-for-byte the NumPy pass's; a test compares them.

The walk, in prefix order with a stack of open operators: a node emits its *open* piece (a
leaf's text: a variable's is written here, a constant's comes from the piece table; ``name(``
of a call; ``(`` of a wrapped infix node; nothing for an unwrapped one);
a finished child makes its parent emit the separator (after the first of two children) or its
closer (after the last), which may finish the parent in turn. An infix node is wrapped when its
parent is infix (roots and call arguments are not), as in ``string_tree``. The measuring pass
also checks every tree (known operators, each one complete, nothing after its root's end); a
chunk with a tree it cannot print goes back to the NumPy passes, which sort it out.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .tree_batch import _EMPTY, _FIXED, _LPAR, _RPAR, piece_table

__all__ = ["print_trees", "warm_up"]

_QUOTE = 34  # '"': every tree is a JSON string literal


@njit(cache=True, nogil=True)
def _walk(codes, const_piece, lens, arity, infix, open_piece, sep_piece, blob, offsets, lengths,
          out, ends, write):  # pragma: no cover - compiled
    """Emit (``write``) or measure every tree; the number of bytes, or -1 when some tree is
    not printable here (an operator without a form, a malformed tree)."""
    stack_node = np.empty(codes.shape[0] + 1, np.int64)  # open operators: node, children left,
    stack_left = np.empty(codes.shape[0] + 1, np.int64)  # wrapped
    stack_wrap = np.empty(codes.shape[0] + 1, np.bool_)
    n_ops = arity.shape[0]
    pos = 0
    start = 0
    for t in range(lens.shape[0]):
        if write:
            out[pos] = _QUOTE
        pos += 1
        depth = 0
        done = False  # the root is complete
        for i in range(start, start + lens[t]):
            if done:
                return -1  # nodes after the root's end
            c = codes[i]
            piece = _EMPTY  # what to emit next
            if c > 0:  # a variable: x<c>, written here
                digits = 1
                m = c
                while m >= 10:
                    m //= 10
                    digits += 1
                if write:
                    out[pos] = 120  # 'x'
                    m = c
                    for j in range(digits, 0, -1):
                        out[pos + j] = 48 + m % 10
                        m //= 10
                pos += 1 + digits
            elif c == 0:
                piece = const_piece[i]
            else:
                oid = -c
                if oid >= n_ops or arity[oid] == 0:
                    return -1
                wrapped = False
                if infix[oid]:
                    wrapped = depth > 0 and infix[-codes[stack_node[depth - 1]]]
                    piece = _LPAR if wrapped else _EMPTY
                else:
                    piece = open_piece[oid]
                stack_node[depth] = i
                stack_left[depth] = arity[oid]
                stack_wrap[depth] = wrapped
                depth += 1
            # Emit the node's open piece; a leaf then finishes a child: a separator, or closers
            # up the stack.
            unwind = c >= 0
            while True:
                k = lengths[piece]
                if write:
                    o = offsets[piece]
                    for j in range(k):
                        out[pos + j] = blob[o + j]
                pos += k
                if not unwind or depth == 0:
                    break
                d = depth - 1
                stack_left[d] -= 1
                node_oid = -codes[stack_node[d]]
                if stack_left[d] == 1:
                    piece = sep_piece[node_oid]
                    unwind = False
                else:
                    piece = _EMPTY if (infix[node_oid] and not stack_wrap[d]) else _RPAR
                    depth -= 1
            done = depth == 0
        if not done:
            return -1  # empty, or an operator short of children
        if write:
            out[pos] = _QUOTE
            ends[t] = pos + 1
        pos += 1
        start += lens[t]
    return pos


def print_trees(codes: np.ndarray, const_piece: np.ndarray, lens: np.ndarray, arity: np.ndarray,
                infix: np.ndarray, open_piece: np.ndarray, sep_piece: np.ndarray,
                pieces: list[bytes]) -> list[str] | None:
    """The JSON string literals of the trees ``codes`` cut by ``lens`` (``const_piece``: each
    constant's piece id; the operator tables and ``pieces`` as in
    :class:`~.tree_batch.BatchPrinter`), or ``None`` when one of them is not printable here."""
    # One machine signature for every call (a read-only buffer would be another type, compiled
    # again): writable, contiguous int64.
    codes = np.require(codes, np.int64, "CW")
    lens = np.require(lens, np.int64, "CW")
    blob, offsets, lengths = piece_table(pieces)
    ends = np.empty(lens.shape[0], np.int64)
    args = (codes, const_piece, lens, arity, infix, open_piece, sep_piece, blob, offsets, lengths)
    size = _walk(*args, np.empty(0, np.uint8), ends, False)
    if size < 0:
        return None
    out = np.empty(size, np.uint8)
    _walk(*args, out, ends, True)
    text = out.tobytes().decode("ascii")
    bounds = [0, *ends.tolist()]
    return [text[bounds[t]:bounds[t + 1]] for t in range(lens.shape[0])]


def warm_up() -> None:
    """Compile (or load from Numba's cache) the walk now, on a one-tree chunk, so that the
    first real chunk does not wait for it."""
    ops = np.zeros(1, np.int64)
    print_trees(np.array([1], np.int64), np.zeros(1, np.int64), np.array([1], np.int64), ops,
                np.zeros(1, np.bool_), ops, ops, list(_FIXED))
