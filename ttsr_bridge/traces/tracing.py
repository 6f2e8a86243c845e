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
Trees are printed with :func:`ttsr_bridge.expr.printer.string_tree` (``x1..xn``, Julia floats),
and each member's string is cached by ``ref`` so that a member printed once is never printed
again. Non-finite floats are written as ``Infinity`` / ``-Infinity`` / ``NaN`` — what SR.jl's
JSON3 writer emits with ``allow_inf=true``, and what Python's :mod:`json` reads by default.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .records import TRACE_SCHEMA_VERSION

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "MutationStepTrace",
    "TracedMember",
    "TraceWriter",
    "IterationTrace",
]


# The tree-string cache is cleared when it grows past this many refs; a population's members
# are re-printed at most once after a clear, so the bound only costs a little throughput.
_TREE_CACHE_LIMIT = 200_000

_DEFAULT_BUFFER_BYTES = 1 << 20


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
    once the child is judged.
    """

    type: str
    result: str | None = None
    reason: str | None = None

    @classmethod
    def identity(cls) -> "MutationStepTrace":
        """SR.jl's ``trace_identity_mutation!`` (the ``DoNothingMutation`` record)."""
        return cls("identity", "accept", "identity")

    def to_json(self) -> dict[str, str]:
        d = {"type": self.type}
        if self.result is not None:
            d["result"] = self.result
        if self.reason is not None:
            d["reason"] = self.reason
        return d


def _load_string_tree() -> Callable[..., str]:
    # Imported on first use: the printer is an independent module and a search that does not
    # trace must not depend on it.
    from ..expr.printer import string_tree

    return string_tree


class TraceWriter:
    """Writes one search's trace file (JSON Lines) — SR.jl's ``initialize_trace!`` + ``write_trace``.

    ``options_string`` is the ``options`` field of the ``search`` record (SR.jl writes
    ``string(options)``; any readable dump of the config). Lines are buffered; call
    :meth:`close` (or use the writer as a context manager) to flush them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        options_string: str,
        *,
        buffer_bytes: int = _DEFAULT_BUFFER_BYTES,
    ) -> None:
        self.path = Path(path)
        self._string_tree = _load_string_tree()
        self._tree_cache: dict[int, tuple[Any, str]] = {}
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
        self._file = open(self.path, "w", encoding="utf-8", buffering=buffer_bytes)
        self.lines_written = 0
        self._emit(
            {
                "schema_version": TRACE_SCHEMA_VERSION,
                "record_type": "search",
                "started_at": time.time(),
                "options": str(options_string),
            }
        )

    # ---- context manager -------------------------------------------------------------------
    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    # ---- SR.jl hooks -----------------------------------------------------------------------
    def iteration_start(
        self, out: int, pop: int, iteration: int, members: Sequence[TracedMember]
    ) -> "IterationTrace":
        """SR.jl ``trace_iteration_start!``: a new iteration record with ``members`` dumped now.

        ``out`` and ``pop`` are written as given (SR.jl's are 1-based Julia indices).
        """
        dumped = [self.member_json(m) for m in members]
        return IterationTrace(self, int(out), int(pop), int(iteration), dumped)

    def write(self, it: "IterationTrace") -> None:
        """SR.jl ``write_trace``: append the iteration as one JSON line."""
        self._emit(it.to_json())

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    # ---- helpers ---------------------------------------------------------------------------
    def tree_string(self, member: TracedMember) -> str:
        """``string_tree(member.tree)`` (x1.. names), cached by ``ref``.

        The cache entry also keeps the tree object, so a member whose tree was replaced under
        the same ref (trees are values, so this should not happen) is re-printed, not misprinted.
        """
        ref = member.ref
        tree = member.tree
        hit = self._tree_cache.get(ref)
        if hit is not None and hit[0] is tree:
            return hit[1]
        s = self._string_tree(tree)
        if len(self._tree_cache) >= _TREE_CACHE_LIMIT:
            self._tree_cache.clear()
        self._tree_cache[ref] = (tree, s)
        return s

    def member_json(self, m: TracedMember) -> dict[str, Any]:
        """A ``members`` entry: ``{tree, loss, cost, complexity, birth, ref, parent}``."""
        return {
            "tree": self.tree_string(m),
            "loss": float(m.loss),
            "cost": float(m.cost),
            "complexity": int(m.complexity),
            "birth": int(m.birth),
            "ref": int(m.ref),
            "parent": int(m.parent),
        }

    def _emit(self, record: dict[str, Any]) -> None:
        self._file.write(self._encoder.encode(record))
        self._file.write("\n")
        self.lines_written += 1


class IterationTrace:
    """One ``iteration`` record being built (SR.jl's per-iteration ``trace`` dict)."""

    __slots__ = ("_writer", "output", "population", "iteration", "started_at", "members",
                 "mutations", "_members_by_ref")

    def __init__(
        self, writer: TraceWriter, output: int, population: int, iteration: int,
        members: list[dict[str, Any]],
    ) -> None:
        self._writer = writer
        self.output = output
        self.population = population
        self.iteration = iteration
        self.started_at = time.time()
        self.members = members
        self.mutations: dict[str, dict[str, Any]] = {}
        self._members_by_ref: dict[int, dict[str, Any]] | None = None

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
        entry = self._entry
        if replaced is not None:
            entry(replaced)
        for parent, child, _ in steps:
            entry(parent)
            entry(child)
        for attempt_idx, (parent, child, step_trace) in enumerate(steps, start=1):
            self.mutations[str(parent.ref)]["events"].append(
                {
                    "type": "mutate",
                    "time": time.time(),
                    "child": int(child.ref),
                    "selected": attempt_idx == selected_idx,
                    "mutation": step_trace.to_json(),
                }
            )
        if replaced is not None:
            self.mutations[str(replaced.ref)]["events"].append(
                {"type": "death", "time": time.time()}
            )

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
        for m in (parent1, parent2, child1, child2, replaced1, replaced2):
            self._entry(m)
        if isinstance(details, MutationStepTrace):
            details = details.to_json()
        event = {
            "type": "crossover",
            "time": time.time(),
            "parent1": int(parent1.ref),
            "parent2": int(parent2.ref),
            "child1": int(child1.ref),
            "child2": int(child2.ref),
            "details": dict(details),
        }
        # SR.jl pushes the same event object on both parents.
        self.mutations[str(parent1.ref)]["events"].append(event)
        self.mutations[str(parent2.ref)]["events"].append(event)
        now = time.time()
        self.mutations[str(replaced1.ref)]["events"].append({"type": "death", "time": now})
        self.mutations[str(replaced2.ref)]["events"].append({"type": "death", "time": now})

    def optimization(
        self, member: TracedMember, old_ref: int, new_ref: int, optimized: bool
    ) -> None:
        """SR.jl ``trace_optimization!``: a ``tuning`` + ``death`` event on the old member.

        ``member`` is the tuned member (carrying ``new_ref``); ``optimized`` says whether its
        constants were optimised (SR.jl also requires ``should_optimize_constants``: the engine
        passes ``False`` when that option is off).
        """
        self._entry(member)
        mutation_type = "simplification_and_optimization" if optimized else "simplification"
        now = time.time()
        tuning = {
            "type": "tuning",
            "time": now,
            "child": int(new_ref),
            "mutation": {"type": mutation_type},
        }
        key = str(old_ref)
        old_entry = self.mutations.get(key)
        if old_entry is None:
            old_entry = self._entry_from_members(int(old_ref))
            self.mutations[key] = old_entry
        old_entry["events"].append(tuning)
        old_entry["events"].append({"type": "death", "time": now})

    # ---- record ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The ``iteration`` record as a JSON-ready dict (fields in SR.jl's order)."""
        return {
            "schema_version": TRACE_SCHEMA_VERSION,
            "record_type": "iteration",
            "output": self.output,
            "population": self.population,
            "iteration": self.iteration,
            "started_at": self.started_at,
            "members": self.members,
            "mutations": self.mutations,
        }

    # ---- helpers ---------------------------------------------------------------------------
    def _entry(self, m: TracedMember) -> None:
        """SR.jl ``_trace_member!``: register ``m`` in ``mutations`` once (first state wins)."""
        key = str(m.ref)
        if key not in self.mutations:
            self.mutations[key] = {
                "events": [],
                "tree": self._writer.tree_string(m),
                "cost": float(m.cost),
                "loss": float(m.loss),
                "parent": int(m.parent),
            }

    def _entry_from_members(self, ref: int) -> dict[str, Any]:
        """An entry for a member known only from the iteration's start (SR.jl copies it)."""
        if self._members_by_ref is None:
            self._members_by_ref = {m["ref"]: m for m in self.members}
        found = self._members_by_ref.get(ref)
        if found is None:
            raise KeyError(
                f"trace_optimization: ref {ref} is neither traced in this iteration nor a member "
                "at its start"
            )
        entry = dict(found)
        entry["events"] = []
        return entry
