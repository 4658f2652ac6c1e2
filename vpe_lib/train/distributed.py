"""Process-group setup for data-parallel training under ``torchrun`` (NCCL on GPUs, gloo on CPU).

A stage that wants to run on N GPUs (or N CPU processes) does::

    info = init_distributed()               # no-op (rank 0 of 1) when not launched by torchrun
    try:
        torch.manual_seed(seed)             # the same seed on every rank
        model = VQVAE3D(cfg=...).to(info.device)   # build *after* init: VectorQuantize then syncs its codebook
        result = train(model, step_fn, batches, train_cfg, out_dir)   # wraps in DDP itself
    finally:
        cleanup()

launched as ``torchrun --nproc_per_node=N script.py`` (or ``--standalone`` for one node). The
pipeline's own stages run so with ``torchrun --standalone --nproc_per_node=N -m vpe_lib.cli stage
pretrain --profile P --run-dir R`` (``vpe_lib.stages.runner``).
``batches(i)`` keeps returning the i-th *global* micro-batch on every rank; ``train`` cuts each
rank's contiguous share out of it (``shard_batch``), so N processes with global batch B give the
gradients of one process with batch B (see ``vpe_lib.train.loop``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vpe_lib.data.sharding import rank_slice  # noqa: F401 (re-exported: what shard_batch keeps)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, *, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (and
    MASTER_ADDR / MASTER_PORT). backend: "nccl" when CUDA is available, else "gloo". With CUDA
    each process takes GPU LOCAL_RANK (torch.cuda.set_device). Without torchrun's variables this
    is a no-op: rank 0 of 1 on cuda (if available) or cpu. Calling it twice is harmless."""
    cuda = torch.cuda.is_available()
    if not all(v in os.environ for v in _TORCHRUN_VARS):
        return DistInfo(0, 1, 0, torch.device("cuda" if cuda else "cpu"))
    rank, world, local_rank = (int(os.environ[v]) for v in _TORCHRUN_VARS)
    backend = backend or ("nccl" if cuda else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank, device)


def is_distributed() -> bool:
    """A process group is up (possibly of size 1)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the only process that logs, shows progress and writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over ranks (every rank must pass the same keys). Identity without a group."""
    if get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    every = all_gather_object(keys)  # a mismatch would silently mix values (or hang): fail loudly
    if any(k != keys for k in every):
        raise ValueError(f"all_reduce_mean needs the same keys on every rank, got {every}")
    if not keys:
        return {}
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is True on any rank (so all ranks take the same branch)."""
    if get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order. [obj] without a group."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_batch(batch: Any, rank: int, world_size: int) -> Any:
    """Rank `rank`'s contiguous 1/world_size share of a global batch, along dim 0 of every tensor
    (tensors nested in tuples / lists / named tuples / dicts; other leaves and 0-d tensors are
    passed through). Dim 0 must divide evenly: with unequal shares the DDP average of per-rank
    batch means would no longer be the global batch mean."""
    if world_size == 1:
        return batch
    if isinstance(batch, Tensor):
        if batch.ndim == 0:
            return batch
        return batch[rank_slice(batch.shape[0], rank, world_size)]
    if isinstance(batch, dict):
        return {key: shard_batch(v, rank, world_size) for key, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        out = [shard_batch(v, rank, world_size) for v in batch]
        return type(batch)(*out) if hasattr(batch, "_fields") else type(batch)(out)
    return batch


__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce_mean",
    "any_rank",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "shard_batch",
]
