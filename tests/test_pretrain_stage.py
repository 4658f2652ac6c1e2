"""Pretrain-stage pieces: quantizer variants for the comparison, codebook-collapse warning."""

from __future__ import annotations

import pytest
import torch

from vpe_lib.config import ConfigError, get_config
from vpe_lib.models import TokenizerConfig, VQVAE3D
from vpe_lib.stages.pretrain_stage import evaluate_tokenizer, quantizer_variant


@pytest.mark.parametrize("size, q, expected", [
    (1024, "lfq", 1024), (1000, "lfq", 1024), (1024, "fsq", 1000), (256, "fsq", 240), (32, "fsq", 32), (1024, "vq", 1024),
])
def test_quantizer_variant_keeps_architecture_and_codebook_size(size, q, expected):
    base = TokenizerConfig.smoke(codebook_size=size)
    v = quantizer_variant(base, q)
    assert v.quantizer == q and v.codebook_size == expected
    assert (v.channel_mults, v.embed_dim, v.base_channels) == (base.channel_mults, base.embed_dim, base.base_channels)
    VQVAE3D(cfg=v)  # a valid model


def test_compare_quantizer_config_errors():
    with pytest.raises(ConfigError, match="compare_quantizers.*rvq"):
        get_config("smoke", {"pretrain.compare_quantizers": ["vq", "rvq"]})
    with pytest.raises(ConfigError, match="compare_steps"):
        get_config("smoke", {"pretrain.compare_steps": 0})


def test_collapsed_codebook_warns():
    torch.manual_seed(0)
    model = VQVAE3D(cfg=TokenizerConfig.smoke(quantizer="fsq", codebook_size=1000, fsq_levels=(10, 10, 10)))
    clips = torch.zeros(2, 3, 4, 16, 16)  # a constant clip maps to a handful of codes
    with pytest.warns(UserWarning, match="codebook collapsing"):
        m = evaluate_tokenizer(model, clips)
    assert m["codebook_utilisation"] < 0.25


def test_clip_frames_uint8_keeps_clip_then_time_order():
    from vpe_lib.stages.pretrain_stage import clip_frames_uint8

    clips = torch.zeros(2, 3, 4, 8, 8)
    for b in range(2):
        for t in range(4):
            clips[b, :, t] = -1 + 0.1 * (4 * b + t)  # a distinct grey level per frame
    clips[:, 1] += 0.05  # and a channel offset, so channels stay last
    frames = clip_frames_uint8(clips)
    assert frames.shape == (8, 8, 8, 3) and frames.dtype.name == "uint8"
    means = frames[:, :, :, 0].reshape(8, -1).mean(1)
    assert list(means.argsort()) == list(range(8))  # frame i of the batch is clip i // 4, time i % 4
    assert (frames[..., 1] >= frames[..., 0]).all() and (frames[..., 1] > frames[..., 2]).any()
