"""``ttsr export``: write a trained run as ONNX (KV cache in/out) + sidecar JSON."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory written by 'ttsr train'")
    parser.add_argument("--out", required=True, help="output .onnx path (sidecar: OUT.json)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--weights", choices=("fp32", "int8"), default="fp32",
                        help="fp32 (exact) or int8 weight matrices (~3.5x smaller, ~30%% less CPU; "
                             "next-token KL < 1e-4)")
    parser.add_argument("--graph-version", type=int, choices=(2, 3), default=2,
                        help="2: attention from standard ops over a shared read-only context; 3: onnxruntime's "
                             "fused GroupQueryAttention with per-row caches (faster decoding on CPU; needs a "
                             "head size multiple of 16)")


def run(args: argparse.Namespace) -> int:
    from ..config_io import to_mapping
    from .export import export_run

    try:
        sidecar = export_run(args.run, args.out, opset=args.opset, weights=args.weights,
                             graph_version=args.graph_version)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = {k: v for k, v in to_mapping(sidecar).items() if k != "tokenizer"}
    print(json.dumps({"onnx": args.out, **info}))
    return 0
