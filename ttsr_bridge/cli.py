"""The ``ttsr`` command. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; heavy modules are imported inside ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module, help). Nested commands use "group sub".
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("fit", "ttsr_bridge.fit_cli", "run symbolic regression on a CSV or a problem file"),
    ("demo", "ttsr_bridge.demo", "run the main job on the embedded default problem"),
    ("traces collect", "ttsr_bridge.traces.collect_cli", "collect search traces over many problems"),
    ("traces convert", "ttsr_bridge.traces.convert_cli", "convert traces into Parquet training examples"),
    ("traces validate", "ttsr_bridge.traces.validate_cli", "validate trace files against the SR.jl schema"),
    ("train", "ttsr_bridge.model.train_cli", "train the transformer proposer"),
    ("export", "ttsr_bridge.model.export_cli", "export a trained run to ONNX"),
    ("serve", "ttsr_bridge.propose.server_cli", "serve proposals to PySR/Julia over a loopback socket"),
    ("bench", "ttsr_bridge.bench.cli", "A/B benchmark engines on problem suites"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttsr", description="transformer-tuned symbolic regression")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ttsr_bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, module, help_ in SUBCOMMANDS:
        parts = name.split()
        target = sub
        if len(parts) == 2:
            if parts[0] not in groups:
                gp = sub.add_parser(parts[0], help=f"{parts[0]} commands")
                groups[parts[0]] = gp.add_subparsers(dest=f"{parts[0]}_command", metavar="COMMAND")
            target = groups[parts[0]]
        p = target.add_parser(parts[-1], help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("ttsr_bridge"):
                p.set_defaults(_missing=f"'ttsr {name}' is not available in this build ({e})")
                continue
            raise
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"error: {args._missing}", file=sys.stderr)
        return 2
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
