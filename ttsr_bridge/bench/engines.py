"""Engine adapters of the A/B benchmark: one small class per engine, same operator set, one
budget, one result type.

Budgets, in each engine's own count (a row records the count the engine reports):

* ``classic`` / ``basic`` / ``neural[:MODEL]`` — our engine (``equation_search``, presets
  ``pysr`` / ``basic``; ``neural`` adds :class:`~ttsr_bridge.propose.onnx_proposer.OnnxProposer`
  with ``neural_weight``): ``max_evals`` = expression evaluations as SR.jl counts them
  (``num_evals``, fractional for mini-batches), or ``timeout_in_seconds``; early stop once a
  hall-of-fame member's loss is below ``stop_loss_rel·var(y)``.
* ``operon`` — pyoperon's ``SymbolicRegressor``: ``max_evaluations`` (its evaluator's call
  count) or ``max_time``; no early stop, no progress log (time to solution = the totals).
* ``gplearn`` — ``SymbolicRegressor`` grown one generation at a time (``warm_start``):
  evaluations = population size × generations; stops at the budget or once the best MSE is
  below the stop loss; the per-generation log gives the evaluations to solution.
* ``pysr`` / ``pysr-neural[:MODEL]`` — the real PySR (``pysr.PySRRegressor`` /
  ``ttsr_bridge.pysr.PySRRegressor``), ``max_evals`` or ``timeout_in_seconds``; reported as
  *skipped* with the reason when no ``julia`` is on PATH (importing ``pysr`` there would try to
  download Julia) or the import fails.

An engine that lacks one of the problem's operators is *skipped* for that problem (reason
recorded), never run with a different operator set.

Loss curves (``EngineResult.curve``: :class:`CurvePoint` = cumulative evaluations in the
engine's own count, seconds since the start, lowest training MSE found so far):

* ``classic`` / ``basic`` / ``neural`` — the search's own record (``SearchResult.progress``: the
  lowest loss of any population member, checked after every cycle, a point each time it
  dropped), merged with one point per ``equation_search`` callback (after every iteration, the
  lowest hall-of-fame loss); the last point is the run's ``num_evals``.
* ``gplearn`` — one point per generation: ``run_details_["best_fitness"]`` (training MSE of the
  generation's best program), evaluations = generation × population size; gplearn keeps no
  elite, so the curve is the running minimum over generations.
* ``operon`` — the sklearn wrapper exposes no per-generation report: one final point
  (``stats_["evaluation_count"]``, wall time, the lowest training MSE of its ``pareto_front_``).
* ``pysr`` / ``pysr-neural`` — none (PySR reports no evaluation count).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.expr.tree import Expr

from .config import BenchConfig

__all__ = [
    "RunData",
    "Budget",
    "CurvePoint",
    "EngineResult",
    "EngineSkipped",
    "Engine",
    "get_engine",
    "ClassicEngine",
    "OperonEngine",
    "GplearnEngine",
    "PySREngine",
]


@dataclass(frozen=True)
class Budget:
    """Exactly one of ``evals`` and ``seconds``."""

    evals: int | None = None
    seconds: float | None = None


@dataclass(frozen=True, eq=False)
class RunData:
    """The data of one (problem, seed): training and held-out arrays, kept apart."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    variable_names: tuple[str, ...]
    operators: OperatorSet
    seed: int

    @property
    def y_var(self) -> float:
        """var(y), the scale of the early-stop loss; mean(y²) for a constant target (y = 2)."""
        v = float(np.var(self.y))
        return v if v > 1e-12 * float(np.mean(self.y * self.y)) else max(float(np.mean(self.y * self.y)), 1e-300)


class CurvePoint(NamedTuple):
    """One point of a run's loss curve: the lowest training loss found after ``evals``
    evaluations (the engine's own count) and ``seconds``."""

    evals: float
    seconds: float
    best_loss: float


def _running_min(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """Best-so-far curve: points with a finite loss, the loss made non-increasing, and only
    the points where it went down plus the last one (the same step function, a short list:
    gplearn logs one point per generation)."""
    best: list[CurvePoint] = []
    for p in points:
        if math.isfinite(p.best_loss):  # before: nothing valid found yet
            low = min(p.best_loss, best[-1].best_loss) if best else p.best_loss
            best.append(CurvePoint(float(p.evals), float(p.seconds), float(low)))
    out = [p for i, p in enumerate(best) if i == 0 or p.best_loss < best[i - 1].best_loss]
    if best and out[-1] is not best[-1]:
        out.append(best[-1])
    return out


@dataclass
class EngineResult:
    """What one engine run produced (all engines fill the same fields)."""

    model: Expr | None  # the engine's selected model, in our encoding (None: unparsable)
    model_text: str
    candidates: list[Expr]  # every model it reports (Pareto front); recovery checks all of them
    pred_test: np.ndarray  # the engine's own predictions on X_test
    num_evals: float
    seconds: float
    evals_to_solution: float | None = None
    seconds_to_solution: float | None = None
    complexity: int | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    curve: list[CurvePoint] = field(default_factory=list)  # best loss so far (module docstring)


class EngineSkipped(Exception):
    """The engine cannot run here or on this problem (the message is the reason)."""


class Engine(Protocol):
    name: str

    def unavailable_reason(self) -> str | None: ...

    def run(self, data: RunData, budget: Budget, config: BenchConfig) -> EngineResult: ...


def _xnames(n: int, start: int) -> list[str]:
    return [f"X{i + start}" for i in range(n)]


def _parse_model(text: str, names: Sequence[str]) -> Expr | None:
    from ttsr_bridge.expr.parser import ParseError, parse_formula

    try:
        return parse_formula(text, list(names))
    except (ParseError, ValueError, KeyError):
        return None


# ---- our engine ----------------------------------------------------------------------------------
class ClassicEngine:
    """Our engine: ``equation_search`` with the ``pysr`` or ``basic`` preset, optionally with
    the ONNX proposer (``neural``)."""

    def __init__(self, name: str, preset: str = "pysr", model_path: str | None = None):
        self.name = name
        self.preset = preset
        self.model_path = model_path

    def unavailable_reason(self) -> str | None:
        try:
            import ttsr_bridge.search.search  # noqa: F401
        except Exception as e:  # a broken engine module is reported, not a crashed benchmark
            return f"ttsr_bridge.search.search is not importable: {type(e).__name__}: {e}"
        if self.model_path is not None:
            try:
                from ttsr_bridge.propose.onnx_proposer import resolve_model_path
            except Exception as e:
                return f"ttsr_bridge.propose.onnx_proposer is not importable: {type(e).__name__}: {e}"
            try:
                resolve_model_path(self.model_path)  # "default" = the shipped model
            except Exception as e:
                return f"proposer model {self.model_path!r} unavailable: {e}"
        return None

    def run(self, data: RunData, budget: Budget, config: BenchConfig) -> EngineResult:
        from ttsr_bridge.expr.evaluate import evaluate
        from ttsr_bridge.search.config import SearchConfig
        from ttsr_bridge.search.search import equation_search

        binary, unary = data.operators.names()
        stop = config.stop_loss_rel * data.y_var
        cfg = SearchConfig.preset(
            self.preset, binary_operators=binary, unary_operators=unary, maxsize=config.maxsize,
            niterations=1_000_000, max_evals=budget.evals, timeout_in_seconds=budget.seconds,
            early_stop_condition=stop, random_state=data.seed,
        )
        proposer, weight = None, 0.0
        if self.model_path is not None:
            from ttsr_bridge.propose.onnx_proposer import OnnxProposer

            import os

            # Parallel bench workers already fill the cores: a second decoding thread per
            # worker only adds contention.
            threads = 1 if config.workers >= (os.cpu_count() or 1) else 2
            proposer, weight = OnnxProposer(self.model_path, threads=threads), config.neural_weight
        progress = _ProgressRecorder()
        t0 = time.perf_counter()
        res = equation_search(data.X, data.y, cfg, proposer=proposer, neural_weight=weight,
                              variable_names=list(data.variable_names), callback=progress)
        seconds = time.perf_counter() - t0
        front = list(res.pareto_front())
        best = min(front, key=lambda m: m.loss) if front else None
        solved = best is not None and best.loss <= stop
        return EngineResult(
            model=best.tree if best else None,
            model_text=_string(best.tree, data.variable_names) if best else "",
            candidates=[m.tree for m in front],
            pred_test=evaluate(best.tree, data.X_test) if best else np.full(len(data.y_test), np.nan),
            num_evals=float(res.num_evals), seconds=float(getattr(res, "seconds", seconds) or seconds),
            evals_to_solution=float(res.num_evals) if solved else None,
            seconds_to_solution=seconds if solved else None,
            complexity=int(best.complexity) if best else None,
            extra={"iterations": int(getattr(res, "iterations", 0))},
            curve=progress.curve(float(res.num_evals), float(res.seconds),
                                 min((m.loss for m in front), default=math.inf),
                                 getattr(res, "progress", ())),
        )


class _ProgressRecorder:
    """``equation_search`` callback recording (evals, seconds, best hall-of-fame loss) after
    every iteration; never stops the search."""

    def __init__(self) -> None:
        self.points: list[CurvePoint] = []

    def __call__(self, iteration: int, hall_of_fame, num_evals: float, seconds: float) -> bool:
        best = min((m.loss for m in hall_of_fame.existing()), default=math.inf)
        self.points.append(CurvePoint(float(num_evals), float(seconds), float(best)))
        return False

    def curve(self, num_evals: float, seconds: float, best_loss: float,
              per_cycle: Sequence[tuple[float, float, float]] = ()) -> list[CurvePoint]:
        """The recorded points, ending at the run's totals (added if the callback missed them);
        with the search's per-cycle record (``SearchResult.progress``: the lowest member loss
        each time it dropped) merged in, so a curve has a point per improvement, not only one
        per iteration."""
        points = sorted(list(self.points) + [CurvePoint(float(e), float(t), float(v))
                                              for e, t, v in per_cycle],
                        key=lambda p: (p.evals, p.seconds))
        if not points or points[-1].evals < num_evals:
            points.append(CurvePoint(num_evals, seconds, best_loss))
        return _running_min(points)


def _string(expr: Expr, names: Sequence[str]) -> str:
    from ttsr_bridge.expr.printer import to_infix

    return to_infix(expr, list(names))


# ---- Operon --------------------------------------------------------------------------------------
_OPERON_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div", "^": "pow", "sin": "sin", "cos": "cos",
                 "tan": "tan", "tanh": "tanh", "exp": "exp", "log": "log", "sqrt": "sqrt",
                 "square": "square", "abs": "abs", "max": "fmax", "min": "fmin", "asin": "asin",
                 "acos": "acos", "atan": "atan", "sinh": "sinh", "cosh": "cosh", "log1p": "log1p"}


class OperonEngine:
    name = "operon"

    def unavailable_reason(self) -> str | None:
        try:
            import pyoperon.sklearn  # noqa: F401
        except ImportError as e:
            return f"pyoperon is not installed: {e}"
        return None

    def run(self, data: RunData, budget: Budget, config: BenchConfig) -> EngineResult:
        from pyoperon.sklearn import SymbolicRegressor

        missing = [o.name for o in data.operators.all if o.name not in _OPERON_NAMES]
        if missing:
            raise EngineSkipped(f"operon has no operator(s) {missing}")
        symbols = ",".join([_OPERON_NAMES[o.name] for o in data.operators.all] + ["constant", "variable"])
        reg = SymbolicRegressor(
            allowed_symbols=symbols, max_length=config.maxsize, population_size=config.operon_population,
            generations=1_000_000, max_evaluations=budget.evals if budget.evals else 10**12,
            max_time=int(math.ceil(budget.seconds)) if budget.seconds else None,
            random_state=data.seed, n_threads=1,
        )
        t0 = time.perf_counter()
        reg.fit(data.X, data.y)
        seconds = time.perf_counter() - t0
        names = _xnames(data.X.shape[1], 1)
        n_evals = float(reg.stats_["evaluation_count"])
        # no per-generation report in the sklearn wrapper: the final point only
        best_mse = min((float(m["mean_squared_error"]) for m in reg.pareto_front_), default=math.inf)
        text = reg.get_model_string(reg.model_, 16)
        model = _parse_model(text, names)
        return EngineResult(
            model=model, model_text=text, candidates=[model] if model is not None else [],
            pred_test=np.asarray(reg.predict(data.X_test), dtype=np.float64),
            num_evals=n_evals, seconds=seconds,
            complexity=len(model) if model is not None else int(reg.stats_["model_length"]),
            extra={"generations": int(reg.stats_["generations"])},
            curve=_running_min([CurvePoint(n_evals, seconds, best_mse)]),
        )


# ---- gplearn -------------------------------------------------------------------------------------
_GPLEARN_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div", "sqrt": "sqrt", "log": "log", "abs": "abs",
                  "neg": "neg", "inv": "inv", "max": "max", "min": "min", "sin": "sin", "cos": "cos", "tan": "tan"}


def _gp_exp(x):
    with np.errstate(all="ignore"):
        return np.exp(np.clip(x, -100.0, 100.0))  # protected, as gplearn's own functions are


def _gp_square(x):
    with np.errstate(all="ignore"):
        return np.clip(x, -1e100, 1e100) ** 2


def _gp_cube(x):
    with np.errstate(all="ignore"):
        return np.clip(x, -1e60, 1e60) ** 3


def _gp_tanh(x):
    return np.tanh(x)


def _gp_asin(x):
    return np.arcsin(np.clip(x, -1.0, 1.0))  # protected: gplearn needs closed functions


_GPLEARN_EXTRA = {"exp": _gp_exp, "square": _gp_square, "cube": _gp_cube, "tanh": _gp_tanh, "asin": _gp_asin}


class GplearnEngine:
    name = "gplearn"

    def unavailable_reason(self) -> str | None:
        try:
            import gplearn.genetic  # noqa: F401
        except ImportError as e:
            return f"gplearn is not installed: {e}"
        return None

    def _function_set(self, operators: OperatorSet) -> list:
        from gplearn.functions import make_function

        fs = []
        for o in operators.all:
            if o.name in _GPLEARN_NAMES:
                fs.append(_GPLEARN_NAMES[o.name])
            elif o.name in _GPLEARN_EXTRA:
                fs.append(make_function(function=_GPLEARN_EXTRA[o.name], name=o.name, arity=1, wrap=False))
            else:
                raise EngineSkipped(f"gplearn has no operator {o.name!r}")
        return fs

    def run(self, data: RunData, budget: Budget, config: BenchConfig) -> EngineResult:
        import warnings

        from gplearn.genetic import SymbolicRegressor

        stop = config.stop_loss_rel * data.y_var
        pop = config.gplearn_population
        reg = SymbolicRegressor(
            population_size=pop, generations=1, function_set=self._function_set(data.operators),
            metric="mse", stopping_criteria=stop, warm_start=True, random_state=data.seed,
            init_depth=(2, 4), n_jobs=1, const_range=(-2.0, 2.0), parsimony_coefficient=0.0005,
        )
        t0 = time.perf_counter()
        log: list[tuple[float, float, float]] = []  # (evals, seconds, best mse)
        gens = 0
        while True:
            gens += 1
            reg.set_params(generations=gens)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "warm_start with no new generations" etc.
                reg.fit(data.X, data.y)
            log.append((float(pop * gens), time.perf_counter() - t0, float(reg.run_details_["best_fitness"][-1])))
            if log[-1][2] <= stop:
                break
            if budget.evals is not None and pop * (gens + 1) > budget.evals:
                break
            if budget.seconds is not None and log[-1][1] >= budget.seconds:
                break
        text = str(reg._program)
        model = _parse_model(text, _xnames(data.X.shape[1], 0))
        final = log[-1][2]
        first = next(entry for entry in log if entry[2] <= max(final, stop))
        solved = final <= stop
        return EngineResult(
            model=model, model_text=text, candidates=[model] if model is not None else [],
            pred_test=np.asarray(reg.predict(data.X_test), dtype=np.float64),
            num_evals=log[-1][0], seconds=log[-1][1],
            evals_to_solution=first[0] if solved else None, seconds_to_solution=first[1] if solved else None,
            complexity=len(model) if model is not None else int(reg._program.length_),
            extra={"generations": gens},
            curve=_running_min([CurvePoint(*entry) for entry in log]),
        )


# ---- PySR ----------------------------------------------------------------------------------------
class PySREngine:
    """The real PySR (or our ``ttsr_bridge.pysr.PySRRegressor`` wrapper with a proposer)."""

    def __init__(self, name: str, model_path: str | None = None):
        self.name = name
        self.model_path = model_path

    def unavailable_reason(self) -> str | None:
        # Never import pysr without Julia: the import would try to download and install it.
        if shutil.which("julia") is None:
            return "no julia executable on PATH (importing pysr would try to download Julia)"
        try:
            if self.model_path is None:
                import pysr  # noqa: F401
            else:
                import ttsr_bridge.pysr  # noqa: F401
        except Exception as e:  # juliacall raises assorted errors when Julia is unusable
            return f"pysr could not be imported: {type(e).__name__}: {e}"
        if self.model_path is not None:
            from ttsr_bridge.propose.onnx_proposer import resolve_model_path

            try:
                resolve_model_path(self.model_path)  # "default" = the shipped model
            except Exception as e:
                return f"proposer model {self.model_path!r} unavailable: {e}"
        return None

    def run(self, data: RunData, budget: Budget, config: BenchConfig) -> EngineResult:
        if self.model_path is None:
            from pysr import PySRRegressor
            extra_kw: dict = {}
        else:
            from ttsr_bridge.pysr import PySRRegressor
            extra_kw = {"neural_proposer": self.model_path, "neural_weight": config.neural_weight}
        binary, unary = data.operators.names()
        stop = config.stop_loss_rel * data.y_var
        reg = PySRRegressor(
            binary_operators=list(binary), unary_operators=list(unary), maxsize=config.maxsize,
            niterations=1_000_000, max_evals=budget.evals, timeout_in_seconds=budget.seconds,
            early_stop_condition=stop, random_state=data.seed, deterministic=True, parallelism="serial",
            progress=False, verbosity=0, **extra_kw,
        )
        names = list(data.variable_names)
        t0 = time.perf_counter()
        reg.fit(data.X, data.y, variable_names=names)
        seconds = time.perf_counter() - t0
        eqs = reg.equations_
        cands = [e for e in (_parse_model(str(s), names) for s in eqs["sympy_format"]) if e is not None]
        best_row = eqs.loc[eqs["loss"].idxmin()]
        model = _parse_model(str(best_row["sympy_format"]), names)
        solved = float(best_row["loss"]) <= stop
        n_evals = float(budget.evals) if budget.evals else float("nan")  # PySR reports no count
        return EngineResult(
            model=model, model_text=str(best_row["sympy_format"]), candidates=cands,
            pred_test=np.asarray(reg.predict(data.X_test, index=int(best_row.name)), dtype=np.float64),
            num_evals=n_evals, seconds=seconds,
            evals_to_solution=None, seconds_to_solution=seconds if solved else None,
            complexity=int(best_row["complexity"]),
            notes="PySR reports no evaluation count; num_evals is the budget",
        )


def get_engine(spec: str) -> Engine:
    """The adapter for an engine spec (``classic``, ``neural:MODEL``, ``pysr-neural:MODEL``...)."""
    kind, _, arg = spec.partition(":")
    if kind == "classic":
        return ClassicEngine(spec, "pysr")
    if kind == "basic":
        return ClassicEngine(spec, "basic")
    if kind == "neural":
        return ClassicEngine(spec, "pysr", model_path=arg or "default")
    if kind == "operon":
        return OperonEngine()
    if kind == "gplearn":
        return GplearnEngine()
    if kind == "pysr":
        return PySREngine(spec)
    if kind == "pysr-neural":
        return PySREngine(spec, model_path=arg or "default")
    raise ValueError(f"unknown engine {spec!r}")
