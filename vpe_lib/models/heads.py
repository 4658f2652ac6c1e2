"""Segmentation heads built from an encoder's ``feature_info``, and the model that joins the two.

Three heads, from least to most capacity, each fitting any `ImageEncoder`:

- ``linear``: DINOv2's linear protocol: BatchNorm + 1×1 conv on the chosen maps (resized to
  the finest of them and concatenated), logits upsampled bilinearly. It asks "is the class
  linearly readable from these features?", not "can a decoder learn it?". Computed per map at
  its own resolution, then resized and summed: resizing (bilinear or average) is linear with
  weights summing to 1, so it commutes with the 1×1 conv, and the probe costs a fraction of
  normalising hundreds of upsampled channels at full resolution. The one difference from
  normalising the upsampled concatenation: BatchNorm's statistics come from each map at its
  own resolution.
- ``conv``: a progressive decoder: start at the coarsest map, upsample ×2 at a time, add each
  finer map (a skip) where its stride is reached, (3×3 conv, GroupNorm, swish) at every step,
  down to ``out_stride`` (1 = predict at the input resolution, like the UNet). Channels halve
  as the resolution doubles, as in a UNet decoder, so full resolution stays cheap.
- ``segformer``: SegFormer's all-MLP decoder: a 1×1 projection of every map, all upsampled to
  the finest stride (at most ``out_stride``), concatenated, fused by 1×1 + BatchNorm + ReLU.

The "transformer-informed latent + conv decoder" of the seed study is the ``conv`` head on a
prediction transformer's states; it needs no head of its own.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import FeatureInfo, resize_to_stride
from .tokenizer import group_norm

HEADS = ("linear", "conv", "segformer")
MODES = ("frozen", "finetuned")  # the encoder during head training


def _check(info: Sequence[FeatureInfo], features: Sequence[Tensor], head: str) -> list[Tensor]:
    feats = [features] if isinstance(features, Tensor) else list(features)
    if len(feats) != len(info):
        raise ValueError(f"{head} head built for {len(info)} feature maps ({[f.name for f in info]}), got {len(feats)}")
    for f, i in zip(feats, info):
        if f.shape[1] != i.channels:
            raise ValueError(f"{head} head: map {i.name!r} has {f.shape[1]} channels, feature_info says {i.channels}")
    return feats


class LinearHead(nn.Module):
    def __init__(self, feature_info: Sequence[FeatureInfo], *, n_classes: int):
        super().__init__()
        self.info = list(feature_info)
        if not self.info:
            raise ValueError("feature_info must list at least one feature map")
        self.stride = min(f.stride for f in self.info)
        channels = sum(f.channels for f in self.info)
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, n_classes, 1)

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        feats = _check(self.info, features, "linear")
        norm = self.norm
        if norm.training and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
        logits, start = None, 0
        for f in feats:
            part = slice(start, start + f.shape[1])
            start = part.stop
            # slices of the running statistics are views: F.batch_norm updates the buffers in place
            x = F.batch_norm(f, norm.running_mean[part], norm.running_var[part], norm.weight[part], norm.bias[part],
                             training=norm.training or norm.running_mean is None, momentum=norm.momentum,
                             eps=norm.eps)
            x = resize_to_stride(F.conv2d(x, self.classifier.weight[:, part]), size, self.stride)
            logits = x if logits is None else logits + x
        logits = logits + self.classifier.bias[None, :, None, None]
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), group_norm(out_ch, 8), nn.SiLU())


class ConvDecoderHead(nn.Module):
    def __init__(self, feature_info: Sequence[FeatureInfo], *, n_classes: int, hidden: int = 64,
                 out_stride: int = 1, min_channels: int = 8):
        super().__init__()
        self.info = list(feature_info)
        if not self.info:
            raise ValueError("feature_info must list at least one feature map")
        if out_stride < 1:
            raise ValueError(f"out_stride must be >= 1, got {out_stride}")
        # the strides the decoder visits: every map's stride (maps finer than out_stride are
        # pooled to it), and halvings from the coarsest down to out_stride
        strides = {max(f.stride, out_stride) for f in self.info}
        coarsest = s = max(strides)
        while s > out_stride:
            s = max(s // 2, out_stride)
            strides.add(s)
        self.strides = sorted(strides, reverse=True)
        width = {st: max(min_channels, hidden * st // coarsest) for st in self.strides}
        self.width = width
        # 1×1 projections of every map to the width at its stride (maps finer than out_stride
        # are pooled to it)
        self.proj = nn.ModuleList(nn.Conv2d(f.channels, width[max(f.stride, out_stride)], 1) for f in self.info)
        self.blocks = nn.ModuleList()
        self.lateral = nn.ModuleList()
        for k, st in enumerate(self.strides):
            prev = width[self.strides[k - 1]] if k else width[st]
            self.lateral.append(nn.Identity() if k == 0 or prev == width[st] else nn.Conv2d(prev, width[st], 1))
            self.blocks.append(_block(width[st], width[st]))
        self.classifier = nn.Conv2d(width[self.strides[-1]], n_classes, 1)
        self.out_stride = out_stride

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        feats = _check(self.info, features, "conv")
        x = None
        for k, st in enumerate(self.strides):
            skip = 0
            for f, i, proj in zip(feats, self.info, self.proj):
                if max(i.stride, self.out_stride) == st:
                    skip = skip + proj(resize_to_stride(f, size, st))
            if x is None:
                x = skip
            else:
                x = self.lateral[k](resize_to_stride(x, size, st)) + skip
            x = self.blocks[k](x)
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


class SegFormerHead(nn.Module):
    def __init__(self, feature_info: Sequence[FeatureInfo], *, n_classes: int, hidden: int = 64,
                 out_stride: int = 1):
        super().__init__()
        self.info = list(feature_info)
        if not self.info:
            raise ValueError("feature_info must list at least one feature map")
        self.stride = max(min(f.stride for f in self.info), out_stride)
        self.proj = nn.ModuleList(nn.Conv2d(f.channels, hidden, 1) for f in self.info)
        self.fuse = nn.Sequential(nn.Conv2d(hidden * len(self.info), hidden, 1, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU())
        self.classifier = nn.Conv2d(hidden, n_classes, 1)

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        feats = _check(self.info, features, "segformer")
        # SegFormer's projection, resize, concatenation and fusing 1×1 conv are all linear, and a
        # resize (weights summing to 1) commutes with a 1×1 conv: each map's projection and its
        # slice of the fusing conv compose into one 1×1 conv applied at the map's own resolution,
        # and the resized results add up. The same function as concatenating at the finest stride
        # (up to float rounding), without hidden × maps channels at full resolution.
        conv, hidden = self.fuse[0], self.fuse[0].out_channels
        x = None
        for k, (f, p) in enumerate(zip(feats, self.proj)):
            w_fuse = conv.weight[:, k * hidden:(k + 1) * hidden, 0, 0]  # (hidden, hidden)
            weight = (w_fuse @ p.weight[:, :, 0, 0])[:, :, None, None]
            y = resize_to_stride(F.conv2d(f, weight, w_fuse @ p.bias), size, self.stride)
            x = y if x is None else x + y
        x = self.fuse[2](self.fuse[1](x))  # BatchNorm, ReLU
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


# name -> builder(feature_info, n_classes, hidden, out_stride): the one place a head is chosen by name
HEAD_BUILDERS = {
    "linear": lambda info, n_classes, hidden, out_stride: LinearHead(info, n_classes=n_classes),
    "conv": lambda info, n_classes, hidden, out_stride: ConvDecoderHead(info, n_classes=n_classes, hidden=hidden,
                                                                       out_stride=out_stride),
    "segformer": lambda info, n_classes, hidden, out_stride: SegFormerHead(info, n_classes=n_classes, hidden=hidden,
                                                                          out_stride=out_stride),
}
assert tuple(HEAD_BUILDERS) == HEADS  # the names config validation lists


def build_head(kind: str, feature_info: Sequence[FeatureInfo], *, n_classes: int, hidden: int = 64,
               out_stride: int = 1) -> nn.Module:
    if kind not in HEAD_BUILDERS:
        raise ValueError(f"unknown head {kind!r}; valid: {', '.join(HEAD_BUILDERS)}")
    return HEAD_BUILDERS[kind](feature_info, n_classes, hidden, out_stride)


class SegmentationModel(nn.Module):
    """encoder maps -> head -> logits b n h w, for images b 3 h w in [-1, 1].

    frozen=True: the encoder gets no gradients, runs under torch.no_grad() and stays in eval
    mode whatever `.train()` is called with (GroupNorm statistics, EMA codebooks and dropout
    never change). frozen=False (fine-tuning): the encoder trains at `encoder_lr_scale` times
    the head's learning rate (see `lr_scale`, read by the training loop's param_groups).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, frozen: bool = True, encoder_lr_scale: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen = frozen
        self.encoder_lr_scale = encoder_lr_scale
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, images: Tensor) -> list[Tensor]:
        if self.frozen:
            with torch.no_grad():
                return self.encoder.forward_intermediates(images)
        return self.encoder.forward_intermediates(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images), size=tuple(images.shape[-2:]))

    def lr_scale(self, name: str) -> float:
        """Learning-rate multiplier of parameter `name` (the training loop groups by it)."""
        return self.encoder_lr_scale if name.startswith("encoder.") else 1.0

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
