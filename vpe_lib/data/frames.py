"""Read a folder of frame images as one video (e.g. BAIR samples ``frames/<seq>/00.png``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

__all__ = ["natural_key", "load_frame_folder", "list_sequences", "read_rgb"]


def natural_key(name: str) -> list:
    """Sort key that orders "2.png" before "10.png"."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", str(name))]


def read_rgb(path) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB; DataError naming the file if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise DataError("image file not found", path=path) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image (corrupt or not an image): {e}", path=path) from e


def load_frame_folder(path, *, pattern: str = "*.png") -> np.ndarray:
    """All files matching ``pattern`` in ``path``, naturally sorted -> uint8 (T, H, W, 3).

    Raises DataError naming the folder when it is missing or has no matching
    file, and naming the file when one is unreadable or its size differs from
    the first frame's.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError("frame folder not found", path=path)
    files = sorted((p for p in path.glob(pattern) if p.is_file()), key=lambda p: natural_key(p.name))
    if not files:
        raise DataError(f"no frame matching {pattern!r}", path=path)
    frames = []
    for f in files:
        rgb = read_rgb(f)
        if frames and rgb.shape != frames[0].shape:
            raise DataError(f"frame size {rgb.shape[:2]} differs from {files[0].name} "
                            f"{frames[0].shape[:2]}", path=f)
        frames.append(rgb)
    return np.stack(frames)


def list_sequences(root, *, pattern: str = "*.png") -> list[str]:
    """Names of the sub-folders of ``root`` holding at least one ``pattern`` file, naturally sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("sequence root folder not found", path=root)
    seqs = [d.name for d in root.iterdir()
            if d.is_dir() and any(p.is_file() for p in d.glob(pattern))]
    return sorted(seqs, key=natural_key)


def frame_size(size) -> tuple[int, int]:
    """(H, W) from an int S (a square) or an (H, W) pair; both at least 1."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    return h, w


def resize_frames(frames: np.ndarray, size) -> np.ndarray:
    """uint8 (H, W, 3) or (N, H, W, 3) -> ``size`` (int S or (H, W); None leaves the frames as they are);
    PIL bilinear, antialiased when shrinking. The aspect ratio is not kept. The one resize of the data
    layer: clip sources, DAVIS and COCO frames all go through it."""
    if size is None:
        return frames
    h, w = frame_size(size)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        return resize_frames(frames[None], (h, w))[0]
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])
