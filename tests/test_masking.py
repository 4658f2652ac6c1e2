"""Masking strategies over the token grid: exact ratios, shapes, continuity, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from vpe_lib.data.masking import (MASKINGS, blob_masks, check_ratio, make_mask, mask_motion_overlap,
                             masks_for_batch, motion_centres, motion_guided_mask, n_masked,
                             random_path, simulated_motion_mask, tube_mask)

GRIDS = [(4, 16, 16), (3, 8, 12), (1, 5, 7)]
RATIOS = [0.1, 0.5, 0.75, 0.9]


def moving_peak(t=8, h=16, w=16, speed=1.0, y=6.0, x0=2.0, sigma=1.5):
    """A Gaussian bump of motion moving ``speed`` tokens/frame along x; its true centres."""
    yy, xx = np.mgrid[0:h, 0:w]
    xs = x0 + speed * np.arange(t)
    field = np.stack([np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)) for x in xs])
    return 3.0 * field, np.stack([np.full(t, y), xs], 1)


def mask_of(strategy, grid, ratio, seed, **kw):
    rng = np.random.default_rng(seed)
    motion = moving_peak(*grid)[0] if strategy == "mgm" else None
    return make_mask(strategy, grid, ratio, rng, motion=motion, **kw)


def n_components(frame: np.ndarray) -> int:
    return ndimage.label(frame)[1]  # default structure: 4-connectivity


@pytest.mark.parametrize("strategy", MASKINGS)
@pytest.mark.parametrize("grid", GRIDS)
def test_shape_dtype_and_exact_counts(strategy, grid):
    t, h, w = grid
    for ratio in RATIOS:
        m = mask_of(strategy, grid, ratio, seed=3)
        assert m.shape == grid and m.dtype == bool
        if strategy == "random":
            assert m.sum() == n_masked(ratio, t * h * w)
        else:
            assert (m.sum((1, 2)) == n_masked(ratio, h * w)).all()


def test_n_masked_rounds_half_up_and_keeps_one_visible():
    assert n_masked(0.5, 7) == 4
    assert n_masked(0.75, 256) == 192
    assert n_masked(0.01, 10) == 1  # never masks nothing
    assert n_masked(0.99, 10) == 9  # never masks everything


def test_random_masks_differ_between_frames_and_tube_does_not():
    r = mask_of("random", (4, 16, 16), 0.5, seed=0)
    assert not (r == r[0]).all()
    tube = tube_mask((4, 16, 16), 0.5, np.random.default_rng(0))
    assert (tube == tube[0]).all()


@pytest.mark.parametrize("strategy", ["simmotion", "mgm"])
@pytest.mark.parametrize("shape", ["disc", "box"])
def test_blob_is_one_connected_component_per_frame(strategy, shape):
    for seed in range(5):
        for ratio in RATIOS:
            for grid in GRIDS:
                m = mask_of(strategy, grid, ratio, seed, shape=shape)
                assert all(n_components(f) == 1 for f in m), (seed, ratio, grid)


def test_blob_shapes_on_integer_centre():
    disc = blob_masks([[7, 7]], (16, 16), 5, shape="disc")[0]
    plus = np.zeros((16, 16), bool)
    plus[7, 6:9] = plus[6:9, 7] = True
    assert (disc == plus).all()
    box = blob_masks([[7, 7]], (16, 16), 9, shape="box")[0]
    assert box.sum() == 9 and box[6:9, 6:9].all()
    with pytest.raises(ValueError, match="disc"):
        blob_masks([[7, 7]], (16, 16), 9, shape="star")


def test_blob_ties_are_deterministic():
    a = blob_masks([[7.5, 7.5]] * 2, (16, 16), 30)
    b = blob_masks([[7.5, 7.5]], (16, 16), 30)
    assert (a[0] == a[1]).all() and (a[0] == b[0]).all()


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.0])
def test_simulated_motion_moves_continuously(speed):
    for seed in range(10):
        path = random_path(16, 16, 16, np.random.default_rng(seed), speed=speed)
        steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
        assert steps.max() <= speed + 1e-9
        assert (path >= 0).all() and (path <= 15).all()
        m = simulated_motion_mask((16, 16, 16), 0.5, np.random.default_rng(seed), speed=speed)
        inter = (m[1:] & m[:-1]).sum((1, 2))
        union = (m[1:] | m[:-1]).sum((1, 2))
        assert (inter / union).min() > 0.6  # consecutive blobs overlap: a continuous volume


def test_simulated_motion_actually_moves():
    moved = [np.linalg.norm(random_path(8, 16, 16, np.random.default_rng(s))[-1]
                            - random_path(8, 16, 16, np.random.default_rng(s))[0])
             for s in range(10)]
    assert np.mean(moved) > 2.0


def test_mgm_centre_follows_a_moving_peak():
    motion, truth = moving_peak(t=10, speed=1.0)
    centres = motion_centres(motion)
    assert np.abs(centres - truth).max() < 1.0
    assert np.linalg.norm(np.diff(centres, axis=0), axis=1).max() < 1.5
    m = motion_guided_mask(motion, 0.25)
    for i, (y, x) in enumerate(truth):
        assert m[i, int(round(y)), int(round(x))]  # the peak is hidden in every frame
    # without temporal smoothing, the centre is the peak itself
    assert np.abs(motion_centres(motion, temporal=0) - truth).max() < 0.5


def test_mgm_static_frames_take_neighbours_centre():
    motion = np.zeros((3, 16, 16))
    motion[0, 4, 4] = motion[2, 4, 10] = 5.0
    c = motion_centres(motion, smooth=0, temporal=1.0)
    assert c[1] == pytest.approx([4.0, 7.0], abs=1e-6)  # mean of the two neighbours
    c0 = motion_centres(motion, smooth=0, temporal=0)
    assert c0[0] == pytest.approx([4, 4], abs=0.5) and c0[2] == pytest.approx([4, 10], abs=0.5)


def test_mgm_all_static_falls_back():
    still = np.zeros((4, 16, 16))
    c = motion_centres(still)
    assert (c == [7.5, 7.5]).all()
    a = motion_guided_mask(still, 0.5, np.random.default_rng(1))
    b = motion_guided_mask(still, 0.5, np.random.default_rng(1))
    assert (a == b).all() and (a == a[0]).all() and (a.sum((1, 2)) == 128).all()
    with pytest.raises(ValueError, match="finite"):
        motion_guided_mask(np.full((2, 4, 4), np.nan), 0.5)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, math.nan, "0.5", True, None])
def test_check_ratio_errors(bad):
    with pytest.raises(ValueError, match=r"mask_ratio.*\(0, 1\)"):
        check_ratio(bad)
    with pytest.raises(ValueError, match="mask_ratio"):
        make_mask("random", (2, 4, 4), bad, np.random.default_rng(0))


def test_make_mask_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="random.*tube.*simmotion.*mgm"):
        make_mask("blocky", (2, 4, 4), 0.5, rng)
    with pytest.raises(ValueError, match="motion="):
        make_mask("mgm", (2, 4, 4), 0.5, rng)
    with pytest.raises(ValueError, match="token grid"):
        make_mask("mgm", (2, 4, 4), 0.5, rng, motion=np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="no options"):
        make_mask("tube", (2, 4, 4), 0.5, rng, shape="box")
    with pytest.raises(ValueError, match="grid"):
        make_mask("random", (2, 0, 4), 0.5, rng)


def test_masks_for_batch_is_a_function_of_seed_and_step():
    for strategy in ("random", "tube", "simmotion"):
        a = masks_for_batch(strategy, (4, 16, 16), 0.75, seed=1, step=5, batch_size=3)
        assert a.shape == (3, 4, 16, 16) and a.dtype == bool
        assert (a == masks_for_batch(strategy, (4, 16, 16), 0.75, 1, 5, batch_size=3)).all()
        assert not (a == masks_for_batch(strategy, (4, 16, 16), 0.75, 1, 6, batch_size=3)).all()
        assert not (a == masks_for_batch(strategy, (4, 16, 16), 0.75, 2, 5, batch_size=3)).all()
        assert not (a[0] == a[1]).all()  # samples of one batch differ
        # sample i does not depend on the batch size (resume with another batch size)
        assert (a[:2] == masks_for_batch(strategy, (4, 16, 16), 0.75, 1, 5, batch_size=2)).all()


def test_masks_for_batch_mgm_uses_the_motions():
    motions = np.stack([moving_peak()[0], moving_peak(y=12.0, x0=12.0, speed=-1.0)[0]])
    m = masks_for_batch("mgm", (8, 16, 16), 0.5, seed=0, step=0, motions=motions)
    assert m.shape == (2, 8, 16, 16)
    assert m[0, 0, 6, 2] and m[1, 0, 12, 12] and not (m[0] == m[1]).all()
    with pytest.raises(ValueError, match="batch_size"):
        masks_for_batch("random", (8, 16, 16), 0.5, seed=0, step=0)
    with pytest.raises(ValueError, match="motion="):
        masks_for_batch("mgm", (8, 16, 16), 0.5, seed=0, step=0, batch_size=2)


def test_overlap_metric_by_hand():
    moving = np.zeros((1, 2, 4), bool)
    moving[0, 0, :2] = True  # 2 moving tokens out of 8
    mask = np.zeros((1, 2, 4), bool)
    mask[0, 0, 1:4] = True  # 3 masked: one moving, two not
    o = mask_motion_overlap(mask, moving)
    assert o["recall"] == pytest.approx(1 / 2)
    assert o["precision"] == pytest.approx(1 / 3)
    assert o["visible_moving"] == pytest.approx(1 / 5)
    none = mask_motion_overlap(mask, np.zeros_like(moving))
    assert math.isnan(none["recall"]) and none["precision"] == 0 and none["visible_moving"] == 0
    assert math.isnan(mask_motion_overlap(np.zeros_like(mask), moving)["precision"])
    with pytest.raises(ValueError, match="shapes differ"):
        mask_motion_overlap(mask, moving[:, :1])
