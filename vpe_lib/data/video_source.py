"""A user's own video as a data source: ``data.source=video:<a video file or a folder of videos>``.

The videos (mp4, webm, gif, ...; `clips.VideoFolderSource`, decoded at ``data.image_size`` square)
pretrain the tokenizer and the prediction transformers, and the masking study reads MGM's motion from
**their own codec streams** (B-frames and all, as the camera wrote them) rather than from a re-encode.
They carry no labels: the segmentation study then measures transfer to PushWorld's labelled frames,
as a COCO run measures PushWorld-pretrained encoders on COCO.

Splits are by video file: the naturally sorted files, val and test round(0.2 n) each (at least one),
train the rest, so at least 3 videos are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .clips import VideoFolderSource
from .errors import DataError
from .seg_sources import parse_source, real_image_size

SPLITS = ("train", "val", "test")


def _counts(n: int) -> tuple[int, int, int]:
    """(train, val, test) video counts: val and test round(0.2 n), at least 1 each; train the rest."""
    k = max(1, int(np.floor(0.2 * n + 0.5)))
    return n - 2 * k, k, k


def open_video_source(cfg_data, path: Path) -> VideoFolderSource:
    """Every video under `path`, decoded once at the study's square side (`seg_sources.real_image_size`)."""
    s = real_image_size(cfg_data)
    return VideoFolderSource(path, size=(s, s))


def video_split_ids(source: VideoFolderSource) -> dict[str, list[int]]:
    """The videos of each split, by file (see the module docstring); fewer than 3 -> DataError."""
    n_train, n_val, _ = _counts(len(source))
    if n_train < 1:
        raise DataError(f"a video source needs at least 3 videos (train / val / test are split by video), "
                        f"found {len(source)}", path=source.root)
    ids = list(range(len(source)))
    return {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}


class SubsetClipSource:
    """Some videos of a clip source, as a clip source of their own (what one split pretrains on)."""

    def __init__(self, source, ids: Sequence[int], *, name: str):
        self.source, self.ids, self.name = source, list(ids), name
        self.root = getattr(source, "root", None)
        if not self.ids:
            raise DataError(f"{name}: no video", path=self.root)

    def __len__(self) -> int:
        return len(self.ids)

    def num_frames(self, i: int) -> int:
        return self.source.num_frames(self.ids[i])

    def video_id(self, i: int) -> str:
        return self.source.video_id(self.ids[i])

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        return self.source.read_clip(self.ids[i], start, length)

    def path(self, i: int) -> Path:
        return self.source.path(self.ids[i])


def video_pretraining_source(cfg_data, split_names: Sequence[str] = ("train",)) -> SubsetClipSource:
    """The videos of `split_names` of a `video:` source, for tokenizer pretraining (train) or its
    held-out clips (val, test)."""
    _, path = parse_source(cfg_data.source)
    source = open_video_source(cfg_data, path)
    per_split = video_split_ids(source)
    return SubsetClipSource(source, [i for s in split_names for i in per_split[s]],
                            name=f"video {'+'.join(split_names)} ({path.name})")
