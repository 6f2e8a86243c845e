"""The proposer speed benchmark prints one JSON line with the documented keys."""

from __future__ import annotations

import json

from ttsr_bridge.config_io import from_mapping
from ttsr_bridge.model.config import TrainConfig


def test_proposer_speed_json(tmp_path, capsys):
    from ttsr_bridge.bench.proposer_speed import main
    from ttsr_bridge.model.export import export_run
    from ttsr_bridge.model.train import init_run

    cfg = from_mapping(TrainConfig, {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64, "max_positions": 192},
                                     "max_prompt_len": 128, "max_child_len": 40})
    init_run(cfg, tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "m.onnx")
    assert main(["--model", str(tmp_path / "m.onnx"), "--json", "--seconds", "0.3", "--requests", "8"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("proposals_per_s", "well_formed_rate", "evals_per_s_classic", "none_rate", "mean_child_size",
                "cpu_ms_per_proposal"):
        assert key in res
    assert res["proposals_per_s"] > 0 and res["well_formed_rate"] == 1.0


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    from ttsr_bridge.bench.proposer_speed import main

    assert main(["--model", str(tmp_path / "none.onnx"), "--json"]) == 2
    assert "not found" in capsys.readouterr().err
