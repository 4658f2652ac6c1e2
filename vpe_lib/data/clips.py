"""Clip sources: stream training clips of real video for tokenizer pretraining.

Every source answers the same small protocol (:class:`ClipSource`): how many
usable videos, how many frames each, and ``read_clip(i, start, length)`` ->
uint8 ``(length, H, W, 3)``. :class:`~vpe_lib.data.clip_batches.RealClipBatches` turns any source into
the sampler contract of :class:`vpe_lib.data.samplers.ClipBatches`
(``batches(step)`` -> ``b c t h w`` float32 in [-1, 1], deterministic per step).

Bad inputs are found when a source is *indexed* (constructed), never deep in a
training worker: a video that is too short (``< min_frames``), corrupt,
truncated or unreadable is either skipped -- recorded in ``source.skipped`` as
``(path, reason)`` and summarised in one ``warnings.warn`` -- with
``on_error="skip"`` (default), or raises :class:`DataError` naming the file
with ``on_error="raise"``. A source with no usable video raises DataError
naming its folder/file.

Sources: :class:`FrameFolderSource`, :class:`VideoFolderSource` (here),
:class:`~vpe_lib.data.bair.BairHdf5Source` and
:class:`~vpe_lib.data.bair.BairTFRecordSource` (in ``bair.py``, on top of this module's
``IndexedSource``); :func:`vpe_lib.data.open_clips.open_clip_source` picks one from what a path holds.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from .errors import DataError
from .frames import natural_key, read_rgb, resize_frames
from .video import read_video

__all__ = ["ClipSource", "SkippedVideosWarning", "FrameFolderSource", "VideoFolderSource",
           "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS"]

VIDEO_EXTENSIONS = (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@runtime_checkable
class ClipSource(Protocol):
    name: str
    skipped: list[tuple[str, str]]

    def __len__(self) -> int: ...
    def num_frames(self, i: int) -> int: ...
    def read_clip(self, i: int, start: int, length: int) -> np.ndarray: ...


class SkippedVideosWarning(UserWarning):
    """Some videos of a source were skipped at indexing time (see ``source.skipped``)."""


def _reason(e: Exception, path) -> str:
    """An exception as a skip reason, without repeating the path DataError already prefixes."""
    msg = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


class IndexedSource:
    """Shared bookkeeping: usable videos, skips, the summary warning, range checks."""

    kind = "source"

    def __init__(self, root, *, min_frames: int = 1, on_error: str = "skip"):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.root = Path(root)
        self.name = f"{self.kind}:{self.root.name}"
        self.min_frames, self.on_error = int(min_frames), on_error
        self.skipped: list[tuple[str, str]] = []
        self._ids: list[str] = []      # path (or file#record) of each usable video
        self._lengths: list[int] = []  # its number of frames

    # -- indexing helpers
    def _skip(self, path, reason: str, exc: Exception | None = None) -> None:
        if self.on_error == "raise":
            raise DataError(reason, path=path) from exc
        self.skipped.append((str(path), reason))

    def _too_short(self, path, n_frames: int) -> bool:
        """Skip (and say so) a video shorter than ``min_frames``."""
        if n_frames < self.min_frames:
            self._skip(path, f"only {n_frames} frames (< min_frames={self.min_frames})")
            return True
        return False

    def _add(self, path, n_frames: int) -> bool:
        """Register a video, or skip it when shorter than ``min_frames``."""
        if self._too_short(path, n_frames):
            return False
        self._ids.append(str(path))
        self._lengths.append(int(n_frames))
        return True

    def _finish(self, looked_for: str) -> None:
        total = len(self._ids) + len(self.skipped)
        if self.skipped:
            k = len(self.skipped)
            root = f"{self.root}{os.sep}"
            shown = "; ".join(f"{p[len(root):] if p.startswith(root) else Path(p).name}: {r}"
                              for p, r in self.skipped[:5])
            more = f"; ... {k - 5} more" if k > 5 else ""
            warnings.warn(f"skipped {k} of {total} videos in {self.root}: {shown}{more} "
                          f"(see .skipped)", SkippedVideosWarning, stacklevel=3)
        if not self._ids:
            what = f"none of {total} candidates is usable" if total else f"found no {looked_for}"
            raise DataError(f"no usable video: {what}", path=self.root)

    # -- protocol
    def __len__(self) -> int:
        return len(self._ids)

    def num_frames(self, i: int) -> int:
        return self._lengths[i]

    def video_id(self, i: int) -> str:
        return self._ids[i]

    def _check(self, i: int, start: int, length: int) -> None:
        if not 0 <= i < len(self._ids):
            raise IndexError(f"video {i} out of range for {len(self._ids)} videos of {self.name}")
        n = self._lengths[i]
        if length < 1 or start < 0 or start + length > n:
            raise IndexError(f"clip [{start}, {start + length}) out of range for {n} frames "
                             f"of {self._ids[i]}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, videos={len(self)}, "
                f"skipped={len(self.skipped)})")


# ---------------------------------------------------------------------------
# folders of frame images


def _crop_box(crop_border) -> tuple[int, int, int, int]:
    c = (crop_border,) * 4 if isinstance(crop_border, int) else tuple(int(v) for v in crop_border)
    if len(c) == 2:
        c = (c[0], c[1], 0, 0)
    if len(c) != 4 or min(c) < 0:
        raise ValueError(f"crop_border must be an int, (top, left) or (top, left, bottom, right) "
                         f">= 0, got {crop_border!r}")
    return c


class FrameFolderSource(IndexedSource):
    """Each sub-folder of ``root`` is one video of frame images, naturally sorted.

    ``crop_border``: pixels removed per side -- an int (all four), ``(top, left)``
    or ``(top, left, bottom, right)``; the BAIR samples' black figure border is
    ``crop_border=(1, 1)`` (= ``[1:, 1:]``, 64x64 -> 63x63). ``size=(H, W)``
    resizes after the crop. If ``root`` holds images itself and no sub-folder
    does, ``root`` is the one video. ``verify="decode"`` (default) decodes
    every frame once at indexing so corrupt files are skipped up front (nothing
    is kept in memory); ``verify="header"`` only reads image headers (faster
    for big datasets; a truncated image then raises DataError at read time).
    """

    kind = "frames"

    def __init__(self, root, pattern: str = "*.png", *, crop_border=0, size=None,
                 min_frames: int = 1, on_error: str = "skip", verify: str = "decode"):
        super().__init__(root, min_frames=min_frames, on_error=on_error)
        if verify not in ("decode", "header"):
            raise ValueError(f"verify must be 'decode' or 'header', got {verify!r}")
        if not self.root.is_dir():
            raise DataError("frame root folder not found", path=self.root)
        self.pattern, self.crop, self.size = pattern, _crop_box(crop_border), size
        self._files: list[list[Path]] = []

        def frames_of(d: Path) -> list[Path]:
            return sorted((p for p in d.glob(pattern) if p.is_file()), key=lambda p: natural_key(p.name))

        subdirs = sorted((d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                         key=lambda d: natural_key(d.name))
        with_frames = {d: frames_of(d) for d in subdirs}
        if not any(with_frames.values()) and frames_of(self.root):
            with_frames = {self.root: frames_of(self.root)}
        for d, files in with_frames.items():
            if not files:
                self._skip(d, f"no frame matching {pattern!r}")
                continue
            if self._too_short(d, len(files)):
                continue
            bad = self._verify(files, verify == "decode")
            if bad is not None:
                self._skip(*bad)
            elif self._add(d, len(files)):
                self._files.append(files)
        self._finish(f"sub-folder with frames matching {pattern!r}")

    def _verify(self, files: list[Path], decode: bool) -> tuple[Path, str, Exception] | None:
        """(file, reason, exc) of the first bad frame, or None when all are readable and alike."""
        first = None
        for f in files:
            try:
                if decode:
                    shape = read_rgb(f).shape[:2]
                else:
                    with Image.open(f) as im:
                        shape = (im.height, im.width)
            except Exception as e:  # noqa: BLE001 -- any unreadable frame becomes a reported skip
                return f, _reason(e, f) if decode else f"cannot read image header: {e}", e
            if first is None:
                first = shape
                t, l, b, r = self.crop
                if shape[0] - t - b < 1 or shape[1] - l - r < 1:
                    return f, f"crop_border {self.crop} leaves nothing of a {shape} frame", None
            elif shape != first:
                return f, f"frame size {shape} differs from {files[0].name} {first}", None
        return None

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        self._check(i, start, length)
        t, l, b, r = self.crop
        frames = []
        for f in self._files[i][start:start + length]:
            rgb = read_rgb(f)
            frames.append(rgb[t:rgb.shape[0] - b, l:rgb.shape[1] - r])
        return resize_frames(np.stack(frames), self.size)


# ---------------------------------------------------------------------------
# folders of video files


class VideoFolderSource(IndexedSource):
    """Every video file under ``root`` (recursively; or ``root`` itself if a file), decoded by PyAV.

    ``size=(H, W)`` resizes at decode (FFmpeg bilinear), ``stride`` keeps every
    stride-th frame, ``max_frames`` caps the frames kept per video.

    Decoding choice: every video is decoded once at indexing -- the only way
    to know its true frame count and to catch truncated/corrupt files before
    training -- and the decoded arrays are kept in an LRU cache bounded by
    ``cache_bytes`` (default 256 MiB). A small dataset therefore stays fully
    in memory and is never decoded again; a large one re-decodes evicted videos
    on demand (only up to the clip's last frame when a video alone exceeds the
    budget). Bound memory further with ``size``/``max_frames``.
    """

    kind = "videos"

    def __init__(self, root, extensions: Sequence[str] = VIDEO_EXTENSIONS, *, size=None,
                 stride: int = 1, max_frames: int | None = None, min_frames: int = 1,
                 on_error: str = "skip", cache_bytes: int = 256 * 2**20):
        super().__init__(root, min_frames=min_frames, on_error=on_error)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.size, self.stride, self.max_frames = size, stride, max_frames
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        if self.root.is_file():
            files = [self.root]
        elif self.root.is_dir():
            files = sorted((p for p in self.root.rglob("*") if p.is_file()
                            and p.suffix.lower() in self.extensions
                            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)),
                           key=lambda p: natural_key(str(p.relative_to(self.root))))
        else:
            raise DataError("video file or folder not found", path=self.root)
        self._paths: list[Path] = []
        self._frame_bytes: list[int] = []
        for p in files:
            try:
                video = self._decode(p)
            except Exception as e:  # noqa: BLE001 -- corrupt/truncated/not a video: a reported skip
                self._skip(p, _reason(e, p), e)
                continue
            if self._add(p, len(video)):
                self._paths.append(p)
                self._frame_bytes.append(video[0].nbytes)
                self._put(len(self._paths) - 1, video)
        self._finish(f"video file ({', '.join(self.extensions)})")

    def path(self, i: int) -> Path:
        """The file of video i (its own codec stream: what MGM reads motion vectors from)."""
        return self._paths[i]

    def _decode(self, path: Path, max_frames: int | None = None) -> np.ndarray:
        caps = [m for m in (self.max_frames, max_frames) if m is not None]
        return read_video(path, size=self.size, stride=self.stride,
                          max_frames=min(caps) if caps else None)

    def _put(self, i: int, video: np.ndarray) -> None:
        if video.nbytes > self.cache_bytes:
            return
        self._cache[i] = video
        self._cached_bytes += video.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        self._check(i, start, length)
        video = self._cache.get(i)
        if video is not None:
            self._cache.move_to_end(i)
        else:
            # fits the budget: decode whole and cache; else decode only up to the clip's end
            fits = self._lengths[i] * self._frame_bytes[i] <= self.cache_bytes
            video = self._decode(self._paths[i], None if fits else start + length)
            if fits:
                self._put(i, video)
        clip = video[start:start + length]
        if len(clip) != length:
            raise DataError(f"decoded {len(video)} frames, fewer than the {self._lengths[i]} "
                            f"found at indexing (file changed?)", path=self._paths[i])
        return clip.copy()  # never hand out a view of the cache


# ---------------------------------------------------------------------------
# decoded videos in memory


class InMemoryClipSource:
    """A :class:`~vpe_lib.data.clips.ClipSource` over decoded videos held in memory.

    ``videos``: name -> uint8 (T, H, W, 3), all the same H, W. ``read_clip`` is a
    slice (no decoding during training).
    """

    kind = "memory"

    def __init__(self, videos: Mapping[str, np.ndarray], *, name: str, root=None,
                 skipped: Sequence[tuple[str, str]] = ()):
        self.name = name
        self.root = Path(root) if root is not None else None
        self.skipped: list[tuple[str, str]] = list(skipped)
        self._ids = list(videos)
        self._videos = [np.ascontiguousarray(videos[k]) for k in self._ids]
        if not self._videos:
            raise DataError(f"no usable video for {name}", path=root)
        shapes = {v.shape[1:] for v in self._videos}
        if len(shapes) != 1 or any(v.ndim != 4 or v.dtype != np.uint8 for v in self._videos):
            raise ValueError(f"videos must be uint8 (T, H, W, 3) of one size, got {sorted(shapes)}")

    def __len__(self) -> int:
        return len(self._videos)

    def num_frames(self, i: int) -> int:
        return len(self._videos[i])

    def video_id(self, i: int) -> str:
        return self._ids[i]

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        if not 0 <= i < len(self._videos):
            raise IndexError(f"video {i} out of range for {len(self._videos)} videos of {self.name}")
        n = len(self._videos[i])
        if length < 1 or start < 0 or start + length > n:
            raise IndexError(f"clip [{start}, {start + length}) out of range for {n} frames of {self._ids[i]}")
        return self._videos[i][start:start + length].copy()

    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._videos)

    def __repr__(self) -> str:
        return f"InMemoryClipSource({self.name!r}, videos={len(self)}, skipped={len(self.skipped)})"


# ---------------------------------------------------------------------------
# pick a source from a path
