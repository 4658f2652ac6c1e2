"""The optimiser's parts: the learning-rate schedule (linear warmup, cosine decay), parameter groups (weight
decay on matrices only; per-parameter rate scales), an EMA of the weights, and mixed precision (autocast, the
fp16 gradient scaler)."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Callable

import torch
from torch import nn

from .device import resolve_amp
from .recipe import TrainConfig


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of cfg.lr for update index s (0-based): linear warmup, then cosine to min_lr_ratio."""

    def f(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        progress = min(1.0, (s - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Weight decay on weights with ndim >= 2 only; a model with `lr_scale(name) -> float`
    (e.g. a fine-tuned encoder at a lower rate than its head) gets one group per scale."""
    scale_of = getattr(model, "lr_scale", None)
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = float(scale_of(name)) if scale_of is not None else 1.0
            groups.setdefault((p.ndim >= 2, scale), []).append(p)
    out = []
    for (decay, scale), params in sorted(groups.items(), key=lambda kv: (-kv[0][1], not kv[0][0])):
        g = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("param_groups: the model scales learning rates per parameter; pass lr")
            g["lr"] = lr * scale
        out.append(g)
    return out


class ModelEMA:
    """EMA of the weights; buffers (GroupNorm has none, the VQ codebook does) are copied.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates so short runs
    are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def autocast(amp: str, device: torch.device):
    precision = resolve_amp(amp, device)
    if precision == "off":
        return contextlib.nullcontext()
    if device.type == "cpu":
        warnings.warn(f"{precision} autocast on CPU is much slower than fp32 here (bf16 ~20x); use amp='auto'",
                      stacklevel=3)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(amp: str, device: torch.device) -> "torch.amp.GradScaler | None":
    """fp16 only: its 5 exponent bits flush small gradients to zero unless the loss is scaled up
    (bf16 has fp32's range and needs no scaler)."""
    return torch.amp.GradScaler(device.type) if resolve_amp(amp, device) == "fp16" else None
