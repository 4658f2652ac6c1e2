"""Trivial baselines that say how hard the segmentation task is.

- all-background / all-foreground: what a constant prediction scores;
- a per-pixel colour model: logistic regression on (R, G, B, x, y) with quadratic crosses;
  if it comes close to a network, the task is about colour, not objects;
- frame differencing (needs video): foreground where the frame changed by more than a
  threshold since the previous frame, the threshold chosen on validation. It finds what
  moves, which on a pushing video is the arm and the objects being pushed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler


def _pixel_features(frames: np.ndarray) -> np.ndarray:
    n, h, w, _ = frames.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    pos = np.broadcast_to(np.stack([yy, xx], -1), (n, h, w, 2))
    return np.concatenate([frames / 255.0, pos], -1).reshape(-1, 5).astype(np.float32)


def colour_baseline(train_frames: np.ndarray, train_fg: np.ndarray, test_frames: np.ndarray, *,
                    n_pixels: int, seed: int = 0) -> np.ndarray:
    """Foreground (N, H, W) bool from a per-pixel logistic regression fitted on `n_pixels`
    sampled training pixels."""
    rng = np.random.default_rng(seed)
    x, y = _pixel_features(train_frames), np.asarray(train_fg).reshape(-1)
    if y.min() == y.max():
        return np.full(test_frames.shape[:3], bool(y[0]))  # one class only: predict it
    pick = rng.choice(len(x), size=min(n_pixels, len(x)), replace=False)
    clf = make_pipeline(PolynomialFeatures(2), StandardScaler(), LogisticRegression(max_iter=500))
    clf.fit(x[pick], y[pick])
    return clf.predict(_pixel_features(test_frames)).reshape(test_frames.shape[:3]).astype(bool)


def frame_difference(frames: np.ndarray, previous: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground where the largest per-channel absolute change exceeds `threshold` (0-255)."""
    diff = np.abs(frames.astype(np.int16) - previous.astype(np.int16)).max(-1)
    return diff > threshold


def fit_frame_difference(frames: np.ndarray, previous: np.ndarray, fg: np.ndarray,
                         thresholds: Sequence[float] = (2, 4, 8, 12, 16, 24, 32, 48, 64)) -> tuple[float, dict]:
    """The threshold with the best foreground IoU (summed) on these (validation) frames."""
    diff = np.abs(frames.astype(np.int16) - previous.astype(np.int16)).max(-1)
    fg = np.asarray(fg, bool)
    scores = {}
    for t in thresholds:
        pred = diff > t
        union = np.sum(pred | fg)
        scores[float(t)] = float(np.sum(pred & fg) / union) if union else float("nan")
    best = max(scores, key=lambda t: (scores[t] if scores[t] == scores[t] else -1.0))
    return best, scores
