"""Re-check the tokenizer's learning rate on validation videos (not on the test split).

    python bench/tokenizer_lr_validation.py [--profile cpu] [--run-dir runs/cpu] [--lrs 2.5e-4,5e-4,1e-3]
        [--steps 300] [--set KEY=VALUE ...] [--out bench/results/tokenizer_lr_validation.json]

The cpu profile's tokenizer learning rate (5e-4) was picked on held-out clips of the *test*
videos. Here every candidate rate trains the profile's tokenizer (same architecture, quantizer,
recipe, batch and number of updates) on the training videos minus the segmentation study's
validation videos (the last `seg.n_val_videos`), and is scored by PSNR on clips of those
validation videos only. The test split is not read. Each rate trains into
``<run-dir>/lr_validation/lr<lr>_<steps>/`` and resumes if killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.cli import parse_overrides  # noqa: E402
from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.data.samplers import ClipBatches  # noqa: E402
from vpe_lib.data.store import PushWorldStore  # noqa: E402
from vpe_lib.stages.common import require, write_json  # noqa: E402
from vpe_lib.stages.pretrain_stage import train_tokenizer  # noqa: E402


class VideoSubset(PushWorldStore):
    """Some videos of a split, seen as a split of their own (what ClipBatches samples from)."""

    def __init__(self, store: PushWorldStore, ids):  # noqa: D107 - a view: no files are opened again
        self.__dict__.update(store.__dict__)
        self._store, self._ids = store, np.asarray(ids)

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, key, i, frames=slice(None)):
        if not 0 <= i < len(self._ids):
            raise IndexError(f"video {i} out of range for {len(self._ids)} videos")
        return self._store.get(key, int(self._ids[i]), frames)


def split_train_val(store: PushWorldStore, n_val: int) -> tuple[VideoSubset, VideoSubset]:
    """The study's rule: the last `n_val` training videos are validation."""
    n = len(store)
    if not 0 < n_val < n:
        raise ValueError(f"n_val={n_val} must be between 1 and {n - 1}")
    return VideoSubset(store, range(n - n_val)), VideoSubset(store, range(n - n_val, n))


def parse_lrs(text: str) -> list[float]:
    try:
        lrs = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lrs {text!r}: expected comma-separated numbers, e.g. 2.5e-4,5e-4") from None
    if not lrs or any(lr <= 0 for lr in lrs):
        raise ValueError(f"--lrs {text!r}: learning rates must be > 0")
    return lrs


def run(profile: str, run_dir: Path, lrs: list[float], steps: int | None, overrides: dict, *,
        progress: bool = True) -> dict:
    cfg = get_config(profile, overrides)
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    train, val = split_train_val(PushWorldStore(data_dir / "pushworld", "train"), cfg.seg.n_val_videos)
    p = cfg.pretrain
    eval_clips = ClipBatches(val, clip_frames=p.tokenizer.clip_frames, batch_size=1).fixed(p.n_eval_clips)
    steps = steps or p.train.steps
    rows = []
    for lr in lrs:
        tcfg = dataclasses.replace(p.train, lr=lr, steps=steps, progress=progress, ckpt_every=max(steps // 4, 1))
        start = time.perf_counter()
        _, result, final = train_tokenizer(p.tokenizer, p, tcfg, train, eval_clips,
                                           run_dir / "lr_validation" / f"lr{lr:g}_{steps}", desc=f"lr {lr:g}")
        rows.append({"lr": lr, "val_psnr_db": final["psnr_db"], "val_ssim": final["ssim"],
                     "codebook_utilisation": final["codebook_utilisation"], "steps": result.step,
                     "wall_s": time.perf_counter() - start})
        print(f"lr {lr:g}: validation PSNR {final['psnr_db']:.2f} dB, {final['codebook_utilisation']:.1%} codes",
              flush=True)
    best = max(rows, key=lambda r: r["val_psnr_db"])
    return {"profile": profile, "profile_lr": p.train.lr, "chosen_lr": best["lr"], "steps": steps,
            "n_train_videos": len(train), "n_val_videos": len(val), "n_val_clips": p.n_eval_clips, "rows": rows,
            "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--run-dir", default="runs/cpu", type=Path)
    ap.add_argument("--lrs", default="2.5e-4,5e-4,1e-3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench/results/tokenizer_lr_validation.json", type=Path)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        lrs = parse_lrs(args.lrs)
    except ValueError as err:
        ap.error(str(err))
    result = run(args.profile, args.run_dir, lrs, args.steps, parse_overrides(args.overrides),
                 progress=not args.no_progress)
    write_json(args.out, result)
    print(f"chosen on validation: lr {result['chosen_lr']:g} (profile: {result['profile_lr']:g}); wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
