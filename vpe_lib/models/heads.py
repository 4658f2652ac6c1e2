"""Segmentation heads over (frozen) encoder features, and the model that joins the two.

An encoder is anything with ``forward_features(images) -> b C h' w'`` and
``forward_intermediates(images) -> [b C_i h_i w_i, ...]`` (finest first) plus a
``feature_channels`` list — VQVAE3D and UNet2D both qualify. Heads return logits at the
image resolution (bilinear upsampling of coarse logits / features).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tokenizer import group_norm


class FeatureEncoder(Protocol):
    feature_channels: list[int]

    def forward_features(self, images: Tensor) -> Tensor: ...

    def forward_intermediates(self, images: Tensor) -> list[Tensor]: ...


def _last(features: Tensor | Sequence[Tensor]) -> Tensor:
    return features if isinstance(features, Tensor) else features[-1]


class LinearHead(nn.Module):
    """A linear probe: 1×1 conv on the last (coarsest) feature map, logits upsampled bilinearly."""

    def __init__(self, *, in_channels: int, n_classes: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, n_classes, 1)

    def forward(self, features: Tensor | Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        logits = self.proj(_last(features))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class ConvHead(nn.Module):
    """Multi-scale head: 1×1 projection of each map to `hidden`, bilinear upsample to the finest
    map, sum, two (conv 3×3, GroupNorm, swish) layers, 1×1 classifier, upsample to the image.

    `max_resolution` caps the side of the map the head works at (larger maps are
    average-pooled down): the 3×3 layers at full resolution dominate the cost on a CPU.
    """

    def __init__(self, *, in_channels: Sequence[int], n_classes: int, hidden: int = 64,
                 max_resolution: int | None = None):
        super().__init__()
        self.in_channels = list(in_channels)
        self.max_resolution = max_resolution
        if not self.in_channels:
            raise ValueError("in_channels must list at least one feature map")
        self.proj = nn.ModuleList(nn.Conv2d(c, hidden, 1) for c in self.in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1), group_norm(hidden, 8), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), group_norm(hidden, 8), nn.SiLU(),
        )
        self.classifier = nn.Conv2d(hidden, n_classes, 1)

    def forward(self, features: Tensor | Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        feats = [features] if isinstance(features, Tensor) else list(features)
        if len(feats) != len(self.proj):
            raise ValueError(f"ConvHead built for {len(self.proj)} feature maps, got {len(feats)}")
        target = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        if self.max_resolution and max(target) > self.max_resolution:
            scale = max(target) // self.max_resolution
            target = (target[0] // scale, target[1] // scale)
        x = 0
        for f, proj in zip(feats, self.proj):
            if f.shape[-2] > target[0]:
                f = F.adaptive_avg_pool2d(f, target)  # pool before projecting: cheaper, same result
            y = proj(f)
            if y.shape[-2:] != target:
                y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            x = x + y
        logits = self.classifier(self.fuse(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """encoder features -> head -> logits b n h w, for images b c h w in [-1, 1].

    frozen=True: the encoder gets no gradients, runs under torch.no_grad() and stays in eval
    mode whatever `.train()` is called with (so GroupNorm/EMA codebooks/dropout never change).
    use_intermediates=True feeds the head the list from forward_intermediates, else the
    single map from forward_features.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, frozen: bool = True, use_intermediates: bool = True):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen = frozen
        self.use_intermediates = use_intermediates
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, images: Tensor) -> Tensor | list[Tensor]:
        fn = self.encoder.forward_intermediates if self.use_intermediates else self.encoder.forward_features
        if self.frozen:
            with torch.no_grad():
                return fn(images)
        return fn(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images), size=tuple(images.shape[-2:]))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
