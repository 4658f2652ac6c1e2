"""Video-prediction transformers over the tokenizer's codes ``b t h w`` (``long`` in ``[0, K)``).

Two priors over the same token grid, behind one interface (``forward(codes, cond_codes, mask)
-> (loss, logs)``, so one training step serves both, and ``forward_intermediates`` /
``forward_features`` on a still image's condition tokens, so the segmentation heads can read
their states like any `ImageEncoder`):

- ``"masked"`` `MaskedVideoTransformer`: MAGVIT's COMMIT. A bidirectional transformer sees the
  clip with a random subset of positions masked; masked positions *inside* the condition region
  (the first ``cond_frames`` latent frames) hold the condition tokens instead of ``[MASK]``
  ("embedding the condition"), and a segment embedding flags them. It learns to predict every
  position: masked future tokens (generation), masked condition positions (refining the
  condition's tokens into the clip's), unmasked ones (reconstruction, small weight). Sampling
  is MaskGIT's iterative decoding.
- ``"ar"`` `ARVideoTransformer`: a VideoGPT-style autoregressive prior in raster order with the
  condition tokens as a bidirectional prefix (a prefix-LM), sampled token by token with a KV
  cache.

Condition tokens are the tokenizer's codes of the condition frame edge-padded to a clip (the
MAGVIT trick), which differ from the clip's own first latent frame: the latter has seen the
following frames too. Both models therefore take ``codes`` (the clip) and ``cond_codes``
(``b cond_frames h w``) separately.

Positions carry a factorised space-time embedding (separate learned tables for t, h and w,
summed): 3 small tables instead of one per token, and it generalises across frames. The
sequence order is raster (t, h, w) everywhere, so for the AR model the condition prefix is
exactly the first ``n_cond`` positions of the clip.

The trunk and its layers are in ``video_transformer.py``, the two models in ``masked_transformer.py`` and
``ar_transformer.py``; this module is where a predictor is chosen by name.
"""

from __future__ import annotations

from torch import nn

from vpe_lib.models.ar_transformer import ARVideoTransformer
from vpe_lib.models.masked_transformer import (SCHEDULES, DecodeStep, MaskedVideoTransformer, cosine_mask_ratio,
                                               random_token_mask, sample_mask_ratio)
from vpe_lib.models.video_transformer import Block, LayerCache, TransformerConfig, check_compatible

PREDICTORS = ("masked", "ar")


# name -> class: the one place a predictor is chosen by name
PREDICTOR_CLASSES = {"masked": MaskedVideoTransformer, "ar": ARVideoTransformer}
assert tuple(PREDICTOR_CLASSES) == PREDICTORS  # the names config validation lists


def build_predictor(kind: str, cfg: TransformerConfig) -> nn.Module:
    if kind not in PREDICTOR_CLASSES:
        raise ValueError(f"unknown predictor {kind!r}; valid: {', '.join(PREDICTOR_CLASSES)}")
    return PREDICTOR_CLASSES[kind](cfg)


__all__ = [
    "PREDICTORS",
    "PREDICTOR_CLASSES",
    "SCHEDULES",
    "ARVideoTransformer",
    "Block",
    "DecodeStep",
    "LayerCache",
    "MaskedVideoTransformer",
    "TransformerConfig",
    "build_predictor",
    "check_compatible",
    "cosine_mask_ratio",
    "random_token_mask",
    "sample_mask_ratio",
]
