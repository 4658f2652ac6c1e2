"""Masks over the token grid for masked-transformer pretraining.

Every mask is a numpy bool array (t, h, w), True = masked (hidden from the
model), drawn from an explicit ``np.random.Generator`` so a run is
reproducible. Strategies:

* ``random``: uniform over all t*h*w tokens (MAE).
* ``tube``: one random spatial mask repeated over time (VideoMAE): a token
  hidden in one frame cannot be copied from the same place in another.
* ``simmotion``: "simulated-motion masking" (Fan et al., ICCV 2023, the MGM
  paper's proof of concept): one compact blob per frame whose centre moves
  along a random smooth path, so the hidden volume is continuous in space and
  time.
* ``mgm``: motion-guided masking (same paper): the blob follows the region of
  highest motion, here from a (t, h, w) motion magnitude field such as
  :func:`vpe_lib.data.motion.motion_for_masking` gives from codec vectors.

Blob shape: the paper's Sec. 3 could not be checked from here (no public code
and no full text in reach), so the shape is a parameter: ``disc`` = the
tokens nearest the centre in Euclidean distance, ``box`` = nearest in
Chebyshev distance (a square, Euclidean tie-break). Either way a frame hides
exactly ``n_masked(ratio, h*w)`` tokens forming one 4-connected component
(each chosen token has a strictly nearer neighbour, also chosen, towards the
centre), and equal distances are broken in raster order, deterministically.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "MASKINGS", "BLOB_SHAPES", "check_ratio", "n_masked", "random_mask", "tube_mask",
    "random_path", "motion_centres", "blob_masks", "simulated_motion_mask",
    "motion_guided_mask", "make_mask", "mask_motion_overlap", "masks_for_batch",
]

MASKINGS = ("random", "tube", "simmotion", "mgm")
BLOB_SHAPES = ("disc", "box")


def check_ratio(ratio) -> float:
    """Return ``ratio`` as float; ValueError unless 0 < ratio < 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio < 1:
        raise ValueError(f"mask_ratio must be a number in the open interval (0, 1), got {ratio!r}")
    return float(ratio)


def n_masked(ratio: float, n: int) -> int:
    """Tokens to mask out of ``n``: round half up, clamped to [1, n-1] so that a mask
    always hides something and leaves something visible."""
    ratio = check_ratio(ratio)
    if n < 2:
        raise ValueError(f"need at least 2 tokens to mask, got {n}")
    return int(min(max(np.floor(ratio * n + 0.5), 1), n - 1))


def _grid(grid) -> tuple[int, int, int]:
    try:
        t, h, w = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be (t, h, w), got {grid!r}") from None
    if min(t, h, w) < 1:
        raise ValueError(f"grid sizes must be >= 1, got {grid!r}")
    return t, h, w


def random_mask(grid, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n_masked(ratio, t*h*w)`` tokens, uniformly at random."""
    t, h, w = _grid(grid)
    flat = np.zeros(t * h * w, bool)
    flat[rng.permutation(flat.size)[:n_masked(ratio, flat.size)]] = True
    return flat.reshape(t, h, w)


def tube_mask(grid, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """One random spatial mask (exactly ``n_masked(ratio, h*w)`` tokens) repeated over t."""
    t, h, w = _grid(grid)
    return np.repeat(random_mask((1, h, w), ratio, rng), t, axis=0)


# ---------------------------------------------------------------------------
# blobs and their paths


def blob_masks(centres: np.ndarray, hw: tuple[int, int], k: int, *, shape: str = "disc"
               ) -> np.ndarray:
    """Per frame, the ``k`` tokens nearest ``centres[i]`` = (y, x) in token units: (t, h, w)."""
    if shape not in BLOB_SHAPES:
        raise ValueError(f"unknown mask shape {shape!r}; choose one of {BLOB_SHAPES}")
    h, w = hw
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((len(centres), h * w), bool)
    for i, (cy, cx) in enumerate(centres):
        dy, dx = (yy - cy).ravel(), (xx - cx).ravel()
        l2 = dy * dy + dx * dx
        if shape == "disc":
            order = np.argsort(l2, kind="stable")
        else:
            order = np.lexsort((l2, np.maximum(np.abs(dy), np.abs(dx))))  # stable too
        out[i, order[:k]] = True
    return out.reshape(len(centres), h, w)


def _reflect(p: np.ndarray, hi: float) -> np.ndarray:
    """Fold p into [0, hi] as a ball bouncing off the walls (1-Lipschitz, so steps never grow)."""
    if hi <= 0:
        return np.zeros_like(p)
    m = np.mod(p, 2 * hi)
    return hi - np.abs(m - hi)


def random_path(t: int, h: int, w: int, rng: np.random.Generator, *, speed: float = 1.0
                ) -> np.ndarray:
    """A random smooth path of blob centres (t, 2) = (y, x) in token units.

    Uniform start in the grid, a random direction and a speed drawn in
    [speed/2, speed] tokens per frame, bouncing off the borders: the centre
    moves at most ``speed`` tokens per frame.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    start = rng.uniform(0, 1, 2) * [h - 1, w - 1]
    angle = rng.uniform(0, 2 * np.pi)
    vel = rng.uniform(0.5, 1.0) * speed * np.array([np.sin(angle), np.cos(angle)])
    p = start + np.arange(t)[:, None] * vel
    return np.stack([_reflect(p[:, 0], h - 1), _reflect(p[:, 1], w - 1)], axis=1)


def simulated_motion_mask(grid, ratio: float, rng: np.random.Generator, *, speed: float = 1.0,
                          shape: str = "disc") -> np.ndarray:
    """Simulated-motion masking: per frame exactly ``n_masked(ratio, h*w)`` tokens forming
    one blob whose centre follows :func:`random_path`."""
    t, h, w = _grid(grid)
    return blob_masks(random_path(t, h, w, rng, speed=speed), (h, w), n_masked(ratio, h * w),
                      shape=shape)


def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    """Row-normalised Gaussian smoothing matrix (n, n); identity for sigma <= 0.
    Renormalising each row keeps the border from being pulled towards zero."""
    if sigma <= 0:
        return np.eye(n)
    i = np.arange(n)
    k = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * sigma**2))
    return k / k.sum(1, keepdims=True)


def motion_centres(motion: np.ndarray, *, smooth: float = 1.0, temporal: float = 1.0,
                   min_motion: float = 0.1, rng: np.random.Generator | None = None
                   ) -> np.ndarray:
    """Centres (t, 2) = (y, x) in token units of the MGM blob, from motion magnitude (t, h, w).

    1. Smooth each frame spatially (Gaussian, sigma ``smooth`` tokens) so one
       noisy token cannot win; take the peak (first in raster order if tied),
       refined to sub-token precision by the centroid of its 3x3 neighbourhood.
    2. A frame whose smoothed peak is <= ``min_motion`` (same units as
       ``motion``, e.g. px/frame) has no motion to follow.
    3. Smooth the path over time: each frame's centre is the Gaussian-weighted
       (sigma ``temporal`` frames) mean of the moving frames' centres, weights
       relative to the nearest moving frame, so a static frame takes its
       neighbours' centre and ``temporal=0`` leaves moving frames untouched.
    4. A clip with no moving frame at all has nothing to follow: the blob sits
       still at a uniformly random centre (from ``rng``), or at the grid centre
       when ``rng`` is None.
    """
    m = np.asarray(motion, np.float64)
    if m.ndim != 3 or not np.isfinite(m).all() or (m < 0).any():
        raise ValueError(f"motion must be a finite, non-negative (t, h, w) magnitude array, "
                         f"got shape {m.shape}")
    t, h, w = m.shape
    s = np.einsum("ij,tjk,lk->til", _gauss_matrix(h, smooth), m, _gauss_matrix(w, smooth))
    peaks = np.zeros((t, 2))
    moving = s.reshape(t, -1).max(1) > min_motion
    for i in np.flatnonzero(moving):
        y, x = np.unravel_index(np.argmax(s[i]), (h, w))
        y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, h), max(x - 1, 0), min(x + 2, w)
        win = s[i, y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        peaks[i] = (win * yy).sum() / win.sum(), (win * xx).sum() / win.sum()
    if not moving.any():
        if rng is None:
            return np.tile([(h - 1) / 2, (w - 1) / 2], (t, 1))
        return np.tile(rng.uniform(0, 1, 2) * [h - 1, w - 1], (t, 1))
    d2 = (np.arange(t)[:, None] - np.flatnonzero(moving)[None, :]) ** 2.0
    wts = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * max(temporal, 1e-6) ** 2))
    return (wts @ peaks[moving]) / wts.sum(1, keepdims=True)


def motion_guided_mask(motion: np.ndarray, ratio: float, rng: np.random.Generator | None = None,
                       *, smooth: float = 1.0, temporal: float = 1.0, min_motion: float = 0.1,
                       shape: str = "disc") -> np.ndarray:
    """Motion-guided masking: per frame exactly ``n_masked(ratio, h*w)`` tokens nearest the
    centre from :func:`motion_centres` (see there for the parameters)."""
    check_ratio(ratio)
    centres = motion_centres(motion, smooth=smooth, temporal=temporal, min_motion=min_motion,
                             rng=rng)
    _, h, w = np.shape(motion)
    return blob_masks(centres, (h, w), n_masked(ratio, h * w), shape=shape)


# ---------------------------------------------------------------------------
# dispatch, metrics, batches


def make_mask(strategy: str, grid, ratio: float, rng: np.random.Generator,
              motion: np.ndarray | None = None, **kwargs) -> np.ndarray:
    """Mask of ``strategy`` (one of :data:`MASKINGS`); ``kwargs`` go to the strategy."""
    if strategy not in MASKINGS:
        raise ValueError(f"unknown masking strategy {strategy!r}; choose one of {MASKINGS}")
    check_ratio(ratio)
    if kwargs and strategy in ("random", "tube"):
        raise ValueError(f"masking strategy {strategy!r} takes no options, got {sorted(kwargs)}")
    if strategy == "random":
        return random_mask(grid, ratio, rng)
    if strategy == "tube":
        return tube_mask(grid, ratio, rng)
    if strategy == "simmotion":
        return simulated_motion_mask(grid, ratio, rng, **kwargs)
    if motion is None:
        raise ValueError("masking strategy 'mgm' needs a motion field: pass motion= (t, h, w), "
                         "e.g. from vpe_lib.data.motion.motion_for_masking")
    if tuple(np.shape(motion)) != _grid(grid):
        raise ValueError(f"motion shape {np.shape(motion)} differs from the token grid {tuple(grid)}")
    return motion_guided_mask(motion, ratio, rng, **kwargs)


def mask_motion_overlap(mask: np.ndarray, moving: np.ndarray) -> dict[str, float]:
    """How a mask sits on the truly moving tokens (both bool (t, h, w)).

    recall: fraction of moving tokens that are masked; precision: fraction of
    masked tokens that are moving; visible_moving: fraction of visible tokens
    that are moving (at high ratios recall is easy; what separates strategies
    is where the visible tokens lie). NaN where a denominator is 0.
    """
    mask, moving = np.asarray(mask, bool), np.asarray(moving, bool)
    if mask.shape != moving.shape:
        raise ValueError(f"mask {mask.shape} and moving {moving.shape} shapes differ")
    both = float((mask & moving).sum())
    frac = lambda num, den: num / den if den else float("nan")  # noqa: E731
    return {"recall": frac(both, moving.sum()),
            "precision": frac(both, mask.sum()),
            "visible_moving": frac(float((~mask & moving).sum()), (~mask).sum())}


def masks_for_batch(strategy: str, grid, ratio: float, seed: int, step: int,
                    motions: np.ndarray | None = None, *, batch_size: int | None = None,
                    **kwargs) -> np.ndarray:
    """Masks (b, t, h, w) for training step ``step``: a pure function of (seed, step, i).

    Sample i of the batch uses ``np.random.default_rng([seed, step, i])``, so
    batch ``step`` is the same after a resume, and sample i does not depend on
    the batch size. b is ``len(motions)`` (needed for ``mgm``) or ``batch_size``.
    """
    if motions is not None and batch_size is not None and len(motions) != batch_size:
        raise ValueError(f"batch_size={batch_size} but {len(motions)} motion fields")
    b = len(motions) if motions is not None else batch_size
    if b is None:
        raise ValueError("masks_for_batch needs batch_size= (or motions= for 'mgm')")
    t, h, w = _grid(grid)
    out = np.empty((b, t, h, w), bool)
    for i in range(b):
        rng = np.random.default_rng([int(seed), int(step), i])
        out[i] = make_mask(strategy, grid, ratio, rng,
                           None if motions is None else motions[i], **kwargs)
    return out
