"""The proposer network: a decoder-only transformer built with ``transformers`` (Llama
architecture) from a :class:`~ttsr_bridge.model.config.ModelConfig`.

torch/transformers are imported inside the functions (heavy imports rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import ModelConfig
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

__all__ = ["IGNORE_INDEX", "build_model", "count_parameters", "hf_config", "target_loss"]

IGNORE_INDEX = -100  # label value for prompt and padding tokens: no loss there


def hf_config(mc: ModelConfig, tokenizer: Tokenizer, *, attn_implementation: str = "eager") -> LlamaConfig:
    """The ``transformers`` config of our model (no dropout, untied embeddings by default)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=mc.hidden_size,
        intermediate_size=mc.intermediate_size,
        num_hidden_layers=mc.num_layers,
        num_attention_heads=mc.num_heads,
        num_key_value_heads=mc.num_heads,
        max_position_embeddings=mc.max_positions,
        rope_theta=mc.rope_theta,
        tie_word_embeddings=mc.tie_embeddings,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        attention_dropout=0.0,
        use_cache=True,
    )
    # Eager attention: identical numerics in torch and in the exported ONNX graph.
    cfg._attn_implementation = attn_implementation
    return cfg


def build_model(mc: ModelConfig, tokenizer: Tokenizer, *, seed: int | None = None,
                attn_implementation: str = "eager") -> LlamaForCausalLM:
    """A freshly initialised model (deterministic when ``seed`` is given)."""
    import torch
    from transformers import LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    return LlamaForCausalLM(hf_config(mc, tokenizer, attn_implementation=attn_implementation))


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def target_loss(model: LlamaForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens only.

    ``input_ids``, ``attention_mask``, ``labels``: (batch, seq); ``labels`` holds the token id on
    child/EOS positions and :data:`IGNORE_INDEX` on prompt and padding positions.
    """
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, T, V)
    # Position t predicts token t+1.
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
