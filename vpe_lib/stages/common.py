"""Run-directory conventions shared by every stage."""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from vpe_lib.atomic import atomic_write_text
from vpe_lib.config import RunConfig, get_config, save_config
from vpe_lib.config_reads import record_reads
from vpe_lib.train.device import enable_tf32, resolve_device

# stage name -> the notebook that writes it (named in errors so the user knows what to run)
STAGES = {
    "data": "01_data",
    "pretrain": "02_pretrain",
    "predict": "03_predict",
    "latents": "04_latent_analysis",
    "heads": "05_heads",
    "results": "06_results",
}


class MissingArtifactError(FileNotFoundError):
    """A stage needs a file that an earlier stage should have written."""


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    path = Path(run_dir) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def require(run_dir: str | Path, stage: str, *files: str) -> Path:
    """The folder of an earlier stage, after checking the files this stage needs are there."""
    path = Path(run_dir) / stage
    for name in files or ("metrics.json",):
        if not (path / name).exists():
            raise MissingArtifactError(
                f"{path / name} is missing: stage {stage!r} has not been run for {Path(run_dir)}; "
                f"run notebook {STAGES[stage]} (or `vpe report`) with the same run_dir first"
            )
    return path


def start_stage(profile: str, run_dir: str | Path, stage: str, overrides: dict[str, Any] | None = None
                ) -> tuple[RunConfig, Path]:
    """Resolve the config, create the stage folder and save the resolved config there. A run.device
    this machine does not have fails here, before anything is written. From here on, the fields of
    `cfg` the stage reads are recorded in <stage>/config_reads.json (vpe_lib.config_reads), which
    `vpe report` adds to the stage's cache key."""
    cfg = get_config(profile, overrides)
    resolve_device(cfg.run.device)
    out = stage_dir(run_dir, stage)
    save_config(cfg, out / "config.json")
    record_reads(cfg, out / "config_reads.json")  # the name stage_cache.READS_FILE reads back
    return cfg, out


def stage_device(cfg: RunConfig) -> torch.device:
    """The device a stage builds its models on (run.device resolved: a DeviceError if it is not
    here), with TF32 matmuls / convolutions on for an Ampere-or-later GPU. Every stage calls it first."""
    device = resolve_device(cfg.run.device)
    enable_tf32(device)
    return device


def _jsonable(value: Any) -> Any:
    """NaN / inf -> None at any depth (JSON has no NaN; None reads back as "not measured")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> Path:
    """Atomic JSON write (temp file + rename): a killed run never leaves half a file."""
    return atomic_write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n", path)


def write_metrics(out_dir: Path, metrics: dict[str, float]) -> Path:
    return write_json(out_dir / "metrics.json", metrics)


def read_metrics(run_dir: str | Path, stage: str) -> dict[str, float]:
    path = require(run_dir, stage, "metrics.json") / "metrics.json"
    return json.loads(path.read_text())


@contextmanager
def timed(record: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record[key] = time.perf_counter() - start


REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_run_dir(run_dir: str | Path) -> Path:
    """Relative run directories are taken from the repository root, wherever the kernel started."""
    path = Path(run_dir).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()
