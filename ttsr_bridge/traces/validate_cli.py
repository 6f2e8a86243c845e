"""``ttsr traces validate FILE...``: check trace files against the SR.jl v1 schema."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="trace files (.jsonl or .jsonl.gz)")
    parser.add_argument("--no-semantic", action="store_true",
                        help="only the JSON Schema, not the cross-record ref checks")
    parser.add_argument("--max-errors", type=int, default=10, metavar="N",
                        help="errors printed per file (default 10)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print failures only")


def run(args: argparse.Namespace) -> int:
    from .validate import validate_file

    n_bad = 0
    for name in args.files:
        try:
            report = validate_file(name, semantic=not args.no_semantic)
        except OSError as e:
            print(f"FAIL {name}: {e}", file=sys.stderr)
            n_bad += 1
            continue
        if report.ok:
            if not args.quiet:
                print(f"ok   {name}: {report.n_iterations} iteration records")
            continue
        n_bad += 1
        print(f"FAIL {name}: {report.n_errors} error(s) in {report.n_lines} lines")
        for msg in report.errors[: args.max_errors]:
            print(f"  {msg}")
    if len(args.files) > 1:
        print(f"{len(args.files) - n_bad}/{len(args.files)} files valid")
    return 1 if n_bad else 0
