"""A fast scalar random stream on top of a ``numpy.random.Generator``.

The search draws millions of single numbers (which node, which operator, accept or not).
``Generator.random()`` / ``integers()`` cost 0.3-3 µs per scalar call; drawing blocks of
uniforms and normals once and serving them from Python lists costs ~0.1 µs. Every draw still
comes from the one seeded Generator, so a search is reproducible from ``random_state``.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

__all__ = ["RandomStream", "as_stream"]

_BLOCK = 4096


class RandomStream:
    """Buffered uniforms / normals / integers drawn from ``gen`` (a seeded Generator).

    ``random`` and ``normal`` are the ``__next__`` of endless iterators over blocks drawn
    from ``gen`` (a C-level call per number); a block is drawn when the previous one runs out,
    exactly when a per-call bounds check would draw it, so the stream interleaves with other
    uses of ``gen`` the same way."""

    __slots__ = ("gen", "normal", "random")

    def __init__(self, gen: np.random.Generator):
        if not isinstance(gen, np.random.Generator):
            raise TypeError(f"RandomStream needs a numpy.random.Generator, got {type(gen).__name__}")
        self.gen = gen
        # random() -> uniform in [0, 1); normal() -> standard normal (SR.jl's ``randn``)
        self.random = chain.from_iterable(_blocks(gen.random)).__next__
        self.normal = chain.from_iterable(_blocks(gen.standard_normal)).__next__

    def randint(self, n: int) -> int:
        """Uniform integer in [0, n) (n >= 1)."""
        return int(self.random() * n)

    def coin(self) -> bool:
        """``rand(Bool)``."""
        return self.random() < 0.5

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]


def _blocks(draw):
    """Endless blocks of ``draw(_BLOCK)`` as lists (drawn lazily, one at a time)."""
    while True:
        yield draw(_BLOCK).tolist()


def as_stream(rng: RandomStream | np.random.Generator) -> RandomStream:
    """Wrap a Generator (public helpers accept either)."""
    return rng if isinstance(rng, RandomStream) else RandomStream(rng)
