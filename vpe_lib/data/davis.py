"""Read the DAVIS layout: ``JPEGImages/<res>/<seq>/00000.jpg`` + ``Annotations/<res>/<seq>/00000.png``.

Masks come in two flavours, both read here:

* DAVIS-2016: 8-bit greyscale 0/255 (foreground = value > 127; JPEG-like
  grey noise at edges is thresholded away);
* DAVIS-2017: palette PNG whose indices are instance ids (foreground = id > 0;
  255 is sometimes used as a "void" label and is kept in ``mask``).

Every frame must have a mask: the index is checked (file present, image and
mask sizes equal, one size per sequence) when the dataset is built, reading
only image headers, so errors surface before training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .frames import natural_key, read_rgb

__all__ = ["DavisDataset", "load_davis", "read_davis_mask"]


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size  # (W, H)
    except FileNotFoundError as e:
        raise DataError("file not found", path=path) from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image (corrupt or not an image): {e}", path=path) from e


def open_mask(path) -> tuple[str, np.ndarray]:
    """(PIL mode, array) of a mask image; DataError naming the file if it is missing or unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.mode, np.asarray(im)
    except FileNotFoundError as e:
        raise DataError("mask file not found", path=path) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read mask (corrupt or not an image): {e}", path=path) from e


def read_davis_mask(path) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(mask, foreground)``: the raw label array (uint8 H x W) and a bool mask.

    Palette ("P") PNGs: labels are instance ids, foreground = id > 0.
    Greyscale: foreground = value > 127; ``mask`` is then 0/1.
    RGB(A) annotations (some re-saved DAVIS copies): foreground = any channel > 127.
    """
    mode, arr = open_mask(path)
    if mode == "P":
        labels = arr.astype(np.uint8)
        return labels, labels > 0
    if arr.ndim == 3:
        fg = (arr[..., :3] > 127).any(-1)
    else:
        if arr.dtype == bool:
            fg = arr
        elif arr.dtype != np.uint8:  # 16-bit greyscale
            fg = arr > (np.iinfo(arr.dtype).max // 2)
        else:
            fg = arr > 127
    return fg.astype(np.uint8), fg


class DavisDataset:
    """Frames of DAVIS sequences, indexed flat over (sequence, frame).

    ``ds[i]`` -> dict(image uint8 (H, W, 3), foreground bool (H, W),
    mask uint8 (H, W) raw labels, sequence str, frame_index int,
    image_path, mask_path).
    """

    def __init__(self, root, *, resolution: str = "480p",
                 sequences: Sequence[str] | None = None):
        self.root = Path(root)
        self.resolution = resolution
        img_root = self.root / "JPEGImages" / resolution
        ann_root = self.root / "Annotations" / resolution
        if not img_root.is_dir():
            raise DataError("DAVIS image folder not found", path=img_root)
        if not ann_root.is_dir():
            raise DataError("DAVIS annotation folder not found", path=ann_root)
        if sequences is None:
            sequences = sorted((d.name for d in img_root.iterdir() if d.is_dir()), key=natural_key)
        self._seqs: list[str] = []
        self._frames: dict[str, list[tuple[Path, Path]]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        for seq in sequences:
            seq_dir = img_root / seq
            if not seq_dir.is_dir():
                raise DataError(f"sequence {seq!r} not found", path=seq_dir)
            imgs = sorted((p for p in seq_dir.iterdir()
                           if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                          key=lambda p: natural_key(p.name))
            if not imgs:
                raise DataError(f"sequence {seq!r} has no frames", path=seq_dir)
            pairs = []
            size = None
            for img in imgs:
                ann = ann_root / seq / (img.stem + ".png")
                if not ann.is_file():
                    raise DataError(f"frame {img.name} of sequence {seq!r} has no mask",
                                    path=ann)
                isz, asz = _image_size(img), _image_size(ann)
                if isz != asz:
                    raise DataError(f"mask size {asz} != image size {isz} ({img})", path=ann)
                if size is None:
                    size = isz
                elif isz != size:
                    raise DataError(f"frame size {isz} differs from the sequence's first "
                                    f"frame {size}", path=img)
                pairs.append((img, ann))
            self._seqs.append(seq)
            self._frames[seq] = pairs
            self._sizes[seq] = (size[1], size[0])
        self._index = [(s, t) for s in self._seqs for t in range(len(self._frames[s]))]

    def sequences(self) -> list[str]:
        return list(self._seqs)

    def num_frames(self, seq: str) -> int:
        return len(self._frames[seq])

    def frame_size(self, seq: str) -> tuple[int, int]:
        """(H, W) of a sequence's frames."""
        return self._sizes[seq]

    def __len__(self) -> int:
        return len(self._index)

    def get(self, seq: str, t: int) -> dict:
        img_path, ann_path = self._frames[seq][t]
        image = read_rgb(img_path)
        mask, fg = read_davis_mask(ann_path)
        if mask.shape != image.shape[:2]:  # header said otherwise: file changed underneath
            raise DataError(f"mask shape {mask.shape} != image {image.shape[:2]}", path=ann_path)
        return {"image": image, "foreground": fg, "mask": mask, "sequence": seq,
                "frame_index": t, "image_path": str(img_path), "mask_path": str(ann_path)}

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.get(*self._index[i])

    def load_sequence(self, seq: str) -> tuple[np.ndarray, np.ndarray]:
        """Whole sequence: images uint8 (T, H, W, 3), foreground bool (T, H, W)."""
        items = [self.get(seq, t) for t in range(self.num_frames(seq))]
        return (np.stack([it["image"] for it in items]),
                np.stack([it["foreground"] for it in items]))


def load_davis(root, *, resolution: str = "480p",
               sequences: Sequence[str] | None = None) -> DavisDataset:
    """Index a DAVIS root (all sequences in ``JPEGImages/<resolution>`` unless ``sequences``)."""
    return DavisDataset(root, resolution=resolution, sequences=sequences)
