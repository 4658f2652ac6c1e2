"""Where a run computes, and in what precision: `run.device` and `TrainConfig.amp`, resolved once
(and `compile_model`, torch.compile checked for its C++ compiler up front).

    device = resolve_device("auto")        # the current GPU (cuda:0; LOCAL_RANK's under torchrun), else cpu
    enable_tf32(device)                    # fp32 matmuls / convs on tensor cores (CUDA only)
    precision = resolve_amp("auto", device)  # "bf16" on a GPU with bf16, "off" (fp32) on CPU

A device that is asked for but not there fails here, at the start of a stage, with the setting's
name and what the machine has, not minutes later inside the first `.to()`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil

import torch
from torch import nn

DEVICE_SPECS = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")
# "auto": bf16 autocast on CUDA, fp32 on CPU (bf16 on this 2-core CPU is ~20x slower than fp32);
# "fp16" scales the loss (torch.amp.GradScaler) so small gradients do not flush to zero.
AMP_MODES = ("auto", "bf16", "fp16", "off")


class DeviceError(ValueError):
    """run.device names a device this machine does not have."""


def check_device_spec(spec: object, name: str = "run.device") -> str:
    """The spec itself if it is well formed (the machine is not consulted: a config may be written
    on a laptop for a GPU node); else a ValueError naming the setting."""
    if not isinstance(spec, str) or not _SPEC.fullmatch(spec):
        raise ValueError(f"{name} must be {DEVICE_SPECS}, got {spec!r}")
    return spec


def available_devices() -> list[str]:
    """What this process can use: cpu, then every visible CUDA device."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def resolve_device(spec: str | torch.device = "auto", name: str = "run.device") -> torch.device:
    """'auto' -> the current CUDA device if CUDA is available, else cpu; 'cpu'; 'cuda' -> the current
    CUDA device; 'cuda:N' -> GPU N; or a DeviceError saying what is available. The current device is
    cuda:0, or GPU LOCAL_RANK under torchrun once `init_distributed` has set it."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    check_device_spec(spec, name)
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    available = available_devices()
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise DeviceError(f"{name}={spec!r}, but {why} (torch {torch.__version__}); available: "
                          f"{', '.join(available)}. Set {name}=auto or {name}=cpu")
    index = int(spec.partition(":")[2]) if ":" in spec else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise DeviceError(f"{name}={spec!r}, but this machine has {torch.cuda.device_count()} CUDA device(s); "
                          f"available: {', '.join(available)}")
    return torch.device("cuda", index)


def enable_tf32(device: torch.device) -> bool:
    """Let fp32 matmuls and cuDNN convolutions use TF32 tensor cores on Ampere or later (about 8x the
    fp32 rate, a 10-bit mantissa on the products, fp32 accumulation); nothing on CPU or older GPUs,
    where the flags do nothing but would still read as "on". Returns whether TF32 is now enabled."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return False
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9; the allow_tf32 flags are deprecated
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return True


def check_amp(amp: object) -> str:
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(repr(m) for m in AMP_MODES)}, got {amp!r}")
    return amp


@functools.lru_cache(maxsize=None)
def _has_native_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision a run on `device` trains in: "bf16", "fp16" or "off" (fp32)."""
    check_amp(amp)
    bf16_gpu = _has_native_bf16(device)
    if amp == "auto":
        return "bf16" if bf16_gpu else "off"  # a pre-Ampere GPU: fp32 (fp16 needs asking for: it can overflow)
    if amp == "bf16" and device.type == "cuda" and not bf16_gpu:
        raise ValueError(f"amp='bf16', but {torch.cuda.get_device_name(device)} has no bf16 support; "
                         f"use amp='fp16' (loss-scaled) or amp='off'")
    return amp


def module_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); cpu for a module with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def saved_in_channels_last(state: dict) -> bool:
    """Whether a state dict's 5-D weights were saved in torch.channels_last_3d (torch.save keeps a
    tensor's strides), i.e. the model trained that way (`VQVAE3D.channels_last_`)."""
    convs = [v for v in state.values() if isinstance(v, torch.Tensor) and v.ndim == 5 and v.is_floating_point()]
    # a kernel with one input channel or a 1x1x1 kernel is both layouts at once: look for one that tells
    return any(v.is_contiguous(memory_format=torch.channels_last_3d) and not v.is_contiguous() for v in convs)


__all__ = [
    "AMP_MODES",
    "DeviceError",
    "available_devices",
    "check_amp",
    "check_device_spec",
    "enable_tf32",
    "module_device",
    "resolve_amp",
    "resolve_device",
    "saved_in_channels_last",
]


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor would build CPU code with (CXX, else g++ or clang++)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    return shutil.which(cxx) if cxx else None


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile (inductor) of `model`, checked up front: on the CPU inductor writes and builds
    C++, so a machine without a compiler gets this message instead of one from deep in the first step."""
    if device.type == "cpu":
        if cxx_compiler() is None:
            raise RuntimeError("train.compile=true on the CPU needs a C++ compiler for torch.compile's inductor "
                               "backend (g++ or clang++ on PATH, or CXX); install one or set train.compile=false")
    return torch.compile(model)
