"""ttsr_bridge: transformer-tuned symbolic regression.

``SRRegressor`` is the Python engine (PySR-faithful); ``PySRRegressor`` wraps the real PySR with
the neural proposer and is imported lazily (``import ttsr_bridge`` never imports pysr).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["SRRegressor", "PySRRegressor", "__version__"]


def __getattr__(name: str):
    if name == "SRRegressor":
        from .regressor import SRRegressor

        return SRRegressor
    if name == "PySRRegressor":
        from .pysr.regressor import PySRRegressor

        return PySRRegressor
    raise AttributeError(f"module 'ttsr_bridge' has no attribute {name!r}")
