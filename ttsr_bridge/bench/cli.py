"""``ttsr bench``: A/B benchmark engines on problem suites.

    ttsr bench --problems seeds --problems nguyen --engines classic,operon,gplearn --seeds 3 \
        --budget-evals 100000 --workers 2 --out runs/bench1 [--json] [--limit N] [--select NAMES]
    ttsr bench --config benchmarks/bench_seeds.yaml --out runs/bench1
    ttsr bench --problems data.csv --target y --engines classic,operon --seeds 3 --budget-evals 50000 \
        --out runs/mydata      # a plain CSV: fixed rows, no ground truth (R²/solution, no recovery)

Writes ``runs.parquet``, ``summary.json``, ``report.md`` and PNG plots (recovery vs budget,
recovery heat map, ``loss_curves.png``) into ``--out``; rerunning with the same ``--out`` resumes
(finished rows are kept).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "run", "config_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="BenchConfig YAML (command-line options override it)")
    parser.add_argument("--problems", action="append", metavar="SUITE|FILE",
                        help="suite name (ultra-simple, harder, seeds, nguyen, pysr-tuning, feynman[:PATH], "
                             "dso[:PATH]), problem file (.yaml), or csv:PATH / a .csv path: a plain numeric CSV "
                             "with a header row is one fixed-data problem named after the file (no ground "
                             "truth: recovery n/a, R² on held-out rows); a .csv with FeynmanEquations or DSO "
                             "benchmark columns is read as that suite; repeatable")
    parser.add_argument("--target", metavar="COL",
                        help="target column of plain-CSV problems (default: the last column); the other "
                             "columns are the features")
    parser.add_argument("--csv-points", type=int, metavar="N",
                        help="at most N fit rows per plain-CSV problem, a seeded subsample (default 1000); "
                             "csv_test_fraction of the rows (config; default 0.25, at least 1 row) is held out "
                             "per seed for R²")
    parser.add_argument("--engines", help="comma-separated: classic,basic,neural[:MODEL],operon,gplearn,pysr,"
                                          "pysr-neural[:MODEL] (the first is the baseline)")
    parser.add_argument("--seeds", type=int, help="runs per (problem, engine)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-evals", type=int, help="evaluations per run (each engine's own count)")
    budget.add_argument("--budget-seconds", type=float, help="seconds per run")
    parser.add_argument("--workers", type=int, help="parallel worker processes")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.add_argument("--limit", type=int, help="only the first N problems")
    parser.add_argument("--select", help="comma-separated problem names or globs")
    parser.add_argument("--neural-weight", type=float, metavar="W",
                        help="weight of the neural move among PySR's mutation weights (sum ≈ 8.5) for "
                             "neural engines; 1e6 makes the proposer take (almost) every mutation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The BenchConfig of the YAML (if any) with the command-line options applied."""
    from ttsr_bridge.config_io import from_mapping, load_yaml, to_mapping

    from .config import BenchConfig

    base = to_mapping(load_yaml(BenchConfig, args.config)) if args.config else {}
    over: dict = {}
    if args.problems:
        over["problems"] = list(args.problems)
    if args.engines:
        over["engines"] = [e.strip() for e in args.engines.split(",") if e.strip()]
    for key in ("seeds", "workers", "limit", "neural_weight", "target", "csv_points"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    if args.budget_evals is not None:
        over.update(budget_evals=args.budget_evals, budget_seconds=None)
    if args.budget_seconds is not None:
        over.update(budget_seconds=args.budget_seconds, budget_evals=None)
    if args.select:
        over["select"] = [s.strip() for s in args.select.split(",") if s.strip()]
    merged = {**base, **over}
    if not args.config and "budget_evals" not in merged and "budget_seconds" not in merged:
        raise ValueError("give --budget-evals or --budget-seconds (or a --config that sets one)")
    return from_mapping(BenchConfig, merged)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ttsr_bridge.config_io import ConfigError

    from .problems import ProblemError
    from .report import summarize, write_plots, write_report
    from .runner import environment_info, run_bench

    try:
        config = config_from_args(args)
        result = run_bench(config, args.out, progress=not (args.no_progress or args.json))
    except (ConfigError, ProblemError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    sha, versions = environment_info()
    summary = summarize(result.rows, config, git_sha=sha, versions=versions)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(summary, out)
    write_plots(result.rows, config, out)
    if args.json:
        print(json.dumps(summary, separators=(",", ":")))
    else:
        print(f"{len(result.rows)} rows ({result.ran} run now, {result.resumed} resumed) → {out}/report.md")
        for e, s in summary["engines"].items():
            rc, sc = s["recovery"], s["solution"]
            rec = "n/a" if rc["rate"] is None else f"{rc['rate']:.3f}"
            sol = "n/a" if sc["rate"] is None else f"{sc['rate']:.3f}"
            print(f"  {e:>14}: recovery {rec}, solution {sol} "
                  f"(ok {s['ok']}, skipped {s['skipped']}, errors {s['errors']})")
        for c in (summary.get("loss_curves") or {}).get("comparisons", []):
            if c["n_pairs"]:
                noise = {None: "too few pairs", True: "within noise", False: "differs"}[c["within_noise"]]
                print(f"  loss curves {c['engine']} vs {c['baseline']}: mean log10 loss ratio "
                      f"{c['mean_log10_ratio']:.3g} [{c['low']:.3g}, {c['high']:.3g}] over {c['n_pairs']} pairs "
                      f"({noise})")
    return 0


