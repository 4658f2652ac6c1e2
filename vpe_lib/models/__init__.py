"""Models: the 3D VQ-VAE tokenizer, the 2D UNet baseline, the study's encoders and segmentation heads."""

from .encoders import FeatureInfo, ImageEncoder, PixelEncoder, TokenizerEncoder
from .heads import ConvDecoderHead, LinearHead, SegFormerHead, SegmentationModel, build_head
from .tokenizer import TokenizerConfig, TokenizerOutput, VQVAE3D, codebook_stats, count_params
from .unet import UNet2D

__all__ = [
    "ConvDecoderHead",
    "FeatureInfo",
    "ImageEncoder",
    "LinearHead",
    "PixelEncoder",
    "SegFormerHead",
    "SegmentationModel",
    "TokenizerConfig",
    "TokenizerEncoder",
    "TokenizerOutput",
    "UNet2D",
    "VQVAE3D",
    "build_head",
    "codebook_stats",
    "count_params",
]
