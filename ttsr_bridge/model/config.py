"""Typed configs of the proposer model and its training (frozen; loaded with
:func:`ttsr_bridge.config_io.load_yaml`, unknown keys rejected). No torch import here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config_io import ConfigError, load_yaml
from .tokenizer import ContextMode, PromptMode

__all__ = ["ModelConfig", "TrainConfig", "load_train_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer (Llama architecture: RMSNorm, RoPE, SwiGLU MLP)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 512  # RoPE table length; must cover prompt + child
    rope_theta: float = 10000.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if min(self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size) <= 0:
            raise ConfigError("model sizes must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TrainConfig:
    """One training run (``ttsr train --config ...``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    context_mode: ContextMode = "basic"
    prompt_mode: PromptMode = "mutation"
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # floor of the cosine / linear decay, as a fraction of lr
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    batch_size: int = 64
    max_steps: int = 10000
    epochs: int | None = None  # when set, overrides max_steps: epochs × batches per epoch
    grad_clip: float = 1.0
    eval_interval: int = 500
    eval_batches: int = 20  # validation loss over at most this many batches
    eval_samples: int = 128  # validation examples decoded for well-formed / exact-match rates
    checkpoint_interval: int = 500
    log_interval: int = 10
    seed: int = 0
    max_prompt_len: int = 320  # longer examples are dropped (counted in the summary)
    max_child_len: int = 64  # in tokens, EOS included
    only_accepted: bool = False  # train on accepted moves only (imitation of kept moves)
    only_improved: bool = False  # train on improving moves only (expert-iteration style filter)

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.max_steps <= 0 or self.lr <= 0:
            raise ConfigError("batch_size, max_steps and lr must be positive")
        if self.max_prompt_len + self.max_child_len > self.model.max_positions:
            raise ConfigError(
                f"max_prompt_len + max_child_len = {self.max_prompt_len + self.max_child_len} "
                f"exceeds model.max_positions = {self.model.max_positions}"
            )


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML (see training/configs/)."""
    return load_yaml(TrainConfig, path)
