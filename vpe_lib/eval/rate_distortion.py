"""Rate-distortion yardsticks for the tokenizer: how good is a PSNR at a given bit rate?

A tokenizer's reconstruction PSNR means little alone: a 2x16x16 grid of 1024-code tokens for a
4x64x64 clip carries 0.31 bits per pixel, and what PSNR such a rate allows depends on the data
(textures and sensor noise cannot be squeezed). So the report puts the tokenizer beside classical
references measured on the same held-out frames:

* JPEG (libjpeg through Pillow, baseline, standard Huffman tables, 4:2:0 chroma) at several
  qualities. Its rate counts only the entropy-coded scan: the bytes between the SOS segment and
  EOI. Headers and tables are left out because a stream of frames would share them, as the
  tokenizer's frames share its codebook and decoder. JPEG codes each frame alone; the tokenizer
  also uses time, so JPEG is a still-image reference, not an upper bound.
* Area down-sampling by 2x / 4x and bicubic up-sampling: what the latent grid's resolution gives
  with unquantised (continuous) values, no learning.

The tokenizer's nominal rate is log2(codebook size) bits per token; its entropy rate uses the
perplexity of its code distribution (what an ideal order-0 entropy coder would spend).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

JPEG_QUALITIES = (2, 5, 10, 20, 30, 50, 75, 90)


def psnr_uint8(recon: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of uint8 images over the whole set (one MSE over all pixels)."""
    mse = float(np.mean((recon.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (N, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def jpeg_scan_bytes(data: bytes) -> int:
    """Bytes of the entropy-coded scan of a baseline JPEG: from the end of its (single) SOS
    segment to the EOI marker."""
    sos = data.find(b"\xff\xda")
    if sos < 0 or not data.endswith(b"\xff\xd9"):
        raise ValueError("not a complete baseline JPEG (no SOS segment or no EOI marker)")
    header_len = int.from_bytes(data[sos + 2:sos + 4], "big")  # SOS length field counts itself
    return len(data) - 2 - (sos + 2 + header_len)


def jpeg_curve(frames: np.ndarray, qualities: Sequence[int] = JPEG_QUALITIES) -> list[dict[str, float]]:
    """JPEG rate-distortion points on uint8 frames (N, H, W, 3): one dict per quality with
    ``quality``, ``bits_per_pixel`` (scan bits / pixels) and ``psnr_db``, sorted by rate."""
    frames = _check_frames(frames)
    n_pixels = frames.shape[0] * frames.shape[1] * frames.shape[2]
    points = []
    for q in qualities:
        scan_bytes, decoded = 0, []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, "JPEG", quality=int(q), optimize=False, progressive=False)
            data = buf.getvalue()
            scan_bytes += jpeg_scan_bytes(data)
            decoded.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        points.append({"quality": float(q), "bits_per_pixel": 8.0 * scan_bytes / n_pixels,
                       "psnr_db": psnr_uint8(np.stack(decoded), frames)})
    return sorted(points, key=lambda p: p["bits_per_pixel"])


def resample_psnr(frames: np.ndarray, factor: int) -> float:
    """PSNR of area down-sampling by `factor` then bicubic up-sampling (continuous values)."""
    frames = _check_frames(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"frame size {tuple(x.shape[-2:])} is not divisible by {factor}")
    up = F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="bicubic", align_corners=False)
    return psnr_uint8(up.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), frames)


def _log_rates_and_psnrs(curve: Sequence[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.log([p["bits_per_pixel"] for p in curve]), np.array([p["psnr_db"] for p in curve])


def psnr_at_rate(curve: Sequence[dict[str, float]], bits_per_pixel: float) -> float:
    """The curve's PSNR at a rate, linear in log(rate) between its points; NaN outside them."""
    rates, psnrs = _log_rates_and_psnrs(curve)
    r = math.log(bits_per_pixel)
    if not rates[0] <= r <= rates[-1]:
        return float("nan")
    return float(np.interp(r, rates, psnrs))


def rate_at_psnr(curve: Sequence[dict[str, float]], psnr_db: float) -> float:
    """The rate at which the curve reaches a PSNR (inverse of `psnr_at_rate`); NaN outside it."""
    rates, psnrs = _log_rates_and_psnrs(curve)
    if not psnrs[0] <= psnr_db <= psnrs[-1] or np.any(np.diff(psnrs) <= 0):
        return float("nan")
    return float(np.exp(np.interp(psnr_db, psnrs, rates)))


def token_bits_per_pixel(n_tokens: int, n_pixels: int, codebook_size: int, perplexity: float | None = None) -> float:
    """Bits per pixel of a token grid: log2(codebook size) per token, or log2(perplexity) (the
    order-0 entropy of the codes in use) when given."""
    bits = math.log2(perplexity if perplexity is not None else codebook_size)
    return n_tokens * bits / n_pixels


def rate_distortion_reference(frames: np.ndarray, *, token_bpp: float | None = None,
                              qualities: Sequence[int] = JPEG_QUALITIES) -> dict:
    """All yardsticks on the same frames: the JPEG curve, JPEG's PSNR at the tokenizer's rate
    (when `token_bpp` is given; several tokenizers use `psnr_at_rate` on the curve), and the
    2x / 4x resampling baselines."""
    curve = jpeg_curve(frames, qualities)
    reference = {
        "n_frames": int(len(frames)),
        "jpeg": curve,
        "jpeg_bits_per_pixel_for_30db": rate_at_psnr(curve, 30.0),
        "resample_psnr_db": {f"{f}x": resample_psnr(frames, f) for f in (2, 4)},
    }
    if token_bpp is not None:
        reference["jpeg_psnr_db_at_token_rate"] = psnr_at_rate(curve, token_bpp)
    return reference
