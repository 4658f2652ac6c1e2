"""A persisted index of a TFRecord file's records, so that only the first process ever scans it.

Indexing BAIR's TFRecords (:class:`vpe_lib.data.bair.BairTFRecordSource`) reads every byte of the
~30 GB dataset once: CRC32C of every record, every Example parsed, every frame's size checked. That
is minutes, and it used to happen in every process that opened the data (each notebook, each
torchrun rank). The scan's outcome, one entry per record, is now saved beside the file::

    .traj_0_to_255.tfrecords.vpe-index.json     (hidden, in the data folder)

or, when that folder is read-only, under ``$VPE_CACHE_DIR`` (default ``~/.cache/vpe``) in
``tfrecord-index/``. An index is used only if it was made for the same file (its size and
modification time in ns) and the same reading settings (CRC checks on or off, the image key, the
raw image size): a changed or replaced file is scanned again, never trusted.

Each entry is ``{"k", "offset", "length", "frames"}`` for a good record (offset of its data,
after the 12-byte header), ``{"k", "problem"}`` for a record skipped on its own (CRC mismatch,
bad Example) and ``{"k", "problem", "fatal": true}`` where the framing breaks and the rest of the
file is unreadable. The caller replays the entries, so skips and warnings are the same as a scan's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vpe_lib.atomic import atomic_write_text

INDEX_SUFFIX = ".vpe-index.json"
INDEX_VERSION = 1


def cache_root() -> Path:
    """Where indexes of files in read-only folders go: $VPE_CACHE_DIR, else ~/.cache/vpe."""
    return Path(os.environ.get("VPE_CACHE_DIR") or Path.home() / ".cache" / "vpe")


def is_index_file(path: str | os.PathLike) -> bool:
    """An index (or its temp file while being written): never a data file, whatever its name holds."""
    return INDEX_SUFFIX in Path(path).name


def sidecar_path(path: Path) -> Path:
    return path.parent / f".{path.name}{INDEX_SUFFIX}"


def cached_path(path: Path) -> Path:
    """The index's place in the cache folder: named by the file's absolute path (two datasets'
    train.tfrecords must not share one), with the file name kept for a reader."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_root() / "tfrecord-index" / f"{digest}-{path.name}{INDEX_SUFFIX}"


def file_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _header(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    # JSON round trip so tuples (image_size) compare equal to the lists read back
    return json.loads(json.dumps({"version": INDEX_VERSION, "file": path.name, **file_stamp(path),
                                  "settings": settings}))


def load_index(path: str | os.PathLike, settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The saved entries of `path` for these reading `settings`, or None (no index, another
    version of the file, other settings, or an unreadable index: the caller scans)."""
    path = Path(path)
    want = _header(path, settings)
    for where in (sidecar_path(path), cached_path(path)):
        try:
            saved = json.loads(where.read_text())
        except (OSError, ValueError):
            continue  # absent or torn: look further, then scan
        if isinstance(saved, dict) and {k: saved.get(k) for k in want} == want and isinstance(saved.get("records"), list):
            return saved["records"]
    return None


def _writable(folder: Path) -> bool:
    """We may write here, and the folder is not marked read-only: as root os.access says yes to
    any folder, but a folder without write bits (a shared, read-only dataset) is left alone."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def save_index(path: str | os.PathLike, settings: dict[str, Any], records: list[dict[str, Any]]) -> Path | None:
    """Write the index beside the file, else in the cache folder; None if neither is writable
    (the data still reads; the next process scans again)."""
    path = Path(path)
    text = json.dumps({**_header(path, settings), "records": records}, separators=(",", ":")) + "\n"
    for where in (sidecar_path(path), cached_path(path)):
        if where.parent.exists() and not _writable(where.parent):
            continue  # a read-only data folder: its index goes to the cache
        try:
            return atomic_write_text(text, where)
        except OSError:
            continue
    return None


__all__ = ["INDEX_SUFFIX", "cache_root", "cached_path", "is_index_file", "load_index", "save_index", "sidecar_path"]
