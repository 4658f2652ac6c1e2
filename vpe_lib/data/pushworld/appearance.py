"""Per-video appearance: table texture, object/arm colour patches, distractors.

Everything here runs once per video. Patterns are the expensive part (dozens of small
numpy calls each), so objects and distractors crop their textures out of two shared
per-video atlases instead of synthesising one pattern each.
"""

from __future__ import annotations

import math

import numpy as np

from . import textures as tx
from .config import SHAPE_CLASSES, PushWorldConfig
from .scene import ArmGeometry, scale_of
from .shapes import Capsule, Poly, Shape, make_object_shape, sdf

ARM_PALETTE = np.array([
    (205, 205, 210), (70, 70, 75), (185, 45, 40), (235, 235, 230),
    (55, 85, 165), (230, 150, 45), (120, 125, 130),
], dtype=np.float64)


def make_table(rng: np.random.Generator, cfg: PushWorldConfig, pad: int) -> np.ndarray:
    """Table texture (H + 2 pad, W + 2 pad, 3): a coarse pattern (grain, tiles, blotches)
    plus a fine one. Padding lets the camera shake by whole pixels."""
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


class Atlas:
    """Two square pattern atlases; ``crop`` returns a random, randomly flipped crop."""

    def __init__(self, rng: np.random.Generator, cfg: PushWorldConfig, min_size: int):
        s = scale_of(cfg)
        self.size = max(int(s) // 2, min_size, 8)
        self.maps = [tx.pattern(rng, self.size, self.size, scale=s * rng.uniform(0.04, 0.12)) for _ in range(2)]

    def crop(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        m = self.maps[int(rng.integers(2))]
        y0 = int(rng.integers(0, self.size - h + 1))
        x0 = int(rng.integers(0, self.size - w + 1))
        p = m[y0:y0 + h, x0:x0 + w]
        return p[::-1] if rng.uniform() < 0.5 else p[:, ::-1]


def local_grid(shape: Shape, margin: float = 1.5):
    """Texel centres covering the shape's local bbox: origin (2,), u (1, w), v (h, 1)."""
    lo = shape.lo - margin
    n = np.ceil(shape.hi + margin - lo).astype(int) + 1
    u = np.arange(n[0], dtype=np.float64)[None, :] + lo[0]
    v = np.arange(n[1], dtype=np.float64)[:, None] + lo[1]
    return lo, u, v


def patch_size(shape: Shape) -> int:
    _, u, v = local_grid(shape)
    return max(u.shape[1], v.shape[0])


def add_distractors(rng, cfg: PushWorldConfig, table: np.ndarray, atlas: Atlas, table_mean: np.ndarray) -> None:
    """Paint up to ``cfg.distractors`` static object-like blobs (stickers, stains) onto the
    table in place. They share the objects' shape and colour distributions but never
    move and are labelled background: appearance alone cannot tell them apart."""
    s = scale_of(cfg)
    h, w = table.shape[:2]
    for _ in range(int(rng.integers(0, cfg.distractors + 1))):
        cls_name = SHAPE_CLASSES[rng.integers(len(SHAPE_CLASSES))]
        shape = make_object_shape(rng, cls_name, s * rng.uniform(0.06, 0.14) * cfg.object_scale, 0, boundary=False)
        colour = object_colour(rng, cfg, table_mean)
        cx, cy = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        th = rng.uniform(0, 2 * math.pi)
        opacity = rng.uniform(0.5, 0.95)
        r = int(math.ceil(shape.radius)) + 1
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 2)
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 2)
        if x0 >= x1 or y0 >= y1 or y1 - y0 > atlas.size or x1 - x0 > atlas.size:
            continue
        yy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
        xx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
        c, sn = math.cos(th), math.sin(th)
        alpha = np.clip(0.5 - sdf(shape, c * xx + sn * yy, c * yy - sn * xx), 0, 1) * opacity
        col = tx.colourise(rng, colour, 40.0 * cfg.texture_strength, atlas.crop(rng, y1 - y0, x1 - x0))
        region = table[y0:y1, x0:x1]
        region += (col - region) * alpha[..., None].astype(np.float32)


def bake_object_patch(rng, cfg: PushWorldConfig, shape: Shape, colour: np.ndarray, atlas: Atlas):
    """Colour patch (h, w, 3) of an object in its local frame and the local coordinate
    of its first texel: texture + darkened rim (reads as a bevelled 3-D edge, and is
    rotation-invariant so it can be baked)."""
    s = scale_of(cfg)
    lo, u, v = local_grid(shape)
    col = tx.colourise(rng, colour, 50.0 * cfg.texture_strength, atlas.crop(rng, v.shape[0], u.shape[1]))
    d = sdf(shape, u, v)
    rim = 1.0 - 0.3 * np.exp(np.minimum(d, 0.0) / (0.04 * s))
    return (col * rim[..., None]).astype(np.float32), lo


def _link_patch(shape: Shape, radius: float, joint_r: float, link_col, joint_col):
    """Tube-shaded link (bright ridge, darker flanks) with a darker round joint at its
    origin."""
    lo, u, v = local_grid(shape)
    d = sdf(shape, u, v)
    rho = np.clip((d + radius) / radius, 0.0, 1.0)
    shade = 0.55 + 0.45 * np.sqrt(1.0 - rho * rho)
    shade = shade + 0.25 * np.exp(-(((v / radius) + 0.35) / 0.3) ** 2) * (rho < 1)
    col = link_col * shade[..., None]
    r_joint = np.hypot(u, v) / joint_r
    jshade = 0.6 + 0.4 * np.sqrt(np.clip(1 - r_joint ** 2, 0, 1))
    col = np.where((r_joint < 1)[..., None], joint_col * jshade[..., None], col)
    return col.astype(np.float32), lo


def bake_arm_patches(rng, cfg, arm: ArmGeometry, shapes: dict) -> dict:
    """Colour patches for link1, link2, palm and fingers (palette varies per video)."""
    s = scale_of(cfg)
    link_col = np.clip(ARM_PALETTE[rng.integers(len(ARM_PALETTE))] + rng.normal(0, 12, 3), 0, 255)
    joint_col = np.clip(np.full(3, rng.uniform(30, 90)) + rng.normal(0, 6, 3), 0, 255)
    grip_col = np.clip(np.full(3, rng.uniform(25, 160)) + rng.normal(0, 8, 3), 0, 255)
    out = {
        "link1": _link_patch(shapes["link1"], arm.r1, arm.r_base, link_col, joint_col),
        "link2": _link_patch(shapes["link2"], arm.r2, 1.25 * arm.r2, link_col, joint_col),
    }
    for name, colour in (("palm", grip_col * 0.8), ("finger_a", grip_col)):
        lo, u, v = local_grid(shapes[name])
        rim = 1.0 - 0.35 * np.exp(np.minimum(sdf(shapes[name], u, v), 0.0) / (0.02 * s))
        out[name] = ((colour * rim[..., None]).astype(np.float32), lo)
    out["finger_b"] = out["finger_a"]
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
        return Poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    finger = Shape([box(-half_len, half_len, -fw, fw)]).finalize(None)
    return {
        "link1": Shape([Capsule((0.0, 0.0), (0.0, 0.0), arm.r_base),
                        Capsule((0.0, 0.0), (arm.l1, 0.0), arm.r1)]).finalize(None),
        "link2": Shape([Capsule((0.0, 0.0), (0.0, 0.0), 1.25 * arm.r2),
                        Capsule((0.0, 0.0), (arm.l2 + x_palm0 + arm.r2, 0.0), arm.r2)]).finalize(None),
        "palm": Shape([box(x_palm0, x_palm1, -palm_half_w, palm_half_w)]).finalize(None),
        "finger_a": finger,
        "finger_b": finger,
    }
