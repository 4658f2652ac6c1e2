"""Batches built in DataLoader worker processes, in the order and with the values of the in-thread path.

The training loop asks for ``batches(i)``, the i-th micro-batch, a pure function of (seed, i)
(``vpe_lib.data.samplers``): resume needs no loader state. On a GPU, reading and decoding clips in
the training process leaves the GPU waiting; :class:`LoaderBatches` keeps that contract while
``workers`` processes of a ``torch.utils.data.DataLoader`` build the next batches ahead::

    with batch_source(ClipBatches(store, ...), workers=4, device=device, stop=steps) as batches:
        train(model, step_fn, batches, cfg, out)       # the same batches, in the same order

Item i of the map-style dataset is the whole batch ``batches(i)`` (no collation: the batch
function already stacks), and the sampler counts up from the index asked for, so the values are
those of ``batches(i)`` in this process. A request for any other index than the next one (a
resumed run, a second ``train`` call) restarts the sampler there; with persistent workers that
costs no new processes. Memory is pinned when the batches go to a GPU (faster, asynchronous
host-to-device copies), and each worker keeps ``prefetch_factor`` batches ready.

``workers=0`` is the in-thread path itself (``batch_source`` hands ``batches`` back unchanged):
the default of every profile (``run.loader_workers``), so CPU runs compute exactly what they did.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Batches = Callable[[int], Any]


class StepBatchDataset(Dataset):
    """Item i is ``batches(i)``, the whole (global) micro-batch of index i; with `shard` = (rank,
    world), only that rank's slice of it, ``batches.shard(i, rank, world)``."""

    def __init__(self, batches: Batches, shard: tuple[int, int] | None = None):
        self.batches, self.shard = batches, shard

    def __getitem__(self, i: int) -> Any:
        if self.shard is not None:
            return self.batches.shard(int(i), *self.shard)
        return self.batches(int(i))


class FromIndexSampler(Sampler[int]):
    """start, start + 1, ... up to `stop` (exclusive; None: without end). `start` is set before
    each new iterator: the loader then serves the batches from there."""

    def __init__(self, stop: int | None = None):
        self.start, self.stop = 0, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop)) if self.stop is not None else itertools.count(self.start)


def check_loader_settings(workers: object, prefetch_factor: object, *, prefix: str = "run.") -> None:
    """A ValueError naming the setting for a count that is not an int in range."""
    for name, value, low in (("loader_workers", workers, 0), ("loader_prefetch", prefetch_factor, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{prefix}{name} must be an int >= {low}, got {value!r}")


class LoaderBatches:
    """``batches`` served by a DataLoader with `workers` processes; callable as ``self(i)`` like
    the batch function it wraps. `stop`: how many micro-batches the run takes at most (the workers
    build nothing past it; None: no end). `rank`, `world` (torchrun): when `batches` can read one
    rank's slice (a ``shard`` method), the workers read only this rank's, and ``rank_local`` says
    so to the training loop (which then does not slice again). Close it (or use it as a context
    manager) to end the workers."""

    def __init__(self, batches: Batches, *, workers: int, prefetch_factor: int = 2, pin_memory: bool = False,
                 stop: int | None = None, persistent_workers: bool = True, rank: int = 0, world: int = 1):
        check_loader_settings(workers, prefetch_factor, prefix="")
        self.batches, self.workers, self.stop = batches, workers, stop
        sharded = world > 1 and callable(getattr(batches, "shard", None))
        self.rank_local = (rank, world) if sharded else None
        self._sampler = FromIndexSampler(stop)
        self._loader = DataLoader(
            StepBatchDataset(batches, self.rank_local), batch_size=None, sampler=self._sampler, num_workers=workers,
            pin_memory=pin_memory,
            # the DataLoader refuses these two without workers
            prefetch_factor=prefetch_factor if workers else None,
            persistent_workers=persistent_workers and workers > 0,
        )
        self._it: Iterator | None = None
        self._next: int | None = None  # the index the running iterator yields next

    def __call__(self, i: int) -> Any:
        if self._loader is None:
            raise RuntimeError("LoaderBatches is closed")
        if self.stop is not None and not 0 <= i < self.stop:
            raise IndexError(f"batch {i} is outside the {self.stop} batches this loader serves (stop={self.stop})")
        if self._it is None or i != self._next:
            self._sampler.start = i  # read when the iterator starts
            self._it = iter(self._loader)
        batch = next(self._it)
        self._next = i + 1
        return batch

    def close(self) -> None:
        """End the workers (also those kept for the next epoch by persistent_workers)."""
        if self._loader is not None:
            # the running iterator, and the one the loader keeps for persistent workers (the same
            # object, or a finished one); shutting one down twice is a no-op
            for it in (self._it, getattr(self._loader, "_iterator", None)):
                if hasattr(it, "_shutdown_workers"):
                    it._shutdown_workers()
        self._it = self._loader = None

    def __enter__(self) -> "LoaderBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


@contextlib.contextmanager
def batch_source(batches: Batches, *, workers: int = 0, prefetch_factor: int = 2,
                 device: torch.device | str | None = None, stop: int | None = None,
                 rank: int = 0, world: int = 1) -> Iterator[Batches]:
    """`batches` itself with workers == 0 (the in-thread path; the training loop reads a rank's
    slice through its ``shard`` method); else a :class:`LoaderBatches` over it, reading only
    `rank`'s slice of each batch under torchrun, with pinned memory when `device` is a GPU,
    closed on exit."""
    if workers == 0:
        check_loader_settings(workers, prefetch_factor, prefix="")
        yield batches
        return
    pin = device is not None and torch.device(device).type == "cuda"
    with LoaderBatches(batches, workers=workers, prefetch_factor=prefetch_factor, pin_memory=pin, stop=stop,
                       rank=rank, world=world) as lb:
        yield lb


__all__ = ["FromIndexSampler", "LoaderBatches", "StepBatchDataset", "batch_source", "check_loader_settings"]
