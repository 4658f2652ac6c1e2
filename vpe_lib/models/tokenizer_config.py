"""The tokenizer's configuration (`vpe_lib.models.tokenizer` describes the model): sizes, the quantizer and
its settings, the causal variant, and presets. A leaf module, so the quantizers and the run configuration read it
without importing the model."""

from __future__ import annotations

import math
from dataclasses import dataclass


QUANTIZERS = ("vq", "lfq", "fsq")
RESAMPLE = ("pool", "strided")


@dataclass(frozen=True)
class TokenizerConfig:
    in_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)
    blocks_per_level: int = 2  # residual blocks per level (and in the middle of the bottleneck)
    temporal_down: tuple[bool, ...] = (True, True)  # one flag per downsampling step
    spatial_down: tuple[bool, ...] = (True, True)
    # The full-resolution residual blocks are ~45% of the FLOPs of the BAIR model; skipping
    # them makes training ~2x faster on CPU at a small cost in reconstruction quality.
    full_res_blocks: bool = True
    embed_dim: int = 256
    codebook_size: int = 1024
    quantizer: str = "vq"  # "vq" | "lfq" | "fsq" (see the module docstring)
    commitment_weight: float = 0.25  # vq and lfq
    groups: int = 8  # GroupNorm groups, clipped to a divisor of each layer's channels
    # clip length a still image is repeated to (forward_features); with causal=True the training
    # clip length, 1 + k * temporal_factor (a still image is then encoded alone)
    clip_frames: int = 16
    entropy_loss_weight: float = 0.1  # lfq: weight of the entropy aux loss
    diversity_gamma: float = 1.0  # lfq: weight of the codebook-entropy term inside it
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # fsq: levels per channel; prod == codebook_size
    causal: bool = False  # MAGVIT-v2 causal 3D convs; clips of 1 + k * temporal_factor frames
    # "pool": average-pool down, nearest + 3×3×3 conv up (MAGVIT's default);
    # "strided": 3×3×3 stride-2 conv down, transposed conv (kernel = stride) up
    resample: str = "pool"

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) and store tuples so the config stays hashable.
        for name in ("channel_mults", "temporal_down", "spatial_down", "fsq_levels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _positive_int(self, "in_channels", "base_channels", "embed_dim", "groups", "clip_frames")
        if not isinstance(self.blocks_per_level, int) or self.blocks_per_level < 0:
            raise ValueError(f"blocks_per_level must be an int >= 0, got {self.blocks_per_level!r}")
        if not self.channel_mults or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of ints >= 1, got {self.channel_mults!r}")
        n_down = len(self.channel_mults) - 1
        for name in ("temporal_down", "spatial_down"):
            flags = getattr(self, name)
            if len(flags) != n_down:
                raise ValueError(
                    f"{name} needs one flag per downsampling step (len(channel_mults) - 1 = {n_down}), got {flags!r}"
                )
            if any(not isinstance(f, bool) for f in flags):
                raise ValueError(f"{name} must hold bools, got {flags!r}")
        if not isinstance(self.codebook_size, int) or self.codebook_size < 2:
            raise ValueError(f"codebook_size must be an int >= 2, got {self.codebook_size!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        for name in ("commitment_weight", "entropy_loss_weight", "diversity_gamma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.quantizer == "lfq" and self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"quantizer='lfq' needs codebook_size to be a power of 2 (it is 2 ** bits), "
                             f"got codebook_size={self.codebook_size}")
        if not self.fsq_levels or any(not isinstance(v, int) or isinstance(v, bool) or v < 3
                                      for v in self.fsq_levels):
            # the library's level-2 mode needs a different (symmetry-preserving) quantizer
            raise ValueError(f"fsq_levels must be a non-empty tuple of ints >= 3, got {self.fsq_levels!r}")
        if self.quantizer == "fsq" and math.prod(self.fsq_levels) != self.codebook_size:
            raise ValueError(f"quantizer='fsq' needs codebook_size == prod(fsq_levels): fsq_levels={self.fsq_levels} "
                             f"give {math.prod(self.fsq_levels)}, codebook_size={self.codebook_size}")
        if not isinstance(self.causal, bool):
            raise ValueError(f"causal must be a bool, got {self.causal!r}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE}, got {self.resample!r}")
        if self.resample == "strided" and self.causal:
            raise ValueError("resample='strided' is not implemented for causal=True (frame 0 must be resampled "
                             "alone); use resample='pool'")
        if self.causal and (self.clip_frames - 1) % self.temporal_factor:
            raise ValueError(
                f"with causal=True clip_frames must be 1 + a multiple of the temporal downsampling factor "
                f"{self.temporal_factor} (frame 0 is encoded alone), got clip_frames={self.clip_frames}"
            )
        if not self.causal and self.clip_frames % self.temporal_factor:
            raise ValueError(
                f"clip_frames ({self.clip_frames}) must be divisible by the temporal downsampling factor "
                f"{self.temporal_factor}"
            )

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_down)

    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(self.spatial_down)

    @property
    def channels(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_mults]

    @classmethod
    def bair(cls, **overrides) -> "TokenizerConfig":
        """MAGVIT's BAIR tokenizer: 16×64×64 -> 4×16×16 tokens, codebook 1024, embed 256
        (causal: 17×64×64 -> 5×16×16)."""
        return cls(**_causal_clip({}, overrides))

    @classmethod
    def cpu(cls, **overrides) -> "TokenizerConfig":
        """A laptop-sized tokenizer (same 4×16×16 token grid, ~10x fewer FLOPs than BAIR)."""
        kw = dict(base_channels=32, blocks_per_level=1, full_res_blocks=False, embed_dim=64, codebook_size=256)
        return cls(**_causal_clip(kw, overrides))

    @classmethod
    def smoke(cls, **overrides) -> "TokenizerConfig":
        """Tiny: for tests and the smoke pipeline."""
        kw = dict(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, temporal_down=(True,),
                  spatial_down=(True,), full_res_blocks=False, embed_dim=16, codebook_size=32, groups=4,
                  clip_frames=4)
        return cls(**_causal_clip(kw, overrides))


def _causal_clip(kw: dict, overrides: dict) -> dict:
    """Preset kwargs; a causal preset without an explicit clip_frames gets one frame more
    (16 -> 17: frame 0 alone, then 16 frames downsampled as before)."""
    out = {**kw, **overrides}
    if out.get("causal") and "clip_frames" not in overrides:
        out["clip_frames"] = out.get("clip_frames", TokenizerConfig.clip_frames) + 1
    return out


def _positive_int(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
