"""Per-search derived options (SR.jl's ``Options`` holds the same derived facts: ``nops``,
operator tables, the complexity mapping, ``maxdepth`` defaulting to ``maxsize``)."""

from __future__ import annotations

from ..expr.operators import BY_NAME
from ..expr.tree import Expr
from .config import SearchConfig
from .random_stream import RandomStream

__all__ = ["SearchOptions"]


class SearchOptions:
    """What the mutation functions and constraint checks need, computed once per search.

    ``binary_codes`` / ``unary_codes`` are the (negative) prefix codes of the operator set.
    ``complexity(expr)`` is PySR's complexity (``len(expr)`` with the default mapping).
    """

    __slots__ = (
        "_cx_table",
        "binary_codes",
        "binary_set",
        "config",
        "constant_set",
        "maxdepth",
        "maxsize",
        "nbin",
        "nfeatures",
        "nuna",
        "perturbation_factor",
        "probability_negate_constant",
        "should_simplify",
        "unary_codes",
        "unit_complexity",
        "weight_cache",
    )

    def __init__(self, config: SearchConfig, nfeatures: int):
        if nfeatures < 1:
            raise ValueError("nfeatures must be >= 1")
        self.config = config
        self.nfeatures = int(nfeatures)
        ops = config.operator_set
        self.binary_codes: list[int] = [-o.id for o in ops.binary]
        self.unary_codes: list[int] = [-o.id for o in ops.unary]
        self.binary_set: frozenset[int] = frozenset(self.binary_codes)
        self.nbin = len(self.binary_codes)
        self.nuna = len(self.unary_codes)
        self.maxsize = config.maxsize
        self.maxdepth = config.effective_maxdepth
        self.constant_set = tuple(float(c) for c in config.constant_set)
        self.perturbation_factor = config.perturbation_factor
        self.probability_negate_constant = config.probability_negate_constant
        self._cx_table = self._build_complexity_table(config)
        # True when every node counts 1, so that complexity(expr) == len(expr)
        self.unit_complexity: bool = self._cx_table is None
        self.should_simplify: bool = bool(config.should_simplify)
        # conditioned mutation-weight running sums (see mutate._conditioned_cumsum)
        self.weight_cache: dict[tuple, tuple[list[float], list[float]]] = {}

    @staticmethod
    def _build_complexity_table(config: SearchConfig) -> dict[int, int] | None:
        """code -> complexity for non-default mappings; None means "every node counts 1"."""
        if (not config.complexity_of_operators and config.complexity_of_constants == 1
                and config.complexity_of_variables == 1):
            return None
        table = {0: config.complexity_of_constants}
        for o in config.operator_set.all:
            table[-o.id] = 1
        for name, c in config.complexity_of_operators:
            table[-BY_NAME[name].id] = int(c)
        return table

    def complexity(self, expr: Expr) -> int:
        """PySR's ``compute_complexity`` (sum of per-node complexities)."""
        t = self._cx_table
        if t is None:
            return len(expr.codes)
        cv = self.config.complexity_of_variables
        return sum(cv if c > 0 else t.get(c, 1) for c in expr.codes)

    def check_constraints(self, expr: Expr, curmaxsize: int, size: int | None = None) -> bool:
        """SR.jl's ``check_constraints``: complexity <= curmaxsize and depth <= maxdepth
        (per-operator ``constraints`` / ``nested_constraints`` are not supported)."""
        if size is None:
            size = self.complexity(expr)
        if size > curmaxsize:
            return False
        # depth <= number of nodes <= complexity, so the depth test is implied when
        # maxdepth >= curmaxsize (always true with PySR's default maxdepth = maxsize).
        if self.maxdepth < curmaxsize and expr.depth() > self.maxdepth:
            return False
        return True

    def sample_value(self, rs: RandomStream) -> float:
        """A new constant: SR.jl's ``randn()``, or a draw from ``constant_set`` (BasicSR)."""
        cs = self.constant_set
        if cs:
            return cs[rs.randint(len(cs))]
        return rs.normal()
