"""The videos of one split as the prediction stage (03) and its masking study read them, from any
source: their frames, where they moved, and (where labelled) their foreground.

PushWorld has ground-truth flow and labels for every frame. Real video (DAVIS sequences) has none of
the flow, so "where it moved" is a stated proxy there: a pixel moves at step j when its colour changes
by more than `FRAME_DIFFERENCE_THRESHOLD` grey levels (mean over R, G, B) from frame j to j + 1, camera
motion included. Every page that shows a moving-pixel score says which of the two it is
(`PredictionVideos.motion_kind`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .davis_splits import _davis_dirs, davis_clip_source, read_davis_semantic, resolve_davis_splits
from .errors import DataError
from .labelled import resize_labels
from .motion import remove_camera_motion
from .seg_sources import davis_splits_from_config, parse_source, real_image_size
from .store import PushWorldStore
from .video_source import open_video_source, video_split_ids

FLOW_THRESHOLD = 0.5  # px / frame, the camera's median motion removed (as `motion.true_moving_tokens`)
FRAME_DIFFERENCE_THRESHOLD = 16.0  # grey levels of mean |colour change| to the next frame (the proxy)
MOTION_KINDS = {"flow": "ground-truth flow (camera motion removed)",
                "frame_difference": f"frame differencing (mean colour change > {FRAME_DIFFERENCE_THRESHOLD:g} "
                                    f"grey levels to the next frame, camera motion included): a proxy, "
                                    f"no ground-truth motion exists for this source"}


class PredictionVideos:
    """One split's videos, each named by an id (`ids`), read by frame index.

    frames(v, t) -> uint8 (T, H, W, 3); step_motion(v, t) -> float32 (T, H, W), how much each pixel
    moves from frame t to t + 1 (0 for a video's last frame, as PushWorld's forward flow);
    moving_steps(v, t) -> bool, the same above its threshold; foreground(v, t) -> bool (T, H, W),
    or DataError where the source has no labels. `identity`: what names these videos in caches.
    """

    motion_kind = "flow"
    has_labels = True

    def codec_file(self, v: int) -> Path | None:
        """The video's own compressed file, when it has one (MGM reads its motion vectors); None:
        MGM encodes the decoded frames with H.264 itself."""
        return None

    def __init__(self, ids: Sequence[int], *, name: str, identity: dict):
        self.ids = list(ids)
        self.name = name
        self.identity = identity

    def __len__(self) -> int:
        return len(self.ids)

    def num_frames(self, v: int) -> int:
        raise NotImplementedError

    def frames(self, v: int, t=slice(None)) -> np.ndarray:
        raise NotImplementedError

    def step_motion(self, v: int, t=slice(None)) -> np.ndarray:
        raise NotImplementedError

    def foreground(self, v: int, t=slice(None)) -> np.ndarray:
        raise NotImplementedError

    @property
    def motion_threshold(self) -> float:
        return FLOW_THRESHOLD if self.motion_kind == "flow" else FRAME_DIFFERENCE_THRESHOLD

    def moving_steps(self, v: int, t=slice(None)) -> np.ndarray:
        return self.step_motion(v, t) > self.motion_threshold


class PushWorldVideos(PredictionVideos):
    """Videos `ids` of a PushWorld split: ids are the store's video indices (so token caches made
    before this class existed stay valid)."""

    def __init__(self, store: PushWorldStore, ids: Sequence[int]):
        super().__init__(ids, name=f"pushworld {store.split}",
                         identity={"split": store.split, "root": str(store.root)})
        self.store = store

    def num_frames(self, v: int) -> int:
        return self.store.n_frames

    def frames(self, v: int, t=slice(None)) -> np.ndarray:
        return self.store.get("frames", int(v), t)

    def step_motion(self, v: int, t=slice(None)) -> np.ndarray:
        flow = remove_camera_motion(self.store.get("flow", int(v), t))
        return np.hypot(flow[..., 0], flow[..., 1])

    def foreground(self, v: int, t=slice(None)) -> np.ndarray:
        return self.store.get("semantic", int(v), t) > 0


def _frame_indices(n: int, t) -> np.ndarray:
    idx = np.arange(n)[t]
    return np.atleast_1d(idx)


class ClipSourceVideos(PredictionVideos):
    """Videos `ids` (default: all) of a decoded clip source (`clips.ClipSource` with `video_id`, e.g. the
    in-memory DAVIS sequences or a folder of video files): motion by frame differencing; foreground from
    `masks(name, frame_indices)` when given. `streams`: the source's files have their own codec streams
    (`source.path(v)`), which MGM reads its motion vectors from instead of re-encoding the frames."""

    motion_kind = "frame_difference"

    def __init__(self, source, *, name: str, identity: dict, masks=None, ids: Sequence[int] | None = None,
                 streams: bool = False):
        super().__init__(range(len(source)) if ids is None else ids, name=name, identity=identity)
        self.source = source
        self._masks = masks
        self.has_labels = masks is not None
        self.streams = streams

    def codec_file(self, v: int) -> Path | None:
        return self.source.path(int(v)) if self.streams else None

    def num_frames(self, v: int) -> int:
        return self.source.num_frames(int(v))

    def video_name(self, v: int) -> str:
        return self.source.video_id(int(v))

    def frames(self, v: int, t=slice(None)) -> np.ndarray:
        idx = _frame_indices(self.num_frames(v), t)
        if len(idx) and np.all(np.diff(idx) == 1):
            out = self.source.read_clip(int(v), int(idx[0]), len(idx))
        else:
            out = np.stack([self.source.read_clip(int(v), int(i), 1)[0] for i in idx])
        return out[0] if np.isscalar(t) or isinstance(t, (int, np.integer)) else out

    def step_motion(self, v: int, t=slice(None)) -> np.ndarray:
        idx = _frame_indices(self.num_frames(v), t)
        n = self.num_frames(v)
        now = self.frames(v, idx).astype(np.float32)
        nxt_idx = np.minimum(idx + 1, n - 1)
        nxt = self.frames(v, nxt_idx).astype(np.float32)
        change = np.abs(nxt - now).mean(-1)
        change[idx == n - 1] = 0.0  # no next frame
        return change

    def foreground(self, v: int, t=slice(None)) -> np.ndarray:
        if self._masks is None:
            raise DataError(f"{self.name} has no foreground labels")
        return self._masks(self.video_name(v), _frame_indices(self.num_frames(v), t))


def davis_masks(ann_root: Path, size: int):
    """masks(sequence, frame indices) -> bool (T, S, S): the DAVIS annotations of those frames,
    resized (nearest) to the frames' side; void (255) counts as background. A missing mask is a
    DataError naming the file."""
    def masks(seq: str, idx) -> np.ndarray:
        files = sorted((p for p in (ann_root / seq).glob("*.png")), key=lambda p: p.name)
        out = []
        for i in idx:
            if i >= len(files):
                raise DataError(f"sequence {seq!r} has {len(files)} masks, frame {int(i)} has none",
                                path=ann_root / seq)
            sem, _ = read_davis_semantic(files[i])
            out.append(resize_labels(sem, size) == 1)
        return np.stack(out)
    return masks


def davis_prediction_videos(cfg_data, *, min_frames: int = 1) -> dict[str, ClipSourceVideos]:
    """train / val / test videos of a `davis:<root>` source, by the study's split of sequences (the
    tokenizer pretrained on the train sequences' frames). No val sequence -> the last train sequence
    is the predictors' validation video (said in its name); fewer than 2 train sequences then -> DataError."""
    _, root = parse_source(cfg_data.source)
    resolution = getattr(cfg_data, "davis_resolution", "480p")
    size = real_image_size(cfg_data)
    per_split = resolve_davis_splits(root, davis_splits_from_config(cfg_data), resolution=resolution)
    if not per_split.get("val"):
        if len(per_split["train"]) < 2:
            raise DataError("the prediction stage needs a validation sequence: list one in data.davis_val, "
                            "or two or more training sequences (the last becomes validation)", path=root)
        per_split = {**per_split, "train": per_split["train"][:-1], "val": per_split["train"][-1:]}
    _, ann_root = _davis_dirs(root, resolution)
    out = {}
    for split, seqs in per_split.items():
        src = davis_clip_source(root, seqs, size=size, resolution=resolution, min_frames=min_frames)
        identity = {"source": str(cfg_data.source), "resolution": resolution, "size": size,
                    "sequences": [src.video_id(i) for i in range(len(src))],
                    "frames": [src.num_frames(i) for i in range(len(src))]}
        out[split] = ClipSourceVideos(src, name=f"DAVIS {split} ({', '.join(identity['sequences'])})",
                                      identity=identity, masks=davis_masks(ann_root, size))
    return out


def video_prediction_videos(cfg_data) -> dict[str, ClipSourceVideos]:
    """train / val / test videos of a `video:<file or folder>` source, split by file
    (`video_source.video_split_ids`); no labels; MGM reads each file's own codec stream."""
    _, path = parse_source(cfg_data.source)
    source = open_video_source(cfg_data, path)
    out = {}
    for split, ids in video_split_ids(source).items():
        identity = {"source": str(cfg_data.source), "size": int(source.size[0]),
                    "videos": [source.video_id(i) for i in ids], "frames": [source.num_frames(i) for i in ids]}
        out[split] = ClipSourceVideos(source, ids=ids, streams=True, identity=identity,
                                      name=f"video {split} ({', '.join(Path(source.video_id(i)).name for i in ids)})")
    return out
