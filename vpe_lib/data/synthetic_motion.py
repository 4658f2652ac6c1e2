"""A clip whose motion is known exactly: a textured square moving at a constant velocity over a static textured
background, with its flow and mask. The motion estimators (`vpe_lib.data.motion`) and the latent probes are tested
against it, and `bench/bench_motion_vectors.py` times the estimators on it."""

from __future__ import annotations

import numpy as np


def _texture(rng: np.random.Generator, h: int, w: int, k: int) -> np.ndarray:
    """Random, non-periodic texture (k x k box-blurred noise), zero mean, unit std.
    Non-periodic on purpose: a periodic texture aliases block-matching vectors."""
    c = rng.uniform(0, 1, (h + k, w + k, 3)).cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    b = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return (b - b.mean()) / (b.std() + 1e-6)


def moving_square_clip(T: int, H: int, W: int, *, size: int = 16, velocity=(2, 1),
                       seed: int = 0) -> dict[str, np.ndarray]:
    """A textured square moving at ``velocity`` = (vx, vy) px/frame over a static textured
    background: the simplest clip whose motion is known exactly.

    Returns ``frames`` (T, H, W, 3) uint8, ``flow`` (T, H, W, 2) float32 in
    PushWorld's convention (displacement from t to t+1 of the surface seen at a
    pixel of frame t; last frame 0), ``mask`` (T, H, W) bool (the square's
    pixels) and ``positions`` (T, 2) int top-left (y, x). Positions are rounded
    to whole pixels (flow is their exact difference); the start is drawn from
    ``seed`` so that the square stays fully inside the frame.
    """
    rng = np.random.default_rng(seed)
    vx, vy = float(velocity[0]), float(velocity[1])
    span_x, span_y = abs(vx) * (T - 1), abs(vy) * (T - 1)
    if size < 1 or size + span_x > W or size + span_y > H:
        raise ValueError(f"a {size}px square moving at velocity {tuple(velocity)} for {T} frames "
                         f"does not fit in {H}x{W}")
    x0 = rng.uniform(0, W - size - span_x) + (span_x if vx < 0 else 0)
    y0 = rng.uniform(0, H - size - span_y) + (span_y if vy < 0 else 0)
    ts = np.arange(T)
    pos = np.stack([np.round(y0 + vy * ts), np.round(x0 + vx * ts)], 1).astype(np.int64)
    bg = np.clip(128 + 40 * _texture(rng, H, W, 3), 0, 255)
    sq = np.clip(70 + 55 * _texture(rng, size, size, 2), 0, 255)
    frames = np.empty((T, H, W, 3), np.uint8)
    flow = np.zeros((T, H, W, 2), np.float32)
    mask = np.zeros((T, H, W), bool)
    for t, (y, x) in enumerate(pos):
        f = bg.copy()
        f[y:y + size, x:x + size] = sq
        frames[t] = f.astype(np.uint8)
        mask[t, y:y + size, x:x + size] = True
        if t + 1 < T:
            flow[t, y:y + size, x:x + size] = (pos[t + 1, 1] - x, pos[t + 1, 0] - y)
    return {"frames": frames, "flow": flow, "mask": mask, "positions": pos}
