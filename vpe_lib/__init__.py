"""vpe: do video prediction models make general visual encoders?

The library under the notebooks: data (PushWorld and real-data readers), models
(3D VQ-VAE tokenizer, UNet, segmentation heads), one training loop, metrics,
the pipeline stages and the report builder.
"""

__version__ = "0.1.0"
