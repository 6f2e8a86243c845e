"""Where a :class:`~.tracing.TraceWriter`'s iteration batches become lines of the trace file.

* :class:`ProcessSink` (the default on POSIX): a writer process (``python -m
  ttsr_bridge.traces.tracing_process FD BUFFER``, started with :mod:`subprocess` so that it never
  re-imports the user's ``__main__``) renders the batches on another core. The search sends
  each batch as one frame on the process's stdin: an 8-byte little-endian length, then the
  :mod:`marshal` dump of ``(kind, payload)``. The trace file is opened by the search process
  (errors surface there) and inherited as file descriptor ``FD``.
* :class:`InlineSink`: renders in the calling process (``background=False``, or where a writer
  process cannot be started).

Lifecycle of the writer process: it ignores SIGINT (a Ctrl-C in a terminal reaches the whole
process group; the search decides, and its ``close`` waits for the lines already sent); at EOF
on stdin (``close``, or the search process died) it writes every complete batch it received and
exits, so the file only ever ends in a cut line if the writer itself is killed — readers count
that line as truncated and skip it. If it fails, the search's next ``send`` or its ``close``
raises :class:`TraceWriterError` with the writer's error message.

The frames come from the parent process through a pipe only it holds; :mod:`marshal` builds
nothing but plain values (no code runs on load), and the writer checks the message layout.
"""

from __future__ import annotations

import marshal
import numbers
import os
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import IO, Any

from .tracing_render import TraceRenderer, operator_forms

__all__ = ["InlineSink", "ProcessSink", "TraceWriterError", "main", "open_sink"]

MSG_FORMS = 0  # payload: operator forms (TraceRenderer.string_tree.forms())
MSG_ITERATION = 1  # payload: one iteration batch (see tracing_render)

_HEADER_BYTES = 8
_MARSHAL_VERSION = 4  # shares repeated objects (a tree's lists), so payloads stay small
_PIPE_BYTES = 1 << 20  # lets the search run a few batches ahead of a busy writer


class TraceWriterError(RuntimeError):
    """The trace writer process failed (its error message is in the text)."""


class InlineSink:
    """Renders and writes each batch in the calling process."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._renderer = TraceRenderer()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def send(self, batch: tuple[Any, ...]) -> None:
        self._file.write(self._renderer.render(batch))
        self._file.write("\n")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def abort(self) -> None:
        self.close()


def _plain(x: Any) -> Any:
    """``x`` with NumPy scalars and number subclasses turned into plain ``int`` / ``float``."""
    t = type(x)
    if t is int or t is float or t is str or t is bool or x is None:
        return x
    if t is list:
        return [_plain(v) for v in x]
    if t is tuple:
        return tuple(_plain(v) for v in x)
    item = getattr(x, "item", None)  # NumPy scalars
    if callable(item) and not isinstance(x, (list, tuple, str)):
        v = item()
        if type(v) in (int, float, bool):
            return v
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    if isinstance(x, str):
        return str(x)
    raise TypeError(f"a trace can only record numbers and strings, not {t.__name__}: {x!r}")


def encode_message(kind: int, payload: Any) -> bytes:
    """One frame: the length header and the marshalled ``(kind, payload)``."""
    try:
        data = marshal.dumps((kind, payload), _MARSHAL_VERSION)
    except ValueError:  # a NumPy scalar or a number subclass somewhere: convert, rarely needed
        data = marshal.dumps((kind, _plain(payload)), _MARSHAL_VERSION)
    return len(data).to_bytes(_HEADER_BYTES, "little") + data


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class ProcessSink:
    """Feeds batches to a writer process that renders them into ``file`` (see module docstring).

    ``file`` is the open trace file; the process gets its descriptor and this object closes
    its own copy.
    """

    def __init__(self, file: IO[str], buffer_bytes: int) -> None:
        file.flush()
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        # The writer must import this very package, wherever it was imported from here.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
        )
        fd = file.fileno()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ttsr_bridge.traces.tracing_process", str(fd),
                 str(int(buffer_bytes))],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(fd,), close_fds=True, env=env, bufsize=0,
            )
        except BaseException:
            self._stderr.close()
            raise
        file.close()  # the writer holds the file now
        assert self._proc.stdin is not None
        self._pipe = self._proc.stdin
        _grow_pipe(self._pipe.fileno())
        self.closed = False
        self._ops_known = -1
        # A writer never closed (a forgotten close, an interpreter exit) still gets its EOF.
        self._finalizer = weakref.finalize(self, _finalize, self._proc, self._pipe, self._stderr)

    # ---- sending ---------------------------------------------------------------------------
    def send(self, batch: tuple[Any, ...]) -> None:
        """Send one iteration batch (blocks only while the writer is a full pipe behind)."""
        if self.closed:
            raise ValueError("send on a closed trace sink")
        from ..expr.operators import OPERATORS

        if len(OPERATORS) != self._ops_known:  # first batch, or operators registered since
            self._ops_known = len(OPERATORS)
            self._write(encode_message(MSG_FORMS, operator_forms()))
        self._write(encode_message(MSG_ITERATION, batch))

    def _write(self, frame: bytes) -> None:
        view = memoryview(frame)
        fd = self._pipe.fileno()
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:  # BrokenPipeError: the writer died
            self.abort()
            raise TraceWriterError(self._failure("the trace writer process stopped")) from exc

    # ---- ending ----------------------------------------------------------------------------
    def close(self) -> None:
        """EOF to the writer, wait until it has written everything; raise if it failed."""
        if self.closed:
            return
        self.closed = True
        self._finalizer.detach()
        try:
            self._pipe.close()
            rc = self._proc.wait()
        except BaseException:  # e.g. a second Ctrl-C while waiting: stop the writer now
            _kill(self._proc)
            self._stderr.close()
            raise
        if rc != 0:
            message = self._failure(f"the trace writer process exited with status {rc}")
            self._stderr.close()
            raise TraceWriterError(message)
        self._stderr.close()

    def abort(self) -> None:
        """Kill the writer (lines not yet written are lost; the last one may be cut)."""
        if self.closed:
            return
        self.closed = True
        self._finalizer.detach()
        try:
            self._pipe.close()
        except OSError:
            pass
        _kill(self._proc)

    def _failure(self, what: str) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            text = ""
        tail = text.splitlines()[-1] if text else "no message"
        return f"{what}: {tail}" + (f"\n{text}" if text else "")


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: the default pipe works too


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _finalize(proc: subprocess.Popen[bytes], pipe: IO[bytes], stderr: IO[bytes]) -> None:
    try:
        pipe.close()
        proc.wait()
    except BaseException:
        _kill(proc)
    finally:
        stderr.close()


def open_sink(file: IO[str], buffer_bytes: int, background: bool | None) -> InlineSink | ProcessSink:
    """A :class:`ProcessSink` when ``background`` (default: where ``pass_fds`` works), else inline.

    An explicit ``background=True`` that cannot start a writer process raises; the default
    falls back to rendering inline.
    """
    if background is None:
        background = os.name == "posix" and bool(sys.executable)
    if not background:
        return InlineSink(file)
    try:
        return ProcessSink(file, buffer_bytes)
    except OSError:
        if background is None:
            return InlineSink(file)
        raise


# ================================================================================================
# the writer process
# ================================================================================================
def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def _read_messages(stream: IO[bytes]):
    """``(kind, payload)`` per complete frame; stops at EOF (a cut last frame is dropped)."""
    while True:
        header = _read_exact(stream, _HEADER_BYTES)
        if header is None:
            return
        data = _read_exact(stream, int.from_bytes(header, "little"))
        if data is None:
            return
        msg = marshal.loads(data)
        if not (isinstance(msg, tuple) and len(msg) == 2 and msg[0] in (MSG_FORMS, MSG_ITERATION)):
            raise ValueError("malformed trace writer message")
        yield msg


def run_writer(stream: IO[bytes], out: IO[str]) -> int:
    """Render every message of ``stream`` into ``out``; returns the number of lines written."""
    renderer = TraceRenderer()
    lines = 0
    for kind, payload in _read_messages(stream):
        if kind == MSG_FORMS:
            renderer.string_tree.set_forms(payload)
        else:
            if not (isinstance(payload, tuple) and len(payload) == 6):
                raise ValueError("malformed iteration batch")
            out.write(renderer.render(payload))
            out.write("\n")
            lines += 1
    return lines


def main(argv: list[str] | None = None) -> int:
    """The writer process: ``python -m ttsr_bridge.traces.tracing_process FD BUFFER_BYTES``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ttsr_bridge.traces.tracing_process FD BUFFER_BYTES "
              "(started by TraceWriter, not by hand)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, buffer_bytes = int(args[0]), int(args[1])
    with os.fdopen(fd, "w", encoding="utf-8", buffering=buffer_bytes) as out:
        run_writer(sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
