"""PushWorld: determinism, label consistency, exact motion, actions, physics, config errors."""

import numpy as np
import pytest

from vpe_lib.data.pushworld import CLASS_NAMES, PushWorldConfig, generate_video

CFG = PushWorldConfig()


@pytest.fixture(scope="module")
def videos():
    return [generate_video(seed, CFG) for seed in range(12)]


def test_api_shapes_and_dtypes(videos):
    v = videos[0]
    t, h, w = CFG.n_frames, CFG.height, CFG.width
    expected = {
        "frames": ((t, h, w, 3), np.uint8), "instance": ((t, h, w), np.uint8), "semantic": ((t, h, w), np.uint8),
        "flow": ((t, h, w, 2), np.float16), "actions": ((t, 4), np.float32), "arm_state": ((t, 4), np.float32),
        "object_state": ((t, CFG.max_objects, 5), np.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert v[key].shape == shape and v[key].dtype == dtype, key
    assert np.all(v["flow"][-1] == 0) and np.all(v["actions"][-1, :2] == 0)


def test_same_seed_same_video_other_seed_other_video():
    a, b, c = generate_video(3, CFG), generate_video(3, CFG), generate_video(4, CFG)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["frames"], c["frames"])


@pytest.mark.parametrize("h,w,t", [(32, 32, 8), (96, 80, 5), (16, 24, 1)])
def test_other_resolutions_and_lengths(h, w, t):
    v = generate_video(1, PushWorldConfig(height=h, width=w, n_frames=t))
    assert v["frames"].shape == (t, h, w, 3) and v["flow"].shape == (t, h, w, 2)


def test_semantic_consistent_with_instance(videos):
    for v in videos:
        inst, sem = v["instance"], v["semantic"]
        assert np.all(sem[inst == 0] == 0)
        assert np.all(sem[inst == 1] == CLASS_NAMES.index("arm"))
        assert (inst == 1).any(), "the arm is visible"
        for k in np.unique(inst[inst >= 2]):
            classes = np.unique(sem[inst == k])
            assert len(classes) == 1 and classes[0] >= 2, f"instance {k} maps to {classes}"
            cls_state = v["object_state"][0, k - 2, 3]
            assert classes[0] == int(cls_state)


def test_flow_moves_pixels_onto_the_same_instance(videos):
    """Warping each object/arm pixel by the flow lands on the same instance at t+1 (non-occluded)."""
    hits = total = 0
    for v in videos:
        inst, flow = v["instance"], v["flow"].astype(np.float32)
        t_, h, w = inst.shape
        for t in range(t_ - 1):
            ys, xs = np.nonzero(inst[t] > 0)
            ids = inst[t, ys, xs]
            tx = np.rint(xs + flow[t, ys, xs, 0]).astype(int)
            ty = np.rint(ys + flow[t, ys, xs, 1]).astype(int)
            inside = (tx >= 1) & (tx < w - 1) & (ty >= 1) & (ty < h - 1)
            ys_, xs_, ids, tx, ty = ys[inside], xs[inside], ids[inside], tx[inside], ty[inside]
            # within one pixel: any of the 3x3 neighbours at t+1 carries the same id
            nb = np.stack([inst[t + 1, ty + dy, tx + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            same = (nb == ids).any(0)
            # occluded at t+1: the target is covered by something drawn above (the arm, id 1, over objects)
            occluded = (inst[t + 1, ty, tx] == 1) & (ids != 1)
            hits += int(same[~occluded].sum())
            total += int((~occluded).sum())
    assert total > 10_000
    assert hits / total >= 0.95, f"only {hits / total:.3f} of pixels land on their instance"


def test_flow_is_exact_for_moving_objects(videos):
    """Objects that moved: the mean flow of their pixels matches their centre displacement."""
    checked = 0
    for v in videos:
        st, inst, flow = v["object_state"], v["instance"], v["flow"].astype(np.float32)
        for t in range(CFG.n_frames - 1):
            for k in range(CFG.max_objects):
                if st[t, k, 4] < 1:
                    continue
                d = st[t + 1, k, :2] - st[t, k, :2]
                dtheta = st[t + 1, k, 2] - st[t, k, 2]
                mask = inst[t] == k + 2
                if np.linalg.norm(d) < 0.5 or abs(dtheta) > 1e-3 or mask.sum() < 20:
                    continue  # pure translations only: then every pixel moves by d
                np.testing.assert_allclose(flow[t][mask].mean(0), d, atol=0.05)
                checked += 1
    assert checked > 0


def test_actions_match_arm_motion(videos):
    for v in videos:
        tip = v["arm_state"][:, :2]
        np.testing.assert_allclose(v["actions"][:-1, :2], tip[1:] - tip[:-1], atol=1e-3)


def test_objects_stay_on_table_and_get_pushed(videos):
    pushed = 0
    for v in videos:
        st = v["object_state"]
        present = st[..., 4] > 0
        xy = st[..., :2][present]
        assert np.all((xy >= 0) & (xy[:, :1] <= CFG.width) & (xy[:, 1:] <= CFG.height))
        first, last = st[0, present[0], :2], st[-1, present[0], :2]
        pushed += int((np.linalg.norm(last - first, axis=-1) > 2).any())
        n_obj = present[0].sum()
        assert CFG.min_objects <= n_obj <= CFG.max_objects
    assert pushed >= 3, f"objects moved in only {pushed} of {len(videos)} videos"


@pytest.mark.parametrize("field,kw", [("max_objects", dict(min_objects=3, max_objects=2)),
                                      ("height", dict(height=8)), ("noise_std", dict(noise_std=-1.0))])
def test_invalid_config_names_the_field(field, kw):
    with pytest.raises(ValueError, match=field):
        PushWorldConfig(**kw)
