"""Appearance (per-video textures and colours) and per-frame rasterisation.

Rendering is vectorised over time: each rigid part (object, arm link, finger) is
rasterised for all frames at once inside a fixed-size window that follows it, by
evaluating its SDF in local coordinates. The colour comes from a texture patch baked in
the part's local frame (so texture moves rigidly with the part), labels and exact flow
from the part's pose at t and t+1. Parts are painted back to front (painter's
algorithm), which gives occlusion by depth order. Shadows, illumination drift and
sensor noise are whole-video array operations at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import textures as tx
from .config import SHAPE_CLASSES, PushWorldConfig
from .scene import ArmGeometry, scale_of
from .shapes import Capsule, Poly, Shape, make_object_shape, sdf

ARM_PALETTE = np.array([
    (205, 205, 210), (70, 70, 75), (185, 45, 40), (235, 235, 230),
    (55, 85, 165), (230, 150, 45), (120, 125, 130),
], dtype=np.float64)


@dataclass
class Part:
    shape: Shape
    pose: np.ndarray      # (T, 4) image-frame centre x, y, angle, scale
    patch: np.ndarray     # (ph, pw, 3) float32 colour in the local frame
    patch_lo: np.ndarray  # (2,) local (u, v) of patch[0, 0]
    inst: int
    sem: int
    layer: int            # 0 = object (low shadow), 1 = arm (high shadow)

    def __post_init__(self) -> None:
        self.patch = np.ascontiguousarray(self.patch.transpose(2, 0, 1))  # channel-first
        self.scaled = bool(np.any(self.pose[:, 3] != 1.0))


# ------------------------------------------------------------------------ appearance
def make_table(rng: np.random.Generator, cfg: PushWorldConfig, pad: int) -> np.ndarray:
    """Table texture (H + 2 pad, W + 2 pad, 3); padding lets the camera shake by whole
    pixels while staying on textured table."""
    h, w = cfg.height + 2 * pad, cfg.width + 2 * pad
    s = scale_of(cfg)
    base = tx.random_colour(rng, sat=(0.0, 0.7), val=(0.3, 0.85))
    amp = 70.0 * cfg.texture_strength
    p1 = tx.pattern(rng, h, w, scale=s * rng.uniform(0.08, 0.25))
    p2 = tx.pattern(rng, h, w, scale=s * rng.uniform(0.03, 0.1), kind=("fbm", "speckle", "sines")[rng.integers(3)])
    return tx.colourise(rng, base, amp, p1, p2)


def object_colour(rng: np.random.Generator, cfg: PushWorldConfig, table_mean: np.ndarray) -> np.ndarray:
    """Either a colour close to the table's (hard case for colour-based segmentation)
    or a random one."""
    if rng.uniform() < cfg.colour_overlap:
        return np.clip(table_mean + rng.normal(0, 12, 3), 0, 255)
    return tx.random_colour(rng, sat=(0.1, 1.0), val=(0.2, 0.95))


def add_distractors(rng, cfg: PushWorldConfig, table: np.ndarray, pad: int, table_mean: np.ndarray) -> None:
    """Paint up to ``cfg.distractors`` static object-like blobs (stickers, stains) onto the
    table in place. They share the objects' shape and colour distributions but never
    move and are labelled background: appearance alone cannot tell them apart."""
    s = scale_of(cfg)
    h, w = table.shape[:2]
    for _ in range(int(rng.integers(0, cfg.distractors + 1))):
        cls_name = SHAPE_CLASSES[rng.integers(len(SHAPE_CLASSES))]
        shape = make_object_shape(rng, cls_name, s * rng.uniform(0.06, 0.14) * cfg.object_scale, 0)
        colour = object_colour(rng, cfg, table_mean)
        cx, cy = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        th = rng.uniform(0, 2 * math.pi)
        opacity = rng.uniform(0.5, 0.95)
        r = int(math.ceil(shape.radius)) + 1
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 2)
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        c, sn = math.cos(th), math.sin(th)
        u = c * (xx - cx) + sn * (yy - cy)
        v = c * (yy - cy) - sn * (xx - cx)
        alpha = (np.clip(0.5 - sdf(shape, u, v), 0, 1) * opacity)[..., None]
        p = tx.pattern(rng, y1 - y0, x1 - x0, scale=s * 0.06)
        col = tx.colourise(rng, colour, 40.0 * cfg.texture_strength, p)
        region = table[y0:y1, x0:x1]
        region += (col - region) * alpha.astype(np.float32)


def _local_grid(shape: Shape, margin: float = 1.5):
    lo = shape.lo - margin
    n = np.ceil(shape.hi + margin - lo).astype(int) + 1
    v, u = np.mgrid[0:n[1], 0:n[0]].astype(np.float64)
    return lo, u + lo[0], v + lo[1]


def bake_object_patch(rng, cfg: PushWorldConfig, shape: Shape, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour patch of an object: its own texture + darkened rim (reads as a bevelled
    3-D edge, and is rotation-invariant so it can be baked)."""
    s = scale_of(cfg)
    lo, u, v = _local_grid(shape)
    h, w = u.shape
    p1 = tx.pattern(rng, h, w, scale=s * rng.uniform(0.04, 0.12))
    col = tx.colourise(rng, colour, 50.0 * cfg.texture_strength, p1)
    d = sdf(shape, u, v)
    rim = 1.0 - 0.3 * np.exp(np.minimum(d, 0.0) / (0.04 * s))
    return (col * rim[..., None]).astype(np.float32), lo


def _tube_shading(shape: Shape, u, v, radius: float):
    """Cylinder-like shading across a link: bright ridge, darker flanks."""
    d = sdf(shape, u, v)
    rho = np.clip((d + radius) / radius, 0.0, 1.0)
    shade = 0.55 + 0.45 * np.sqrt(1.0 - rho * rho)
    return shade + 0.25 * np.exp(-(((v / radius) + 0.35) / 0.3) ** 2) * (rho < 1)


def bake_arm_patches(rng, cfg, arm: ArmGeometry, shapes: dict) -> dict:
    """Colour patches for link1, link2, palm and fingers."""
    s = scale_of(cfg)
    link_col = np.clip(ARM_PALETTE[rng.integers(len(ARM_PALETTE))] + rng.normal(0, 12, 3), 0, 255)
    joint_col = np.clip(np.full(3, rng.uniform(30, 90)) + rng.normal(0, 6, 3), 0, 255)
    grip_col = np.clip(np.full(3, rng.uniform(25, 160)) + rng.normal(0, 8, 3), 0, 255)
    out = {}
    for name, radius, joint_r in (("link1", arm.r1, arm.r_base), ("link2", arm.r2, 1.25 * arm.r2)):
        shape = shapes[name]
        lo, u, v = _local_grid(shape)
        grain = tx.pattern(rng, *u.shape, scale=s * 0.05, kind="stripes")
        shade = _tube_shading(shape, u, v, radius)
        col = link_col[None, None, :] * shade[..., None] + 6.0 * grain[..., None]
        joint = np.hypot(u, v) < joint_r
        jshade = 0.6 + 0.4 * np.sqrt(np.clip(1 - (np.hypot(u, v) / joint_r) ** 2, 0, 1))
        col = np.where(joint[..., None], joint_col[None, None, :] * jshade[..., None], col)
        out[name] = (col.astype(np.float32), lo)
    for name, colour in (("palm", grip_col * 0.8), ("finger_a", grip_col), ("finger_b", grip_col)):
        shape = shapes[name]
        lo, u, v = _local_grid(shape)
        d = sdf(shape, u, v)
        rim = 1.0 - 0.35 * np.exp(np.minimum(d, 0.0) / (0.02 * s))
        out[name] = ((colour[None, None, :] * rim[..., None]).astype(np.float32), lo)
    return out


def arm_shapes(arm: ArmGeometry) -> dict:
    """Local shapes of the arm's rigid parts. link1: shoulder joint + upper arm;
    link2: elbow joint + forearm ending under the palm; palm: bar across the gripper
    axis; fingers: two bars (each its own rigid part since they slide when opening)."""
    half_len = 0.5 * arm.finger_len
    palm_half_w = arm.open_max + arm.finger_w  # a little wider than the open fingers
    x_palm0, x_palm1 = -half_len - arm.palm_depth, -half_len + 0.2 * arm.palm_depth
    fw = 0.5 * arm.finger_w

    def box(x0, x1, y0, y1):
        return Poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))

    return {
        "link1": Shape([Capsule((0.0, 0.0), (0.0, 0.0), arm.r_base),
                        Capsule((0.0, 0.0), (arm.l1, 0.0), arm.r1)]).finalize(),
        "link2": Shape([Capsule((0.0, 0.0), (0.0, 0.0), 1.25 * arm.r2),
                        Capsule((0.0, 0.0), (arm.l2 + x_palm0 + arm.r2, 0.0), arm.r2)]).finalize(),
        "palm": Shape([box(x_palm0, x_palm1, -palm_half_w, palm_half_w)]).finalize(),
        "finger_a": Shape([box(-half_len, half_len, -fw, fw)]).finalize(),
        "finger_b": Shape([box(-half_len, half_len, -fw, fw)]).finalize(),
    }


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
        # Flow is interleaved (dx, dy) per pixel: the final (T, H, W, 2) needs no transpose.
        self.flow = np.broadcast_to(cam_flow[:, None, :], (t, h * w, 2)).reshape(-1).copy()
        # Soft shadow maps cast by layer 0 (objects) and layer 1 (arm), or None.
        self.shadow_offsets = shadow_offsets
        self.shadow = np.zeros((2, t * h * w), np.float32) if shadow_offsets else None


def _spans(pose: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: int, w: int, margin: float = 1.0):
    """Rasterisation spans of a posed local box [lo, hi] for all frames at once.

    Returns (row_t, row_y, row_x0, lengths) over a (T, R) grid of rows, lengths 0 for
    rows outside the box/image. Each row's x-interval is the intersection of the row
    with the two slabs of the rotated box (grown by ``margin`` px for anti-aliasing):
    visiting only these pixels is ~2-4x cheaper than an axis-aligned bounding window
    for long thin rotated links."""
    cx, cy, th, sc = pose.T
    c, s = np.cos(th), np.sin(th)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    a = half[0] * sc + margin
    b = half[1] * sc + margin
    rx = cx + sc * (c * mid[0] - s * mid[1])
    ry = cy + sc * (s * mid[0] + c * mid[1])
    ext = np.abs(s) * a + np.abs(c) * b
    y0 = np.maximum(np.ceil(ry - ext), 0.0)
    y1 = np.minimum(np.floor(ry + ext), h - 1.0)
    n_rows = (y1 - y0 + 1).astype(np.int64)
    r = int(n_rows.max())
    if r <= 0:
        return None
    y = y0[:, None] + np.arange(r)[None, :]
    dy = y - ry[:, None]
    # Slab 1: |c X + s dy| <= a and slab 2: |-s X + c dy| <= b, with X = x - rx. A tiny
    # divisor instead of 0 turns "row inside/outside the slab" into +-huge intervals.
    ci = (1.0 / np.where(np.abs(c) < 1e-9, 1e-9, c))[:, None]
    si = (-1.0 / np.where(np.abs(s) < 1e-9, 1e-9, s))[:, None]
    sdy, cdy = s[:, None] * dy, c[:, None] * dy
    p1, q1 = (-a[:, None] - sdy) * ci, (a[:, None] - sdy) * ci
    p2, q2 = (-b[:, None] - cdy) * si, (b[:, None] - cdy) * si
    lo_x = np.maximum(np.minimum(p1, q1), np.minimum(p2, q2)) + rx[:, None]
    hi_x = np.minimum(np.maximum(p1, q1), np.maximum(p2, q2)) + rx[:, None]
    x0 = np.maximum(np.ceil(np.maximum(lo_x, -1.0)), 0.0)
    x1 = np.minimum(np.floor(np.minimum(hi_x, w + 1.0)), w - 1.0)
    length = (x1 - x0 + 1).astype(np.int64)
    length[(np.arange(r)[None, :] >= n_rows[:, None]) | (length < 0)] = 0
    row_t = np.broadcast_to(np.arange(len(pose))[:, None], y.shape)
    return row_t.ravel(), y.ravel(), x0.ravel(), length.ravel()


def paint(canvas: Canvas, part: Part) -> None:
    """Paint one part in all frames: colour (anti-aliased), labels, flow, shadow."""
    t, h, w = canvas.t, canvas.h, canvas.w
    shape = part.shape
    spans = _spans(part.pose, shape.lo, shape.hi, h, w)
    if spans is None:
        return
    row_t, row_y, row_x0, length = spans
    n = int(length.sum())
    if n == 0:
        return
    cx, cy, th, sc = (a[row_t] for a in part.pose.T)
    cos, sin = np.cos(th), np.sin(th)
    # Local coordinates are affine along a row: u = u0 + du * k, v = v0 + dv * k with k
    # the offset from the row start, so per-element work is a repeat and a multiply-add.
    ex, ey = row_x0 - cx, row_y - cy
    u0 = ((cos * ex + sin * ey) / sc).astype(np.float32)
    v0 = ((cos * ey - sin * ex) / sc).astype(np.float32)
    du = (cos / sc).astype(np.float32)
    dv = (-sin / sc).astype(np.float32)
    start = np.cumsum(length) - length
    k = (np.arange(n) - np.repeat(start, length))
    idx = k + np.repeat((row_t * h + row_y.astype(np.int64)) * w + row_x0.astype(np.int64), length)
    kf = k.astype(np.float32)
    u = np.repeat(u0, length) + np.repeat(du, length) * kf
    v = np.repeat(v0, length) + np.repeat(dv, length) * kf
    d = sdf(shape, u, v)
    if part.scaled:
        d *= np.repeat(sc.astype(np.float32), length)

    # Colour: coverage-weighted blend of the local texture patch (nearest texel).
    alpha = np.minimum(np.maximum(0.5 - d, 0.0), 1.0)
    ph, pw = part.patch.shape[1:]
    tex_i = ((v - part.patch_lo[1] + 0.5).astype(np.int64) * pw
             + (u - part.patch_lo[0] + 0.5).astype(np.int64))
    tex = part.patch.reshape(3, -1).take(tex_i, axis=1, mode="clip")
    cur = canvas.colour.take(idx, axis=1)
    cur += (tex - cur) * alpha
    for ch in range(3):
        canvas.colour[ch][idx] = cur[ch]

    # Labels and flow where the pixel centre is inside.
    inside = d < 0
    ii = idx[inside]
    canvas.inst[ii] = part.inst
    canvas.sem[ii] = part.sem
    # Exact similarity motion: local point q is at c + s R(th) q at t and at
    # c' + s' R(th') q at t + 1, so flow = (c' - c) + (s' R' - s R) q. The last frame
    # maps to itself (zero flow).
    nxt = np.concatenate([part.pose[1:], part.pose[-1:]], axis=0)
    ma = nxt[:, 3] * np.cos(nxt[:, 2]) - part.pose[:, 3] * np.cos(part.pose[:, 2])
    mb = nxt[:, 3] * np.sin(nxt[:, 2]) - part.pose[:, 3] * np.sin(part.pose[:, 2])
    elem_t = np.repeat(row_t, length)[inside]
    ui, vi = u[inside], v[inside]
    fx = (nxt[:, 0] - part.pose[:, 0]).astype(np.float32).take(elem_t)
    fy = (nxt[:, 1] - part.pose[:, 1]).astype(np.float32).take(elem_t)
    a32, b32 = ma.astype(np.float32).take(elem_t), mb.astype(np.float32).take(elem_t)
    ii2 = ii * 2
    canvas.flow[ii2] = fx + a32 * ui - b32 * vi
    canvas.flow[ii2 + 1] = fy + b32 * ui + a32 * vi

    if canvas.shadow is not None:
        _cast_shadow(canvas, part, d, idx, k, length, row_x0, row_y)


def _cast_shadow(canvas: Canvas, part: Part, d, idx, k, length, row_x0, row_y) -> None:
    """Soft shadow = the part's silhouette shifted along the light direction, with a
    penumbra taken from the SDF (no image-space blur needed)."""
    h, w = canvas.h, canvas.w
    ox, oy, soft = canvas.shadow_offsets[part.layer]
    x = k + np.repeat(row_x0.astype(np.int64) + ox, length)
    y_ok = np.repeat((row_y + oy >= 0) & (row_y + oy <= h - 1), length)
    ok = (d < 0) & y_ok & (x >= 0) & (x <= w - 1)
    j = idx[ok] + (oy * w + ox)
    val = np.minimum(-d[ok] * (1.0 / soft), 1.0)
    layer = canvas.shadow[part.layer]
    layer[j] = np.maximum(layer.take(j), val)


# --------------------------------------------------------------------- post effects
def shadow_offsets(rng, cfg: PushWorldConfig) -> tuple:
    """Per-layer (dx, dy, penumbra) of cast shadows for one light direction per video:
    objects sit on the table (short shadows), the arm is raised (long, softer ones)."""
    s = scale_of(cfg)
    a = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(a), math.sin(a)
    return tuple((int(round(k * s * ux)), int(round(k * s * uy)), soft * s)
                 for k, soft in ((0.04, 0.05), (0.1, 0.07)))


def shadow_factor(cfg: PushWorldConfig, canvas: Canvas) -> np.ndarray:
    """Multiplicative darkening (T*H*W,): the table receives both layers' shadows,
    objects only the arm's, the arm none."""
    inst = canvas.inst
    sh_obj, sh_arm = canvas.shadow
    dark = np.where(inst == 0, np.maximum(sh_obj, sh_arm), sh_arm * (inst >= 2))
    return 1.0 - cfg.shadow_strength * dark


def illumination(rng, cfg: PushWorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """Slow global light drift: per-frame RGB gain (T, 3) and spatial gradient
    (T*H*W,). Periods are in frames, so longer videos simply see more drift."""
    t_len, h, w = cfg.n_frames, cfg.height, cfg.width
    amp = cfg.illumination_change
    t = np.arange(t_len)[:, None]

    def drift(k):
        per = rng.uniform(25, 90, k)
        ph = rng.uniform(0, 2 * math.pi, k)
        return np.sin(2 * math.pi * t / per + ph).mean(axis=1)

    bright = drift(2)
    colour = np.stack([drift(1) for _ in range(3)], axis=1)
    gain = 1.0 + amp * (bright[:, None] + 0.35 * colour)
    ang = rng.uniform(0, 2 * math.pi) + 0.5 * drift(1)
    mag = amp * rng.uniform(0.3, 1.0)
    s = scale_of(cfg)
    gx = (mag * np.cos(ang) / s)[:, None, None]
    gy = (mag * np.sin(ang) / s)[:, None, None]
    xx = (np.arange(w) - (w - 1) / 2)[None, None, :]
    yy = (np.arange(h) - (h - 1) / 2)[None, :, None]
    spatial = 1.0 + gx * xx + gy * yy
    return gain.astype(np.float32), spatial.astype(np.float32).reshape(-1)


def camera_offsets(rng, cfg: PushWorldConfig) -> tuple[np.ndarray, int]:
    """Integer per-frame camera offsets (T, 2) and the table padding they need. Whole
    pixels keep the table's flow exact (no resampling)."""
    if cfg.camera_shake <= 0:
        return np.zeros((cfg.n_frames, 2), np.int64), 0
    lim = int(math.ceil(1.5 * cfg.camera_shake))
    cam = np.clip(np.rint(rng.normal(0, cfg.camera_shake, (cfg.n_frames, 2))), -lim, lim)
    return cam.astype(np.int64), lim
