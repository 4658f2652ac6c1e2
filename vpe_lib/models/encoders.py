"""One encoder interface for still images: feature maps with their channels and strides.

Every encoder the segmentation study compares (the video tokenizer's encoder, raw pixels,
and later the prediction transformers' hidden states) is an `ImageEncoder`:

- ``forward_intermediates(images b 3 H W in [-1, 1]) -> [b C_i H/s_i W/s_i, ...]``, finest first;
- ``feature_info``: one `FeatureInfo(name, channels, stride)` per map, in the same order.

Heads are built from ``feature_info`` alone, so any head fits any encoder and no head infers
a stride from a tensor's shape (timm's convention). ``select_levels`` keeps a subset of the
maps (e.g. "without the near-pixel levels") without touching the encoder.

A still image enters a *video* tokenizer in one of two ways (``still``):

- ``"repeat"`` (MAGVIT-v1): the image is repeated to the clip length, a static clip. For a
  non-causal tokenizer the first latent frame is taken (what MAGVIT's COMMIT uses as the
  condition); for a causal one the *last*, the only one that has seen the whole static clip
  (its first frame is the image alone, i.e. ``"single"``).
- ``"single"`` (MAGVIT-v2, causal only): the image alone is a one-frame video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from .tokenizer import VQVAE3D, _down_factors

STILL_MODES = ("repeat", "single")
# the encoders the study compares (vpe_lib.stages.heads_stage builds them); the prediction
# transformers' encoders read stage 03's checkpoints, their random_ twins are the architecture control
PREDICTOR_ENCODERS = ("masked", "random_masked", "ar", "random_ar")
ENCODERS = ("tokenizer", "random_tokenizer", "pixels") + PREDICTOR_ENCODERS


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    channels: int
    stride: int  # input pixels per feature-map pixel, along each side


class ImageEncoder(nn.Module):
    """Base of the study's encoders: subclasses set ``feature_info`` and implement ``forward_intermediates``."""

    feature_info: list[FeatureInfo]

    def forward_intermediates(self, images: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, images: Tensor) -> Tensor:
        return self.forward_intermediates(images)[-1]

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.forward_intermediates(images)

    @property
    def feature_channels(self) -> list[int]:
        return [f.channels for f in self.feature_info]

    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: expected images b 3 h w, got {tuple(images.shape)}")
        m = max(f.stride for f in self.feature_info)
        if images.shape[-2] % m or images.shape[-1] % m:
            raise ValueError(f"{type(self).__name__}: image sides {tuple(images.shape[-2:])} must be divisible by "
                             f"the coarsest stride {m}")


class PixelEncoder(ImageEncoder):
    """Raw pixels as the only feature map (stride 1): what a head learns with no encoder at all."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo("rgb", 3, 1)]

    def forward_intermediates(self, images: Tensor) -> list[Tensor]:
        self._check_images(images)
        return [images]


class TokenizerEncoder(ImageEncoder):
    """The encoder half of a `VQVAE3D` (the decoder is dropped: it is not part of the encoder's
    parameters, trained or counted). Maps: each encoder level before its downsampling, the
    middle blocks, the continuous latent, and optionally the quantised latent (``with_codes``:
    the codebook vector of each token, the model's discrete description of the frame)."""

    def __init__(self, tokenizer: VQVAE3D, *, still: str = "repeat", clip_frames: int | None = None,
                 with_codes: bool = False):
        super().__init__()
        cfg = tokenizer.cfg
        if still not in STILL_MODES:
            raise ValueError(f"still={still!r}; valid: {', '.join(STILL_MODES)}")
        if still == "single" and not cfg.causal:
            raise ValueError("still='single' needs a causal tokenizer (a non-causal one cannot encode one frame "
                             "alone); use still='repeat'")
        self.cfg, self.still, self.with_codes = cfg, still, with_codes
        self.clip_frames = 1 if still == "single" else (clip_frames or cfg.clip_frames)
        tokenizer.latent_shape(self.clip_frames, 8 * cfg.spatial_factor, 8 * cfg.spatial_factor)  # fails early
        self.encoder = tokenizer.encoder
        self.quantizer = tokenizer.quantizer if with_codes else None
        self._quantize = tokenizer._quantize if with_codes else None
        self.channels_last = tokenizer.channels_last
        self.feature_info = tokenizer_feature_info(tokenizer, with_codes=with_codes)

    def _time_index(self) -> int:
        return -1 if (self.cfg.causal and self.still == "repeat") else 0

    def forward_intermediates(self, images: Tensor) -> list[Tensor]:
        self._check_images(images)
        clip = repeat(images, "b c h w -> b c t h w", t=self.clip_frames)
        if self.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        maps = self.encoder(clip, intermediates=True)
        t = self._time_index()
        feats = [m[:, :, t] for m in maps]
        if self.with_codes:
            zq = self._quantize(maps[-1])[0]
            feats.append(zq[:, :, t])
        return feats


class PredictorEncoder(ImageEncoder):
    """A prediction transformer's view of a still image: the image enters as COMMIT's condition
    (repeated to a clip, tokenized, first latent frame(s)), and the transformer's hidden states at
    the condition tokens are the "transformer-informed latent". They follow the tokenizer encoder's
    own maps (finer strides), so a conv head has skips as it has on the tokenizer alone, and the
    comparison with the tokenizer isolates what the transformer adds. The codes are an argmax:
    gradients reach the transformer, not the tokenizer."""

    def __init__(self, tokenizer: VQVAE3D, predictor: nn.Module, *, clip_frames: int,
                 layers: Sequence[int] | None = None, with_tokenizer_maps: bool = True):
        super().__init__()
        self.tokens = TokenizerEncoder(tokenizer, still="repeat", clip_frames=clip_frames)
        self._quantize = tokenizer._quantize
        self.predictor, self.layers, self.with_tokenizer_maps = predictor, layers, with_tokenizer_maps
        self.cond_frames = predictor.cfg.cond_frames
        tok_info = tokenizer_feature_info(tokenizer)
        stride = tok_info[-1].stride
        n = len(predictor.feature_channels) if layers is None else len(layers)
        dims = predictor.feature_channels if layers is None else [predictor.feature_channels[i] for i in layers]
        self.feature_info = (tok_info if with_tokenizer_maps else []) + [
            FeatureInfo(f"layer{(list(layers) if layers is not None else list(range(n)))[i]}", dims[i], stride)
            for i in range(n)]

    def _tokenize(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        self._check_images(images)
        t = self.tokens
        clip = repeat(images, "b c h w -> b c t h w", t=t.clip_frames)
        if t.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        maps = t.encoder(clip, intermediates=True)
        with torch.no_grad():
            codes = self._quantize(maps[-1])[1][:, :self.cond_frames]
        return maps, codes

    def condition_codes(self, images: Tensor) -> Tensor:
        """The condition tokens b cond_frames h w that a still image gives the transformer."""
        return self._tokenize(images)[1]

    def forward_from_codes(self, codes: Tensor) -> list[Tensor]:
        """The transformer's maps from condition tokens (without the tokenizer's maps): encoders that
        share a tokenizer can tokenize a frame once (the tokenizer and its quantizer cost more than
        a small transformer)."""
        return list(self.predictor.forward_intermediates(codes, layers=self.layers))

    def forward_intermediates(self, images: Tensor) -> list[Tensor]:
        maps, codes = self._tokenize(images)
        return ([m[:, :, 0] for m in maps] if self.with_tokenizer_maps else []) + self.forward_from_codes(codes)


def tokenizer_feature_info(tokenizer: VQVAE3D, *, with_codes: bool = False) -> list[FeatureInfo]:
    """Channels and strides of `Encoder3D(intermediates=True)`'s maps, from the config alone."""
    cfg = tokenizer.cfg
    chs = cfg.channels
    spatial = [f[1] for f in _down_factors(cfg)]
    info, stride = [], 1
    for i in range(len(chs) - 1):  # level i is recorded before downsampling i
        info.append(FeatureInfo(f"level{i}", chs[i], stride))
        stride *= spatial[i]
    info.append(FeatureInfo("mid", chs[-1], stride))
    info.append(FeatureInfo("latent", cfg.embed_dim, stride))
    if with_codes:
        info.append(FeatureInfo("codes", cfg.embed_dim, stride))
    return info


def select_levels(encoder: ImageEncoder, levels: Sequence[str | int] | None) -> "LevelSelect | ImageEncoder":
    """The encoder restricted to some of its maps (by name or index); None keeps them all."""
    if levels is None or len(levels) == 0:
        return encoder
    return LevelSelect(encoder, levels)


class LevelSelect(ImageEncoder):
    """A view of an encoder that returns only some of its maps (the encoder's weights are shared)."""

    def __init__(self, encoder: ImageEncoder, levels: Sequence[str | int]):
        super().__init__()
        names = [f.name for f in encoder.feature_info]
        idx = []
        for lv in levels:
            if isinstance(lv, int):
                if not -len(names) <= lv < len(names):
                    raise ValueError(f"level index {lv} out of range for maps {names}")
                idx.append(lv % len(names))
            elif lv in names:
                idx.append(names.index(lv))
            else:
                raise ValueError(f"unknown feature level {lv!r}; valid: {', '.join(names)}")
        self.inner, self.index = encoder, sorted(set(idx))
        self.feature_info = [encoder.feature_info[i] for i in self.index]

    def forward_intermediates(self, images: Tensor) -> list[Tensor]:
        maps = self.inner.forward_intermediates(images)
        return [maps[i] for i in self.index]


def resize_to_stride(x: Tensor, image_size: tuple[int, int], stride: int) -> Tensor:
    """Bilinear resize of a map to the size it has at `stride` for an image of `image_size`."""
    size = (math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride))
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] > size[0]:  # going coarser: average, do not alias
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
