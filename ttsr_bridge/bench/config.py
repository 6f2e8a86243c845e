"""``BenchConfig``: what an A/B benchmark runs (frozen; YAML via ``config_io.load_yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from ttsr_bridge.config_io import ConfigError

from .problems import CsvOptions

__all__ = ["BenchConfig", "KNOWN_ENGINES"]

KNOWN_ENGINES = ("classic", "basic", "neural", "operon", "gplearn", "pysr", "pysr-neural")


@dataclass(frozen=True)
class BenchConfig:
    """An A/B benchmark.

    ``problems``: suite names / problem files (see :func:`ttsr_bridge.bench.suites.get_suite`);
    ``engines``: adapter names (``classic``, ``basic``, ``neural[:MODEL]``, ``operon``,
    ``gplearn``, ``pysr``, ``pysr-neural[:MODEL]``); the first one is the baseline of the
    paired comparisons. ``seeds``: runs per (problem, engine), seeds ``0..seeds-1``; the data of
    a (problem, seed) pair is generated once and shared by every engine.
    Exactly one of ``budget_evals`` (each engine's own count of expression evaluations) and
    ``budget_seconds`` must be set. Problems without an operator set use
    ``binary_operators``/``unary_operators``. A run counts as an *accuracy solution* when its
    held-out R² exceeds ``solution_r2``; engines that support it stop early once their training
    loss is below ``stop_loss_rel`` × var(y).
    Plain-CSV problems (``csv:PATH`` or a data ``.csv``; no ground truth, so no recovery) use
    column ``target`` (``None``: the last column) as the target, at most ``csv_points`` fit
    rows and ``csv_test_fraction`` of the rows held out per seed.
    """

    problems: tuple[str, ...] = ("seeds",)
    engines: tuple[str, ...] = ("classic", "operon", "gplearn")
    seeds: int = 3
    budget_evals: int | None = None
    budget_seconds: float | None = None
    workers: int = 1
    limit: int | None = None
    select: tuple[str, ...] = ()
    binary_operators: tuple[str, ...] = ("+", "-", "*", "/")
    unary_operators: tuple[str, ...] = ("sin", "cos", "exp", "log", "sqrt")
    solution_r2: float = 0.999
    stop_loss_rel: float = 1e-10
    equivalence_timeout: float = 5.0
    equivalence_tol: float = 1e-4
    maxsize: int = 30
    neural_weight: float = 1.0
    gplearn_population: int = 500
    operon_population: int = 500
    bootstrap_samples: int = 2000
    bootstrap_seed: int = 0
    target: str | None = None
    csv_points: int = 1000
    csv_test_fraction: float = 0.25

    def __post_init__(self) -> None:
        if (self.budget_evals is None) == (self.budget_seconds is None):
            raise ConfigError("set exactly one of budget_evals and budget_seconds")
        if self.budget_evals is not None and self.budget_evals < 1:
            raise ConfigError("budget_evals must be >= 1")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise ConfigError("budget_seconds must be > 0")
        if self.seeds < 1 or self.workers < 1:
            raise ConfigError("seeds and workers must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit must be >= 1")
        if not self.problems or not self.engines:
            raise ConfigError("need at least one problem suite and one engine")
        for e in self.engines:
            if e.split(":", 1)[0] not in KNOWN_ENGINES:
                raise ConfigError(f"unknown engine {e!r}; known: {list(KNOWN_ENGINES)} (neural/pysr-neural take :MODEL)")
        if len(set(self.engines)) != len(self.engines):
            raise ConfigError(f"duplicate engines in {list(self.engines)}")
        if not 0 < self.solution_r2 < 1:
            raise ConfigError("solution_r2 must be in (0, 1)")
        if self.target is not None and not self.target.strip():
            raise ConfigError("target must be a column name")
        if self.csv_points < 1:
            raise ConfigError("csv_points must be >= 1")
        if not 0 < self.csv_test_fraction < 1:
            raise ConfigError("csv_test_fraction must be in (0, 1)")

    @property
    def budget_kind(self) -> str:
        return "evals" if self.budget_evals is not None else "seconds"

    @property
    def baseline(self) -> str:
        return self.engines[0]

    @property
    def csv_options(self) -> CsvOptions:
        """The :class:`~ttsr_bridge.bench.problems.CsvOptions` of plain-CSV problems."""
        return CsvOptions(self.target, self.csv_points, self.csv_test_fraction)
