"""Batches as the loop sees them: `batches(i)` is the i-th global micro-batch (a pure function of i, so a
resumed run sees the data the uninterrupted one would), moved to the model's device, counted, and read per
rank where the source can serve a rank's slice alone (`vpe_lib.train.loop`'s doc)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

StepFn = Callable[[nn.Module, Any], "tuple[Tensor, dict[str, float]]"]
Batches = Callable[[int], Any]


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        out = [to_device(v, device) for v in batch]
        return type(batch)(*out) if hasattr(batch, "_fields") else type(batch)(out)
    return batch


def batch_items(batch: Any) -> int:
    """Number of items in a batch: dim 0 of its first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = batch_items(v)
        if n:
            return n
    return 0


def read_batch(batches: Batches, i: int, rank: int, world: int) -> tuple[Any, bool]:
    """(batch, rank_local): global micro-batch i, or only this rank's slice of it when the source
    can read that alone (see the module doc); rank_local says which, so the caller shards the rest."""
    if world > 1:
        local = getattr(batches, "rank_local", None)
        if local is not None:
            if tuple(local) != (rank, world):
                raise RuntimeError(f"the batch source serves rank {local[0]} of {local[1]}, "
                                   f"but this is rank {rank} of {world}")
            return batches(i), True
        if callable(getattr(batches, "shard", None)):
            return batches.shard(i, rank, world), True
    return batches(i), False


def as_float(v: Any) -> float:
    return float(v.detach()) if isinstance(v, Tensor) else float(v)
