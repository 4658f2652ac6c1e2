"""Clips/s the pretraining batches are delivered at (in the training thread vs a DataLoader with
0 / 1 / 2 workers) against clips/s the tokenizer's training step consumes.

    python bench/bench_loader.py                     # a small generated PushWorld set (64x64, 30 frames)
    python bench/bench_loader.py --data runs/cpu/data/pushworld --workers 0,1,2,4 --batch 64
    python bench/bench_loader.py --real ../shared/data/bair_samples/frames   # + a decoded source (PNG frames)
    [--clip-frames 16] [--batches 40] [--repeats 3] [--train-steps 3] [--out bench/results/loader.json]

Delivery: ``ClipBatches`` (random 16x64x64 clips, the gpu profile's shape, read from the memory-mapped
PushWorld shards, converted to float in [-1, 1]) called in this thread, and served by
``vpe_lib.data.loader.LoaderBatches`` with each worker count (the first batch, which pays for
starting the workers, is timed apart), with the CPU time the training thread itself spends per batch
(what a GPU run cannot overlap; receiving a worker's batch maps shared memory, the pages are touched
later by the copy to the device); the paths take turns, `--repeats` times, and the best run of
each is reported (the host may be shared and noisy). Consumption: full training steps (forward, backward, AdamW)
of the cpu profile's tokenizer and loss at its batch and clip shape (8 x 4x64x64), after a warm-up
step, on this machine's threads. The ratio delivered / consumed says how far ahead of training the
data path is; a GPU consumes far more clips/s (see `make bench-mfu`), which is where workers count.
`--real PATH`: the same paths for ``RealClipBatches`` over any clip source (``open_clip_source``:
BAIR HDF5 / TFRecords, frame folders, videos), whose clips are decoded, not just copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.data.clip_batches import RealClipBatches  # noqa: E402
from vpe_lib.data.open_clips import open_clip_source  # noqa: E402
from vpe_lib.data.loader import LoaderBatches  # noqa: E402
from vpe_lib.data.samplers import ClipBatches  # noqa: E402
from vpe_lib.data.store import PushWorldStore, build_dataset  # noqa: E402
from vpe_lib.models.tokenizer import VQVAE3D  # noqa: E402
from vpe_lib.models.tokenizer_loss import TokenizerTrainer  # noqa: E402


def small_dataset(root: Path, n_videos: int) -> Path:
    """The gpu profile's world (64x64, 30 frames per video), a few videos."""
    world = get_config("gpu").data.world
    build_dataset(root, world, n_train=n_videos, n_test=1, videos_per_shard=max(1, n_videos // 4), seed=0, workers=1,
                  progress=False)
    return root


def delivery_in_thread(batches: ClipBatches, n: int) -> dict:
    batches(0)  # as the loaders' first batch: not timed
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(1, n + 1):
        batches(i)
    dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return {"clips_per_s": n * batches.batch_size / dt, "s_per_batch": dt / n, "training_thread_cpu_ms_per_batch": 1e3 * cpu / n}


def delivery_loader(batches: ClipBatches, n: int, workers: int, prefetch: int) -> dict:
    t0 = time.perf_counter()
    with LoaderBatches(batches, workers=workers, prefetch_factor=prefetch, stop=n + 1) as served:
        served(0)
        first = time.perf_counter() - t0  # includes starting the workers
        t1, c1 = time.perf_counter(), time.thread_time()
        for i in range(1, n + 1):
            served(i)
        dt, cpu = time.perf_counter() - t1, time.thread_time() - c1
    return {"clips_per_s": n * batches.batch_size / dt, "s_per_batch": dt / n, "first_batch_s": first,
            "training_thread_cpu_ms_per_batch": 1e3 * cpu / n}


def delivery(batches, args) -> dict:
    """Every path, taking turns `args.repeats` times; the best run of each, and every run's clips/s."""
    paths = {"in_thread": lambda: delivery_in_thread(batches, args.batches)}
    for w in (int(x) for x in args.workers.split(",")):
        paths[f"loader_{w}_workers"] = lambda w=w: delivery_loader(batches, args.batches, w, args.prefetch)
    batches(0)  # the page cache warm for every path alike
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, measure in paths.items():
            runs[name].append(measure())
    return {name: {**max(rs, key=lambda r: r["clips_per_s"]), "runs_clips_per_s": [round(r["clips_per_s"], 1) for r in rs]}
            for name, rs in runs.items()}


def consumption(store: PushWorldStore, steps: int) -> dict:
    """Clips/s of the cpu profile's tokenizer training step on this machine."""
    p = get_config("cpu").pretrain
    torch.manual_seed(0)
    model = VQVAE3D(cfg=p.tokenizer).channels_last_()  # as the pretraining stage trains it
    trainer = TokenizerTrainer(model, p.loss)
    opt = torch.optim.AdamW(trainer.parameters(), lr=p.train.lr)
    batches = ClipBatches(store, clip_frames=p.tokenizer.clip_frames, batch_size=p.train.batch_size, seed=0)
    clips = [batches(i) for i in range(steps + 1)]

    def step(x):
        loss, _ = trainer(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(clips[0])  # warm-up
    t0 = time.perf_counter()
    for x in clips[1:]:
        step(x)
    dt = time.perf_counter() - t0
    return {"clips_per_s": steps * p.train.batch_size / dt, "s_per_step": dt / steps,
            "batch": p.train.batch_size, "clip_shape": [p.tokenizer.clip_frames, store.world.height, store.world.width],
            "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="a PushWorld dataset folder (with manifest.json); default: generate a small one")
    ap.add_argument("--videos", type=int, default=24, help="videos of the generated dataset")
    ap.add_argument("--clip-frames", type=int, default=16, help="frames per clip (the gpu profile's 16)")
    ap.add_argument("--batch", type=int, default=16, help="clips per batch delivered")
    ap.add_argument("--batches", type=int, default=40, help="batches timed per path and run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path (the best is reported)")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated")
    ap.add_argument("--prefetch", type=int, default=2, help="batches each worker keeps ready")
    ap.add_argument("--train-steps", type=int, default=3, help="timed tokenizer training steps")
    ap.add_argument("--real", type=Path, default=None, help="also a real clip source (open_clip_source), at 64x64")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loader.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vpe-bench-loader-") as tmp:
        root = args.data if args.data is not None else small_dataset(Path(tmp) / "pushworld", args.videos)
        store = PushWorldStore(root, "train")
        shape = [args.clip_frames, store.world.height, store.world.width]
        delivered = delivery(ClipBatches(store, clip_frames=args.clip_frames, batch_size=args.batch, seed=0), args)
        consumed = consumption(store, args.train_steps)
    real = None
    if args.real is not None:
        source = open_clip_source(args.real)
        real = delivery(RealClipBatches(source, clip_frames=args.clip_frames, batch_size=args.batch, seed=0,
                                        size=(64, 64)), args)

    need = consumed["clips_per_s"]
    for d in [*delivered.values(), *(real or {}).values()]:
        d["ratio_to_training"] = d["clips_per_s"] / need
    result = {
        "delivered": delivered,
        **({"delivered_real": real, "real_source": str(args.real)} if real else {}),
        "tokenizer_training_cpu_profile": consumed,
        "delivery_clip_shape": shape,
        "delivery_batch": args.batch,
        "data": str(args.data) if args.data is not None else f"generated: {args.videos} videos, 64x64x30",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"clips of {'x'.join(map(str, shape))}, batches of {args.batch} (delivered) vs the cpu profile's tokenizer "
          f"training step ({consumed['batch']} x {'x'.join(map(str, consumed['clip_shape']))}): "
          f"{need:.2f} clips/s consumed")
    for title, paths in (("PushWorld (memory-mapped shards)", delivered), (f"{args.real} (decoded)", real)):
        if not paths:
            continue
        print(f" {title}:")
        base = paths["in_thread"]["clips_per_s"]
        for name, d in paths.items():
            extra = f", first batch {d['first_batch_s']:.2f} s" if "first_batch_s" in d else ""
            print(f"  {name:18s} {d['clips_per_s']:9.1f} clips/s  ({d['clips_per_s'] / base:.2f}x in-thread, "
                  f"{d['ratio_to_training']:.1f}x what training consumes; training thread "
                  f"{d['training_thread_cpu_ms_per_batch']:.1f} ms CPU per batch{extra})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
