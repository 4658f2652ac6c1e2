"""What a training run is: its recipe (`TrainConfig`) and the digest that names it.

`recipe(cfg)` drops the fields that change only what is logged or shown, or how fast (progress bar, logging
cadence, compilation), so two runs that train the same thing share a cache folder; `run_identity` digests the
recipe with what else determines the run (the model's config, the loss, the data), and a checkpoint written
under another identity is never resumed (`vpe_lib.train.run_files.set_aside_stale`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from .device import check_amp


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # micro-batch size (used by whoever builds `batches`)
    lr: float = 3e-4
    weight_decay: float = 0.01  # applied to weights with ndim >= 2 only (not biases / norms)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # <= 0 disables clipping (the norm is still logged)
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0 disables EMA of weights
    log_every: int = 10
    eval_every: int = 0  # 0 = only at the end
    ckpt_every: int = 200  # 0 = only at the end of the run
    nonfinite: str = "stop"  # "stop" | "skip"
    seed: int = 0
    # "auto": bf16 autocast on CUDA (on a GPU with bf16), fp32 on CPU, where bf16 is ~20x slower |
    # "bf16" | "fp16" (autocast + a GradScaler, whose state is checkpointed) | "off" (fp32)
    amp: str = "auto"
    # torch.compile the model for the training steps (evaluation stays eager). Same maths, another
    # float order: a compiled run is not bit-identical to an eager one, but it is the same recipe, so
    # the two share cache folders and a run may resume either way. Off by default: on 2 CPU cores the
    # compile time outweighs the gain for short runs (bench/bench_compile.py measures both)
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("steps", "warmup_steps", "eval_every", "ckpt_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        check_amp(self.amp)


# TrainConfig fields that change what is logged or shown, or how fast, not what is trained
COSMETIC = ("progress", "log_every", "eval_every", "ckpt_every", "compile")


def recipe(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of `cfg` that determine what a run trains (for cache keys): a change of progress
    bar, logging cadence or compilation reuses the same run folder."""
    return {k: v for k, v in asdict(cfg).items() if k not in COSMETIC}



def run_identity(cfg: TrainConfig, identity: Any = None) -> str:
    """A digest of everything that determines a training run: the recipe (`cfg` without the
    logging fields; `steps` included, because the learning-rate schedule depends on it) and the
    caller's `identity` (model config, loss, data)."""
    blob = json.dumps([recipe(cfg), identity], sort_keys=True, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def norm_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
