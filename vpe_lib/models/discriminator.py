"""A 3D convolutional video discriminator for adversarial tokenizer training.

MAGVIT trains its 3D-VQ with a StyleGAN-style discriminator inflated to 3D (residual blocks,
leaky ReLU, average-pool downsampling, no normalisation), an R1 gradient penalty and LeCam
regularisation. This is that shape at configurable width: ``b c t h w`` in [-1, 1] -> one
logit per clip. Time is pooled only while more than one frame is left, so short CPU clips
(4 frames) and BAIR clips (16 or 17 frames) use the same class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class DiscriminatorConfig:
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)  # one residual down block per entry

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        if not isinstance(self.base_channels, int) or self.base_channels < 1:
            raise ValueError(f"discriminator base_channels must be an int >= 1, got {self.base_channels!r}")
        if not self.channel_mults or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            raise ValueError(f"discriminator channel_mults must be ints >= 1, got {self.channel_mults!r}")


def _down(x: Tensor) -> Tensor:
    """Average-pool by 2 in space, and in time while more than one frame is left."""
    kt = 2 if x.shape[2] >= 2 else 1
    return F.avg_pool3d(x, (kt, 2, 2), ceil_mode=True)


class ResBlockDown3D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, in_ch, 3, padding=1)
        self.conv2 = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv3d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = _down(F.leaky_relu(self.conv2(h), 0.2))
        # 1/sqrt(2) keeps the residual sum's variance at the inputs' (StyleGAN2)
        return (h + self.skip(_down(x))) / math.sqrt(2)


class Discriminator3D(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig(), in_channels: int = 3):
        super().__init__()
        self.cfg = cfg
        chs = [cfg.base_channels * m for m in cfg.channel_mults]
        self.stem = nn.Conv3d(in_channels, chs[0], 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlockDown3D(a, b) for a, b in zip([chs[0], *chs[:-1]], chs)])
        self.out_conv = nn.Conv3d(chs[-1], chs[-1], 3, padding=1)
        self.logit = nn.Linear(chs[-1], 1)

    def forward(self, video: Tensor) -> Tensor:
        """video b c t h w -> logits b."""
        h = F.leaky_relu(self.stem(video), 0.2)
        h = F.leaky_relu(self.out_conv(self.blocks(h)), 0.2)
        return self.logit(h.mean(dim=(2, 3, 4))).squeeze(1)
