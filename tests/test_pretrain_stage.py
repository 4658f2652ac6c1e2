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
