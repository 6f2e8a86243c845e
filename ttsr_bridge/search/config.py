"""Search configuration: PySR's parameter names, PySR's defaults, SR.jl's mutation weights.

Version notes: the defaults are PySR 2.7.2's, read from the PyPI wheel's ``pysr/sr.py``
(``PySRRegressor.__init__``; its ``juliapkg.json`` pins SymbolicRegression.jl ``~2.7.2``):
``annealing=True``, ``alpha=3.17``, ``crossover_probability=0.2`` and the rest as design.md §5.
(An older PySR 2.0.0a2 source in the search index has ``annealing=False`` and
``crossover_probability=0.0259``; the 2.7.2 wheel wins.)

Two mutation-weight tables are kept as data:

* :data:`PYSR_MUTATION_WEIGHTS`: the weights PySR 2.7.2 documents for its ``weight_*``
  parameters (``None`` → "mapping to 2.47" etc. in the docstring), the ``pysr`` preset.
* :data:`SRJL_MUTATION_WEIGHTS`: the re-tuned ``MutationWeights()`` defaults of a newer SR.jl
  source (``src/MutationWeights.jl``), for comparison runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config_io import ConfigError, from_mapping
from ..expr.operators import OperatorSet

__all__ = [
    "BASIC_MUTATION_WEIGHTS",
    "MUTATION_NAMES",
    "PYSR_MUTATION_WEIGHTS",
    "SRJL_MUTATION_WEIGHTS",
    "MutationWeights",
    "SearchConfig",
]

# SR.jl's mutation names, in the order of the fields of `MutationWeights` (graph-only
# form/break_connection are left out: this engine has no shared-node trees).
MUTATION_NAMES: tuple[str, ...] = (
    "mutate_constant",
    "mutate_operator",
    "mutate_feature",
    "swap_operands",
    "rotate_tree",
    "add_node",
    "insert_node",
    "delete_node",
    "simplify",
    "randomize",
    "do_nothing",
    "optimize",
)


@dataclass(frozen=True)
class MutationWeights:
    """Relative frequencies of SR.jl's mutations (normalised when sampled), plus ``neural``:
    the weight of the proposer move (0 unless a proposer is attached)."""

    mutate_constant: float = 0.0346
    mutate_operator: float = 0.293
    mutate_feature: float = 0.1
    swap_operands: float = 0.198
    rotate_tree: float = 4.26
    add_node: float = 2.47
    insert_node: float = 0.0112
    delete_node: float = 0.870
    simplify: float = 0.00209
    randomize: float = 0.000502
    do_nothing: float = 0.273
    optimize: float = 0.0
    neural: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"mutation weight {f.name} must be a finite number >= 0, got {v!r}")

    def as_tuple(self) -> tuple[float, ...]:
        """Weights in :data:`MUTATION_NAMES` order followed by ``neural``."""
        return tuple(float(getattr(self, n)) for n in MUTATION_NAMES) + (float(self.neural),)

    def replace(self, **kw: float) -> MutationWeights:
        return dataclasses.replace(self, **kw)


# PySRRegressor's weight_* defaults (pysr/sr.py).
PYSR_MUTATION_WEIGHTS = MutationWeights()
# SymbolicRegression.jl's own MutationWeights() defaults (src/MutationWeights.jl, v2.0.0-alpha.9).
SRJL_MUTATION_WEIGHTS = MutationWeights(
    mutate_constant=0.0353,
    mutate_operator=3.63,
    mutate_feature=0.1,
    swap_operands=0.00608,
    rotate_tree=1.42,
    add_node=0.0771,
    insert_node=2.44,
    delete_node=0.369,
    simplify=0.00148,
    randomize=0.00695,
    do_nothing=0.431,
    optimize=0.0,
)
# The seeds' BasicSR: plain point/subtree mutations, no simplify / optimize / identity moves.
BASIC_MUTATION_WEIGHTS = MutationWeights(
    mutate_constant=1.0,
    mutate_operator=1.0,
    mutate_feature=1.0,
    swap_operands=0.5,
    rotate_tree=0.0,
    add_node=1.0,
    insert_node=0.5,
    delete_node=1.0,
    simplify=0.0,
    randomize=0.1,
    do_nothing=0.0,
    optimize=0.0,
)

EarlyStop = Callable[[float, int], bool]


@dataclass(frozen=True)
class SearchConfig:
    """All knobs of a search, named as ``PySRRegressor``'s parameters.

    ``complexity_of_operators`` is a tuple of ``(operator name, complexity)`` pairs (a mapping
    is accepted by :meth:`from_mapping` / :meth:`replace`). ``early_stop_condition`` is a loss
    threshold or a callable ``f(loss, complexity) -> bool`` (SR.jl semantics: stop once some
    hall-of-fame member satisfies it). ``deterministic`` is accepted for PySR compatibility:
    this engine is always single-threaded and reproducible from ``random_state``.
    ``basic_elitism`` (BasicSR preset only) keeps the best member from being replaced.
    """

    binary_operators: tuple[str, ...] = ("+", "-", "*", "/")
    unary_operators: tuple[str, ...] = ()
    niterations: int = 100
    populations: int = 31
    population_size: int = 27
    ncycles_per_iteration: int = 380
    maxsize: int = 30
    maxdepth: int | None = None
    warmup_maxsize_by: float = 0.0
    parsimony: float = 0.0
    tournament_selection_n: int = 15
    tournament_selection_p: float = 0.982
    crossover_probability: float = 0.2
    annealing: bool = True
    alpha: float = 3.17
    use_frequency: bool = True
    use_frequency_in_tournament: bool = True
    adaptive_parsimony_scaling: float = 1040.0
    fraction_replaced: float = 0.00036
    fraction_replaced_hof: float = 0.0614
    topn: int = 12
    should_simplify: bool = True
    should_optimize_constants: bool = True
    optimizer_algorithm: str = "BFGS"
    optimizer_nrestarts: int = 2
    optimizer_iterations: int = 8
    optimizer_f_calls_limit: int = 10_000
    optimize_probability: float = 0.14
    perturbation_factor: float = 0.129
    probability_negate_constant: float = 0.00743
    skip_mutation_failures: bool = True
    migration: bool = True
    hof_migration: bool = True
    timeout_in_seconds: float | None = None
    max_evals: int | None = None
    early_stop_condition: float | Callable[[float, int], bool] | None = None
    random_state: int | None = None
    deterministic: bool = False
    complexity_of_operators: tuple[tuple[str, int], ...] = ()
    complexity_of_constants: int = 1
    complexity_of_variables: int = 1
    mutation_weights: MutationWeights = field(default_factory=MutationWeights)
    # Constants drawn for new leaves: "normal" = SR.jl's randn(); a non-empty tuple = draw from
    # this set (the seeds' BasicSR uses (1.0, 2.0)).
    constant_set: tuple[float, ...] = ()
    basic_elitism: bool = False

    # ---- validation -------------------------------------------------------------------------
    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"SearchConfig: {msg}")

        for name in ("niterations", "populations", "population_size", "ncycles_per_iteration",
                     "tournament_selection_n", "topn", "optimizer_iterations"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        need(self.maxsize >= 1, f"maxsize must be >= 1, got {self.maxsize}")
        need(self.maxdepth is None or self.maxdepth >= 1, f"maxdepth must be >= 1 or None, got {self.maxdepth}")
        need(
            self.population_size >= self.tournament_selection_n,
            f"population_size ({self.population_size}) must be >= tournament_selection_n "
            f"({self.tournament_selection_n})",
        )
        need(self.population_size >= 2, "population_size must be >= 2 (crossover replaces two members)")
        need(0 < self.tournament_selection_p <= 1, "tournament_selection_p must be in (0, 1]")
        for name in ("crossover_probability", "fraction_replaced", "fraction_replaced_hof",
                     "optimize_probability", "probability_negate_constant"):
            v = getattr(self, name)
            need(0.0 <= v <= 1.0, f"{name} must be in [0, 1], got {v}")
        need(0.0 <= self.warmup_maxsize_by <= 1.0, "warmup_maxsize_by must be in [0, 1]")
        need(self.alpha > 0, "alpha must be > 0")
        need(self.optimizer_nrestarts >= 0, "optimizer_nrestarts must be >= 0")
        need(self.optimizer_algorithm in ("BFGS",), "optimizer_algorithm: only 'BFGS' is implemented")
        need(self.timeout_in_seconds is None or self.timeout_in_seconds > 0, "timeout_in_seconds must be > 0")
        need(self.max_evals is None or self.max_evals > 0, "max_evals must be > 0")
        need(self.complexity_of_constants >= 1 and self.complexity_of_variables >= 1,
             "complexity_of_constants / complexity_of_variables must be >= 1")
        need(len(self.binary_operators) + len(self.unary_operators) > 0, "no operators given")
        ops = OperatorSet.from_names(self.binary_operators, self.unary_operators)  # raises on unknown
        known = {o.name for o in ops.all}
        for name, c in self.complexity_of_operators:
            need(name in known or any(name in o.aliases for o in ops.all),
                 f"complexity_of_operators names {name!r}, not in the operator set")
            need(isinstance(c, int) and c >= 1, f"complexity of {name!r} must be an integer >= 1")
        need(sum(self.mutation_weights.as_tuple()) > 0, "all mutation weights are zero")
        esc = self.early_stop_condition
        need(esc is None or callable(esc) or (isinstance(esc, (int, float)) and not isinstance(esc, bool)),
             f"early_stop_condition must be a number, a callable f(loss, complexity) or None, got {esc!r}")
        for name in ("binary_operators", "unary_operators", "constant_set", "complexity_of_operators"):
            need(isinstance(getattr(self, name), tuple), f"{name} must be a tuple")

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SearchConfig:
        """``"pysr"``: PySR's defaults; ``"basic"``: the seeds' BasicSR (one population,
        tournament, crossover-or-mutation, elitism, no annealing / frequency, constants {1, 2})."""
        if name == "pysr":
            base = cls()
        elif name == "basic":
            base = cls(
                populations=1,
                population_size=100,
                ncycles_per_iteration=100,
                niterations=40,
                maxsize=25,
                tournament_selection_n=7,
                tournament_selection_p=1.0,
                crossover_probability=0.3,
                annealing=False,
                use_frequency=False,
                use_frequency_in_tournament=False,
                should_simplify=False,
                should_optimize_constants=False,
                skip_mutation_failures=False,
                migration=False,
                hof_migration=False,
                mutation_weights=BASIC_MUTATION_WEIGHTS,
                constant_set=(1.0, 2.0),
                basic_elitism=True,
            )
        else:
            raise ConfigError(f"unknown SearchConfig preset {name!r}; known: 'pysr', 'basic'")
        return base.replace(**overrides) if overrides else base

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, preset: str | None = None) -> SearchConfig:
        """Build from a plain mapping (e.g. YAML), optionally on top of a preset; unknown keys
        and wrong types raise :class:`ConfigError`."""
        data = _normalise_mapping(dict(data))
        if preset is not None:
            return cls.preset(preset).replace(**data)
        return from_mapping(cls, data)

    def replace(self, **kw: Any) -> SearchConfig:
        """A copy with some fields changed (validated; a ``mutation_weights`` mapping updates
        only the weights it names)."""
        kw = _normalise_mapping(kw)
        if isinstance(kw.get("mutation_weights"), Mapping):
            kw["mutation_weights"] = from_mapping(
                MutationWeights, {**dataclasses.asdict(self.mutation_weights), **kw["mutation_weights"]}
            )
        unknown = sorted(set(kw) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(
                f"unknown SearchConfig field(s) {unknown}; known: {sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **kw)

    # ---- derived ----------------------------------------------------------------------------
    @property
    def operator_set(self) -> OperatorSet:
        return OperatorSet.from_names(self.binary_operators, self.unary_operators)

    @property
    def effective_maxdepth(self) -> int:
        """SR.jl: ``maxdepth`` defaults to ``maxsize``."""
        return self.maxdepth if self.maxdepth is not None else self.maxsize

    def options_string(self) -> str:
        """One-line dump of the options, for the trace's ``search`` record."""
        parts = []
        for f in dataclasses.fields(self):
            parts.append(f"{f.name}={getattr(self, f.name)!r}")
        return "SearchConfig(" + ", ".join(parts) + ")"


def _normalise_mapping(data: dict[str, Any]) -> dict[str, Any]:
    """Accept PySR-style spellings: a dict for ``complexity_of_operators``, lists for tuples."""
    cop = data.get("complexity_of_operators")
    if isinstance(cop, Mapping):
        data["complexity_of_operators"] = tuple((str(k), v) for k, v in cop.items())
    elif isinstance(cop, (list, tuple)):
        data["complexity_of_operators"] = tuple(tuple(p) for p in cop)
    for k in ("binary_operators", "unary_operators", "constant_set"):
        if isinstance(data.get(k), list):
            data[k] = tuple(data[k])
    return data
