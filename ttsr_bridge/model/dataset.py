"""Read Parquet training examples (docs/architecture.md §7) into token sequences.

A dataset is a directory with ``examples-*.parquet`` shards and ``dataset.json``. Each row is
turned into :class:`~ttsr_bridge.model.tokenizer.PromptFields` + child ``Expr`` (the same
fields the proposer builds from a ``ProposalRequest``) and tokenised once; the result is kept
as flat NumPy arrays (:class:`TokenizedSplit`). No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..expr.operators import OperatorSet
from ..expr.tree import Expr
from ..propose.protocol import DataStats
from .config import TrainConfig
from .tokenizer import PromptFields, Tokenizer, TokenizerError

__all__ = ["STATS_COLUMNS", "DatasetError", "LoadedDataset", "TokenizedSplit", "load_dataset", "row_to_fields"]

# `stats_<field>` columns, one per DataStats field (rich context).
STATS_COLUMNS: tuple[str, ...] = tuple(f"stats_{f.name}" for f in fields(DataStats))


class DatasetError(ValueError):
    """A missing or malformed training dataset."""


@dataclass(frozen=True)
class TokenizedSplit:
    """Token sequences stored flat: example ``i`` is ``ids[offsets[i]:offsets[i+1]]``, its
    first ``prompt_lens[i]`` tokens are the prompt; ``n_parent_consts[i]`` bounds pointers."""

    ids: np.ndarray  # (total_tokens,) int32
    offsets: np.ndarray  # (n + 1,) int64
    prompt_lens: np.ndarray  # (n,) int32
    n_parent_consts: np.ndarray  # (n,) int32

    def __len__(self) -> int:
        return len(self.prompt_lens)

    def example(self, i: int) -> tuple[np.ndarray, int]:
        return self.ids[self.offsets[i]:self.offsets[i + 1]], int(self.prompt_lens[i])

    def prompt(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i] + self.prompt_lens[i]]

    def target(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] + self.prompt_lens[i]:self.offsets[i + 1]]

    def collate(self, indices: np.ndarray, pad_id: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask, labels)``, each (batch, max_len) int64;
        labels are ``ignore_index`` on prompt and padding positions."""
        lens = self.offsets[indices + 1] - self.offsets[indices]
        width = int(lens.max())
        input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
        labels = np.full((len(indices), width), ignore_index, dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        for row, i in enumerate(indices):
            seq, plen = self.example(int(i))
            input_ids[row, :len(seq)] = seq
            labels[row, plen:len(seq)] = seq[plen:]
            mask[row, :len(seq)] = 1
        return input_ids, mask, labels

    @staticmethod
    def build(examples: list[tuple[list[int], int, int]]) -> TokenizedSplit:
        lens = np.array([len(e[0]) for e in examples], dtype=np.int64)
        offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.fromiter((t for e in examples for t in e[0]), dtype=np.int32, count=int(offsets[-1]))
        return TokenizedSplit(
            ids=flat,
            offsets=offsets,
            prompt_lens=np.array([e[1] for e in examples], dtype=np.int32),
            n_parent_consts=np.array([e[2] for e in examples], dtype=np.int32),
        )


@dataclass(frozen=True)
class LoadedDataset:
    """Train and validation splits plus bookkeeping for the run summary."""

    train: TokenizedSplit
    val: TokenizedSplit
    n_rows: int
    n_dropped_filter: int
    n_dropped_length: int
    n_dropped_vocab: int
    val_from_train: bool  # True when the dataset had no `val` rows and 5% of train was held out
    manifest: Mapping[str, Any]


def _stats_from_row(row: Mapping[str, Any]) -> DataStats | None:
    if any(row.get(c) is None for c in STATS_COLUMNS):
        return None
    kw = {}
    for f in fields(DataStats):
        v = row[f"stats_{f.name}"]
        kw[f.name] = tuple(float(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else v
    kw["n_samples"] = int(kw["n_samples"])
    return DataStats(**kw)


def row_to_fields(row: Mapping[str, Any], opsets: dict[tuple, OperatorSet] | None = None) -> tuple[PromptFields, Expr]:
    """One §7 row → the prompt fields and the child tree."""
    key = (tuple(row["binary_operators"]), tuple(row["unary_operators"]))
    opset = opsets.get(key) if opsets is not None else None
    if opset is None:
        opset = OperatorSet.from_names(*key)
        if opsets is not None:
            opsets[key] = opset
    members: tuple[tuple[Expr, int], ...] = ()
    if row.get("members_codes") is not None:
        members = tuple(
            (Expr(c, v), int(b))
            for c, v, b in zip(row["members_codes"], row["members_vals"], row["members_loss_bin"])
        )
    pf = PromptFields(
        nfeatures=int(row["nfeatures"]),
        operators=opset,
        iteration=int(row["iteration"]),
        parent=Expr(row["parent_codes"], row["parent_vals"]),
        parent_loss_bin=int(row["parent_loss_bin"]),
        data_stats=_stats_from_row(row),
        members=members,
    )
    return pf, Expr(row["child_codes"], row["child_vals"])


def _iter_rows(directory: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    shards = sorted(directory.glob("examples-*.parquet"))
    if not shards:
        raise DatasetError(f"{directory}: no examples-*.parquet shards")
    for shard in shards:
        pf = pq.ParquetFile(shard)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(columns=present, batch_size=8192):
            yield from batch.to_pylist()


_REQUIRED = [
    "split", "iteration", "nfeatures", "binary_operators", "unary_operators", "parent_codes",
    "parent_vals", "parent_loss_bin", "child_codes", "child_vals", "accepted", "improved",
]
_POPULATION = ["members_codes", "members_vals", "members_loss_bin"]


def _read_manifest(directory: Path, cfg: TrainConfig) -> dict[str, Any]:
    path = directory / "dataset.json"
    if not directory.is_dir():
        raise DatasetError(f"dataset directory not found: {directory}")
    manifest: dict[str, Any] = {}
    if path.is_file():
        manifest = json.loads(path.read_text())
    mode = manifest.get("mode")
    if mode is not None and mode != cfg.prompt_mode:
        raise DatasetError(f"{directory}: dataset mode {mode!r} but the config trains prompt_mode {cfg.prompt_mode!r}")
    return manifest


def load_dataset(directory: str | Path, cfg: TrainConfig, tokenizer: Tokenizer, *, seed: int = 0) -> LoadedDataset:
    """Tokenise every row of the dataset (filters and length limits from ``cfg``)."""
    directory = Path(directory)
    manifest = _read_manifest(directory, cfg)
    columns = _REQUIRED + list(STATS_COLUMNS) + (_POPULATION if cfg.prompt_mode == "population" else [])
    splits: dict[str, list[tuple[list[int], int, int]]] = {"train": [], "val": []}
    n_rows = dropped_filter = dropped_length = dropped_vocab = 0
    opsets: dict[tuple, OperatorSet] = {}
    for row in _iter_rows(directory, columns):
        n_rows += 1
        if (cfg.only_accepted and not row["accepted"]) or (cfg.only_improved and not row["improved"]):
            dropped_filter += 1
            continue
        for c in _REQUIRED:
            if c not in row:
                raise DatasetError(f"{directory}: column {c!r} missing (see docs/architecture.md §7)")
        pf, child = row_to_fields(row, opsets)
        if cfg.context_mode == "rich" and pf.data_stats is None:
            raise DatasetError(f"{directory}: 'rich' context needs the stats_* columns (convert with rich context)")
        try:
            prompt = tokenizer.encode_prompt(pf)
            target = tokenizer.encode_child(child, pf.parent) + [tokenizer.eos_id]
        except TokenizerError:
            dropped_vocab += 1
            continue
        if len(prompt) > cfg.max_prompt_len or len(target) > cfg.max_child_len:
            dropped_length += 1
            continue
        split = "val" if row["split"] == "val" else "train"
        splits[split].append((prompt + target, len(prompt), len(pf.parent.constant_indices())))
    if not splits["train"] and not splits["val"]:
        raise DatasetError(f"{directory}: no usable examples ({n_rows} rows read)")
    val_from_train = not splits["val"]
    if val_from_train:
        # No validation problems in the dataset: hold out 5% of the rows (at least one).
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(splits["train"]))
        n_val = max(1, len(order) // 20)
        held = set(order[:n_val].tolist())
        splits["val"] = [e for i, e in enumerate(splits["train"]) if i in held]
        splits["train"] = [e for i, e in enumerate(splits["train"]) if i not in held] or splits["val"]
    return LoadedDataset(
        train=TokenizedSplit.build(splits["train"]),
        val=TokenizedSplit.build(splits["val"]),
        n_rows=n_rows,
        n_dropped_filter=dropped_filter,
        n_dropped_length=dropped_length,
        n_dropped_vocab=dropped_vocab,
        val_from_train=val_from_train,
        manifest=manifest,
    )
