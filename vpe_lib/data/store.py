"""PushWorld on disk: sharded, memory-mapped arrays with a manifest.

Layout of a dataset folder::

    manifest.json                 config, base seed, splits, per-shard checksums
    train/shard_00000/frames.npy  (N, T, H, W, 3) uint8, one .npy per array
    train/shard_00000/meta.json   written last: its presence marks a finished shard
    test/...

Generation runs shard by shard in worker processes with a progress bar. A
finished shard is never regenerated, so an interrupted build resumes where it
stopped. Loading checks every file's size against its meta (cheap) and can
verify checksums; a truncated or missing array raises `DataError` naming the
file instead of surfacing as a reshape error deep inside numpy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vpe_lib.atomic import atomic_open, atomic_write_text
from vpe_lib.data.errors import DataError
from vpe_lib.data.pushworld import PushWorldConfig, generate_video

SPLITS = ("train", "test")
# Test videos live in their own id range so that growing the training set never
# changes which videos are held out (splits are by video, never by frame).
SPLIT_ID_OFFSET = {"train": 0, "test": 1_000_000}
ARRAY_KEYS = ("frames", "instance", "semantic", "flow", "actions", "arm_state", "object_state")
MANIFEST = "manifest.json"


def video_seed(base_seed: int, video_id: int) -> int:
    """A stable, well-mixed 63-bit seed per (base seed, video id)."""
    ss = np.random.SeedSequence([base_seed, video_id])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_shard(args: tuple[Path, dict, int, list[int]]) -> dict:
    """Generate one shard in a worker process; meta.json is written last (the completion marker)."""
    shard_dir, world_dict, base_seed, video_ids = args
    world = PushWorldConfig(**world_dict)
    start = time.perf_counter()
    videos = [generate_video(video_seed(base_seed, vid), world) for vid in video_ids]
    gen_s = time.perf_counter() - start
    shard_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for key in ARRAY_KEYS:
        arr = np.stack([v[key] for v in videos])
        path = shard_dir / f"{key}.npy"
        with atomic_open(path, "wb") as f:
            np.save(f, arr)
        files[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": path.stat().st_size, "sha256": _sha256(path)}
    meta = {"video_ids": list(video_ids), "files": files, "generate_s": gen_s}
    atomic_write_text(json.dumps(meta, indent=1), shard_dir / "meta.json")
    return meta


@dataclass
class BuildReport:
    root: Path
    n_videos: int
    n_frames: int
    generated_shards: int
    reused_shards: int
    wall_time_s: float
    generate_cpu_s: float  # summed over workers: time spent inside generate_video

    @property
    def frames_per_s_per_worker(self) -> float:
        generated = self.n_frames * self.generated_shards / max(self.generated_shards + self.reused_shards, 1)
        return generated / self.generate_cpu_s if self.generate_cpu_s > 0 else float("nan")


def build_dataset(
    root: str | Path,
    world: PushWorldConfig,
    *,
    n_train: int,
    n_test: int,
    videos_per_shard: int = 50,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> BuildReport:
    """Generate (or finish generating) a PushWorld dataset under `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = {"world": dataclasses.asdict(world), "seed": seed, "videos_per_shard": videos_per_shard,
            "splits": {"train": n_train, "test": n_test}}
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("spec") != spec:
            raise DataError(
                f"{manifest_path} was built with a different spec; use a new folder or delete it.\n"
                f"  on disk: {old.get('spec')}\n  asked:   {spec}"
            )
    jobs, shards, reused = [], {s: [] for s in SPLITS}, 0
    for split, n in (("train", n_train), ("test", n_test)):
        ids = [SPLIT_ID_OFFSET[split] + i for i in range(n)]
        for k in range(0, n, videos_per_shard):
            shard_dir = root / split / f"shard_{k // videos_per_shard:05d}"
            shards[split].append(shard_dir.relative_to(root).as_posix())
            chunk = ids[k : k + videos_per_shard]
            meta_path = shard_dir / "meta.json"
            if meta_path.exists() and json.loads(meta_path.read_text()).get("video_ids") == chunk:
                reused += 1  # finished in an earlier (possibly interrupted) build
                continue
            jobs.append((shard_dir, dataclasses.asdict(world), seed, chunk))

    start = time.perf_counter()
    gen_cpu = 0.0
    frames_per_video = world.n_frames
    bar = tqdm(total=sum(len(j[3]) for j in jobs), unit="video", desc="PushWorld", disable=not progress or not jobs)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            gen_cpu += _write_shard(job)["generate_s"]
            bar.update(len(job[3]))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, meta in zip(jobs, pool.map(_write_shard, jobs)):
                gen_cpu += meta["generate_s"]
                bar.update(len(job[3]))
    bar.close()
    wall = time.perf_counter() - start

    checksums = {}
    for split in SPLITS:
        for rel in shards[split]:
            checksums[rel] = json.loads((root / rel / "meta.json").read_text())["files"]
    manifest = {"spec": spec, "shards": shards, "counts": {"train": n_train, "test": n_test},
                "frames_per_video": frames_per_video, "files": checksums}
    atomic_write_text(json.dumps(manifest, indent=1), manifest_path)
    return BuildReport(root, n_train + n_test, (n_train + n_test) * frames_per_video,
                       len(jobs), reused, wall, gen_cpu)


class PushWorldStore:
    """Read-only, memory-mapped view of one split of a built dataset.

    `store.arrays[key]` is a list of per-shard memmaps; `store.video(i)` gathers
    one video; `store.frames_array()` etc. concatenate lazily only when asked.
    """

    def __init__(self, root: str | Path, split: str = "train", *, verify: bool = False):
        self.root = Path(root)
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; valid: {SPLITS}")
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise DataError(f"no PushWorld dataset at {self.root} ({MANIFEST} missing): run the data stage first")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{manifest_path} is not valid JSON: {err}") from err
        self.split = split
        self.world = PushWorldConfig(**self.manifest["spec"]["world"])
        self.arrays: dict[str, list[np.ndarray]] = {k: [] for k in ARRAY_KEYS}
        self._offsets = [0]
        for rel in self.manifest["shards"][split]:
            expected = self.manifest["files"][rel]
            for key in ARRAY_KEYS:
                self.arrays[key].append(self._open(self.root / rel / f"{key}.npy", expected[key], verify))
            self._offsets.append(self._offsets[-1] + self.arrays["frames"][-1].shape[0])

    @staticmethod
    def _open(path: Path, expected: dict, verify: bool) -> np.ndarray:
        if not path.exists():
            raise DataError(f"dataset shard file missing: {path}")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DataError(f"dataset shard file {path} is truncated or altered: {size} bytes, manifest says {expected['bytes']}")
        if verify and _sha256(path) != expected["sha256"]:
            raise DataError(f"dataset shard file {path} fails its checksum")
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise DataError(f"cannot read dataset shard file {path}: {err}") from err
        if list(arr.shape) != expected["shape"]:
            raise DataError(f"dataset shard file {path} has shape {arr.shape}, manifest says {expected['shape']}")
        return arr

    def __getstate__(self) -> dict:
        # A memmap pickles as a full in-memory copy of its array: a DataLoader worker started by
        # spawn / forkserver (macOS, Windows, Python >= 3.14) would receive the whole split. Send
        # the folder instead; the worker maps the same files again.
        return {"root": self.root, "split": self.split}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["split"])

    def __len__(self) -> int:
        return self._offsets[-1]

    @property
    def n_frames(self) -> int:
        return self.world.n_frames

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"video {i} out of range for {len(self)} {self.split} videos")
        shard = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return shard, i - self._offsets[shard]

    def get(self, key: str, i: int, frames: slice | np.ndarray | int = slice(None)) -> np.ndarray:
        """Array `key` of video i (optionally a frame slice / index), as a real ndarray."""
        shard, j = self._locate(i)
        return np.asarray(self.arrays[key][shard][j, frames])

    def video(self, i: int) -> dict[str, np.ndarray]:
        return {k: self.get(k, i) for k in ARRAY_KEYS}
