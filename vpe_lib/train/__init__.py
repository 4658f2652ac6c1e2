"""Training: one generic loop (schedules, accumulation, EMA, atomic checkpoints, exact resume)."""

from .checkpoint import atomic_save, load_checkpoint, load_weights, seed_everything
from .optim import ModelEMA
from .loop import (
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    is_main_process,
    train,
    unwrap_model,
)

__all__ = [
    "ModelEMA",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "atomic_save",
    "is_main_process",
    "load_checkpoint",
    "load_weights",
    "seed_everything",
    "train",
    "unwrap_model",
]
