"""A tiny training run on synthetic §7 Parquet data: loss goes down, metrics are written,
resuming reproduces the uninterrupted run, the CLI works."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttsr_bridge.config_io import from_mapping
from ttsr_bridge.model.config import TrainConfig
from ttsr_bridge.model.synthetic_data import write_synthetic_dataset

CFG = {
    "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_positions": 192},
    "context_mode": "rich", "lr": 3e-3, "warmup_steps": 2, "batch_size": 16, "max_steps": 12,
    "eval_interval": 6, "eval_batches": 2, "eval_samples": 8, "checkpoint_interval": 4, "log_interval": 2,
    "max_prompt_len": 128, "max_child_len": 40, "seed": 3,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), 160, np.random.default_rng(0))


def _weights(run):
    from safetensors.numpy import load_file

    from ttsr_bridge.model.train import last_checkpoint

    return load_file(str(last_checkpoint(run) / "model.safetensors"))


def test_train_reduces_loss_and_writes_run(dataset, tmp_path):
    from ttsr_bridge.model.train import train

    cfg = from_mapping(TrainConfig, CFG)
    s = train(cfg, dataset, tmp_path / "run", device="cpu", progress=False)
    assert s.steps == 12 and s.final_train_loss < s.first_train_loss
    assert s.eval is not None and 0 <= s.eval.well_formed_rate <= 1 and np.isfinite(s.eval.val_loss)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in recs) and any("train_loss" in r for r in recs)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 12
    assert any((tmp_path / "run" / "tb").iterdir())
    with pytest.raises(FileExistsError):
        train(cfg, dataset, tmp_path / "run", device="cpu", progress=False)


def test_resume_matches_uninterrupted(dataset, tmp_path):
    from ttsr_bridge.model.train import train

    cfg = from_mapping(TrainConfig, {**CFG, "max_steps": 8, "eval_interval": 100})
    train(cfg, dataset, tmp_path / "full", device="cpu", progress=False)
    train(cfg, dataset, tmp_path / "part", device="cpu", max_steps=4, progress=False)
    s = train(cfg, dataset, tmp_path / "part", device="cpu", resume=True, progress=False)
    assert s.steps == 8
    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for k in full:
        np.testing.assert_allclose(full[k], part[k], rtol=1e-5, atol=1e-6)


def test_cli_train(dataset, tmp_path):
    import yaml

    from ttsr_bridge.cli import main

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**CFG, "max_steps": 2}))
    rc = main(["train", "--config", str(cfg_path), "--data", str(dataset), "--out", str(tmp_path / "r"),
               "--device", "cpu", "--no-progress"])
    assert rc == 0 and (tmp_path / "r" / "summary.json").is_file()
    assert main(["train", "--config", str(cfg_path), "--data", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "r2"), "--device", "cpu"]) == 2
