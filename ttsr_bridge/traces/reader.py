"""Read SR.jl v2 trace files (JSON Lines) written by SR.jl/PySR or the Python engine.

:func:`iter_trace` streams typed records and counts what it skips; :func:`read_trace` loads a
whole file into a :class:`TraceFile`. Lenient by default: a truncated last line (a search that
was killed mid-write), an unparsable or malformed line, or a record of another
``schema_version`` is skipped and counted. ``strict=True`` raises :class:`TraceFormatError`
with ``file:line`` on the first such line instead. Gzip files are read transparently (told
apart by their first bytes, not their name); a compressed stream that is cut off or corrupt
ends the file as a truncated line does, and a line that is not UTF-8 is a bad line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from .records import (
    TRACE_SCHEMA_VERSION,
    IterationRecord,
    SearchRecord,
    TraceFormatError,
    record_from_json,
)

__all__ = [
    "RawLine",
    "TraceFile",
    "TraceFormatError",
    "TraceIssue",
    "TraceReader",
    "iter_trace",
    "loads_trace_line",
    "read_lines",
    "read_trace",
]

IssueKind = Literal["truncated", "bad_line", "schema_version", "missing_search"]

# Issues kept verbatim per file; the counters keep counting past it.
_MAX_KEPT_ISSUES = 100

# Julia spells non-finite floats ``Inf``/``-Inf``; Python's json only knows ``Infinity``.
# Strings are matched first so that ``Inf`` inside a tree string is left alone.
_JULIA_INF = re.compile(r'("(?:[^"\\]|\\.)*")|(-?)\bInf\b(?!inity)')


def _julia_inf_sub(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return m.group(1)
    return m.group(2) + "Infinity"


def loads_trace_line(line: str) -> Any:
    """Parse one JSON line, accepting ``Infinity``/``NaN`` and Julia's bare ``Inf``/``-Inf``."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        if "Inf" not in line:
            raise
        return json.loads(_JULIA_INF.sub(_julia_inf_sub, line))


@dataclass(frozen=True, slots=True)
class TraceIssue:
    """One skipped line: where, what kind, and why."""

    line: int
    kind: IssueKind
    message: str


@dataclass(frozen=True)
class TraceFile:
    """A whole trace file read back (``search`` is ``None`` only when the file lacks it)."""

    path: Path
    search: SearchRecord | None
    iterations: list[IterationRecord]
    skipped: int
    errors: tuple[TraceIssue, ...] = field(default=())

    @property
    def options(self) -> str:
        return self.search.options if self.search is not None else ""


_GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip (by its magic bytes, whatever its name)."""
    f = open(path, "rb")  # noqa: SIM115 (returned open: the caller closes it)
    try:
        is_gzip = f.read(2) == _GZIP_MAGIC
        f.seek(0)
    except BaseException:
        f.close()
        raise
    if is_gzip:
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]  # owns (and closes) its file
    return f


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line of a trace file as read: ``text`` (``None`` when unreadable, ``fault`` says
    why, ``kind`` how to count it), and whether it ended in a newline."""

    number: int
    text: str | None
    complete: bool
    fault: str | None = None
    kind: IssueKind | None = None


def read_lines(path: str | os.PathLike[str]) -> Iterator[RawLine]:
    """The lines of a trace file, plain or gzip. Never raises for bad content: a line that is
    not UTF-8 comes as a ``bad_line`` fault; a compressed stream that is cut off (a writer
    killed mid-file) or corrupt ends the file with one ``truncated`` fault. ``OSError`` (no
    such file, unreadable) is raised."""
    p = Path(path)
    number = 0
    # The file object closes when the generator is exhausted or dropped.
    with _open_binary(p) as f:
        try:
            for raw in f:
                number += 1
                complete = raw.endswith(b"\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield RawLine(number, None, complete, f"not UTF-8 text: {e}", "bad_line")
                    continue
                yield RawLine(number, text, complete)
        except EOFError:
            yield RawLine(number + 1, None, False,
                          "the compressed stream is cut off (a writer killed mid-file?)", "truncated")
        except (gzip.BadGzipFile, zlib.error) as e:
            yield RawLine(number + 1, None, False, f"corrupt compressed data: {e}", "truncated")


class TraceReader:
    """Iterates over a trace file's typed records, counting skipped lines.

    The counters (``skipped_truncated``, ``skipped_bad``, ``skipped_version``) and ``issues``
    are complete once iteration has finished.
    """

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        self.skipped_truncated = 0
        self.skipped_bad = 0
        self.skipped_version = 0
        self.records_read = 0
        self.lineno = 0  # line of the record last yielded
        self.issues: list[TraceIssue] = []

    @property
    def skipped(self) -> int:
        return self.skipped_truncated + self.skipped_bad + self.skipped_version

    def _issue(self, line: int, kind: IssueKind, message: str) -> None:
        if self.strict:
            raise TraceFormatError(f"{self.path}:{line}: {message}")
        if kind == "truncated":
            self.skipped_truncated += 1
        elif kind == "schema_version":
            self.skipped_version += 1
        elif kind == "bad_line":
            self.skipped_bad += 1
        if len(self.issues) < _MAX_KEPT_ISSUES:
            self.issues.append(TraceIssue(line, kind, message))

    def __iter__(self) -> Iterator[SearchRecord | IterationRecord]:
        for line in read_lines(self.path):
            if line.text is None:
                assert line.kind is not None and line.fault is not None
                self._issue(line.number, line.kind, line.fault)
                continue
            record = self._parse(line.text, line.number, line.complete)
            if record is not None:
                self.records_read += 1
                self.lineno = line.number
                yield record

    def _parse(self, raw: str, lineno: int, complete: bool) -> SearchRecord | IterationRecord | None:
        """One line → record, or ``None`` (skipped and counted, or blank)."""
        text = raw.strip()
        if not text:
            return None
        try:
            obj = loads_trace_line(text)
        except (json.JSONDecodeError, RecursionError) as e:
            if not complete:
                # Only the file's last line can lack its newline: a writer killed mid-line.
                self._issue(lineno, "truncated", f"truncated last line ({len(raw)} chars)")
            else:
                self._issue(lineno, "bad_line", f"invalid JSON: {e}")
            return None
        if not isinstance(obj, dict):
            self._issue(lineno, "bad_line", f"expected a JSON object, got {type(obj).__name__}")
            return None
        version = obj.get("schema_version")
        if version != TRACE_SCHEMA_VERSION:
            self._issue(lineno, "schema_version",
                        f"schema_version {version!r} (this reader knows {TRACE_SCHEMA_VERSION})")
            return None
        try:
            return record_from_json(obj)
        except TraceFormatError as e:
            self._issue(lineno, "bad_line", str(e))
            return None


def iter_trace(path: str | os.PathLike[str], *, strict: bool = False) -> TraceReader:
    """Stream a trace file's records (``for rec in iter_trace(p)``); counters on the result."""
    return TraceReader(path, strict=strict)


def read_trace(path: str | os.PathLike[str], *, strict: bool = False) -> TraceFile:
    """Read a whole trace file.

    The first ``search`` record is ``TraceFile.search``; a file without one is an issue
    (``missing_search``, not counted as a skipped line). A second ``search`` record (a file
    that was appended to by a restarted search) is skipped as a bad line.
    """
    reader = TraceReader(path, strict=strict)
    search: SearchRecord | None = None
    iterations: list[IterationRecord] = []
    for rec in reader:
        if isinstance(rec, SearchRecord):
            if search is None and not iterations:
                search = rec
            else:
                reader._issue(reader.lineno, "bad_line", "a second 'search' record (file appended to?)")
        else:
            iterations.append(rec)
    issues = list(reader.issues)
    if search is None:
        msg = "no 'search' record at the start of the file"
        if strict:
            raise TraceFormatError(f"{reader.path}:1: {msg}")
        issues.insert(0, TraceIssue(1, "missing_search", msg))
    return TraceFile(
        path=reader.path,
        search=search,
        iterations=iterations,
        skipped=reader.skipped,
        errors=tuple(issues),
    )

