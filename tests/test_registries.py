"""Models are chosen by name in one place each (a registry), and a wrong name lists the valid ones."""

import pytest

from vpe_lib.models.encoders import FeatureInfo
from vpe_lib.models.heads import HEAD_BUILDERS, HEADS, build_head
from vpe_lib.models.quantizers import QUANTIZER_BUILDERS, build_quantizer
from vpe_lib.models.tokenizer import QUANTIZERS, TokenizerConfig
from vpe_lib.models.transformer import PREDICTOR_CLASSES, PREDICTORS, TransformerConfig, build_predictor


def test_registries_hold_exactly_the_names_config_validation_accepts():
    assert tuple(HEAD_BUILDERS) == HEADS and tuple(PREDICTOR_CLASSES) == PREDICTORS
    assert tuple(QUANTIZER_BUILDERS) == QUANTIZERS


def test_every_name_builds_and_a_wrong_one_lists_the_valid_names():
    info = [FeatureInfo("level0", 8, 1), FeatureInfo("latent", 16, 4)]
    for name in HEADS:
        assert build_head(name, info, n_classes=3, hidden=8) is not None
    with pytest.raises(ValueError, match="unknown head 'mlp'; valid: linear, conv, segformer"):
        build_head("mlp", info, n_classes=3)
    tcfg = TransformerConfig(codebook_size=16, grid=(2, 2, 2), dim=8, depth=1, heads=2)
    assert {type(build_predictor(k, tcfg)).__name__ for k in PREDICTORS} == {"MaskedVideoTransformer", "ARVideoTransformer"}
    with pytest.raises(ValueError, match="unknown predictor 'gpt'; valid: masked, ar"):
        build_predictor("gpt", tcfg)
    sizes = {"vq": {}, "lfq": {}, "fsq": {"fsq_levels": (4, 4)}}  # fsq: the codebook is the product of its levels
    for q in QUANTIZERS:
        assert build_quantizer(TokenizerConfig(embed_dim=8, codebook_size=16, quantizer=q, **sizes[q])) is not None
    bad = object.__new__(TokenizerConfig)  # past config validation, as a hand-edited checkpoint config could be
    object.__setattr__(bad, "quantizer", "rvq")
    with pytest.raises(ValueError, match="unknown quantizer 'rvq'; valid: vq, lfq, fsq"):
        build_quantizer(bad)
