"""A small MAGVIT-style 3D VQ-VAE video tokenizer.

Shapes use einops names: video ``b c t h w`` in [-1, 1]; latents ``b d t' h' w'``;
codes ``b t' h' w'``. The BAIR preset (``TokenizerConfig.bair()``) maps a 16×64×64 clip
to 4×16×16 tokens, as in MAGVIT: 64 base filters, channel multipliers (1, 2, 4), 2
residual blocks per level, GroupNorm + swish, average-pool down, nearest + conv up
(``resample="strided"``: strided conv down, transposed conv up).

Still images (MAGVIT-v1 style, the same trick COMMIT uses for its condition frame): repeat
the image to the clip length, encode, keep the first latent frame. ``forward_features`` and
``forward_intermediates`` expose that path in the timm convention, which is what the
segmentation heads and probes consume.

Quantizers (``TokenizerConfig.quantizer``), all behind the same ``encode`` / ``decode`` /
``codes_to_latent`` API, codes always ``long`` in ``[0, codebook_size)``:

* ``"vq"``: ``VectorQuantize`` with an EMA codebook, k-means init and dead-code restart.
* ``"lfq"``: lookup-free quantization (MAGVIT-v2). ``embed_dim`` is projected by a 1×1×1 conv
  to ``log2(codebook_size)`` channels, normalised by a GroupNorm *without* affine parameters
  (centred, unit-scale inputs around the ±1 codes; without it LFQ tends to collapse), and each
  channel quantised to its sign; a 1×1×1 conv maps the bits back to ``embed_dim``. We project
  rather than require ``embed_dim == log2(codebook_size)`` so the continuous features the heads
  read (``forward_features``) stay ``embed_dim`` wide whatever the codebook size. Its aux loss
  is ``entropy_loss_weight * (per-sample entropy - diversity_gamma * codebook entropy)`` plus the
  commitment loss: it is usually *negative* (the codebook-entropy term dominates), as expected.
* ``"fsq"``: finite scalar quantization with ``fsq_levels`` (``codebook_size`` must equal their
  product); 1×1×1 convs project ``embed_dim`` to ``len(fsq_levels)`` and back. No aux loss.

Causal variant (``causal=True``, MAGVIT-v2 style): every 3×3×3 conv pads time on the past side
only (replicating the first frame), GroupNorm takes its statistics per frame, and temporal
down/upsampling keeps frame 0 on its own, so a clip of ``1 + k * temporal_factor`` frames maps
to ``1 + k`` latent frames, latent frame ``j`` depends only on input frames ``<= j *
temporal_factor``, and a still image (t = 1) is a valid input: ``forward_features`` encodes it
alone instead of repeating it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from vpe_lib.models.norms import FrameGroupNorm, group_norm  # noqa: F401 (re-export)
from vpe_lib.models.quantizers import build_quantizer, codebook_stats  # noqa: F401 (codebook_stats: re-export)
from vpe_lib.models.tokenizer_config import QUANTIZERS, RESAMPLE, TokenizerConfig  # noqa: F401 (re-export)


class TokenizerOutput(NamedTuple):
    recon: Tensor  # b c t h w
    codes: Tensor  # b t' h' w' (long)
    loss: Tensor  # recon_loss + quant_loss
    recon_loss: Tensor  # L1 + L2, both means over all elements
    # vq: commitment loss (weighted; the codebook itself learns by EMA). lfq: entropy aux loss
    # (often negative) + commitment loss in training, commitment only in eval. fsq: 0.
    quant_loss: Tensor
    # detached parts of quant_loss and quantizer diagnostics, e.g. lfq's "per_sample_entropy",
    # "codebook_entropy"; worth logging (e.g. {f"quant/{k}": v for k, v in out.quant_info.items()})
    quant_info: dict[str, Tensor] | None = None


# ---------------------------------------------------------------------------- layers


class CausalConv3d(nn.Conv3d):
    """k×k×k conv that pads time only on the past side, with copies of the first frame (a still
    image behaves like the first frame of a static clip). Same parameters as nn.Conv3d."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3):
        super().__init__(in_ch, out_ch, kernel, padding=(0, kernel // 2, kernel // 2))
        self.time_pad = kernel - 1

    def forward(self, x: Tensor) -> Tensor:
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0), mode="replicate")
        return super().forward(x)


def conv3(in_ch: int, out_ch: int, causal: bool = False) -> nn.Conv3d:
    """The 3×3×3 'same' conv of the model: centred in time, or causal."""
    return CausalConv3d(in_ch, out_ch, 3) if causal else nn.Conv3d(in_ch, out_ch, 3, padding=1)


class CausalAvgPool3d(nn.Module):
    """Average-pool by (ft, fs, fs), keeping frame 0 on its own in time: 1 + ft*k frames -> 1 + k."""

    def __init__(self, factor: tuple[int, int, int]):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        ft, fs, _ = self.factor
        first = F.avg_pool3d(x[:, :, :1], (1, fs, fs)) if fs > 1 else x[:, :, :1]
        if x.shape[2] == 1:
            return first
        rest = F.avg_pool3d(x[:, :, 1:], self.factor)
        return torch.cat([first, rest], dim=2)


class ResBlock3D(nn.Module):
    """GroupNorm -> swish -> Conv3d 3×3×3, twice, plus a (1×1×1 projected) skip."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, causal: bool = False):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups, per_frame=causal)
        self.conv1 = conv3(in_ch, out_ch, causal)
        self.norm2 = group_norm(out_ch, groups, per_frame=causal)
        self.conv2 = conv3(out_ch, out_ch, causal)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample3D(nn.Module):
    """Nearest-neighbour upsampling by (ft, fs, fs), then a 3×3×3 conv (changes channels).
    causal: frame 0 is upsampled in space only (1 + k frames -> 1 + ft*k), and the conv is causal."""

    def __init__(self, in_ch: int, out_ch: int, factor: tuple[int, int, int], causal: bool = False):
        super().__init__()
        self.factor = factor
        self.causal = causal
        self.conv = conv3(in_ch, out_ch, causal)

    def forward(self, x: Tensor) -> Tensor:
        if self.causal and self.factor[0] > 1:
            first = F.interpolate(x[:, :, :1], scale_factor=(1, *self.factor[1:]), mode="nearest")
            if x.shape[2] > 1:
                rest = F.interpolate(x[:, :, 1:], scale_factor=self.factor, mode="nearest")
                first = torch.cat([first, rest], dim=2)
            x = first
        elif self.factor != (1, 1, 1):
            x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return self.conv(x)


def _blocks(n: int, in_ch: int, out_ch: int, groups: int, causal: bool = False) -> nn.Sequential:
    return nn.Sequential(*[ResBlock3D(in_ch if i == 0 else out_ch, out_ch, groups, causal) for i in range(n)])


def _down_factors(cfg: TokenizerConfig) -> list[tuple[int, int, int]]:
    return [(2 if t else 1, 2 if s else 1, 2 if s else 1) for t, s in zip(cfg.temporal_down, cfg.spatial_down)]


class Encoder3D(nn.Module):
    """conv_in -> [res blocks, avg-pool down] per level -> mid res blocks -> GN, swish, 1×1×1 to embed_dim."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        chs, g, causal = cfg.channels, cfg.groups, cfg.causal
        self.conv_in = conv3(cfg.in_channels, chs[0], causal)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = chs[0]
        for i, ch in enumerate(chs):
            n = 0 if (i == 0 and not cfg.full_res_blocks) else cfg.blocks_per_level
            if n == 0 and prev != ch:  # keep the channel change even without blocks
                self.levels.append(nn.Conv3d(prev, ch, 1))
            else:
                self.levels.append(_blocks(n, prev, ch, g, causal))
            prev = ch
            if i < len(chs) - 1:
                f = _down_factors(cfg)[i]
                if f == (1, 1, 1):
                    self.downs.append(nn.Identity())
                elif cfg.resample == "strided":
                    self.downs.append(nn.Conv3d(ch, ch, 3, stride=f, padding=1))
                elif causal and f[0] > 1:
                    self.downs.append(CausalAvgPool3d(f))
                else:
                    self.downs.append(nn.AvgPool3d(f, stride=f))
        self.mid = _blocks(cfg.blocks_per_level, prev, prev, g, causal)
        self.norm_out = group_norm(prev, g, per_frame=causal)
        self.pre_quant = nn.Conv3d(prev, cfg.embed_dim, 1)

    def forward(self, x: Tensor, *, intermediates: bool = False) -> Tensor | list[Tensor]:
        feats = []
        x = self.conv_in(x)
        for i, level in enumerate(self.levels):
            x = level(x)
            if i < len(self.downs):
                feats.append(x)
                x = self.downs[i](x)
        x = self.mid(x)
        feats.append(x)
        z = self.pre_quant(F.silu(self.norm_out(x)))
        feats.append(z)
        return feats if intermediates else z


class Decoder3D(nn.Module):
    """Mirror of the encoder: conv_in -> mid blocks -> [res blocks, nearest up + conv] per level -> conv_out."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        chs, g, causal = cfg.channels, cfg.groups, cfg.causal
        factors = _down_factors(cfg)
        self.conv_in = conv3(cfg.embed_dim, chs[-1], causal)
        self.mid = _blocks(cfg.blocks_per_level, chs[-1], chs[-1], g, causal)
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in reversed(range(len(chs))):
            n = 0 if (i == 0 and not cfg.full_res_blocks) else cfg.blocks_per_level
            self.levels.append(_blocks(n, chs[i], chs[i], g, causal))
            if i > 0:
                f = factors[i - 1]
                if cfg.resample == "strided" and f != (1, 1, 1):
                    self.ups.append(nn.ConvTranspose3d(chs[i], chs[i - 1], f, stride=f))
                else:
                    self.ups.append(Upsample3D(chs[i], chs[i - 1], f, causal))
        self.norm_out = group_norm(chs[0], g, per_frame=causal)
        self.conv_out = conv3(chs[0], cfg.in_channels, causal)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid(self.conv_in(z))
        for i, level in enumerate(self.levels):
            x = level(x)
            if i < len(self.ups):
                x = self.ups[i](x)
        return self.conv_out(F.silu(self.norm_out(x)))


# ---------------------------------------------------------------------------- model


class VQVAE3D(nn.Module):
    """3D VQ-VAE: encoder -> pre-quant conv -> quantizer (vq / lfq / fsq) -> post-quant conv -> decoder."""

    def __init__(self, *, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder3D(cfg)
        self.quantizer = build_quantizer(cfg)
        self.post_quant = nn.Conv3d(cfg.embed_dim, cfg.embed_dim, 1)
        self.decoder = Decoder3D(cfg)
        # channels of forward_intermediates' maps, finest first, ending with the latent
        self.feature_channels: list[int] = [*cfg.channels, cfg.embed_dim]
        self.num_features = cfg.embed_dim
        self.channels_last = False

    def channels_last_(self, enabled: bool = True) -> "VQVAE3D":
        """Store conv weights and feed inputs in torch.channels_last_3d: +13-34% training
        throughput on the 2-core CPU (measured), same results up to float rounding."""
        fmt = torch.channels_last_3d if enabled else torch.contiguous_format
        self.to(memory_format=fmt)
        self.channels_last = enabled
        return self

    def _format(self, video: Tensor) -> Tensor:
        return video.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else video

    # -- shapes

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """(t', h', w') of the token grid for a t×h×w clip; raises if not divisible.
        Causal: t = 1 + k * temporal_factor frames -> 1 + k latent frames."""
        tf, sf = self.cfg.temporal_factor, self.cfg.spatial_factor
        if self.cfg.causal:
            if t < 1 or (t - 1) % tf or h % sf or w % sf:
                raise ValueError(f"causal tokenizer: clip {t}×{h}×{w} must have 1 + k*{tf} frames and sides "
                                 f"divisible by {sf}")
            return 1 + (t - 1) // tf, h // sf, w // sf
        if t % tf or h % sf or w % sf:
            raise ValueError(f"clip {t}×{h}×{w} not divisible by the downsampling factors ({tf}, {sf}, {sf})")
        return t // tf, h // sf, w // sf

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected video b {self.cfg.in_channels} t h w, got {tuple(video.shape)}")
        self.latent_shape(*video.shape[-3:])

    # -- video path

    def encode_continuous(self, video: Tensor) -> Tensor:
        """Pre-quantization latent, b d t' h' w'."""
        self._check_video(video)
        return self.encoder(self._format(video))

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z: b d t h w -> (z_q b d t h w, codes b t h w long, aux loss); see TokenizerOutput.quant_loss."""
        return self._quantize(z)[:3]

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        if self.cfg.quantizer != "vq":
            return self.quantizer(z)
        b, d, t, h, w = z.shape
        flat = rearrange(z, "b d t h w -> b (t h w) d")
        zq, codes, loss = self.quantizer(flat)
        if not self.training:
            # VectorQuantize only computes the commitment loss in training; report it in eval too.
            loss = self.cfg.commitment_weight * F.mse_loss(zq.detach(), flat)
        zq = rearrange(zq, "b (t h w) d -> b d t h w", t=t, h=h, w=w)
        codes = rearrange(codes, "b (t h w) -> b t h w", t=t, h=h, w=w)
        return zq, codes.long(), loss, {"commitment": loss.detach()}

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """video b c t h w -> (z_q b d t' h' w', codes b t' h' w' long, aux (commitment) loss)."""
        return self.quantize(self.encode_continuous(video))

    def decode(self, z_q: Tensor) -> Tensor:
        return self.decoder(self.post_quant(z_q))

    def codes_to_latent(self, codes: Tensor) -> Tensor:
        """codes b t h w (long) -> z_q b d t h w, via the codebook (or the implicit lfq / fsq grid)."""
        if self.cfg.quantizer != "vq":
            return self.quantizer.codes_to_latent(codes)
        zq = self.quantizer.get_output_from_indices(codes)  # b t h w d
        return rearrange(zq, "b t h w d -> b d t h w")

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.decode(self.codes_to_latent(codes))

    def forward(self, video: Tensor) -> TokenizerOutput:
        zq, codes, quant_loss, info = self._quantize(self.encode_continuous(video))
        recon = self.decode(zq)
        recon_loss = F.l1_loss(recon, video) + F.mse_loss(recon, video)
        return TokenizerOutput(recon, codes, recon_loss + quant_loss, recon_loss, quant_loss, info)

    # -- still-image path (timm-style API used by heads and probes)

    def _image_to_clip(self, images: Tensor, clip_frames: int | None) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images b c h w, got {tuple(images.shape)}")
        # causal: the first latent frame sees frame 0 only, so the image is encoded alone (t = 1)
        t = clip_frames or (1 if self.cfg.causal else self.cfg.clip_frames)
        return repeat(images, "b c h w -> b c t h w", t=t)

    def forward_intermediates(self, images: Tensor, *, clip_frames: int | None = None) -> list[Tensor]:
        """Feature maps b C_i h_i w_i after each encoder level (first temporal slice), finest
        first, ending with the continuous pre-quantization latent; channels in `feature_channels`."""
        clip = self._image_to_clip(images, clip_frames)
        self._check_video(clip)
        return [f[:, :, 0] for f in self.encoder(self._format(clip), intermediates=True)]

    def forward_features(self, images: Tensor, *, clip_frames: int | None = None) -> Tensor:
        """images b c h w -> first latent frame of the repeated clip (causal: of the image alone),
        b embed_dim h' w' (continuous, before quantization)."""
        return self.encode_continuous(self._image_to_clip(images, clip_frames))[:, :, 0]

    @property
    def ema_cluster_size(self) -> Tensor:
        """The quantizer's EMA count per code (codebook_size,); dead-code restart acts below 2 (vq only)."""
        if self.cfg.quantizer != "vq":
            raise AttributeError(f"ema_cluster_size: quantizer {self.cfg.quantizer!r} has no EMA codebook")
        return self.quantizer._codebook.cluster_size[0]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "QUANTIZERS",
    "RESAMPLE",
    "TokenizerConfig",
    "TokenizerOutput",
    "VQVAE3D",
    "codebook_stats",
    "count_params",
    "group_norm",
    "CausalConv3d",
    "FrameGroupNorm",
    "ResBlock3D",
]
