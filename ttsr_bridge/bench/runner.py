"""Running an A/B benchmark: data once per (problem, seed), one row per (problem, engine, seed),
appended atomically as runs finish (resumable), parallel over worker processes.

Layout of the output directory::

    DIR/data/<problem>__s<seed>.npz   training X, y and held-out X_test, y_test (shared by engines)
    DIR/rows/<problem>__<engine>__s<seed>.json   one finished row (written via rename: atomic)
    DIR/runs.parquet                  all rows, merged at the end
    DIR/summary.json, DIR/report.md, DIR/*.png  (see :mod:`.report`)

A killed benchmark restarted with the same ``--out`` skips every row already in ``rows/``.

Each row carries its run's loss curve (``curve``: a list of ``{evals, seconds, best_loss}``,
best training loss so far; None when the engine reports no progress, see
:mod:`.engines`) and ``y_var`` (variance of the training y, the curves' normalisation).
In ``runs.parquet`` ``curve`` is a ``list<struct<evals, seconds, best_loss>>`` column; files
and rows written before it existed read back with no curve (:func:`read_runs`).

A fixed-data problem (a plain CSV, :class:`~.problems.DataProblem`) has no ground truth: its
rows have ``recovered = None`` (not applicable, never a failure) and no time to recovery; R²
on its held-out rows, the solution flag, complexity, evaluations and seconds are as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ttsr_bridge.config_io import from_mapping, to_mapping
from ttsr_bridge.expr.operators import OperatorSet

from .config import BenchConfig
from .problems import BenchProblem, DataProblem, problem_from_mapping, problem_to_mapping
from .suites import get_suite, select_problems

__all__ = ["Task", "BenchRun", "plan", "run_bench", "run_task", "load_rows", "merge_rows", "read_runs",
           "environment_info"]

ROW_COLUMNS = (
    "problem", "suite", "engine", "seed", "status", "reason", "recovered", "r2_test", "solution",
    "complexity", "model", "num_evals", "seconds", "evals_to_solution", "seconds_to_solution",
    "evals_to_recovery", "seconds_to_recovery", "budget_kind", "budget_evals", "budget_seconds",
    "nfeatures", "n_points", "git_sha", "versions", "finished_at", "y_var", "curve",
)


@dataclass(frozen=True)
class Task:
    """One (problem, engine, seed) run, in primitives only (it crosses process boundaries)."""

    problem: dict
    suite: str
    engine: str
    seed: int
    data_path: str
    row_path: str
    config: dict
    git_sha: str
    versions: str


@dataclass(frozen=True)
class BenchRun:
    """What :func:`run_bench` did: the rows (finished now or before) and the output paths."""

    rows: list[dict]
    out: Path
    ran: int
    resumed: int


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    if s != name:  # keep distinct specs distinct (neural:a/b.onnx vs neural:a_b.onnx)
        s += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return s


def environment_info() -> tuple[str, str]:
    """``(git SHA of the checkout or "unknown", JSON of package versions)``."""
    from importlib import metadata

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    versions = {}
    for pkg in ("ttsr_bridge", "numpy", "scipy", "sympy", "numba", "pyoperon", "gplearn", "pysr", "onnxruntime"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return sha, json.dumps(versions, sort_keys=True)


# ---- planning ------------------------------------------------------------------------------------
def load_problems(config: BenchConfig) -> list[tuple[str, BenchProblem]]:
    """``(suite, problem)`` for every suite of the config, after ``select`` and ``limit``."""
    out: list[tuple[str, BenchProblem]] = []
    seen: set[str] = set()
    for suite in config.problems:
        for p in get_suite(suite, config.csv_options):
            if p.name in seen:
                raise ValueError(f"problem name {p.name!r} appears in two suites; benchmark them separately")
            seen.add(p.name)
            out.append((suite, p))
    if config.target is not None and not any(isinstance(p, DataProblem) for _, p in out):
        raise ValueError(f"target {config.target!r} is set but no suite is a plain CSV (csv:PATH or a data .csv)")
    if config.select:
        keep = {p.name for p in select_problems([p for _, p in out], config.select)}
        out = [(s, p) for s, p in out if p.name in keep]
    if config.limit is not None:
        out = out[: config.limit]
    return out


def _write_data(problem: BenchProblem, seed: int, path: Path) -> None:
    """Training and held-out data of one (problem, seed) (``problem.bench_data``: sampled
    points, or a fixed-data problem's split of its rows), written once for every engine."""
    if path.is_file():
        return
    X, y, X_test, y_test = problem.bench_data(seed)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, X=X, y=y, X_test=X_test, y_test=y_test)
    os.replace(tmp, path)


def plan(config: BenchConfig, out: Path) -> tuple[list[Task], list[dict]]:
    """Tasks still to run, and rows already finished (resume) or skipped up front (an engine
    unavailable here). Writes the shared data files."""
    from .engines import get_engine

    problems = load_problems(config)  # first: bad problem input leaves no output directory behind
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    (out / "rows").mkdir(exist_ok=True)
    sha, versions = environment_info()
    cfg_map = to_mapping(config)
    unavailable = {e: get_engine(e).unavailable_reason() for e in config.engines}
    tasks: list[Task] = []
    done: list[dict] = []
    for suite, p in problems:
        for seed in range(config.seeds):
            data_path = out / "data" / f"{_safe(p.name)}__s{seed}.npz"
            for engine in config.engines:
                row_path = out / "rows" / f"{_safe(p.name)}__{_safe(engine)}__s{seed}.json"
                if row_path.is_file():
                    row = json.loads(row_path.read_text())
                    if row.get("status") != "skipped":  # skips are re-checked: the engine may work now
                        done.append(row)
                        continue
                task = Task(problem_to_mapping(p), suite, engine, seed, str(data_path), str(row_path),
                            cfg_map, sha, versions)
                if unavailable[engine]:
                    row = _base_row(task, p, config)
                    row.update(status="skipped", reason=unavailable[engine])
                    _write_row(row, row_path)
                    done.append(row)
                    continue
                _write_data(p, seed, data_path)
                tasks.append(task)
    return tasks, done


# ---- one run -------------------------------------------------------------------------------------
def _base_row(task: Task, problem: BenchProblem, config: BenchConfig) -> dict:
    row: dict[str, Any] = {c: None for c in ROW_COLUMNS}
    row.update(
        problem=problem.name, suite=task.suite, engine=task.engine, seed=task.seed,
        recovered=False if problem.has_truth else None,  # None: no truth, recovery not applicable
        solution=False, budget_kind=config.budget_kind, budget_evals=config.budget_evals,
        budget_seconds=config.budget_seconds, nfeatures=problem.nfeatures, git_sha=task.git_sha,
        versions=task.versions,
    )
    return row


def _write_row(row: dict, path: Path | str) -> None:
    path = Path(path)
    row = dict(row, finished_at=time.time())
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(row, default=_json_default))
    os.replace(tmp, path)  # atomic: a killed run leaves no half-written row


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def r2_score(y: np.ndarray, pred: np.ndarray) -> float | None:
    """R² of ``pred`` against ``y``; None when a prediction is not finite. A constant ``y``
    gives 1 for an exact fit and 0 otherwise."""
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != y.shape or not np.all(np.isfinite(pred)):
        return None
    mse = float(np.mean((y - pred) ** 2))
    var = float(np.var(y))
    if var <= 1e-300:
        return 1.0 if mse <= 1e-20 * max(1.0, float(np.mean(y * y))) else 0.0
    return 1.0 - mse / var


def run_task(task: Task) -> dict:
    """Run one task and write its row (never raises: failures become ``status: error``)."""
    from .engines import Budget, EngineSkipped, RunData, get_engine

    config = from_mapping(BenchConfig, task.config)
    problem = problem_from_mapping(task.problem)
    row = _base_row(task, problem, config)
    try:
        with np.load(task.data_path, allow_pickle=False) as d:
            X, y, X_test, y_test = d["X"], d["y"], d["X_test"], d["y_test"]
        row["n_points"] = int(len(y))
        ops = problem.operator_set(OperatorSet.from_names(config.binary_operators, config.unary_operators))
        data = RunData(X, y, X_test, y_test, tuple(problem.variable_names), ops, task.seed)
        budget = Budget(config.budget_evals, config.budget_seconds)
        result = get_engine(task.engine).run(data, budget, config)
        row.update(_metrics(result, problem, data, config))
        row["status"] = "ok"
    except EngineSkipped as e:
        row.update(status="skipped", reason=str(e))
    except Exception as e:  # one failing run must not stop the benchmark; the row says why
        row.update(status="error", reason=f"{type(e).__name__}: {e}"[:2000],
                   model=traceback.format_exc(limit=4)[-2000:])
    _write_row(row, task.row_path)
    return row


def _recovered(result, problem: BenchProblem, config: BenchConfig) -> bool | None:
    """Whether a reported model is symbolically the truth; None without a truth."""
    from ttsr_bridge.expr.sympy_bridge import equivalent

    if not problem.has_truth:
        return None
    truth = problem.truth()
    names = list(problem.variable_names)
    domains = problem.domains()
    for cand in result.candidates:
        try:
            if equivalent(cand, truth, names, tol=config.equivalence_tol,
                          timeout=config.equivalence_timeout, domains=domains):
                return True
        except Exception:  # an odd candidate is "not recovered", not a failed run
            continue
    return False


def _metrics(result, problem: BenchProblem, data, config: BenchConfig) -> dict:
    recovered = _recovered(result, problem, config)
    r2 = r2_score(data.y_test, result.pred_test)
    evals_rec = (result.evals_to_solution if result.evals_to_solution is not None else result.num_evals) if recovered else None
    secs_rec = (result.seconds_to_solution if result.seconds_to_solution is not None else result.seconds) if recovered else None
    return dict(
        recovered=recovered, r2_test=r2, solution=bool(r2 is not None and r2 > config.solution_r2),
        complexity=result.complexity, model=result.model_text, num_evals=result.num_evals,
        seconds=result.seconds, evals_to_solution=result.evals_to_solution,
        seconds_to_solution=result.seconds_to_solution, evals_to_recovery=evals_rec,
        seconds_to_recovery=secs_rec, reason=result.notes or None, y_var=data.y_var,
        curve=[p._asdict() for p in result.curve] or None,
    )


# ---- the whole benchmark ---------------------------------------------------------------------------
def run_bench(config: BenchConfig, out: str | Path, *, progress: bool = True) -> BenchRun:
    """Plan, run the remaining tasks over ``config.workers`` processes, merge the rows."""
    from tqdm import tqdm

    out = Path(out)
    tasks, done = plan(config, out)
    rows = list(done)
    bar = tqdm(total=len(tasks), desc="bench", unit="run", disable=not progress)
    if config.workers == 1 or len(tasks) <= 1:
        for t in tasks:
            rows.append(run_task(t))
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: workers must not inherit the parent's threads (numba, tqdm) mid-flight
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=mp.get_context("spawn")) as ex:
            futures = [ex.submit(run_task, t) for t in tasks]
            for f in as_completed(futures):
                rows.append(f.result())
                bar.update(1)
    bar.close()
    merge_rows(out)
    return BenchRun(rows=load_rows(out), out=out, ran=len(tasks), resumed=len(done))


def load_rows(out: str | Path) -> list[dict]:
    """Every finished row of an output directory (sorted by problem, engine, seed)."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(out, "rows").glob("*.json"))]
    return sorted(rows, key=lambda r: (r["problem"], r["engine"], r["seed"]))


def merge_rows(out: str | Path) -> Path:
    """Write ``runs.parquet`` from ``rows/`` (atomically)."""
    import pandas as pd

    out = Path(out)
    df = pd.DataFrame(load_rows(out), columns=list(ROW_COLUMNS))
    # recovered is nullable: None where the problem has no ground truth (not applicable)
    df["recovered"] = df["recovered"].astype("boolean")
    df["solution"] = df["solution"].fillna(False).astype(bool)
    for col in ("r2_test", "num_evals", "seconds", "evals_to_solution", "seconds_to_solution",
                "evals_to_recovery", "seconds_to_recovery", "budget_evals", "budget_seconds"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("complexity", "n_points", "nfeatures", "seed"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["y_var"] = pd.to_numeric(df["y_var"], errors="coerce").astype("float64")
    # rows from before the column (NaN) or without progress → None (a null list)
    df["curve"] = pd.Series([c if isinstance(c, list) and c else None for c in df["curve"]], dtype=object)
    path = out / "runs.parquet"
    tmp = out / "runs.parquet.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_runs(path: str | Path) -> list[dict]:
    """The rows of a ``runs.parquet`` as :func:`load_rows` gives them (plain Python values;
    ``curve`` a list of point dicts or None — also for files written before the column)."""
    import pandas as pd

    df = pd.read_parquet(path)
    for col in ROW_COLUMNS:
        if col not in df.columns:
            df[col] = None
    rows = []
    for rec in df[list(ROW_COLUMNS)].astype(object).to_dict("records"):
        row = {k: (None if _is_missing(v) else v) for k, v in rec.items()}
        curve = row["curve"]
        row["curve"] = [{k: float(v) for k, v in p.items()} for p in curve] if curve is not None and len(curve) else None
        rows.append(row)
    return rows


def _is_missing(v: Any) -> bool:
    """pandas' missing markers (NaN, NA, NaT) in an object column; lists are values."""
    import pandas as pd

    return v is None or (not isinstance(v, (list, tuple, np.ndarray, dict)) and bool(pd.isna(v)))


def rows_for(rows: Sequence[dict], engine: str) -> list[dict]:
    return [r for r in rows if r["engine"] == engine]
