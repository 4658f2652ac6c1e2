"""`open_clip_source`: the clip source for a path, chosen by what it holds. Above both the generic
sources (`clips.py`) and the BAIR readers (`bair.py`, which build on `clips.IndexedSource`), so neither
imports the other back."""

from __future__ import annotations

import glob
from pathlib import Path

from vpe_lib.data.bair import BairHdf5Source, BairTFRecordSource, is_tfrecord
from vpe_lib.data.clips import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ClipSource, FrameFolderSource, VideoFolderSource
from vpe_lib.data.errors import DataError
from vpe_lib.data.frames import natural_key


def _scan(root: Path, depth: int = 2):
    """Files under ``root`` down to ``depth`` levels (hidden entries skipped)."""
    stack = [(root, 0)]
    while stack:
        d, k = stack.pop()
        for p in d.iterdir():
            if p.name.startswith("."):
                continue
            if p.is_file():
                yield p
            elif p.is_dir() and k + 1 < depth:
                stack.append((p, k + 1))


def open_clip_source(spec, **kw) -> ClipSource:
    """A clip source for ``spec``, chosen by what it holds; ``kw`` go to the source.

    ``.h5``/``.hdf5`` -> :class:`BairHdf5Source`; ``.tfrecord(s)`` file, glob or
    a folder holding them -> :class:`BairTFRecordSource`; a video file or a
    folder with video files -> :class:`VideoFolderSource`; a folder of
    sub-folders of images -> :class:`FrameFolderSource` (``pattern`` guessed
    from the images found unless given).
    """
    text = str(spec)
    path = Path(spec)
    if not path.exists() and any(c in text for c in "*?["):
        matches = sorted((Path(m) for m in glob.glob(text)), key=lambda p: natural_key(str(p)))
        if matches and all(is_tfrecord(m) for m in matches):
            return BairTFRecordSource(matches, **kw)
        raise DataError(f"glob matched {len(matches)} paths, expected .tfrecord(s) files", path=text)
    if not path.exists():
        raise DataError("clip source not found", path=path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            return BairHdf5Source(path, **kw)
        if is_tfrecord(path):
            return BairTFRecordSource(path, **kw)
        if suffix in VIDEO_EXTENSIONS:
            return VideoFolderSource(path, **kw)
    else:
        files = list(_scan(path))
        if any(is_tfrecord(p) for p in files):
            return BairTFRecordSource(path, **kw)
        exts = kw.get("extensions", VIDEO_EXTENSIONS)
        if any(p.suffix.lower() in exts for p in files):
            return VideoFolderSource(path, **kw)
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS and p.parent != path]
        if images:
            if "pattern" not in kw:
                common = max(IMAGE_EXTENSIONS, key=lambda e: sum(p.suffix.lower() == e for p in images))
                kw["pattern"] = "*" + next(p.suffix for p in images if p.suffix.lower() == common)
            return FrameFolderSource(path, **kw)
    raise DataError("cannot tell what clip source this is; looked for a .h5/.hdf5 file "
                    "(VideoGPT BAIR), .tfrecord(s) files (BAIR TFRecords), video files "
                    f"({', '.join(VIDEO_EXTENSIONS)}) or sub-folders of images "
                    f"({', '.join(IMAGE_EXTENSIONS)})", path=path)
