"""Atomic file writes: a reader (or a crash) sees the old file or the complete new one.

Write to a temp file in the same directory, fsync, then `os.replace`; if writing
raises, the temp file is removed and an existing file is untouched. Used for
checkpoints, dataset shards, manifests and metrics alike.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)
