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

Speed: a traced search records one event per mutation, so the hooks only append small tuples
of plain values (refs, the tree's ``codes`` / ``vals`` lists — trees are immutable values,
docs/architecture.md §1 —, floats, strings) to the iteration; printing trees
(:func:`~ttsr_bridge.expr.printer.string_tree` form) and JSON encoding happen in
:class:`~.tracing_render.TraceRenderer`, by default in a writer process that the search feeds
one :mod:`marshal`-ed batch per ``write`` (:mod:`.tracing_process`), so they run on another
core. ``background=False`` renders in this process instead (same bytes). Non-finite floats are
written as ``Infinity`` / ``-Infinity`` / ``NaN`` — what SR.jl's JSON3 writer emits with
``allow_inf=true``, and what Python's :mod:`json` reads by default.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .records import TRACE_SCHEMA_VERSION
from .tracing_render import (
    OP_CROSSOVER,
    OP_DEATH,
    OP_ENTRY,
    OP_MUTATE,
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

# Re-exported for the printer-equality test (the class lives with the renderer).
_ = _FastStringTree

_DEFAULT_BUFFER_BYTES = 1 << 20
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

    ``background=True`` (the default where the platform allows it) renders in a writer process;
    ``False`` renders in this process. The bytes are the same either way.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        options_string: str,
        *,
        buffer_bytes: int = _DEFAULT_BUFFER_BYTES,
        background: bool | None = None,
    ) -> None:
        from .tracing_process import InlineSink, open_sink

        self.path = Path(path)
        self._details_cache: dict[tuple[tuple[str, Any], ...], str] = {}
        self._renderer: TraceRenderer | None = None  # for render() / tree_string() here
        file = open(self.path, "w", encoding="utf-8", buffering=buffer_bytes)
        try:
            file.write(render_search_line(options_string, time.time()))
            file.write("\n")
            file.flush()
            self._sink = open_sink(file, buffer_bytes, background)
        except BaseException:
            file.close()
            raise
        self.background = not isinstance(self._sink, InlineSink)
        self.lines_written = 1

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
        return IterationTrace(self, int(out), int(pop), int(iteration), members)

    def write(self, it: IterationTrace) -> None:
        """SR.jl ``write_trace``: append the iteration as one JSON line.

        The line reaches the file asynchronously (in order); :meth:`close` waits for it.
        """
        if self._sink.closed:
            raise ValueError("write to a closed TraceWriter")
        self._sink.send(it.batch())
        self.lines_written += 1

    def close(self) -> None:
        """Wait for every written line to reach the file, then close it (idempotent)."""
        self._sink.close()

    def abort(self) -> None:
        """Stop now: iterations still being written may be lost or cut (a truncated last line,
        which readers skip). For a process being torn down; :meth:`close` is the normal end."""
        self._sink.abort()

    # ---- helpers ---------------------------------------------------------------------------
    @property
    def renderer(self) -> TraceRenderer:
        """A renderer in this process (for :meth:`IterationTrace.render` and inspection)."""
        if self._renderer is None:
            self._renderer = TraceRenderer()
        return self._renderer

    def tree_string(self, member: TracedMember) -> str:
        """``string_tree(member.tree)`` with ``x1..`` names (the text in the file)."""
        tree = member.tree
        return json.loads(self.renderer.tree_json(tree.codes, tree.vals))

    def details_json(self, details: dict[str, Any] | MutationStepTrace) -> str:
        """A crossover's ``details`` as JSON (``type`` defaults to SR.jl's ``subtree_crossover``)."""
        d = details.to_json() if isinstance(details, MutationStepTrace) else dict(details)
        d.setdefault("type", "subtree_crossover")  # SR.jl's crossover always names its kind
        try:
            key = tuple(sorted(d.items()))
            s = self._details_cache.get(key)
        except TypeError:  # unhashable values: not cached
            return json.dumps(d, separators=(",", ":"))
        if s is None:
            s = self._details_cache[key] = json.dumps(d, separators=(",", ":"))
        return s


def _entry_op(m: TracedMember) -> tuple[Any, ...]:
    """The ``mutations`` entry of ``m`` as its state is now (SR.jl ``_trace_member!``)."""
    t = m.tree
    return (OP_ENTRY, m.ref, t.codes, t.vals, m.cost, m.loss, m.parent)


class IterationTrace:
    """One ``iteration`` record being built (SR.jl's per-iteration ``trace`` dict).

    Holds the population at the start and the iteration's events as compact tuples
    (:mod:`.tracing_render` describes them); :meth:`render` gives the JSON line.
    """

    __slots__ = (
        "_members",
        "_ops",
        "_seen",
        "_start_refs",
        "_writer",
        "iteration",
        "output",
        "population",
        "started_at",
    )

    def __init__(
        self, writer: TraceWriter, output: int, population: int, iteration: int,
        members: Sequence[TracedMember],
    ) -> None:
        self._writer = writer
        self.output = output
        self.population = population
        self.iteration = iteration
        self.started_at = time.time()
        # The population at the start, in order, as its state is now.
        self._members = [
            (m.ref, m.tree.codes, m.tree.vals, m.loss, m.cost, m.complexity, m.birth, m.parent)
            for m in members
        ]
        self._ops: list[tuple[Any, ...]] = []
        # Refs with a ``mutations`` entry in this iteration (first state wins, as SR.jl).
        self._seen: set[int] = set()
        self._start_refs: set[int] | None = None

    # ---- SR.jl hooks -----------------------------------------------------------------------
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
        # Hot path (one call per mutation): one clock read, set lookups and tuple appends only.
        seen = self._seen
        append = self._ops.append
        now = _time()
        if replaced is not None:
            rref = replaced.ref
            if rref not in seen:
                seen.add(rref)
                t = replaced.tree
                append((OP_ENTRY, rref, t.codes, t.vals, replaced.cost, replaced.loss,
                        replaced.parent))
        idx = 0
        for parent, child, step in steps:
            idx += 1
            pref = parent.ref
            if pref not in seen:
                seen.add(pref)
                t = parent.tree
                append((OP_ENTRY, pref, t.codes, t.vals, parent.cost, parent.loss, parent.parent))
            cref = child.ref
            if cref not in seen:
                seen.add(cref)
                t = child.tree
                append((OP_ENTRY, cref, t.codes, t.vals, child.cost, child.loss, child.parent))
            append((OP_MUTATE, pref, cref, idx == selected_idx, now, step.type, step.result,
                    step.reason))
        if replaced is not None:
            append((OP_DEATH, rref, now))

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
        for m in (parent1, parent2, child1, child2, replaced1, replaced2):
            if m.ref not in seen:
                seen.add(m.ref)
                self._ops.append(_entry_op(m))
        self._ops.append((OP_CROSSOVER, parent1.ref, parent2.ref, child1.ref, child2.ref, _time(),
                          self._writer.details_json(details), replaced1.ref, replaced2.ref))

    def optimization(
        self, member: TracedMember, old_ref: int, new_ref: int, optimized: bool
    ) -> None:
        """SR.jl ``trace_optimization!``: a ``tuning`` + ``death`` event on the old member.

        ``member`` is the tuned member (carrying ``new_ref``); ``optimized`` says whether its
        constants were optimised (SR.jl also requires ``should_optimize_constants``: the engine
        passes ``False`` when that option is off).
        """
        seen = self._seen
        if member.ref not in seen:
            seen.add(member.ref)
            self._ops.append(_entry_op(member))
        if old_ref not in seen:
            # Known only from the iteration's start: SR.jl copies its members dump.
            if self._start_refs is None:
                self._start_refs = {m[0] for m in self._members}
            if old_ref not in self._start_refs:
                raise KeyError(
                    f"trace_optimization: ref {old_ref} is neither traced in this iteration nor "
                    "a member at its start"
                )
            seen.add(old_ref)
            self._ops.append((OP_START_ENTRY, old_ref))
        self._ops.append((OP_TUNING, old_ref, new_ref, _time(), bool(optimized)))

    # ---- record ----------------------------------------------------------------------------
    def batch(self) -> tuple[Any, ...]:
        """The iteration as a batch of plain values (see :mod:`.tracing_render`)."""
        return (self.output, self.population, self.iteration, self.started_at, self._members,
                self._ops)

    def render(self) -> str:
        """The ``iteration`` record as one line of JSON (SR.jl's fields)."""
        return self._writer.renderer.render(self.batch())

    def to_json(self) -> dict[str, Any]:
        """The record as a parsed dict (for inspection)."""
        return json.loads(self.render())
