"""Models: the 3D VQ-VAE tokenizer, the 2D UNet baseline, segmentation heads."""

from .heads import ConvHead, LinearHead, SegmentationModel
from .tokenizer import TokenizerConfig, TokenizerOutput, VQVAE3D, codebook_stats, count_params
from .unet import UNet2D

__all__ = [
    "ConvHead",
    "LinearHead",
    "SegmentationModel",
    "TokenizerConfig",
    "TokenizerOutput",
    "UNet2D",
    "VQVAE3D",
    "codebook_stats",
    "count_params",
]
