"""Training batches of random clips from any :class:`~vpe_lib.data.clips.ClipSource` (BAIR, frame folders, video
files, DAVIS sequences): the contract of ``samplers.ClipBatches`` (PushWorld's), so the tokenizer trains on real
video through the same loop."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .clips import ClipSource, SkippedVideosWarning
from .errors import DataError
from .sharding import rank_slice

__all__ = ["RealClipBatches"]


class RealClipBatches:
    """Random clips from a :class:`ClipSource`, the contract of ``samplers.ClipBatches``.

    ``batches(step)`` (also ``self(step)``) draws ``batch_size`` random videos
    and random starts from ``np.random.default_rng([seed, step])`` -> float32
    ``b c t h w`` in [-1, 1], resized (bilinear, antialiased) to ``size`` if
    given. Videos shorter than ``clip_frames`` are left out (with a warning).
    """

    def __init__(self, source: ClipSource, *, clip_frames: int, batch_size: int, seed: int = 0,
                 size: tuple[int, int] | None = None):
        if clip_frames < 1 or batch_size < 1:
            raise ValueError(f"clip_frames and batch_size must be >= 1, got {clip_frames}, {batch_size}")
        self.source, self.clip_frames, self.batch_size, self.seed = source, clip_frames, batch_size, seed
        self.size = None if size is None else (int(size[0]), int(size[1]))
        lengths = np.array([source.num_frames(i) for i in range(len(source))], np.int64)
        self.videos = np.flatnonzero(lengths >= clip_frames)
        if len(self.videos) == 0:
            raise DataError(f"no video has clip_frames={clip_frames} frames (longest: "
                            f"{lengths.max(initial=0)})", path=getattr(source, "root", source.name))
        if len(self.videos) < len(lengths):
            warnings.warn(f"{len(lengths) - len(self.videos)} of {len(lengths)} videos of "
                          f"{source.name} are shorter than clip_frames={clip_frames} and are "
                          f"not sampled", SkippedVideosWarning, stacklevel=2)
        self._max_start = lengths[self.videos] - clip_frames  # inclusive

    def _sample(self, rng: np.random.Generator, n: int, part: slice = slice(None)) -> torch.Tensor:
        pick = rng.integers(0, len(self.videos), n)
        starts = rng.integers(0, self._max_start[pick] + 1)
        pick, starts = pick[part], starts[part]  # all draws are made first: a slice reads what the whole would
        clips = []
        for j, s in zip(pick, starts):
            clip = self.source.read_clip(int(self.videos[j]), int(s), self.clip_frames)
            x = torch.from_numpy(np.ascontiguousarray(clip)).float().div_(127.5).sub_(1.0)
            x = rearrange(x, "t h w c -> t c h w")
            if self.size is not None and tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                                  antialias=True).clamp_(-1, 1)
            clips.append(x)
        shapes = {tuple(c.shape) for c in clips}
        if len(shapes) > 1:
            raise DataError(f"clips of different sizes {sorted(shapes)}: pass size=(H, W)",
                            path=getattr(self.source, "root", self.source.name))
        return rearrange(torch.stack(clips), "b t c h w -> b c t h w").contiguous()

    def __call__(self, step: int) -> torch.Tensor:
        return self._sample(np.random.default_rng([self.seed, step]), self.batch_size)

    batches = __call__

    def shard(self, step: int, rank: int, world: int) -> torch.Tensor:
        """Rank `rank`'s slice of batch `step` (`shard_batch(self(step), rank, world)`), reading only it."""
        return self._sample(np.random.default_rng([self.seed, step]), self.batch_size,
                            rank_slice(self.batch_size, rank, world))

    def fixed(self, n: int, seed: int = 12345) -> torch.Tensor:
        """A fixed evaluation set of n clips (the same for every model)."""
        return self._sample(np.random.default_rng([seed, 0]), n)
