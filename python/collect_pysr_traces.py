"""Collect SR.jl-native search traces with real PySR on a few built-in problems (needs Julia).

    python python/collect_pysr_traces.py --out traces/out/pysr --seeds 2 --niterations 5
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("traces/out/pysr"))
    parser.add_argument("--suite", default="ultra-simple")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--niterations", type=int, default=5)
    args = parser.parse_args()

    from ttsr_bridge.bench.problems import get_suite
    from ttsr_bridge.pysr.spec import PySRBudget
    from ttsr_bridge.pysr.tracing import collect_unit_pysr
    from ttsr_bridge.traces.reader import read_trace

    budget = PySRBudget(niterations=args.niterations)
    for problem in get_suite(args.suite):
        for seed in range(args.seeds):
            unit = collect_unit_pysr(problem, seed, args.out / f"{problem.name}-seed{seed}.jsonl", budget)
            trace = read_trace(unit.path)
            print(f"{unit.problem} seed={seed}: {len(trace.iterations)} iteration records in {unit.seconds:.1f} s -> {unit.path}")


if __name__ == "__main__":
    main()
