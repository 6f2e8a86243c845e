"""Typed records of an SR.jl v2 trace file (both engines write the same format).

Every record is a frozen dataclass built from one parsed JSON object by ``from_json``, which
checks types and raises :class:`TraceFormatError` naming the offending field. Floats accept
JSON numbers, the non-standard ``Infinity`` / ``-Infinity`` / ``NaN`` literals (SR.jl's JSON3
writer and Python's :mod:`json`) and the strings ``"Inf"``, ``"-Inf"``, ``"NaN"`` (Julia's own
spelling), so files of either engine read back the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "CrossoverEvent",
    "DeathEvent",
    "Event",
    "IterationRecord",
    "MemberRecord",
    "MutateEvent",
    "MutationEntry",
    "MutationInfo",
    "SearchRecord",
    "TraceFormatError",
    "TuningEvent",
    "record_from_json",
]

TRACE_SCHEMA_VERSION = 1

_FLOAT_WORDS = {
    "inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
    "-inf": -math.inf, "-infinity": -math.inf, "nan": math.nan,
}


class TraceFormatError(ValueError):
    """A trace line that is not a valid SR.jl v1 record (the message names file:line if known)."""


# ---- field readers (each names the field in its error) ------------------------------------------

def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise TraceFormatError(f"{where}: missing field {key!r}") from None


def _float(obj: Mapping[str, Any], key: str, where: str) -> float:
    v = _get(obj, key, where)
    if isinstance(v, bool):
        raise TraceFormatError(f"{where}.{key}: expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in _FLOAT_WORDS:
        return _FLOAT_WORDS[v.strip().lower()]
    raise TraceFormatError(f"{where}.{key}: expected a number, got {v!r}")


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    v = _get(obj, key, where)
    if isinstance(v, bool):
        raise TraceFormatError(f"{where}.{key}: expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise TraceFormatError(f"{where}.{key}: expected an integer, got {v!r}")


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    v = _get(obj, key, where)
    if not isinstance(v, str):
        raise TraceFormatError(f"{where}.{key}: expected a string, got {v!r}")
    return v


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v
    raise TraceFormatError(f"{where}.{key}: expected a string, got {v!r}")


def _mapping(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise TraceFormatError(f"{where}: expected an object, got {type(v).__name__}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise TraceFormatError(f"{where}: expected an array, got {type(v).__name__}")
    return v


# ---- records -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SearchRecord:
    """The first line: when the search started and its options (a free-form string dump)."""

    schema_version: int
    started_at: float
    options: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "search") -> SearchRecord:
        opts = obj.get("options", "")
        return cls(
            schema_version=_int(obj, "schema_version", where),
            started_at=_float(obj, "started_at", where),
            options=opts if isinstance(opts, str) else str(opts),
        )


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A population member at the start of an iteration (``tree`` in SR.jl ``x1..`` form)."""

    tree: str
    loss: float
    cost: float
    complexity: int
    birth: int
    ref: int
    parent: int

    @classmethod
    def from_json(cls, obj: Any, where: str) -> MemberRecord:
        obj = _mapping(obj, where)
        return cls(
            tree=_str(obj, "tree", where),
            loss=_float(obj, "loss", where),
            cost=_float(obj, "cost", where),
            complexity=_int(obj, "complexity", where),
            birth=_int(obj, "birth", where),
            ref=_int(obj, "ref", where),
            parent=_int(obj, "parent", where),
        )


@dataclass(frozen=True, slots=True)
class MutationInfo:
    """SR.jl's step trace: mutation ``type`` and, when judged, ``result`` and ``reason``."""

    type: str
    result: str | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.result == "accept"

    @classmethod
    def from_json(cls, obj: Any, where: str) -> MutationInfo:
        obj = _mapping(obj, where)
        t = obj.get("type", "")
        if not isinstance(t, str):
            raise TraceFormatError(f"{where}.type: expected a string, got {t!r}")
        return cls(type=t, result=_opt_str(obj, "result", where), reason=_opt_str(obj, "reason", where))


@dataclass(frozen=True, slots=True)
class MutateEvent:
    """One mutation attempt on the entry's member; ``selected`` marks the attempt that was kept."""

    time: float
    child: int
    selected: bool
    mutation: MutationInfo


@dataclass(frozen=True, slots=True)
class CrossoverEvent:
    """A crossover of ``parent1`` × ``parent2`` into ``child1``, ``child2`` (on both parents)."""

    time: float
    parent1: int
    parent2: int
    child1: int
    child2: int
    details: MutationInfo


@dataclass(frozen=True, slots=True)
class TuningEvent:
    """Simplification (and constant optimisation) re-creating the member as ``child``."""

    time: float
    child: int
    mutation: MutationInfo


@dataclass(frozen=True, slots=True)
class DeathEvent:
    """The member was replaced in the population (or re-created by tuning)."""

    time: float


Event = Union[MutateEvent, CrossoverEvent, TuningEvent, DeathEvent]


def _event_from_json(obj: Any, where: str) -> Event:
    obj = _mapping(obj, where)
    kind = _str(obj, "type", where)
    t = _float(obj, "time", where)
    if kind == "mutate":
        sel = _get(obj, "selected", where)
        if not isinstance(sel, bool):
            raise TraceFormatError(f"{where}.selected: expected true/false, got {sel!r}")
        return MutateEvent(t, _int(obj, "child", where), sel,
                           MutationInfo.from_json(_get(obj, "mutation", where), f"{where}.mutation"))
    if kind == "crossover":
        return CrossoverEvent(
            t, _int(obj, "parent1", where), _int(obj, "parent2", where),
            _int(obj, "child1", where), _int(obj, "child2", where),
            MutationInfo.from_json(obj.get("details") or {}, f"{where}.details"),
        )
    if kind == "tuning":
        return TuningEvent(t, _int(obj, "child", where),
                           MutationInfo.from_json(_get(obj, "mutation", where), f"{where}.mutation"))
    if kind == "death":
        return DeathEvent(t)
    raise TraceFormatError(f"{where}.type: unknown event type {kind!r}")


@dataclass(frozen=True, slots=True)
class MutationEntry:
    """A member that took part in the iteration's events, keyed by ``ref`` in the record.

    ``tree``/``cost``/``loss``/``parent`` are the member's state when first traced; ``events``
    are in file order (which is the order SR.jl pushed them).
    """

    ref: int
    tree: str
    cost: float
    loss: float
    parent: int
    events: tuple[Event, ...]

    @classmethod
    def from_json(cls, key: str, obj: Any, where: str) -> MutationEntry:
        obj = _mapping(obj, where)
        try:
            ref = int(key)
        except ValueError:
            raise TraceFormatError(f"{where}: key {key!r} is not an integer ref") from None
        events = _list(_get(obj, "events", where), f"{where}.events")
        return cls(
            ref=ref,
            tree=_str(obj, "tree", where),
            cost=_float(obj, "cost", where),
            loss=_float(obj, "loss", where),
            parent=_int(obj, "parent", where),
            events=tuple(_event_from_json(e, f"{where}.events[{i}]") for i, e in enumerate(events)),
        )


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """One (output, population, iteration): the starting population and the traced events."""

    output: int
    population: int
    iteration: int
    started_at: float
    members: tuple[MemberRecord, ...]
    mutations: Mapping[int, MutationEntry]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "iteration") -> IterationRecord:
        members = _list(_get(obj, "members", where), f"{where}.members")
        muts = _mapping(_get(obj, "mutations", where), f"{where}.mutations")
        return cls(
            output=_int(obj, "output", where),
            population=_int(obj, "population", where),
            iteration=_int(obj, "iteration", where),
            started_at=_float(obj, "started_at", where),
            members=tuple(MemberRecord.from_json(m, f"{where}.members[{i}]")
                          for i, m in enumerate(members)),
            mutations={e.ref: e for e in (MutationEntry.from_json(k, v, f"{where}.mutations[{k}]")
                                          for k, v in muts.items())},
        )


def record_from_json(obj: Any) -> SearchRecord | IterationRecord:
    """Build the typed record of one parsed line (``schema_version`` is checked by the caller)."""
    obj = _mapping(obj, "record")
    kind = obj.get("record_type")
    if kind == "search":
        return SearchRecord.from_json(obj)
    if kind == "iteration":
        return IterationRecord.from_json(obj)
    raise TraceFormatError(f"record_type: expected 'search' or 'iteration', got {kind!r}")
