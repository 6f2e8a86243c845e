"""Tree simplification as SR.jl does it (DynamicExpressions' ``Simplify.jl``).

* :func:`simplify_tree` = ``simplify_tree!``: bottom-up constant folding. An operator node whose
  children are all constants with finite values is replaced by the constant it evaluates to,
  when that value is finite (so ``log(-1.0)`` or ``1.0 / 0.0`` stay as they are).
* :func:`combine_operators` = ``combine_operators``: bottom-up, for a binary node with a constant
  child: ``+``/``*`` move the constant to the right and merge it into a same-operator child
  with a constant (``(c1 + (c2 + x))`` → ``(x + c3)``, see the function), and ``-`` merges
  nested subtractions with constants. SR.jl runs it after ``simplify_tree!``.

Both return new :class:`Expr` objects and never produce malformed trees.
"""

from __future__ import annotations

import math

import numpy as np

from .operators import BY_NAME, OPERATORS
from .tree import Expr

__all__ = ["combine_operators", "simplify_tree"]

_ADD_ID = BY_NAME["+"].id
_SUB_ID = BY_NAME["-"].id
_MUL_ID = BY_NAME["*"].id
_COMMUTATIVE = (_ADD_ID, _MUL_ID)


class _Node:
    """Mutable tree node used while rewriting (code as in :mod:`.tree`)."""

    __slots__ = ("children", "code", "val")

    def __init__(self, code: int, val: float = 0.0, children: list[_Node] | None = None):
        self.code = code
        self.val = val
        self.children = children or []

    @property
    def is_constant(self) -> bool:
        return self.code == 0


def _build(expr: Expr, rewrite) -> _Node:
    """Build nodes right to left (children complete before their parent, no recursion) and
    apply ``rewrite(node) -> node`` to each operator node, i.e. bottom-up."""
    if not expr.is_valid():
        raise ValueError(f"malformed expression: codes={expr.codes!r}")
    stack: list[_Node] = []
    for i in range(len(expr.codes) - 1, -1, -1):
        c = expr.codes[i]
        if c >= 0:
            stack.append(_Node(c, expr.vals[i]))
        else:
            arity = OPERATORS[-c].arity
            children = [stack.pop() for _ in range(arity)]  # left child first
            stack.append(rewrite(_Node(c, 0.0, children)))
    return stack[0]


def _flatten(root: _Node) -> Expr:
    codes: list[int] = []
    vals: list[float] = []
    todo = [root]
    while todo:
        node = todo.pop()
        codes.append(node.code)
        vals.append(node.val if node.code == 0 else 0.0)
        todo.extend(reversed(node.children))
    return Expr(codes, vals)


# ---- simplify_tree ------------------------------------------------------------------------------
def _fold(node: _Node) -> _Node:
    """``combine_children!``: fold an operator whose children are finite constants."""
    if not all(ch.is_constant and math.isfinite(ch.val) for ch in node.children):
        return node
    operator = OPERATORS[-node.code]
    args = [np.float64(ch.val) for ch in node.children]
    out = float(np.asarray(operator.numpy(*args), dtype=np.float64).reshape(()))
    if not math.isfinite(out):
        return node
    return _Node(0, out)


def simplify_tree(expr: Expr) -> Expr:
    """Constant folding as SR.jl's ``simplify_tree!`` (a new tree; ``expr`` is unchanged)."""
    return _flatten(_build(expr, _fold))


# ---- combine_operators -------------------------------------------------------------------------
def _apply_binary(code: int, a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(OPERATORS[-code].numpy(np.float64(a), np.float64(b)))


def _combine_commutative(tree: _Node) -> _Node:
    """``((c + x) + c')``-style merges for ``+`` and ``*`` (constant moved to the right)."""
    left, right = tree.children
    if left.is_constant:
        # Put the constant on the right, as SR.jl does (even when nothing merges below).
        tree.children = [right, left]
        left, right = right, left
    top_constant = right.val
    below = left
    if len(below.children) == 2 and below.code == tree.code:
        if below.children[0].is_constant:
            below.children[0].val = _apply_binary(tree.code, below.children[0].val, top_constant)
            return below
        if below.children[1].is_constant:
            below.children[1].val = _apply_binary(tree.code, below.children[1].val, top_constant)
            return below
    return tree


def _combine_subtraction(tree: _Node) -> _Node:
    """Merge nested subtractions with constants (SR.jl's four cases)."""
    left, right = tree.children
    if left.is_constant:
        if len(right.children) == 2 and right.code == tree.code:
            r_left, r_right = right.children
            if r_left.is_constant:
                # (c1 - (c2 - x)) => (x - (c2 - c1))
                left.val = r_left.val - left.val
                tree.children = [r_right, left]
            elif r_right.is_constant:
                # (c1 - (x - c2)) => ((c1 + c2) - x)
                left.val = left.val + r_right.val
                tree.children = [left, r_left]
    else:
        if len(left.children) == 2 and left.code == tree.code:
            l_left, l_right = left.children
            if l_left.is_constant:
                # ((c1 - x) - c2) => ((c1 - c2) - x)
                right.val = l_left.val - right.val
                tree.children = [right, l_right]
            elif l_right.is_constant:
                # ((x - c1) - c2) => (x - (c1 + c2))
                right.val = right.val + l_right.val
                tree.children = [l_left, right]
    return tree


def _combine(tree: _Node) -> _Node:
    if len(tree.children) != 2:
        return tree
    if not (tree.children[0].is_constant or tree.children[1].is_constant):
        return tree
    if -tree.code in _COMMUTATIVE:
        return _combine_commutative(tree)
    if -tree.code == _SUB_ID:
        return _combine_subtraction(tree)
    return tree


def combine_operators(expr: Expr) -> Expr:
    """DynamicExpressions' ``combine_operators`` (a new tree; ``expr`` is unchanged):

    * ``+``/``*`` with a constant child: the constant goes right; if the other child is the
      same operator with a constant child, the two constants merge:
      ``(c1 + (c2 + x))`` → ``(x + c3)`` with ``c3 = c2 + c1`` (the inner node is first
      rewritten ``(x + c2)``), ``(c * x)`` → ``(x * c)``;
    * ``-``: ``(c1 - (c2 - x))`` → ``(x - (c2 - c1))``, ``(c1 - (x - c2))`` → ``((c1 + c2) - x)``,
      ``((c1 - x) - c2)`` → ``((c1 - c2) - x)``, ``((x - c1) - c2)`` → ``(x - (c1 + c2))``.

    Applied bottom-up once, as SR.jl (call :func:`simplify_tree` first)."""
    return _flatten(_build(expr, _combine))
