"""Metrics: IoU summed over a split, PSNR, SSIM."""

import numpy as np
import pytest
import torch

from vpe_lib.eval.metrics import IoUAccumulator, foreground_iou, psnr, ssim


def test_fg_iou_is_summed_over_the_split_not_averaged():
    # image 1: big object, perfect; image 2: tiny object, missed.
    true1 = np.zeros((10, 10), bool); true1[:5] = True
    true2 = np.zeros((10, 10), bool); true2[0, 0] = True
    acc = IoUAccumulator()
    acc.update(true1, true1)
    acc.update(np.zeros_like(true2), true2)
    r = acc.result()
    assert r["fg_iou"] == pytest.approx(50 / 51)  # a per-image mean would say 0.5
    assert 0 <= r["bg_iou"] <= 1 and r["miou"] == pytest.approx((r["fg_iou"] + r["bg_iou"]) / 2)


def test_fg_iou_edge_cases():
    a = np.zeros((4, 4), bool)
    assert np.isnan(foreground_iou(a, a))  # no foreground anywhere: undefined, not 1
    b = a.copy(); b[1, 1] = True
    assert foreground_iou(a, b) == 0.0
    assert foreground_iou(b, b) == 1.0
    with pytest.raises(ValueError, match="shape"):
        foreground_iou(a, np.zeros((3, 4), bool))


def test_psnr_known_value():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full((1, 3, 8, 8), 0.2)
    # MSE 0.04 with range 2 -> 10*log10(4/0.04) = 20 dB
    assert psnr(x, y) == pytest.approx(20.0, abs=1e-4)
    assert psnr(x, x) == float("inf")


def test_ssim_identity_and_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert ssim(x, noisy) < 0.9
