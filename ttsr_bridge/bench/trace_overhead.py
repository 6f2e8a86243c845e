"""Trace overhead: search throughput with and without ``trace=``, back to back.

The same search (``pysr`` preset, the engine-speed data set, ``--n-points`` points, one seed,
an evaluation budget) runs untraced then traced, ``--repeats`` times in alternation after a
warm-up that compiles the kernels; the overhead is ``median traced time / median plain time
- 1`` (the issue's bar: at most 0.15). Times are wall clock around ``equation_search``, so a
traced run includes starting the writer process and waiting for the last line at ``close``.
Both runs must make the same number of evaluations (tracing never changes a seeded search).

Also reported: ``cpu_overhead``, the extra CPU time of the search's own process (the wall
overhead when the writer process has a core of its own and keeps up), and the writer process's
CPU seconds — on a loaded machine the writer competes for the cores and the wall figure grows.

``--concurrent N`` measures a loaded machine instead: N searches at once (in N worker
processes, different seeds), plain then traced, ``--repeats`` times; the figures are the
evaluations per second of all N together, and ``overhead`` is ``plain / traced - 1``. With N
equal to the core count the writer processes compete with the searches for the cores, as in
``ttsr traces collect --workers N``.

Usage: ``python -m ttsr_bridge.bench.trace_overhead [--json] [--evals N] [--n-points N]
[--repeats R] [--seed S] [--inline] [--concurrent N] [--gzip]``. ``--gzip`` writes the traces
gzip-compressed (``trace.jsonl.gz``). ``--json`` prints one JSON line
``{"plain_evals_per_s", "traced_evals_per_s", "overhead", "cpu_overhead", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..traces.collect import unit_trace_name

__all__ = ["OverheadResult", "main", "measure_overhead"]


@dataclass(frozen=True)
class OverheadResult:
    """Medians and every repeat's wall-clock seconds of the plain and the traced search."""

    evals: float
    plain_seconds: tuple[float, ...]
    traced_seconds: tuple[float, ...]
    plain_cpu: tuple[float, ...]
    traced_cpu: tuple[float, ...]
    writer_cpu: tuple[float, ...]
    trace_bytes: int
    trace_lines: int

    @property
    def plain_median(self) -> float:
        return statistics.median(self.plain_seconds)

    @property
    def traced_median(self) -> float:
        return statistics.median(self.traced_seconds)

    @property
    def overhead(self) -> float:
        return self.traced_median / self.plain_median - 1.0

    @property
    def cpu_overhead(self) -> float:
        """Extra CPU time of the search's own process (what a free core for the writer leaves)."""
        return statistics.median(self.traced_cpu) / statistics.median(self.plain_cpu) - 1.0


@dataclass(frozen=True)
class _Run:
    wall: float  # seconds
    cpu: float  # this process's CPU seconds (the search's core)
    writer_cpu: float  # CPU seconds of the writer process (0 when there is none)
    evals: float


def _search_config(evals: int, seed: int):
    """The measured search: the ``pysr`` preset up to ``evals`` evaluations."""
    from ..search import SearchConfig

    return SearchConfig.preset("pysr", niterations=10_000, max_evals=evals, random_state=seed)


def _warm_up(X, y, seed: int, trace: Path, background: bool | None) -> None:
    """A small plain search (compiles the kernels), then a traced one (imports the tracing
    modules and starts the writer process, which later traced searches reuse)."""
    from ..search import SearchConfig

    warm = SearchConfig.preset("pysr", niterations=1, populations=2, ncycles_per_iteration=5,
                               random_state=seed)
    _timed_search(X, y, warm, None, None)
    _timed_search(X, y, warm, trace, background)


def _timed_search(X, y, config, trace: Path | None, background: bool | None) -> _Run:
    """Wall and CPU time of one search; the traced one writes to ``trace``. The writer's CPU
    is read from the writer processes (they outlive a search: reused)."""
    from ..search import equation_search
    from ..traces.tracing_process import WRITER_ENV, writer_cpu_seconds

    saved = os.environ.get(WRITER_ENV)
    if background is not None:  # equation_search's writer is chosen through the environment
        os.environ[WRITER_ENV] = "process" if background else "inline"
    try:
        k0, c0, t0 = writer_cpu_seconds(), time.process_time(), time.perf_counter()
        res = equation_search(X, y, config, trace=None if trace is None else str(trace))
        t1, c1, k1 = time.perf_counter(), time.process_time(), writer_cpu_seconds()
        return _Run(t1 - t0, c1 - c0, k1 - k0, float(res.num_evals))
    finally:
        if saved is None:
            os.environ.pop(WRITER_ENV, None)
        else:
            os.environ[WRITER_ENV] = saved


def measure_overhead(
    evals: int, n_points: int, seed: int, repeats: int, *, background: bool | None = None,
    workdir: Path | None = None, compress: bool = False,
) -> OverheadResult:
    """Run the plain and the traced search ``repeats`` times each, alternating (``compress``:
    gzip traces)."""
    from .engine_speed import make_data

    X, y = make_data(seed, n_points)
    cfg = _search_config(evals, seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / unit_trace_name("trace", compress)
        _warm_up(X, y, seed, path, background)
        plain: list[_Run] = []
        traced: list[_Run] = []
        for _ in range(repeats):
            plain.append(_timed_search(X, y, cfg, None, None))
            # A new file per run, as collect writes its shards: rewriting an existing file makes
            # ext4 flush it on close (its replace-by-truncate heuristic), ~17 ms per 40 MB.
            path.unlink(missing_ok=True)
            traced.append(_timed_search(X, y, cfg, path, background))
            if plain[-1].evals != traced[-1].evals:
                raise RuntimeError(f"tracing changed the search: {plain[-1].evals} vs "
                                   f"{traced[-1].evals} evals")
        from ..traces.reader import read_lines

        lines = sum(1 for _ in read_lines(path))
        return OverheadResult(
            plain[0].evals, tuple(r.wall for r in plain), tuple(r.wall for r in traced),
            tuple(r.cpu for r in plain), tuple(r.cpu for r in traced),
            tuple(r.writer_cpu for r in traced), path.stat().st_size, lines)


# ---- a loaded machine: N searches at once ----------------------------------------------------
_POOL_DATA: tuple[Any, Any] | None = None


def _pool_init(seed: int, n_points: int, background: bool | None, ready: Any) -> None:
    """Worker start: the data and the warm-up (:func:`_warm_up`); then wait on the barrier
    ``ready`` until every worker (and the parent) is there."""
    global _POOL_DATA
    from .engine_speed import make_data

    _POOL_DATA = make_data(seed, n_points)
    with tempfile.TemporaryDirectory() as tmp:
        _warm_up(*_POOL_DATA, seed, Path(tmp) / "warm.jsonl", background)
    ready.wait()


def _pool_search(task: tuple[int, int, str | None, bool | None, bool]) -> float:
    """One search of a worker (traced into the folder ``task[2]`` unless it is None, gzip if
    ``task[4]``); its evaluations."""
    evals, seed, folder, background, compress = task
    assert _POOL_DATA is not None
    cfg = _search_config(evals, seed)
    name = unit_trace_name(f"trace-{seed}-{time.monotonic_ns()}", compress)
    path = None if folder is None else Path(folder) / name
    run = _timed_search(*_POOL_DATA, cfg, path, background)
    if path is not None:
        path.unlink()
    return run.evals


def measure_concurrent(evals: int, n_points: int, seed: int, repeats: int, workers: int, *,
                       background: bool | None = None,
                       compress: bool = False) -> tuple[list[float], list[float]]:
    """Evaluations per second of ``workers`` searches at once, plain and traced (alternating,
    ``repeats`` each)."""
    import multiprocessing as mp

    plain: list[float] = []
    traced: list[float] = []
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(workers + 1)
    with tempfile.TemporaryDirectory() as tmp, ctx.Pool(
            workers, _pool_init, (seed, n_points, background, ready)) as pool:
        ready.wait(timeout=600)  # every worker has started and warmed up
        for _ in range(repeats):
            for folder, out in ((None, plain), (tmp, traced)):
                tasks = [(evals, seed + k, folder, background, compress) for k in range(workers)]
                t0 = time.perf_counter()
                total = sum(pool.map(_pool_search, tasks, chunksize=1))
                out.append(total / (time.perf_counter() - t0))
    return plain, traced


def _concurrent_main(args: argparse.Namespace) -> dict[str, Any]:
    plain, traced = measure_concurrent(args.evals, args.n_points, args.seed, args.repeats,
                                       args.concurrent,
                                       background=False if args.inline else None,
                                       compress=args.gzip)
    p, t = statistics.median(plain), statistics.median(traced)
    return {
        "plain_evals_per_s": round(p, 1),
        "traced_evals_per_s": round(t, 1),
        "overhead": round(p / t - 1.0, 4),
        "traced_over_plain": round(t / p, 4),
        "concurrent": args.concurrent,
        "evals_per_search": args.evals,
        "plain_runs": [round(x, 1) for x in plain],
        "traced_runs": [round(x, 1) for x in traced],
        "n_points": args.n_points,
        "repeats": args.repeats,
        "writer": "inline" if args.inline else "process",
        "gzip": args.gzip,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--evals", type=int, default=100_000, help="evaluation budget per search")
    ap.add_argument("--n-points", type=int, default=100, help="data points")
    ap.add_argument("--repeats", type=int, default=3, help="plain/traced pairs (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inline", action="store_true",
                    help="render the trace in the search process (no writer process)")
    ap.add_argument("--concurrent", type=int, default=1, metavar="N",
                    help="run N searches at once (a loaded machine; default 1)")
    ap.add_argument("--gzip", action="store_true", help="write the traces gzip-compressed")
    args = ap.parse_args(argv)
    if args.evals < 1000 or args.n_points < 2 or args.repeats < 1 or args.concurrent < 1:
        ap.error("need --evals >= 1000, --n-points >= 2, --repeats >= 1, --concurrent >= 1")
    if args.concurrent > 1:
        _print(_concurrent_main(args), args.json)
        return 0
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    r = measure_overhead(args.evals, args.n_points, args.seed, args.repeats,
                         background=False if args.inline else None, compress=args.gzip)
    out = {
        "plain_evals_per_s": round(r.evals / r.plain_median, 1),
        "traced_evals_per_s": round(r.evals / r.traced_median, 1),
        "overhead": round(r.overhead, 4),
        "evals": r.evals,
        "cpu_overhead": round(r.cpu_overhead, 4),
        "plain_seconds": [round(s, 3) for s in r.plain_seconds],
        "traced_seconds": [round(s, 3) for s in r.traced_seconds],
        "plain_cpu_seconds": [round(s, 3) for s in r.plain_cpu],
        "traced_cpu_seconds": [round(s, 3) for s in r.traced_cpu],
        "writer_cpu_seconds": [round(s, 3) for s in r.writer_cpu],
        "trace_bytes": r.trace_bytes,
        "trace_lines": r.trace_lines,
        "n_points": args.n_points,
        "repeats": args.repeats,
        "writer": "inline" if args.inline else "process",
        "gzip": args.gzip,
        "loadavg_before": list(load_before) if load_before else None,
        "loadavg_after": list(os.getloadavg()) if load_before else None,
        "cpus": os.cpu_count(),
    }
    _print(out, args.json)
    return 0


def _print(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")


if __name__ == "__main__":
    sys.exit(main())
