"""``ClassicProposer``: the proposer protocol implemented by the engine's own classic mutation.

A reference peer for learned proposers: for each request it conditions SR.jl's mutation
weights on the parent, samples a tree mutation (``simplify`` / ``do_nothing`` / ``optimize``
and ``neural`` are excluded: a proposer returns a tree), applies it up to 10 times until the
child fits ``curmaxsize`` and returns it, or ``None`` when no attempt fits (the engine then
falls back and counts it).

The operators, ``maxsize`` and number of features come from each request's
:class:`~ttsr_bridge.propose.protocol.ProblemContext` (the search's), never from the
configuration given here, which only supplies the mutation weights and constant settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..expr.tree import Expr
from .protocol import ProblemContext, ProposalOutcome, ProposalRequest

__all__ = ["ClassicProposer"]


class ClassicProposer:
    """Classic SR.jl mutation behind the :class:`~ttsr_bridge.propose.protocol.Proposer` API.

    ``config`` is a :class:`~ttsr_bridge.search.SearchConfig` whose mutation weights and
    constant settings (``perturbation_factor``, ``probability_negate_constant``,
    ``constant_set``, complexity mapping) are used (default: the ``pysr`` preset); the operator
    set, ``maxsize`` and ``nfeatures`` are the request context's. ``mode`` is ``"mutation"``
    (requests carry no members). Outcomes passed to :meth:`feedback` are counted."""

    mode = "mutation"

    def __init__(self, config=None):
        from ..search.config import SearchConfig

        self.config = config if config is not None else SearchConfig.preset("pysr")
        self._opts: dict[tuple, object] = {}
        self.calls = 0
        self.requests = 0
        self.feedback_outcomes = 0
        self.feedback_accepted = 0

    def _options(self, context: ProblemContext):
        """SearchOptions for the context's operators / maxsize / nfeatures (cached)."""
        from ..search.options import SearchOptions

        ops = context.operators
        binary = tuple(o.name for o in ops.binary)
        unary = tuple(o.name for o in ops.unary)
        key = (binary, unary, int(context.maxsize), int(context.nfeatures))
        o = self._opts.get(key)
        if o is None:
            cfg = self.config
            # complexities of operators outside the context's set cannot apply
            names = set(binary) | set(unary)
            cop = tuple((n, c) for n, c in cfg.complexity_of_operators if n in names)
            cfg = cfg.replace(binary_operators=binary, unary_operators=unary, maxsize=int(context.maxsize),
                              complexity_of_operators=cop)
            o = SearchOptions(cfg, int(context.nfeatures))
            self._opts[key] = o
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
            opts = self._options(req.context)
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
