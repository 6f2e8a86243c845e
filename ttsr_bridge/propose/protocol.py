"""The proposer protocol: how the search asks a (learned or classic) proposer for children.

The engine's step "take the tournament winner and produce a child" goes through
:class:`Proposer`. Everything a proposer may condition on travels in :class:`ProposalRequest`
and the per-search :class:`ProblemContext`; the same information is recorded in traces and in
training examples, so the model sees at inference exactly what it saw in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..expr.operators import OperatorSet
from ..expr.tree import Expr

__all__ = [
    "DataStats",
    "ProblemContext",
    "ProposalRequest",
    "ProposalOutcome",
    "Proposer",
    "LOSS_BIN_EDGES",
    "N_LOSS_BINS",
    "loss_bin",
]

# Upper edges of the relative-loss bins, on loss / var(y) (1 - R² for MSE). Losses enter the
# model as these bins, never as raw decimal strings; the last bin is "no better than the mean"
# and one more bin is reserved for non-finite losses.
LOSS_BIN_EDGES: tuple[float, ...] = (1e-10, 1e-7, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 0.7, 1.0)
N_LOSS_BINS = len(LOSS_BIN_EDGES) + 2  # + "above 1" + "non-finite"


def loss_bin(loss: float, y_var: float) -> int:
    """Discrete bin of ``loss`` relative to the variance of the target (0 = best)."""
    if not math.isfinite(loss):
        return N_LOSS_BINS - 1
    rel = loss / y_var if y_var > 0 else loss
    for i, edge in enumerate(LOSS_BIN_EDGES):
        if rel <= edge:
            return i
    return len(LOSS_BIN_EDGES)


@dataclass(frozen=True)
class DataStats:
    """Summary statistics of a dataset, the `rich` context of the model (computed once)."""

    n_samples: int
    y_mean: float
    y_std: float
    y_min: float
    y_max: float
    x_mean: tuple[float, ...]
    x_std: tuple[float, ...]
    x_min: tuple[float, ...]
    x_max: tuple[float, ...]
    corr_xy: tuple[float, ...]  # Pearson correlation of y with each feature
    monotonic_xy: tuple[float, ...]  # Spearman rank correlation of y with each feature

    @property
    def y_var(self) -> float:
        return self.y_std**2

    @classmethod
    def from_data(cls, X: np.ndarray, y: np.ndarray) -> "DataStats":
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ValueError(f"DataStats needs X (n, d) and y (n,), got {X.shape} and {y.shape}")

        def corr(a: np.ndarray, b: np.ndarray) -> float:
            sa, sb = a.std(), b.std()
            if sa == 0 or sb == 0:
                return 0.0
            return float(np.clip(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb), -1, 1))

        def ranks(a: np.ndarray) -> np.ndarray:
            return np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)

        ry = ranks(y)
        return cls(
            n_samples=int(X.shape[0]),
            y_mean=float(y.mean()),
            y_std=float(y.std()),
            y_min=float(y.min()),
            y_max=float(y.max()),
            x_mean=tuple(float(v) for v in X.mean(axis=0)),
            x_std=tuple(float(v) for v in X.std(axis=0)),
            x_min=tuple(float(v) for v in X.min(axis=0)),
            x_max=tuple(float(v) for v in X.max(axis=0)),
            corr_xy=tuple(corr(X[:, j], y) for j in range(X.shape[1])),
            monotonic_xy=tuple(corr(ranks(X[:, j]), ry) for j in range(X.shape[1])),
        )


@dataclass(frozen=True)
class ProblemContext:
    """What is fixed for a whole search: features, operators, size limit, data statistics."""

    nfeatures: int
    operators: OperatorSet
    maxsize: int
    variable_names: tuple[str, ...] = ()
    data_stats: DataStats | None = None

    @property
    def y_var(self) -> float:
        return self.data_stats.y_var if self.data_stats is not None else 1.0


@dataclass(frozen=True, slots=True)
class ProposalRequest:
    """One move to make: mutate ``parent`` (a tournament winner) into a child."""

    parent: Expr
    parent_loss: float
    parent_cost: float
    population: int
    iteration: int
    temperature: float
    curmaxsize: int
    context: ProblemContext
    # The population's members' trees and losses (population mode, the seeds' NeuralSR); empty
    # in mutation mode to keep requests cheap.
    members: tuple[tuple[Expr, float], ...] = field(default=())

    @property
    def parent_loss_bin(self) -> int:
        return loss_bin(self.parent_loss, self.context.y_var)


@dataclass(frozen=True, slots=True)
class ProposalOutcome:
    """What happened to a proposal: reported back through :meth:`Proposer.feedback`."""

    request: ProposalRequest
    child: Expr | None
    accepted: bool
    child_loss: float
    child_cost: float


@runtime_checkable
class Proposer(Protocol):
    """Produces one child per request; ``None`` means "cannot" and the engine falls back."""

    def propose(self, requests: Sequence[ProposalRequest], rng: np.random.Generator) -> list[Expr | None]:
        ...


def report_feedback(proposer: object, outcomes: Sequence[ProposalOutcome]) -> None:
    """Call ``proposer.feedback(outcomes)`` when the proposer implements it."""
    fb = getattr(proposer, "feedback", None)
    if fb is not None and outcomes:
        fb(outcomes)
