"""Motion fields on the token grid, for motion-guided masking (MGM).

Two sources, never mixed silently:

* ``codec``: the motion vectors H.264 already stored in the compressed video
  (see :mod:`vpe_lib.data.video` for the conventions). Reading them is nearly
  free once a clip is encoded; raw frames (PushWorld) are encoded first with
  :func:`export_mp4` (``bf=0, refs=1``, so vectors are per-frame velocities).
* ``block_matching``: an explicit, honest fallback (exhaustive SAD search)
  for videos without vectors (HEVC/VP9/AV1 not transcoded, all-I-frame clips).

Every field here is (T, H, W, 2) float32 of (vx, vy) in pixels per frame: the
velocity of the content *arriving* at a pixel of frame t from frame t-1
(frame 0 has none). Each frame's median vector is subtracted to cancel a
camera pan (DESIGN.md: a pan otherwise dominates the motion energy).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from os import PathLike
from pathlib import Path
from typing import Callable

import numpy as np

from vpe_lib.atomic import atomic_open

from .errors import DataError
from .video import block_velocities, export_mp4, iter_motion_vectors, read_video

__all__ = [
    "MOTION_SOURCES", "MOTION_VERSION", "codec_motion", "codec_motion_from_file", "fill_missing",
    "block_matching_motion", "token_motion", "token_flow", "true_moving_tokens", "moving_tokens",
    "motion_for_masking", "MotionCache",
]

MOTION_SOURCES = ("codec", "block_matching")
# Bump when anything changes what a cached token-motion field contains.
MOTION_VERSION = 1
_CELL = 4  # H.264's smallest partition is 4x4: painting at 4-px cells loses nothing


# ---------------------------------------------------------------------------
# codec motion vectors


def _paint_blocks(vectors: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Block vectors -> per-4x4-cell mean velocity (gh, gw, 2) and coverage count (gh, gw).

    Vectorised (no Python loop over blocks): each block is expanded into the
    cells it covers and accumulated with ``bincount``, so a cell covered twice
    (a bi-predicted block exports one vector per reference) gets the mean.
    """
    gh, gw = -(-height // _CELL), -(-width // _CELL)
    vx, vy = block_velocities(vectors)
    w = vectors["w"].astype(np.int64)  # uint8 in PyAV: 16 * 16 would overflow
    h = vectors["h"].astype(np.int64)
    x0 = vectors["dst_x"].astype(np.int64) - w // 2  # dst is the block centre
    y0 = vectors["dst_y"].astype(np.int64) - h // 2
    cx0, cy0 = np.floor_divide(x0, _CELL), np.floor_divide(y0, _CELL)
    nw = -(-(x0 + w) // _CELL) - cx0
    nh = -(-(y0 + h) // _CELL) - cy0
    n = np.maximum(nw * nh, 0)
    bid = np.repeat(np.arange(len(n)), n)
    local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    cy = cy0[bid] + local // nw[bid]
    cx = cx0[bid] + local % nw[bid]
    inside = (cy >= 0) & (cy < gh) & (cx >= 0) & (cx < gw)
    flat, bid = cy[inside] * gw + cx[inside], bid[inside]
    count = np.bincount(flat, minlength=gh * gw).astype(np.float32)
    sx = np.bincount(flat, weights=vx[bid], minlength=gh * gw)
    sy = np.bincount(flat, weights=vy[bid], minlength=gh * gw)
    denom = np.maximum(count, 1.0)
    cells = np.stack([sx / denom, sy / denom], axis=-1).astype(np.float32)
    return cells.reshape(gh, gw, 2), count.reshape(gh, gw)


def codec_motion_from_file(path, *, subtract_median: bool = True, max_frames: int | None = None,
                           size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codec vectors of an mp4 as a per-pixel field (T, H, W, 2) and ``valid`` (T, H, W).

    ``valid`` is False where the codec stored no vector: I-frames, intra blocks
    and uncovered cells. The median subtracted per frame is taken over valid
    *pixels* (area-weighted), not over blocks as ``read_motion_vectors`` does:
    x264 splits a moving object into many small partitions, so a per-block
    median would over-weight the object against the large static blocks.
    Magnitudes are per-frame velocities only for ``bf=0, refs=1`` encodes
    (with B-frames or several references only the direction is right).
    ``max_frames`` stops decoding after that many frames. ``size=(H, W)``: the field
    resampled to frames decoded at that size (bilinear over the 4x4 cells, vectors
    scaled by H / height and W / width; ``valid`` nearest), never built at full
    resolution (a 1080p field of 82 frames would take 1.4 GB).
    """
    cells, covered, height, width = [], [], 0, 0
    for _i, _pt, height, width, vec in iter_motion_vectors(path, max_frames=max_frames):
        gh, gw = -(-height // _CELL), -(-width // _CELL)
        if vec is None or len(vec) == 0:
            c, count = np.zeros((gh, gw, 2), np.float32), np.zeros((gh, gw), np.float32)
        else:
            c, count = _paint_blocks(vec, height, width)
        ok = count > 0
        if subtract_median and ok.any():
            c = np.where(ok[..., None], c - np.median(c[ok], axis=0), 0.0)
        cells.append(c)
        covered.append(ok)
    if size is not None:
        return _resample_cells(cells, covered, height, width, size)
    # Work on 4x4 cells, then upsample into one preallocated output: at 1080p,
    # per-frame per-pixel copies (repeat + stack) cost more than decoding itself.
    T, (gh, gw) = len(cells), cells[0].shape[:2]
    field = np.empty((T, gh * _CELL, gw * _CELL, 2), np.float32)
    valid = np.empty((T, gh * _CELL, gw * _CELL), bool)
    for t in range(T):
        field[t].reshape(gh, _CELL, gw * _CELL, 2)[:] = cells[t].repeat(_CELL, 1)[:, None]
        valid[t].reshape(gh, _CELL, gw * _CELL)[:] = covered[t].repeat(_CELL, 1)[:, None]
    field, valid = field[:, :height, :width], valid[:, :height, :width]
    return field, valid


def _resample_cells(cells, covered, height: int, width: int, size) -> tuple[np.ndarray, np.ndarray]:
    """4x4-cell fields of a (height, width) video -> a per-pixel field at ``size`` (see
    codec_motion_from_file)."""
    from PIL import Image

    h, w = (int(v) for v in size)
    gh, gw = cells[0].shape[:2]
    # the cells cover a little more than the frame (padded to 4 px): crop in cell units before resizing
    box = (0.0, 0.0, width / _CELL, height / _CELL)
    scale = np.array([w / width, h / height], np.float32)  # (vx, vy) in the resized frame's pixels
    field = np.empty((len(cells), h, w, 2), np.float32)
    valid = np.empty((len(cells), h, w), bool)
    for t, (c, ok) in enumerate(zip(cells, covered)):
        for k in range(2):
            field[t, ..., k] = np.asarray(Image.fromarray(np.ascontiguousarray(c[..., k], np.float32), "F")
                                          .resize((w, h), Image.BILINEAR, box=box)) * scale[k]
        valid[t] = np.asarray(Image.fromarray(ok.astype(np.uint8) * 255).resize((w, h), Image.NEAREST, box=box)) > 0
    return field, valid


def codec_motion(frames: np.ndarray, *, workdir=None, subtract_median: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Codec motion of raw frames (T, H, W, 3) uint8: encode a temporary H.264 mp4, read it back.

    The mp4 goes to a temporary folder (inside ``workdir`` if given) that is
    removed afterwards. Returns ``(field, valid)`` as :func:`codec_motion_from_file`,
    cropped to (H, W) (export_mp4 pads odd sizes by one pixel).
    """
    frames = np.asarray(frames)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="vpe-mv-") as tmp:
        path = export_mp4(frames, Path(tmp) / "clip.mp4")
        field, valid = codec_motion_from_file(path, subtract_median=subtract_median)
    T, H, W = frames.shape[:3]
    if len(field) != T:
        raise DataError(f"decoded {len(field)} frames from {T} encoded", field="frames")
    return field[:, :H, :W], valid[:, :H, :W]


def fill_missing(field: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill cells without a vector (returns a new array; ``field`` is untouched).

    * A frame with some valid cells (intra blocks in a P-frame): each invalid
      pixel takes the vector of its nearest valid pixel (Euclidean distance
      transform). Crisp and parameter-free; intra blocks usually sit on or next
      to the moving content, so the nearest inter block is the best guess.
    * A frame with none (I-frames, frame 0 in particular): the mean of the
      nearest previous and next frames that have vectors (a copy of the one
      side when the other is missing; zeros if the clip has no vectors at all).
    """
    from scipy import ndimage  # local: keep `import vpe_lib.data` cheap

    field = np.array(field, np.float32, copy=True)
    valid = np.asarray(valid, bool)
    if field.shape[:3] != valid.shape or field.shape[-1] != 2:
        raise ValueError(f"field (T, H, W, 2) and valid (T, H, W) disagree: "
                         f"{field.shape} vs {valid.shape}")
    has = valid.reshape(len(valid), -1).any(1)
    for t in np.flatnonzero(has & ~valid.reshape(len(valid), -1).all(1)):
        idx = ndimage.distance_transform_edt(~valid[t], return_distances=False, return_indices=True)
        field[t] = field[t][idx[0], idx[1]]
    good = np.flatnonzero(has)
    for t in np.flatnonzero(~has):
        prev, nxt = good[good < t], good[good > t]
        sides = ([field[prev[-1]]] if len(prev) else []) + ([field[nxt[0]]] if len(nxt) else [])
        field[t] = np.mean(sides, axis=0) if sides else 0.0
    return field


# ---------------------------------------------------------------------------
# block-matching fallback


def block_matching_motion(frames: np.ndarray, *, block: int = 8, search: int = 4,
                          subtract_median: bool = True) -> np.ndarray:
    """Exhaustive-search block matching on grayscale: (T, H, W, 2) float32, frame 0 zero.

    For each ``block`` x ``block`` block of frame t, the integer displacement
    d in [-search, search]^2 minimising the sum of absolute differences between
    the block and frame t-1 shifted by d is its velocity (content arriving, as
    the codec's convention). Vectorised over blocks: one full-frame difference
    per candidate d. Candidates are tried smallest |d| first so a flat block
    (all SADs equal) gets zero motion. Integer-pixel only, no sub-pel refinement:
    it is a fallback, costing (2*search+1)^2 frame differences per frame.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    if block < 1 or search < 0:
        raise ValueError(f"need block >= 1 and search >= 0, got block={block}, search={search}")
    T, H, W, _ = frames.shape
    gray = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    bh, bw = -(-H // block), -(-W // block)
    gray = np.pad(gray, ((0, 0), (0, bh * block - H), (0, bw * block - W)), mode="edge")
    cands = sorted(((dy, dx) for dy in range(-search, search + 1)
                    for dx in range(-search, search + 1)), key=lambda d: (d[0] ** 2 + d[1] ** 2))
    out = np.zeros((T, bh, bw, 2), np.float32)
    s = search
    for t in range(1, T):
        prev = np.pad(gray[t - 1], s, mode="edge")
        cur = gray[t]
        sad = np.empty((len(cands), bh, bw), np.float32)
        for k, (dy, dx) in enumerate(cands):
            # frame t at x matches frame t-1 at x - d
            shifted = prev[s - dy:s - dy + cur.shape[0], s - dx:s - dx + cur.shape[1]]
            sad[k] = np.abs(cur - shifted).reshape(bh, block, bw, block).sum((1, 3))
        best = np.asarray(cands, np.float32)[sad.argmin(0)]  # (bh, bw, [dy, dx])
        v = best[..., ::-1]  # -> (vx, vy)
        if subtract_median:
            v = v - np.median(v.reshape(-1, 2), axis=0)
        out[t] = v
    return out.repeat(block, 1).repeat(block, 2)[:, :H, :W]


# ---------------------------------------------------------------------------
# pooling onto the token grid, ground truth


def _cells(shape: tuple[int, int, int], grid) -> tuple[int, int, int]:
    """(tf, sh, sw): pixels per token along T, H, W; raises unless the grid divides the clip."""
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be (t, h, w) positive ints, got {grid!r}")
    factors = tuple(s // int(g) for s, g in zip(shape, grid))
    if any(int(g) * f != s for s, g, f in zip(shape, grid, factors)):
        raise ValueError(f"token grid {tuple(grid)} does not divide the clip (T, H, W)={shape}")
    return factors


def _pool(x: np.ndarray, grid) -> np.ndarray:
    """Mean of x (T, H, W, ...) over each token's (tf, sh, sw) cell."""
    tf, sh, sw = _cells(x.shape[:3], grid)
    t, h, w = (int(g) for g in grid)
    return x.reshape(t, tf, h, sh, w, sw, *x.shape[3:]).mean(axis=(1, 3, 5))


def token_flow(field: np.ndarray, grid) -> np.ndarray:
    """Mean (vx, vy) per token: (t, h, w, 2) float32."""
    return _pool(np.asarray(field, np.float32), grid).astype(np.float32)


def token_motion(field: np.ndarray, grid) -> np.ndarray:
    """Mean speed |v| per token: (t, h, w) float32 (mean of magnitudes, so opposite
    motions inside one token do not cancel)."""
    field = np.asarray(field, np.float32)
    return _pool(np.hypot(field[..., 0], field[..., 1]), grid).astype(np.float32)


def remove_camera_motion(flow: np.ndarray) -> np.ndarray:
    """Ground-truth flow (T, H, W, 2) minus each frame's median vector (the camera, e.g.
    PushWorld's ``cam_flow``), as float32."""
    flow = np.asarray(flow, np.float32)
    return flow - np.median(flow.reshape(len(flow), -1, 2), axis=1)[:, None, None, :]


def true_moving_tokens(flow: np.ndarray, grid, *, threshold: float = 0.5,
                       min_fraction: float = 0.25) -> np.ndarray:
    """Tokens that truly move, from ground-truth per-pixel flow (T, H, W, 2): bool (t, h, w).

    Each frame's median flow (the camera, e.g. PushWorld's ``cam_flow``) is
    subtracted; a pixel moves if its speed exceeds ``threshold`` px/frame, and
    a token moves if at least ``min_fraction`` of its pixels do. Works for
    forward (PushWorld: t -> t+1, last frame 0) and backward flow alike, since
    only speed matters; note PushWorld's last frame then counts as static.
    """
    flow = remove_camera_motion(flow)
    return moving_tokens(np.hypot(flow[..., 0], flow[..., 1]) > threshold, grid, min_fraction=min_fraction)


def moving_tokens(moving: np.ndarray, grid, *, min_fraction: float = 0.25) -> np.ndarray:
    """Tokens (t, h, w) bool of per-pixel motion masks (T, H, W), from whatever measure (flow, or a
    frame-difference proxy where no flow exists): a token moves if at least ``min_fraction`` of its
    pixels do."""
    return _pool(np.asarray(moving, np.float32), grid) >= min_fraction


# ---------------------------------------------------------------------------
# entry point for masking, cache


def motion_for_masking(frames, grid, *, source: str = "codec",
                       path_for_errors: str | PathLike | None = None) -> np.ndarray:
    """Token motion magnitude (t, h, w) float32 for MGM, from ``frames`` (T, H, W, 3)
    uint8 or a video file path.

    ``source="codec"`` on a video without any motion vector raises
    :class:`DataError` naming the file: it never falls back to block matching
    silently, since the two sources give different masks.
    """
    if source not in MOTION_SOURCES:
        raise ValueError(f"unknown motion source {source!r}; choose one of {MOTION_SOURCES}")
    path = Path(frames) if isinstance(frames, (str, PathLike)) else None
    if source == "block_matching":
        arr = read_video(path) if path is not None else frames
        return token_motion(block_matching_motion(arr), grid)
    field, valid = (codec_motion_from_file(path) if path is not None else codec_motion(frames))
    if not valid.any():
        raise DataError(
            "no codec motion vectors in this video (all I-frames, a single frame, or a codec "
            "that exports none: only H.264 and MPEG-1/2/4 do); set "
            "predict.motion_source=block_matching to estimate motion by block matching instead",
            path=path_for_errors or path or "<frames in memory>", field="motion_vectors")
    return token_motion(fill_missing(field, valid), grid)


_REQUIRED_KEYS = ("source", "grid", "video")


class MotionCache:
    """Per-video cache of token motion fields, one ``.npy`` per key under ``root``.

    The key is everything that determines the field (``source``, ``grid``,
    ``video`` id, plus any extra parts such as frame stride) and
    :data:`MOTION_VERSION`; a field computed under another key is a wrong
    number, not a speed-up. Writes are atomic, so a crash never leaves a
    half-written file that a later run would trust.
    """

    def __init__(self, root, *, write: bool = True):
        self.root = Path(root)
        self.write = write  # False: compute what is missing, keep it out of the cache (torchrun ranks > 0)
        self.hits = self.misses = 0

    def path_for(self, key_parts: dict) -> Path:
        missing = [k for k in _REQUIRED_KEYS if k not in key_parts]
        if missing:
            raise ValueError(f"MotionCache key needs {list(_REQUIRED_KEYS)}; missing {missing}")
        try:
            canon = json.dumps({**key_parts, "version": MOTION_VERSION}, sort_keys=True)
        except TypeError as e:
            raise ValueError(f"MotionCache key parts must be JSON-serialisable: {e}") from e
        digest = hashlib.sha256(canon.encode()).hexdigest()[:24]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key_parts["video"]))[:60]
        return self.root / f"{name}-{digest}.npy"

    def get(self, key_parts: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.path_for(key_parts)
        if path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise DataError(f"unreadable motion cache entry ({e}); delete it to recompute",
                                path=path) from e
            self.hits += 1
            return arr
        arr = np.asarray(compute(), np.float32)
        if self.write:
            with atomic_open(path, "wb") as f:
                np.save(f, arr)
        self.misses += 1
        return arr
