"""``SRRegressor``: the Python engine as a scikit-learn estimator, named like ``PySRRegressor``.

Parameters that PySR also has keep PySR's names and meaning; ``None`` means "the preset's
value" (``preset="pysr"`` is PySR 2.7.2's defaults, ``"basic"`` the seeds' BasicSR).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["SRRegressor", "SEARCH_PARAMETERS"]

# Estimator parameters passed straight to SearchConfig when not None (PySR's names).
SEARCH_PARAMETERS: tuple[str, ...] = (
    "binary_operators",
    "unary_operators",
    "niterations",
    "populations",
    "population_size",
    "ncycles_per_iteration",
    "maxsize",
    "maxdepth",
    "warmup_maxsize_by",
    "parsimony",
    "timeout_in_seconds",
    "max_evals",
    "early_stop_condition",
    "tournament_selection_n",
    "tournament_selection_p",
    "crossover_probability",
    "annealing",
    "alpha",
    "use_frequency",
    "use_frequency_in_tournament",
    "adaptive_parsimony_scaling",
    "fraction_replaced",
    "fraction_replaced_hof",
    "topn",
    "should_simplify",
    "should_optimize_constants",
    "optimizer_nrestarts",
    "optimizer_iterations",
    "optimize_probability",
    "perturbation_factor",
    "probability_negate_constant",
    "skip_mutation_failures",
    "migration",
    "hof_migration",
    "complexity_of_operators",
    "complexity_of_constants",
    "complexity_of_variables",
)

# PySR's legacy weight_* parameters → MutationWeights fields.
WEIGHT_PARAMETERS: dict[str, str] = {
    "weight_add_node": "add_node",
    "weight_insert_node": "insert_node",
    "weight_delete_node": "delete_node",
    "weight_do_nothing": "do_nothing",
    "weight_mutate_constant": "mutate_constant",
    "weight_mutate_operator": "mutate_operator",
    "weight_mutate_feature": "mutate_feature",
    "weight_swap_operands": "swap_operands",
    "weight_rotate_tree": "rotate_tree",
    "weight_randomize": "randomize",
    "weight_simplify": "simplify",
    "weight_optimize": "optimize",
}


class SRRegressor(RegressorMixin, BaseEstimator):
    """Symbolic regression with the PySR-faithful Python engine.

    Fitted attributes: ``equations_`` (DataFrame: complexity, loss, score, equation,
    sympy_format, like PySR), ``result_`` (the engine's ``SearchResult``), ``config_``
    (the resolved ``SearchConfig``), ``n_features_in_``, ``feature_names_in_`` (when X has
    column names), ``stats_`` (proposer counters), ``num_evals_``.
    """

    def __init__(
        self,
        *,
        preset: str = "pysr",
        binary_operators: list[str] | None = None,
        unary_operators: list[str] | None = None,
        niterations: int | None = None,
        populations: int | None = None,
        population_size: int | None = None,
        ncycles_per_iteration: int | None = None,
        maxsize: int | None = None,
        maxdepth: int | None = None,
        warmup_maxsize_by: float | None = None,
        parsimony: float | None = None,
        timeout_in_seconds: float | None = None,
        max_evals: int | None = None,
        early_stop_condition: float | None = None,
        tournament_selection_n: int | None = None,
        tournament_selection_p: float | None = None,
        crossover_probability: float | None = None,
        annealing: bool | None = None,
        alpha: float | None = None,
        use_frequency: bool | None = None,
        use_frequency_in_tournament: bool | None = None,
        adaptive_parsimony_scaling: float | None = None,
        fraction_replaced: float | None = None,
        fraction_replaced_hof: float | None = None,
        topn: int | None = None,
        should_simplify: bool | None = None,
        should_optimize_constants: bool | None = None,
        optimizer_nrestarts: int | None = None,
        optimizer_iterations: int | None = None,
        optimize_probability: float | None = None,
        perturbation_factor: float | None = None,
        probability_negate_constant: float | None = None,
        skip_mutation_failures: bool | None = None,
        migration: bool | None = None,
        hof_migration: bool | None = None,
        complexity_of_operators: dict[str, int] | None = None,
        complexity_of_constants: int | None = None,
        complexity_of_variables: int | None = None,
        weight_add_node: float | None = None,
        weight_insert_node: float | None = None,
        weight_delete_node: float | None = None,
        weight_do_nothing: float | None = None,
        weight_mutate_constant: float | None = None,
        weight_mutate_operator: float | None = None,
        weight_mutate_feature: float | None = None,
        weight_swap_operands: float | None = None,
        weight_rotate_tree: float | None = None,
        weight_randomize: float | None = None,
        weight_simplify: float | None = None,
        weight_optimize: float | None = None,
        model_selection: str = "best",
        proposer: Any = None,
        neural_weight: float = 0.0,
        random_state: int | None = None,
        deterministic: bool = False,
        progress: bool = False,
        use_tracing: bool = False,
        tracing_file: str | None = None,
    ):
        self.preset = preset
        self.binary_operators = binary_operators
        self.unary_operators = unary_operators
        self.niterations = niterations
        self.populations = populations
        self.population_size = population_size
        self.ncycles_per_iteration = ncycles_per_iteration
        self.maxsize = maxsize
        self.maxdepth = maxdepth
        self.warmup_maxsize_by = warmup_maxsize_by
        self.parsimony = parsimony
        self.timeout_in_seconds = timeout_in_seconds
        self.max_evals = max_evals
        self.early_stop_condition = early_stop_condition
        self.tournament_selection_n = tournament_selection_n
        self.tournament_selection_p = tournament_selection_p
        self.crossover_probability = crossover_probability
        self.annealing = annealing
        self.alpha = alpha
        self.use_frequency = use_frequency
        self.use_frequency_in_tournament = use_frequency_in_tournament
        self.adaptive_parsimony_scaling = adaptive_parsimony_scaling
        self.fraction_replaced = fraction_replaced
        self.fraction_replaced_hof = fraction_replaced_hof
        self.topn = topn
        self.should_simplify = should_simplify
        self.should_optimize_constants = should_optimize_constants
        self.optimizer_nrestarts = optimizer_nrestarts
        self.optimizer_iterations = optimizer_iterations
        self.optimize_probability = optimize_probability
        self.perturbation_factor = perturbation_factor
        self.probability_negate_constant = probability_negate_constant
        self.skip_mutation_failures = skip_mutation_failures
        self.migration = migration
        self.hof_migration = hof_migration
        self.complexity_of_operators = complexity_of_operators
        self.complexity_of_constants = complexity_of_constants
        self.complexity_of_variables = complexity_of_variables
        self.weight_add_node = weight_add_node
        self.weight_insert_node = weight_insert_node
        self.weight_delete_node = weight_delete_node
        self.weight_do_nothing = weight_do_nothing
        self.weight_mutate_constant = weight_mutate_constant
        self.weight_mutate_operator = weight_mutate_operator
        self.weight_mutate_feature = weight_mutate_feature
        self.weight_swap_operands = weight_swap_operands
        self.weight_rotate_tree = weight_rotate_tree
        self.weight_randomize = weight_randomize
        self.weight_simplify = weight_simplify
        self.weight_optimize = weight_optimize
        self.model_selection = model_selection
        self.proposer = proposer
        self.neural_weight = neural_weight
        self.random_state = random_state
        self.deterministic = deterministic
        self.progress = progress
        self.use_tracing = use_tracing
        self.tracing_file = tracing_file

    # ---- configuration -------------------------------------------------------------------------
    def _build_config(self):
        from .search.config import SearchConfig

        overrides: dict[str, Any] = {}
        for name in SEARCH_PARAMETERS:
            value = getattr(self, name)
            if value is not None:
                overrides[name] = tuple(value) if isinstance(value, list) else value
        weights = {f: getattr(self, p) for p, f in WEIGHT_PARAMETERS.items() if getattr(self, p) is not None}
        if weights:
            overrides["mutation_weights"] = weights
        if self.random_state is not None:
            overrides["random_state"] = _seed_from(self.random_state)
        overrides["deterministic"] = bool(self.deterministic)
        return SearchConfig.preset(self.preset, **overrides)

    def _resolve_proposer(self):
        if self.proposer is None:
            return None
        if isinstance(self.proposer, str):
            from .propose.onnx_proposer import OnnxProposer

            return OnnxProposer(self.proposer)
        if not hasattr(self.proposer, "propose"):
            raise TypeError(
                f"proposer must be None, a model path, 'default' or an object with .propose(); "
                f"got {type(self.proposer).__name__}"
            )
        return self.proposer

    # ---- sklearn API ---------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None, variable_names: list[str] | None = None):
        """Search for equations of ``y`` in terms of the columns of ``X``."""
        from sklearn.utils.validation import _check_sample_weight, validate_data

        from .search.search import equation_search

        if self.model_selection not in ("best", "accuracy", "score"):
            raise ValueError(f"model_selection must be 'best', 'accuracy' or 'score', got {self.model_selection!r}")
        if not (isinstance(self.neural_weight, (int, float)) and math.isfinite(self.neural_weight) and self.neural_weight >= 0):
            raise ValueError(f"neural_weight must be a finite number >= 0, got {self.neural_weight!r}")
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, ensure_min_samples=2)
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError("sample_weight must be finite and >= 0")
        names = self._variable_names(variable_names, X.shape[1])
        config = self._build_config()
        proposer = self._resolve_proposer()
        trace = self.tracing_file if self.use_tracing else None
        if self.use_tracing and not trace:
            raise ValueError("use_tracing=True needs tracing_file=PATH")
        result = equation_search(
            X,
            y,
            config,
            weights=weights,
            proposer=proposer,
            neural_weight=float(self.neural_weight) if proposer is not None else 0.0,
            trace=trace,
            progress=bool(self.progress),
            variable_names=tuple(names),
        )
        self.config_ = config
        self.result_ = result
        self.variable_names_ = names
        self.num_evals_ = float(result.num_evals)
        self.stats_ = getattr(result, "stats", None)
        self.equations_ = self._equations_table(result, names)
        return self

    def _variable_names(self, given: list[str] | None, nfeatures: int) -> list[str]:
        if given is not None:
            if len(given) != nfeatures:
                raise ValueError(f"variable_names has {len(given)} names for {nfeatures} features")
            return [str(n) for n in given]
        if hasattr(self, "feature_names_in_"):
            return [str(n) for n in self.feature_names_in_]
        return [f"x{i}" for i in range(nfeatures)]

    @staticmethod
    def _equations_table(result, names):
        import pandas as pd

        from .expr.printer import string_tree

        rows = []
        for entry in result.hall_of_fame.pareto_table():
            rows.append(
                {
                    "complexity": int(entry.complexity),
                    "loss": float(entry.loss),
                    "score": float(entry.score),
                    "equation": string_tree(entry.member.tree, names),
                    "tree": entry.member.tree,
                }
            )
        return pd.DataFrame(rows, columns=["complexity", "loss", "score", "equation", "tree"])

    def _select_index(self, index: int | None) -> int:
        check_is_fitted(self, "equations_")
        eq = self.equations_
        if len(eq) == 0:
            raise RuntimeError("the search found no valid equation (every candidate had a non-finite loss)")
        if index is not None:
            if not (0 <= index < len(eq)):
                raise IndexError(f"equation index {index} out of range 0..{len(eq) - 1}")
            return int(index)
        losses = eq["loss"].to_numpy()
        if self.model_selection == "accuracy":
            return int(np.argmin(losses))
        if self.model_selection == "score":
            return int(np.argmax(eq["score"].to_numpy()))
        # PySR's "best": the highest score among equations within 1.5x of the lowest loss.
        ok = losses <= 1.5 * losses.min()
        scores = np.where(ok, eq["score"].to_numpy(), -np.inf)
        return int(np.argmax(scores))

    def get_best(self, index: int | None = None):
        """The selected row of ``equations_`` (PySR's ``model_selection`` rule)."""
        return self.equations_.iloc[self._select_index(index)]

    def sympy(self, index: int | None = None):
        """The selected equation as a SymPy expression over the feature names."""
        from .expr.sympy_bridge import to_sympy

        row = self.get_best(index)
        return to_sympy(row["tree"], self.variable_names_)

    def predict(self, X, index: int | None = None):
        """Evaluate the selected equation on ``X``."""
        from sklearn.utils.validation import validate_data

        from .expr.evaluate import evaluate

        check_is_fitted(self, "equations_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        tree = self.get_best(index)["tree"]
        return np.asarray(evaluate(tree, X), dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _seed_from(random_state) -> int:
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise TypeError(f"random_state must be an int, RandomState or Generator, got {type(random_state).__name__}")
