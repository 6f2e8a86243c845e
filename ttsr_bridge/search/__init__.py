"""The PySR-faithful search engine (SR.jl's algorithm, names and defaults).

Public API: :class:`SearchConfig` / :class:`MutationWeights` (config), :func:`equation_search`
and :class:`SearchResult` (search), :class:`PopMember` / :class:`Population`,
:class:`HallOfFame`. Submodules are named after SR.jl's source files.
"""

from .config import (
    BASIC_MUTATION_WEIGHTS,
    PYSR_MUTATION_WEIGHTS,
    SRJL_MUTATION_WEIGHTS,
    MutationWeights,
    SearchConfig,
)
from .hall_of_fame import HallOfFame, ParetoEntry
from .population import PopMember, Population
from .search import SearchResult, SearchStats, equation_search

__all__ = [
    "BASIC_MUTATION_WEIGHTS",
    "PYSR_MUTATION_WEIGHTS",
    "SRJL_MUTATION_WEIGHTS",
    "HallOfFame",
    "MutationWeights",
    "ParetoEntry",
    "PopMember",
    "Population",
    "SearchConfig",
    "SearchResult",
    "SearchStats",
    "equation_search",
]
