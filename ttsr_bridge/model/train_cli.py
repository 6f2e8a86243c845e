"""``ttsr train``: train the transformer proposer on a Parquet dataset."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (e.g. training/configs/tiny.yaml)")
    parser.add_argument("--data", required=True, help="dataset directory written by 'ttsr traces convert'")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, tb/, metrics.jsonl, summary.json)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps; the LR schedule still spans the config's steps, so --resume continues the same run")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..config_io import ConfigError
    from .config import load_train_config
    from .dataset import DatasetError
    from .train import train

    try:
        cfg = load_train_config(args.config)
        summary = train(cfg, args.data, args.out, device=args.device, max_steps=args.max_steps,
                        resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DatasetError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(summary)))
    return 0
