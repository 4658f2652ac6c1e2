"""Pieces of the segmentation stage: cached frozen features, baselines, augmentation."""

import numpy as np
import torch

from vpe_lib.models.heads import ConvHead, SegmentationModel
from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D
from vpe_lib.stages.heads_stage import (
    CachedFeatureBatches,
    HeadOnFeatures,
    colour_baseline,
    frozen_features,
    predict_foreground,
    with_flips,
)

TINY = TokenizerConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, temporal_down=(True,),
                       spatial_down=(True,), full_res_blocks=False, embed_dim=8, codebook_size=16, clip_frames=2)


def _frames(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), bool)
    masks[:, 4:10, 4:10] = True
    return frames, masks


def test_head_on_cached_features_matches_the_full_model():
    torch.manual_seed(0)
    enc = VQVAE3D(cfg=TINY).eval()
    head = ConvHead(in_channels=enc.feature_channels, n_classes=2, hidden=8)
    model = SegmentationModel(enc, head, frozen=True)
    frames, masks = _frames()
    feats = frozen_features(model, frames, batch_size=4, progress=False)
    assert [f.dtype for f in feats] == [torch.float16] * len(enc.feature_channels)
    batch_feats, batch_masks = CachedFeatureBatches(feats, masks, batch_size=3, seed=1)(0)
    again, _ = CachedFeatureBatches(feats, masks, batch_size=3, seed=1)(0)
    assert all(torch.equal(a, b) for a, b in zip(batch_feats, again))
    head_only = HeadOnFeatures(head, (16, 16), multi_level=True).eval()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        full = model.eval()(x)
        cached = head_only([f.float() for f in feats])
    # the cache is float16: equal up to its rounding
    assert torch.allclose(full, cached, atol=2e-2)
    pred = predict_foreground(model, frames)
    assert pred.shape == masks.shape and pred.dtype == bool


def test_conv_head_max_resolution_caps_the_working_map():
    head = ConvHead(in_channels=[4, 8], n_classes=2, hidden=8, max_resolution=8)
    out = head([torch.randn(2, 4, 32, 32), torch.randn(2, 8, 16, 16)], size=(32, 32))
    assert out.shape == (2, 2, 32, 32)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_with_flips_doubles_consistently():
    frames, masks = _frames(2)
    masks[:, :, :2] = True
    f2, m2 = with_flips(frames, masks)
    assert len(f2) == 4 and np.array_equal(f2[2], frames[0, :, ::-1]) and m2[2, 0, -1] and not m2[2, 0, 0]


def test_colour_baseline_learns_a_colour_rule_and_fails_on_texture():
    rng = np.random.default_rng(0)
    frames = np.full((8, 16, 16, 3), 60, np.uint8)
    masks = rng.random((8, 16, 16)) < 0.3
    frames[masks] = (200, 40, 40)  # foreground is red: colour alone solves it
    pred = colour_baseline(frames, masks, frames, n_pixels=1000)
    assert (pred == masks).mean() > 0.99
    noise = rng.integers(0, 255, frames.shape, dtype=np.uint8)  # colour independent of the mask
    pred = colour_baseline(noise, masks, noise, n_pixels=1000)
    assert (pred & masks).sum() / max((pred | masks).sum(), 1) < 0.5
