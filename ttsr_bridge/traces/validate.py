"""Validate trace files against the SR.jl v1 JSON Schema plus cross-record checks.

Per line: the JSON Schema ``traces/schema/trace_v1.schema.json`` (draft 2020-12). Per file:
the first record is the ``search`` record, and each iteration's events name refs that the
iteration registered (SR.jl's ``_trace_member!`` registers every parent, child and replaced
member before it records an event on them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .reader import loads_trace_line, read_lines

__all__ = ["ValidationReport", "check_iteration_refs", "load_schema", "schema_path", "validate_file"]

_MAX_KEPT_ERRORS = 50


def schema_path() -> Path:
    """Where the schema lives: ``traces/schema/trace_v1.schema.json`` in the source tree, shipped
    in wheels as ``ttsr_bridge/data/trace_v1.schema.json`` (a link to it in the checkout)."""
    candidates = (
        Path(__file__).resolve().parents[1] / "data" / "trace_v1.schema.json",
        Path(__file__).resolve().parents[2] / "traces" / "schema" / "trace_v1.schema.json",
    )
    for p in candidates:
        if p.is_file():
            return p
    raise FileNotFoundError(f"trace schema not found at any of {[str(c) for c in candidates]}")


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The parsed trace schema (cached)."""
    with open(schema_path(), encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@dataclass
class ValidationReport:
    """What validating one file found (``errors`` holds the first few, ``n_errors`` all)."""

    path: Path
    n_lines: int = 0
    n_search: int = 0
    n_iterations: int = 0
    n_errors: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.n_errors == 0 and self.n_search == 1

    def add(self, line: int, message: str) -> None:
        self.n_errors += 1
        if len(self.errors) < _MAX_KEPT_ERRORS:
            self.errors.append(f"{self.path}:{line}: {message}")


def check_iteration_refs(obj: dict[str, Any]) -> list[str]:
    """Refs named by an iteration's events that the iteration never registered."""
    muts = obj.get("mutations")
    if not isinstance(muts, dict):
        return []
    known = set(muts)
    problems = []
    for key, entry in muts.items():
        for i, ev in enumerate(entry.get("events", ()) if isinstance(entry, dict) else ()):
            if not isinstance(ev, dict):
                continue
            kind = ev.get("type")
            fields = {"mutate": ("child",), "crossover": ("parent1", "parent2", "child1", "child2"),
                      "tuning": ("child",)}.get(kind, ())
            for f in fields:
                ref = ev.get(f)
                if ref is not None and str(ref) not in known:
                    problems.append(f"mutations[{key}].events[{i}].{f}: ref {ref} not registered")
    return problems


def _schema_errors(obj: Any) -> list[str]:
    errors = []
    for err in _validator().iter_errors(obj):
        where = "/".join(str(p) for p in err.absolute_path) or "<record>"
        errors.append(f"{where}: {err.message}")
    return errors


def validate_file(path: str | os.PathLike[str], *, semantic: bool = True) -> ValidationReport:
    """Validate every line of a trace file; see the module docstring for what is checked."""
    report = ValidationReport(Path(path))
    for line in read_lines(report.path):
        lineno, raw = line.number, line.text
        if raw is None:
            report.n_lines += 1
            report.add(lineno, str(line.fault))
            continue
        if not raw.strip():
            continue
        report.n_lines += 1
        try:
            obj = loads_trace_line(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            tail = "" if line.complete else " (truncated last line)"
            report.add(lineno, f"invalid JSON{tail}: {e}")
            continue
        for msg in _schema_errors(obj):
            report.add(lineno, msg)
        kind = obj.get("record_type") if isinstance(obj, dict) else None
        if kind == "search":
            report.n_search += 1
            if lineno != 1 or report.n_search > 1:
                report.add(lineno, "'search' record is not the file's first line")
        elif kind == "iteration":
            report.n_iterations += 1
            if semantic:
                for msg in check_iteration_refs(obj):
                    report.add(lineno, msg)
    if report.n_search == 0:
        report.add(1, "no 'search' record")
    return report
