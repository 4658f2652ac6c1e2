"""A frozen encoder's feature maps of a set of frames, in float16 on disk, read back by rows.

The segmentation study trains many heads on the maps of the same frozen encoder, so the maps are
computed once. Held in memory they grow with the dataset (the cpu profile's tokenizer: ~260 kB
a frame; the gpu profile's, megabytes: tens of GB at BAIR scale). Here each level is one ``.npy``
file (standard header, so ``np.load(..., mmap_mode="r")`` opens it for a reader who wants to
look), written chunk by chunk, and a batch of rows is read with ``os.pread`` into fresh memory:
nothing is memory-mapped, so the process holds only the rows it is using, and the kernel's page
cache, not the process, keeps a hot file fast. Peak memory is one chunk of maps plus one batch,
whatever the number of frames.

A store is written into a temporary folder and renamed into place when complete, so a crash
leaves no half-written store that a later run would trust.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

META = "store.json"
DTYPE = np.dtype("<f2")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The .npy (format 1.0) header of a C-ordered float16 array of `shape`, padded as numpy pads it."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": DTYPE.str, "fortran_order": False, "shape": shape})
    return buf.getvalue()


class FeatureStore:
    """Rows of every level of an encoder's maps: ``store.rows(index) -> [Tensor (k, C, H, W)]``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / META
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} is missing: {self.folder} is not a complete feature store")
        meta = json.loads(meta_path.read_text())
        self.n = int(meta["n"])
        self.shapes = [tuple(s) for s in meta["shapes"]]  # per level, without the row axis
        self.offsets = [int(o) for o in meta["offsets"]]
        self.files = [self.folder / f"level{k}.npy" for k in range(len(self.shapes))]
        self.row_bytes = [int(np.prod(s)) * DTYPE.itemsize for s in self.shapes]
        for path, shape, off, rb in zip(self.files, self.shapes, self.offsets, self.row_bytes):
            size = path.stat().st_size if path.exists() else -1
            if size != off + self.n * rb:
                raise ValueError(f"{path}: {size} bytes, expected {off + self.n * rb} for {self.n} rows of {shape} "
                                 f"float16 (a truncated or foreign file)")

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self.n * sum(self.row_bytes)

    def rows(self, index: Sequence[int] | np.ndarray | torch.Tensor,
             levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        """float32 tensors (len(index), C, H, W) per level (all, or `levels`), rows in the order of
        `index` (repeats allowed)."""
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"row index out of range [0, {self.n}) in {self.folder}")
        out = []
        for k in range(len(self.files)) if levels is None else levels:
            path, shape, off, rb = self.files[k], self.shapes[k], self.offsets[k], self.row_bytes[k]
            buf = np.empty((len(idx), *shape), DTYPE)
            flat = buf.reshape(len(idx), -1).view(np.uint8)
            fd = os.open(path, os.O_RDONLY)
            try:
                # consecutive rows in one read: an ordered slice (inference) is one call per level
                k = 0
                while k < len(idx):
                    j = k + 1
                    while j < len(idx) and idx[j] == idx[j - 1] + 1:
                        j += 1
                    want = (j - k) * rb
                    data = os.pread(fd, want, off + int(idx[k]) * rb)
                    if len(data) != want:
                        raise OSError(f"{path}: short read at row {idx[k]}")
                    flat[k:j].reshape(-1)[:] = np.frombuffer(data, np.uint8)
                    k = j
            finally:
                os.close(fd)
            out.append(torch.from_numpy(buf).float())
        return out

    def chunks(self, size: int, levels: Sequence[int] | None = None) -> Iterator[list[torch.Tensor]]:
        """The rows in order, `size` at a time (for inference over the whole set)."""
        for start in range(0, self.n, size):
            yield self.rows(np.arange(start, min(self.n, start + size)), levels)

    def select(self, levels: Sequence[int]) -> "LevelView":
        return LevelView(self, list(levels))


class LevelView:
    """Some levels of a store (an ablation's encoder view), read the same way."""

    def __init__(self, store: FeatureStore, levels: list[int]):
        self.store, self.levels = store, levels

    def __len__(self) -> int:
        return len(self.store)

    def rows(self, index) -> list[torch.Tensor]:
        return self.store.rows(index, self.levels)  # only the selected levels are read

    def chunks(self, size: int) -> Iterator[list[torch.Tensor]]:
        return self.store.chunks(size, self.levels)


def write_feature_store(folder: str | Path, n: int, compute: Callable[[int, int], Sequence[torch.Tensor]], *,
                        chunk: int = 32, on_chunk: Callable[[int], None] | None = None) -> FeatureStore:
    """Write the maps of rows [0, n) to `folder`, `chunk` rows at a time: `compute(start, stop)` returns
    one (stop - start, C, H, W) tensor per level. Reuses a complete store already there with the same
    row count; otherwise builds one in `folder`.tmp and renames it into place."""
    folder = Path(folder)
    if (folder / META).exists():
        store = FeatureStore(folder)
        if store.n == n:
            return store
        shutil.rmtree(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        shapes, offsets = _write_levels(tmp, n, compute, chunk, on_chunk)
        (tmp / META).write_text(json.dumps({"n": n, "shapes": shapes, "offsets": offsets, "dtype": DTYPE.str}) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    os.replace(tmp, folder)
    return FeatureStore(folder)


def _write_levels(tmp: Path, n: int, compute, chunk: int, on_chunk) -> tuple[list, list]:
    handles, shapes, offsets = [], None, []
    try:
        for start in range(0, n, chunk):
            maps = compute(start, min(n, start + chunk))
            if shapes is None:
                shapes = [tuple(m.shape[1:]) for m in maps]
                for k, shape in enumerate(shapes):
                    f = open(tmp / f"level{k}.npy", "wb")
                    f.write(_npy_header((n, *shape)))
                    offsets.append(f.tell())
                    handles.append(f)
            for f, m, shape in zip(handles, maps, shapes):
                if tuple(m.shape[1:]) != shape:
                    raise ValueError(f"compute({start}, ...) returned maps of {tuple(m.shape[1:])}, the first "
                                     f"chunk's were {shape}")
                f.write(np.ascontiguousarray(m.detach().cpu().numpy().astype(DTYPE)).tobytes())
            if on_chunk is not None:
                on_chunk(min(n, start + chunk))
        for f in handles:
            f.flush()
            os.fsync(f.fileno())
    finally:
        for f in handles:
            f.close()
    if shapes is None:
        raise ValueError(f"{tmp}: no rows to store (n = {n})")
    return shapes, offsets
