"""Benchmark PushWorld generation speed on one core.

    python bench/bench_pushworld.py [--frames N] [--out bench/results/pushworld.json]

Generates default-config 64x64, 30-frame videos (distinct seeds) until at least
``--frames`` frames are made, after a short warm-up, and reports frames per second
against the 1,000 frames/s target. The host may be shared and noisy, so the timed
run is repeated (``--repeats``) and the best is reported, along with every run.
"""

from __future__ import annotations

import os

# One core, set before numpy is imported (BLAS threads would otherwise spin up).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.data.pushworld import PushWorldConfig, generate_video  # noqa: E402

TARGET_FPS = 1000.0


def time_run(cfg: PushWorldConfig, n_videos: int, first_seed: int) -> float:
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + n_videos):
        generate_video(seed, cfg)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6000, help="frames per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (best is reported)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pushworld.json")
    args = ap.parse_args(argv)

    cfg = PushWorldConfig()
    n_videos = max(1, -(-args.frames // cfg.n_frames))
    time_run(cfg, 10, first_seed=10**6)  # warm-up: imports, caches
    runs = []
    for r in range(args.repeats):
        dt = time_run(cfg, n_videos, first_seed=r * n_videos)
        runs.append(n_videos * cfg.n_frames / dt)
    fps = max(runs)
    result = {
        "frames_per_s": round(fps, 1),
        "target": TARGET_FPS,
        "ratio": round(fps / TARGET_FPS, 3),
        "height": cfg.height,
        "width": cfg.width,
        "n_frames": cfg.n_frames,
        "n_videos": n_videos,
        "runs_frames_per_s": [round(x, 1) for x in runs],
        "ms_per_video": round(1e3 * cfg.n_frames / fps, 2),
        "threads": 1,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().machine,
    }
    print(f"PushWorld 64x64x{cfg.n_frames}: {fps:,.0f} frames/s on one core "
          f"({result['ratio']:.2f}x the {TARGET_FPS:,.0f} frames/s target; runs: "
          + ", ".join(f"{x:,.0f}" for x in runs) + ")")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
