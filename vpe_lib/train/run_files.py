"""The files a run keeps in its folder besides checkpoints: metrics.jsonl (one record per log step and per
evaluation; on resume, records after the checkpoint are dropped, since the run repeats them), the running
means between two log steps, and setting aside the checkpoint of another run."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .checkpoint import atomic_write_text, load_checkpoint

log = logging.getLogger("vpe_lib.train")


def read_metrics(path: Path, upto_step: int, *, rewrite: bool = True) -> list[dict]:
    """Records of an earlier run up to `upto_step`; later ones (logged after the checkpoint
    we resume from) would be repeated by this run, so the file is rewritten without them
    (by rank 0 only: `rewrite`)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r.get("step", 0) <= upto_step]
    if rewrite and len(kept) != len(records):
        atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), path)
    return kept


class LogWindow:
    """Running means of the logged values between two log steps."""

    def __init__(self) -> None:
        self.reset(time.perf_counter())

    def reset(self, t: float) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.items = 0
        self.t0 = t

    def add(self, values: dict[str, float], items: int) -> None:
        self.n += 1
        self.items += items
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.sums.items()} if self.n else {}


def set_aside_stale(out_dir: Path, run_id: str, desc: str) -> None:
    """A checkpoint of another run (another recipe, model or data) in out_dir: move it and its
    final weights and metrics to out_dir/stale-<its id>/, so the run starts fresh and nothing is lost.
    Checkpoints written before identities existed carry none and are resumed as before."""
    ckpt_path = out_dir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path)
    saved = state.get("identity")
    if saved is None:  # written before identities existed: resumed as before (a changed recipe warns)
        return
    if saved == run_id:
        return
    target = out_dir / f"stale-{saved}"
    target.mkdir(exist_ok=True)
    for name in ("checkpoint.pt", "final.pt", "metrics.jsonl", "train_config.json"):
        if (out_dir / name).exists():
            os.replace(out_dir / name, target / name)
    msg = (f"{desc}: {ckpt_path} was written by another run (identity {saved}, now {run_id}: the recipe, "
           f"model or data changed); moved it to {target} and starting fresh")
    warnings.warn(msg, stacklevel=3)
    say(msg, True)


def say(msg: str, show: bool) -> None:
    log.info(msg)
    if show:
        tqdm.write(msg)
