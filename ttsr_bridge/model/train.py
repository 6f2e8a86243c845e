"""Training loop of the proposer (``ttsr train``): CPU or GPU, resumable, no pickle.

Run directory layout::

    RUN/train_config.json      the TrainConfig (to_mapping) and the tokenizer description
    RUN/tb/                    TensorBoard event files
    RUN/metrics.jsonl          one JSON object per log / eval point
    RUN/checkpoints/step-NNNNNNN/{model.safetensors, optimizer.safetensors, state.json}
    RUN/checkpoints/last.json  {"step": N, "dir": "step-NNNNNNN"}
    RUN/summary.json           final summary (TrainSummary)

The optimiser state (AdamW moments) is saved as tensors in ``optimizer.safetensors`` and its
hyper-parameters, the step and the learning-rate schedule position in ``state.json``. The data
order is a function of (seed, epoch), so a resumed run sees the same batches as an
uninterrupted one. Mixed precision: bf16 autocast on CUDA; ``accelerate`` handles several GPUs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..config_io import to_mapping
from .config import TrainConfig
from .dataset import LoadedDataset, TokenizedSplit, load_dataset
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["EvalMetrics", "TrainSummary", "generate", "init_run", "last_checkpoint", "load_checkpoint_model", "lr_at", "train"]

Device = Literal["cpu", "cuda", "auto"]


@dataclass(frozen=True)
class EvalMetrics:
    step: int
    val_loss: float
    well_formed_rate: float  # sampled (T=1) children that are one well-formed expression
    exact_match: float  # greedy child token sequence == target


@dataclass(frozen=True)
class TrainSummary:
    run_dir: str
    steps: int
    n_parameters: int
    n_train: int
    n_val: int
    n_dropped_filter: int
    n_dropped_length: int
    n_dropped_vocab: int
    val_from_train: bool
    final_train_loss: float
    first_train_loss: float
    eval: EvalMetrics | None
    seconds: float
    device: str


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up then cosine/linear/constant decay to
    ``min_lr_ratio × lr``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or total <= cfg.warmup_steps:
        return cfg.lr
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1.0 - frac
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the batch at global ``step``: epochs are seeded permutations."""
    per_epoch = max(1, math.ceil(n / batch_size))
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size:(k + 1) * batch_size]


def _resolve_device(device: Device) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch sees no CUDA device")
    return device


# ---- checkpoints -----------------------------------------------------------------------------
def last_checkpoint(run_dir: Path) -> Path | None:
    marker = run_dir / "checkpoints" / "last.json"
    if not marker.is_file():
        return None
    return run_dir / "checkpoints" / json.loads(marker.read_text())["dir"]


def _save_checkpoint(run_dir: Path, model, optimizer, step: int, extra: dict[str, Any], keep: int = 2) -> Path:
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    ck = root / f"step-{step:07d}"
    ck.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(ck / "model.safetensors"))
    opt_state = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, float]] = {}
    for pid, st in opt_state["state"].items():
        for key, val in st.items():
            if hasattr(val, "shape") and val.dim() > 0:
                tensors[f"{pid}.{key}"] = val.detach().contiguous().cpu()
            else:  # AdamW's `step` (0-dim tensor or float) → JSON
                scalars.setdefault(str(pid), {})[key] = float(val)
    save_file(tensors, str(ck / "optimizer.safetensors"))
    meta = {"step": step, "param_groups": opt_state["param_groups"], "scalars": scalars, **extra}
    (ck / "state.json").write_text(json.dumps(meta, indent=1))
    (root / "last.json").write_text(json.dumps({"step": step, "dir": ck.name}))
    old = sorted(p for p in root.glob("step-*") if p.is_dir())
    for p in old[:-keep]:
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    return ck


def _load_optimizer(optimizer, ck: Path, device: str) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    meta = json.loads((ck / "state.json").read_text())
    tensors = load_file(str(ck / "optimizer.safetensors"), device=device)
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, vals in meta["scalars"].items():
        for key, v in vals.items():
            state.setdefault(int(pid), {})[key] = torch.tensor(v, dtype=torch.float32)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def load_checkpoint_model(run_dir: str | Path, *, checkpoint: Path | None = None,
                          attn_implementation: str = "eager"):
    """(model in eval mode on CPU, TrainConfig, Tokenizer) from a run directory."""
    from safetensors.torch import load_file

    from ..config_io import from_mapping
    from .transformer import build_model

    run_dir = Path(run_dir)
    info = json.loads((run_dir / "train_config.json").read_text())
    cfg = from_mapping(TrainConfig, info["config"])
    tok = Tokenizer.from_dict(info["tokenizer"])
    ck = checkpoint or last_checkpoint(run_dir)
    if ck is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (train first)")
    model = build_model(cfg.model, tok, attn_implementation=attn_implementation)
    model.load_state_dict(load_file(str(ck / "model.safetensors")))
    return model.eval(), cfg, tok


def init_run(cfg: TrainConfig, run_dir: str | Path) -> Path:
    """A run directory holding a freshly initialised model as checkpoint 0 (no data needed):
    for smoke tests, speed benchmarks and export checks before any training."""
    from .transformer import build_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(cfg.context_mode, cfg.prompt_mode)
    _write_run_info(run_dir, cfg, tok, Path("-"))
    model = build_model(cfg.model, tok, seed=cfg.seed)
    return _save_checkpoint(run_dir, model, _make_optimizer(model, cfg), 0, {"first_loss": math.nan, "lr": 0.0})


# ---- evaluation ------------------------------------------------------------------------------
def generate(model, prompts: Sequence[np.ndarray], tok: Tokenizer, max_new: int, *, greedy: bool,
             generator: torch.Generator | None = None) -> list[list[int]]:
    """Unconstrained decoding with the torch model (left-padded batch, KV cache).
    Returns the generated ids of each prompt (up to and including ``<eos>`` if produced)."""
    import torch

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(np.asarray(p, dtype=np.int64))
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    past = None
    with torch.no_grad():
        for _ in range(max_new):
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[:, -1, :].float()  # (B, V)
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
            for i in (~done).nonzero().flatten().tolist():
                out[i].append(int(nxt[i]))
            done |= nxt == tok.eos_id
            if bool(done.all()):
                break
            ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            pos = pos[:, -1:] + 1
    return out


def evaluate(model, data: TokenizedSplit, tok: Tokenizer, cfg: TrainConfig, step: int, device: str) -> EvalMetrics:
    """Validation loss, well-formed rate of sampled children, greedy exact match."""
    import torch

    from .transformer import IGNORE_INDEX, target_loss

    model.eval()
    losses: list[float] = []
    n_batches = min(cfg.eval_batches, math.ceil(len(data) / cfg.batch_size))
    with torch.no_grad():
        for b in range(n_batches):
            idx = np.arange(b * cfg.batch_size, min(len(data), (b + 1) * cfg.batch_size))
            tensors = [torch.as_tensor(a, device=device) for a in data.collate(idx, tok.pad_id, IGNORE_INDEX)]
            with _autocast(device):
                losses.append(float(target_loss(model, *tensors)))
    n = min(cfg.eval_samples, len(data))
    prompts = [data.prompt(i) for i in range(n)]
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
    well = exact = 0
    for start in range(0, n, 64):
        chunk = range(start, min(n, start + 64))
        sampled = generate(model, prompts[start:chunk.stop], tok, cfg.max_child_len, greedy=False, generator=gen)
        greedy = generate(model, prompts[start:chunk.stop], tok, cfg.max_child_len, greedy=True)
        for i, s, g in zip(chunk, sampled, greedy):
            well += tok.is_well_formed(s, int(data.n_parent_consts[i]))
            exact += g == data.target(i).tolist()
    model.train()
    return EvalMetrics(step, float(np.mean(losses)) if losses else math.nan, well / max(1, n), exact / max(1, n))


def _autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- the loop --------------------------------------------------------------------------------
@dataclass
class _RunState:
    step: int = 0
    first_loss: float = math.nan
    last_loss: float = math.nan
    last_eval: EvalMetrics | None = None


def _make_optimizer(model, cfg: TrainConfig):
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas,
    )


def _write_run_info(run_dir: Path, cfg: TrainConfig, tok: Tokenizer, data_dir: Path) -> None:
    info = {"config": to_mapping(cfg), "tokenizer": tok.to_dict(), "data": str(data_dir)}
    (run_dir / "train_config.json").write_text(json.dumps(info, indent=1))


def _log(run_dir: Path, writer, record: dict[str, Any]) -> None:
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    step = record["step"]
    for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)):
            writer.add_scalar(k, v, step)


def train(cfg: TrainConfig, data_dir: str | Path, run_dir: str | Path, *, device: Device = "auto",
          max_steps: int | None = None, resume: bool = False, progress: bool = True) -> TrainSummary:
    """Train (or resume) a proposer model; see the module docstring for the run layout."""
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter

    from .transformer import build_model, count_parameters

    t0 = time.time()
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    dev = _resolve_device(device)
    acc = Accelerator(cpu=dev == "cpu", mixed_precision="bf16" if dev == "cuda" else "no")
    tok = Tokenizer(cfg.context_mode, cfg.prompt_mode)
    data = load_dataset(data_dir, cfg, tok, seed=cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    ck = last_checkpoint(run_dir) if resume else None
    if not resume and ck is None and (run_dir / "checkpoints").exists():
        raise FileExistsError(f"{run_dir} already holds checkpoints: pass --resume or choose another --out")
    _write_run_info(run_dir, cfg, tok, data_dir)
    model = build_model(cfg.model, tok, seed=cfg.seed, attn_implementation="sdpa")
    optimizer = _make_optimizer(model, cfg)
    state = _RunState()
    if ck is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ck / "model.safetensors")))
        meta = _load_optimizer(optimizer, ck, "cpu")
        state.step, state.first_loss = int(meta["step"]), float(meta.get("first_loss", math.nan))
    model, optimizer = acc.prepare(model, optimizer)
    total = _total_steps(cfg, len(data.train))
    stop = min(total, max_steps) if max_steps is not None else total
    writer = SummaryWriter(str(run_dir / "tb"))
    unwrapped = acc.unwrap_model(model)
    try:
        _loop(cfg, acc, model, optimizer, data, tok, state, total, stop, run_dir, writer, progress)
        if state.last_eval is None or state.last_eval.step != state.step:  # e.g. resumed a finished run
            state.last_eval = evaluate(unwrapped, data.val, tok, cfg, state.step, str(acc.device))
            _log(run_dir, writer, {"step": state.step, **_eval_record(state.last_eval)})
    finally:
        writer.close()
    summary = TrainSummary(
        run_dir=str(run_dir), steps=state.step, n_parameters=count_parameters(unwrapped),
        n_train=len(data.train), n_val=len(data.val), n_dropped_filter=data.n_dropped_filter,
        n_dropped_length=data.n_dropped_length, n_dropped_vocab=data.n_dropped_vocab,
        val_from_train=data.val_from_train, final_train_loss=state.last_loss, first_train_loss=state.first_loss,
        eval=state.last_eval, seconds=time.time() - t0, device=str(acc.device),
    )
    (run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary


def _total_steps(cfg: TrainConfig, n_train: int) -> int:
    """Length of the run (and of the learning-rate schedule) from the config."""
    if cfg.epochs is not None:
        return cfg.epochs * max(1, math.ceil(n_train / cfg.batch_size))
    return cfg.max_steps


def _eval_record(m: EvalMetrics) -> dict[str, float]:
    return {"val_loss": m.val_loss, "well_formed_rate": m.well_formed_rate, "exact_match": m.exact_match}


def _loop(cfg: TrainConfig, acc, model, optimizer, data: LoadedDataset, tok: Tokenizer, state: _RunState,
          total: int, stop: int, run_dir: Path, writer, progress: bool) -> None:
    """Optimisation steps ``state.step .. stop`` of a ``total``-step schedule, with logging,
    evaluation and checkpoints (always at ``stop``, so ``--resume`` continues from there)."""
    import torch
    from tqdm.auto import tqdm

    from .transformer import IGNORE_INDEX, target_loss

    model.train()
    bar = tqdm(total=stop, initial=state.step, disable=not progress, desc="train", unit="step")
    while state.step < stop:
        lr = lr_at(cfg, state.step, total)
        for g in optimizer.param_groups:
            g["lr"] = lr
        idx = _batch_indices(len(data.train), cfg.batch_size, cfg.seed, state.step)
        idx = idx[acc.process_index::acc.num_processes]  # each GPU process takes its share
        tensors = [torch.as_tensor(a, device=acc.device) for a in data.train.collate(idx, tok.pad_id, IGNORE_INDEX)]
        with acc.autocast():
            loss = target_loss(model, *tensors)
        optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state.step += 1
        state.last_loss = float(loss.detach())
        if math.isnan(state.first_loss):
            state.first_loss = state.last_loss
        bar.update(1)
        bar.set_postfix(loss=f"{state.last_loss:.4f}")
        if not acc.is_main_process:
            continue
        if state.step % cfg.log_interval == 0 or state.step == stop:
            _log(run_dir, writer, {"step": state.step, "train_loss": state.last_loss, "lr": lr})
        if state.step % cfg.eval_interval == 0 or state.step == stop:
            state.last_eval = evaluate(acc.unwrap_model(model), data.val, tok, cfg, state.step, str(acc.device))
            _log(run_dir, writer, {"step": state.step, **_eval_record(state.last_eval)})
        if state.step % cfg.checkpoint_interval == 0 or state.step == stop:
            _save_checkpoint(run_dir, acc.unwrap_model(model), optimizer, state.step,
                             {"first_loss": state.first_loss, "lr": lr, "total_steps": total})
    bar.close()
