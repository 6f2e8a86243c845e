"""``ttsr_bridge.PySRRegressor``: PySR's estimator with the learned move proposer inside SR.jl.

A subclass of :class:`pysr.PySRRegressor` (so ``get_params`` / ``set_params`` / ``clone``,
``predict``, ``equations_`` and pickling are PySR's own) with the extra ``neural_*`` parameters
of :data:`~ttsr_bridge.pysr.spec.NEURAL_PARAMETERS`. ``fit`` starts ``ttsr serve`` on a free
loopback port, adds ``TTSRBridge.NeuralProposerPlugin`` to PySR's ``plugins`` for that fit only,
and stops the server afterwards. ``neural_proposer=None`` is stock PySR.

Importing this module imports pysr (and therefore Julia); ``import ttsr_bridge`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pysr

from ..propose.client import ServerProcess
from .julia_env import ensure_bridge_loaded
from .spec import (
    NEURAL_PARAMETERS,
    JuliaMutationSpec,
    JuliaPluginSpec,
    NeuralSpec,
    combined_init_signature,
    pysr_fit_overrides,
)

__all__ = ["NeuralMutation", "NeuralProposerPlugin", "PySRRegressor", "bridge_stats"]


@dataclass(frozen=True)
class NeuralProposerPlugin(pysr.AbstractPlugin):
    """PySR plugin config for ``TTSRBridge.NeuralProposerPlugin`` (PySR's ``plugins=[...]`` API)."""

    spec: JuliaPluginSpec

    def julia_plugin(self) -> Any:
        from pysr.julia_import import jl

        ensure_bridge_loaded()
        return self.spec.build(jl.TTSRBridge)


@dataclass(frozen=True)
class NeuralMutation(pysr.AbstractMutation):
    """PySR mutation config for ``TTSRBridge.NeuralMutation`` (PySR's ``mutations={...}`` API)."""

    spec: JuliaMutationSpec

    def julia_mutation(self) -> Any:
        from pysr.julia_import import jl

        ensure_bridge_loaded()
        return self.spec.build(jl.TTSRBridge)


def _to_pysr_objects(overrides: dict[str, Any]) -> dict[str, Any]:
    """Replace the pysr-free specs of :func:`pysr_fit_overrides` by PySR plugin/mutation objects."""
    out = dict(overrides)
    out["plugins"] = [NeuralProposerPlugin(p) if isinstance(p, JuliaPluginSpec) else p for p in overrides["plugins"]]
    if "mutations" in overrides:
        out["mutations"] = {
            (NeuralMutation(m) if isinstance(m, JuliaMutationSpec) else m): w for m, w in overrides["mutations"].items()
        }
    return out


def bridge_stats() -> dict[str, int]:
    """TTSRBridge's counters in this Python process's Julia (requests, proposals, fallbacks, ...)."""
    from pysr.julia_import import jl

    ensure_bridge_loaded()
    nt = jl.TTSRBridge.bridge_stats()
    return {str(k): int(v) for k, v in zip(jl.keys(nt), jl.values(nt))}


class PySRRegressor(pysr.PySRRegressor):
    """PySR with a neural move: ``PySRRegressor(neural_proposer="model.onnx", neural_weight=1.0,
    **every PySR parameter)``."""

    def __init__(self, **params: Any):
        for name, default in NEURAL_PARAMETERS.items():
            setattr(self, name, params.pop(name, default))
        super().__init__(**params)

    def neural_spec(self) -> NeuralSpec | None:
        return NeuralSpec.from_params({k: getattr(self, k) for k in NEURAL_PARAMETERS})

    def fit(self, X, y, *args: Any, **kwargs: Any):
        spec = self.neural_spec()
        if spec is None:
            return super().fit(X, y, *args, **kwargs)
        ensure_bridge_loaded()
        seed = self.random_state if isinstance(self.random_state, int) else 0
        saved = {"plugins": self.plugins, "worker_imports": self.worker_imports, "mutations": self.mutations}
        with ServerProcess(spec.proposer, seed=seed, extra_args=spec.server_args) as server:
            assert server.port is not None
            params = {
                "plugins": self.plugins, "worker_imports": self.worker_imports, "mutations": self.mutations,
                "default_mutations": self.default_mutations, "parallelism": self.parallelism,
                "cluster_manager": self.cluster_manager, "procs": self.procs,
                # deprecated PySR keyword, only present when the user passed it
                "multithreading": getattr(self, "multithreading", None),
            }
            overrides = _to_pysr_objects(pysr_fit_overrides(params, spec, server.host, server.port))
            try:
                for k, v in overrides.items():
                    setattr(self, k, v)
                return super().fit(X, y, *args, **kwargs)
            finally:
                # The user's parameters are left as given (sklearn: fit never changes params).
                for k, v in saved.items():
                    setattr(self, k, v)


# scikit-learn reads the parameter list from __init__'s signature: PySR's plus ours.
PySRRegressor.__init__.__signature__ = combined_init_signature(pysr.PySRRegressor.__init__, NEURAL_PARAMETERS)
