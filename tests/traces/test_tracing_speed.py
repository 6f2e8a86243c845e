"""Tracing stays cheap for the search: no garbage-collector work per event, and the overhead
benchmark runs (its figures are machine-dependent, so they are reported, not asserted)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from ttsr_bridge.expr.tree import op, var
from ttsr_bridge.search.population import PopMember
from ttsr_bridge.traces.tracing import MutationStepTrace, TraceWriter


class _NullSink:
    closed = False

    def __init__(self) -> None:
        self.items = 0
        self.trees = 0

    def send(self, ops: list, codes, vals, lens) -> None:
        self.items += len(ops)
        self.trees += len(lens) // 8

    def close(self) -> None:
        self.closed = True


def test_recording_allocates_no_tracked_objects(tmp_path: Path) -> None:
    """The hooks keep references to the trees and create no container that outlives a call
    (per-event tuples once made garbage collection the largest cost of a traced search)."""
    tree = op("+", op("*", var(0), var(1)), op("sin", var(2)))
    parent = PopMember(tree, 1.0, 1.0, 1, len(tree), 1, -1)
    dead = PopMember(tree, 2.0, 2.0, 0, len(tree), 2, -1)
    n = 5000
    kids = [PopMember(op("cos", var(0)), 0.5, 0.5, 2, 2, 10 + i, 1) for i in range(n)]
    steps = [[(parent, k, MutationStepTrace("add_node", "accept", "pass"))] for k in kids]
    with TraceWriter(tmp_path / "t.jsonl", "x", background=False) as tw:
        sink = tw._sink
        tw._sink = _NullSink()
        it = tw.iteration_start(1, 1, 0, [parent, dead])
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for s in steps[: n // 2]:
                it.mutation_attempts(s, dead, 1)
            for k in kids[n // 2:]:  # the engine's single-attempt hook
                it.mutation(parent, k, "add_node", "accept", "pass", dead)
            grown = len(gc.get_objects()) - before
        finally:
            gc.enable()
        assert tw._sink.items >= 13 * n  # every event was recorded and handed on
        assert tw._sink.trees + len(tw._trees) >= n  # with every child's tree
        tw._sink = sink
    assert grown < 50


@pytest.mark.slow
def test_overhead_benchmark_runs(capsys) -> None:
    from ttsr_bridge.bench.trace_overhead import main

    assert main(["--json", "--evals", "3000", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"plain_evals_per_s", "traced_evals_per_s", "overhead", "cpu_overhead"} <= set(out)
    assert out["plain_evals_per_s"] > 0 and out["traced_evals_per_s"] > 0


@pytest.mark.slow
def test_overhead_benchmark_concurrent_runs(capsys) -> None:
    from ttsr_bridge.bench.trace_overhead import main

    assert main(["--json", "--evals", "3000", "--repeats", "1", "--concurrent", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["concurrent"] == 2 and out["plain_evals_per_s"] > 0
    assert out["traced_over_plain"] == pytest.approx(
        out["traced_evals_per_s"] / out["plain_evals_per_s"], rel=1e-3)
