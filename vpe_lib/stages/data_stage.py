"""Stage 01: generate PushWorld, measure the generator, export COCO / DAVIS / mp4."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from vpe_lib.config import RunConfig
from vpe_lib.data.exports import export_coco, export_davis, export_mp4
from vpe_lib.data.pushworld import CLASS_NAMES, PushWorldConfig, generate_video
from vpe_lib.data.store import PushWorldStore, build_dataset
from vpe_lib.stages.common import write_metrics


def measure_generation_speed(world: PushWorldConfig, *, min_seconds: float = 1.0, max_videos: int = 200) -> float:
    """Frames per second of `generate_video` in this (single) process."""
    n, start = 0, time.perf_counter()
    while n < max_videos and (n < 2 or time.perf_counter() - start < min_seconds):
        generate_video(10_000_000 + n, world)
        n += 1
    return n * world.n_frames / (time.perf_counter() - start)


def dataset_statistics(store: PushWorldStore) -> dict[str, float]:
    fg, n_objects, moved = [], [], []
    for i in range(len(store)):
        inst = store.get("instance", i)
        fg.append(float((inst > 0).mean()))
        state = store.get("object_state", i)  # (T, max_objects, 5): x, y, angle, class, present
        present = state[0, :, 4] > 0
        n_objects.append(int(present.sum()))
        shift = np.linalg.norm(state[-1, present, :2] - state[0, present, :2], axis=-1)
        moved.append(float((shift > 1.0).mean()) if present.any() else 0.0)
    return {
        "fg_fraction": float(np.mean(fg)),
        "objects_per_video": float(np.mean(n_objects)),
        "fraction_objects_pushed": float(np.mean(moved)),
    }


def run_data_stage(cfg: RunConfig, out: Path, *, progress: bool = True) -> dict[str, float]:
    d = cfg.data
    report = build_dataset(out / "pushworld", d.world, n_train=d.n_train_videos, n_test=d.n_test_videos,
                           videos_per_shard=d.videos_per_shard, seed=d.seed, workers=d.workers, progress=progress)
    train, test = PushWorldStore(out / "pushworld", "train"), PushWorldStore(out / "pushworld", "test")

    # Exports for the other loaders, from held-out videos (they are small: a few videos).
    export_ids = range(min(d.n_export_videos, len(test)))
    videos = [(f"pushworld_{i:04d}", test.video(i)) for i in export_ids]
    export_coco(videos, out / "exports" / "coco", class_names=CLASS_NAMES)
    export_davis(videos, out / "exports" / "davis")
    for name, v in videos:
        export_mp4(v["frames"], out / "exports" / "mp4" / f"{name}.mp4")

    # One core, as the target is stated; the pool's throughput is reported separately.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stats = dataset_statistics(test)
    metrics = {
        "data/frames_per_s": measure_generation_speed(d.world),
        "data/build_wall_s": report.wall_time_s,
        "data/shards_generated": report.generated_shards,
        "data/shards_reused": report.reused_shards,
        "data/n_train_videos": len(train),
        "data/n_test_videos": len(test),
        "data/frames_per_video": d.world.n_frames,
        **{f"data/{k}": v for k, v in stats.items()},
    }
    write_metrics(out, metrics)
    return metrics
