"""Sampling the static content of a video: the objects' shapes and start poses and the
arm's geometry. Lengths are in pixels, derived from S = min(height, width)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import CLASS_NAMES, SHAPE_CLASSES, PushWorldConfig
from .shapes import Shape, make_object_shape


@dataclass
class ArmGeometry:
    base: np.ndarray      # (2,) shoulder position (world px), just outside a border
    l1: float             # shoulder -> elbow
    l2: float             # elbow -> gripper centre
    r1: float             # link radii
    r2: float
    r_base: float
    elbow: float          # +1 / -1: which IK branch (elbow left/right), fixed per video
    finger_len: float
    finger_w: float
    open_min: float       # finger centre offset from the gripper axis, closed / open
    open_max: float
    palm_depth: float
    tip_lo: np.ndarray    # (2,) box the gripper centre is confined to
    tip_hi: np.ndarray

    def __post_init__(self) -> None:
        # Python-float copies for the per-sub-step clamp (numpy scalars are slow there).
        self.box = (float(self.tip_lo[0]), float(self.tip_lo[1]), float(self.tip_hi[0]), float(self.tip_hi[1]))
        self.base_xy = (float(self.base[0]), float(self.base[1]))
        self.reach = (abs(self.l1 - self.l2) + 1e-3, self.l1 + self.l2 - 1e-3)

    def contact_radius(self, opening: float) -> float:
        """Radius of the disc standing in for the gripper in contact tests: the outer
        extent of the fingers, which grows as the gripper opens."""
        off = self.open_min + opening * (self.open_max - self.open_min)
        return max(off + 0.5 * self.finger_w, 0.5 * self.finger_len)


@dataclass
class Scene:
    shapes: list          # list[Shape], object k has instance id 2 + k
    poses: np.ndarray     # (n, 3) initial x, y, angle (world px / rad)
    compliance: np.ndarray  # (n,) how easily each object rotates when pushed off-centre
    arm: ArmGeometry
    tip0: np.ndarray      # (2,) initial gripper centre


def scale_of(cfg: PushWorldConfig) -> float:
    return float(min(cfg.height, cfg.width))


def sample_arm(rng: np.random.Generator, cfg: PushWorldConfig) -> ArmGeometry:
    h, w = cfg.height, cfg.width
    s = scale_of(cfg)
    side = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
    u = rng.uniform(0.25, 0.75)
    off = 0.12 * s
    base = {0: (u * (w - 1), -off), 1: (u * (w - 1), h - 1 + off),
            2: (-off, u * (h - 1)), 3: (w - 1 + off, u * (h - 1))}[side]
    base = np.array(base, dtype=np.float64)
    m = 0.06 * s
    lo, hi = np.array([m, m]), np.array([w - 1 - m, h - 1 - m])
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]])
    reach = 1.04 * np.linalg.norm(corners - base, axis=1).max()
    # Slightly unequal links: the unreachable inner disc (radius |l1 - l2|) stays smaller
    # than the base's distance to the table, so every table point is reachable.
    split = rng.uniform(0.5, 0.54)
    return ArmGeometry(
        base=base, l1=split * reach, l2=(1 - split) * reach,
        r1=0.06 * s, r2=0.048 * s, r_base=0.075 * s,
        elbow=float(rng.choice([-1.0, 1.0])),
        finger_len=0.1 * s, finger_w=0.036 * s,
        open_min=0.022 * s, open_max=0.05 * s, palm_depth=0.035 * s,
        tip_lo=lo, tip_hi=hi,
    )


def sample_scene(rng: np.random.Generator, cfg: PushWorldConfig) -> Scene:
    s = scale_of(cfg)
    arm = sample_arm(rng, cfg)
    # Half the videos start with the gripper near its own border (arm "entering"),
    # the others anywhere on the table.
    if rng.uniform() < 0.5:
        toward = np.array([(cfg.width - 1) / 2, (cfg.height - 1) / 2]) - arm.base
        tip0 = arm.base + toward * rng.uniform(0.35, 0.6) + rng.normal(0, 0.08 * s, 2)
    else:
        tip0 = rng.uniform(arm.tip_lo, arm.tip_hi)
    tip0 = np.clip(tip0, arm.tip_lo, arm.tip_hi)

    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes, poses = [], []
    rc = arm.contact_radius(1.0)
    for _ in range(n):
        cls_name = SHAPE_CLASSES[rng.integers(len(SHAPE_CLASSES))]
        size = s * rng.uniform(0.095, 0.15) * cfg.object_scale
        shape = make_object_shape(rng, cls_name, size, CLASS_NAMES.index(cls_name))
        shapes.append(shape)
        poses.append(_place(rng, cfg, shape, shapes[:-1], poses, tip0, rc))
    compliance = rng.uniform(0.35, 0.9, n)
    return Scene(shapes, np.array(poses, dtype=np.float64).reshape(n, 3), compliance, arm, tip0)


def _place(rng, cfg, shape: Shape, others: list, poses: list, tip0, rc) -> list:
    """Rejection-sample a pose clear of other objects and of the gripper; after a bounded
    number of tries accept an overlapping pose (the physics separates it before the
    first frame). Candidates are drawn in one block and tested in plain Python."""
    r = shape.radius
    x0, y0 = r, r
    x1, y1 = max(cfg.width - 1 - r, r), max(cfg.height - 1 - r, r)  # huge object: centre
    gap = 0.03 * scale_of(cfg)
    tx, ty = float(tip0[0]), float(tip0[1])
    pose = None
    for ux, uy, ua in rng.random((60, 3)).tolist():
        x, y = x0 + (x1 - x0) * ux, y0 + (y1 - y0) * uy
        pose = [x, y, 2 * math.pi * ua]
        if math.hypot(x - tx, y - ty) < r + rc + gap:
            continue
        if all(math.hypot(x - p[0], y - p[1]) > r + o.radius + gap for o, p in zip(others, poses)):
            break
    return pose
