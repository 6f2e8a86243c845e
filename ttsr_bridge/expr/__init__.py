"""ttsr_bridge.expr: expression trees (prefix code lists), printing/parsing in SR.jl form,
evaluation, complexity, simplification and SymPy checks. See docs/architecture.md §1.

SymPy is only imported when a ``sympy_bridge`` function is called.

The function ``evaluate(expr, X)`` is *not* re-exported here: ``ttsr_bridge.expr.evaluate``
must stay the module (``import ttsr_bridge.expr.evaluate as ev`` would otherwise bind the
function). Use ``from ttsr_bridge.expr.evaluate import evaluate``.
"""

from __future__ import annotations

from .complexity import ComplexityMapping, compute_complexity
from .evaluate import (
    EvalData,
    PackedExprs,
    eval_batch,
    eval_batch_codes,
    loss_batch,
    loss_batch_codes,
    loss_one,
    pack_exprs,
)
from .operators import (
    BY_NAME,
    OPERATORS,
    Operator,
    OperatorSet,
    arity_of_code,
    get_operator,
    register_operator,
)
from .parser import ParseError, parse_formula, parse_tree
from .printer import format_julia_float, string_tree, to_infix
from .simplify import combine_operators, simplify_tree
from .sympy_bridge import equivalent, round_constants, to_sympy
from .tree import Expr, const, op, subtree_end, var

__all__ = [
    "BY_NAME",
    "OPERATORS",
    "ComplexityMapping",
    "EvalData",
    "Expr",
    "Operator",
    "OperatorSet",
    "PackedExprs",
    "ParseError",
    "arity_of_code",
    "combine_operators",
    "compute_complexity",
    "const",
    "equivalent",
    "eval_batch",
    "eval_batch_codes",
    "format_julia_float",
    "get_operator",
    "loss_batch",
    "loss_batch_codes",
    "loss_one",
    "op",
    "pack_exprs",
    "parse_formula",
    "parse_tree",
    "register_operator",
    "round_constants",
    "simplify_tree",
    "string_tree",
    "subtree_end",
    "to_infix",
    "to_sympy",
    "var",
]
