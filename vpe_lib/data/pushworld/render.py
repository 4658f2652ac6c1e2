"""Rasterisation of posed parts and the whole-video post effects.

Rendering is vectorised over time and parts: every rigid part (object, arm link, palm,
finger) in every frame is scan-converted into pixel spans covering its rotated local
bounding box, and its SDF is evaluated in local coordinates at those pixels. Colour
comes from a texture patch baked in the part's local frame (so texture moves rigidly
with the part); labels and exact flow come from the part's pose at t and t + 1. Parts
are painted back to front (painter's algorithm), which gives occlusion by depth order.
Shadows are shifted soft silhouettes; illumination drift and sensor noise are applied
to the whole video at the end (see generate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import PushWorldConfig
from .scene import scale_of
from .shapes import Shape, sdf


@dataclass
class Part:
    """One rigid (similarity-transformed) body to paint, with its per-frame poses."""

    shape: Shape
    pose: np.ndarray      # (T, 4) image-frame origin x, y, angle, scale
    patch: np.ndarray     # (ph, pw, 3) float32 colour in the local frame (stored channel-first)
    patch_lo: np.ndarray  # (2,) local (u, v) of patch[0, 0]
    inst: int
    sem: int
    layer: int            # 0 = object (low shadow), 1 = arm (high shadow)
    casts_shadow: bool = True  # tiny parts (fingers) skip it: invisible under the palm's

    def __post_init__(self) -> None:
        self.patch = np.ascontiguousarray(self.patch.transpose(2, 0, 1))  # channel-first
        self.scaled = bool(np.any(self.pose[:, 3] != 1.0))


# --------------------------------------------------------------------- rasterisation
class Canvas:
    """Flat per-pixel buffers (index = (t * H + y) * W + x) the parts are painted into.
    Colour is channel-first so per-channel gathers/scatters and the whole-video light
    multiplications run on contiguous memory."""

    def __init__(self, colour: np.ndarray, cam_flow: np.ndarray, shadow_offsets=None):
        _, t, h, w = colour.shape
        self.t, self.h, self.w = t, h, w
        self.colour = colour.reshape(3, -1)
        self.inst = np.zeros(t * h * w, np.uint8)
        self.sem = np.zeros(t * h * w, np.uint8)
        # Flow is stored as the final float16 (T, H, W, 2), flattened: interleaved (dx, dy)
        # per pixel, so no transpose or cast is needed at the end.
        self.flow = np.zeros(t * h * w * 2, np.float16)
        if np.any(cam_flow):
            self.flow.reshape(t, h * w, 2)[:] = cam_flow[:, None, :]
        # Soft shadow maps cast by layer 0 (objects) and layer 1 (arm), or None. They are
        # padded by the largest offset so shifted silhouettes never need bounds checks.
        self.shadow_offsets = shadow_offsets
        self.shadow = None
        if shadow_offsets:
            self.pad = max(max(abs(ox), abs(oy)) for ox, oy, _ in shadow_offsets)
            hp, wp = h + 2 * self.pad, w + 2 * self.pad
            self.shadow = np.zeros((2, t, hp, wp), np.float32)


def _spans(pose: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: int, w: int, margin: float = 0.5):
    """Rasterisation spans of posed local boxes, for many (part, frame) poses at once.

    pose (N, 4) as (x, y, angle, scale); lo, hi (N, 2) local boxes. Returns per-row
    arrays (pose index, y, first x, length) ordered by pose then y; length is 0 for
    rows that miss the box or the image. A row's x-interval is its intersection with the two slabs of the
    rotated box, grown by ``margin`` px since anti-aliasing covers pixels with
    SDF < 0.5. Visiting only these pixels is 2-4x cheaper than an axis-aligned
    window for long thin rotated links."""
    cx, cy, th, sc = pose.T
    c, s = np.cos(th), np.sin(th)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    a = half[:, 0] * sc + margin
    b = half[:, 1] * sc + margin
    rx = cx + sc * (c * mid[:, 0] - s * mid[:, 1])
    ry = cy + sc * (s * mid[:, 0] + c * mid[:, 1])
    ext = np.abs(s) * a + np.abs(c) * b
    y0 = np.maximum(np.ceil(ry - ext), 0.0)
    y1 = np.minimum(np.floor(ry + ext), h - 1.0)
    n_rows = np.maximum(y1 - y0 + 1, 0).astype(np.int64)
    # Ragged rows: pose index of each row, then per-row quantities by gather (parts
    # differ a lot in height, so a dense (N, max rows) grid would be mostly padding).
    row_i = np.repeat(np.arange(len(pose)), n_rows)
    y = y0.take(row_i) + (np.arange(len(row_i)) - (np.cumsum(n_rows) - n_rows).take(row_i))
    c, s, a, b, rx = c.take(row_i), s.take(row_i), a.take(row_i), b.take(row_i), rx.take(row_i)
    dy = y - ry.take(row_i)
    # Slab 1: |c X + s dy| <= a and slab 2: |-s X + c dy| <= b, with X = x - rx. A tiny
    # divisor instead of 0 turns "row inside/outside the slab" into +-huge intervals.
    ci = 1.0 / np.where(np.abs(c) < 1e-9, 1e-9, c)
    si = -1.0 / np.where(np.abs(s) < 1e-9, 1e-9, s)
    sdy, cdy = s * dy, c * dy
    p1, q1 = (-a - sdy) * ci, (a - sdy) * ci
    p2, q2 = (-b - cdy) * si, (b - cdy) * si
    lo_x = np.maximum(np.minimum(p1, q1), np.minimum(p2, q2)) + rx
    hi_x = np.minimum(np.maximum(p1, q1), np.maximum(p2, q2)) + rx
    x0 = np.maximum(np.ceil(np.maximum(lo_x, -1.0)), 0.0)
    x1 = np.minimum(np.floor(np.minimum(hi_x, w + 1.0)), w - 1.0)
    length = np.maximum(x1 - x0 + 1, 0).astype(np.int64)
    return row_i, y, x0, length


def paint_all(canvas: Canvas, parts: list) -> None:
    """Paint all parts, back to front: colour (anti-aliased), labels, exact flow and
    cast shadows.

    Geometry that does not depend on painting order (spans, local coordinates, flow
    of every visited pixel) is computed for all parts in one batch: per-call numpy
    overhead, not arithmetic, dominates at 64x64. Only the SDF (shape-specific) and
    the order-dependent writes run per part."""
    if not parts:
        return
    t, h, w = canvas.t, canvas.h, canvas.w
    pose = np.concatenate([p.pose for p in parts])  # (P*T, 4), part-major
    lo = np.repeat(np.array([p.shape.lo for p in parts]), t, axis=0)
    hi = np.repeat(np.array([p.shape.hi for p in parts]), t, axis=0)
    row_i, row_y, row_x0, length = _spans(pose, lo, hi, h, w)
    keep = np.flatnonzero(length)  # drop empty rows: row-level work scales with rows
    row_i, row_y, row_x0, length = row_i[keep], row_y[keep], row_x0[keep], length[keep]
    n = int(length.sum())
    if n == 0:
        return

    # Per-pixel row id via a single np.repeat; every other per-row quantity is then
    # gathered with take(), which is much cheaper than repeat() for short rows.
    rid = np.repeat(np.arange(len(length)), length)
    start = np.cumsum(length) - length
    ar = np.arange(n)
    k = ar - start.take(rid)  # offset within the row
    row_t = row_i % t
    idx = ar + ((row_t * h + row_y.astype(np.int64)) * w + row_x0.astype(np.int64) - start).take(rid)
    # Local coordinates are affine along a row: u = u0 + du * k, v = v0 + dv * k.
    cx, cy, th, sc = pose[row_i].T
    cos, sin = np.cos(th), np.sin(th)
    ex, ey = row_x0 - cx, row_y - cy
    u0, v0 = (cos * ex + sin * ey) / sc, (cos * ey - sin * ex) / sc
    du, dv = cos / sc, -sin / sc
    # Exact similarity motion: local point q is at c + s R(th) q at t and at
    # c' + s' R(th') q at t + 1, so flow = (c' - c) + (s' R' - s R) q, which is affine
    # along a row too. The last frame maps to itself (zero flow).
    pp = pose.reshape(len(parts), t, 4)
    nxt = np.concatenate([pp[:, 1:], pp[:, -1:]], axis=1).reshape(-1, 4)[row_i]
    f0x, f0y = nxt[:, 0] - cx, nxt[:, 1] - cy
    fa = nxt[:, 3] * np.cos(nxt[:, 2]) - sc * cos
    fb = nxt[:, 3] * np.sin(nxt[:, 2]) - sc * sin
    per_row = np.stack([u0, du, v0, dv,
                        f0x + fa * u0 - fb * v0, fa * du - fb * dv,
                        f0y + fb * u0 + fa * v0, fb * du + fa * dv]).astype(np.float32)
    u0, du, v0, dv, fx0, fxk, fy0, fyk = per_row.take(rid, axis=1)
    kf = k.astype(np.float32)
    u = u0 + du * kf
    v = v0 + dv * kf
    # Converted to the output's float16 here, in one batch: scattering float32 into a
    # float16 array converts element by element and is ~2x slower.
    flow_x = (fx0 + fxk * kf).astype(np.float16)
    flow_y = (fy0 + fyk * kf).astype(np.float16)
    if canvas.shadow is not None:  # flat index into the padded shadow maps
        pad = canvas.pad
        hp, wp = h + 2 * pad, w + 2 * pad
        idx_pad = ar + ((row_t * hp + row_y.astype(np.int64) + pad) * wp + row_x0.astype(np.int64) + pad
                        - start).take(rid)
    scale = sc.astype(np.float32).take(rid) if any(p.scaled for p in parts) else None

    # Rows are part-major, so each part's pixels are one contiguous slice.
    row_bounds = np.searchsorted(row_i, np.arange(len(parts) + 1) * t)
    bounds = np.append(start, n)[row_bounds]
    for p, part in enumerate(parts):
        sl = slice(int(bounds[p]), int(bounds[p + 1]))
        if sl.start < sl.stop:
            _paint_part(canvas, part, idx[sl], u[sl], v[sl], flow_x[sl], flow_y[sl],
                        None if canvas.shadow is None else idx_pad[sl],
                        scale[sl] if part.scaled else None)


def _paint_part(canvas: Canvas, part: Part, idx, u, v, flow_x, flow_y, idx_pad, scale) -> None:
    """The order-dependent writes of one part over its visited pixels."""
    d = sdf(part.shape, u, v)
    if scale is not None:
        d *= scale
    _composite(canvas, part, idx, u, v, d)
    inside = d < 0
    ii = idx[inside]
    canvas.inst[ii] = part.inst
    canvas.sem[ii] = part.sem
    ii2 = ii * 2
    canvas.flow[ii2] = flow_x[inside]
    canvas.flow[ii2 + 1] = flow_y[inside]
    if idx_pad is not None and part.casts_shadow:
        _cast_shadow(canvas, part, idx_pad[inside], d[inside])


def _composite(canvas: Canvas, part: Part, idx, u, v, d) -> None:
    """Paint the part's texture patch (nearest texel) over the canvas; painter's order
    makes this the occlusion. Pixels well inside (coverage 1, about half) are written
    directly; only the anti-aliased rim is blended with what lies below."""
    ph, pw = part.patch.shape[1:]
    tex_i = ((v - part.patch_lo[1] + 0.5).astype(np.int64) * pw
             + (u - part.patch_lo[0] + 0.5).astype(np.int64))
    patch = part.patch.reshape(3, -1)
    colour = canvas.colour
    inner = d <= -0.5
    rim = (d < 0.5) ^ inner  # 0 < coverage < 1
    ii = idx[inner]
    tex = patch.take(tex_i[inner], axis=1, mode="clip")
    for ch in range(3):
        colour[ch][ii] = tex[ch]
    ir = idx[rim]
    alpha = 0.5 - d[rim]
    tex = patch.take(tex_i[rim], axis=1, mode="clip")
    cur = colour.take(ir, axis=1)
    cur += (tex - cur) * alpha
    for ch in range(3):
        colour[ch][ir] = cur[ch]


def _cast_shadow(canvas: Canvas, part: Part, idx_pad: np.ndarray, d_inside: np.ndarray) -> None:
    """Soft shadow = the silhouette shifted along the light direction, with a penumbra
    taken from the SDF (no image-space blur). Overlapping shadows combine with max."""
    ox, oy, soft = canvas.shadow_offsets[part.layer]
    _, t, hp, wp = canvas.shadow.shape
    target = idx_pad + (part.layer * t * hp * wp + oy * wp + ox)
    np.maximum.at(canvas.shadow.reshape(-1), target, np.minimum(d_inside * np.float32(-1.0 / soft), 1.0))


# --------------------------------------------------------------------- post effects
def shadow_offsets(rng, cfg: PushWorldConfig) -> tuple:
    """Per-layer (dx, dy, penumbra) of cast shadows for one light direction per video:
    objects sit on the table (short shadows), the arm is raised (long, softer ones)."""
    s = scale_of(cfg)
    a = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(a), math.sin(a)
    return tuple((int(round(k * s * ux)), int(round(k * s * uy)), soft * s)
                 for k, soft in ((0.04, 0.05), (0.1, 0.07)))


def shadow_factor(cfg: PushWorldConfig, canvas: Canvas, t0: int, t1: int) -> np.ndarray:
    """Multiplicative darkening of frames [t0, t1), (t1 - t0, H, W): the table receives
    both layers' shadows, objects only the arm's, the arm none."""
    p, h, w = canvas.pad, canvas.h, canvas.w
    inst = canvas.inst.reshape(canvas.t, h, w)[t0:t1]
    sh_obj = canvas.shadow[0, t0:t1, p:p + h, p:p + w]
    sh_arm = canvas.shadow[1, t0:t1, p:p + h, p:p + w]
    dark = np.where(inst == 0, np.maximum(sh_obj, sh_arm), sh_arm * (inst >= 2))
    return 1.0 - np.float32(cfg.shadow_strength) * dark


def illumination(rng, cfg: PushWorldConfig):
    """Slow global light drift: per-frame RGB gain (T, 3) and the per-frame spatial
    light gradient (gx, gy), each (T, 1, 1), in gain per pixel from the centre.
    Periods are in frames, so longer videos simply see more drift."""
    amp = cfg.illumination_change
    t = np.arange(cfg.n_frames)[:, None]
    # Eight slow sinusoids: 2 for brightness, 3 for per-channel tint, 1 for the light
    # direction (the rest pad the draw to a fixed size).
    waves = np.sin(2 * math.pi * t / rng.uniform(25, 90, 8) + rng.uniform(0, 2 * math.pi, 8))
    gain = 1.0 + amp * (waves[:, :2].mean(axis=1, keepdims=True) + 0.35 * waves[:, 2:5])
    ang = rng.uniform(0, 2 * math.pi) + 0.5 * waves[:, 5]
    mag = amp * rng.uniform(0.3, 1.0) / scale_of(cfg)
    gx = (mag * np.cos(ang)).astype(np.float32)[:, None, None]
    gy = (mag * np.sin(ang)).astype(np.float32)[:, None, None]
    return gain.astype(np.float32), gx, gy


def camera_offsets(rng, cfg: PushWorldConfig) -> tuple[np.ndarray, int]:
    """Integer per-frame camera offsets (T, 2) and the table padding they need. Whole
    pixels keep the table's flow exact (no resampling)."""
    if cfg.camera_shake <= 0:
        return np.zeros((cfg.n_frames, 2), np.int64), 0
    lim = int(math.ceil(1.5 * cfg.camera_shake))
    cam = np.clip(np.rint(rng.normal(0, cfg.camera_shake, (cfg.n_frames, 2))), -lim, lim)
    return cam.astype(np.int64), lim
