"""Expression trees stored as flat prefix (Polish) code lists.

Encoding (the contract every module relies on, and the order the model's tokenizer uses):

* ``codes[i] == 0``       : a constant; its value is ``vals[i]``
* ``codes[i] == k > 0``   : the feature ``k - 1`` (0-based column of X; SR.jl prints it ``x{k}``)
* ``codes[i] == -id < 0`` : the operator with global id ``id`` (see :mod:`.operators`)

``vals[i]`` is ``0.0`` for every non-constant node. A subtree is a contiguous slice
``codes[i:subtree_end(i)]``, so mutations are list splices. Trees are treated as immutable
values by the search: every mutation builds a new :class:`Expr`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from .operators import OPERATORS, Operator

__all__ = ["Expr", "const", "var", "op", "subtree_end"]


class Expr:
    """A symbolic expression in prefix order (see the module docstring for the encoding)."""

    __slots__ = ("codes", "vals")

    def __init__(self, codes: Sequence[int], vals: Sequence[float] | None = None):
        self.codes: list[int] = list(codes)
        if vals is None:
            vals = [0.0] * len(self.codes)
        self.vals: list[float] = [float(v) for v in vals]
        if len(self.vals) != len(self.codes):
            raise ValueError("codes and vals must have the same length")

    # ---- structure -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.codes)

    def copy(self) -> "Expr":
        e = Expr.__new__(Expr)
        e.codes = self.codes.copy()
        e.vals = self.vals.copy()
        return e

    def subtree_end(self, i: int) -> int:
        """Index one past the end of the subtree rooted at ``i``."""
        return subtree_end(self.codes, i)

    def subtree(self, i: int) -> "Expr":
        j = subtree_end(self.codes, i)
        e = Expr.__new__(Expr)
        e.codes = self.codes[i:j]
        e.vals = self.vals[i:j]
        return e

    def replace(self, i: int, new: "Expr") -> "Expr":
        """A new tree with the subtree at ``i`` replaced by ``new``."""
        j = subtree_end(self.codes, i)
        e = Expr.__new__(Expr)
        e.codes = self.codes[:i] + new.codes + self.codes[j:]
        e.vals = self.vals[:i] + new.vals + self.vals[j:]
        return e

    def children(self, i: int) -> list[int]:
        """Start indices of the children of node ``i`` (left to right)."""
        code = self.codes[i]
        if code >= 0:
            return []
        arity = OPERATORS[-code].arity
        out = [i + 1]
        if arity == 2:
            out.append(subtree_end(self.codes, i + 1))
        return out

    def is_valid(self) -> bool:
        """True when the code list is exactly one well-formed prefix tree of known operators."""
        need = 1
        for c in self.codes:
            if need == 0:
                return False
            if c < 0:
                o = OPERATORS.get(-c)
                if o is None:
                    return False
                need += o.arity - 1
            else:
                need -= 1
        return need == 0 and len(self.codes) > 0

    def depth(self) -> int:
        """Tree depth (a single leaf has depth 1), as SR.jl's ``count_depth``."""
        best = 0
        stack: list[int] = []  # remaining children per open operator
        for c in self.codes:
            d = len(stack) + 1
            if d > best:
                best = d
            if c < 0:
                stack.append(OPERATORS[-c].arity)
            else:
                while stack:
                    stack[-1] -= 1
                    if stack[-1] == 0:
                        stack.pop()
                    else:
                        break
        return best

    # ---- node kinds --------------------------------------------------------------------------
    def constant_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.codes) if c == 0]

    def feature_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.codes) if c > 0]

    def operator_indices(self, arity: int | None = None) -> list[int]:
        if arity is None:
            return [i for i, c in enumerate(self.codes) if c < 0]
        return [i for i, c in enumerate(self.codes) if c < 0 and OPERATORS[-c].arity == arity]

    def leaf_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.codes) if c >= 0]

    def features_used(self) -> set[int]:
        return {c - 1 for c in self.codes if c > 0}

    def operators_used(self) -> list[Operator]:
        return [OPERATORS[-c] for c in self.codes if c < 0]

    def iter_nodes(self) -> Iterator[tuple[int, int, float]]:
        """``(index, code, value)`` for every node in prefix order."""
        return ((i, c, v) for i, (c, v) in enumerate(zip(self.codes, self.vals)))

    # ---- value semantics ---------------------------------------------------------------------
    def key(self) -> tuple:
        """Hashable identity: structure and exact constant values."""
        return (tuple(self.codes), tuple(self.vals))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and self.codes == other.codes and self.vals == other.vals

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        from .printer import string_tree

        try:
            return f"Expr({string_tree(self)!r})"
        except Exception:  # a malformed code list must still be printable for debugging
            return f"Expr(codes={self.codes!r}, vals={self.vals!r})"


def subtree_end(codes: Sequence[int], i: int) -> int:
    """Index one past the end of the prefix subtree starting at ``i``."""
    need = 1
    j = i
    n = len(codes)
    while need:
        if j >= n:
            raise ValueError("malformed prefix code list: subtree runs past the end")
        c = codes[j]
        if c < 0:
            need += OPERATORS[-c].arity - 1
        else:
            need -= 1
        j += 1
    return j


# ---- construction helpers (handy in tests and suites) ------------------------------------------
def const(value: float) -> Expr:
    return Expr([0], [float(value)])


def var(feature: int) -> Expr:
    """Leaf for the 0-based feature ``feature``."""
    if feature < 0:
        raise ValueError("feature index must be >= 0")
    return Expr([feature + 1], [0.0])


def op(name: str, *args: Expr) -> Expr:
    """``op("+", a, b)`` builds the tree ``a + b``."""
    from .operators import get_operator

    o = get_operator(name)
    if len(args) != o.arity:
        raise ValueError(f"operator {o.name!r} takes {o.arity} argument(s), got {len(args)}")
    codes = [-o.id]
    vals = [0.0]
    for a in args:
        codes += a.codes
        vals += a.vals
    e = Expr.__new__(Expr)
    e.codes = codes
    e.vals = vals
    return e
