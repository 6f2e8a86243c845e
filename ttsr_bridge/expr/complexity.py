"""Expression complexity as PySR/SR.jl define it (``compute_complexity`` in SR.jl's
``Complexity.jl``).

With the default mapping every node counts 1, so the complexity is ``len(expr)`` (SR.jl's
``count_nodes``). A custom mapping (PySR's ``complexity_of_operators``,
``complexity_of_constants``, ``complexity_of_variables``) sums per-node complexities and rounds
the total to the nearest integer (Julia's ``round(Int, x)``: ties to even, as Python's ``round``).
Operators missing from the mapping count 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .operators import get_operator
from .tree import Expr

__all__ = ["ComplexityMapping", "compute_complexity"]


@dataclass(frozen=True)
class ComplexityMapping:
    """Per-node complexities (PySR's parameter names).

    ``complexity_of_operators``: pairs ``(operator name, complexity)`` (any PySR name or alias);
    ``complexity_of_constants``: one number; ``complexity_of_variables``: one number, or one per
    feature (a tuple, 0-based feature order)."""

    complexity_of_operators: tuple[tuple[str, float], ...] = ()
    complexity_of_constants: float = 1.0
    complexity_of_variables: float | tuple[float, ...] = 1.0
    _by_id: dict[int, float] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ops = self.complexity_of_operators
        if isinstance(ops, Mapping):
            ops = tuple(ops.items())
            object.__setattr__(self, "complexity_of_operators", ops)
        by_id: dict[int, float] = {}
        for name, value in ops:
            by_id[get_operator(name).id] = _check_number(value, f"complexity of {name!r}")
        object.__setattr__(self, "_by_id", by_id)
        _check_number(self.complexity_of_constants, "complexity_of_constants")
        cv = self.complexity_of_variables
        if isinstance(cv, (list, tuple)):
            cv = tuple(_check_number(v, "complexity_of_variables") for v in cv)
            if not cv:
                raise ValueError("complexity_of_variables must not be an empty sequence")
            object.__setattr__(self, "complexity_of_variables", cv)
        else:
            _check_number(cv, "complexity_of_variables")

    @classmethod
    def from_pysr(
        cls,
        complexity_of_operators: Mapping[str, float] | None = None,
        complexity_of_constants: float | None = None,
        complexity_of_variables: float | Sequence[float] | None = None,
    ) -> ComplexityMapping:
        """Build from PySR's keyword values (None means PySR's default 1)."""
        cv = complexity_of_variables
        return cls(
            tuple((complexity_of_operators or {}).items()),
            1.0 if complexity_of_constants is None else complexity_of_constants,
            1.0 if cv is None else (tuple(cv) if isinstance(cv, (list, tuple)) else cv),
        )

    @property
    def is_default(self) -> bool:
        """True when every node counts 1 (complexity == ``len(expr)``)."""
        cv = self.complexity_of_variables
        vars_one = all(v == 1 for v in cv) if isinstance(cv, tuple) else cv == 1
        return (
            all(v == 1 for v in self._by_id.values())
            and self.complexity_of_constants == 1
            and vars_one
        )

    def of_code(self, code: int) -> float:
        """Complexity of one node with prefix code ``code``."""
        if code == 0:
            return float(self.complexity_of_constants)
        if code > 0:
            cv = self.complexity_of_variables
            if isinstance(cv, tuple):
                if code > len(cv):
                    raise ValueError(
                        f"feature {code - 1} has no entry in complexity_of_variables ({len(cv)})"
                    )
                return float(cv[code - 1])
            return float(cv)
        return self._by_id.get(-code, 1.0)


def _check_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")  # noqa: TRY004 (config value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def compute_complexity(expr: Expr, mapping: ComplexityMapping | None = None) -> int:
    """SR.jl's ``compute_complexity``: ``len(expr)`` for the default mapping, otherwise the
    rounded sum of the per-node complexities."""
    if mapping is None or mapping.is_default:
        return len(expr)
    total = sum(mapping.of_code(c) for c in expr.codes)
    return round(total)  # ties to even, as Julia's round(Int, x)
