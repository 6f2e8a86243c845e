"""``ClassicProposer``: the proposer protocol implemented by the engine's own classic mutation.

A reference peer for learned proposers: for each request it conditions SR.jl's mutation
weights on the parent, samples a tree mutation (``simplify`` / ``do_nothing`` / ``optimize``
and ``neural`` are excluded: a proposer returns a tree), applies it up to 10 times until the
child fits ``curmaxsize`` and returns it, or ``None`` when no attempt fits (the engine then
falls back and counts it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..expr.tree import Expr
from .protocol import ProposalOutcome, ProposalRequest

__all__ = ["ClassicProposer"]


class ClassicProposer:
    """Classic SR.jl mutation behind the :class:`~ttsr_bridge.propose.protocol.Proposer` API.

    ``config`` is a :class:`~ttsr_bridge.search.SearchConfig` (its mutation weights and
    constant settings are used; default: the ``pysr`` preset). ``mode`` is ``"mutation"``
    (requests carry no members). Outcomes passed to :meth:`feedback` are counted."""

    mode = "mutation"

    def __init__(self, config=None):
        from ..search.config import SearchConfig

        self.config = config if config is not None else SearchConfig.preset("pysr")
        self._opts = {}
        self.calls = 0
        self.requests = 0
        self.feedback_outcomes = 0
        self.feedback_accepted = 0

    def _options(self, nfeatures: int):
        from ..search.options import SearchOptions

        o = self._opts.get(nfeatures)
        if o is None:
            o = SearchOptions(self.config, nfeatures)
            self._opts[nfeatures] = o
        return o

    def propose(self, requests: Sequence[ProposalRequest], rng: np.random.Generator) -> list[Expr | None]:
        from ..search.mutate import (
            IMMEDIATE,
            MAX_ATTEMPTS,
            MutationPlan,
            _sample,
            apply_mutation,
            condition_mutation_weights,
        )
        from ..search.population import PopMember
        from ..search.random_stream import as_stream

        rs = as_stream(rng)
        self.calls += 1
        self.requests += len(requests)
        out: list[Expr | None] = []
        base = list(self.config.mutation_weights.as_tuple())
        base[-1] = 0.0  # never "neural" itself
        for req in requests:
            opts = self._options(req.context.nfeatures)
            parent = PopMember(req.parent, req.parent_cost, req.parent_loss, 0,
                               opts.complexity(req.parent), 0, -1)
            weights = base.copy()
            condition_mutation_weights(weights, parent, opts, req.curmaxsize)
            for name in IMMEDIATE:
                weights[_index(name)] = 0.0
            if sum(weights) <= 0:
                out.append(None)
                continue
            choice = _sample(weights, rs)
            plan = MutationPlan(req.population, parent, req.temperature)
            child = None
            for _ in range(MAX_ATTEMPTS):
                cand = apply_mutation(choice, req.parent, plan, opts, req.curmaxsize, rs)
                if opts.check_constraints(cand, req.curmaxsize):
                    child = cand
                    break
            out.append(child)
        return out

    def feedback(self, outcomes: Sequence[ProposalOutcome]) -> None:
        self.feedback_outcomes += len(outcomes)
        self.feedback_accepted += sum(1 for o in outcomes if o.accepted)


def _index(name: str) -> int:
    from ..search.mutate import ALL_MUTATIONS

    return ALL_MUTATIONS.index(name)
