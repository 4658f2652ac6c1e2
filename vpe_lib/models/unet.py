"""The from-scratch baseline: a classic 2D UNet for semantic segmentation.

(conv 3×3 -> GroupNorm -> swish) ×2 per level, max-pool down, nearest upsample + conv up,
skip connections by concatenation; logits ``b n_classes h w`` at the input resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tokenizer import group_norm


class DoubleConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, groups: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            group_norm(out_ch, groups),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            group_norm(out_ch, groups),
            nn.SiLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class UNet2D(nn.Module):
    """UNet with `depth` downsamplings; channels base_channels * 2**level."""

    def __init__(self, *, in_channels: int = 3, n_classes: int = 2, base_channels: int = 32, depth: int = 3,
                 groups: int = 8):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("n_classes", n_classes),
                        ("base_channels", base_channels), ("groups", groups)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.depth = depth
        chs = [base_channels * 2**i for i in range(depth + 1)]
        self.feature_channels: list[int] = chs
        self.enc = nn.ModuleList([DoubleConv(in_channels, chs[0], groups)])
        self.enc.extend(DoubleConv(chs[i - 1], chs[i], groups) for i in range(1, depth + 1))
        self.up_convs = nn.ModuleList(nn.Conv2d(chs[i + 1], chs[i], 3, padding=1) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(DoubleConv(2 * chs[i], chs[i], groups) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chs[0], n_classes, 1)

    def _check(self, x: Tensor) -> None:
        m = 2**self.depth
        if x.ndim != 4 or x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"expected b c h w with h, w divisible by {m}, got {tuple(x.shape)}")

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Encoder feature maps, finest first (the skips, then the bottleneck)."""
        self._check(x)
        feats = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[-1]

    def forward(self, x: Tensor) -> Tensor:
        feats = self.forward_intermediates(x)
        x = feats[-1]
        for up, block, skip in zip(self.up_convs, self.dec, reversed(feats[:-1])):
            x = up(F.interpolate(x, scale_factor=2, mode="nearest"))
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
