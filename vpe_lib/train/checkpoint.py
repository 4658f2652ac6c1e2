"""Atomic checkpoint files and RNG-state capture, for exact resume.

Everything saved here loads with ``torch.load(weights_only=True)``: RNG states are stored as
tensors / tuples of ints, configs as plain dicts.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vpe_lib.atomic import atomic_open, atomic_write_text  # noqa: F401  (re-exported)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same directory, fsync, then os.replace.

    A reader (or a crash) sees either the old file or the complete new one, never a torn
    write; if saving raises, the temp file is removed and an existing file is untouched.
    """
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def load_weights(module: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True) -> torch.nn.Module:
    """Load a `final.pt` (a state_dict) or a `checkpoint.pt` (its "model" entry) into `module`."""
    state = load_checkpoint(path)
    if "model" in state and isinstance(state["model"], dict) and "step" in state:
        state = state["model"]
    module.load_state_dict(state, strict=strict)
    return module


# ---------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        if _world_size() > 1:
            # Under DDP each process owns one GPU; reading every device's state would open a CUDA
            # context on every GPU from every process. Ranks share one seed, so this one state
            # is restored on every rank's own device.
            state["cuda_current"] = torch.cuda.get_rng_state()
        else:
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if not torch.cuda.is_available():
        return
    if "cuda_current" in state:
        torch.cuda.set_rng_state(state["cuda_current"])
    elif "cuda" in state:
        if _world_size() > 1:  # a single-process checkpoint resumed under DDP: this rank's device only
            idx = torch.cuda.current_device()
            if idx < len(state["cuda"]):
                torch.cuda.set_rng_state(state["cuda"][idx])
        else:
            torch.cuda.set_rng_state_all(state["cuda"])


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. evaluation) without perturbing the training RNG streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
