"""Kinematic simulation: the arm's gripper follows smooth random waypoints and pushes
objects it touches; objects push each other and stay on the table.

No dynamics: each sub-step moves the gripper, then resolves penetrations by moving the
objects out of the way (translation along the contact normal, plus a rotation from the
off-centre lever arm, which is what quasi-static pushing with friction looks like).
Scalar Python math on a handful of bodies is faster here than numpy on tiny arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import PushWorldConfig
from .scene import ArmGeometry, Scene, scale_of
from .shapes import Shape, closest_point, sdf_normals

LIFT_CONTACT = 0.3      # gripper heights above this clear the objects
TOGGLE_PROB = 0.06      # per-frame probability of flipping the gripper open/close command
LIFT_PROB = 0.2         # probability a free-move segment is done with the gripper raised
MAX_SEGMENT_FRAMES = 24  # give up on a waypoint after this long


@dataclass
class Trajectory:
    tip: np.ndarray        # (T, 2) gripper centre, world px
    opening: np.ndarray    # (T,) 0 closed .. 1 open
    lift: np.ndarray       # (T,) 0 on the table .. 1 raised
    grip_cmd: np.ndarray   # (T,) +1 close / -1 open command issued at frame t
    theta1: np.ndarray     # (T,) shoulder link angle
    phi2: np.ndarray       # (T,) forearm link absolute angle
    elbow: np.ndarray      # (T, 2) elbow position
    obj_pose: np.ndarray   # (T, n, 3) x, y, angle


# ----------------------------------------------------------------------------- the arm
def clamp_tip(arm: ArmGeometry, x: float, y: float) -> tuple[float, float]:
    """Keep the gripper over the table and inside the arm's reachable annulus."""
    x0, y0, x1, y1 = arm.box
    x = min(max(x, x0), x1)
    y = min(max(y, y0), y1)
    bx, by = arm.base_xy
    dx, dy = x - bx, y - by
    r = math.hypot(dx, dy)
    rmin, rmax = arm.reach
    if r < rmin or r > rmax:
        k = min(max(r, rmin), rmax) / max(r, 1e-9)
        x, y = bx + dx * k, by + dy * k
    return x, y


def inverse_kinematics(arm: ArmGeometry, tip: np.ndarray):
    """Analytic two-link IK (vectorised over frames). Returns shoulder angle, absolute
    forearm angle and elbow position; the elbow branch is fixed per video so the arm
    never flips."""
    d = tip - arm.base
    r = np.clip(np.hypot(d[:, 0], d[:, 1]), abs(arm.l1 - arm.l2) + 1e-6, arm.l1 + arm.l2 - 1e-6)
    cos2 = np.clip((r * r - arm.l1 ** 2 - arm.l2 ** 2) / (2 * arm.l1 * arm.l2), -1, 1)
    q2 = arm.elbow * np.arccos(cos2)
    q1 = np.arctan2(d[:, 1], d[:, 0]) - np.arctan2(arm.l2 * np.sin(q2), arm.l1 + arm.l2 * np.cos(q2))
    elbow = arm.base + arm.l1 * np.stack([np.cos(q1), np.sin(q1)], axis=1)
    return q1, q1 + q2, elbow


# ------------------------------------------------------------------------- contacts
def _push_by_gripper(shape: Shape, pose: list, gx: float, gy: float, rc: float, kappa: float):
    """If the gripper disc (centre g, radius rc) overlaps the object, move the object out
    of it. Returns the push (dx, dy) applied, or None without contact."""
    ox, oy, th = pose
    if math.hypot(gx - ox, gy - oy) >= shape.radius + rc:
        return None
    c, s = math.cos(th), math.sin(th)
    lx = c * (gx - ox) + s * (gy - oy)
    ly = -s * (gx - ox) + c * (gy - oy)
    sd, qx, qy = closest_point(shape, lx, ly)
    if sd >= rc:
        return None
    # Push direction: away from the gripper (outside) or towards the nearest exit (inside).
    nx, ny = (qx - lx, qy - ly) if sd > 0 else (lx - qx, ly - qy)
    nn = math.hypot(nx, ny)
    if nn < 1e-9:
        nx, ny, nn = -lx, -ly, max(math.hypot(lx, ly), 1e-9)
    pen = rc - sd
    dx = pen * (c * nx - s * ny) / nn
    dy = pen * (s * nx + c * ny) / nn
    # Lever arm from the centre to the contact point gives the rotation.
    rx, ry = c * qx - s * qy, s * qx + c * qy
    dth = kappa * (rx * dy - ry * dx) / (shape.radius ** 2)
    pose[0] += dx
    pose[1] += dy
    pose[2] += dth
    return dx, dy


def _world_boundary(shape: Shape, pose) -> np.ndarray:
    c, s = math.cos(pose[2]), math.sin(pose[2])
    b = shape.boundary
    return np.stack([pose[0] + c * b[:, 0] - s * b[:, 1], pose[1] + s * b[:, 0] + c * b[:, 1]], axis=1)


def _deepest(shape_in: Shape, pose_in, pts: np.ndarray):
    """Deepest of world points ``pts`` inside ``shape_in``: (depth, outward normal, point)."""
    c, s = math.cos(pose_in[2]), math.sin(pose_in[2])
    d = pts - np.array(pose_in[:2])
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
    sd, nrm = sdf_normals(shape_in, local)
    k = int(sd.argmin())
    if sd[k] >= 0:
        return 0.0, None, None
    n = nrm[k]
    return float(-sd[k]), (c * n[0] - s * n[1], s * n[0] + c * n[1]), pts[k]


def _separate(sa: Shape, pa: list, ka: float, sb: Shape, pb: list, kb: float) -> bool:
    """Push two overlapping objects apart, half each, along the deepest contact normal.
    Returns whether they overlapped (and so moved)."""
    if math.hypot(pa[0] - pb[0], pa[1] - pb[1]) >= sa.radius + sb.radius:
        return False
    da, na, xa = _deepest(sb, pb, _world_boundary(sa, pa))  # a's outline inside b
    db, nb, xb = _deepest(sa, pa, _world_boundary(sb, pb))  # b's outline inside a
    if da == 0 and db == 0:
        return False
    if da >= db:  # a moves along b's outward normal
        depth, (nx, ny), x = da, na, xa
    else:
        depth, (nx, ny), x = db, (-nb[0], -nb[1]), xb
    step = 0.5 * depth + 0.05
    for shape, pose, kappa, sign in ((sa, pa, ka, 1.0), (sb, pb, kb, -1.0)):
        dx, dy = sign * step * nx, sign * step * ny
        rx, ry = x[0] - pose[0], x[1] - pose[1]
        pose[0] += dx
        pose[1] += dy
        pose[2] += 0.5 * kappa * (rx * dy - ry * dx) / shape.radius ** 2
    return True


def _keep_on_table(shape: Shape, pose: list, w: int, h: int) -> None:
    """Shift the object so its outline lies inside [0, w-1] x [0, h-1]."""
    r = shape.radius
    if r <= pose[0] <= w - 1 - r and r <= pose[1] <= h - 1 - r:
        return
    b = _world_boundary(shape, [0.0, 0.0, pose[2]])
    (x0, y0), (x1, y1) = b.min(axis=0), b.max(axis=0)
    for i, lo, hi in ((0, -x0, w - 1 - x1), (1, -y0, h - 1 - y1)):
        pose[i] = (lo + hi) / 2 if lo > hi else min(max(pose[i], lo), hi)


# ---------------------------------------------------------------------- the controller
class _Controller:
    """Gripper state and waypoint policy (smoothly accelerating point follower)."""

    def __init__(self, rng: np.random.Generator, cfg: PushWorldConfig, scene: Scene):
        self.rng, self.cfg, self.scene, self.arm = rng, cfg, scene, scene.arm
        self.s = scale_of(cfg)
        self.x, self.y = clamp_tip(self.arm, *scene.tip0)
        self.vx = self.vy = 0.0
        self.vmax = rng.uniform(0.035, 0.07) * self.s * cfg.arm_speed  # px / frame
        self.z = 0.0
        self.z_target = 0.0
        self.cmd = float(rng.choice([-1.0, 1.0]))
        self.opening = 1.0 if self.cmd < 0 else 0.0
        self.blocked = False
        self.new_waypoint([])

    def new_waypoint(self, poses: list) -> None:
        rng, arm = self.rng, self.arm
        self.seg_frames = 0
        self.blocked = False
        if poses and rng.uniform() < self.cfg.push_bias:
            # Aim through a random object, slightly off-centre, so it gets pushed (and
            # rotated) for a while before the waypoint is reached.
            k = int(rng.integers(len(poses)))
            ox, oy = poses[k][0], poses[k][1]
            a = math.atan2(oy - self.y, ox - self.x) + rng.uniform(-0.35, 0.35)
            dist = self.scene.shapes[k].radius + rng.uniform(0.1, 0.3) * self.s
            wx, wy = ox + dist * math.cos(a), oy + dist * math.sin(a)
            self.z_target = 0.0
        else:
            wx, wy = rng.uniform(arm.tip_lo, arm.tip_hi)
            self.z_target = 1.0 if rng.uniform() < LIFT_PROB else 0.0
        self.wx, self.wy = clamp_tip(arm, wx, wy)

    def frame_update(self, poses: list) -> None:
        """Once-per-frame decisions: gripper command toggles, waypoint switching."""
        if self.rng.uniform() < TOGGLE_PROB:
            self.cmd = -self.cmd
        self.seg_frames += 1
        reached = math.hypot(self.wx - self.x, self.wy - self.y) < 0.05 * self.s
        if reached or self.blocked or self.seg_frames > MAX_SEGMENT_FRAMES:
            self.new_waypoint(poses)

    def move(self, k_sub: int) -> None:
        """One sub-step of the point follower: desired velocity towards the waypoint,
        slowing on approach, low-passed so the path is smooth."""
        dx, dy = self.wx - self.x, self.wy - self.y
        dist = math.hypot(dx, dy)
        speed = min(self.vmax, 0.3 * dist)
        vdx, vdy = (dx / dist * speed, dy / dist * speed) if dist > 1e-9 else (0.0, 0.0)
        a = 1.0 - 0.6 ** (1.0 / k_sub)  # ~40% of the way to the desired velocity per frame
        self.vx += (vdx - self.vx) * a
        self.vy += (vdy - self.vy) * a
        v = math.hypot(self.vx, self.vy)
        if v > self.vmax:
            self.vx *= self.vmax / v
            self.vy *= self.vmax / v
        self.x, self.y = clamp_tip(self.arm, self.x + self.vx / k_sub, self.y + self.vy / k_sub)
        target_open = 1.0 if self.cmd < 0 else 0.0
        self.opening += (target_open - self.opening) * (1.0 - 0.6 ** (1.0 / k_sub))
        dz = max(-0.2, min(0.2, self.z_target - self.z)) / k_sub
        self.z += dz


def simulate(rng: np.random.Generator, cfg: PushWorldConfig, scene: Scene) -> Trajectory:
    t_len, k_sub = cfg.n_frames, cfg.physics_substeps
    shapes, arm = scene.shapes, scene.arm
    kappa = [float(k) for k in scene.compliance]
    poses = [list(map(float, p)) for p in scene.poses]
    n = len(shapes)
    # Settle the initial placement (rejection sampling may have left overlaps) before
    # the first frame is recorded, so frame 0 -> 1 shows no jump.
    _relax(shapes, poses, kappa, cfg, set(range(n)), sweeps=8)
    ctl = _Controller(rng, cfg, scene)

    tip = np.zeros((t_len, 2))
    opening, lift, cmd = np.zeros(t_len), np.zeros(t_len), np.zeros(t_len)
    obj_pose = np.zeros((t_len, n, 3))
    for t in range(t_len):
        tip[t] = ctl.x, ctl.y
        opening[t], lift[t], cmd[t] = ctl.opening, ctl.z, ctl.cmd
        if n:
            obj_pose[t] = poses
        if t == t_len - 1:
            break
        ctl.frame_update(poses)
        for _ in range(k_sub):
            _substep(ctl, shapes, poses, kappa, cfg, k_sub)
    q1, phi2, elbow = inverse_kinematics(arm, tip)
    return Trajectory(tip, opening, lift, cmd, q1, phi2, elbow, obj_pose)


def _relax(shapes, poses, kappa, cfg, active: set, sweeps: int = 2) -> None:
    """Resolve object-object overlaps and keep objects on the table. Only pairs with a
    body that moved need checking (objects at rest stay separated), which makes the
    common case, an arm moving through free space, nearly free."""
    n = len(shapes)
    for _ in range(sweeps):
        if not active:
            return
        touched = set()
        for i in range(n):
            for j in range(i + 1, n):
                if (i in active or j in active) and _separate(
                        shapes[i], poses[i], kappa[i], shapes[j], poses[j], kappa[j]):
                    touched.add(i)
                    touched.add(j)
        for i in active | touched:
            _keep_on_table(shapes[i], poses[i], cfg.width, cfg.height)
        active = touched


def _substep(ctl: _Controller, shapes, poses, kappa, cfg, k_sub) -> None:
    z_before = ctl.z
    ctl.move(k_sub)
    rc = ctl.arm.contact_radius(ctl.opening)
    if ctl.z < LIFT_CONTACT <= z_before:
        # Lowering onto an object would teleport it: hold the gripper up until clear.
        if any(closest_point_world(s, p, ctl.x, ctl.y, rc) < rc for s, p in zip(shapes, poses)):
            ctl.z = LIFT_CONTACT
    if ctl.z >= LIFT_CONTACT:
        return
    gx, gy = ctl.x, ctl.y
    pushed = {i for i, (shape, pose, k) in enumerate(zip(shapes, poses, kappa))
              if math.hypot(gx - pose[0], gy - pose[1]) < shape.radius + rc  # cheap early-out
              and _push_by_gripper(shape, pose, gx, gy, rc, k) is not None}
    if pushed:
        _relax(shapes, poses, kappa, cfg, pushed)
        _back_off(ctl, shapes, poses, rc)


def closest_point_world(shape: Shape, pose, x: float, y: float, margin: float) -> float:
    """Signed distance from world point (x, y) to the posed shape; inf when farther than
    ``margin`` from its bounding circle (cheap early-out)."""
    ox, oy, th = pose
    if math.hypot(x - ox, y - oy) >= shape.radius + margin:
        return math.inf
    c, s = math.cos(th), math.sin(th)
    return closest_point(shape, c * (x - ox) + s * (y - oy), -s * (x - ox) + c * (y - oy))[0]


def _back_off(ctl: _Controller, shapes, poses, rc: float) -> None:
    """An object pinned against the wall or another object cannot yield: stop the gripper
    at its surface instead of letting it sink in, and drop the current waypoint."""
    for shape, pose in zip(shapes, poses):
        ox, oy, th = pose
        if math.hypot(ctl.x - ox, ctl.y - oy) >= shape.radius + rc:
            continue
        c, s = math.cos(th), math.sin(th)
        lx = c * (ctl.x - ox) + s * (ctl.y - oy)
        ly = -s * (ctl.x - ox) + c * (ctl.y - oy)
        sd, qx, qy = closest_point(shape, lx, ly)
        if sd >= rc - 0.3:
            continue
        nx, ny = (lx - qx, ly - qy) if sd > 0 else (qx - lx, qy - ly)  # away from object
        nn = max(math.hypot(nx, ny), 1e-9)
        step = (rc - sd) / nn
        ctl.x, ctl.y = clamp_tip(ctl.arm, ctl.x + step * (c * nx - s * ny), ctl.y + step * (s * nx + c * ny))
        ctl.vx *= 0.5
        ctl.vy *= 0.5
        ctl.blocked = True
