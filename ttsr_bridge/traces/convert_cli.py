"""``ttsr traces convert``: trace collections → Parquet training examples.

Example::

    ttsr traces convert --in data/traces/syn200 --out data/datasets/syn200-mut \\
        --mode mutation --context rich --filter all --val-fraction 0.1
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inputs", action="append", required=True, metavar="DIR",
                        help="a trace collection directory (repeatable)")
    parser.add_argument("--out", required=True, metavar="DATASET", help="output dataset directory")
    parser.add_argument("--mode", choices=("mutation", "population"), default="mutation")
    parser.add_argument("--context", choices=("basic", "rich"), default="basic",
                        help="rich adds the data-statistics columns")
    parser.add_argument("--filter", choices=("all", "accepted", "improving"), default="all",
                        help="which moves become examples")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of problems (not rows) in the val split")
    parser.add_argument("--heldout", action="append", default=[], metavar="FILE",
                        help="extra held-out problems: a problem file, or a text file of names")
    parser.add_argument("--sample", type=float, default=1.0, metavar="F",
                        help="keep this fraction of the moves (deterministic per trace file; default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--rows-per-shard", type=int, default=100_000, metavar="N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from .convert import ConvertConfig, ConvertError, convert

    try:
        cfg = ConvertConfig(
            inputs=tuple(args.inputs), out=args.out, mode=args.mode, context=args.context,
            filter=args.filter, val_fraction=args.val_fraction, heldout_files=tuple(args.heldout),
            rows_per_shard=args.rows_per_shard, overwrite=args.overwrite,
            sample=args.sample, seed=args.seed,
        )
        report = convert(cfg, progress=not args.no_progress)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_val = sum(s == "val" for s in report.problems.values())
    print(f"{report.rows} examples from {report.counts['files']} traces of "
          f"{len(report.problems)} problems ({n_val} val) → {report.out} "
          f"({len(report.shards)} shards)")
    if report.refused:
        names = ", ".join(sorted(report.refused)[:8])
        print(f"refused {len(report.refused)} held-out problem(s): {names}"
              + (" ..." if len(report.refused) > 8 else ""))
    skipped = {k: report.counts[k] for k in ("unparsable_trees", "missing_children",
                                              "skipped_lines", "traces_without_metadata")
               if report.counts[k]}
    if skipped:
        print(f"skipped: {skipped}")
    return 0
