"""Small synthetic training datasets in the §7 Parquet layout (tests, smoke runs).

Parents are random trees; children come from a few SR.jl-like moves (perturb a constant,
swap an operator, swap a feature, wrap a subtree in an operator, delete an operator), so a
model can learn something in a few steps. This is not a substitute for real traces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..expr.operators import OperatorSet
from ..expr.tree import Expr
from ..propose.protocol import N_LOSS_BINS, DataStats

__all__ = ["DEFAULT_OPERATORS", "random_tree", "synthetic_child", "write_synthetic_dataset"]

DEFAULT_OPERATORS = OperatorSet.from_names(["+", "-", "*", "/"], ["sin", "cos", "exp"])


def random_tree(rng: np.random.Generator, size: int, nfeatures: int, operators: OperatorSet) -> Expr:
    """A random prefix tree with about ``size`` nodes (leaves: 60% features, 40% constants)."""
    codes: list[int] = []
    vals: list[float] = []
    open_slots = 1
    while open_slots:
        room = size - len(codes) - open_slots
        if room >= 2 and rng.random() < 0.6:
            o = operators.binary[rng.integers(len(operators.binary))]
            codes.append(-o.id)
            vals.append(0.0)
            open_slots += 1
        elif room >= 1 and operators.unary and rng.random() < 0.3:
            o = operators.unary[rng.integers(len(operators.unary))]
            codes.append(-o.id)
            vals.append(0.0)
        else:
            if rng.random() < 0.6:
                codes.append(int(rng.integers(nfeatures)) + 1)
                vals.append(0.0)
            else:
                codes.append(0)
                vals.append(float(np.round(rng.normal() * 2, 3)))
            open_slots -= 1
    return Expr(codes, vals)


def synthetic_child(parent: Expr, rng: np.random.Generator, nfeatures: int, operators: OperatorSet) -> tuple[Expr, str]:
    """One mutation of ``parent`` and the SR.jl name of the move."""
    move = int(rng.integers(4))
    consts = parent.constant_indices()
    if move == 0 and consts:
        i = consts[rng.integers(len(consts))]
        vals = parent.vals.copy()
        vals[i] *= float(1.1 ** rng.uniform(-1, 1))
        return Expr(parent.codes, vals), "mutate_constant"
    ops = parent.operator_indices()
    if move == 1 and ops:
        i = ops[rng.integers(len(ops))]
        arity = 2 if parent.children(i)[1:] else 1
        pool = operators.binary if arity == 2 else operators.unary
        codes = parent.codes.copy()
        codes[i] = -pool[rng.integers(len(pool))].id
        return Expr(codes, parent.vals), "mutate_operator"
    feats = parent.feature_indices()
    if move == 2 and feats:
        i = feats[rng.integers(len(feats))]
        codes = parent.codes.copy()
        codes[i] = int(rng.integers(nfeatures)) + 1
        return Expr(codes, parent.vals), "mutate_feature"
    # add_node-like: wrap the whole tree as (tree op leaf)
    o = operators.binary[rng.integers(len(operators.binary))]
    leaf = Expr([int(rng.integers(nfeatures)) + 1], [0.0])
    return Expr([-o.id] + parent.codes + leaf.codes, [0.0] + parent.vals + leaf.vals), "add_node"


def write_synthetic_dataset(directory: str | Path, n_rows: int, rng: np.random.Generator, *,
                            mode: str = "mutation", rich: bool = True, maxsize: int = 20,
                            n_problems: int = 6) -> Path:
    """Write ``examples-00000.parquet`` + ``dataset.json`` with the §7 columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    problems = []
    for p in range(n_problems):
        nf = int(rng.integers(1, 5))
        X = rng.uniform(-2, 2, size=(50, nf))
        y = np.sin(X[:, 0]) + 0.5 * X[:, -1] ** 2
        problems.append((f"synthetic_{p}", nf, DataStats.from_data(X, y), float(np.var(y))))
    rows: dict[str, list] = {}

    def add(name: str, value) -> None:
        rows.setdefault(name, []).append(value)

    bnames, unames = DEFAULT_OPERATORS.names()
    for r in range(n_rows):
        name, nf, stats, y_var = problems[r % n_problems]
        parent = random_tree(rng, int(rng.integers(3, maxsize - 3)), nf, DEFAULT_OPERATORS)
        child, move = synthetic_child(parent, rng, nf, DEFAULT_OPERATORS)
        ploss, closs = float(rng.uniform(0, 2)), float(rng.uniform(0, 2))
        for col, val in [
            ("problem", name), ("engine", "python"), ("split", "val" if r % n_problems == 0 else "train"),
            ("run", 0), ("output", 0), ("population", int(rng.integers(31))), ("iteration", int(rng.integers(40))),
            ("nfeatures", nf), ("binary_operators", list(bnames)), ("unary_operators", list(unames)),
            ("parent_codes", parent.codes), ("parent_vals", parent.vals), ("parent_loss", ploss),
            ("parent_loss_bin", int(rng.integers(N_LOSS_BINS))), ("child_codes", child.codes),
            ("child_vals", child.vals), ("child_loss", closs), ("child_loss_bin", int(rng.integers(N_LOSS_BINS))),
            ("mutation_type", move), ("accepted", bool(rng.random() < 0.5)), ("improved", closs < ploss),
            ("temperature", float(rng.random())), ("y_var", y_var),
        ]:
            add(col, val)
        if rich:
            for f, v in stats.__dict__.items():
                add(f"stats_{f}", list(v) if isinstance(v, tuple) else v)
        if mode == "population":
            members = [random_tree(rng, int(rng.integers(1, 8)), nf, DEFAULT_OPERATORS) for _ in range(3)]
            add("members_codes", [m.codes for m in members])
            add("members_vals", [m.vals for m in members])
            add("members_loss_bin", [int(rng.integers(N_LOSS_BINS)) for _ in members])
    table = pa.table(rows)
    int32_cols = ["run", "output", "population", "iteration", "nfeatures", "parent_loss_bin", "child_loss_bin"]
    table = table.cast(pa.schema([
        pa.field(f.name, pa.int32() if f.name in int32_cols else
                 pa.list_(pa.int32()) if f.name in ("parent_codes", "child_codes") else f.type)
        for f in table.schema
    ]))
    pq.write_table(table, directory / "examples-00000.parquet")
    manifest = {"schema_version": 1, "mode": mode, "context": "rich" if rich else "basic", "synthetic": True,
                "problems": [{"name": p[0], "split": "val" if i == 0 else "train"} for i, p in enumerate(problems)]}
    (directory / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return directory
