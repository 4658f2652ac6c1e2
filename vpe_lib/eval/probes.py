"""Closed-form probes on frozen token features: ridge regression, its R², and a foreground probe
scored by IoU at pixel resolution. Closed form on purpose: no learning rate or schedule to tune,
so a probe's score reflects the features and nothing else, and it costs a second, not a training run."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def ridge_fit(x: np.ndarray, y: np.ndarray, *, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression y ≈ ((x - mean) / std) @ w + b. x (n, d), y (n,) or (n, k).
    Returns (w, mean, std); the bias is in the last row of w. Features are standardised so one
    alpha suits encoders whose feature scales differ by orders of magnitude."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"ridge_fit: x must be (n, d) with n = len(y); got x {x.shape}, y {y.shape}")
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
    reg = alpha * np.eye(xs.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    w = np.linalg.solve(xs.T @ xs + reg, xs.T @ y)
    return w, mean, std


def ridge_predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    w, mean, std = model
    x = np.asarray(x, np.float64)
    return np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1) @ w


def r2_score(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Coefficient of determination over all entries (1 = perfect, 0 = the test mean, < 0 = worse)."""
    y, y_hat = np.asarray(y, np.float64).ravel(), np.asarray(y_hat, np.float64).ravel()
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float("nan") if ss_tot == 0 else 1.0 - float(((y - y_hat) ** 2).sum()) / ss_tot


def token_targets(values: np.ndarray, stride: int) -> np.ndarray:
    """Per-pixel values (n, H, W) -> their mean over each stride × stride token cell (n, H/s, W/s)."""
    v = torch.from_numpy(np.asarray(values, np.float32))[:, None]
    return F.avg_pool2d(v, stride)[:, 0].numpy()


def flatten_tokens(features: np.ndarray) -> np.ndarray:
    """(n, c, h, w) feature maps -> (n*h*w, c) token rows."""
    return np.asarray(features).transpose(0, 2, 3, 1).reshape(-1, features.shape[1])


def foreground_probe_iou(train_feats: np.ndarray, train_fg: np.ndarray, test_feats: np.ndarray,
                         test_fg: np.ndarray, *, alpha: float = 10.0) -> float:
    """A linear (ridge) probe from token features (n, c, h, w) to the foreground fraction of each
    token, upsampled bilinearly to pixels (n, H, W bool masks) and thresholded at 0.5: foreground IoU
    on the test frames. The token grid's stride is H / h."""
    stride = train_fg.shape[-1] // train_feats.shape[-1]
    model = ridge_fit(flatten_tokens(train_feats), token_targets(train_fg, stride).ravel(), alpha=alpha)
    n, _, h, w = test_feats.shape
    pred = ridge_predict(model, flatten_tokens(test_feats)).reshape(n, 1, h, w)
    up = F.interpolate(torch.from_numpy(pred).float(), size=test_fg.shape[-2:], mode="bilinear",
                       align_corners=False)[:, 0].numpy() > 0.5
    truth = np.asarray(test_fg, bool)
    union = np.logical_or(up, truth).sum()
    return float("nan") if union == 0 else float(np.logical_and(up, truth).sum() / union)


def motion_probe_r2(train_feats: np.ndarray, train_motion: np.ndarray, test_feats: np.ndarray,
                    test_motion: np.ndarray, *, alpha: float = 10.0) -> float:
    """A ridge probe from a still frame's token features to the true motion magnitude of each token
    (n, h, w, at token resolution): held-out R². Magnitude, not direction: from one frame the
    direction of a push is not knowable, *whether* a token is about to move partly is."""
    model = ridge_fit(flatten_tokens(train_feats), np.asarray(train_motion).ravel(), alpha=alpha)
    return r2_score(np.asarray(test_motion).ravel(), ridge_predict(model, flatten_tokens(test_feats)))
