"""Deterministic batch sources indexed by step.

The training loop asks for `batches(step)`; each sampler derives its random
generator from (seed, step), so a run resumed at step k sees exactly the
batches the uninterrupted run saw — no data-loader state to checkpoint.
Tensors come out as float32 in [-1, 1], videos as `b c t h w`, images as
`b c h w`.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from vpe_lib.data.store import PushWorldStore
from vpe_lib.data.sharding import rank_slice


def to_unit_range(frames_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames_uint8)).float().div_(127.5).sub_(1.0)


def from_unit_range(x: torch.Tensor) -> np.ndarray:
    """Inverse of `to_unit_range`, clamped, as uint8 (any layout)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


class ClipBatches:
    """Random clips of `clip_frames` consecutive frames from random videos of a split."""

    def __init__(self, store: PushWorldStore, *, clip_frames: int, batch_size: int, seed: int = 0):
        if clip_frames > store.n_frames:
            raise ValueError(f"clip_frames={clip_frames} exceeds the {store.n_frames} frames per video of {store.root}")
        self.store, self.clip_frames, self.batch_size, self.seed = store, clip_frames, batch_size, seed

    def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        vids = rng.integers(0, len(self.store), self.batch_size)
        starts = rng.integers(0, self.store.n_frames - self.clip_frames + 1, self.batch_size)
        return vids, starts

    def _read(self, vids: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        clips = np.stack([self.store.get("frames", int(v), slice(int(s), int(s) + self.clip_frames))
                          for v, s in zip(vids, starts)])
        return rearrange(to_unit_range(clips), "b t h w c -> b c t h w")

    def __call__(self, step: int) -> torch.Tensor:
        return self._read(*self._draw(step))

    def shard(self, step: int, rank: int, world: int) -> torch.Tensor:
        """Rank `rank`'s slice of batch `step` (`shard_batch(self(step), rank, world)`), reading only it."""
        part = rank_slice(self.batch_size, rank, world)
        return self._read(*(a[part] for a in self._draw(step)))

    def fixed(self, n: int, seed: int = 12345) -> torch.Tensor:
        """A fixed evaluation set of n clips (the same for every model)."""
        return ClipBatches(self.store, clip_frames=self.clip_frames, batch_size=n, seed=seed)(0)


def labelled_frames(store: PushWorldStore, *, frame_stride: int, n_videos: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Still frames and their foreground masks: every `frame_stride`-th frame of the first n videos."""
    n = len(store) if n_videos is None else min(n_videos, len(store))
    idx = slice(0, store.n_frames, frame_stride)
    frames = np.concatenate([store.get("frames", i, idx) for i in range(n)])
    fg = np.concatenate([store.get("instance", i, idx) for i in range(n)]) > 0
    return frames, fg


class FrameBatches:
    """Random labelled still frames with horizontal-flip augmentation (same for every model compared)."""

    def __init__(self, frames: np.ndarray, masks: np.ndarray, *, batch_size: int, seed: int = 0, flip: bool = True):
        if frames.shape[:3] != masks.shape[:3]:
            raise ValueError(f"frames {frames.shape} and masks {masks.shape} disagree")
        self.frames, self.masks = frames, masks
        self.batch_size, self.seed, self.flip = batch_size, seed, flip

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.frames), self.batch_size)
        x = self.frames[idx]
        y = self.masks[idx]
        if self.flip:
            flip = rng.random(self.batch_size) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
            y = np.where(flip[:, None, None], y[:, :, ::-1], y)
        images = rearrange(to_unit_range(x), "b h w c -> b c h w")
        return images, torch.from_numpy(np.ascontiguousarray(y)).long()
