"""The whole loop in miniature: collect traces → convert → train (a few CPU steps) → export
ONNX → a neural `ttsr fit` that uses the exported model. Real components throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttsr_bridge.cli import main

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_traces_to_neural_search(tmp_path, capsys):
    collect_cfg = _write(tmp_path / "collect.yaml", """
engine: python
problems: synthetic:3
runs: 1
preset: pysr
budget: {iterations: 1}
seed: 0
workers: 1
search: {populations: 3, population_size: 20, ncycles_per_iteration: 15, tournament_selection_n: 10}
""")
    traces = tmp_path / "traces"
    assert main(["traces", "collect", "--config", str(collect_cfg), "--out", str(traces), "--no-progress"]) == 0
    shards = sorted((traces / "shards").glob("*.jsonl"))
    assert len(shards) == 3
    assert main(["traces", "validate", *map(str, shards)]) == 0

    dataset = tmp_path / "dataset"
    assert main(["traces", "convert", "--in", str(traces), "--out", str(dataset), "--val-fraction", "0.34",
                 "--no-progress"]) == 0
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["rows"] > 100 and {p["split"] for p in meta["problems"]} == {"train", "val"}

    train_cfg = _write(tmp_path / "train.yaml", """
model: {hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, max_positions: 384}
lr: 3.0e-3
warmup_steps: 2
batch_size: 16
max_steps: 6
eval_interval: 6
eval_batches: 2
eval_samples: 8
checkpoint_interval: 6
seed: 0
""")
    run = tmp_path / "run"
    assert main(["train", "--config", str(train_cfg), "--data", str(dataset), "--out", str(run), "--device", "cpu",
                 "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["final_train_loss"] < summary["first_train_loss"]

    model = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run), "--out", str(model)]) == 0
    assert model.is_file() and Path(str(model) + ".json").is_file()

    data = tmp_path / "data.csv"
    data.write_text("a,b,y\n" + "\n".join(f"{i / 7:.4f},{1 + i % 5},{(i / 7) * (1 + i % 5) + 2:.6f}" for i in range(40)))
    out = tmp_path / "fit.json"
    capsys.readouterr()
    assert main(["fit", "--data", str(data), "--target", "y", "--proposer", str(model), "--neural-weight", "2.0",
                 "--niterations", "2", "--seed", "0", "--quiet", "--json", str(out),
                 "--binary-operators", "+,-,*,/"]) == 0
    fit = json.loads(out.read_text())
    stats = fit["proposer"]
    assert stats["requests"] > 0 and stats["calls"] > 0
    # Grammar-constrained decoding: every proposal is a well-formed tree; fallbacks only for
    # children the engine's constraints reject.
    assert stats["proposed"] + stats["fallback"] == stats["requests"]
    assert stats["proposed"] > 0
