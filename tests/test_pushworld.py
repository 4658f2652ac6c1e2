"""Tests for the PushWorld generator (vpe_lib.data.pushworld).

Kept fast (a few seconds): every video here is 64x64 or smaller and at most 30 frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from vpe_lib.data.pushworld import CLASS_NAMES, SHAPE_CLASSES, PushWorldConfig, generate_video

KEYS = ("frames", "instance", "semantic", "flow", "actions", "arm_state", "object_state")


@pytest.fixture(scope="module")
def videos():
    """A shared batch of default-config videos (seed -> arrays)."""
    return {s: generate_video(s) for s in range(20)}


# ----------------------------------------------------------------------------- API
def test_class_names():
    assert CLASS_NAMES[0] == "background" and CLASS_NAMES[1] == "arm"
    assert SHAPE_CLASSES == CLASS_NAMES[2:]
    assert set(SHAPE_CLASSES) == {"disc", "box", "triangle", "polygon", "lshape"}


@pytest.mark.parametrize("h,w,t,n", [(64, 64, 30, 5), (32, 32, 10, 3), (96, 80, 7, 2), (16, 24, 2, 1)])
def test_shapes_and_dtypes(h, w, t, n):
    cfg = PushWorldConfig(height=h, width=w, n_frames=t, max_objects=n, min_objects=min(1, n))
    v = generate_video(3, cfg)
    assert set(v) == set(KEYS)
    expect = {
        "frames": ((t, h, w, 3), np.uint8),
        "instance": ((t, h, w), np.uint8),
        "semantic": ((t, h, w), np.uint8),
        "flow": ((t, h, w, 2), np.float16),
        "actions": ((t, 4), np.float32),
        "arm_state": ((t, 4), np.float32),
        "object_state": ((t, n, 5), np.float32),
    }
    for k, (shape, dtype) in expect.items():
        assert v[k].shape == shape, k
        assert v[k].dtype == dtype, k
        assert v[k].flags.c_contiguous, k
    assert np.all(np.isfinite(v["flow"].astype(np.float32)))
    assert np.all(v["flow"][-1] == 0) and np.all(v["actions"][-1, [0, 1, 3]] == 0)
    # The arm is always in view at this size; so is at least some table.
    assert (v["instance"] == 1).any() and (v["instance"] == 0).any()


def test_single_frame_and_no_objects():
    v = generate_video(0, PushWorldConfig(n_frames=1, min_objects=0, max_objects=0))
    assert v["frames"].shape == (1, 64, 64, 3) and v["object_state"].shape == (1, 0, 5)
    assert v["instance"].max() <= 1


# ----------------------------------------------------------------------- determinism
def test_deterministic_per_seed():
    cfg = PushWorldConfig(height=48, width=40, n_frames=12, camera_shake=1.0)
    a, b = generate_video(11, cfg), generate_video(11, cfg)
    for k in KEYS:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_different_seeds_differ(videos):
    a, b = videos[0], videos[1]
    assert not np.array_equal(a["frames"], b["frames"])
    assert not np.array_equal(a["arm_state"], b["arm_state"])


def test_noise_knob_leaves_scene_unchanged():
    """Per-stage random streams: sensor settings do not change the content."""
    a = generate_video(5, PushWorldConfig(n_frames=8))
    b = generate_video(5, PushWorldConfig(n_frames=8, noise_std=0.0))
    for k in ("instance", "semantic", "flow", "actions", "arm_state", "object_state"):
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["frames"], b["frames"])


# ---------------------------------------------------------------------------- labels
def test_semantic_consistent_with_instance(videos):
    for v in videos.values():
        inst, sem = v["instance"], v["semantic"]
        assert np.all(sem[inst == 0] == 0)
        assert np.all(sem[inst == 1] == 1)
        n_present = int(v["object_state"][0, :, 4].sum())
        assert inst.max() <= 1 + n_present
        for i in np.unique(inst[inst >= 2]):
            classes = np.unique(sem[inst == i])
            assert len(classes) == 1, (i, classes)  # one class per instance, whole video
            k = i - 2
            assert classes[0] == v["object_state"][0, k, 3]
            assert 2 <= classes[0] < len(CLASS_NAMES)


def test_object_state_layout(videos):
    for v in videos.values():
        st = v["object_state"]
        present = st[..., 4]
        assert set(np.unique(present)) <= {0.0, 1.0}
        assert np.all(present == present[:1])  # objects never appear / vanish
        n = int(present[0].sum())
        assert np.all(present[0, :n] == 1) and np.all(st[:, n:] == 0)  # packed first
        assert 1 <= n <= 5


# ------------------------------------------------------------------------------ flow
def _flow_hits(v, ids):
    """Fraction of pixels of the given instance ids whose flow lands (within 1 px) on a
    pixel of the same id in the next frame; pixels landing outside are skipped."""
    inst, flow = v["instance"], v["flow"].astype(np.float32)
    t_len, h, w = inst.shape
    hits = total = 0
    for t in range(t_len - 1):
        nxt = inst[t + 1]
        for i in ids:
            ys, xs = np.nonzero(inst[t] == i)
            if len(ys) == 0:
                continue
            tx = xs + flow[t, ys, xs, 0]
            ty = ys + flow[t, ys, xs, 1]
            ok = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
            tx, ty = np.rint(tx[ok]).astype(int), np.rint(ty[ok]).astype(int)
            found = np.zeros(len(tx), bool)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = np.clip(ty + dy, 0, h - 1), np.clip(tx + dx, 0, w - 1)
                    found |= nxt[yy, xx] == i
            hits += int(found.sum())
            total += len(tx)
    return hits, total


def test_flow_warps_objects_onto_themselves(videos):
    hits = total = 0
    for v in videos.values():
        ids = [i for i in np.unique(v["instance"]) if i >= 2]
        h, n = _flow_hits(v, ids)
        hits, total = hits + h, total + n
    assert total > 10000
    assert hits / total >= 0.95, hits / total


def test_flow_warps_arm_onto_itself(videos):
    hits = total = 0
    for v in videos.values():
        h, n = _flow_hits(v, [1])
        hits, total = hits + h, total + n
    assert hits / total >= 0.95, hits / total


def test_flow_of_static_pixels_is_zero_without_shake(videos):
    v = videos[0]
    assert np.all(v["flow"][v["instance"] == 0] == 0)


def test_flow_matches_object_state(videos):
    """At an object's own centre, the flow equals the centre's displacement."""
    for v in list(videos.values())[:5]:
        st, inst, flow = v["object_state"], v["instance"], v["flow"].astype(np.float32)
        for t in range(len(st) - 1):
            for k in range(st.shape[1]):
                if st[t, k, 4] == 0:
                    continue
                x, y = st[t, k, :2]
                xi, yi = int(round(x)), int(round(y))
                if inst[t, yi, xi] != 2 + k:
                    continue  # occluded (or non-convex) at the centre pixel
                # Displacement of pixel (xi, yi) under the rigid motion, from the states.
                th0, th1 = st[t, k, 2], st[t + 1, k, 2]
                rx, ry = xi - x, yi - y
                c, s = np.cos(th1 - th0), np.sin(th1 - th0)
                exp = np.array([st[t + 1, k, 0] + c * rx - s * ry - xi, st[t + 1, k, 1] + s * rx + c * ry - yi])
                assert np.allclose(flow[t, yi, xi], exp, atol=0.05), (t, k, flow[t, yi, xi], exp)


def test_camera_shake_moves_table_consistently():
    v = generate_video(2, PushWorldConfig(n_frames=10, camera_shake=1.5, noise_std=0.0))
    flow = v["flow"].astype(np.float32)
    table = v["instance"] == 0
    assert np.abs(flow[table]).max() > 0  # the camera did move
    for t in range(9):
        vals = np.unique(flow[t][table[t]], axis=0)
        assert len(vals) == 1  # one global integer shift per frame
        assert np.all(vals == np.rint(vals))
    hits, total = _flow_hits(v, [0])
    assert hits / total > 0.95


# ---------------------------------------------------------------------- arm / physics
def test_actions_match_arm_motion(videos):
    for v in videos.values():
        a, s = v["actions"], v["arm_state"]
        assert np.allclose(a[:-1, :2], s[1:, :2] - s[:-1, :2], atol=1e-4)
        assert np.allclose(a[:-1, 3], s[1:, 3] - s[:-1, 3], atol=1e-5)
        assert set(np.unique(a[:, 2])) <= {-1.0, 1.0}
        assert np.all((s[:, 2] >= 0) & (s[:, 2] <= 1) & (s[:, 3] >= 0) & (s[:, 3] <= 1))


def test_arm_moves_smoothly_and_stays_on_table(videos):
    moved = 0
    for v in videos.values():
        tip = v["arm_state"][:, :2]
        step = np.linalg.norm(np.diff(tip, axis=0), axis=1)
        assert step.max() < 0.12 * 64  # no teleports
        assert np.all((tip >= 0) & (tip <= 63))
        moved += step.sum() > 5
    assert moved >= 18


def test_gripper_pixels_near_tip(videos):
    """The rendered arm reaches the reported gripper position."""
    for v in videos.values():
        x, y = v["arm_state"][0, :2]
        ys, xs = np.nonzero(v["instance"][0] == 1)
        assert np.min(np.hypot(xs - x, ys - y)) < 2.0


def test_objects_stay_on_table(videos):
    for v in videos.values():
        st = v["object_state"]
        present = st[..., 4] > 0
        xy = st[..., :2][present]
        assert np.all((xy >= 0) & (xy <= 63))
        # Every present object is visible at least partly in most frames (not lost).
        n = int(present[0].sum())
        for k in range(n):
            visible = (v["instance"] == 2 + k).any(axis=(1, 2))
            assert visible.mean() > 0.5


def test_some_objects_get_pushed(videos):
    pushed_videos = 0
    rotated = 0
    for v in videos.values():
        st = v["object_state"]
        present = st[0, :, 4] > 0
        disp = np.linalg.norm(st[-1, present, :2] - st[0, present, :2], axis=-1)
        turn = np.abs(st[-1, present, 2] - st[0, present, 2])
        pushed_videos += bool((disp > 2.0).any())
        rotated += bool((turn > 0.2).any())
    assert pushed_videos >= 5, pushed_videos
    assert rotated >= 2, rotated


# ------------------------------------------------------------------------ appearance
def test_frames_look_reasonable(videos):
    for v in list(videos.values())[:5]:
        f = v["frames"].astype(np.float32)
        assert 20 < f.mean() < 235
        assert f.std() > 5  # textured, not flat
        # Frames change over time (arm motion) but not wildly (no flicker).
        d = np.abs(np.diff(f, axis=0)).mean()
        assert 0.5 < d < 40


def test_colour_alone_is_ambiguous(videos):
    """Hardness check: in some videos an object's mean colour is close to the table's."""
    close = 0
    for v in videos.values():
        f, inst = v["frames"][0].astype(np.float32), v["instance"][0]
        table = f[inst == 0].mean(axis=0)
        for i in np.unique(inst[inst >= 2]):
            close += np.abs(f[inst == i].mean(axis=0) - table).max() < 30
    assert close >= 2


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,field", [
    (dict(max_objects=1, min_objects=2), "max_objects"),
    (dict(height=8), "height"),
    (dict(width=15), "width"),
    (dict(n_frames=0), "n_frames"),
    (dict(min_objects=-1), "min_objects"),
    (dict(max_objects=99), "max_objects"),
    (dict(noise_std=-1.0), "noise_std"),
    (dict(colour_overlap=1.5), "colour_overlap"),
    (dict(texture_strength=float("nan")), "texture_strength"),
    (dict(height=64.0), "height"),
    (dict(physics_substeps=0), "physics_substeps"),
])
def test_invalid_config_raises(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PushWorldConfig(**kwargs)


def test_invalid_seed_raises():
    with pytest.raises(ValueError, match="seed"):
        generate_video(-1)
