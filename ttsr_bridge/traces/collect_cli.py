"""``ttsr traces collect``: run many traced searches into a collection directory.

Example::

    ttsr traces collect --engine python --problems synthetic:200 --runs 2 --preset pysr \\
        --budget-evals 200000 --out data/traces/syn200 --workers 8

A ``--config FILE`` (YAML; see ``traces/configs/``) gives the same fields; flags override it::

    engine: python
    problems: synthetic:200
    runs: 2
    preset: pysr
    budget: {evals: 200000}
    seed: 0
    workers: 8
    gzip: true                                              # shards as .jsonl.gz
    search: {populations: 8, ncycles_per_iteration: 100}   # SearchConfig overrides

Run the same command again to resume: finished units are kept, the rest are (re)done.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

_CONFIG_KEYS = {"engine", "problems", "runs", "preset", "budget", "seed", "workers", "gzip", "search"}
_BUDGET_KEYS = {"evals", "iterations", "seconds"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="collection config (YAML); flags override it")
    parser.add_argument("--engine", choices=("python", "pysr"), help="search engine (default python)")
    parser.add_argument("--problems", metavar="SPEC",
                        help="a suite name, a problem file, or synthetic:N")
    parser.add_argument("--runs", type=int, metavar="R", help="searches per problem (default 1)")
    parser.add_argument("--preset", help="SearchConfig preset: pysr or basic (default pysr)")
    parser.add_argument("--budget-evals", type=int, metavar="N", help="stop after N evaluations")
    parser.add_argument("--budget-iterations", type=int, metavar="N", help="stop after N iterations")
    parser.add_argument("--budget-seconds", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--out", required=True, metavar="DIR", help="collection directory")
    parser.add_argument("--workers", type=int, metavar="K", help="parallel processes (default 1)")
    parser.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=None,
                        help="write the traces gzip-compressed (.jsonl.gz: about a ninth of the size, "
                             "about a tenth more trace-writing CPU; default: off)")
    parser.add_argument("--shard", default="0/1", metavar="i/n",
                        help="run only shard i of n (0 <= i < n) of the units")
    parser.add_argument("--seed", type=int, help="base seed of the unit seeds (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_config_file(path: str) -> dict[str, Any]:
    import yaml

    from .collect import CollectError

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise CollectError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise CollectError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
    budget = data.get("budget") or {}
    if not isinstance(budget, dict) or set(budget) - _BUDGET_KEYS:
        raise CollectError(f"{path}: budget must be a mapping with keys {sorted(_BUDGET_KEYS)}")
    search = data.get("search") or {}
    if not isinstance(search, dict):
        raise CollectError(f"{path}: search must be a mapping of SearchConfig fields")
    return data


def _merge(args: argparse.Namespace) -> tuple[Any, int, bool]:
    """CLI flags over the config file over defaults → (CollectConfig, workers, gzip)."""
    from .collect import Budget, CollectConfig, CollectError

    file_cfg = _load_config_file(args.config) if args.config else {}
    fb = file_cfg.get("budget") or {}

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else file_cfg.get(key, default)

    cli_budget = (args.budget_evals, args.budget_iterations, args.budget_seconds)
    if any(v is not None for v in cli_budget):
        budget = Budget(*cli_budget)
    else:
        budget = Budget(fb.get("evals"), fb.get("iterations"), fb.get("seconds"))
    problems = pick(args.problems, "problems", None)
    if not problems:
        raise CollectError("give --problems (a suite, a problem file or synthetic:N)")
    config = CollectConfig(
        engine=pick(args.engine, "engine", "python"),
        problems=str(problems),
        runs=int(pick(args.runs, "runs", 1)),
        preset=str(pick(args.preset, "preset", "pysr")),
        budget=budget,
        seed=int(pick(args.seed, "seed", 0)),
        search_overrides=dict(file_cfg.get("search") or {}),
    )
    workers = int(pick(args.workers, "workers", 1))
    if workers < 1:
        raise CollectError(f"--workers must be >= 1, got {workers}")
    compress = pick(args.gzip, "gzip", False)
    if not isinstance(compress, bool):
        raise CollectError(f"gzip must be true or false, got {compress!r}")
    return config, workers, compress


def run(args: argparse.Namespace) -> int:
    from .collect import CollectError, collect, parse_shard

    try:
        config, workers, compress = _merge(args)
        shard = parse_shard(args.shard)
        data = collect(config, args.out, workers=workers, shard=shard,
                       command=["ttsr", *sys.argv[1:]], progress=not args.no_progress,
                       compress=compress)
    except CollectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    units = data["units"].values()
    done = sum(u["status"] == "done" for u in units)
    failed = [uid for uid, u in data["units"].items() if u["status"] == "failed"]
    print(f"{done}/{len(data['units'])} units done in {args.out}"
          + (f"; {len(failed)} failed (rerun to retry): {', '.join(failed[:5])}" if failed else ""))
    for uid in failed[:3]:
        print(f"  {uid}: {data['units'][uid]['error'].splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0
