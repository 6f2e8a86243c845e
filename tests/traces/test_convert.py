"""Trace collection → Parquet conversion: schema, split by problem, held-out exclusion."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ttsr_bridge.expr.parser import parse_tree
from ttsr_bridge.expr.tree import Expr
from ttsr_bridge.traces.convert import (
    ConvertConfig,
    ConvertError,
    HeldOut,
    canonical_mutation_name,
    convert,
    example_schema,
    iter_dataset_rows,
    load_heldout,
    split_of,
)
from ttsr_bridge.traces.tracing import MutationStepTrace, TraceWriter

FIXTURE = Path(__file__).resolve().parents[2] / "traces" / "fixtures" / "pysr_style_small.jsonl"


@dataclass
class Member:
    tree: Expr
    loss: float
    cost: float
    complexity: int
    birth: int
    ref: int
    parent: int


def _m(text: str, loss: float, ref: int, parent: int = -1) -> Member:
    return Member(parse_tree(text), loss, loss, 1, 0, ref, parent)


def _write_unit(shards: Path, problem: dict, run: int, engine: str = "python") -> None:
    """One unit written by the real TraceWriter plus the metadata `collect` writes."""
    uid = f"{problem['name']}__run{run:03d}"
    a, b = _m("x1 * 2.0", 1.0, 1), _m("x1", 4.0, 2)
    c = _m("(x1 * 2.0) + x1", 0.5, 3, parent=1)
    d = _m("x1 - 1.0", 5.0, 4, parent=2)
    g, h = _m("x1 * x1", 0.1, 5, parent=1), _m("x1 + 2.0", 3.0, 6, parent=2)
    with TraceWriter(shards / f"{uid}.jsonl", "opts") as tw:
        it = tw.iteration_start(1, 1, 0, [a, b])
        it.mutation_attempts([(a, c, MutationStepTrace("add_node:append", "accept", "pass"))], b, 1)
        it.mutation_attempts([(b, d, MutationStepTrace("mutate_constant", "reject", "acceptance"))],
                             None, 1)
        it.crossover(a, b, g, h, a, b, {"type": "subtree_crossover", "result": "accept",
                                         "reason": "pass"})
        tw.write(it)
    meta = {"unit": uid, "problem": problem["name"], "run": run, "engine": engine, "nfeatures": 1,
            "y_var": 2.0, "binary_operators": ["+", "-", "*", "/"], "unary_operators": [],
            "problem_spec": problem,
            "data_stats": {"n_samples": 10, "y_mean": 0.0, "y_std": 1.0, "y_min": -1.0,
                           "y_max": 1.0, "x_mean": [0.0], "x_std": [1.0], "x_min": [-1.0],
                           "x_max": [1.0], "corr_xy": [0.5], "monotonic_xy": [0.4]}}
    (shards / f"{uid}.json").write_text(json.dumps(meta))


def _problem(name: str, formula: str, var: str = "x") -> dict:
    return {"name": name, "formula": formula, "variables": {var: [-1.0, 1.0]}, "n_points": 20}


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    shards = tmp_path / "coll" / "shards"
    shards.mkdir(parents=True)
    for i in range(12):
        _write_unit(shards, _problem(f"train_prob{i}", f"{i + 2}*x**2 + x"), 0)
    _write_unit(shards, _problem("train_prob0", "2*x**2 + x"), 1)
    _write_unit(shards, _problem("nguyen1", "x**5"), 0)  # held out by name
    _write_unit(shards, _problem("disguised", "z + z**2 + z**3", var="z"), 0)  # = Nguyen-1
    return tmp_path / "coll"


def test_mutation_names_map() -> None:
    assert canonical_mutation_name("add_node:prepend") == "add_node"
    assert canonical_mutation_name("identity") == "do_nothing"
    assert canonical_mutation_name("subtree_crossover") == "crossover"
    assert canonical_mutation_name("weight_mutate_constant") == "mutate_constant"
    assert canonical_mutation_name("RotateTreeMutation") == "rotate_tree"
    assert canonical_mutation_name("neural") == "neural"


def test_split_is_by_problem_and_stable() -> None:
    names = [f"p{i}" for i in range(2000)]
    val = [n for n in names if split_of(n, 0.2) == "val"]
    assert 300 < len(val) < 500
    assert val == [n for n in names if split_of(n, 0.2) == "val"]
    assert all(split_of(n, 0.0) == "train" for n in names)


def test_convert_mutation_mode(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    cfg = ConvertConfig(inputs=(str(collection),), out=str(out), mode="mutation", context="rich",
                        val_fraction=0.3, rows_per_shard=20)
    report = convert(cfg, progress=False)
    assert set(report.refused) == {"nguyen1", "disguised"}
    assert report.refused["disguised"] == "canonical_form"
    # per unit: 1 selected accepted mutate + 1 selected rejected mutate + 2 crossover halves
    assert report.rows == 13 * 4 and len(report.shards) == 3
    schema = pq.read_schema(out / report.shards[0])
    assert schema.equals(example_schema("mutation", "rich"), check_metadata=False)
    rows = list(iter_dataset_rows(out))
    assert {r["problem"] for r in rows} == {f"train_prob{i}" for i in range(12)}
    by_problem: dict[str, set[str]] = {}
    for r in rows:
        by_problem.setdefault(r["problem"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_problem.values())  # never split within a problem
    assert {"train", "val"} == {s for v in by_problem.values() for s in v}
    add = next(r for r in rows if r["mutation_type"] == "add_node")
    assert add["mutation_detail"] == "add_node:append" and add["accepted"] and add["improved"]
    assert Expr(add["parent_codes"], add["parent_vals"]).codes == parse_tree("x1 * 2.0").codes
    assert add["child_vals"][3] == 2.0 and add["parent_loss_bin"] >= add["child_loss_bin"]
    assert math.isnan(add["temperature"]) and add["y_var"] == 2.0 and add["stats_x_std"] == [1.0]
    rej = next(r for r in rows if r["mutation_type"] == "mutate_constant")
    assert not rej["accepted"] and not rej["improved"]
    assert sum(r["mutation_type"] == "crossover" for r in rows) == 13 * 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["mode"] == "mutation" and meta["rows"] == report.rows
    assert {p["name"] for p in meta["problems"]} == set(by_problem)
    assert {r["name"] for r in meta["heldout"]["refused"]} == {"nguyen1", "disguised"}


def test_convert_population_mode_and_filter(collection: Path, tmp_path: Path) -> None:
    user_heldout = tmp_path / "heldout.txt"
    user_heldout.write_text("# names\ntrain_prob3\n")
    cfg = ConvertConfig(inputs=(str(collection),), out=str(tmp_path / "ds"), mode="population",
                        filter="improving", heldout_files=(str(user_heldout),))
    report = convert(cfg, progress=False)
    assert "train_prob3" in report.refused
    rows = list(iter_dataset_rows(tmp_path / "ds"))
    assert rows and all(r["accepted"] and r["improved"] for r in rows)
    assert all(len(r["members_codes"]) == 2 and len(r["members_loss_bin"]) == 2 for r in rows)
    with pytest.raises(ConvertError, match="not empty"):
        convert(cfg, progress=False)
    convert(ConvertConfig(**{**cfg.__dict__, "overwrite": True}), progress=False)


def test_pysr_fixture_converts(tmp_path: Path) -> None:
    shards = tmp_path / "c" / "shards"
    shards.mkdir(parents=True)
    (shards / "fx__run000.jsonl").write_bytes(FIXTURE.read_bytes())
    (shards / "fx__run000.json").write_text(json.dumps({
        "problem": "fx", "engine": "pysr", "run": 0, "nfeatures": 2, "y_var": 1.0,
        "binary_operators": ["+", "-", "*", "/"], "unary_operators": ["sin", "cos", "exp"]}))
    empty = HeldOut(frozenset(), frozenset(), ())
    report = convert(ConvertConfig(inputs=(str(tmp_path / "c"),), out=str(tmp_path / "ds")),
                     heldout=empty, progress=False)
    rows = list(iter_dataset_rows(tmp_path / "ds"))
    types = sorted(r["mutation_type"] for r in rows)
    assert types == ["add_node", "crossover", "crossover", "do_nothing", "mutate_operator",
                     "optimize", "rotate_tree"]
    assert report.counts["unparsable_trees"] == 0 and all(r["engine"] == "pysr" for r in rows)


def test_builtin_heldout_covers_suites() -> None:
    h = load_heldout()
    assert {"nguyen1", "nguyen12"} <= h.names and "seeds" in h.sources
    assert len(h.forms) >= 20


def test_convert_sample_thins_deterministically(collection: Path, tmp_path: Path) -> None:
    def rows(name: str, sample: float, seed: int = 0) -> list[tuple]:
        cfg = ConvertConfig(inputs=(str(collection),), out=str(tmp_path / name), sample=sample, seed=seed)
        convert(cfg, progress=False)
        return [(r["problem"], r["mutation_detail"], tuple(r["child_codes"]))
                for r in iter_dataset_rows(tmp_path / name)]

    full = rows("full", 1.0)
    half = rows("half", 0.5)
    assert 0 < len(half) < len(full) and set(half) <= set(full)
    assert rows("half_again", 0.5) == half  # same seed, same rows
    with pytest.raises(ConvertError, match="--sample"):
        ConvertConfig(inputs=(str(collection),), out=str(tmp_path / "bad"), sample=0.0)


def test_pysr_float32_trace_converts(tmp_path: Path) -> None:
    """A precision=32 SR.jl trace prints constants as ``2.5f0``: they convert, widened exactly."""
    import re

    import numpy as np

    def julia_float32(m: re.Match[str]) -> str:
        """Julia's ``string(Float32(x))``: shortest digits, ``f`` exponent marker."""
        digits, _, exponent = str(np.float32(float(m.group()))).partition("e")
        digits += "" if "." in digits else ".0"
        return f"{digits}f{int(exponent or 0)}"

    def to_float32_text(m: re.Match[str]) -> str:
        return '"tree":"' + re.sub(r"\d+\.\d+(?:e[+-]?\d+)?", julia_float32, m.group(1)) + '"'

    text = re.sub(r'"tree":"([^"]*)"', to_float32_text, FIXTURE.read_text())
    assert "(x1 * 2.5f0) + sin(x2)" in text and "-0.31415927f0" in text
    shards = tmp_path / "c" / "shards"
    shards.mkdir(parents=True)
    (shards / "fx32__run000.jsonl").write_text(text)
    (shards / "fx32__run000.json").write_text(json.dumps({
        "problem": "fx32", "engine": "pysr", "run": 0, "nfeatures": 2, "y_var": 1.0,
        "binary_operators": ["+", "-", "*", "/"], "unary_operators": ["sin", "cos", "exp"]}))
    empty = HeldOut(frozenset(), frozenset(), ())
    report = convert(ConvertConfig(inputs=(str(tmp_path / "c"),), out=str(tmp_path / "ds")),
                     heldout=empty, progress=False)
    assert report.counts["unparsable_trees"] == 0
    rows = list(iter_dataset_rows(tmp_path / "ds"))
    assert len(rows) == 7
    constants = {v for r in rows for codes, vals in ((r["parent_codes"], r["parent_vals"]),
                                                     (r["child_codes"], r["child_vals"]))
                 for c, v in zip(codes, vals) if c == 0}
    assert 2.5 in constants and float(np.float32(-0.3141592653589793)) in constants
    assert -0.3141592653589793 not in constants  # the Float32 value, not the decimal text's
