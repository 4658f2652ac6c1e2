"""One stage outside the notebooks, alone or data-parallel under torchrun: `vpe stage`.

    vpe stage data --profile gpu --run-dir runs/gpu                  # one process
    torchrun --standalone --nproc_per_node=8 -m vpe_lib.cli stage pretrain --profile gpu --run-dir runs/gpu
    torchrun --standalone --nproc_per_node=8 -m vpe_lib.cli stage predict --profile gpu --run-dir runs/gpu
    vpe report --profile gpu --run-dir runs/gpu                      # finds both trained, renders the rest

Every rank resolves the same config and runs the same stage function (vpe_lib.stages.*): each
training run wraps its model in DDP and keeps its contiguous share of every global batch
(vpe_lib.train.loop), and every rank computes the same evaluations; rank 0 alone writes the
stage's config.json, metrics, checkpoints and figures' data. The ranks meet at a barrier before
they leave, so rank 0's files are on disk when the command returns.

The notebooks run the same functions: afterwards `vpe report` (or the stage's notebook) finds the
stage's checkpoints at their last step, so each `train` returns at once and the notebook only
evaluates and plots (the report's own cache does not know of the stage yet, so it runs the
notebook; nothing is trained twice).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from vpe_lib.config import ConfigError, RunConfig, get_config
from vpe_lib.stages.common import read_metrics, start_stage
from vpe_lib.train.distributed import barrier, cleanup, init_distributed, is_distributed


def _data(cfg: RunConfig, run_dir: Path, out: Path, progress: bool) -> dict[str, float]:
    from vpe_lib.stages.data_stage import run_data_stage

    return run_data_stage(cfg, out, progress=progress)


def _pretrain(cfg: RunConfig, run_dir: Path, out: Path, progress: bool) -> dict[str, float]:
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    return run_pretrain_stage(cfg, run_dir, out, progress=progress)


def _predict(cfg: RunConfig, run_dir: Path, out: Path, progress: bool) -> dict[str, float]:
    from vpe_lib.stages.predict_stage import run_predict_stage

    return run_predict_stage(cfg, run_dir, out, progress=progress)


# stage -> (function, the training sections whose batches are split over the ranks; None: rank 0 only)
RUNNABLE: dict[str, tuple[Callable[[RunConfig, Path, Path, bool], dict[str, float]], tuple[str, ...] | None]] = {
    # generation is a process pool of its own, not a training loop: rank 0 builds, the others wait
    "data": (_data, None),
    "pretrain": (_pretrain, ("pretrain.train",)),
    "predict": (_predict, ("predict.train",)),
}


def check_world(cfg: RunConfig, stage: str, world_size: int) -> None:
    """What must hold for `stage` on `world_size` ranks, checked on every rank before anything runs
    (a ConfigError naming the setting, not a failure minutes into the first batch)."""
    sections = RUNNABLE[stage][1]
    if world_size == 1 or sections is None:
        return
    if re.fullmatch(r"cuda:\d+", cfg.run.device):
        raise ConfigError(f"run.device={cfg.run.device!r} would put all {world_size} ranks on one GPU; under "
                          f"torchrun use run.device=auto (or cuda): each rank takes GPU LOCAL_RANK")
    for name in sections:
        section, field = name.split(".")
        batch = getattr(getattr(cfg, section), field).batch_size
        if batch % world_size:
            raise ConfigError(f"{name}.batch_size={batch} does not split evenly over {world_size} ranks: "
                              f"make it a multiple of {world_size} (it is the global batch, shared by the ranks)")


def run_stage(stage: str, profile: str, run_dir: str | Path, overrides: dict[str, Any] | None = None, *,
              progress: bool = True) -> dict[str, float]:
    """Run `stage` ("data", "pretrain" or "predict") of `profile` into run_dir/<stage>/; the stage's
    metrics (the same on every rank). Joins torchrun's process group when launched by it (and
    leaves it at the end, unless the caller had set one up)."""
    if stage not in RUNNABLE:
        raise ConfigError(f"unknown stage {stage!r} for `vpe stage`; valid: {', '.join(RUNNABLE)} "
                          f"(the others run from their notebooks: vpe report)")
    run_dir = Path(run_dir)
    owns_group = not is_distributed()
    info = init_distributed()  # first: a VQ codebook built later syncs over the ranks
    try:
        cfg = get_config(profile, overrides)  # every rank: a bad key fails everywhere, not on rank 0 alone
        check_world(cfg, stage, info.world_size)
        if info.is_main:
            cfg, out = start_stage(profile, run_dir, stage, overrides)  # the folder and its config.json
        barrier()
        out = run_dir / stage
        fn, sections = RUNNABLE[stage]
        if sections is None:  # rank 0 only
            metrics = fn(cfg, run_dir, out, progress) if info.is_main else None
            barrier()
            return metrics if metrics is not None else read_metrics(run_dir, stage)
        metrics = fn(cfg, run_dir, out, progress and info.is_main)
        barrier()  # rank 0's files are written before any rank returns
        return metrics
    finally:
        if owns_group:
            cleanup()


__all__ = ["RUNNABLE", "check_world", "run_stage"]
