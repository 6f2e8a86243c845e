"""Adds TTSRBridge.jl to PySR's Julia environment and loads it (juliapkg glue).

PySR manages its Julia environment with juliapkg; optional Julia packages (LoopVectorization,
Zygote, ...) are added by PySR itself with ``Pkg.add`` into that environment and then loaded with
``using`` (pysr/julia_extensions.py). TTSRBridge is not registered, so it is added the same way
with ``Pkg.develop(path=...)`` from the copy shipped with this Python package.
"""

from __future__ import annotations

from pathlib import Path

from .spec import TTSRBRIDGE_UUID

__all__ = ["ensure_bridge_loaded", "julia_package_path"]


def julia_package_path() -> Path:
    """Directory of the TTSRBridge Julia package: ``ttsr_bridge/julia/TTSRBridge`` in an installed
    wheel (package data), else ``julia/TTSRBridge`` of the source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "julia" / "TTSRBridge", here.parent / "julia" / "TTSRBridge"):
        if (candidate / "Project.toml").is_file():
            return candidate
    raise FileNotFoundError(
        "the TTSRBridge Julia package was not found next to ttsr_bridge "
        f"(looked in {here / 'julia'} and {here.parent / 'julia'})"
    )


def ensure_bridge_loaded() -> None:
    """``Pkg.develop`` TTSRBridge into PySR's environment when missing, then ``using TTSRBridge``.

    Mirrors PySR 2.7.2's ``pysr.julia_extensions.load_package``: the same direct-dependency check
    (``isinstalled``), the same registry fallback (``try_with_registry_fallback``, for JSON3 and
    the other registered dependencies Pkg resolves here), and a constant ``using`` statement."""
    from pysr.julia_import import Pkg, jl  # imports juliacall / starts Julia
    from pysr.julia_registry_helpers import try_with_registry_fallback

    deps = Pkg.dependencies()
    uuid = jl.Base.UUID(TTSRBRIDGE_UUID)
    if not (jl.haskey(deps, uuid) and deps[uuid].is_direct_dep):
        path = str(julia_package_path())
        try_with_registry_fallback(lambda: Pkg.develop(path=path))
    jl.seval("using TTSRBridge: TTSRBridge")
