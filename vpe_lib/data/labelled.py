"""Labelled still frames as the segmentation study reads them, whatever their source: `LabelledSplit`,
the `SkipReport` of what loading skipped, and the resizing every source shares (image bilinear,
labels nearest; the aspect ratio is not kept: see `seg_sources`)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from .frames import frame_size

SPLITS = ("train", "val", "test")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # still images a DAVIS or COCO folder holds


class SkippedDataWarning(UserWarning):
    """Some frames/images were skipped while loading labelled splits (see the SkipReport)."""


@dataclass
class LabelledSplit:
    frames: np.ndarray      # (N, S, S, 3) uint8, resized to the model resolution S
    semantic: np.ndarray    # (N, S, S) uint8 class ids, 0 = background, 255 = ignore (COCO crowd)
    video_ids: np.ndarray   # (N,) int: which video/sequence/image each frame comes from
    names: list[str]        # name of each video id (DAVIS sequence / COCO file name), index = video id
    instance: np.ndarray | None = None  # (N, S, S) int32 instance ids when the source has them
    # where each frame comes from, for outputs in the benchmarks' formats at native resolution: DAVIS
    # {"sequence", "frame" (file stem), "annotation" (its mask file)}; COCO {"image_id", "height", "width"}
    items: list[dict] | None = None
    meta: dict = field(default_factory=dict)  # COCO: {"annotations": the json, "category_ids": id of class k}

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.frames.ndim != 4 or self.semantic.shape != self.frames.shape[:3] \
                or self.video_ids.shape != (n,) \
                or (self.instance is not None and self.instance.shape != self.semantic.shape):
            raise ValueError(f"LabelledSplit arrays disagree: frames {self.frames.shape}, semantic "
                             f"{self.semantic.shape}, video_ids {self.video_ids.shape}, instance "
                             f"{None if self.instance is None else self.instance.shape}")

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class SkipReport:
    """Everything skipped while loading: ``{"path", "kind", "reason"}`` per item."""

    skipped: list[dict] = field(default_factory=list)

    def add(self, path, kind: str, reason: str) -> None:
        self.skipped.append({"path": str(path), "kind": kind, "reason": reason})

    def __len__(self) -> int:
        return len(self.skipped)

    def counts(self) -> dict[str, int]:
        """Number of skipped items per kind (``"no mask"``, ``"size mismatch"``, ...)."""
        return dict(Counter(s["kind"] for s in self.skipped))

    def summary(self, first: int = 5) -> str:
        """Counts by kind, then the first few paths with their reasons."""
        if not self.skipped:
            return "nothing skipped"
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items()))
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in self.skipped[:first])
        more = f"; ... {len(self.skipped) - first} more" if len(self.skipped) > first else ""
        return f"skipped {len(self.skipped)} ({counts}): {shown}{more}"

    def warn(self, what: str) -> None:
        if self.skipped:
            warnings.warn(f"{what}: {self.summary()}", SkippedDataWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# resizing


def resize_labels(labels: np.ndarray, size) -> np.ndarray:
    """Integer maps (H, W) or (N, H, W) -> ``size``, nearest neighbour (PIL), same dtype."""
    h, w = frame_size(size)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return resize_labels(labels[None], (h, w))[0]
    if labels.shape[1:3] == (h, w):
        return labels
    if labels.dtype == np.uint8:
        work = labels
    else:
        if labels.size and (labels.min() < np.iinfo(np.int32).min or labels.max() > np.iinfo(np.int32).max):
            raise ValueError("label values do not fit int32")
        work = labels.astype(np.int32)
    out = np.stack([np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)) for m in work])
    return out.astype(labels.dtype, copy=False)


# ---------------------------------------------------------------------------
# split helpers


def _auto_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """(train, val, test) counts: val/test = round(f * n), at least 1 when f > 0; train = the rest."""
    def count(f: float) -> int:
        return 0 if f <= 0 else max(1, int(math.floor(f * n + 0.5)))

    n_val, n_test = count(fractions[1]), count(fractions[2])
    return n - n_val - n_test, n_val, n_test


def _reason(e: Exception) -> str:
    """A DataError's message without the path prefix it already carries."""
    msg = str(e)
    path = getattr(e, "path", None)
    return msg[len(path) + 2:] if path and msg.startswith(f"{path}: ") else msg


def _stride_of(frame_stride, split: str) -> int:
    k = frame_stride.get(split, 1) if isinstance(frame_stride, Mapping) else frame_stride
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"frame_stride must be an int >= 1 (or a dict of them per split), got {k!r}")
    return int(k)


def _stack_split(frames: list, sems: list, vids: list, names: list[str], size, instances=None, *,
                 items: list[dict] | None = None, meta: dict | None = None):
    h, w = frame_size(size)
    return LabelledSplit(
        items=items, meta=meta or {},
        frames=np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8),
        semantic=np.stack(sems) if sems else np.zeros((0, h, w), np.uint8),
        video_ids=np.asarray(vids, np.int64),
        names=names,
        instance=None if instances is None else
        (np.stack(instances).astype(np.int32) if instances else np.zeros((0, h, w), np.int32)))
