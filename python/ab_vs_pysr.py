"""A/B: stock PySR vs PySR with the neural move, same budget and seeds (needs Julia).

    python python/ab_vs_pysr.py --model default --suite ultra-simple --seeds 3 --niterations 10
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--suite", default="ultra-simple")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--niterations", type=int, default=10)
    args = parser.parse_args()

    import numpy as np

    from ttsr_bridge.bench.problems import get_suite
    from ttsr_bridge.pysr.bench_adapter import run_pysr
    from ttsr_bridge.pysr.spec import PySRBudget

    budget = PySRBudget(niterations=args.niterations)
    print(f"{'problem':<24}{'seed':>5}{'pysr loss':>14}{'neural loss':>14}{'pysr s':>9}{'neural s':>9}")
    for problem in get_suite(args.suite):
        for seed in range(args.seeds):
            X, y = problem.sample(np.random.default_rng(seed))
            a = run_pysr(X, y, neural_proposer=None, budget=budget, seed=seed, operators=problem.operators)
            b = run_pysr(X, y, neural_proposer=args.model, budget=budget, seed=seed, operators=problem.operators)
            la = a.best.loss if a.best else float("nan")
            lb = b.best.loss if b.best else float("nan")
            print(f"{problem.name:<24}{seed:>5}{la:>14.3e}{lb:>14.3e}{a.seconds:>9.1f}{b.seconds:>9.1f}")


if __name__ == "__main__":
    main()
