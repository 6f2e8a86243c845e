"""A fast scalar random stream on top of a ``numpy.random.Generator``.

The search draws millions of single numbers (which node, which operator, accept or not).
``Generator.random()`` / ``integers()`` cost 0.3-3 µs per scalar call; drawing blocks of
uniforms and normals once and serving them from Python lists costs ~0.1 µs. Every draw still
comes from the one seeded Generator, so a search is reproducible from ``random_state``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RandomStream", "as_stream"]

_BLOCK = 4096


class RandomStream:
    """Buffered uniforms / normals / integers drawn from ``gen`` (a seeded Generator)."""

    __slots__ = ("_n", "_ni", "_u", "_ui", "gen")

    def __init__(self, gen: np.random.Generator):
        if not isinstance(gen, np.random.Generator):
            raise TypeError(f"RandomStream needs a numpy.random.Generator, got {type(gen).__name__}")
        self.gen = gen
        self._u: list[float] = []
        self._ui = 0
        self._n: list[float] = []
        self._ni = 0

    def random(self) -> float:
        """Uniform in [0, 1)."""
        i = self._ui
        if i >= len(self._u):
            self._u = self.gen.random(_BLOCK).tolist()
            i = 0
        self._ui = i + 1
        return self._u[i]

    def randint(self, n: int) -> int:
        """Uniform integer in [0, n) (n >= 1)."""
        i = self._ui
        if i >= len(self._u):
            self._u = self.gen.random(_BLOCK).tolist()
            i = 0
        self._ui = i + 1
        return int(self._u[i] * n)

    def coin(self) -> bool:
        """``rand(Bool)``."""
        return self.random() < 0.5

    def normal(self) -> float:
        """Standard normal (SR.jl's ``randn``)."""
        i = self._ni
        if i >= len(self._n):
            self._n = self.gen.standard_normal(_BLOCK).tolist()
            i = 0
        self._ni = i + 1
        return self._n[i]

    def choice(self, seq):
        return seq[self.randint(len(seq))]


def as_stream(rng: RandomStream | np.random.Generator) -> RandomStream:
    """Wrap a Generator (public helpers accept either)."""
    return rng if isinstance(rng, RandomStream) else RandomStream(rng)
