"""Where a :class:`~.tracing.TraceWriter`'s event stream becomes the lines of the trace file.

* :class:`ProcessSink` (the default on POSIX): a writer process (``python -m
  ttsr_bridge.traces.tracing_process SOCKET_FD BUFFER``, started with :mod:`subprocess` so that
  it never re-imports the user's ``__main__``) renders the event stream on another core. The
  search sends each chunk of the stream as one frame on the process's stdin: an 8-byte
  little-endian length, then the :mod:`pickle` of ``(kind, payload)``. The trace file is opened
  by the search process (errors surface there) and its descriptor handed over a Unix socket
  (``SCM_RIGHTS``, with one byte saying whether the writer appends the lines as text or as a
  gzip member); ``close`` sends ``MSG_CLOSE`` and waits on that socket for the writer's
  word that the file is complete. The process then serves the next trace file of the same
  search process (one idle writer is kept): its start — Python and NumPy imports, about 0.1 s
  of CPU — is paid once, not per traced search (``collect`` runs many short searches per
  worker).
* :class:`InlineSink`: renders in the calling process (``background=False``, or where a writer
  process cannot be started).

Lifecycle of the writer process: it ignores SIGINT (a Ctrl-C in a terminal reaches the whole
process group; the search decides, and its ``close`` waits for the lines already sent); at EOF
on stdin (the search process died, dropped a writer without ``close``, or exits) it writes
every record it received complete and exits (records never ended are left out), so the file
only ever ends in a cut line if the writer itself is killed — readers count that line as
truncated and skip it. If it fails, the search's next ``send`` or its ``close`` raises
:class:`TraceWriterError` with the writer's error message, and the process is not reused. A
child forked by the search process closes its copies of an idle writer's channels.

The frames come from the parent process through a pipe only it holds; even so the writer
unpickles with an allow-list (plain values, NumPy scalars: no other global is ever resolved, so
no code runs on load) and checks the message layout.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import IO, Any

from . import tree_batch
from .tracing_render import TraceRenderer, operator_forms

__all__ = ["WRITER_ENV", "InlineSink", "ProcessSink", "TraceWriterError", "main", "open_sink"]

# ``TTSR_TRACE_WRITER=inline`` / ``process`` picks the sink of writers that do not choose
# (``background=None``), e.g. the one ``equation_search(trace=...)`` opens.
WRITER_ENV = "TTSR_TRACE_WRITER"

MSG_FORMS = 0  # payload: operator forms (TraceRenderer.string_tree.forms())
MSG_OPS = 1  # payload: (events list, *tree buffers): one chunk (TraceRenderer.feed's arguments)
MSG_CLOSE = 2  # payload: None: the file is complete (the writer acknowledges on its socket)

_HEADER_BYTES = 8
_PICKLE_PROTOCOL = 5  # memoises repeated objects (a tree's lists), so payloads stay small
# NumPy scalars (a member's loss may be one) are the only objects beyond plain values.
_ALLOWED_GLOBALS = frozenset({
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"), ("numpy", "dtype"),
})
_PIPE_BYTES = 1 << 20  # lets the search run a few chunks ahead of a busy writer
# Frames queued in the search process beyond the pipe (the writer's start-up, mostly); past
# this the search waits for the writer.
_QUEUE_BYTES = 64 << 20


class _PipeBacklog:
    """Writes frames to the writer's pipe from the search's own thread, never waiting for it.

    The pipe is non-blocking: a frame goes in as far as the pipe has room, the rest waits here
    and goes in on the next :meth:`put` (the search sends a chunk every few milliseconds) —
    notably while the writer starts (a fifth of a second of imports). Only past
    :data:`_QUEUE_BYTES` of backlog, and in :meth:`finish`, does the search wait for the
    writer. No thread: a feeder thread cost the search more than the writes themselves (it
    took the interpreter's lock back after every frame it wrote).
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._frames: deque[memoryview] = deque()
        self._queued = 0
        self.error: OSError | None = None

    def put(self, frame: bytes) -> None:
        """Queue one frame and write what the pipe takes; raises the pipe's error."""
        if self.error is not None:
            raise self.error
        self._frames.append(memoryview(frame))
        self._queued += len(frame)
        self._drain(until=_QUEUE_BYTES)

    def finish(self, timeout: float | None = None) -> None:
        """Write everything queued, waiting for the writer (at most ``timeout`` seconds)."""
        if self.error is None:
            try:
                self._drain(until=0, timeout=timeout)
            except OSError:
                pass  # kept in ``error``: the caller checks it
        self._frames.clear()

    def _drain(self, until: int, timeout: float | None = None) -> None:
        """Write queued frames; wait for room only while more than ``until`` bytes are queued."""
        frames, fd = self._frames, self._fd
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while frames:
                view = frames[0]
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    if self._queued <= until:
                        return
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not select.select([], [fd], [], wait)[1] and wait is not None:
                        return  # timed out
                    continue
                self._queued -= n
                if n == len(view):
                    frames.popleft()
                else:
                    frames[0] = view[n:]
        except OSError as exc:  # BrokenPipeError: the writer died
            self.error = exc
            frames.clear()
            raise


class TraceWriterError(RuntimeError):
    """The trace writer process failed (its error message is in the text)."""


# Gzip level 1: the cheapest level, about 250 MB/s on one core here and a tenth of the size of
# a trace (level 6 halves the speed for a sixth less).
GZIP_LEVEL = 1


class GzipTextFile(io.TextIOWrapper):
    """Text appended to the binary file ``raw`` as one gzip member; closing it ends the member
    and closes ``raw``. A trace file is a series of members (the search line, then the
    records), which gzip readers read as one stream."""

    def __init__(self, raw: IO[bytes], buffer_bytes: int) -> None:
        self._raw_file = raw
        gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        super().__init__(io.BufferedWriter(gz, buffer_bytes), encoding="utf-8")  # type: ignore[arg-type]

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw_file.close()


class InlineSink:
    """Renders the event stream in the calling process."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._renderer = TraceRenderer()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def send(self, ops: list[Any], *trees: Any) -> None:
        for line in self._renderer.feed(ops, *trees):
            self._file.write(line)
            self._file.write("\n")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def abort(self) -> None:
        self.close()


def encode_message(kind: int, payload: Any) -> bytes:
    """One frame: the length header and the pickled ``(kind, payload)``."""
    return b"".join(_encode_parts(kind, payload))


def _encode_parts(kind: int, payload: Any) -> tuple[bytes, bytes]:
    """A frame as (header, data): written one after the other, never copied into one."""
    data = pickle.dumps((kind, payload), _PICKLE_PROTOCOL)
    return len(data).to_bytes(_HEADER_BYTES, "little"), data


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain values and NumPy scalars only: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a trace event may not hold {module}.{name}")


def decode_message(data: bytes) -> tuple[int, Any]:
    """The ``(kind, payload)`` of one frame's data (checked)."""
    msg = _PlainUnpickler(io.BytesIO(data)).load()
    if not (isinstance(msg, tuple) and len(msg) == 2
            and msg[0] in (MSG_FORMS, MSG_OPS, MSG_CLOSE)):
        raise ValueError("malformed trace writer message")
    return msg


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class _WriterProcess:
    """One writer process and the search process's ends of its channels: the pipe the frames
    go through (its stdin) and a Unix socket that hands it each trace file's descriptor and
    brings back an acknowledgement when the file is complete. A process serves one file after
    another (see :func:`_take_writer`): its start — Python and NumPy imports, about 0.1 s of
    CPU — is paid once per search process rather than once per traced search."""

    def __init__(self, buffer_bytes: int) -> None:
        import socket

        self.buffer_bytes = int(buffer_bytes)
        self.owner = os.getpid()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open for the process's life
        env = dict(os.environ)
        # The writer must import this very package, wherever it was imported from here.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
        )
        # The writer never does linear algebra: without these, importing NumPy starts a BLAS
        # thread pool that costs about 0.06 s of CPU per writer (on a busy machine, the
        # searches' CPU).
        env.update(_ONE_THREAD_ENV)
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ttsr_bridge.traces.tracing_process",
                 str(theirs.fileno()), str(self.buffer_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.stderr,
                pass_fds=(theirs.fileno(),), close_fds=True, env=env, bufsize=0,
            )
        except BaseException:
            self.ctl.close()
            self.stderr.close()
            raise
        finally:
            theirs.close()
        assert self.proc.stdin is not None
        self.pipe = self.proc.stdin
        _grow_pipe(self.pipe.fileno())
        self.backlog = _PipeBacklog(self.pipe.fileno())

    def open(self, fd: int, compress: bool = False) -> None:
        """Hand the writer the next trace file (it takes its own copy of ``fd``); ``compress``:
        it appends the lines as a gzip member."""
        import socket

        socket.send_fds(self.ctl, [_FILE_GZIP if compress else _FILE_PLAIN], [fd])

    def wait_file(self) -> bool:
        """Wait until the writer has closed the current file: True, or False if it died."""
        try:
            return self.ctl.recv(1) == _FILE_DONE
        except OSError:
            return False

    def shutdown(self, timeout: float = 60.0) -> int:
        """End the process: EOF on both channels, then wait for it (killed after ``timeout``
        seconds); its exit status."""
        try:
            self.backlog.finish()
            self.pipe.close()
            self.ctl.close()
            return self.proc.wait(timeout=timeout)
        except (OSError, KeyboardInterrupt, subprocess.TimeoutExpired):
            self.kill()
            raise

    def close_channels(self) -> None:
        """Close this process's ends of the pipe and the socket (in a forked child, its copies:
        the parent owns the writer, and an open copy would keep it from ever seeing EOF)."""
        for channel in (self.pipe, self.ctl):
            with contextlib.suppress(OSError):
                channel.close()

    def kill(self) -> None:
        _kill(self.proc)  # first: what is still queued then fails at once (EPIPE)
        self.backlog.finish(timeout=5.0)
        self.close_channels()

    def failure(self, what: str) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            text = ""
        tail = text.splitlines()[-1] if text else "no message"
        return f"{what}: {tail}" + (f"\n{text}" if text else "")


_FILE_DONE = b"\x01"  # writer -> search: the file is complete
_FILE_PLAIN = b"F"  # search -> writer, with a file's descriptor: write the lines as text
_FILE_GZIP = b"Z"  # ... append them as a gzip member
_idle_lock = threading.Lock()
_idle: list[_WriterProcess] = []  # started by this process, between files


def _take_writer(buffer_bytes: int) -> _WriterProcess:
    """An idle writer process of this process (one that finished its last file), else a new one."""
    with _idle_lock:
        while _idle:
            w = _idle.pop()
            if w.owner == os.getpid() and w.buffer_bytes == buffer_bytes and w.proc.poll() is None:
                return w
            if w.owner == os.getpid():
                w.kill()
    return _WriterProcess(buffer_bytes)


def _give_back(w: _WriterProcess) -> None:
    """Keep a writer that finished its file for the next one (one idle writer at most)."""
    with _idle_lock:
        if w.owner == os.getpid() and not _idle:
            _idle.append(w)
            return
    w.shutdown()


@atexit.register
def _shutdown_idle() -> None:
    with _idle_lock:
        writers = [w for w in _idle if w.owner == os.getpid()]
        _idle.clear()
    for w in writers:
        with contextlib.suppress(Exception):  # the interpreter is exiting
            w.shutdown(timeout=10.0)


def writer_cpu_seconds() -> float:
    """CPU seconds of this process's writer processes so far: the idle ones (read from
    ``/proc``, Linux) plus every one that has exited (``RUSAGE_CHILDREN``: all waited-for
    children, so take differences)."""
    total = 0.0
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = ru.ru_utime + ru.ru_stime
    except ImportError:  # not POSIX
        pass
    with _idle_lock:
        pids = [w.proc.pid for w in _idle if w.owner == os.getpid() and w.proc.poll() is None]
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _forget_idle_after_fork() -> None:
    # The lock may have been held by another thread at the fork: the child gets a new one.
    global _idle_lock
    _idle_lock = threading.Lock()
    for w in _idle:
        w.close_channels()
    _idle.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_idle_after_fork)


class ProcessSink:
    """Feeds the event stream to a writer process that renders them into ``file`` (see module docstring).

    ``file`` is the open trace file; the process gets its descriptor and this object closes
    its own copy. ``compress``: the writer appends the lines to it as a gzip member.
    """

    def __init__(self, file: IO[Any], buffer_bytes: int, compress: bool = False) -> None:
        file.flush()
        self._w = _take_writer(buffer_bytes)
        try:
            self._w.open(file.fileno(), compress)
        except OSError:  # the idle writer died meanwhile: a new one
            self._w.kill()
            self._w = _WriterProcess(buffer_bytes)
            self._w.open(file.fileno(), compress)
        file.close()  # the writer holds the file now
        self.closed = False
        self._ops_known = -1
        # A writer never closed (a forgotten close, an interpreter exit) still gets its EOF.
        self._finalizer = weakref.finalize(self, _finalize, self._w)

    @property
    def _proc(self) -> subprocess.Popen[bytes]:
        return self._w.proc

    # ---- sending ---------------------------------------------------------------------------
    def send(self, ops: list[Any], *trees: Any) -> None:
        """Send one chunk of the event stream and its trees' arrays (``feed``'s arguments, see
        :mod:`.tracing_render`); blocks only while the writer is a pipe behind."""
        if self.closed:
            raise ValueError("send on a closed trace sink")
        from ..expr.operators import OPERATORS

        if len(OPERATORS) != self._ops_known:  # first chunk, or operators registered since
            self._ops_known = len(OPERATORS)
            self._write(_encode_parts(MSG_FORMS, operator_forms()))
        self._write(_encode_parts(MSG_OPS, (ops, *(bytes(b) for b in trees))))

    def _write(self, parts: tuple[bytes, bytes]) -> None:
        try:
            for part in parts:
                self._w.backlog.put(part)
        except OSError as exc:  # BrokenPipeError: the writer died
            self.abort()
            raise TraceWriterError(self._w.failure("the trace writer process stopped")) from exc

    # ---- ending ----------------------------------------------------------------------------
    def close(self) -> None:
        """Tell the writer the file is complete and wait until it is; raise if it failed."""
        if self.closed:
            return
        self._write(_encode_parts(MSG_CLOSE, None))
        self.closed = True
        self._finalizer.detach()
        w = self._w
        try:
            w.backlog.finish()
            done = w.backlog.error is None and w.wait_file()
        except BaseException:  # e.g. a second Ctrl-C while waiting: stop the writer now
            w.kill()
            raise
        if done:
            _give_back(w)
            return
        try:  # it failed and is exiting: let it write its message first
            w.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        w.kill()
        rc = w.proc.wait()
        raise TraceWriterError(w.failure(f"the trace writer process exited with status {rc}"))

    def abort(self) -> None:
        """Kill the writer (lines not yet written are lost; the last one may be cut)."""
        if self.closed:
            return
        self.closed = True
        self._finalizer.detach()
        self._w.kill()


_ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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


def _finalize(w: _WriterProcess) -> None:
    """A sink dropped without ``close``: EOF to its writer, which completes the file and exits."""
    try:
        w.shutdown()
    except (OSError, KeyboardInterrupt, subprocess.TimeoutExpired):
        pass  # shutdown killed it


def open_sink(file: IO[Any], buffer_bytes: int, background: bool | None,
              compress: bool = False) -> InlineSink | ProcessSink:
    """A :class:`ProcessSink` when ``background``, else an :class:`InlineSink`.

    ``compress``: ``file`` is binary and the lines go into it as a gzip member
    (:class:`GzipTextFile`); else ``file`` is a text file.

    ``background=None`` reads :data:`WRITER_ENV`, else takes the process sink on POSIX (it
    needs ``pass_fds``). A process sink asked for explicitly that cannot start raises; the
    default falls back to rendering inline.
    """
    explicit = background is not None
    if background is None:
        choice = os.environ.get(WRITER_ENV, "").strip().lower()
        if choice not in ("", "inline", "process"):
            raise ValueError(f"{WRITER_ENV} must be 'inline' or 'process', not {choice!r}")
        explicit = bool(choice)
        background = choice == "process" or (not choice and os.name == "posix")
    if background:
        try:
            return ProcessSink(file, buffer_bytes, compress)
        except OSError:
            if explicit:
                raise
    return InlineSink(GzipTextFile(file, buffer_bytes) if compress else file)


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
        yield decode_message(data)


def run_writer(stream: IO[bytes], out: IO[str]) -> tuple[int, bool]:
    """Render the messages of ``stream`` into ``out`` up to the file's ``MSG_CLOSE`` (then
    ``(lines written, True)``) or EOF (``(lines, False)``)."""
    renderer = TraceRenderer()
    lines = 0
    for kind, payload in _read_messages(stream):
        if kind == MSG_FORMS:
            renderer.set_forms(payload)
            continue
        if kind == MSG_CLOSE:
            return lines, True
        if not (isinstance(payload, tuple) and len(payload) in (1, 4, 8)
                and isinstance(payload[0], list)
                and all(isinstance(b, bytes) for b in payload[1:])):
            raise TypeError("malformed trace writer message: not (events, codes, vals, lens"
                            "[, table codes, table vals, table lens, slots])")
        for line in renderer.feed(*payload):
            out.write(line)
            out.write("\n")
            lines += 1
    return lines, False


def _light_expr_package() -> None:
    """Let the writer import ``ttsr_bridge.expr.printer`` without the package's ``__init__``.

    The package ``__init__`` imports the compiled evaluator (numba: a quarter of a second of
    CPU at the start of every traced search, on the core the search may need). The writer only
    prints trees, so in this process alone the package is a bare namespace over its folder.
    """
    name = "ttsr_bridge.expr"
    if name in sys.modules:
        return
    import types

    pkg = types.ModuleType(name, "ttsr_bridge.expr (printing only, in the trace writer)")
    pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "expr")]
    pkg.__package__ = name
    sys.modules[name] = pkg


def serve(ctl: Any, stream: IO[bytes], buffer_bytes: int) -> int:
    """The writer's loop: take a trace file's descriptor from the socket ``ctl``, render the
    frames of ``stream`` into it up to ``MSG_CLOSE``, close it, acknowledge; again, until the
    search process closes the socket or the pipe (EOF: the current file is completed, then the
    writer exits)."""
    import socket

    while True:
        try:
            kind, fds, _, _ = socket.recv_fds(ctl, 1, 1)
        except OSError:
            return 0
        if not fds:
            return 0  # no more files
        if kind == _FILE_GZIP:
            # Unbuffered below the compressor: the buffer is above it (GzipTextFile).
            out: IO[str] = GzipTextFile(os.fdopen(fds[0], "wb", buffering=0), buffer_bytes)
        else:
            out = os.fdopen(fds[0], "w", encoding="utf-8", buffering=buffer_bytes)
        with out:
            _, closed = run_writer(stream, out)
        if not closed:
            return 0
        ctl.sendall(_FILE_DONE)
        if tree_batch.nodes_printed() >= tree_batch.PRELOAD_AFTER_NODES:
            # Between files (no search waits for this one), and once: the compiled tree walk.
            tree_batch.load_compiled_walk()


def main(argv: list[str] | None = None) -> int:
    """The writer process: ``python -m ttsr_bridge.traces.tracing_process SOCKET_FD BUFFER_BYTES``."""
    import socket

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ttsr_bridge.traces.tracing_process SOCKET_FD BUFFER_BYTES "
              "(started by TraceWriter, not by hand)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _light_expr_package()
    fd, buffer_bytes = int(args[0]), int(args[1])
    with socket.socket(fileno=fd) as ctl:
        return serve(ctl, sys.stdin.buffer, buffer_bytes)


if __name__ == "__main__":
    status = main()
    # Everything is written and the file is closed: skip the interpreter's teardown (freeing
    # every cached string costs tens of milliseconds, which the search waits for in ``close``).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
