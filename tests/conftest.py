"""Fixtures shared across test folders: the tiny untrained model the export and proposer tests
build on, and the int8-against-fp32 check they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# head_dim 16: onnxruntime's CPU GroupQueryAttention kernel takes multiples of 16 only.
TINY_MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
              "max_positions": 192}


@pytest.fixture(scope="session")
def tiny_run():
    """``tiny_run(root, seed, **config) -> root / "run"``: an untrained run of the tiny test
    model (prompts up to 128 tokens, children up to 40), initialised with ``seed``."""
    from ttsr_bridge.config_io import from_mapping
    from ttsr_bridge.model.config import TrainConfig
    from ttsr_bridge.model.train import init_run

    def make(root: Path, seed: int, **config) -> Path:
        cfg = {"model": TINY_MODEL, "max_prompt_len": 128, "max_child_len": 40, "seed": seed, **config}
        init_run(from_mapping(TrainConfig, cfg), root / "run")
        return root / "run"

    return make


@pytest.fixture(scope="session")
def int8_matches_fp32():
    """``check(logits_fp32, logits_int8, int8_model, rng)``: the int8 export's next-token
    distributions stay within KL 1e-2 of the fp32 one per position, and a proposer on the int8
    file returns valid children within ``curmaxsize``."""

    def check(logits_fp32: np.ndarray, logits_int8: np.ndarray, model: Path,
              rng: np.random.Generator) -> None:
        from ttsr_bridge.expr.operators import OperatorSet
        from ttsr_bridge.expr.tree import op, var
        from ttsr_bridge.propose.onnx_proposer import OnnxProposer
        from ttsr_bridge.propose.protocol import ProblemContext, ProposalRequest

        logp = [x - np.log(np.exp(x).sum(-1, keepdims=True)) for x in (logits_fp32, logits_int8)]
        assert float((np.exp(logp[0]) * (logp[0] - logp[1])).sum(-1).max()) < 1e-2  # KL per position
        prop = OnnxProposer(model)
        ctx = ProblemContext(2, OperatorSet.from_names(["+", "*"], ["sin"]), 20)
        out = prop.propose([ProposalRequest(op("+", var(0), var(1)), 0.5, 0.5, p, 3, 0.5, 10, ctx)
                            for p in range(9)], rng)
        assert all(c is not None and c.is_valid() and len(c) <= 10 for c in out)

    return check
