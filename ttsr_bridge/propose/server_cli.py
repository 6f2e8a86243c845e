"""``ttsr serve``: run the proposal server for PySR / TTSRBridge.jl on a loopback port.

``ttsr serve --model model.onnx|default|classic|package.module:factory --host 127.0.0.1 --port P``
prints one line ``ttsr serve: listening on HOST:PORT ...`` (``--port 0``: the OS picks a port;
``--port-file`` also writes it) and serves until SIGTERM/SIGINT or a ``shutdown`` message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

from .server import ModelInfo, ServerConfig

__all__ = ["add_arguments", "load_proposer", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="an exported ONNX model (file or export directory), 'default' (the bundled model), "
        "'classic' (SR.jl's hand-written mutations, no model), or 'package.module:factory'",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (keep it loopback; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 lets the OS pick one (default)")
    parser.add_argument("--port-file", default=None, help="write the chosen port to this file once listening")
    parser.add_argument("--max-batch", type=int, default=ServerConfig.max_batch, help="most requests per model call")
    parser.add_argument("--batch-window-ms", type=float, default=ServerConfig.batch_window_s * 1e3,
                        help="wait this long after the first queued request for more (default 1 ms)")
    parser.add_argument("--max-queue", type=int, default=ServerConfig.max_queue, help="bound on queued requests")
    parser.add_argument("--seed", type=int, default=0, help="seed of the proposer's sampling RNG")
    parser.add_argument("--no-shutdown-message", action="store_true", help="ignore 'shutdown' messages (signals only)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _load_factory(spec: str) -> tuple[Any, ModelInfo]:
    """``package.module:attr`` -> ``attr()`` (an import by name, never evaluated text)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr.isidentifier():
        raise ValueError(f"--model {spec!r}: expected 'package.module:factory'")
    factory = getattr(importlib.import_module(module_name), attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"--model {spec!r}: {module_name} has no callable {attr!r}")
    return factory(), ModelInfo(name=spec, kind="python")


def load_proposer(spec: str) -> tuple[Any, ModelInfo]:
    """The proposer named by ``--model`` and what ``hello`` reports about it."""
    if spec == "classic":
        from .classic import ClassicProposer

        return ClassicProposer(), ModelInfo(name="classic", kind="classic")
    if ":" in spec and not Path(spec).exists():
        return _load_factory(spec)
    from . import onnx_proposer

    if spec == "default":
        default_path = getattr(onnx_proposer, "default_model_path", None)
        if default_path is None:
            raise ValueError("--model default: this build has no bundled model; pass an exported .onnx path")
        path = Path(default_path())
    else:
        path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--model: {path} does not exist")
    cls = onnx_proposer.OnnxProposer
    proposer = cls.load(path) if hasattr(cls, "load") else cls(path)
    return proposer, ModelInfo(name=path.stem, kind="onnx", path=str(path.resolve()))


def run(args: argparse.Namespace) -> int:
    from .server import run_server

    logging.basicConfig(level=getattr(logging, args.log_level), format="ttsr serve %(levelname)s %(message)s")
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            batch_window_s=args.batch_window_ms / 1e3,
            max_queue=args.max_queue,
            seed=args.seed,
            allow_shutdown=not args.no_shutdown_message,
            port_file=args.port_file,
        )
        proposer, info = load_proposer(args.model)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats = run_server(proposer, config, info)
    print(
        f"ttsr serve: stopped after {stats.requests} requests ({stats.proposals} proposals, "
        f"{stats.declined} declined, {stats.errors} errors, mean batch {stats.to_json()['mean_batch']:.1f})",
        file=sys.stderr,
    )
    return 0
