"""Migration (SR.jl ``src/Migration.jl``): copy a Poisson number of migrants into random
slots of a population, resetting their birth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .population import Lineage, PopMember, Population

__all__ = ["migrate"]


def migrate(
    candidates: Sequence[PopMember],
    pop: Population,
    frac: float,
    gen: np.random.Generator,
    lineage: Lineage,
) -> int:
    """Replace ``Poisson(population_size * frac)`` random members of ``pop`` (capped by the
    number of candidates and the size) with copies of random candidates; each copy gets a new
    birth (``reset_birth!``) and keeps its ref. Returns the number replaced."""
    if not candidates or frac <= 0:
        return 0
    n = pop.n
    num = int(gen.poisson(n * frac))
    num = min(num, len(candidates), n)
    if num == 0:
        return 0
    locations = gen.integers(0, n, size=num)
    migrants = gen.integers(0, len(candidates), size=num)
    for loc, mi in zip(locations.tolist(), migrants.tolist()):
        m = candidates[mi].copy()
        m.birth = lineage.birth()
        pop.set(loc, m)
    return num
