"""Which items of a global batch one rank of a data-parallel run reads: a leaf of the data layer, so the
clip sources (vpe_lib.data) and the trainer (vpe_lib.train.distributed) share it without data importing train."""

from __future__ import annotations


def rank_slice(n: int, rank: int, world: int) -> slice:
    """The contiguous items of a global batch of `n` that rank `rank` of `world` trains on (what
    `shard_batch` keeps, and what a source's `shard` method reads). `n` must split evenly: with
    unequal shares the DDP average of per-rank batch means would not be the global batch mean."""
    if n % world:
        raise ValueError(f"global batch of {n} items does not split evenly over {world} ranks; "
                         f"make the global (micro-)batch size a multiple of the world size")
    k = n // world
    return slice(rank * k, (rank + 1) * k)
