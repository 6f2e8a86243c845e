"""PySR parameter plumbing that needs neither pysr nor Julia (so it is testable everywhere).

:class:`NeuralSpec` is what ``PySRRegressor(neural_*=...)`` means; :class:`JuliaPluginSpec` is the
exact ``TTSRBridge.NeuralProposerPlugin(...)`` the search gets once the server's port is known;
:func:`pysr_fit_overrides` is how the regressor's PySR parameters change for one ``fit``;
:class:`PySRBudget` sizes the searches of trace collection and benchmarks.
"""

from __future__ import annotations

import inspect
import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..expr.operators import OperatorSet

__all__ = [
    "NEURAL_PARAMETERS",
    "TTSRBRIDGE_UUID",
    "JuliaMutationSpec",
    "JuliaPluginSpec",
    "NeuralSpec",
    "PySRBudget",
    "combined_init_signature",
    "pysr_fit_overrides",
    "pysr_operator_names",
    "uses_worker_processes",
]

TTSRBRIDGE_UUID = "2144f98f-c5de-4429-987a-3451499ba32f"  # julia/TTSRBridge/Project.toml

# The parameters PySRRegressor adds to PySR's, with their defaults (sklearn reads them from the
# signature, so clone/get_params/set_params see them like PySR's own).
NEURAL_PARAMETERS: dict[str, Any] = {
    "neural_proposer": "default",
    "neural_weight": 1.0,
    "neural_timeout": 2.0,
    "neural_feedback": True,
    "neural_require_server": False,
    "neural_server_args": (),
}


@dataclass(frozen=True)
class NeuralSpec:
    """The neural move of a PySR search: which proposer the server loads and how SR.jl uses it."""

    proposer: str = "default"  # exported .onnx path | "default" | "classic" | "package.module:factory"
    weight: float = 1.0  # weight of NeuralMutation among SR.jl's mutation weights
    timeout_s: float = 2.0  # longest wait for one proposal before falling back
    feedback: bool = True  # report accept/reject and child cost back to the server
    require_server: bool = False  # an unreachable server is an error (else every move falls back)
    server_args: tuple[str, ...] = ()  # extra `ttsr serve` arguments (e.g. --max-batch 64)

    def __post_init__(self) -> None:
        if not isinstance(self.proposer, str) or not self.proposer:
            raise ValueError("neural_proposer must be a model path, 'default', 'classic' or 'module:factory'")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"neural_weight must be a finite number >= 0, got {self.weight!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"neural_timeout must be > 0 seconds, got {self.timeout_s!r}")
        if not all(isinstance(a, str) for a in self.server_args):
            raise ValueError("neural_server_args must be strings")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> NeuralSpec | None:
        """From the regressor's ``neural_*`` parameters; ``None`` when ``neural_proposer`` is None."""
        if params.get("neural_proposer") is None:
            return None
        return cls(
            proposer=str(params["neural_proposer"]),
            weight=float(params.get("neural_weight", 1.0)),
            timeout_s=float(params.get("neural_timeout", 2.0)),
            feedback=bool(params.get("neural_feedback", True)),
            require_server=bool(params.get("neural_require_server", False)),
            server_args=tuple(params.get("neural_server_args") or ()),
        )

    def plugin(self, host: str, port: int) -> JuliaPluginSpec:
        return JuliaPluginSpec(host, port, self.weight, self.timeout_s, self.feedback, self.require_server)


@dataclass(frozen=True)
class JuliaPluginSpec:
    """``TTSRBridge.NeuralProposerPlugin(...)`` for one server address: validated values that
    :meth:`build` passes to the Julia constructors."""

    host: str
    port: int
    weight: float
    timeout_s: float
    feedback: bool
    require_server: bool

    def __post_init__(self) -> None:
        # Only validated values cross into Julia.
        ipaddress.ip_address(self.host)  # raises ValueError on anything but an IP literal
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (1 <= self.port <= 65535):
            raise ValueError(f"port must be an integer in [1, 65535], got {self.port!r}")
        if not (math.isfinite(self.weight) and math.isfinite(self.timeout_s)):
            raise ValueError("weight and timeout must be finite")

    def config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``TTSRBridge.BridgeConfig``."""
        return {"host": self.host, "port": int(self.port), "timeout_s": float(self.timeout_s)}

    def plugin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``TTSRBridge.NeuralProposerPlugin`` besides ``config``."""
        return {"weight": float(self.weight), "feedback": bool(self.feedback),
                "require_server": bool(self.require_server)}

    def build(self, bridge_module: Any) -> Any:
        """The Julia plugin object, built by calling the constructors of ``bridge_module``
        (juliacall's ``jl.TTSRBridge``) with typed keyword arguments — no Julia source text."""
        config = bridge_module.BridgeConfig(**self.config_kwargs())
        return bridge_module.NeuralProposerPlugin(config=config, **self.plugin_kwargs())


@dataclass(frozen=True)
class JuliaMutationSpec:
    """``TTSRBridge.NeuralMutation(BridgeConfig(...))`` as an explicit PySR ``mutations`` entry.

    Needed when the user passes ``default_mutations``: SR.jl (src/core/Options.jl) then drops every
    plugin-contributed mutation, so the neural move is added explicitly (explicit entries always
    apply). The plugin still reports outcomes: SR.jl dispatches ``on_mutation_end!`` on the
    mutation's type however it was registered."""

    plugin: JuliaPluginSpec

    @property
    def weight(self) -> float:
        return self.plugin.weight

    def build(self, bridge_module: Any) -> Any:
        """The Julia mutation, built from typed keyword arguments (no Julia source text)."""
        config = bridge_module.BridgeConfig(**self.plugin.config_kwargs())
        return bridge_module.NeuralMutation(config)


@dataclass(frozen=True)
class PySRBudget:
    """Size of one PySR search (trace collection, benchmarks). Defaults are PySR 2.7.2's."""

    niterations: int = 100
    populations: int = 31
    population_size: int = 27
    ncycles_per_iteration: int = 380
    maxsize: int = 30
    timeout_in_seconds: float | None = None
    max_evals: int | None = None

    @classmethod
    def coerce(cls, budget: PySRBudget | int) -> PySRBudget:
        """An int means ``niterations`` with everything else at PySR's defaults."""
        if isinstance(budget, cls):
            return budget
        if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1:
            return cls(niterations=budget)
        raise ValueError(f"budget must be a PySRBudget or a positive number of iterations, got {budget!r}")

    def pysr_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "niterations": self.niterations,
            "populations": self.populations,
            "population_size": self.population_size,
            "ncycles_per_iteration": self.ncycles_per_iteration,
            "maxsize": self.maxsize,
        }
        if self.timeout_in_seconds is not None:
            kw["timeout_in_seconds"] = self.timeout_in_seconds
        if self.max_evals is not None:
            kw["max_evals"] = self.max_evals
        return kw


def pysr_operator_names(operators: OperatorSet | None) -> tuple[list[str], list[str]]:
    """PySR's ``binary_operators`` / ``unary_operators`` for an operator set (PySR's defaults for None)."""
    if operators is None:
        return ["+", "-", "*", "/"], []
    binary, unary = operators.names()
    return list(binary), list(unary)


def uses_worker_processes(params: dict[str, Any]) -> bool:
    """Whether PySR 2.7.2 runs this search in Julia worker processes: ``parallelism=
    "multiprocessing"``, a ``cluster_manager``, or the deprecated ``multithreading=False`` with
    ``procs > 0`` (PySR's ``_map_parallelism_params``)."""
    if params.get("parallelism") == "multiprocessing" or params.get("cluster_manager") is not None:
        return True
    procs = params.get("procs")
    return params.get("multithreading") is False and isinstance(procs, int) and procs > 0


def pysr_fit_overrides(params: dict[str, Any], spec: NeuralSpec, host: str, port: int) -> dict[str, Any]:
    """The PySR parameters to set for one ``fit`` with the neural move (restored afterwards):
    the plugin spec appended to ``plugins``; when ``default_mutations`` is set (SR.jl then ignores
    plugin mutations) the mutation spec added to ``mutations``; and ``TTSRBridge`` in
    ``worker_imports`` when worker processes must load it."""
    plugin = spec.plugin(host, port)
    overrides: dict[str, Any] = {"plugins": [*(params.get("plugins") or ()), plugin]}
    if params.get("default_mutations") is not None and plugin.weight > 0:
        mutations = dict(params.get("mutations") or {})
        mutations[JuliaMutationSpec(plugin)] = plugin.weight
        overrides["mutations"] = mutations
    if uses_worker_processes(params):
        imports = list(params.get("worker_imports") or ())
        if "TTSRBridge" not in imports:
            imports.append("TTSRBridge")
        overrides["worker_imports"] = imports
    return overrides


def combined_init_signature(base_init: Callable[..., Any], extra: dict[str, Any]) -> inspect.Signature:
    """``base_init``'s keyword parameters plus ``extra`` (name -> default), keyword-only, so that
    scikit-learn's ``get_params`` (which reads ``__init__``'s signature) sees all of them."""
    base = inspect.signature(base_init)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in extra.items()
    ]
    for p in list(base.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in extra:
            continue
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    return inspect.Signature(params)


def plugin_specs(plugins: Sequence[Any]) -> list[JuliaPluginSpec]:
    """Every :class:`JuliaPluginSpec` in ``plugins`` (others are PySR's own)."""
    return [p for p in plugins if isinstance(p, JuliaPluginSpec)]
