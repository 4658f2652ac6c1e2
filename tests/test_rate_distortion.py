"""Rate-distortion yardsticks: JPEG scan bits, resampling baselines, interpolation, token rates."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vpe_lib.data.pushworld import PushWorldConfig, generate_video
from vpe_lib.eval.rate_distortion import (jpeg_curve, jpeg_scan_bytes, psnr_at_rate, psnr_uint8, rate_at_psnr,
                                          rate_distortion_reference, resample_psnr, token_bits_per_pixel)
from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D
from vpe_lib.stages.pretrain_stage import token_rates


@pytest.fixture(scope="module")
def frames():
    return generate_video(3, PushWorldConfig(height=32, width=32, n_frames=6))["frames"]


def _jpeg(frame, quality=50):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_psnr_uint8():
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    assert psnr_uint8(a, a) == math.inf
    assert psnr_uint8(a + 1, a) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1


def test_scan_bytes_exclude_headers(frames):
    data = _jpeg(frames[0])
    scan = jpeg_scan_bytes(data)
    flat = jpeg_scan_bytes(_jpeg(np.zeros_like(frames[0])))
    # tables and headers (~600 bytes) are most of a tiny JPEG; a flat image's scan is a few bytes
    assert 0 < flat < 20 < scan < len(data) - 500
    with pytest.raises(ValueError, match="baseline JPEG"):
        jpeg_scan_bytes(data[:len(data) // 2])


def test_jpeg_curve_monotone(frames):
    curve = jpeg_curve(frames, qualities=(90, 10, 40))
    assert [p["quality"] for p in curve] == [10, 40, 90]  # sorted by rate
    rates, psnrs = [p["bits_per_pixel"] for p in curve], [p["psnr_db"] for p in curve]
    assert rates == sorted(rates) and psnrs == sorted(psnrs) and psnrs[0] > 15
    with pytest.raises(ValueError, match="uint8"):
        jpeg_curve(frames.astype(np.float32))


def test_resample_baseline(frames):
    flat = np.full((2, 16, 16, 3), 77, np.uint8)
    assert resample_psnr(flat, 4) == math.inf
    assert resample_psnr(frames, 2) > resample_psnr(frames, 4) > 10
    with pytest.raises(ValueError, match="divisible"):
        resample_psnr(frames[:, :30], 4)


def test_psnr_at_rate_interpolates_in_log_rate():
    curve = [{"bits_per_pixel": 0.1, "psnr_db": 20.0}, {"bits_per_pixel": 1.0, "psnr_db": 30.0}]
    assert psnr_at_rate(curve, 0.1) == 20.0 and psnr_at_rate(curve, 1.0) == 30.0
    assert psnr_at_rate(curve, math.sqrt(0.1)) == pytest.approx(25.0)
    assert math.isnan(psnr_at_rate(curve, 2.0)) and math.isnan(psnr_at_rate(curve, 0.01))
    assert rate_at_psnr(curve, 25.0) == pytest.approx(math.sqrt(0.1))
    assert rate_at_psnr(curve, psnr_at_rate(curve, 0.3)) == pytest.approx(0.3)
    assert math.isnan(rate_at_psnr(curve, 31.0))


def test_token_rates():
    # the cpu profile's grid: 4x64x64 clip -> 2x16x16 tokens of 1024 codes
    assert token_bits_per_pixel(2 * 16 * 16, 4 * 64 * 64, 1024) == pytest.approx(0.3125)
    assert token_bits_per_pixel(2 * 16 * 16, 4 * 64 * 64, 1024, perplexity=32) == pytest.approx(0.15625)
    cfg = TokenizerConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, temporal_down=(True,),
                          spatial_down=(True,), full_res_blocks=False, embed_dim=8, codebook_size=64, clip_frames=4)
    model = VQVAE3D(cfg=cfg)
    rates = token_rates(model, torch.zeros(1, 3, 4, 32, 32), perplexity=8.0)
    # 2x16x16 tokens for 4x32x32 pixels: 6 bits nominal, 3 bits at perplexity 8
    assert rates == {"bits_per_pixel": pytest.approx(2 * 256 * 6 / 4096),
                     "entropy_bits_per_pixel": pytest.approx(2 * 256 * 3 / 4096)}


def test_reference_bundle(frames):
    ref = rate_distortion_reference(frames, token_bpp=0.5, qualities=(5, 50, 95))  # 0.36..6.2 bpp here
    assert ref["n_frames"] == len(frames) and len(ref["jpeg"]) == 3
    assert set(ref["resample_psnr_db"]) == {"2x", "4x"}
    lo, mid = ref["jpeg"][0], ref["jpeg"][1]
    assert lo["bits_per_pixel"] < 0.5 < mid["bits_per_pixel"]
    assert lo["psnr_db"] < ref["jpeg_psnr_db_at_token_rate"] < mid["psnr_db"]
    assert math.isnan(rate_distortion_reference(frames, token_bpp=0.01, qualities=(50,))["jpeg_psnr_db_at_token_rate"])
    # without a tokenizer rate: the same curve and baselines, no point at a rate
    plain = rate_distortion_reference(frames, qualities=(5, 50, 95))
    assert "jpeg_psnr_db_at_token_rate" not in plain
    assert plain["jpeg"] == ref["jpeg"] and plain["resample_psnr_db"] == ref["resample_psnr_db"]
