"""The trace writer process: same bytes as inline, errors, Ctrl-C, a killed search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttsr_bridge.expr.tree import Expr, op, var
from ttsr_bridge.traces.reader import read_trace
from ttsr_bridge.traces.tracing import MutationStepTrace, TraceWriter
from ttsr_bridge.traces.tracing_process import (
    WRITER_ENV,
    ProcessSink,
    TraceWriterError,
    decode_message,
    encode_message,
)
from ttsr_bridge.traces.tracing_render import TraceRenderer

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the writer process needs pass_fds")


class Member:
    __slots__ = ("birth", "complexity", "cost", "loss", "parent", "ref", "tree")

    def __init__(self, tree: Expr, loss: float, ref: int, parent: int = -1) -> None:
        self.tree, self.loss, self.cost = tree, loss, loss
        self.complexity, self.birth, self.ref, self.parent = len(tree), 0, ref, parent


def _write_iterations(tw: TraceWriter, n: int, start_ref: int = 1) -> None:
    a = Member(op("sin", var(0)), 0.5, start_ref)
    for i in range(n):
        it = tw.iteration_start(1, 1, i, [a])
        b = Member(op("+", var(0), var(1)), 0.25, start_ref + 1 + i, a.ref)
        it.mutation_attempts([(a, b, MutationStepTrace("add_node", "accept", "pass"))], None, 1)
        tw.write(it)


def _small_search(path: Path | None, env: str, **config: int) -> None:
    """A seeded two-iteration search (``config``: other SearchConfig sizes) traced to ``path``
    by the ``env`` writer."""
    import numpy as np

    from ttsr_bridge.search import SearchConfig, equation_search

    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(40, 2))
    y = X[:, 0] * X[:, 1] + 1.0
    sizes = {"populations": 3, "population_size": 20, "ncycles_per_iteration": 20, **config}
    cfg = SearchConfig.preset("pysr", niterations=2, random_state=1, **sizes)
    saved = os.environ.get(WRITER_ENV)
    os.environ[WRITER_ENV] = env
    try:
        equation_search(X, y, cfg, trace=None if path is None else str(path))
    finally:
        if saved is None:
            os.environ.pop(WRITER_ENV)
        else:
            os.environ[WRITER_ENV] = saved


@pytest.fixture
def fixed_clock(monkeypatch) -> None:
    """Every clock read of the tracer the same: files of one seeded search are comparable."""
    from ttsr_bridge.traces import tracing

    def fixed() -> float:
        return 1.7e9 + 0.5

    monkeypatch.setattr(tracing, "_time", fixed)
    monkeypatch.setattr(tracing.time, "time", fixed)


def test_process_and_inline_write_the_same_bytes(tmp_path: Path, fixed_clock) -> None:
    _small_search(tmp_path / "inline.jsonl", "inline")
    _small_search(tmp_path / "process.jsonl", "process")
    inline = (tmp_path / "inline.jsonl").read_bytes()
    assert inline == (tmp_path / "process.jsonl").read_bytes()
    tf = read_trace(tmp_path / "process.jsonl", strict=True)
    assert tf.skipped == 0 and len(tf.iterations) == 2 * 3
    assert sum(len(it.mutations) for it in tf.iterations) > 100


@pytest.mark.parametrize("env", ["inline", "process"])
def test_gzip_trace_holds_the_same_bytes(tmp_path: Path, fixed_clock, env: str) -> None:
    import gzip

    from ttsr_bridge.traces.validate import validate_file

    _small_search(tmp_path / "t.jsonl", env)
    _small_search(tmp_path / "t.jsonl.gz", env)  # the name asks for gzip
    plain = (tmp_path / "t.jsonl").read_bytes()
    packed = (tmp_path / "t.jsonl.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b" and gzip.decompress(packed) == plain
    assert len(packed) * 4 < len(plain)
    tf = read_trace(tmp_path / "t.jsonl.gz", strict=True)
    assert tf.search is not None and len(tf.iterations) == 2 * 3
    assert validate_file(tmp_path / "t.jsonl.gz").ok
    # compress= overrides the name
    with TraceWriter(tmp_path / "named.jsonl", "x", compress=True, background=env == "process") as tw:
        _write_iterations(tw, 2)
    assert (tmp_path / "named.jsonl").read_bytes()[:2] == b"\x1f\x8b"
    with TraceWriter(tmp_path / "plain.gz", "x", compress=False, background=env == "process") as tw:
        _write_iterations(tw, 2)
    assert (tmp_path / "plain.gz").read_bytes().startswith(b'{"schema_version"')
    for name in ("named.jsonl", "plain.gz"):
        assert len(read_trace(tmp_path / name, strict=True).iterations) == 2


def test_killed_gzip_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    # The writer dies before ending its gzip member: the search line (a member of its own) and
    # whatever the cut member holds are read; the cut is one counted truncated line.
    path = tmp_path / "t.jsonl.gz"
    tw = TraceWriter(path, "x", background=True)
    search_member = path.stat().st_size
    _write_iterations(tw, 3)
    tw.flush()
    proc = tw._sink._proc
    deadline = time.monotonic() + 30
    while path.stat().st_size <= search_member and time.monotonic() < deadline:
        time.sleep(0.05)  # until the writer has begun its member (the gzip header)
    assert path.stat().st_size > search_member
    proc.kill()
    proc.wait()
    with pytest.raises(TraceWriterError):
        tw.close()
    tf = read_trace(path)
    assert tf.search is not None and tf.search.options == "x"
    assert tf.skipped == 1 and [e.kind for e in tf.errors] == ["truncated"]
    assert "cut off" in tf.errors[0].message


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_writer_loads_the_compiled_tree_walk_between_files(tmp_path: Path, fixed_clock) -> None:
    # After a file of some size the writer loads Numba's tree walk while idle; the next file,
    # printed by it, holds the same bytes as an inline writer's.
    from ttsr_bridge.traces.tracing_process import _idle

    sizes = {"populations": 10, "population_size": 27, "ncycles_per_iteration": 700}  # ~30k evals
    _small_search(tmp_path / "first.jsonl", "process", **sizes)  # > PRELOAD_AFTER_NODES

    (writer,) = [w for w in _idle if w.proc.poll() is None][-1:]
    maps = Path(f"/proc/{writer.proc.pid}/maps")
    deadline = time.monotonic() + 60
    while "llvmlite" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "llvmlite" in maps.read_text(), "the idle writer did not load the compiled walk"
    _small_search(tmp_path / "compiled.jsonl", "process", **sizes)
    _small_search(tmp_path / "inline.jsonl", "inline", **sizes)
    compiled = (tmp_path / "compiled.jsonl").read_bytes()
    assert compiled == (tmp_path / "inline.jsonl").read_bytes()
    assert compiled == (tmp_path / "first.jsonl").read_bytes()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_writer_process_runs_single_threaded(tmp_path: Path) -> None:
    # The writer imports NumPy but never does linear algebra: no BLAS thread pool for it.
    tw = TraceWriter(tmp_path / "t.jsonl", "x", background=True)
    try:
        environ = Path(f"/proc/{tw._sink._proc.pid}/environ").read_bytes().split(b"\0")
    finally:
        tw.close()
    assert b"OPENBLAS_NUM_THREADS=1" in environ and b"OMP_NUM_THREADS=1" in environ


def test_writer_failure_is_raised_with_its_message(tmp_path: Path) -> None:
    bad = Member(Expr([-9999, 1, 2]), 1.0, 1)  # no such operator: the writer cannot print it
    tw = TraceWriter(tmp_path / "t.jsonl", "x", background=True)
    assert tw.background
    proc = tw._sink._proc
    with pytest.raises(TraceWriterError, match="unknown operator id 9999"), tw:
        for i in range(200):  # until the dead writer's pipe breaks, or close reports it
            tw.write(tw.iteration_start(1, 1, i, [bad]))
    assert proc.poll() is not None
    assert tw.closed


def test_keyboard_interrupt_closes_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with pytest.raises(KeyboardInterrupt), TraceWriter(path, "x", background=True) as tw:
        proc = tw._sink._proc
        _write_iterations(tw, 2)
        raise KeyboardInterrupt
    tf = read_trace(path, strict=True)
    assert len(tf.iterations) == 2
    assert proc.poll() is None  # the file is complete and the writer waits for the next one


def _wait_sigint_ignored(pid: int, timeout: float = 60.0) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("needs /proc to see the writer's signal mask")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in status.read_text().splitlines():
            if line.startswith("SigIgn:") and int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)):
                return True
        time.sleep(0.02)
    return False


def test_writer_ignores_sigint_and_finishes(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, "x", background=True) as tw:
        proc = tw._sink._proc
        _write_iterations(tw, 1)
        assert _wait_sigint_ignored(proc.pid), "the writer never started ignoring SIGINT"
        os.kill(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        _write_iterations(tw, 2, start_ref=100)
    assert proc.poll() is None  # it survived the Ctrl-C and serves the next file
    assert len(read_trace(path, strict=True).iterations) == 3


def test_one_writer_process_serves_file_after_file(tmp_path: Path) -> None:
    # A finished file hands its writer process to the next traced search of this process:
    # the process starts (imports) once; each file is complete when its close returns.
    pids = []
    for k in range(3):
        with TraceWriter(tmp_path / f"t{k}.jsonl", "x", background=True) as tw:
            pids.append(tw._sink._proc.pid)
            _write_iterations(tw, k + 1, start_ref=10 * k + 1)
        assert len(read_trace(tmp_path / f"t{k}.jsonl", strict=True).iterations) == k + 1
    assert pids[0] == pids[1] == pids[2]
    # Two files open at once get two processes; both are complete at their close.
    with TraceWriter(tmp_path / "a.jsonl", "x", background=True) as ta, \
            TraceWriter(tmp_path / "b.jsonl", "x", background=True) as tb:
        assert ta._sink._proc.pid != tb._sink._proc.pid
        _write_iterations(ta, 2)
        _write_iterations(tb, 1)
    assert len(read_trace(tmp_path / "a.jsonl", strict=True).iterations) == 2
    assert len(read_trace(tmp_path / "b.jsonl", strict=True).iterations) == 1


def test_a_dead_idle_writer_is_replaced(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "a.jsonl", "x", background=True) as tw:
        first = tw._sink._proc
        _write_iterations(tw, 1)
    first.kill()  # dies while idle
    first.wait()
    with TraceWriter(tmp_path / "b.jsonl", "x", background=True) as tw:
        assert tw._sink._proc.pid != first.pid
        _write_iterations(tw, 2)
    assert len(read_trace(tmp_path / "b.jsonl", strict=True).iterations) == 2


def test_a_sink_dropped_without_close_still_completes_its_file(tmp_path: Path) -> None:
    import gc

    tw = TraceWriter(tmp_path / "t.jsonl", "x", background=True)
    proc = tw._sink._proc
    _write_iterations(tw, 2)
    del tw
    gc.collect()
    assert proc.wait(timeout=60) == 0  # EOF: the file is completed and the writer exits
    assert len(read_trace(tmp_path / "t.jsonl", strict=True).iterations) == 2


def test_unwritten_iteration_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, "x", background=True) as tw:
        _write_iterations(tw, 1)
        a = Member(var(0), 1.0, 50)
        it = tw.iteration_start(1, 2, 0, [a])  # a search stopped mid-iteration
        it.mutation_attempts([(a, Member(var(1), 2.0, 51, 50),
                               MutationStepTrace("mutate_feature", "reject", "acceptance"))],
                             None, 1)
        tw.flush()
    assert len(read_trace(path, strict=True).iterations) == 1


def test_killed_search_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    script = (
        "import numpy as np, sys\n"
        "from ttsr_bridge.search import SearchConfig, equation_search\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.uniform(-2, 2, size=(30, 2)); y = X[:, 0] * X[:, 1]\n"
        "cfg = SearchConfig.preset('pysr', niterations=100000, populations=2,\n"
        "    population_size=20, ncycles_per_iteration=10, random_state=0)\n"
        "equation_search(X, y, cfg, trace=sys.argv[1])\n"
    )
    env = dict(os.environ)
    env[WRITER_ENV] = "process"
    search = subprocess.Popen([sys.executable, "-c", script, str(path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 6:
                break
            assert search.poll() is None, "the search ended before it was killed"
            time.sleep(0.1)
        else:
            pytest.fail("the traced search wrote no iterations")
    finally:
        search.kill()
        search.wait()
    # The orphaned writer sees EOF, writes what it has and exits: wait for the file to settle.
    size, still = -1, 0
    deadline = time.monotonic() + 30
    while still < 10 and time.monotonic() < deadline:
        now = path.stat().st_size
        still = still + 1 if now == size else 0
        size = now
        time.sleep(0.1)
    tf = read_trace(path)
    assert tf.search is not None and len(tf.iterations) >= 5
    assert tf.skipped <= 1 and all(e.kind == "truncated" for e in tf.errors)


def test_frames_refuse_other_objects() -> None:
    import numpy as np

    kind, payload = decode_message(encode_message(1, [np.float64(0.5), np.int64(3), "a", None])[8:])
    assert kind == 1 and payload == [0.5, 3, "a", None]
    with pytest.raises(Exception, match="may not hold"):
        decode_message(encode_message(1, [Path("x")])[8:])
    with pytest.raises(ValueError, match="malformed"):
        decode_message(encode_message(9, [])[8:])


def test_operator_forms_travel_to_the_writer() -> None:
    r = TraceRenderer()
    r.string_tree.set_forms([(-777, 2, "myop", False), (-778, 2, "<=", True)])
    assert r.string_tree.print_lists([-777, 1, -778, 2, 0], [0.0] * 4 + [1.5]) == \
        "myop(x1, x2 <= 1.5)"


def test_writer_env_is_checked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(WRITER_ENV, "threads")
    with pytest.raises(ValueError, match=WRITER_ENV):
        TraceWriter(tmp_path / "t.jsonl", "x")
    monkeypatch.setenv(WRITER_ENV, "inline")
    with TraceWriter(tmp_path / "t.jsonl", "x") as tw:
        assert not tw.background
    monkeypatch.delenv(WRITER_ENV)
    with TraceWriter(tmp_path / "t.jsonl", "x") as tw:
        assert isinstance(tw._sink, ProcessSink)


def test_unwritable_path_raises_at_open(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TraceWriter(tmp_path / "missing" / "t.jsonl", "x", background=True)


def test_search_record_is_on_disk_at_open(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, "opts", background=True):
        first = json.loads(path.read_text().splitlines()[0])
        assert first["record_type"] == "search" and first["options"] == "opts"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_hold_the_idle_writer_open(tmp_path: Path) -> None:
    # A child forked while a writer is idle gets copies of its channels; they are closed in
    # the child, else the writer would never see EOF while the child lives.
    from ttsr_bridge.traces import tracing_process as tp

    with TraceWriter(tmp_path / "t.jsonl", "x", background=True) as tw:
        proc = tw._sink._proc
        _write_iterations(tw, 1)
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        w = tp._take_writer(1 << 20)
        assert w.proc.pid == proc.pid
        assert w.shutdown(timeout=20) == 0
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
