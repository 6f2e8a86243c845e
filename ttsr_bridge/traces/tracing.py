"""Search-trace writer: the Python mirror of SR.jl's ``src/evolution/Tracing.jl``.

The engine calls these hooks at the same decision points as SR.jl, and the file they produce is
the SR.jl v2 trace format (JSON Lines, ``schema_version: 1``):

* line 1, ``record_type: "search"``: ``started_at`` (unix time), ``options`` (a string dump);
* then one ``record_type: "iteration"`` line per (output, population, iteration) with the
  population at the start of the iteration (``members``) and every traced event of that
  iteration (``mutations``, an object keyed by ``str(ref)``).

SR.jl function  →  here

* ``initialize_trace!``          →  :class:`TraceWriter` (writes the ``search`` record on open)
* ``trace_iteration_start!``     →  :meth:`TraceWriter.iteration_start`
* ``trace_mutation_attempts!``   →  :meth:`IterationTrace.mutation_attempts`
* ``trace_crossover!``           →  :meth:`IterationTrace.crossover`
* ``trace_optimization!``        →  :meth:`IterationTrace.optimization`
* ``write_trace``                →  :meth:`TraceWriter.write`
* ``trace_mutation_type!`` / ``trace_mutation_result!`` / ``trace_identity_mutation!``
  →  the fields of :class:`MutationStepTrace` / :meth:`MutationStepTrace.identity`

Members are duck-typed: any object with ``tree`` (an :class:`~ttsr_bridge.expr.tree.Expr`),
``loss``, ``cost``, ``complexity``, ``birth``, ``ref`` and ``parent`` (the engine's ``PopMember``).

Speed: a traced search records one event per mutation, so the hooks only append plain values
(refs, floats, strings) to a flat event stream and the nodes of each new tree (its ``codes`` /
``vals``: trees are immutable values, docs/architecture.md §1) to flat machine arrays; printing
the trees (:func:`~ttsr_bridge.expr.printer.string_tree` form, one compiled pass per chunk:
:mod:`.tree_batch`) and JSON encoding happen in :class:`~.tracing_render.TraceRenderer`, by
default in a writer process that the search feeds chunks of the stream
(:mod:`.tracing_process`), so they run on another core. ``background=False`` renders in this
process instead (same bytes). Non-finite floats are
written as ``Infinity`` / ``-Infinity`` / ``NaN`` — what SR.jl's JSON3 writer emits with
``allow_inf=true``, and what Python's :mod:`json` reads by default.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from .records import TRACE_SCHEMA_VERSION
from .tracing_render import (
    OP_BEGIN,
    OP_CROSSOVER,
    OP_CROSSOVER_CHILDREN,
    OP_DEATH,
    OP_END,
    OP_ENTRY,
    OP_ENTRY_AS,
    OP_MUTATE,
    OP_MUTATE_CHILD,
    OP_START_ENTRY,
    OP_TUNING,
    TraceRenderer,
    _FastStringTree,
    render_search_line,
)

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "IterationTrace",
    "MutationStepTrace",
    "TraceWriter",
    "TracedMember",
]

# The fast printer lives with the renderer; importable from here as it always was.
_ = _FastStringTree

_DEFAULT_BUFFER_BYTES = 1 << 20
# Events are handed to the sink in chunks of about this many stream items (~100 mutations): a
# chunk keeps the trees of its children alive until it is sent, and up to a few hundred such
# lists the garbage collector never runs more often than in an untraced search.
_FLUSH_ITEMS = 16384
_time = time.time


class TracedMember(Protocol):
    """What the writer reads from a population member (the engine's ``PopMember``)."""

    tree: Any
    loss: float
    cost: float
    complexity: int
    birth: int
    ref: int
    parent: int


@dataclass(slots=True)
class MutationStepTrace:
    """The per-attempt mutation record SR.jl builds in ``tmp_trace``.

    ``type`` is SR.jl's mutation name (``mutate_constant``, ``add_node:append``, ``neural``,
    ...); ``result`` is ``"accept"`` / ``"reject"`` and ``reason`` SR.jl's reason string
    (``pass``, ``acceptance``, ``nan_loss``, ``failed_constraint_check``, ``identity``, ...).
    SR.jl leaves ``result`` and ``reason`` unset for mutations that return immediately
    (``simplify``, ``optimize``); ``None`` here omits them from the file the same way.
    Mutable on purpose: like SR.jl's dict, the engine may fill the type first and the result
    once the child is judged (the fields are read when the step is passed to a hook).
    """

    type: str
    result: str | None = None
    reason: str | None = None

    @classmethod
    def identity(cls) -> MutationStepTrace:
        """SR.jl's ``trace_identity_mutation!`` (the ``DoNothingMutation`` record)."""
        return cls("identity", "accept", "identity")

    def to_json(self) -> dict[str, str]:
        d = {"type": self.type}
        if self.result is not None:
            d["result"] = self.result
        if self.reason is not None:
            d["reason"] = self.reason
        return d


class TraceWriter:
    """Writes one search's trace file (JSON Lines) — SR.jl's ``initialize_trace!`` + ``write_trace``.

    ``options_string`` is the ``options`` field of the ``search`` record (SR.jl writes
    ``string(options)``; any readable dump of the config), written (and flushed) on open; an
    unwritable path raises here. Call :meth:`close` (or use the writer as a context manager):
    it waits until every written iteration is in the file, and raises
    :class:`~.tracing_process.TraceWriterError` if the writer process failed.

    ``background=True`` renders in a writer process (on another core); ``False`` in this
    process; ``None`` (what ``equation_search(trace=...)`` uses) reads ``TTSR_TRACE_WRITER``
    (``process`` / ``inline``) and otherwise takes the process on POSIX. The bytes are the same
    either way. ``compress=True`` writes the file gzip-compressed (level 1: about a ninth of
    the size, for about a tenth more writer CPU); ``None``: when ``path`` ends in ``.gz``. The
    reader reads both. Trees must not be mutated in place once traced (they are values, as the
    engine treats them): they are printed after the hook returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        options_string: str,
        *,
        buffer_bytes: int = _DEFAULT_BUFFER_BYTES,
        background: bool | None = None,
        compress: bool | None = None,
    ) -> None:
        from .tracing_process import GZIP_LEVEL, InlineSink, open_sink

        self.path = Path(path)
        self._details_cache: dict[tuple[tuple[str, Any], ...], str] = {}
        self._renderer: TraceRenderer | None = None  # for tree_string() here
        self.compress = self.path.suffix == ".gz" if compress is None else bool(compress)
        search_line: str | bytes = render_search_line(options_string, time.time()) + "\n"
        # The sink owns the file (closed below only if the sink never took it).
        file: IO[Any]
        if self.compress:  # unbuffered: the buffer is above the compressor
            file = open(self.path, "wb", buffering=0)  # noqa: SIM115
            # A gzip member of its own, complete on disk before the search starts; the records
            # follow as a second member.
            search_line = gzip.compress(search_line.encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)
        else:
            file = open(self.path, "w", encoding="utf-8", buffering=buffer_bytes)  # noqa: SIM115
        try:
            file.write(search_line)
            file.flush()
            self._sink = open_sink(file, buffer_bytes, background, self.compress)
        except BaseException:
            file.close()
            raise
        self.background = not isinstance(self._sink, InlineSink)
        self.lines_written = 1
        # The event stream not yet handed to the sink (tracing_render's layout); every open
        # IterationTrace appends to this one list, one slot per tree it names to ``_slots``
        # (a tree table's row, or -1), and the trees named by reference (trees are values) to
        # ``_trees``; a flush packs their nodes into flat machine arrays in one pass
        # (``struct.pack`` is the cheapest conversion there is).
        self._ops: list[Any] = []
        self._slots: list[int] = []
        self._trees: list[Any] = []
        self._next_id = 0
        # Tree tables (:meth:`tree_table`): (first row id, codes, vals, lengths) registered
        # since the last flush, the last one carried over (its rows may still be named).
        self._tables: list[tuple[int, Any, Any, Any]] = []
        self._rows = 0  # row ids handed out so far

    # ---- context manager -------------------------------------------------------------------
    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._sink.closed

    # ---- SR.jl hooks -----------------------------------------------------------------------
    def iteration_start(
        self, out: int, pop: int, iteration: int, members: Sequence[TracedMember]
    ) -> IterationTrace:
        """SR.jl ``trace_iteration_start!``: a new iteration record with ``members`` dumped now.

        ``out`` and ``pop`` are written as given (SR.jl's are 1-based Julia indices).
        """
        if self._sink.closed:
            raise ValueError("iteration_start on a closed TraceWriter")
        rid = self._next_id
        self._next_id += 1
        return IterationTrace(self, rid, int(out), int(pop), int(iteration), members)

    def write(self, it: IterationTrace, *, flush: bool = True) -> None:
        """SR.jl ``write_trace``: append the iteration as one JSON line.

        The line reaches the file asynchronously (in order); :meth:`close` waits for it.
        ``flush=False`` leaves it to the next :meth:`flush` (the engine ends all populations'
        records, then flushes once).
        """
        if self._sink.closed:
            raise ValueError("write to a closed TraceWriter")
        if it._writer is not self or it._ended:
            raise ValueError("write of an iteration trace that is not open in this writer")
        it._ended = True
        self._ops += (OP_END, it.id)
        if flush:
            self.flush()
        self.lines_written += 1

    def tree_table(self, codes: Any, vals: Any, lengths: Any) -> int:
        """Register trees already packed as flat arrays (the engine's evaluation batch:
        :class:`~ttsr_bridge.expr.evaluate.PackedExprs` ``codes`` int64, ``vals`` float64 laid
        end to end, tree ``i`` of ``lengths[i]`` nodes, int64); returns the row id of tree 0. A
        compact hook given ``tree_at=id + i`` sends that row instead of packing the child's
        tree again: the writer copies the arrays, which must not change afterwards."""
        rid = self._rows
        self._rows += len(lengths)
        self._tables.append((rid, codes, vals, lengths))
        return rid

    def flush(self) -> None:
        """Hand the recorded events to the sink (the engine's hooks call this as needed)."""
        if self._ops:
            try:
                self._sink.send(self._ops, *_pack_trees(self._trees, self._slots, self._tables))
            finally:
                # Cleared in place (the hooks hold these objects): a sink is done with a chunk
                # when ``send`` returns.
                self._ops.clear()
                self._slots.clear()
                self._trees.clear()
                del self._tables[:-1]

    def close(self) -> None:
        """Wait for every written line to reach the file, then close it (idempotent).

        Iterations begun but never written are left out, as SR.jl writes only on
        ``write_trace``.
        """
        self._ops.clear()
        self._slots.clear()
        self._trees.clear()
        self._tables.clear()
        self._sink.close()

    def abort(self) -> None:
        """Stop now: iterations still being written may be lost or cut (a truncated last line,
        which readers skip). For a process being torn down; :meth:`close` is the normal end."""
        self._sink.abort()

    # ---- helpers ---------------------------------------------------------------------------
    @property
    def renderer(self) -> TraceRenderer:
        """A renderer in this process, for inspection (the sink has its own)."""
        if self._renderer is None:
            self._renderer = TraceRenderer()
        return self._renderer

    def tree_string(self, member: TracedMember) -> str:
        """``string_tree(member.tree)`` with ``x1..`` names (the text in the file)."""
        tree = member.tree
        return json.loads(self.renderer.tree_json(tree.codes, tree.vals))

    def details_json(self, details: dict[str, Any] | MutationStepTrace) -> str:
        """A crossover's ``details`` as JSON (``type`` defaults to SR.jl's ``subtree_crossover``)."""
        if isinstance(details, MutationStepTrace):
            key: tuple[Any, ...] = (MutationStepTrace, details.type, details.result,
                                    details.reason)
        else:
            key = tuple(details.items())  # in order: the JSON keeps the caller's order
        try:
            s = self._details_cache.get(key)
        except TypeError:  # unhashable values: not cached
            return self._details_to_json(details)
        if s is None:
            s = self._details_cache[key] = self._details_to_json(details)
        return s

    @staticmethod
    def _details_to_json(details: dict[str, Any] | MutationStepTrace) -> str:
        d = details.to_json() if isinstance(details, MutationStepTrace) else dict(details)
        d.setdefault("type", "subtree_crossover")  # SR.jl's crossover always names its kind
        return json.dumps(d, separators=(",", ":"))


def _pack_trees(trees: list[Any], slots: list[int],
                tables: list[tuple[int, Any, Any, Any]]) -> tuple[bytes, ...]:
    """The chunk's trees as machine arrays: (codes int64, vals float64, lengths int64) of the
    ``trees`` sent by reference, and — when some ``slots`` are rows of tree tables — the
    tables' (codes int16 where they fit else int64, the constants' vals, lengths) and the slots
    (int64 per tree named: its table row, or -1 for the next tree sent by reference)."""
    table: tuple[bytes, ...] = ()
    if len(slots) != len(trees):  # some trees are table rows
        ids = np.array(slots, np.int64)
        named = ids >= 0
        ids[named] -= tables[0][0] if tables else 0
        if not tables or int(ids[named].min()) < 0:
            raise ValueError("a trace event names a row of a tree table no longer held")
        table = _pack_tables(tables) + (ids.tobytes(),)
    codes = [t.codes for t in trees]
    lens = [len(c) for c in codes]
    n = sum(lens)
    return (struct.pack(f"{n}q", *chain.from_iterable(codes)),
            struct.pack(f"{n}d", *chain.from_iterable([t.vals for t in trees])),
            struct.pack(f"{len(lens)}q", *lens), *table)


def _pack_tables(tables: list[tuple[int, Any, Any, Any]]) -> tuple[bytes, bytes, bytes]:
    """The tables' trees laid end to end: (codes, constants' vals, lengths), compact on the wire
    (a quarter of the bytes): codes as int16 when they fit, and only the constants' values (a
    node's value is read only where its code is 0)."""
    codes = np.concatenate([t[1] for t in tables])
    vals = np.concatenate([t[2] for t in tables])
    lens = np.concatenate([t[3] for t in tables])
    if len(codes) and -32768 <= int(codes.min()) and int(codes.max()) <= 32767:
        wire = codes.astype(np.int16)
    else:
        wire = codes
    return wire.tobytes(), vals[codes == 0].tobytes(), lens.tobytes()


class IterationTrace:
    """One ``iteration`` record being built (SR.jl's per-iteration ``trace`` dict).

    The hooks append the events to the writer's event stream (:mod:`.tracing_render` describes
    its flat layout) and the trees they name to the writer's slot and tree lists (a row of a
    tree table, or the tree itself); the writer hands them to its sink in chunks, the trees
    packed into flat arrays. Flat because recording must be cheap: one ``list += tuple`` per
    event and a list append or two per new tree allocate no object that outlives the call
    (small tuples per event made garbage collection the largest cost of tracing), and the trees
    travel as machine arrays that the writer prints in one compiled pass.
    """

    __slots__ = ("_ended", "_ops", "_seen", "_slot", "_slots_extend", "_tree", "_writer", "id",
                 "iteration", "output", "population", "started_at")

    def __init__(
        self, writer: TraceWriter, rid: int, output: int, population: int, iteration: int,
        members: Sequence[TracedMember],
    ) -> None:
        self._writer = writer
        self.id = rid
        self.output = output
        self.population = population
        self.iteration = iteration
        self.started_at = time.time()
        self._ended = False
        self._ops = writer._ops
        self._slot = writer._slots.append
        self._slots_extend = writer._slots.extend
        self._tree = writer._trees.append
        # The population at the start, in order, as its state is now.
        dump = []
        for m in members:
            self._tree(m.tree)
            dump.append((m.ref, m.loss, m.cost, m.complexity, m.birth, m.parent))
        writer._slots += (-1,) * len(dump)
        self._ops += (OP_BEGIN, rid, output, population, iteration, self.started_at, dump)
        # Refs the general hooks sent an entry for in this iteration (first state wins, as
        # SR.jl: the renderer registers a ref once). The compact hooks keep no such set: the
        # renderer registers what they name (a set add per child was a tenth of tracing's cost).
        self._seen: set[int] = set()

    def _entry(self, m: TracedMember) -> None:
        # OP_ENTRY: the ref's first state in this record (the caller checked ``_seen``).
        self._slot(-1)
        self._tree(m.tree)
        self._ops += (OP_ENTRY, self.id, m.ref, m.parent, m.cost, m.loss)

    # ---- SR.jl hooks -----------------------------------------------------------------------
    # ---- the engine's compact hooks ---------------------------------------------------------
    # The parents and replaced members they name must be members at the iteration's start or
    # children traced earlier in this record (the engine's invariant: events never cross
    # populations within an iteration, and a member's state is fixed per ref); the renderer
    # takes their entries from ``members``, so these hooks send only the new children.
    def mutation(
        self, parent: TracedMember, child: TracedMember, type_: str, result: str | None,
        reason: str | None, replaced: TracedMember | None, t: float | None = None,
        tree_at: int = -1,
    ) -> None:
        """One attempt kept (``mutation_attempts([(parent, child, step)], replaced, 1)``), the
        engine's every mutation, as one compact event (``OP_MUTATE_CHILD``). ``t`` is the
        event's time (default: now; the engine passes one clock read per lockstep step);
        ``tree_at``, the row of :meth:`TraceWriter.tree_table` that holds the child's tree."""
        tree = child.tree
        same = tree is parent.tree  # a rejected or identity move: the tree is not sent again
        if not same:
            if tree_at < 0:
                self._slot(-1)
                self._tree(tree)
            else:
                self._slot(tree_at)
        ops = self._ops
        ops += (OP_MUTATE_CHILD, self.id, parent.ref, child.ref, child.parent, child.cost,
                child.loss, same, _time() if t is None else t, type_, result, reason,
                None if replaced is None else replaced.ref)
        if len(ops) >= _FLUSH_ITEMS:
            self._writer.flush()

    def crossover_pair(
        self, parent1: TracedMember, parent2: TracedMember, child1: TracedMember,
        child2: TracedMember, replaced1: TracedMember, replaced2: TracedMember,
        details: dict[str, Any] | MutationStepTrace | str, t: float | None = None,
        tree_at: int = -1,
    ) -> None:
        """:meth:`crossover` as one compact event (``OP_CROSSOVER_CHILDREN``); ``details`` may
        also be :meth:`TraceWriter.details_json`'s text; ``t`` as in :meth:`mutation`;
        ``tree_at``: the rows of the children's trees are ``tree_at`` and ``tree_at + 1``."""
        if tree_at < 0:
            self._slots_extend((-1, -1))
            self._tree(child1.tree)
            self._tree(child2.tree)
        else:
            self._slots_extend((tree_at, tree_at + 1))
        ops = self._ops
        ops += (OP_CROSSOVER_CHILDREN, self.id, parent1.ref, parent2.ref, child1.ref,
                child1.parent, child1.cost, child1.loss, child2.ref, child2.parent, child2.cost,
                child2.loss, replaced1.ref, replaced2.ref, _time() if t is None else t,
                details if details.__class__ is str else self._writer.details_json(details))
        if len(ops) >= _FLUSH_ITEMS:
            self._writer.flush()

    # ---- SR.jl hooks (any members) ---------------------------------------------------------
    def mutation_attempts(
        self,
        steps: Sequence[tuple[TracedMember, TracedMember, MutationStepTrace]],
        replaced: TracedMember | None,
        selected_idx: int,
    ) -> None:
        """SR.jl ``trace_mutation_attempts!``: one ``mutate`` event per attempt, on its parent.

        ``steps`` are ``(parent, child, step_trace)`` per attempt (SR.jl's traced steps; the
        plugin middleware may run several). ``selected_idx`` is the 1-based index of the attempt
        that was kept, as SR.jl's ``selected_attempt_idx``. ``replaced`` is the member that the
        kept child replaces (``None`` when the result is skipped); it gets a ``death`` event.
        """
        seen = self._seen
        ops = self._ops
        rid = self.id
        now = _time()
        if replaced is not None:
            rref = replaced.ref
            if rref not in seen:
                seen.add(rref)
                self._entry(replaced)
        idx = 0
        for parent, child, step in steps:
            idx += 1
            pref = parent.ref
            if pref not in seen:
                seen.add(pref)
                self._entry(parent)
            cref = child.ref
            if cref not in seen:
                seen.add(cref)
                if child.tree is parent.tree:
                    ops += (OP_ENTRY_AS, rid, cref, child.parent, child.cost, child.loss, pref)
                else:
                    self._entry(child)
            ops += (OP_MUTATE, rid, pref, cref, idx == selected_idx, now, step.type,
                    step.result, step.reason)
        if replaced is not None:
            ops += (OP_DEATH, rid, rref, now)
        if len(ops) >= _FLUSH_ITEMS:
            self._writer.flush()

    def crossover(
        self,
        parent1: TracedMember,
        parent2: TracedMember,
        child1: TracedMember,
        child2: TracedMember,
        replaced1: TracedMember,
        replaced2: TracedMember,
        details: dict[str, Any] | MutationStepTrace,
    ) -> None:
        """SR.jl ``trace_crossover!``: the event goes on both parents, ``death`` on the replaced.

        ``details`` is SR.jl's crossover trace (``{"type": "subtree_crossover", "result": ...,
        "reason": ...}``); a :class:`MutationStepTrace` is accepted too.
        """
        seen = self._seen
        ops = self._ops
        for m in (parent1, parent2, child1, child2, replaced1, replaced2):
            ref = m.ref
            if ref not in seen:
                seen.add(ref)
                self._entry(m)
        ops += (OP_CROSSOVER, self.id, parent1.ref, parent2.ref, child1.ref, child2.ref,
                replaced1.ref, replaced2.ref, _time(), self._writer.details_json(details))
        if len(ops) >= _FLUSH_ITEMS:
            self._writer.flush()

    def optimization(
        self, member: TracedMember, old_ref: int, new_ref: int, optimized: bool
    ) -> None:
        """SR.jl ``trace_optimization!``: a ``tuning`` + ``death`` event on the old member.

        ``member`` is the tuned member (carrying ``new_ref``); ``optimized`` says whether its
        constants were optimised (SR.jl also requires ``should_optimize_constants``: the engine
        passes ``False`` when that option is off). ``old_ref`` must be traced earlier in this
        record or be a member at its start: otherwise rendering fails with an error naming it
        (inline: ``ValueError`` when the chunk is flushed; a writer process:
        :class:`~.tracing_process.TraceWriterError`, at the latest in ``close``).
        """
        seen = self._seen
        ops = self._ops
        rid = self.id
        ref = member.ref
        if ref not in seen:
            seen.add(ref)
            self._entry(member)
        if old_ref not in seen:
            # Unless an event of this record registered it, a member of the iteration's start,
            # with its fields there (SR.jl copies its members dump); the renderer checks that.
            seen.add(old_ref)
            ops += (OP_START_ENTRY, rid, old_ref)
        ops += (OP_TUNING, rid, old_ref, new_ref, bool(optimized), _time())
        if len(ops) >= _FLUSH_ITEMS:
            self._writer.flush()
