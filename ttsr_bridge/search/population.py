"""Population members and populations (SR.jl ``PopMember.jl`` / ``Population.jl``).

A :class:`Population` keeps its members in a list and mirrors their ``cost``, ``birth`` and
``complexity`` in NumPy rows, so tournaments and "replace the oldest" are vectorised; in a
lockstep search those rows are views into ``(populations, population_size)`` matrices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ..expr.tree import Expr

__all__ = ["Lineage", "PopMember", "Population", "loss_to_cost"]


class Lineage:
    """Hands out births and refs. SR.jl's births are wall-clock times (or a global counter
    with ``deterministic=true``) and refs are random Ints; a per-search counter gives the
    same ordering semantics, unique refs, and bit-reproducible runs."""

    __slots__ = ("_birth", "_ref")

    def __init__(self) -> None:
        self._birth = 0
        self._ref = 0

    def birth(self) -> int:
        self._birth += 1
        return self._birth

    def ref(self) -> int:
        self._ref += 1
        return self._ref


class PopMember:
    """One individual: ``tree``, ``cost`` (normalised loss + parsimony), ``loss``, ``birth``,
    ``complexity``, ``ref`` (unique per search) and ``parent`` (ref of its parent, -1 if none)."""

    __slots__ = ("birth", "complexity", "cost", "loss", "parent", "ref", "tree")

    def __init__(self, tree: Expr, cost: float, loss: float, birth: int, complexity: int,
                 ref: int, parent: int = -1):
        self.tree = tree
        self.cost = cost
        self.loss = loss
        self.birth = birth
        self.complexity = complexity
        self.ref = ref
        self.parent = parent

    def copy(self) -> PopMember:
        """Same ref (SR.jl's ``copy``); trees are immutable values so they are shared."""
        return PopMember(self.tree, self.cost, self.loss, self.birth, self.complexity, self.ref, self.parent)

    def __repr__(self) -> str:
        return (f"PopMember(tree={self.tree!r}, loss={self.loss:.6g}, cost={self.cost:.6g}, "
                f"complexity={self.complexity}, birth={self.birth}, ref={self.ref}, parent={self.parent})")


def loss_to_cost(loss: float, baseline: float, use_baseline: bool, complexity: int, parsimony: float) -> float:
    """SR.jl's ``loss_to_cost``: loss / max(baseline, 0.01) (0.01 when there is no finite
    baseline) + parsimony * complexity."""
    norm = baseline if (use_baseline and baseline >= 0.01) else 0.01
    return loss / norm + complexity * parsimony


class Population:
    """``members`` plus NumPy rows ``cost``, ``birth``, ``complexity`` kept in sync by
    :meth:`set` (always replace members through it).

    The slots are also kept in ascending ``(birth, slot)`` order (an insertion-ordered dict),
    so that "the oldest member" (``argmin`` of births, first slot on ties) is O(1): a member
    set with a birth newer than every other one moves its slot to the end; anything else
    (older births, copies) marks the order stale and the next query rebuilds it."""

    __slots__ = ("_maxbirth", "_order", "birth", "complexity", "cost", "members")

    def __init__(self, members: Sequence[PopMember], rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
        self.members: list[PopMember] = list(members)
        n = len(self.members)
        if n == 0:
            raise ValueError("a population needs at least one member")
        if rows is None:
            rows = (np.empty(n), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64))
        self.cost, self.birth, self.complexity = rows
        for i, m in enumerate(self.members):
            self._mirror(i, m)
        self._order: dict[int, None] | None = None
        self._maxbirth = max(m.birth for m in self.members)

    @property
    def n(self) -> int:
        return len(self.members)

    def _mirror(self, i: int, m: PopMember) -> None:
        c = m.cost
        self.cost[i] = c if c == c else math.inf  # NaN costs sort last, as never-selected
        self.birth[i] = m.birth
        self.complexity[i] = m.complexity

    def set(self, i: int, member: PopMember) -> None:
        old_birth = self.members[i].birth
        self.members[i] = member
        c = member.cost
        self.cost[i] = c if c == c else math.inf
        self.complexity[i] = member.complexity
        b = member.birth
        if b == old_birth:
            return
        self.birth[i] = b
        order = self._order
        if b > self._maxbirth:
            self._maxbirth = b
            if order is not None:
                del order[i]
                order[i] = None
        else:
            self._order = None

    def _ordered(self) -> dict[int, None]:
        order = self._order
        if order is None:
            births = [m.birth for m in self.members]
            order = dict.fromkeys(sorted(range(len(births)), key=births.__getitem__))  # stable: slot ties
            self._order = order
        return order

    def rebind(self, cost: np.ndarray, birth: np.ndarray, complexity: np.ndarray) -> None:
        """Move the mirrored rows into the given arrays (views into lockstep matrices)."""
        cost[:] = self.cost
        birth[:] = self.birth
        complexity[:] = self.complexity
        self.cost, self.birth, self.complexity = cost, birth, complexity

    def oldest(self) -> int:
        """Index of the member with the smallest birth (``argmin_fast`` of births)."""
        return next(iter(self._ordered()))

    def oldest_two(self) -> tuple[int, int]:
        """The two oldest members (second excludes the first), as crossover replacement."""
        if len(self.members) < 2:
            o = self.oldest()
            return o, o
        it = iter(self._ordered())
        o1 = next(it)
        return o1, next(it)

    def best_sub_pop(self, topn: int) -> list[PopMember]:
        """SR.jl's ``best_sub_pop``: the ``topn`` lowest-cost members (stable order)."""
        order = np.argsort(self.cost, kind="stable")[: min(topn, self.n)]
        return [self.members[int(i)] for i in order]

    def __iter__(self) -> Iterable[PopMember]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)
