"""Benchmark: PushWorld generation speed on one core (target >= 1,000 frames/s at 64x64).

    python bench/bench_pushworld.py [--videos N] [--out bench/results/pushworld.json]

Prints frames/s and the ratio to the target; writes JSON.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # one core, as the target is stated; set before numpy loads

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from vpe_lib.data.pushworld import PushWorldConfig, generate_video

TARGET_FPS = 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pushworld.json")
    args = parser.parse_args()
    cfg = PushWorldConfig(height=args.height, width=args.width, n_frames=args.frames)
    generate_video(0, cfg)  # warm-up: imports, caches
    times = []
    for seed in range(1, args.videos + 1):
        start = time.perf_counter()
        generate_video(seed, cfg)
        times.append(time.perf_counter() - start)
    total = sum(times)
    fps = args.videos * args.frames / total
    result = {
        "frames_per_s": fps,
        "target_frames_per_s": TARGET_FPS,
        "ratio_to_target": fps / TARGET_FPS,
        "ms_per_video_median": 1000 * float(np.median(times)),
        "height": args.height, "width": args.width, "n_frames": args.frames, "n_videos": args.videos,
        "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
    }
    print(f"PushWorld {args.height}x{args.width}: {fps:,.0f} frames/s on one core "
          f"= {fps / TARGET_FPS:.2f}x the {TARGET_FPS:,.0f} frames/s target "
          f"({result['ms_per_video_median']:.1f} ms per {args.frames}-frame video)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
