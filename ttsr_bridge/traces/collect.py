"""Collect search traces over many problems: the data for the neural proposer.

A collection is a directory::

    DIR/manifest.json                 what was asked for, provenance, per-unit status
    DIR/problems.yaml                 the problems (so that synthetic ones are fixed on resume)
    DIR/shards/<unit>.jsonl           one SR.jl v1 trace per work unit (problem × run);
                                      <unit>.jsonl.gz with ``gzip`` (about a ninth of the size)
    DIR/shards/<unit>.json            the unit's metadata (problem, seed, y_var, engine, ...)

A work unit is ``(problem, run)``; its seed is derived from ``(--seed, problem name, run)``
only, so it does not depend on ordering, sharding or the number of workers. A unit is *done*
exactly when its trace file exists in ``shards/``: each unit writes to a temporary file and
renames it atomically (metadata first, trace last), so a run that is killed and started again
redoes only unfinished units — nothing is lost or duplicated. The manifest is rewritten
atomically after every unit; with ``--shard i/n`` each shard keeps its own manifest
(``manifest.shard-i-of-n.json``) so shards may share ``DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "TRACE_SUFFIXES",
    "Budget",
    "CollectConfig",
    "CollectError",
    "UnitResult",
    "WorkUnit",
    "collect",
    "collect_unit_pysr",
    "collect_unit_python",
    "derive_seed",
    "parse_shard",
    "plan_units",
    "run_unit",
    "shard_units",
    "unit_trace_name",
    "unit_traces",
]

Engine = Literal["python", "pysr"]
MANIFEST_FORMAT = "ttsr-trace-collection"
MANIFEST_VERSION = 1
# Iteration cap used when only an evaluation or time budget is given.
_UNBOUNDED_ITERATIONS = 1_000_000
# ".<unit id>.<anything>.tmp": unit ids end in "__runNNN" (problem names may contain dots).
_TMP_UNIT = re.compile(r"^\.(.+?__run\d{3,})\..*\.tmp(?:\.jsonl\.gz)?$")
# A unit's trace in shards/: plain or gzip (a collection resumed with the other setting holds both
# kinds; a unit is done when either exists).
TRACE_SUFFIXES = (".jsonl", ".jsonl.gz")
_VERSIONED_PACKAGES = ("ttsr_bridge", "numpy", "scipy", "sympy", "numba", "pyarrow", "pysr",
                       "juliacall")


class CollectError(RuntimeError):
    """A collection that cannot run as asked (bad arguments, a mismatching DIR, no PySR)."""


@dataclass(frozen=True)
class Budget:
    """When one search stops: whichever of the given limits is reached first."""

    evals: int | None = None
    iterations: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.evals is None and self.iterations is None and self.seconds is None:
            raise CollectError("give a budget: --budget-evals, --budget-iterations or --budget-seconds")
        for name in ("evals", "iterations"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CollectError(f"budget {name} must be >= 1, got {v}")
        if self.seconds is not None and not self.seconds > 0:
            raise CollectError(f"budget seconds must be > 0, got {self.seconds}")


@dataclass(frozen=True)
class CollectConfig:
    """What to collect (everything that changes the traces; not workers or sharding)."""

    engine: Engine
    problems: str
    runs: int
    preset: str
    budget: Budget
    seed: int = 0
    search_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ("python", "pysr"):
            raise CollectError(f"--engine must be 'python' or 'pysr', got {self.engine!r}")
        if self.runs < 1:
            raise CollectError(f"--runs must be >= 1, got {self.runs}")

    def identity(self) -> dict[str, Any]:
        """The fields a resumed collection must share with the one in DIR (runs may grow)."""
        return {"engine": self.engine, "problems": self.problems, "preset": self.preset,
                "budget": dataclasses.asdict(self.budget), "seed": self.seed,
                "search_overrides": dict(self.search_overrides)}


@dataclass(frozen=True)
class WorkUnit:
    """One search: a problem, a run index and its derived seed."""

    problem: str
    run: int
    seed: int

    @property
    def unit_id(self) -> str:
        return f"{self.problem}__run{self.run:03d}"


@dataclass(frozen=True)
class UnitTask:
    """Everything a worker process needs for one unit (picklable)."""

    unit: WorkUnit
    engine: Engine
    problem: Mapping[str, Any]  # problem-file mapping
    preset: str
    budget: Budget
    search_overrides: Mapping[str, Any]
    shards_dir: str
    compress: bool = False  # write the trace gzip-compressed


@dataclass(frozen=True)
class UnitResult:
    """What a worker reports back."""

    unit_id: str
    ok: bool
    seconds: float
    meta: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""


# ---- units, seeds, shards ------------------------------------------------------------------------

def derive_seed(base_seed: int, problem: str, run: int) -> int:
    """A 31-bit seed from ``(base seed, problem name, run)`` only."""
    ss = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, zlib.crc32(problem.encode()), int(run)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n`` (shards are numbered from 0)."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise CollectError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise CollectError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def plan_units(problem_names: Sequence[str], runs: int, base_seed: int) -> list[WorkUnit]:
    """All units, problem-major, in a fixed order."""
    return [WorkUnit(name, r, derive_seed(base_seed, name, r)) for name in problem_names
            for r in range(runs)]


def shard_units(units: Sequence[WorkUnit], shard: tuple[int, int]) -> list[WorkUnit]:
    """The units of shard ``i`` of ``n``: a stable hash of the unit id, so every unit is in
    exactly one shard whatever the order of ``units``."""
    i, n = shard
    return [u for u in units if zlib.crc32(u.unit_id.encode()) % n == i]


# ---- problems -------------------------------------------------------------------------------------

def resolve_problems(spec: str, seed: int) -> tuple[Any, ...]:
    """``SUITE`` | ``FILE`` | ``synthetic:N`` → problems (synthetic ones drawn from ``seed``)."""
    from ..bench.problems import ProblemError
    from ..bench.suites import get_suite

    try:
        if spec.startswith("synthetic:"):
            from ..bench.synthetic import SyntheticConfig, generate_problems

            n_text = spec.partition(":")[2]
            if not n_text.isdigit() or int(n_text) < 1:
                raise CollectError(f"--problems synthetic:N needs a positive integer N, got {spec!r}")
            rng = np.random.default_rng([int(seed), 0x5EED])
            return tuple(generate_problems(int(n_text), SyntheticConfig(), rng))
        return tuple(get_suite(spec))
    except ProblemError as e:
        raise CollectError(f"--problems {spec!r}: {e}") from e


def _load_or_fix_problems(out: Path, config: CollectConfig) -> tuple[Any, ...]:
    """The collection's problems: read back from ``DIR/problems.yaml`` when it exists (a resume),
    else resolved from the spec and written there."""
    from ..bench.problems import dump_problem_file, load_problem_file

    path = out / "problems.yaml"
    if path.is_file():
        return tuple(load_problem_file(path))
    problems = resolve_problems(config.problems, config.seed)
    tmp = out / f".problems.{os.getpid()}.yaml"
    dump_problem_file(problems, tmp, description=f"problems of a trace collection: {config.problems}")
    os.replace(tmp, path)
    return problems


# ---- the search of one unit -------------------------------------------------------------------------

def build_search_config(preset: str, problem: Any, unit: WorkUnit, budget: Budget,
                        overrides: Mapping[str, Any]) -> Any:
    """The unit's ``SearchConfig``: preset + overrides + problem operators + budget + seed."""
    from ..search.config import SearchConfig

    cfg = SearchConfig.from_mapping(dict(overrides), preset=preset) if overrides \
        else SearchConfig.preset(preset)
    binary, unary = problem.operator_set().names()
    niterations = budget.iterations or _UNBOUNDED_ITERATIONS
    return cfg.replace(
        binary_operators=tuple(binary), unary_operators=tuple(unary), niterations=niterations,
        max_evals=budget.evals, timeout_in_seconds=budget.seconds, random_state=unit.seed,
    )


def collect_unit_python(problem: Any, X: np.ndarray, y: np.ndarray, config: Any,
                        trace_path: Path) -> dict[str, Any]:
    """Run the Python engine with tracing on; returns the search's summary numbers."""
    from ..search.search import equation_search

    result = equation_search(X, y, config, trace=str(trace_path), progress=False)
    return {"iterations": int(result.iterations), "num_evals": float(result.num_evals),
            "search_seconds": float(result.seconds)}


def _pysr_kwargs(config: Any, regressor_cls: Any) -> dict[str, Any]:
    """``SearchConfig`` → ``PySRRegressor`` keyword arguments (the names are PySR's)."""
    import inspect

    accepted = set(inspect.signature(regressor_cls.__init__).parameters)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "mutation_weights":
            for w in dataclasses.fields(value):
                key = f"weight_{w.name}"
                if key in accepted:
                    kwargs[key] = getattr(value, w.name)
        elif f.name in accepted and value is not None and not callable(value):
            kwargs[f.name] = list(value) if isinstance(value, tuple) else value
    return kwargs


def collect_unit_pysr(problem: Any, X: np.ndarray, y: np.ndarray, config: Any,
                      trace_path: Path) -> dict[str, Any]:
    """Run real PySR (SR.jl through juliacall) with ``use_tracing=True`` into ``trace_path``.

    Serial and deterministic so a unit's seed fixes its trace. Raises :class:`CollectError`
    when PySR or Julia is not available here.
    """
    try:
        import pysr
    except Exception as e:  # pysr tries to install Julia on import: any failure means "absent"
        raise CollectError(
            f"--engine pysr needs the 'pysr' package with a working Julia (pip install "
            f"'ttsr_bridge[pysr]'); importing it failed: {type(e).__name__}: {e}"
        ) from e
    kwargs = _pysr_kwargs(config, pysr.PySRRegressor)
    kwargs.update(use_tracing=True, tracing_file=str(trace_path), parallelism="serial",
                  deterministic=True, progress=False, verbosity=0, temp_equation_file=True)
    model = pysr.PySRRegressor(**kwargs)
    t0 = time.perf_counter()
    model.fit(X, y, variable_names=[f"x{i + 1}" for i in range(X.shape[1])])
    return {"iterations": int(kwargs.get("niterations", 0)), "num_evals": float("nan"),
            "search_seconds": time.perf_counter() - t0}


def _atomic_write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_unit(task: UnitTask) -> UnitResult:
    """Run one unit in this process: data → search → trace renamed into ``shards/``.

    Never raises for a failing search: the error is reported in the result (the pool goes on).
    """
    t0 = time.perf_counter()
    unit = task.unit
    shards = Path(task.shards_dir)
    # The Python engine compresses as it writes (by the name); PySR writes plain text, which is
    # compressed afterwards.
    gzip_now = task.compress and task.engine == "python"
    tmp_gz = shards / f".{unit.unit_id}.{os.getpid()}.tmp.jsonl.gz"
    tmp_trace = tmp_gz if gzip_now else shards / f".{unit.unit_id}.{os.getpid()}.jsonl.tmp"
    final_name = unit_trace_name(unit.unit_id, task.compress)
    try:
        from ..bench.problems import problem_from_mapping

        problem = problem_from_mapping(task.problem, source="collection")
        X, y = problem.sample(problem.data_rng(unit.run))
        config = build_search_config(task.preset, problem, unit, task.budget, task.search_overrides)
        runner = collect_unit_python if task.engine == "python" else collect_unit_pysr
        summary = runner(problem, X, y, config, tmp_trace)
        if not tmp_trace.is_file():
            raise CollectError(f"the {task.engine} engine wrote no trace file")
        if task.compress and not gzip_now:
            _gzip_file(tmp_trace, tmp_gz)
            tmp_trace.unlink()
            tmp_trace = tmp_gz
        meta = _unit_meta(task, problem, X, y, config, summary, final_name)
        _atomic_write_json(shards / f"{unit.unit_id}.json", meta)
        os.replace(tmp_trace, shards / final_name)  # the commit point
        return UnitResult(unit.unit_id, True, time.perf_counter() - t0, meta)
    except Exception as e:
        tmp_trace.unlink(missing_ok=True)
        tmp_gz.unlink(missing_ok=True)
        err = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        return UnitResult(unit.unit_id, False, time.perf_counter() - t0, error=err)


def unit_trace_name(unit_id: str, compress: bool) -> str:
    """The file name of a unit's trace in ``shards/``."""
    return unit_id + TRACE_SUFFIXES[1 if compress else 0]


def unit_traces(shards: Path) -> list[tuple[str, Path]]:
    """``(unit id, trace)`` of every committed unit trace in ``shards``, plain or gzip, by
    path. The temporary files of running or killed units (named ``.<unit>...``) are not."""
    found = [(p.name[:-len(suffix)], p) for suffix in TRACE_SUFFIXES
             for p in shards.glob("*" + suffix) if not p.name.startswith(".")]
    return sorted(found, key=lambda t: t[1])


def _gzip_file(src: Path, dst: Path) -> None:
    """``src`` compressed into ``dst`` (level 1, as the trace writer compresses)."""
    import gzip
    import shutil

    from .tracing_process import GZIP_LEVEL

    with open(src, "rb") as fin, open(dst, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _unit_meta(task: UnitTask, problem: Any, X: np.ndarray, y: np.ndarray, config: Any,
               summary: Mapping[str, Any], trace_name: str) -> dict[str, Any]:
    from ..propose.protocol import DataStats

    binary, unary = problem.operator_set().names()
    return {
        "unit": task.unit.unit_id, "problem": problem.name, "run": task.unit.run,
        "seed": task.unit.seed, "engine": task.engine, "preset": task.preset,
        "nfeatures": int(X.shape[1]), "n_points": int(X.shape[0]),
        "y_var": float(np.var(y)), "binary_operators": list(binary), "unary_operators": list(unary),
        "problem_spec": dict(task.problem), "trace": trace_name,
        "data_stats": dataclasses.asdict(DataStats.from_data(X, y)),
        **dict(summary),
    }


# ---- manifest ---------------------------------------------------------------------------------------

def _package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_sha() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def manifest_path(out: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return out / ("manifest.json" if n == 1 else f"manifest.shard-{i}-of-{n}.json")


def _problem_y_var(problem: Any) -> float:
    """Variance of y on the data of run 0 (the per-run value is in each unit's metadata)."""
    try:
        _, y = problem.sample(problem.data_rng(0))
        return float(np.var(y))
    except Exception:
        return math.nan


def _check_same_collection(out: Path, config: CollectConfig) -> None:
    """Refuse to mix two different collections in one DIR."""
    for path in sorted(out.glob("manifest*.json")):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        prev = old.get("config", {}).get("identity")
        if prev is not None and prev != json.loads(json.dumps(config.identity())):
            diff = sorted(k for k in prev if prev.get(k) != config.identity().get(k))
            raise CollectError(
                f"{out} holds a collection with a different configuration ({path.name}: "
                f"{', '.join(diff)} differ); use another --out directory"
            )


class Manifest:
    """The collection's manifest, rewritten atomically after every change."""

    def __init__(self, path: Path, config: CollectConfig, command: Sequence[str],
                 problems: Sequence[Any], units: Sequence[WorkUnit], shard: tuple[int, int]):
        self.path = path
        old: dict[str, Any] = {}
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        self.data: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "created_at": old.get("created_at", time.time()),
            "updated_at": time.time(),
            "command": list(command),
            "config": {"identity": config.identity(), "runs": config.runs,
                       "shard": f"{shard[0]}/{shard[1]}"},
            "package_versions": _package_versions(),
            "git_sha": _git_sha(),
            "problems": [{"name": p.name, "formula": p.formula, "nfeatures": p.nfeatures,
                          "y_var": _problem_y_var(p)} for p in problems],
            "units": {},
        }
        old_units = old.get("units", {})
        for u in units:
            prev = old_units.get(u.unit_id, {})
            self.data["units"][u.unit_id] = {"problem": u.problem, "run": u.run, "seed": u.seed,
                                             "status": prev.get("status", "pending"),
                                             **{k: v for k, v in prev.items()
                                                if k not in ("problem", "run", "seed", "status")}}

    def set(self, unit_id: str, status: str, **info: Any) -> None:
        entry = self.data["units"][unit_id]
        entry["status"] = status
        entry.update(info)

    def save(self) -> None:
        self.data["updated_at"] = time.time()
        _atomic_write_json(self.path, self.data)


# ---- the driver -----------------------------------------------------------------------------------

def _reconcile(manifest: Manifest, shards: Path) -> list[str]:
    """Mark units done iff their trace exists (the rename is the commit); return those to run."""
    todo = []
    for uid in manifest.data["units"]:
        trace = next((t for t in (shards / (uid + x) for x in TRACE_SUFFIXES) if t.is_file()), None)
        meta_path = shards / f"{uid}.json"
        if trace is not None:
            if manifest.data["units"][uid]["status"] != "done":
                info = {}
                if meta_path.is_file():
                    with open(meta_path, encoding="utf-8") as f:
                        meta = json.load(f)
                    info = {k: meta.get(k) for k in ("iterations", "num_evals", "y_var")}
                manifest.set(uid, "done", trace=f"shards/{trace.name}", **info)
        else:
            todo.append(uid)
            if manifest.data["units"][uid]["status"] == "done":
                manifest.set(uid, "pending")  # the trace was deleted: redo it
    for stale in chain(shards.glob(".*.tmp"), shards.glob(".*.tmp.jsonl.gz")):
        # Temporary files of a killed run; a live concurrent shard never shares a unit.
        m = _TMP_UNIT.match(stale.name)
        if m and m.group(1) in manifest.data["units"]:
            stale.unlink(missing_ok=True)
    return todo


def collect(config: CollectConfig, out: str | os.PathLike[str], *, workers: int = 1,
            shard: tuple[int, int] = (0, 1), command: Sequence[str] = (),
            progress: bool = True, compress: bool = False) -> dict[str, Any]:
    """Run (or resume) a collection into ``out``; returns the final manifest data.

    ``workers > 1`` runs units in that many spawned processes; ``workers == 1`` runs them in
    this process. ``compress``: new traces are written gzip-compressed (``.jsonl.gz``; the
    records are the same, so it is not part of the collection's identity). Failed units are
    recorded (status ``failed`` with the error) and retried by the next call.
    """
    out = Path(out)
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    _check_same_collection(out, config)
    problems = _load_or_fix_problems(out, config)
    by_name = {p.name: p for p in problems}
    units = shard_units(plan_units(list(by_name), config.runs, config.seed), shard)
    manifest = Manifest(manifest_path(out, shard), config, command, problems, units, shard)
    todo = set(_reconcile(manifest, shards))
    manifest.save()
    from ..bench.problems import problem_to_mapping

    tasks = [UnitTask(u, config.engine, problem_to_mapping(by_name[u.problem]), config.preset,
                      config.budget, dict(config.search_overrides), str(shards), compress)
             for u in units if u.unit_id in todo]
    for result in _execute(tasks, workers, progress):
        if result.ok:
            manifest.set(result.unit_id, "done", trace=f"shards/{result.meta['trace']}",
                         seconds=round(result.seconds, 3), error=None,
                         **{k: result.meta.get(k) for k in ("iterations", "num_evals", "y_var")})
        else:
            manifest.set(result.unit_id, "failed", seconds=round(result.seconds, 3),
                         error=result.error)
        manifest.save()
    return manifest.data


def _execute(tasks: Sequence[UnitTask], workers: int, progress: bool):
    """Yield unit results as they finish, with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="collect", unit="unit", disable=not progress or None,
               dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                r = run_unit(t)
                bar.update(1)
                yield r
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(run_unit, t) for t in tasks]
            for fut in as_completed(futures):
                bar.update(1)
                yield fut.result()
    finally:
        bar.close()
