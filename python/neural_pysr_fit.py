"""Fit PySR with the neural move proposer inside SR.jl (needs Julia; PySR installs it on first use).

    python python/neural_pysr_fit.py [--model model.onnx|default|classic]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="exported ONNX model, 'default' or 'classic'")
    parser.add_argument("--niterations", type=int, default=20)
    args = parser.parse_args()

    from ttsr_bridge import PySRRegressor
    from ttsr_bridge.pysr.regressor import bridge_stats

    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(200, 2))
    y = 2.5 * np.cos(X[:, 1]) + X[:, 0] ** 2 - 0.5
    model = PySRRegressor(
        neural_proposer=args.model,
        neural_weight=1.0,
        niterations=args.niterations,
        binary_operators=["+", "-", "*", "/"],
        unary_operators=["cos", "exp"],
        random_state=0,
        progress=False,
        temp_equation_file=True,
    )
    model.fit(X, y)
    print(model.equations_[["complexity", "loss", "equation"]].to_string(index=False))
    print("best:", model.sympy())
    print("bridge:", bridge_stats())


if __name__ == "__main__":
    main()
