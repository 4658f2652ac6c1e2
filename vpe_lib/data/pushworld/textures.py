"""Procedural textures and colour palettes, generated once per video.

Patterns are zero-mean fields of roughly unit amplitude on a pixel grid; ``colourise``
turns one or two patterns into RGB around a base colour. Everything is a handful of
small matrix products / elementwise ops on an (h, w) grid, so per-video cost is tiny.
"""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np

PATTERN_KINDS = ("fbm", "wood", "tiles", "sines", "stripes", "speckle")


@functools.lru_cache(maxsize=256)
def _interp_matrix(n_out: int, n_cells: int) -> np.ndarray:
    """(n_out, n_cells + 1) smoothstep interpolation weights from a coarse lattice to a
    fine grid: value noise is then ``My @ G @ Mx.T``, two tiny matrix products. Cached
    (read-only): the same few sizes recur in every video."""
    pos = np.linspace(0.0, n_cells, n_out, endpoint=False) + 0.5 * n_cells / n_out
    i = np.minimum(np.floor(pos).astype(int), n_cells - 1)
    f = pos - i
    s = f * f * (3 - 2 * f)
    m = np.zeros((n_out, n_cells + 1))
    m[np.arange(n_out), i] = 1 - s
    m[np.arange(n_out), i + 1] = s
    m.setflags(write=False)
    return m


def value_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth random field with about ``cells`` features across the longer side."""
    cy = max(1, int(round(cells * h / max(h, w))))
    cx = max(1, int(round(cells * w / max(h, w))))
    g = rng.standard_normal((cy + 1, cx + 1))
    out = _interp_matrix(h, cy) @ g @ _interp_matrix(w, cx).T
    return _normalise(out)


def fbm(rng, h, w, cells, octaves=3, gain=0.5):
    out = np.zeros((h, w))
    amp = 1.0
    for _ in range(octaves):
        out += amp * value_noise(rng, h, w, cells)
        cells *= 2
        amp *= gain
    return _normalise(out)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    s = np.abs(x).max()
    return x / s if s > 0 else x


def _grid(h, w):
    """Row (h, 1) and column (1, w) coordinates; broadcasting builds the full grids only
    where needed (np.mgrid is surprisingly slow for small grids)."""
    return np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :]


def pattern(rng: np.random.Generator, h: int, w: int, scale: float, kind: str | None = None) -> np.ndarray:
    """A zero-mean pattern in [-1, 1] of random ``kind``; ``scale`` is the feature size in
    pixels (so textures shrink/grow with the image)."""
    kind = kind or PATTERN_KINDS[rng.integers(len(PATTERN_KINDS))]
    yy, xx = _grid(h, w)
    n = max(h, w)
    if kind == "fbm":
        return fbm(rng, h, w, cells=max(2.0, n / scale), octaves=3)
    if kind == "wood":
        # Parallel grain lines warped by smooth noise, like planks.
        a = rng.uniform(0, math.pi)
        d = xx * math.cos(a) + yy * math.sin(a)
        warp = value_noise(rng, h, w, max(2.0, n / (3 * scale))) * rng.uniform(2, 6) * scale / 3
        freq = 2 * math.pi / (scale * rng.uniform(0.4, 0.9))
        g = np.sin(freq * (d + warp))
        g = np.sign(g) * np.abs(g) ** 0.5
        return _normalise(g + 0.5 * value_noise(rng, h, w, max(2.0, n / scale)))
    if kind == "tiles":
        t = scale * rng.uniform(1.5, 3.0)
        ox, oy = rng.uniform(0, t, 2)
        iy, ix = np.floor((yy + oy) / t).astype(int), np.floor((xx + ox) / t).astype(int)
        # Per-tile random shade + dark grout lines at tile borders.
        shades = rng.uniform(-1, 1, (iy.max() + 2, ix.max() + 2))
        g = shades[iy, ix]
        fy, fx = (yy + oy) / t - iy, (xx + ox) / t - ix
        grout = np.minimum(np.minimum(fy, 1 - fy), np.minimum(fx, 1 - fx)) * t < rng.uniform(0.4, 0.9)
        g = np.where(grout, -1.5, g)
        return _normalise(g + 0.3 * value_noise(rng, h, w, n / scale))
    if kind == "sines":
        g = np.zeros((h, w))
        for _ in range(int(rng.integers(2, 5))):
            a = rng.uniform(0, 2 * math.pi)
            f = 2 * math.pi / (scale * rng.uniform(0.7, 2.5))
            amp, ph = rng.uniform(0.4, 1), rng.uniform(0, 6.3)
            # sin(X + Y) = sin X cos Y + cos X sin Y: 1-D trig + outer products.
            fx, fy = f * math.cos(a) * xx, f * math.sin(a) * yy + ph
            g += amp * (np.cos(fy) * np.sin(fx) + np.sin(fy) * np.cos(fx))
        return _normalise(g)
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        p = scale * rng.uniform(0.8, 2.0)
        d = (xx * math.cos(a) + yy * math.sin(a)) / p
        g = ((np.floor(d) % 2) * 2 - 1).astype(np.float64)
        return _normalise(g + 0.4 * value_noise(rng, h, w, n / scale))
    if kind == "speckle":
        g = rng.standard_normal((h, w)) * 0.6 + value_noise(rng, h, w, n / scale)
        return _normalise(g)
    raise ValueError(f"unknown pattern kind {kind!r}")


def random_colour(rng: np.random.Generator, sat=(0.0, 1.0), val=(0.2, 0.95)) -> np.ndarray:
    """RGB in 0..255 drawn in HSV space (uniform hue) so palettes span greys to vivid."""
    h = rng.uniform()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def colour_direction(rng: np.random.Generator, tint: float) -> np.ndarray:
    """Unit-ish RGB direction: mostly luminance, with a random tint (wood = brown grain)."""
    d = np.ones(3) + tint * rng.standard_normal(3)
    return d / np.linalg.norm(d) * math.sqrt(3)


def colourise(rng, base: np.ndarray, amp: float, p1: np.ndarray, p2: np.ndarray | None = None) -> np.ndarray:
    """RGB field base + amp * (p1 * dir1 + 0.5 * p2 * dir2), float32 (h, w, 3)."""
    out = base[None, None, :] + amp * p1[..., None] * colour_direction(rng, 0.4)[None, None, :]
    if p2 is not None:
        out = out + 0.5 * amp * p2[..., None] * colour_direction(rng, 0.8)[None, None, :]
    return out.astype(np.float32)
