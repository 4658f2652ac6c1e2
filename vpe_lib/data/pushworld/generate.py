"""generate_video: scene -> simulation -> rendering -> post effects -> arrays."""

from __future__ import annotations

import math

import numpy as np

from . import appearance as ap
from . import render as rd
from .config import PushWorldConfig
from .physics import Trajectory, simulate
from .scene import Scene, sample_scene


def _streams(seed: int):
    """Independent random streams per stage, so e.g. changing noise_std leaves the scene
    and the motion unchanged for the same seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ss = np.random.SeedSequence(int(seed))
    return [np.random.default_rng(c) for c in ss.spawn(4)]


def _arm_parts(cfg, scene: Scene, traj: Trajectory, cam: np.ndarray, patches: dict, shapes: dict):
    """Per-frame poses of the arm's rigid parts (image frame). The gripper (palm and
    fingers) scales up slightly when lifted, i.e. it comes closer to the camera."""
    arm = scene.arm
    t_len = cfg.n_frames
    one = np.ones(t_len)
    lift_scale = 1.0 + 0.25 * traj.lift
    base = np.broadcast_to(arm.base, (t_len, 2)) - cam
    elbow = traj.elbow - cam
    tip = traj.tip - cam
    off = (arm.open_min + traj.opening * (arm.open_max - arm.open_min)) * lift_scale
    side = np.stack([-np.sin(traj.phi2), np.cos(traj.phi2)], axis=1) * off[:, None]
    poses = {
        "link1": np.column_stack([base, traj.theta1, one]),
        "link2": np.column_stack([elbow, traj.phi2, one]),
        "palm": np.column_stack([tip, traj.phi2, lift_scale]),
        "finger_a": np.column_stack([tip + side, traj.phi2, lift_scale]),
        "finger_b": np.column_stack([tip - side, traj.phi2, lift_scale]),
    }
    # Painter's order: links, then fingers, then the palm on top of the fingers' roots.
    order = ("link1", "link2", "finger_a", "finger_b", "palm")
    return [rd.Part(shapes[k], poses[k], *patches[k], inst=1, sem=1, layer=1,
                    casts_shadow=not k.startswith("finger")) for k in order]


def generate_video(seed: int, cfg: PushWorldConfig = PushWorldConfig()) -> dict[str, np.ndarray]:
    """Render one PushWorld video. A seed fully determines the video (same seed and cfg
    give bit-identical arrays).

    Returns (T = n_frames, H = height, W = width, N = max_objects):
      frames       uint8   (T, H, W, 3)
      instance     uint8   (T, H, W)    0 table, 1 arm, 2 + k object k
      semantic     uint8   (T, H, W)    index into CLASS_NAMES
      flow         float16 (T, H, W, 2) (dx, dy) px from t to t+1 of the visible surface
                                        point; last frame 0
      actions      float32 (T, 4)       gripper dx, dy to the next frame (px), gripper
                                        command (+1 close / -1 open), lift dz; last
                                        frame's deltas are 0
      arm_state    float32 (T, 4)       gripper x, y (px), opening (0 closed..1 open),
                                        lift (0 on table..1 raised)
      object_state float32 (T, N, 5)    x, y (px, centre of mass), angle (rad, unwrapped),
                                        class id, present (1/0); objects fill the first
                                        slots, absent slots are all zero
    Positions are in table coordinates, equal to image pixels (x = column, y = row,
    pixel centres at integers) unless camera_shake > 0, where image = table - offset_t.
    """
    r_scene, r_sim, r_look, r_post = _streams(seed)
    t_len, h, w = cfg.n_frames, cfg.height, cfg.width

    scene = sample_scene(r_scene, cfg)
    traj = simulate(r_sim, cfg, scene)

    # Appearance, sampled once per video.
    cam, pad = rd.camera_offsets(r_post, cfg)
    table = ap.make_table(r_look, cfg, pad)
    table_mean = table.reshape(-1, 3).mean(axis=0)
    atlas = ap.Atlas(r_look, cfg, max([ap.patch_size(s) for s in scene.shapes], default=0))
    ap.add_distractors(r_look, cfg, table, atlas, table_mean)
    parts = []
    for k, shape in enumerate(scene.shapes):
        colour = ap.object_colour(r_look, cfg, table_mean)
        patch, lo = ap.bake_object_patch(r_look, cfg, shape, colour, atlas)
        pose = np.column_stack([traj.obj_pose[:, k, :2] - cam, traj.obj_pose[:, k, 2], np.ones(t_len)])
        parts.append(rd.Part(shape, pose, patch, lo, inst=2 + k, sem=shape.cls, layer=0))
    arm_shapes = ap.arm_shapes(scene.arm)
    arm_patches = ap.bake_arm_patches(r_look, cfg, scene.arm, arm_shapes)
    parts += _arm_parts(cfg, scene, traj, cam, arm_patches, arm_shapes)

    # Paint. Table first (camera-shifted crops, channel-first), then parts back to front.
    table = np.ascontiguousarray(table.transpose(2, 0, 1))
    if pad:
        colour = np.stack([table[:, pad + cy:pad + cy + h, pad + cx:pad + cx + w] for cx, cy in cam], axis=1)
    else:
        colour = np.broadcast_to(table[:, None], (3, t_len, h, w)).copy()
    cam_flow = np.zeros((t_len, 2), np.float32)
    cam_flow[:-1] = cam[:-1] - cam[1:]  # a static table point moves opposite to the camera
    canvas = rd.Canvas(colour, cam_flow, rd.shadow_offsets(r_post, cfg) if cfg.shadows else None)
    rd.paint_all(canvas, parts)

    frames = _finish_colour(r_post, cfg, canvas)
    return {
        "frames": frames,
        "instance": canvas.inst.reshape(t_len, h, w),
        "semantic": canvas.sem.reshape(t_len, h, w),
        "flow": canvas.flow.reshape(t_len, h, w, 2),
        "actions": _actions(traj),
        "arm_state": np.column_stack([traj.tip, traj.opening, traj.lift]).astype(np.float32),
        "object_state": _object_state(cfg, scene, traj),
    }


def _finish_colour(rng, cfg: PushWorldConfig, canvas: rd.Canvas) -> np.ndarray:
    """Shadows, illumination drift and sensor noise, then uint8 (T, H, W, 3).

    Done in chunks of a few frames: the temporaries stay small (cache-resident, and
    below malloc's mmap threshold, so no page-fault churn), which is ~2x faster than
    whole-video passes."""
    t_len, h, w = cfg.n_frames, cfg.height, cfg.width
    hw = h * w
    gain, gx, gy = rd.illumination(rng, cfg)
    xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, None, :]
    yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2)[None, :, None]
    colour = canvas.colour.reshape(3, t_len, hw)
    frames = np.empty((t_len, hw, 3), np.uint8)
    step = max(1, 32768 // hw)
    for t0 in range(0, t_len, step):
        t1 = min(t_len, t0 + step)
        light = (1.0 + gx[t0:t1] * xx + gy[t0:t1] * yy).reshape(t1 - t0, hw)
        if canvas.shadow is not None:
            light *= rd.shadow_factor(cfg, canvas, t0, t1).reshape(t1 - t0, hw)
        c = colour[:, t0:t1]
        c *= light[None]
        c *= gain.T[:, t0:t1, None]
        # +0.5 then truncation = rounding (values are clipped to >= 0 first).
        c += _sensor_noise(rng, c.shape, cfg.noise_std, offset=0.5)
        np.clip(c, 0.0, 255.49, out=c)
        q = c.astype(np.uint8)
        for ch in range(3):  # per-channel strided writes beat a generic transpose
            frames[t0:t1, :, ch] = q[ch]
    return frames.reshape(t_len, h, w, 3)


def _sensor_noise(rng: np.random.Generator, shape, std: float, offset: float = 0.0) -> np.ndarray:
    """Zero-mean noise of the given std (plus ``offset``), float32.

    Drawn from raw random bytes: the sum of a byte's two 4-bit nibbles is triangular
    (near-Gaussian) on 31 levels, so the noise comes in steps of std / 6.5 -- finer
    than the final 8-bit quantisation for std <= 6.5 and ~4x cheaper than
    standard_normal on one core."""
    if std <= 0:
        return np.float32(offset)
    n = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]
    levels = raw & 15
    levels += raw >> 4
    levels -= 15  # wraps in uint8; viewed as int8 it is -15..15
    # Each nibble is uniform on 0..15 (variance 255 / 12), so the sum has std ~6.52.
    noise = np.multiply(levels.view(np.int8), np.float32(std / math.sqrt(2 * 255 / 12)), dtype=np.float32)
    if offset:
        noise += np.float32(offset)
    return noise.reshape(shape)


def _actions(traj: Trajectory) -> np.ndarray:
    t_len = len(traj.tip)
    act = np.zeros((t_len, 4), np.float32)
    act[:-1, :2] = traj.tip[1:] - traj.tip[:-1]
    act[:, 2] = traj.grip_cmd
    act[:-1, 3] = traj.lift[1:] - traj.lift[:-1]
    return act


def _object_state(cfg: PushWorldConfig, scene: Scene, traj: Trajectory) -> np.ndarray:
    out = np.zeros((cfg.n_frames, cfg.max_objects, 5), np.float32)
    n = len(scene.shapes)
    if n:
        out[:, :n, :3] = traj.obj_pose
        out[:, :n, 3] = [s.cls for s in scene.shapes]
        out[:, :n, 4] = 1.0
    return out
