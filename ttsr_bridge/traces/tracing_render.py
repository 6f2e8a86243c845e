"""Rendering of compact trace events into SR.jl v1 trace lines (JSON text).

:mod:`.tracing` records each traced event on the search's hot path as a few plain values
(refs, floats, strings, and the nodes of each new tree in flat arrays) appended to an *event stream*, and hands the stream in chunks to a
:class:`TraceRenderer`, which prints the trees and builds the JSON lines — usually in a separate
writer process (:mod:`.tracing_process`), so the search never pays for printing or encoding.

A chunk is the event stream's list plus three flat arrays holding the trees it names: the
concatenated prefix ``codes`` (int64) and ``vals`` (float64) of every tree, and each tree's length
(int64), in the order the events name them (``OP_BEGIN``: one tree per member, in order;
``OP_ENTRY``: one). The trees of a chunk are printed in one compiled pass (:mod:`.tree_batch`).
Trees the engine has already packed for evaluation come as rows of a *tree table* (the same
three arrays for a batch) instead: then a fourth array of slots says, per tree named, which
table row it is (or ``-1``: the next tree of the first three arrays), so the search never
packs such a tree a second time (:meth:`TraceRenderer.feed`).

The event stream is a flat list of plain values (``int`` / ``float`` / ``bool`` / ``str`` /
``None`` / ``list`` / ``tuple``, or NumPy scalars where members hold them), cut between
events into chunks: each event is its tag, the id of its iteration record (unique per writer),
then its fields —

===================  ===========================================================================
tag                  fields
===================  ===========================================================================
``OP_BEGIN``         output, population, iteration, started_at, members (one ``(ref, loss, cost,
                     complexity, birth, parent)`` per member, in order; trees in the arrays)
``OP_ENTRY``         ref, parent, cost, loss (its tree is the next one in the arrays)
``OP_ENTRY_AS``      ref, parent, cost, loss, ref of an entry of this record with the same tree
``OP_START_ENTRY``   ref
``OP_MUTATE``        parent ref, child ref, selected, time, type, result, reason
``OP_MUTATE_CHILD``  parent ref, child ref, child's parent, cost, loss, same tree as the parent
                     (else its tree is the next one), time, type, result, reason, replaced ref
                     or None — the engine's usual mutation in one event: entries for the
                     replaced member and the parent (from ``members``) and the child, each
                     unless registered; a selected ``mutate`` on the parent; a ``death`` on the
                     replaced member
``OP_CROSSOVER_CHILDREN``  parent1, parent2, then per child ref, parent, cost, loss (its tree is
                     the next one), dead1, dead2, time, details JSON — as ``OP_CROSSOVER`` with
                     the entries (parents and dead from ``members``) in the event
``OP_DEATH``         ref, time
``OP_CROSSOVER``     parent1, parent2, child1, child2, dead1, dead2, time, details JSON
``OP_TUNING``        old ref, new ref, optimized, time
``OP_END``           — (SR.jl's ``write_trace``: the record's line is complete)
===================  ===========================================================================

``OP_ENTRY`` registers a ref in ``mutations`` unless it is registered (SR.jl's first state
wins; its tree is consumed either way); ``OP_START_ENTRY`` registers it, unless it is
registered, with all its fields from ``members``; the compact events (``OP_MUTATE_CHILD``,
``OP_CROSSOVER_CHILDREN``) register a parent or a replaced member that is not yet registered with its ``members`` state — the
engine's invariant: every member an event names is a member at the record's start (members are
immutable values per ref) or a child traced earlier in the record; a tuning is a
``tuning`` then a ``death`` event; a crossover's event goes on both parents and a ``death`` on
both replaced members. Records of several populations interleave (the engine runs them in
lockstep); lines come out in ``OP_END`` order.

The output is byte-for-byte what the in-process writer produced before the split: floats as
Python's ``repr`` (non-finite as SR.jl's JSON3 ``Infinity`` / ``-Infinity`` / ``NaN``), trees
as :func:`ttsr_bridge.expr.printer.string_tree` (``x1..``, Julia floats), JSON-escaped ASCII.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from .records import TRACE_SCHEMA_VERSION

__all__ = [
    "OP_BEGIN",
    "OP_CROSSOVER",
    "OP_CROSSOVER_CHILDREN",
    "OP_DEATH",
    "OP_END",
    "OP_ENTRY",
    "OP_ENTRY_AS",
    "OP_MUTATE",
    "OP_MUTATE_CHILD",
    "OP_START_ENTRY",
    "OP_TUNING",
    "TraceRenderer",
    "jfloat",
    "operator_forms",
    "render_search_line",
    "step_to_json",
]

OP_ENTRY = 0
OP_START_ENTRY = 1
OP_MUTATE = 2
OP_DEATH = 3
OP_CROSSOVER = 4
OP_TUNING = 5
OP_BEGIN = 6
OP_END = 7
OP_ENTRY_AS = 8
OP_MUTATE_CHILD = 9
OP_CROSSOVER_CHILDREN = 10

# The tree-string cache is cleared when it grows past this many trees; a population's members
# are re-printed at most once after a clear, so the bound only costs a little throughput.
_TREE_CACHE_LIMIT = 200_000

_NONFINITE = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
_float_repr = float.__repr__


def jfloat(x: float) -> str:
    """A float as JSON text; non-finite as SR.jl's JSON3 (``allow_inf``) writes them."""
    r = _float_repr(float(x))
    return _NONFINITE.get(r, r)


# Losses and costs recur (a rejected child carries its parent's, a parent is drawn again and
# again): four in five are texts already made. Bounded: cleared when it grows past this.
_FLOAT_MEMO: dict[float, str] = {}
_FLOAT_MEMO_LIMIT = 100_000


def _jfloat_fast(x: float) -> str:
    """:func:`jfloat` for the writer's loop: memoised, no conversion for a ``float``."""
    r = _FLOAT_MEMO.get(x)
    if r is not None:
        return r
    try:
        r = _float_repr(x)
    except TypeError:  # an int or a float-like: convert as jfloat does
        return jfloat(x)
    # A finite float's repr ends in a digit; 'inf' / '-inf' / 'nan' do not.
    if r[-1] > "9":
        return _NONFINITE[r]
    if x != 0.0:  # 0.0 and -0.0 are one key of a dict; NaN never gets here
        if len(_FLOAT_MEMO) >= _FLOAT_MEMO_LIMIT:
            _FLOAT_MEMO.clear()
        _FLOAT_MEMO[x] = r
    return r


def step_to_json(type_: str, result: str | None, reason: str | None) -> str:
    """A mutation's ``{"type", "result", "reason"}`` object (unset fields omitted, as SR.jl)."""
    d = {"type": type_}
    if result is not None:
        d["result"] = result
    if reason is not None:
        d["reason"] = reason
    return json.dumps(d, separators=(",", ":"))


def render_search_line(options: str, started_at: float) -> str:
    """The first line of a trace: the ``search`` record."""
    return json.dumps(
        {
            "schema_version": TRACE_SCHEMA_VERSION,
            "record_type": "search",
            "started_at": started_at,
            "options": str(options),
        },
        separators=(",", ":"),
    )


def operator_forms() -> list[tuple[int, int, str, bool]]:
    """The printing form of every registered operator (see :meth:`_FastStringTree.forms`)."""
    return _FastStringTree(_load_string_tree()).forms()


def _load_string_tree() -> Callable[..., str]:
    # Imported on first use: the printer is an independent module and a search that does not
    # trace must not depend on it.
    from ..expr.printer import string_tree

    return string_tree


class _FastStringTree:
    """``string_tree(expr)`` (x1.. names, Julia floats) with the same output, several times faster.

    Tracing prints one tree per traced child, which made printing the dominant cost of a traced
    search. This printer keeps the exact output of :func:`ttsr_bridge.expr.printer.string_tree`
    by learning each operator's form *from* ``string_tree`` (printing ``op(x1, x2)`` once), and
    memoises constant strings; any operator whose form it cannot reproduce is printed by
    ``string_tree`` itself (the whole tree). A test checks equality on random trees.
    """

    _CONST_MEMO_LIMIT = 100_000

    def __init__(self, string_tree: Callable[..., str]) -> None:
        from ..expr.printer import format_julia_float
        from ..expr.tree import Expr

        self._string_tree = string_tree
        self._expr_cls = Expr
        self._fmt = format_julia_float
        # op code (negative) -> (arity, julia name, infix) or None when not reproducible
        self._ops: dict[int, tuple[int, str, bool] | None] = {}
        self._consts: dict[float, str] = {}

    def _learn(self, code: int) -> tuple[int, str, bool] | None:
        from ..expr.operators import OPERATORS

        op = OPERATORS.get(-code)
        if op is None:
            return None  # string_tree raises the proper error
        if op.arity == 1:
            form = (1, op.julia, False)
            probe = self._expr_cls([code, 1])
            expect = f"{op.julia}(x1)"
        elif op.arity == 2:
            probe = self._expr_cls([code, 1, 2])
            infix = self._string_tree(probe) == f"x1 {op.julia} x2"
            form = (2, op.julia, infix)
            expect = f"x1 {op.julia} x2" if infix else f"{op.julia}(x1, x2)"
        else:
            return None
        return form if self._string_tree(probe) == expect else None

    def forms(self) -> list[tuple[int, int, str, bool]]:
        """``(code, arity, julia name, infix)`` of every registered operator printed exactly.

        A writer process gets this table from the search's process, so operators registered
        there at run time (``register_operator``) print the same in the writer.
        """
        from ..expr.operators import OPERATORS

        out = []
        for oid in sorted(OPERATORS):
            form = self._ops.get(-oid, False)
            if form is False:
                form = self._ops[-oid] = self._learn(-oid)
            if form is not None:
                out.append((-oid, *form))
        return out

    def set_forms(self, forms: Sequence[Sequence[Any]]) -> None:
        """Use operator forms from :meth:`forms` (of another process)."""
        for code, arity, julia, infix in forms:
            if int(arity) not in (1, 2) or not isinstance(julia, str):
                raise ValueError(f"bad operator form {(code, arity, julia, infix)!r}")
            self._ops[int(code)] = (int(arity), julia, bool(infix))

    def __call__(self, expr: Any) -> str:
        return self.print_lists(expr.codes, expr.vals)

    def print_lists(self, codes: Sequence[int], vals: Sequence[float]) -> str:
        """The string of the tree ``Expr(codes, vals)``."""
        ops, consts = self._ops, self._consts
        stack: list[str] = []
        push, pop = stack.append, stack.pop
        for i in range(len(codes) - 1, -1, -1):
            c = codes[i]
            if c == 0:
                v = vals[i]
                s = consts.get(v) if v != 0.0 else None  # 0.0 == -0.0 in a dict: not memoised
                if s is None:
                    s = self._fmt(v)
                    if v != 0.0 and not math.isnan(v):
                        if len(consts) >= self._CONST_MEMO_LIMIT:
                            consts.clear()
                        consts[v] = s
                push(s)
            elif c > 0:
                push(f"x{c}")
            else:
                form = ops.get(c, False)
                if form is False:
                    form = ops[c] = self._learn(c)
                if form is None or len(stack) < form[0]:
                    return self._fallback(codes, vals)
                if form[0] == 1:
                    a = pop()
                    if a[0] == "(" and a[-1] == ")":
                        a = a[1:-1]
                    push(f"{form[1]}({a})")
                else:
                    a = pop()
                    b = pop()
                    if form[2]:
                        push(f"({a} {form[1]} {b})")
                    else:
                        if a[0] == "(" and a[-1] == ")":
                            a = a[1:-1]
                        if b[0] == "(" and b[-1] == ")":
                            b = b[1:-1]
                        push(f"{form[1]}({a}, {b})")
        if len(stack) != 1:
            return self._fallback(codes, vals)  # malformed: let string_tree raise its error
        s = stack[0]
        return s[1:-1] if s[0] == "(" and s[-1] == ")" else s

    def _fallback(self, codes: Sequence[int], vals: Sequence[float]) -> str:
        return self._string_tree(self._expr_cls(codes, vals))


class _Record:
    """An ``iteration`` record being rendered: its header, members, and ``mutations`` so far.

    ``events`` maps a ref to ``""`` (none), one JSON string, or a list once a second arrives:
    mostly strings, and no quadratic joins for a tournament winner with hundreds of events;
    a *sealed* ``(events, entry text)`` tuple once the ref is finished (:func:`_seal`).
    """

    __slots__ = ("events", "head", "heads", "member_fields", "member_heads", "member_trees",
                 "start_fields", "trees")

    def __init__(self, head: str, member_fields: list[tuple[int, str]]) -> None:
        self.head = head
        self.member_fields = member_fields
        self.heads: dict[int, str] = {}
        self.events: dict[int, Any] = {}  # str | list[str] | (events, entry text)
        self.start_fields: dict[int, str] | None = None
        self.trees: dict[int, str] = {}  # ref -> tree JSON, for OP_ENTRY_AS
        self.member_trees: dict[int, str] = {}  # the same for the members at the start
        self.member_heads: dict[int, str] = {}  # a member's ``mutations`` fields at the start


def _head(tree: str, cost: float, loss: float, parent: int) -> str:
    """A ``mutations`` entry's fields after ``events`` (``tree``: a JSON string literal)."""
    return (f'"tree":{tree},"cost":{_jfloat_fast(cost)},"loss":{_jfloat_fast(loss)},'
            f'"parent":{int(parent)}')


def _register(rec: _Record, ref: int, tree: str, cost: float, loss: float, parent: int) -> None:
    """Register ``ref`` in the record's ``mutations`` unless it is (SR.jl: first state wins)."""
    if ref not in rec.heads:
        rec.trees[ref] = tree
        rec.heads[ref] = _head(tree, cost, loss, parent)
        rec.events[ref] = ""


def _crossover_events(events: dict[int, Any], heads: dict[int, str], ts: str, p1: int, p2: int,
                      c1: int, c2: int, d1: int, d2: int, details: str) -> None:
    """A crossover: one event on both parents (SR.jl pushes the same object on both), a
    ``death`` on both replaced members."""
    ev = (f'{{"type":"crossover","time":{ts},"parent1":{int(p1)},"parent2":{int(p2)},'
          f'"child1":{int(c1)},"child2":{int(c2)},"details":{details}}}')
    _add(events, p1, ev)
    _add(events, p2, ev)
    _death(events, heads, d1, ts)
    _death(events, heads, d2, ts)


def _seal(ref: int, head: str, ev: str | list[str]) -> tuple[str | list[str], str]:
    """A finished ref's events with its whole ``mutations`` entry already rendered (a plain
    tuple: the only tuples among a record's event values, and no constructor to call).

    A ``death`` is a ref's last event in the engine's traces (and a child the population did
    not take has none), so its entry is rendered then, while the search is still running:
    ending a record is then one join, instead of rendering every entry at once — which, for the
    last iteration, the search would wait for in ``close``. An event after the death (the
    general hooks allow one) unseals it.
    """
    return ev, _entry(ref, head, ev)


def _entry(ref: int, head: str, ev: str | list[str]) -> str:
    """A ref's ``mutations`` entry: ``"ref":{"events":[...],<head>}``."""
    return f'"{ref}":{{"events":[{ev if ev.__class__ is str else ",".join(ev)}],{head}}}'


def _add(events: dict[int, Any], ref: int, ev: str) -> None:
    prev = events[ref]
    if not prev:
        events[ref] = ev
    elif prev.__class__ is str:
        events[ref] = [prev, ev]
    elif prev.__class__ is list:
        prev.append(ev)
    else:  # sealed: an event after the ref's death
        events[ref] = prev[0]
        _add(events, ref, ev)


def _death(events: dict[int, Any], heads: dict[int, str], ref: int, ts: str) -> None:
    """A ``death`` event on ``ref``, and its entry rendered (:func:`_seal`)."""
    _add(events, ref, f'{{"type":"death","time":{ts}}}')
    events[ref] = _seal(ref, heads[ref], events[ref])


def _unknown_ref(ref: int) -> ValueError:
    return ValueError(f"trace event names ref {ref}, neither traced in this iteration nor a "
                      "member at its start")


def _with_table_rows(printer: Any, own: list[str], codes: Any, vals: Any, lens: Any,
                     slots: Any) -> list[str]:
    """The chunk's trees in event order: table rows where ``slots >= 0``, ``own`` elsewhere."""
    import numpy as np

    from .tree_batch import _as

    slots, lens = _as(slots, np.int64), _as(lens, np.int64)
    if (lens < 0).any():
        raise ValueError("malformed trace event stream: a negative tree length in the table")
    codes, vals = _table_nodes(codes, vals, int(lens.sum()))
    from_table = slots >= 0
    rows = slots[from_table]
    if int(np.count_nonzero(~from_table)) != len(own):
        raise ValueError(f"malformed trace event stream: {len(own)} trees sent for "
                         f"{int(np.count_nonzero(~from_table))} slots")
    if len(rows) and int(rows.max()) >= len(lens):
        raise ValueError("malformed trace event stream: tree slots outside the table")
    # Gather the named rows (a ragged take): node j of the k-th named row sits at
    # starts[rows[k]] + j.
    starts = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    take = lens[rows]
    out_starts = np.zeros(len(take) + 1, np.int64)
    np.cumsum(take, out=out_starts[1:])
    idx = np.repeat(starts[rows] - out_starts[:-1], take) + np.arange(out_starts[-1])
    printed = printer.print_chunk(codes[idx], vals[idx], take)
    out = np.empty(len(slots), object)
    out[from_table] = printed
    out[~from_table] = own
    return out.tolist()


def _table_nodes(codes: Any, vals: Any, n: int) -> tuple[Any, Any]:
    """A tree table's ``(codes int64, vals float64)`` of ``n`` nodes from the wire: codes as
    int64 or int16 (told apart by their size), vals for every node or for the constants
    (``code == 0``) only."""
    import numpy as np

    from .tree_batch import _as

    if not isinstance(codes, np.ndarray):
        size = len(memoryview(codes).cast("B"))
        if size not in (2 * n, 8 * n):
            raise ValueError("malformed trace event stream: table codes do not match its lengths")
        codes = np.frombuffer(codes, np.int16 if size == 2 * n and n else np.int64)
    elif len(codes) != n:
        raise ValueError("malformed trace event stream: table codes do not match its lengths")
    codes = codes.astype(np.int64, copy=False)
    vals = _as(vals, np.float64)
    if len(vals) == n:
        return codes, vals
    const = codes == 0
    if len(vals) != int(np.count_nonzero(const)):
        raise ValueError("malformed trace event stream: table values do not match its constants")
    full = np.zeros(n)
    full[const] = vals
    return codes, full


class TraceRenderer:
    """Turns the event stream (module docstring) into ``iteration`` JSON lines.

    Feed it the chunks in order (:meth:`feed`); it keeps the open records between chunks. Each
    chunk's trees are printed at once by a :class:`~.tree_batch.BatchPrinter` (compiled; imported
    on the first chunk that holds trees); :meth:`tree_json` prints a single tree in Python.
    """

    def __init__(self) -> None:
        self.string_tree = _FastStringTree(_load_string_tree())
        self._batch: Any = None  # the BatchPrinter, built on first use
        # Trees by content -> JSON string, for tree_json. Content keys (int tuples, bytes) keep
        # no tree alive; the vals bytes tell -0.0 from 0.0, which a float tuple would not.
        self._tree_cache: dict[tuple[tuple[int, ...], bytes], str] = {}
        self._step_cache: dict[tuple[str, str | None, str | None], str] = {}
        # (type, result, reason, selected) -> the end of a mutate event's JSON
        self._mutate_tail_cache: dict[tuple[str, str | None, str | None, bool], str] = {}
        self._time_cache: tuple[float, str] = (float("nan"), "")
        self._records: dict[int, _Record] = {}

    @property
    def open_records(self) -> int:
        """Records begun and not yet ended (a search stopped mid-iteration leaves some)."""
        return len(self._records)

    def set_forms(self, forms: Sequence[Sequence[Any]]) -> None:
        """Use operator forms from :func:`operator_forms` of another process."""
        self.string_tree.set_forms(forms)
        if self._batch is not None:
            self._batch.set_forms(self.string_tree.forms())

    def _batch_printer(self) -> Any:
        if self._batch is None:
            from ..expr.printer import format_julia_float
            from .tree_batch import BatchPrinter

            self._batch = BatchPrinter(self.string_tree.forms(), self.string_tree.print_lists,
                                       format_julia_float)
        return self._batch

    # ---- fragments -------------------------------------------------------------------------
    def tree_json(self, codes: Sequence[int], vals: Sequence[float]) -> str:
        """``string_tree(Expr(codes, vals))`` as a JSON string literal, cached by content."""
        key = (tuple(codes), array("d", vals).tobytes())
        s = self._tree_cache.get(key)
        if s is None:
            s = encode_basestring_ascii(self.string_tree.print_lists(codes, vals))
            if len(self._tree_cache) >= _TREE_CACHE_LIMIT:
                self._tree_cache.clear()
            self._tree_cache[key] = s
        return s

    @staticmethod
    def member_fields(m: Sequence[Any], tree: str) -> str:
        """A ``members`` entry's fields as JSON text, without braces (``m`` as in ``OP_BEGIN``;
        ``tree``: its tree as a JSON string literal)."""
        ref, loss, cost, complexity, birth, parent = m
        return (f'"tree":{tree},"loss":{jfloat(loss)},"cost":{jfloat(cost)},'
                f'"complexity":{int(complexity)},"birth":{int(birth)},"ref":{int(ref)},'
                f'"parent":{int(parent)}')

    def _step_json(self, type_: str, result: str | None, reason: str | None) -> str:
        key = (type_, result, reason)
        s = self._step_cache.get(key)
        if s is None:
            s = self._step_cache[key] = step_to_json(type_, result, reason)
        return s

    def _mutate_json(self, ts: str, child: int, type_: str, result: str | None,
                     reason: str | None, selected: bool) -> str:
        """A ``mutate`` event (``ts``: its time as JSON); the tail is cached per kind."""
        key = (type_, result, reason, bool(selected))
        tail = self._mutate_tail_cache.get(key)
        if tail is None:
            tail = self._mutate_tail_cache[key] = (
                f'"selected":{"true" if selected else "false"},'
                f'"mutation":{self._step_json(type_, result, reason)}}}')
        return f'{{"type":"mutate","time":{ts},"child":{int(child)},{tail}'

    def _time(self, t: float) -> str:
        # Every event of one engine call shares its clock read: format it once.
        last, s = self._time_cache
        if t != last:
            s = _float_repr(float(t))
            self._time_cache = (t, s)
        return s

    # ---- the stream ------------------------------------------------------------------------
    def feed(self, ops: Sequence[Any], codes: Any = b"", vals: Any = b"", lens: Any = b"",
             table_codes: Any = b"", table_vals: Any = b"", table_lens: Any = b"",
             slots: Any = b"") -> list[str]:
        """Apply one chunk of the event stream; returns the lines it completed, in order.

        ``codes`` / ``vals`` / ``lens`` are the chunk's trees (module docstring), as buffers
        (``bytes``, ``array``) or NumPy arrays. With ``slots`` (int64, one per tree the events
        name, in order), tree ``k`` is row ``slots[k]`` of the table ``table_codes`` /
        ``table_vals`` / ``table_lens`` (the same layout: the engine's evaluation batches), or
        the next of ``codes`` / ``vals`` / ``lens`` where ``slots[k] < 0``. Raises
        ``ValueError`` for a malformed chunk (unknown tag, unknown record or ref, cut event,
        trees that do not match the events).
        """
        try:
            printer = self._batch_printer()
            trees = printer.print_chunk(codes, vals, lens) if len(lens) else []
            if len(slots):
                trees = _with_table_rows(printer, trees, table_codes, table_vals, table_lens,
                                         slots)
            lines, used = self._feed(ops, trees)
        except (IndexError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed trace event stream: {exc!r}") from None
        if used != len(trees):
            raise ValueError(f"malformed trace event stream: {len(trees)} trees for {used} entries")
        return lines

    def _feed(self, ops: Sequence[Any], trees: list[str]) -> tuple[list[str], int]:
        # The writer's loop: one pass per event, the record's dicts held in locals.
        lines: list[str] = []
        records = self._records
        mutate_json, time_json = self._mutate_json, self._time
        cur_id: Any = None
        rec: _Record | None = None
        heads: dict[int, str] = {}
        events: dict[int, str | list[str]] = {}
        rtrees: dict[int, str] = {}
        k = 0  # the next tree of the chunk
        i, n = 0, len(ops)
        while i < n:
            tag, rid = ops[i], ops[i + 1]
            if rid != cur_id and tag != OP_BEGIN:
                rec = records[rid]
                cur_id, heads, events, rtrees = rid, rec.heads, rec.events, rec.trees
            if tag == OP_MUTATE_CHILD:
                (pref, cref, parent, cost, loss, same, t, type_, result, reason,
                 rref) = ops[i + 2:i + 13]
                i += 13
                if rref is not None and rref not in heads:
                    self._register_member(rec, rref)
                if pref not in heads:
                    self._register_member(rec, pref)
                if same:
                    tj = rtrees[pref]
                else:
                    tj = trees[k]
                    k += 1
                _register(rec, cref, tj, cost, loss, parent)
                ts = time_json(t)
                _add(events, pref, mutate_json(ts, cref, type_, result, reason, True))
                if rref is not None:
                    _death(events, heads, rref, ts)
                elif not events[cref]:
                    # A child the population did not take (a rejected move) has no further
                    # events: its entry is rendered now rather than when the record ends.
                    events[cref] = _seal(cref, heads[cref], "")
            elif tag == OP_MUTATE:
                pref, cref, selected, t, type_, result, reason = ops[i + 2:i + 9]
                i += 9
                _add(events, pref, mutate_json(time_json(t), cref, type_, result, reason, selected))
            elif tag == OP_ENTRY:
                ref, parent, cost, loss = ops[i + 2:i + 6]
                i += 6
                _register(rec, ref, trees[k], cost, loss, parent)
                k += 1
            elif tag == OP_ENTRY_AS:
                ref, parent, cost, loss, same = ops[i + 2:i + 7]
                i += 7
                # Always (re)written, as the general hooks send it once per ref and record.
                tj = rtrees[ref] = rtrees[same]
                heads[ref] = _head(tj, cost, loss, parent)
                events[ref] = ""
            elif tag == OP_DEATH:
                ref, t = ops[i + 2], ops[i + 3]
                i += 4
                _death(events, heads, ref, time_json(t))
            elif tag == OP_CROSSOVER_CHILDREN:
                (p1, p2, c1, c1p, c1c, c1l, c2, c2p, c2c, c2l, d1, d2, t,
                 details) = ops[i + 2:i + 16]
                i += 16
                for ref in (p1, p2):
                    if ref not in heads:
                        self._register_member(rec, ref)
                _register(rec, c1, trees[k], c1c, c1l, c1p)
                _register(rec, c2, trees[k + 1], c2c, c2l, c2p)
                k += 2
                for ref in (d1, d2):
                    if ref not in heads:
                        self._register_member(rec, ref)
                _crossover_events(events, heads, time_json(t), p1, p2, c1, c2, d1, d2, details)
            elif tag == OP_CROSSOVER:
                p1, p2, c1, c2, d1, d2, t, details = ops[i + 2:i + 10]
                i += 10
                _crossover_events(events, heads, time_json(t), p1, p2, c1, c2, d1, d2, details)
            elif tag == OP_TUNING:
                old_ref, new_ref, optimized, t = ops[i + 2:i + 6]
                i += 6
                kind = "simplification_and_optimization" if optimized else "simplification"
                ts = time_json(t)
                _add(events, old_ref, f'{{"type":"tuning","time":{ts},"child":{int(new_ref)},'
                                      f'"mutation":{{"type":"{kind}"}}}}')
                _death(events, heads, old_ref, ts)
            elif tag == OP_START_ENTRY:
                assert rec is not None
                if rec.start_fields is None:
                    rec.start_fields = dict(rec.member_fields)
                ref = ops[i + 2]
                i += 3
                if ref not in heads:
                    if ref not in rec.start_fields:
                        raise _unknown_ref(ref)
                    heads[ref] = rec.start_fields[ref]
                    rtrees[ref] = rec.member_trees[ref]
                    events[ref] = ""
            elif tag == OP_BEGIN:
                output, population, iteration, started_at, members = ops[i + 2:i + 7]
                i += 7
                if rid in records:
                    raise ValueError(f"trace record {rid} begun twice")
                m_trees = trees[k:k + len(members)]
                if len(m_trees) != len(members):
                    raise IndexError("fewer trees than members")
                k += len(members)
                records[rid] = self._begin(output, population, iteration, started_at, members,
                                           m_trees)
            elif tag == OP_END:
                i += 2
                assert rec is not None
                lines.append(self._finish(rec))
                del records[rid]
                cur_id = rec = None
            else:
                raise ValueError(f"unknown trace event tag {tag!r} at {i}")
        return lines, k

    def _begin(self, output: int, population: int, iteration: int, started_at: float,
               members: Sequence[Sequence[Any]], trees: Sequence[str]) -> _Record:
        head = (f'{{"schema_version":{TRACE_SCHEMA_VERSION},"record_type":"iteration",'
                f'"output":{int(output)},"population":{int(population)},'
                f'"iteration":{int(iteration)},"started_at":{_float_repr(float(started_at))},')
        rec = _Record(head, [(m[0], self.member_fields(m, tj)) for m, tj in zip(members, trees)])
        rec.member_trees = {m[0]: tj for m, tj in zip(members, trees)}
        # (ref, loss, cost, complexity, birth, parent): a ``mutations`` entry's fields
        rec.member_heads = {
            m[0]: f'"tree":{tj},"cost":{jfloat(m[2])},"loss":{jfloat(m[1])},"parent":{int(m[5])}'
            for m, tj in zip(members, trees)}
        return rec

    @staticmethod
    def _register_member(rec: _Record, ref: int) -> None:
        """Register a member of the record's start in ``mutations`` with its state then."""
        try:
            rec.heads[ref] = rec.member_heads[ref]
        except KeyError:
            raise _unknown_ref(ref) from None
        rec.trees[ref] = rec.member_trees[ref]
        rec.events[ref] = ""

    @staticmethod
    def _finish(rec: _Record) -> str:
        members_json = ",".join("{" + f + "}" for _, f in rec.member_fields)
        events = rec.events
        parts = []
        add = parts.append
        for ref, head in rec.heads.items():
            ev = events[ref]
            add(ev[1] if ev.__class__ is tuple else _entry(ref, head, ev))
        return f'{rec.head}"members":[{members_json}],"mutations":{{{",".join(parts)}}}}}'
