"""Convert trace collections into Parquet training examples (docs/architecture.md §7).

Input: one or more collection directories (``ttsr traces collect``): ``shards/<unit>.jsonl``
(or ``.jsonl.gz``) traces of either engine plus ``shards/<unit>.json`` metadata. Output: a
dataset directory with ``examples-NNNNN.parquet`` shards and ``dataset.json``.

* ``mutation`` mode: one row per *selected* ``mutate`` event (the attempt SR.jl kept) and two
  rows per crossover (child1 from parent1, child2 from parent2), with the parent and child as
  ``Expr`` codes/values, losses and their bins, the move's SR.jl name and the outcome.
* ``population`` mode: the same rows plus the population at the start of the iteration.
* ``--context rich`` adds the ``stats_*`` columns (:class:`~ttsr_bridge.propose.protocol.DataStats`).

Train/val is split by problem (a stable hash of its name), never by row. Every problem of a
held-out suite (seeds, Nguyen, pysr-tuning, Feynman/DSO when the shared folder exists) and every
user-named held-out problem is refused — matched by name and by the canonical form of its ground
truth — and the refusals are counted in ``dataset.json``. Memory is bounded: traces are
streamed one file at a time and rows are flushed every ``rows_per_shard`` rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .collect import unit_trace_name, unit_traces
from .reader import iter_trace
from .records import CrossoverEvent, IterationRecord, MutateEvent, MutationEntry

__all__ = [
    "DATASET_SCHEMA_VERSION",
    "ConvertConfig",
    "ConvertError",
    "ConvertReport",
    "HeldOut",
    "canonical_mutation_name",
    "convert",
    "example_schema",
    "load_heldout",
    "split_of",
]

DATASET_SCHEMA_VERSION = 1
Mode = Literal["mutation", "population"]
Context = Literal["basic", "rich"]
Filter = Literal["all", "accepted", "improving"]

# Trace mutation names (SR.jl of any version, PySR's weight names, Julia type names) → the
# SR.jl names of `search.config.MUTATION_NAMES` (+ crossover, neural, backsolve).
_MUTATION_ALIASES: dict[str, str] = {
    "add_node:append": "add_node", "add_node:prepend": "add_node", "append_node": "add_node",
    "prepend_node": "add_node", "addnode": "add_node",
    "identity": "do_nothing", "donothing": "do_nothing",
    "subtree_crossover": "crossover",
    "constantmutation": "mutate_constant", "operatormutation": "mutate_operator",
    "featuremutation": "mutate_feature", "swapoperandsmutation": "swap_operands",
    "addnodemutation": "add_node", "insertnodemutation": "insert_node",
    "deletenodemutation": "delete_node", "rotatetreemutation": "rotate_tree",
    "simplifymutation": "simplify", "randomizemutation": "randomize",
    "optimizemutation": "optimize", "donothingmutation": "do_nothing",
    "backsolvemutation": "backsolve", "neuralmutation": "neural",
}


def canonical_mutation_name(raw: str) -> str:
    """The SR.jl mutation name of a trace's ``mutation.type`` (PySR/SR.jl spellings mapped)."""
    name = raw.strip()
    name = name.removeprefix(":")  # a Julia Symbol printed as a string
    name = name.removeprefix("weight_")
    key = name.lower()
    return _MUTATION_ALIASES.get(key, _MUTATION_ALIASES.get(key.replace("_", ""), key))


class ConvertError(RuntimeError):
    """A conversion that cannot run as asked."""


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and how."""

    inputs: tuple[str, ...]
    out: str
    mode: Mode = "mutation"
    context: Context = "basic"
    filter: Filter = "all"
    val_fraction: float = 0.1
    heldout_files: tuple[str, ...] = ()
    rows_per_shard: int = 100_000
    overwrite: bool = False
    # Keep this fraction of the moves (after --filter), drawn per trace file from a seeded RNG,
    # so long searches can be thinned deterministically.
    sample: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("mutation", "population"):
            raise ConvertError(f"--mode must be mutation or population, got {self.mode!r}")
        if self.context not in ("basic", "rich"):
            raise ConvertError(f"--context must be basic or rich, got {self.context!r}")
        if self.filter not in ("all", "accepted", "improving"):
            raise ConvertError(f"--filter must be all, accepted or improving, got {self.filter!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConvertError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.rows_per_shard < 1:
            raise ConvertError("rows_per_shard must be >= 1")
        if not 0.0 < self.sample <= 1.0:
            raise ConvertError(f"--sample must be in (0, 1], got {self.sample}")


def split_of(problem: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` from a stable hash of the problem name."""
    h = zlib.crc32(problem.encode("utf-8")) / 2**32
    return "val" if h < val_fraction else "train"


# ---- held-out problems ----------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldOut:
    """Problem names and ground-truth canonical forms that must never reach a training set."""

    names: frozenset[str]
    forms: frozenset[str]
    sources: tuple[str, ...]

    def reason(self, name: str, form: str | None) -> str | None:
        """Why a problem is held out (``None``: it is not)."""
        if name in self.names:
            return "name"
        if form is not None and form in self.forms:
            return "canonical_form"
        return None


def _user_heldout(path: Path) -> tuple[set[str], set[str]]:
    """A problem file (names + forms) or a text file of names (one per line, ``#`` comments)."""
    from ..bench.problems import ProblemError, load_problem_file
    from ..bench.synthetic import problem_canonical_form

    if path.suffix in (".yaml", ".yml"):
        try:
            problems = load_problem_file(path)
        except ProblemError as e:
            raise ConvertError(f"--heldout {path}: {e}") from e
        return {p.name for p in problems}, {problem_canonical_form(p) for p in problems}
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return names, set()


def load_heldout(files: Sequence[str | os.PathLike[str]] = ()) -> HeldOut:
    """Every built-in test suite's problems (those whose data is available) + ``files``."""
    import warnings

    from ..bench.problems import ProblemError
    from ..bench.suites import get_suite, heldout_suite_names
    from ..bench.synthetic import heldout_canonical_forms

    names: set[str] = set()
    sources = []
    for suite in heldout_suite_names():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                names.update(p.name for p in get_suite(suite))
            sources.append(suite)
        except ProblemError:
            continue  # Feynman/DSO without the shared folder
    forms = set(heldout_canonical_forms())
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConvertError(f"--heldout {path}: no such file")
        n, fm = _user_heldout(path)
        names |= n
        forms |= fm
        sources.append(str(path))
    return HeldOut(frozenset(names), frozenset(forms), tuple(sources))


# ---- output schema --------------------------------------------------------------------------------

def _stats_fields() -> list[tuple[str, bool]]:
    """``(DataStats field, is a per-feature list)``."""
    from ..propose.protocol import DataStats

    out = []
    for f in dataclasses.fields(DataStats):
        out.append((f.name, "tuple" in str(f.type)))
    return out


def example_schema(mode: Mode, context: Context) -> Any:
    """The pyarrow schema of the examples (§7 columns; see the module docstring)."""
    import pyarrow as pa

    i32, f64 = pa.int32(), pa.float64()
    cols = [
        ("problem", pa.string()), ("engine", pa.string()), ("split", pa.string()),
        ("run", i32), ("output", i32), ("population", i32), ("iteration", i32),
        ("nfeatures", i32),
        ("binary_operators", pa.list_(pa.string())), ("unary_operators", pa.list_(pa.string())),
        ("parent_codes", pa.list_(i32)), ("parent_vals", pa.list_(f64)),
        ("parent_loss", f64), ("parent_loss_bin", i32),
        ("child_codes", pa.list_(i32)), ("child_vals", pa.list_(f64)),
        ("child_loss", f64), ("child_loss_bin", i32),
        ("mutation_type", pa.string()), ("mutation_detail", pa.string()),
        ("accepted", pa.bool_()), ("improved", pa.bool_()),
        ("temperature", f64), ("y_var", f64),
    ]
    if context == "rich":
        for name, is_list in _stats_fields():
            cols.append((f"stats_{name}", pa.list_(f64) if is_list else f64))
    if mode == "population":
        cols += [("members_codes", pa.list_(pa.list_(i32))), ("members_vals", pa.list_(pa.list_(f64))),
                 ("members_loss_bin", pa.list_(i32))]
    return pa.schema(cols)


# ---- per-unit context -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Unit:
    """What one trace file's rows share (read from the unit's metadata)."""

    trace: Path
    unit_id: str
    problem: str
    engine: str
    run: int
    nfeatures: int
    binary: tuple[str, ...]
    unary: tuple[str, ...]
    y_var: float
    stats: Mapping[str, Any] | None
    problem_spec: Mapping[str, Any] | None


def _units_of(inputs: Sequence[str]) -> tuple[list[_Unit], int]:
    """Every unit of every input collection; returns also the count of traces without metadata."""
    units, missing = [], 0
    for d in inputs:
        shards = Path(d) / "shards"
        if not shards.is_dir():
            raise ConvertError(f"--in {d}: not a trace collection (no shards/ folder)")
        for uid, trace in unit_traces(shards):
            meta_path = shards / f"{uid}.json"
            if not meta_path.is_file():
                missing += 1
                continue
            with open(meta_path, encoding="utf-8") as f:
                m = json.load(f)
            units.append(_Unit(
                trace=trace, unit_id=uid, problem=str(m["problem"]), engine=str(m.get("engine", "python")),
                run=int(m.get("run", 0)), nfeatures=int(m["nfeatures"]),
                binary=tuple(m.get("binary_operators", ())), unary=tuple(m.get("unary_operators", ())),
                y_var=float(m.get("y_var", math.nan)), stats=m.get("data_stats"),
                problem_spec=m.get("problem_spec"),
            ))
    return units, missing


def _problem_form(unit: _Unit) -> str | None:
    """Canonical form of the unit's ground truth (``None`` when unknown or not computable)."""
    if unit.problem_spec is None:
        return None
    from ..bench.problems import problem_from_mapping
    from ..bench.synthetic import problem_canonical_form

    try:
        return problem_canonical_form(problem_from_mapping(unit.problem_spec, source=str(unit.trace)))
    except Exception:
        return None


# ---- rows -----------------------------------------------------------------------------------------

@dataclass
class _Counts:
    files: int = 0
    iterations: int = 0
    rows: int = 0
    filtered: int = 0
    sampled_out: int = 0
    unparsable_trees: int = 0
    missing_children: int = 0
    skipped_lines: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class _TreeCache:
    """``string_tree`` text → (codes, vals), per trace file (trees repeat a lot)."""

    def __init__(self) -> None:
        from ..expr.parser import parse_tree

        self._parse = parse_tree
        self._cache: dict[str, tuple[list[int], list[float]] | None] = {}

    def get(self, text: str) -> tuple[list[int], list[float]] | None:
        hit = self._cache.get(text, False)
        if hit is not False:
            return hit
        try:
            e = self._parse(text)
            val = (e.codes, e.vals)
        except ValueError:
            val = None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[text] = val
        return val


def _moves(it: IterationRecord) -> Iterator[tuple[MutationEntry, MutationEntry | None, str, str, bool]]:
    """``(parent, child entry, mutation_type, raw type, accepted)`` per training move."""
    seen_crossovers: set[tuple[float, int, int]] = set()
    muts = it.mutations
    for entry in muts.values():
        for ev in entry.events:
            if isinstance(ev, MutateEvent):
                if not ev.selected:
                    continue
                raw = ev.mutation.type
                # Mutations that return immediately (simplify, optimize) carry no result: kept.
                accepted = ev.mutation.result != "reject"
                yield entry, muts.get(ev.child), canonical_mutation_name(raw), raw, accepted
            elif isinstance(ev, CrossoverEvent):
                key = (ev.time, ev.child1, ev.child2)
                if key in seen_crossovers:
                    continue  # SR.jl records the event on both parents
                seen_crossovers.add(key)
                accepted = ev.details.result != "reject"
                raw = ev.details.type or "crossover"
                p1, p2 = muts.get(ev.parent1), muts.get(ev.parent2)
                if p1 is not None:
                    yield p1, muts.get(ev.child1), "crossover", raw, accepted
                if p2 is not None:
                    yield p2, muts.get(ev.child2), "crossover", raw, accepted


def _keep(filter_: Filter, accepted: bool, improved: bool) -> bool:
    if filter_ == "accepted":
        return accepted
    if filter_ == "improving":
        return accepted and improved
    return True


class _RowBuffer:
    """Column buffers flushed to ``examples-NNNNN.parquet`` every ``rows_per_shard`` rows."""

    def __init__(self, out: Path, schema: Any, rows_per_shard: int) -> None:
        self.out = out
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.cols: dict[str, list[Any]] = {n: [] for n in schema.names}
        self.n = 0
        self.shards: list[str] = []

    def add(self, row: Mapping[str, Any]) -> None:
        for name, col in self.cols.items():
            col.append(row[name])
        self.n += 1
        if self.n >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if self.n == 0:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pydict(self.cols, schema=self.schema)
        name = f"examples-{len(self.shards):05d}.parquet"
        tmp = self.out / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, self.out / name)
        self.shards.append(name)
        self.cols = {n: [] for n in self.schema.names}
        self.n = 0


def _unit_columns(unit: _Unit, split: str, context: Context) -> dict[str, Any]:
    """The columns every row of a unit shares."""
    cols: dict[str, Any] = {
        "problem": unit.problem, "engine": unit.engine, "split": split, "run": unit.run,
        "nfeatures": unit.nfeatures, "binary_operators": list(unit.binary),
        "unary_operators": list(unit.unary), "temperature": math.nan, "y_var": unit.y_var,
    }
    if context == "rich":
        stats = unit.stats or {}
        for name, is_list in _stats_fields():
            v = stats.get(name)
            cols[f"stats_{name}"] = ([float(x) for x in v] if is_list and v is not None
                                     else (float(v) if v is not None else None))
    return cols


def _population_columns(it: IterationRecord, trees: _TreeCache, y_var: float) -> dict[str, Any]:
    from ..propose.protocol import loss_bin

    codes, vals, bins = [], [], []
    for m in it.members:
        parsed = trees.get(m.tree)
        if parsed is None:
            continue
        codes.append(parsed[0])
        vals.append(parsed[1])
        bins.append(loss_bin(m.loss, y_var))
    return {"members_codes": codes, "members_vals": vals, "members_loss_bin": bins}


def _rows_of_unit(unit: _Unit, split: str, cfg: ConvertConfig, counts: _Counts) -> Iterator[dict[str, Any]]:
    """Stream one trace file's rows."""
    from ..propose.protocol import loss_bin

    shared = _unit_columns(unit, split, cfg.context)
    trees = _TreeCache()
    thin = None
    if cfg.sample < 1.0:
        import zlib

        import numpy as np

        # Seeded by the plain trace's name (as it always was), also for a gzip trace: a unit's
        # rows do not depend on its compression.
        name = unit_trace_name(unit.unit_id, compress=False)
        thin = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
    reader = iter_trace(unit.trace)
    for it in reader:
        if not isinstance(it, IterationRecord):
            continue
        counts.iterations += 1
        where = {"output": it.output, "population": it.population, "iteration": it.iteration}
        pop_cols = None
        for parent, child, mtype, raw, accepted in _moves(it):
            if child is None:
                counts.missing_children += 1
                continue
            improved = child.loss < parent.loss
            if not _keep(cfg.filter, accepted, improved):
                counts.filtered += 1
                continue
            if thin is not None and thin.random() >= cfg.sample:
                counts.sampled_out += 1
                continue
            p, c = trees.get(parent.tree), trees.get(child.tree)
            if p is None or c is None:
                counts.unparsable_trees += 1
                continue
            if cfg.mode == "population" and pop_cols is None:
                pop_cols = _population_columns(it, trees, unit.y_var)
            counts.by_type[mtype] = counts.by_type.get(mtype, 0) + 1
            yield {
                **shared, **where, **(pop_cols or {}),
                "parent_codes": p[0], "parent_vals": p[1], "parent_loss": parent.loss,
                "parent_loss_bin": loss_bin(parent.loss, unit.y_var),
                "child_codes": c[0], "child_vals": c[1], "child_loss": child.loss,
                "child_loss_bin": loss_bin(child.loss, unit.y_var),
                "mutation_type": mtype, "mutation_detail": raw,
                "accepted": accepted, "improved": improved,
            }
    counts.skipped_lines += reader.skipped


# ---- driver ---------------------------------------------------------------------------------------

@dataclass
class ConvertReport:
    """What a conversion wrote and refused (also written into ``dataset.json``)."""

    out: Path
    rows: int
    shards: list[str]
    problems: dict[str, str]  # name → split
    refused: dict[str, str]  # name → reason
    counts: dict[str, Any]


def _prepare_out(cfg: ConvertConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ConvertError(f"--out {out} exists and is not empty (use --overwrite)")
        if not (out / "dataset.json").is_file() and not any(out.glob("examples-*.parquet")):
            raise ConvertError(f"--out {out} is not a dataset directory; refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _screen(units: Sequence[_Unit], heldout: HeldOut) -> tuple[list[_Unit], dict[str, str]]:
    """Drop the units of held-out problems (canonical forms computed once per problem)."""
    refused: dict[str, str] = {}
    verdict: dict[str, str | None] = {}
    kept = []
    for u in units:
        if u.problem not in verdict:
            reason = heldout.reason(u.problem, None)
            if reason is None:
                reason = heldout.reason(u.problem, _problem_form(u))
            verdict[u.problem] = reason
            if reason is not None:
                refused[u.problem] = reason
        if verdict[u.problem] is None:
            kept.append(u)
    return kept, refused


def convert(cfg: ConvertConfig, *, heldout: HeldOut | None = None, progress: bool = True) -> ConvertReport:
    """Run a conversion (see the module docstring); ``heldout`` defaults to :func:`load_heldout`."""
    from tqdm import tqdm

    units, no_meta = _units_of(cfg.inputs)
    if not units:
        raise ConvertError(f"no traces with metadata under {list(cfg.inputs)}")
    if heldout is None:
        heldout = load_heldout(cfg.heldout_files)
    units, refused = _screen(units, heldout)
    out = _prepare_out(cfg)
    buffer = _RowBuffer(out, example_schema(cfg.mode, cfg.context), cfg.rows_per_shard)
    counts = _Counts()
    problems: dict[str, str] = {}
    for unit in tqdm(units, desc="convert", unit="trace", disable=not progress or None):
        split = problems.setdefault(unit.problem, split_of(unit.problem, cfg.val_fraction))
        counts.files += 1
        for row in _rows_of_unit(unit, split, cfg, counts):
            buffer.add(row)
            counts.rows += 1
    buffer.flush()
    report = ConvertReport(out, counts.rows, buffer.shards, problems, refused,
                           {**dataclasses.asdict(counts), "traces_without_metadata": no_meta})
    _write_dataset_json(cfg, report, heldout)
    return report


def _write_dataset_json(cfg: ConvertConfig, report: ConvertReport, heldout: HeldOut) -> None:
    data = {
        "schema_version": DATASET_SCHEMA_VERSION,
        "created_at": time.time(),
        "mode": cfg.mode, "context": cfg.context, "filter": cfg.filter,
        "val_fraction": cfg.val_fraction, "sample": cfg.sample, "seed": cfg.seed,
        "sources": [str(Path(d).resolve()) for d in cfg.inputs],
        "shards": report.shards, "rows": report.rows,
        "columns": list(example_schema(cfg.mode, cfg.context).names),
        "problems": [{"name": n, "split": s} for n, s in sorted(report.problems.items())],
        "heldout": {"sources": list(heldout.sources), "n_names": len(heldout.names),
                    "n_forms": len(heldout.forms),
                    "refused": [{"name": n, "reason": r} for n, r in sorted(report.refused.items())]},
        "counts": report.counts,
    }
    tmp = report.out / ".dataset.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, report.out / "dataset.json")


def iter_dataset_rows(directory: str | os.PathLike[str], columns: Iterable[str] | None = None
                      ) -> Iterator[dict[str, Any]]:
    """Rows of a converted dataset (for inspection and tests)."""
    import pyarrow.parquet as pq

    for shard in sorted(Path(directory).glob("examples-*.parquet")):
        pf = pq.ParquetFile(shard)
        for batch in pf.iter_batches(columns=list(columns) if columns else None):
            yield from batch.to_pylist()
