"""BAIR robot pushing readers: VideoGPT's HDF5 and the original TFRecords, without TensorFlow.

* :class:`BairHdf5Source` reads VideoGPT's layout: datasets ``{split}_data``
  (sum of video lengths, 64, 64, 3) uint8 and ``{split}_idx``, the start
  offset of each video (video i spans ``idx[i]:idx[i+1]``, the last one runs
  to the end of ``{split}_data``).
* :class:`BairTFRecordSource` reads the original ``softmotion30_44k``
  TFRecords: one ``tf.train.Example`` per video with per-step features
  ``'{t}/image_aux1/encoded'`` (raw 64x64x3 uint8 bytes; PNG/JPEG also
  accepted), ``'{t}/action'`` and ``'{t}/endeffector_pos'`` (float lists).

Why no TensorFlow: the TFRecord framing (uint64 length, masked CRC32C of the
length, data, masked CRC32C of the data) and the three protobuf messages
involved (Example -> Features -> map<string, Feature{bytes,float,int64 list}>)
are simple wire formats; reading them here keeps a 500 MB dependency out and
lets the tests write and read real TFRecord files. CRC32C is computed with
numpy (all 64-byte chunks at once, then their CRCs combined): ~15x faster
than a byte loop, ~10 ms per 740 KB BAIR record.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
from PIL import Image

from .clips import IndexedSource
from .frames import resize_frames
from .errors import DataError
from .frames import natural_key
from .tfrecord_index import is_index_file, load_index, save_index

__all__ = ["BairHdf5Source", "BairTFRecordSource", "crc32c", "masked_crc32c", "iter_tfrecord",
           "write_tfrecord", "parse_example", "encode_example", "is_tfrecord"]

# ---------------------------------------------------------------------------
# CRC32C (Castagnoli), as TFRecord uses it

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()
_TABLE_LIST = _TABLE.tolist()
_CHUNK = 64  # bytes per chunk of the vectorised CRC
_SHIFT: list[np.ndarray] = []  # _SHIFT[k]: (4, 256) tables advancing a register over CHUNK * 2**k zero bytes


def _advance(tables: np.ndarray, reg: np.ndarray) -> np.ndarray:
    # the zero-byte register update is linear over GF(2): apply it byte-lane by byte-lane
    return (tables[0][reg & 0xFF] ^ tables[1][(reg >> 8) & 0xFF]
            ^ tables[2][(reg >> 16) & 0xFF] ^ tables[3][reg >> 24])


def _shift_tables(k: int) -> np.ndarray:
    while len(_SHIFT) <= k:
        lanes = np.arange(4, dtype=np.uint32)[:, None] * 8
        basis = (np.arange(256, dtype=np.uint32)[None, :] << lanes).ravel()  # every byte in every lane
        if not _SHIFT:
            reg = basis
            for _ in range(_CHUNK):
                reg = _TABLE[reg & 0xFF] ^ (reg >> 8)
        else:
            reg = _advance(_SHIFT[-1], _advance(_SHIFT[-1], basis))
        _SHIFT.append(reg.reshape(4, 256))
    return _SHIFT[k]


def crc32c(data) -> int:
    """CRC-32C of ``data`` (bytes-like); crc32c(b"123456789") == 0xE3069283."""
    buf = np.frombuffer(data, np.uint8)
    n = len(buf)
    if n < 1024:
        reg, t = 0xFFFFFFFF, _TABLE_LIST
        for b in buf.tobytes():
            reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
        return reg ^ 0xFFFFFFFF
    # A raw CRC (register starting at 0) is linear and ignores leading zero bytes; the
    # standard initial register 0xFFFFFFFF equals inverting the first 4 data bytes.
    levels = max(0, (-(-n // _CHUNK) - 1).bit_length())
    padded = np.zeros((1 << levels) * _CHUNK, np.uint8)
    padded[-n:] = buf
    padded[-n:-n + 4] ^= 0xFF
    reg = np.zeros(1 << levels, np.uint32)
    for col in np.ascontiguousarray(padded.reshape(-1, _CHUNK).T):  # all chunks at once
        reg = _TABLE[(reg ^ col) & 0xFF] ^ (reg >> 8)
    for k in range(levels):  # combine neighbours: crc(a + b) = advance(crc(a), len(b)) ^ crc(b)
        reg = _advance(_shift_tables(k), reg[0::2]) ^ reg[1::2]
    return int(reg[0]) ^ 0xFFFFFFFF


def masked_crc32c(data) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# TFRecord framing


def is_tfrecord(path) -> bool:
    """A file named *.tfrecord, *.tfrecords or a shard like train.tfrecord-00000-of-00004 (not
    the index this module saves beside one, whose name holds the data file's)."""
    p = Path(path)
    return ".tfrecord" in p.name.lower() and not is_index_file(p) and p.is_file()


def _records(path: Path, verify_crc: bool) -> Iterator[tuple[int, int, bytes | None, str | None]]:
    """Yield (record_no, offset, data, problem). problem=None: good; data=None: the framing is
    broken here and the rest of the file is unreadable (last item); else data CRC mismatch."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        k = 0
        while True:
            offset = f.tell()
            head = f.read(12)
            if not head:
                return
            where = f"record {k} (byte {offset})"
            if len(head) < 12:
                yield k, offset, None, f"truncated file: {where} header has {len(head)} of 12 bytes"
                return
            length, length_crc = struct.unpack("<QI", head)
            if verify_crc and masked_crc32c(head[:8]) != length_crc:
                gzipped = offset == 0 and head[:2] == b"\x1f\x8b"
                gz = " (GZIP-compressed TFRecord: decompress it first)" if gzipped else ""
                yield k, offset, None, f"corrupt length CRC at {where}: not a TFRecord file or damaged{gz}"
                return
            if offset + 12 + length + 4 > size:
                yield k, offset, None, f"truncated file: {where} needs {length} data bytes, file ends first"
                return
            data = f.read(length)
            (data_crc,) = struct.unpack("<I", f.read(4))
            bad = verify_crc and masked_crc32c(data) != data_crc
            yield k, offset, data, (f"data CRC mismatch at {where} (corrupt record)" if bad else None)
            k += 1


def iter_tfrecord(path, *, verify_crc: bool = True) -> Iterator[bytes]:
    """The records of one uncompressed TFRecord file; DataError naming the file on corruption."""
    path = Path(path)
    for _k, _offset, data, problem in _records(path, verify_crc):
        if problem:
            raise DataError(problem, path=path)
        yield data


def write_tfrecord(path, records: Iterable[bytes]) -> Path:
    """Write records with TFRecord framing (readable by ``tf.data.TFRecordDataset``)."""
    path = Path(path)
    with open(path, "wb") as f:
        for data in records:
            head = struct.pack("<Q", len(data))
            f.write(head + struct.pack("<I", masked_crc32c(head)))
            f.write(data)
            f.write(struct.pack("<I", masked_crc32c(data)))
    return path


# ---------------------------------------------------------------------------
# tf.train.Example protobuf wire format (just what Example needs)


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): int for varints, memoryview for the rest."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + width], pos + width
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > n:
            raise ValueError("truncated protobuf field")
        yield key >> 3, wire, value


def _feature_map(data) -> dict[str, memoryview]:
    """Example bytes -> {key: serialized Feature} (values decoded lazily by _decode_feature)."""
    out = {}
    for num, wire, features in _fields(memoryview(data)):
        if num != 1 or wire != 2:  # Example.features
            continue
        for num2, wire2, entry in _fields(features):
            if num2 != 1 or wire2 != 2:  # Features.feature (map entry)
                continue
            key, value = None, memoryview(b"")
            for num3, wire3, x in _fields(entry):
                if num3 == 1 and wire3 == 2:
                    key = bytes(x).decode("utf-8")
                elif num3 == 2 and wire3 == 2:
                    value = x
            if key is None:
                raise ValueError("feature map entry without a key")
            out[key] = value
    return out


def _decode_feature(buf) -> list[bytes] | np.ndarray:
    for num, wire, lst in _fields(buf):
        if wire != 2:
            continue
        if num == 1:  # BytesList
            return [bytes(x) for n, w, x in _fields(lst) if n == 1 and w == 2]
        if num == 2:  # FloatList (packed or not)
            parts = [np.frombuffer(x, "<f4") for n, w, x in _fields(lst) if n == 1 and w in (2, 5)]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if num == 3:  # Int64List (packed or not), two's complement
            vals = []
            for n, w, x in _fields(lst):
                if n == 1 and w == 0:
                    vals.append(x)
                elif n == 1 and w == 2:
                    pos = 0
                    while pos < len(x):
                        v, pos = _varint(x, pos)
                        vals.append(v)
            return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in vals], np.int64)
    return []  # a Feature with no list set


def parse_example(data) -> dict[str, list[bytes] | np.ndarray]:
    """A serialized ``tf.train.Example`` -> {key: list of bytes | float32 array | int64 array}."""
    return {k: _decode_feature(v) for k, v in _feature_map(data).items()}


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _enc_len(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def encode_example(features: Mapping[str, object]) -> bytes:
    """{key: bytes | list of bytes | float array/list | int array/list} -> serialized Example."""
    entries = []
    for key, value in features.items():
        if isinstance(value, (bytes, bytearray)):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(v, (bytes, bytearray)) for v in value):
            feature = _enc_len(1, b"".join(_enc_len(1, bytes(v)) for v in value))
        else:
            arr = np.asarray(value).ravel()
            if arr.dtype.kind == "f" or arr.size == 0:
                feature = _enc_len(2, _enc_len(1, arr.astype("<f4").tobytes()))
            elif arr.dtype.kind in "iub":
                packed = b"".join(_enc_varint(int(v) & (2**64 - 1)) for v in arr)
                feature = _enc_len(3, _enc_len(1, packed))
            else:
                raise TypeError(f"feature {key!r}: cannot encode {arr.dtype}")
        entries.append(_enc_len(1, _enc_len(1, key.encode("utf-8")) + _enc_len(2, feature)))
    return _enc_len(1, b"".join(entries))


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
        for k, offset, data, problem in _records(path, verify_crc):
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
        feats = _feature_map(data)
        n = 0
        while (key := f"{n}/{self.image_key}/encoded") in feats:
            value = _decode_feature(feats[key])
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
        return _feature_map(data)

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
        frames = [self._frame(_decode_feature(feats[f"{t}/{self.image_key}/encoded"])[0], self._ids[i])
                  for t in range(start, start + length)]
        return resize_frames(np.stack(frames), self.size)

    def read_feature(self, i: int, name: str) -> np.ndarray:
        """Per-step feature ``'{t}/{name}'`` of video i stacked over t, e.g. 'action' -> (T, 4)."""
        feats = self._features(i)
        return np.stack([np.asarray(_decode_feature(feats[f"{t}/{name}"])) for t in range(self._lengths[i])])
