"""GroupNorm as the tokenizer uses it: a group count that always divides the channels, and a
per-frame variant for causal models (no statistics leak from future frames)."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn


def group_norm(channels: int, groups: int, *, affine: bool = True, per_frame: bool = False) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`;
    per_frame: statistics per frame of a b c t h w tensor (causal)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return (FrameGroupNorm if per_frame else nn.GroupNorm)(g, channels, eps=1e-6, affine=affine)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken per frame (time folded into the batch), so no
    frame's normalisation sees another frame: what a causal encoder needs. Same parameters
    (and state_dict keys) as nn.GroupNorm."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            return super().forward(x)
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=x.shape[0])
