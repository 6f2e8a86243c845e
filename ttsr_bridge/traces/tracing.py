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
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Protocol

from .records import TRACE_SCHEMA_VERSION

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "IterationTrace",
    "MutationStepTrace",
    "TraceWriter",
    "TracedMember",
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

    def __call__(self, expr: Any) -> str:
        codes, vals = expr.codes, expr.vals
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
                    if v != 0.0 and v == v:
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
                    return self._string_tree(expr)
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
            return self._string_tree(expr)  # malformed: let string_tree raise its error
        s = stack[0]
        return s[1:-1] if s[0] == "(" and s[-1] == ")" else s


def _jfloat(x: float) -> str:
    """A float as JSON text; non-finite as SR.jl's JSON3 (``allow_inf``) writes them."""
    r = float.__repr__(float(x))
    return _NONFINITE.get(r, r)


_NONFINITE = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
class TraceWriter:
    """Writes one search's trace file (JSON Lines) — SR.jl's ``initialize_trace!`` + ``write_trace``.

    ``options_string`` is the ``options`` field of the ``search`` record (SR.jl writes
    ``string(options)``; any readable dump of the config). Lines are buffered; call
    :meth:`close` (or use the writer as a context manager) to flush them.

    Speed matters (a traced search writes one event per mutation), so records are rendered
    straight to JSON text fragments as events arrive instead of building nested dicts for
    :mod:`json`: member trees are printed and JSON-escaped once (cached by tree object and by
    content), and an iteration line is a join of ready fragments.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        options_string: str,
        *,
        buffer_bytes: int = _DEFAULT_BUFFER_BYTES,
    ) -> None:
        self.path = Path(path)
        self._string_tree: Callable[[Any], str] = _FastStringTree(_load_string_tree())
        # Trees by content -> JSON string: many traced children are copies of their parent
        # (rejected moves) and members are re-dumped every iteration. Content keys (int tuples,
        # bytes) keep no tree alive and add no work for the garbage collector.
        self._content_cache: dict[tuple[tuple[int, ...], bytes], str] = {}
        self._step_cache: dict[tuple[str, str | None, str | None], str] = {}
        self._details_cache: dict[tuple[tuple[str, Any], ...], str] = {}
        self._file = open(self.path, "w", encoding="utf-8", buffering=buffer_bytes)
        self.lines_written = 0
        self._emit(json.dumps(
            {
                "schema_version": TRACE_SCHEMA_VERSION,
                "record_type": "search",
                "started_at": time.time(),
                "options": str(options_string),
            },
            separators=(",", ":"),
        ))

    # ---- context manager -------------------------------------------------------------------
    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    # ---- SR.jl hooks -----------------------------------------------------------------------
    def iteration_start(
        self, out: int, pop: int, iteration: int, members: Sequence[TracedMember]
    ) -> IterationTrace:
        """SR.jl ``trace_iteration_start!``: a new iteration record with ``members`` dumped now.

        ``out`` and ``pop`` are written as given (SR.jl's are 1-based Julia indices).
        """
        return IterationTrace(self, int(out), int(pop), int(iteration), members)

    def write(self, it: IterationTrace) -> None:
        """SR.jl ``write_trace``: append the iteration as one JSON line."""
        self._emit(it.render())

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    # ---- helpers ---------------------------------------------------------------------------
    def tree_json(self, member: TracedMember) -> str:
        """``string_tree(member.tree)`` (x1.. names) as a JSON string literal, cached."""
        tree = member.tree
        key = (tuple(tree.codes), array("d", tree.vals).tobytes())  # bytes: -0.0 != 0.0
        s = self._content_cache.get(key)
        if s is None:
            s = encode_basestring_ascii(self._string_tree(tree))
            if len(self._content_cache) >= _TREE_CACHE_LIMIT:
                self._content_cache.clear()
            self._content_cache[key] = s
        return s

    def tree_string(self, member: TracedMember) -> str:
        """``string_tree(member.tree)`` with ``x1..`` names (the text in the file)."""
        return json.loads(self.tree_json(member))

    def member_fields(self, m: TracedMember) -> str:
        """A ``members`` entry's fields as JSON text, without braces."""
        return (f'"tree":{self.tree_json(m)},"loss":{_jfloat(m.loss)},"cost":{_jfloat(m.cost)},'
                f'"complexity":{int(m.complexity)},"birth":{int(m.birth)},"ref":{int(m.ref)},'
                f'"parent":{int(m.parent)}')

    def step_json(self, step: MutationStepTrace) -> str:
        key = (step.type, step.result, step.reason)
        s = self._step_cache.get(key)
        if s is None:
            s = self._step_cache[key] = json.dumps(step.to_json(), separators=(",", ":"))
        return s

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

    def _emit(self, line: str) -> None:
        self._file.write(line)
        self._file.write("\n")
        self.lines_written += 1


class IterationTrace:
    """One ``iteration`` record being built (SR.jl's per-iteration ``trace`` dict)."""

    __slots__ = (
        "_events",
        "_heads",
        "_member_fields",
        "_members",
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
        # The population at the start: (ref, fields JSON) in order.
        self._members = [(int(m.ref), writer.member_fields(m)) for m in members]
        self._member_fields: dict[int, str] | None = None
        # The ``mutations`` object as text: ref -> the entry's fixed fields, and ref -> its
        # events: "" (none), one JSON string, or a list of them once a second arrives. Mostly
        # strings, so tracing adds little garbage-collector work; lists only for the few members
        # with several events (a tournament winner may have hundreds: no quadratic joins).
        self._heads: dict[int, str] = {}
        self._events: dict[int, str | list[str]] = {}

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
        # Hot path (one call per mutation): one clock read, cached step JSON, inlined lookups.
        heads, events = self._heads, self._events
        entry = self._entry
        step_json = self._writer.step_json
        now = float.__repr__(time.time())
        if replaced is not None:
            entry(replaced)
        for attempt_idx, (parent, child, step_trace) in enumerate(steps, start=1):
            pref = parent.ref
            if pref not in heads:
                entry(parent)
            cref = child.ref
            if cref not in heads:
                entry(child)
            ev = (f'{{"type":"mutate","time":{now},"child":{cref},"selected":'
                  f'{"true" if attempt_idx == selected_idx else "false"},'
                  f'"mutation":{step_json(step_trace)}}}')
            prev = events[pref]
            if not prev:
                events[pref] = ev
            elif prev.__class__ is list:
                prev.append(ev)
            else:
                events[pref] = [prev, ev]
        if replaced is not None:
            self._add_event(replaced.ref, f'{{"type":"death","time":{now}}}')

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
        event = (
            f'{{"type":"crossover","time":{float.__repr__(time.time())},'
            f'"parent1":{int(parent1.ref)},"parent2":{int(parent2.ref)},'
            f'"child1":{int(child1.ref)},"child2":{int(child2.ref)},'
            f'"details":{self._writer.details_json(details)}}}'
        )
        # SR.jl pushes the same event object on both parents.
        self._add_event(parent1.ref, event)
        self._add_event(parent2.ref, event)
        death = _death()
        self._add_event(replaced1.ref, death)
        self._add_event(replaced2.ref, death)

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
        now = float.__repr__(time.time())
        if old_ref not in self._heads:
            self._heads[old_ref] = self._start_fields(int(old_ref))
            self._events[old_ref] = ""
        self._add_event(old_ref, f'{{"type":"tuning","time":{now},"child":{int(new_ref)},'
                                 f'"mutation":{{"type":"{mutation_type}"}}}}')
        self._add_event(old_ref, f'{{"type":"death","time":{now}}}')

    # ---- record ----------------------------------------------------------------------------
    def render(self) -> str:
        """The ``iteration`` record as one line of JSON (SR.jl's fields)."""
        members = ",".join("{" + f + "}" for _, f in self._members)
        events = self._events
        muts = ",".join(
            f'"{ref}":{{"events":[{ev if isinstance(ev, str) else ",".join(ev)}],{head}}}'
            for ref, head, ev in ((r, h, events[r]) for r, h in self._heads.items())
        )
        return (
            f'{{"schema_version":{TRACE_SCHEMA_VERSION},"record_type":"iteration",'
            f'"output":{self.output},"population":{self.population},"iteration":{self.iteration},'
            f'"started_at":{float.__repr__(self.started_at)},"members":[{members}],'
            f'"mutations":{{{muts}}}}}'
        )

    def to_json(self) -> dict[str, Any]:
        """The record as a parsed dict (for inspection; the writer uses :meth:`render`)."""
        return json.loads(self.render())

    # ---- helpers ---------------------------------------------------------------------------
    def _entry(self, m: TracedMember) -> None:
        """SR.jl ``_trace_member!``: register ``m`` in ``mutations`` once (first state wins)."""
        ref = m.ref
        if ref not in self._heads:
            self._heads[ref] = (f'"tree":{self._writer.tree_json(m)},"cost":{_jfloat(m.cost)},'
                                f'"loss":{_jfloat(m.loss)},"parent":{int(m.parent)}')
            self._events[ref] = ""

    def _add_event(self, ref: int, event: str) -> None:
        prev = self._events[ref]
        if not prev:
            self._events[ref] = event
        elif isinstance(prev, list):
            prev.append(event)
        else:
            self._events[ref] = [prev, event]

    def _start_fields(self, ref: int) -> str:
        """Fields of a member known only from the iteration's start (SR.jl copies its dump)."""
        if self._member_fields is None:
            self._member_fields = dict(self._members)
        found = self._member_fields.get(ref)
        if found is None:
            raise KeyError(
                f"trace_optimization: ref {ref} is neither traced in this iteration nor a member "
                "at its start"
            )
        return found


def _death() -> str:
    return f'{{"type":"death","time":{float.__repr__(time.time())}}}'
