"""Configs load (unknown keys rejected) and the shipped sizes have the intended parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsr_bridge.config_io import ConfigError, from_mapping
from ttsr_bridge.model.config import TrainConfig, load_train_config
from ttsr_bridge.model.tokenizer import Tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name,low,high", [("tiny", 0.8e6, 1.3e6), ("small", 8e6, 12e6), ("base", 40e6, 60e6)])
def test_parameter_counts(name, low, high):
    import torch

    from ttsr_bridge.model.transformer import build_model, count_parameters

    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    with torch.device("meta"):  # shapes only, no memory
        model = build_model(cfg.model, Tokenizer(cfg.context_mode, cfg.prompt_mode))
    assert low <= count_parameters(model) <= high


def test_unknown_and_inconsistent_keys_rejected():
    with pytest.raises(ConfigError, match="unknown"):
        from_mapping(TrainConfig, {"learning_rate": 1.0})
    with pytest.raises(ConfigError, match="max_positions"):
        from_mapping(TrainConfig, {"model": {"max_positions": 64}, "max_prompt_len": 60, "max_child_len": 10})
    with pytest.raises(ConfigError, match="divisible"):
        from_mapping(TrainConfig, {"model": {"hidden_size": 30, "num_heads": 4}})


def test_target_loss_ignores_prompt_tokens():
    import torch

    from ttsr_bridge.model.config import ModelConfig
    from ttsr_bridge.model.transformer import IGNORE_INDEX, build_model, target_loss

    tok = Tokenizer()
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tok, seed=0)
    ids = torch.randint(0, tok.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 6:] = ids[:, 6:]
    base = target_loss(model, ids, mask, labels)
    changed = ids.clone()
    changed[:, 0] = (changed[:, 0] + 1) % tok.vocab_size  # a prompt token changes the logits...
    labels2 = labels.clone()
    labels2[:, 3] = 5  # ...but a label on a prompt position must change the loss
    assert torch.isfinite(base)
    assert not torch.isclose(target_loss(model, ids, mask, labels2), base)
