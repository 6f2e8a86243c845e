"""Hall of fame (SR.jl ``src/HallOfFame.jl``): the best member per complexity, the Pareto
front over (complexity, loss), and PySR's score ``-Δlog(loss)/Δcomplexity``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .population import PopMember

__all__ = ["HallOfFame", "ParetoEntry"]


@dataclass(frozen=True)
class ParetoEntry:
    """One Pareto-front row as PySR's ``equations_`` table shows it."""

    complexity: int
    loss: float
    score: float
    member: PopMember


class HallOfFame:
    """``members[c]`` is the lowest-cost member of complexity ``c`` seen (``exists[c]``)."""

    __slots__ = ("exists", "maxsize", "members")

    def __init__(self, maxsize: int):
        self.maxsize = int(maxsize)
        self.members: list[PopMember | None] = [None] * (self.maxsize + 1)
        self.exists: list[bool] = [False] * (self.maxsize + 1)

    def copy(self) -> HallOfFame:
        out = HallOfFame(self.maxsize)
        out.members = [m.copy() if m is not None else None for m in self.members]
        out.exists = list(self.exists)
        return out

    def consider(self, member: PopMember) -> bool:
        """Insert ``member`` if its size slot is empty or it has a lower cost (no constraint
        check; SR.jl's ``_update_hall_of_fame_unchecked!``). Returns True when inserted."""
        size = member.complexity
        if not (0 < size <= self.maxsize):
            return False
        cur = self.members[size]
        if cur is None or member.cost < cur.cost:
            self.members[size] = member.copy()
            self.exists[size] = True
            return True
        return False

    def update(self, members: Iterable[PopMember], check=None) -> None:
        """SR.jl's ``update_hall_of_fame!``; ``check(member) -> bool`` is the constraint test."""
        for m in members:
            if 0 < m.complexity <= self.maxsize and (check is None or check(m)):
                self.consider(m)

    def existing(self) -> list[PopMember]:
        return [m for m, e in zip(self.members, self.exists) if e and m is not None]

    def pareto_front(self) -> list[PopMember]:
        """SR.jl's ``calculate_pareto_frontier``: members whose loss is lower than that of every
        smaller member, by increasing complexity."""
        out: list[PopMember] = []
        best = math.inf
        for m in self.existing():
            if m.loss < best:
                out.append(m.copy())
                best = m.loss
        return out

    def pareto_table(self) -> list[ParetoEntry]:
        """The front with PySR's score: ``-(log(loss_i) - log(loss_{i-1})) / (c_i - c_{i-1})``
        (0 for the first row; losses floored at 1e-300 as PySR floors them before the log)."""
        rows: list[ParetoEntry] = []
        prev_loss = None
        prev_c = None
        for m in self.pareto_front():
            if prev_loss is None:
                score = 0.0
            else:
                cur = max(m.loss, 1e-300)
                last = max(prev_loss, 1e-300)
                score = -(math.log(cur) - math.log(last)) / (m.complexity - prev_c)
            rows.append(ParetoEntry(m.complexity, m.loss, score, m))
            prev_loss, prev_c = m.loss, m.complexity
        return rows

    def best(self) -> PopMember | None:
        """PySR's ``model_selection="best"``: among front rows with loss <= 1.5 x the minimum
        loss, the one with the highest score."""
        table = self.pareto_table()
        if not table:
            return None
        min_loss = min(r.loss for r in table)
        good = [r for r in table if r.loss <= 1.5 * min_loss]
        return max(good, key=lambda r: r.score).member
