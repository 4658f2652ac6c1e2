"""BAIR robot pushing readers: VideoGPT's HDF5 and the original TFRecords, without TensorFlow.

* :class:`BairHdf5Source` reads VideoGPT's layout: datasets ``{split}_data``
  (sum of video lengths, 64, 64, 3) uint8 and ``{split}_idx``, the start
  offset of each video (video i spans ``idx[i]:idx[i+1]``, the last one runs
  to the end of ``{split}_data``).
* :class:`BairTFRecordSource` reads the original ``softmotion30_44k``
  TFRecords: one ``tf.train.Example`` per video with per-step features
  ``'{t}/image_aux1/encoded'`` (raw 64x64x3 uint8 bytes; PNG/JPEG also
  accepted), ``'{t}/action'`` and ``'{t}/endeffector_pos'`` (float lists).

No TensorFlow: the TFRecord framing and the Example protobuf are read by
`vpe_lib.data.tfrecord` (re-exported here).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .clips import IndexedSource
from .frames import resize_frames
from .errors import DataError
from .frames import natural_key
from .tfrecord import (crc32c, decode_feature, encode_example, feature_map, is_tfrecord, iter_tfrecord,
                       masked_crc32c, parse_example, records, write_tfrecord)
from .tfrecord_index import load_index, save_index

__all__ = ["BairHdf5Source", "BairTFRecordSource", "crc32c", "masked_crc32c", "iter_tfrecord",
           "write_tfrecord", "parse_example", "encode_example", "is_tfrecord"]

# ---------------------------------------------------------------------------
# sources


class BairHdf5Source(IndexedSource):
    """VideoGPT's BAIR HDF5 (``{split}_data`` + ``{split}_idx``), read lazily.

    The layout is validated at construction (missing dataset, wrong shape or
    dtype, offsets not strictly increasing or out of range -> DataError naming
    the file and the dataset key). The h5py handle opens on first read, once
    per process (safe to pickle into data-loader workers).
    """

    kind = "bair_hdf5"

    def __init__(self, path, split: str = "train", *, size=None, min_frames: int = 1,
                 on_error: str = "skip"):
        import h5py

        super().__init__(path, min_frames=min_frames, on_error=on_error)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.name = f"{self.kind}:{split}:{self.root.name}"
        self.split, self.size = split, size
        self.data_key, self.idx_key = f"{split}_data", f"{split}_idx"
        self._h5, self._pid = None, None
        if not self.root.is_file():
            raise DataError("HDF5 file not found", path=self.root)
        try:
            f = h5py.File(self.root, "r")
        except OSError as e:
            raise DataError(f"cannot open as HDF5 (corrupt or not HDF5): {e}", path=self.root) from e
        with f:
            for key in (self.data_key, self.idx_key):
                if not isinstance(f.get(key), h5py.Dataset):
                    raise DataError(f"missing dataset {key!r}: VideoGPT's BAIR layout has "
                                    f"'{split}_data' and '{split}_idx'; this file has {sorted(f.keys())}",
                                    path=self.root, field=key)
            data = f[self.data_key]
            if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8:
                raise DataError(f"expected uint8 (frames, H, W, 3), got {data.dtype} {data.shape}",
                                path=self.root, field=self.data_key)
            total = data.shape[0]
            idx = np.asarray(f[self.idx_key][()])
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
            raise DataError(f"expected a non-empty 1-D integer array of start offsets, got "
                            f"{idx.dtype} {idx.shape}", path=self.root, field=self.idx_key)
        idx = idx.astype(np.int64)
        if idx[0] < 0 or idx[-1] >= total:
            raise DataError(f"start offsets out of range [{idx.min()}, {idx.max()}] for "
                            f"{total} frames in {self.data_key!r}", path=self.root, field=self.idx_key)
        steps = np.diff(idx)
        if (steps <= 0).any():
            j = int(np.flatnonzero(steps <= 0)[0])
            raise DataError(f"start offsets not strictly increasing: idx[{j}]={idx[j]}, "
                            f"idx[{j + 1}]={idx[j + 1]}", path=self.root, field=self.idx_key)
        self._starts: list[int] = []
        for v, (a, b) in enumerate(zip(idx.tolist(), np.append(idx[1:], total).tolist())):
            if self._add(f"{self.root}#{self.data_key}[{v}]", b - a):
                self._starts.append(a)
        self._finish(f"video in {self.data_key!r}")

    def _dataset(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.root, "r"), os.getpid()
        return self._h5[self.data_key]

    def __getstate__(self):
        return {**self.__dict__, "_h5": None, "_pid": None}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        self._check(i, start, length)
        a = self._starts[i] + start
        try:
            frames = self._dataset()[a:a + length]
        except OSError as e:
            raise DataError(f"cannot read frames {a}:{a + length}: {e}", path=self.root,
                            field=self.data_key) from e
        return resize_frames(frames, self.size)


class BairTFRecordSource(IndexedSource):
    """BAIR's original TFRecords (one Example per video), no TensorFlow needed.

    ``paths``: a file, a folder (every ``*.tfrecord*`` under it) or a list of
    files. Indexing reads every record once (verifying CRCs unless
    ``verify_crc=False``, parsing the Example, checking each frame's byte size)
    and keeps only (file, offset, length); ``read_clip`` re-reads one record.
    The index is saved per file (``vpe_lib.data.tfrecord_index``: beside it, or
    in the cache folder when the data folder is read-only) and reused by every
    later process while the file's size and modification time are unchanged.
    Corrupt records are skipped; broken framing skips the rest of that file.
    Frames are ``'{t}/{image_key}/encoded'`` for t = 0, 1, ... (raw
    ``image_size`` x 3 bytes, or PNG/JPEG).
    """

    kind = "bair_tfrecord"

    def __init__(self, paths, *, image_key: str = "image_aux1", image_size=(64, 64), size=None,
                 min_frames: int = 1, on_error: str = "skip", verify_crc: bool = True):
        files, root = self._files(paths)
        super().__init__(root, min_frames=min_frames, on_error=on_error)
        self.image_key, self.image_size, self.size = image_key, tuple(image_size), size
        self._raw_bytes = int(self.image_size[0] * self.image_size[1] * 3)
        self._where: list[tuple[Path, int, int]] = []  # (file, offset of the data, length)
        # what the scan's outcome depends on besides the file itself
        settings = {"verify_crc": bool(verify_crc), "image_key": image_key, "image_size": list(self.image_size)}
        self.scanned: list[Path] = []  # files read in full here (the others came from their saved index)
        for path in files:
            records = load_index(path, settings)
            if records is None:
                records = self._scan(path, verify_crc)
                save_index(path, settings, records)
                self.scanned.append(path)
            for r in records:  # replayed: skips and warnings are those of a scan
                rid = f"{path}#{r['k']}"
                if r.get("fatal"):
                    self._skip(path, f"{r['problem']}; its remaining records are unreadable")
                elif "problem" in r:
                    self._skip(rid, r["problem"])
                elif self._add(rid, r["frames"]):
                    self._where.append((path, r["offset"], r["length"]))
        self._finish(".tfrecord(s) record")

    def _scan(self, path: Path, verify_crc: bool) -> list[dict]:
        """Every record of one file, read and checked: an index entry per record (see
        ``vpe_lib.data.tfrecord_index``); nothing raises here, the caller decides."""
        out: list[dict] = []
        for k, offset, data, problem in records(path, verify_crc):
            if data is None:
                out.append({"k": k, "problem": problem, "fatal": True})
            elif problem:
                out.append({"k": k, "problem": problem})
            else:
                try:
                    out.append({"k": k, "offset": offset + 12, "length": len(data), "frames": self._count_frames(data)})
                except (ValueError, UnicodeDecodeError) as e:
                    out.append({"k": k, "problem": f"bad tf.train.Example: {e}"})
        return out

    @staticmethod
    def _files(paths) -> tuple[list[Path], Path]:
        if isinstance(paths, (str, os.PathLike)):
            p = Path(paths)
            if p.is_dir():
                files = sorted((f for f in p.rglob("*") if is_tfrecord(f)), key=lambda f: natural_key(str(f)))
                if not files:
                    raise DataError("no .tfrecord(s) file in folder", path=p)
                return files, p
            paths = [p]
        files = [Path(p) for p in paths]
        if not files:
            raise DataError("no TFRecord file given")
        for f in files:
            if not f.is_file():
                raise DataError("TFRecord file not found", path=f)
        root = files[0] if len(files) == 1 else Path(os.path.commonpath([f.parent for f in files]))
        return files, root

    def _count_frames(self, data: bytes) -> int:
        feats = feature_map(data)
        n = 0
        while (key := f"{n}/{self.image_key}/encoded") in feats:
            value = decode_feature(feats[key])
            if len(value) != 1 or not isinstance(value[0], bytes):
                raise ValueError(f"{key!r} is not one bytes value")
            b = value[0]
            if len(b) != self._raw_bytes and not b.startswith((b"\x89PNG", b"\xff\xd8")):
                raise ValueError(f"{key!r} has {len(b)} bytes: neither raw {self.image_size} RGB "
                                 f"({self._raw_bytes} bytes) nor PNG/JPEG")
            n += 1
        if n == 0:
            raise ValueError(f"no '0/{self.image_key}/encoded' feature (keys: {sorted(feats)[:6]}...)")
        return n

    def _features(self, i: int) -> dict[str, memoryview]:
        path, offset, length = self._where[i]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise DataError(f"record at byte {offset - 12} truncated since indexing", path=path)
        return feature_map(data)

    def _frame(self, b: bytes, where: str) -> np.ndarray:
        if len(b) == self._raw_bytes:
            return np.frombuffer(b, np.uint8).reshape(*self.image_size, 3)
        try:
            with Image.open(io.BytesIO(b)) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot decode frame: {e}", path=where) from e

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        self._check(i, start, length)
        feats = self._features(i)
        frames = [self._frame(decode_feature(feats[f"{t}/{self.image_key}/encoded"])[0], self._ids[i])
                  for t in range(start, start + length)]
        return resize_frames(np.stack(frames), self.size)

    def read_feature(self, i: int, name: str) -> np.ndarray:
        """Per-step feature ``'{t}/{name}'`` of video i stacked over t, e.g. 'action' -> (T, 4)."""
        feats = self._features(i)
        return np.stack([np.asarray(decode_feature(feats[f"{t}/{name}"])) for t in range(self._lengths[i])])
