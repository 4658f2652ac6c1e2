"""Motion fields for masking: codec vectors, block matching, token pooling, MGM coverage, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vpe_lib.data.errors import DataError
from vpe_lib.data.motion import (MotionCache, block_matching_motion, fill_missing,
                                 motion_for_masking, token_flow, token_motion,
                                 true_moving_tokens)
from vpe_lib.data.synthetic_motion import moving_square_clip
from vpe_lib.data.masking import make_mask, mask_motion_overlap

GRID = (4, 16, 16)  # 8 frames of 64x64, tf=2, sf=4 (the cpu profile's factors)
VELOCITY = (2, 1)  # (vx, vy) px/frame


def speed(field):
    return np.hypot(field[..., 0], field[..., 1])


@pytest.fixture(scope="module")
def clip():
    return moving_square_clip(8, 64, 64, size=16, velocity=VELOCITY, seed=0)


@pytest.fixture(scope="module")
def codec(clip):
    pytest.importorskip("av")
    from vpe_lib.data.motion import codec_motion

    return codec_motion(clip["frames"])


def check_velocity(field, square, valid=None):
    """Median velocity over the square's (valid) pixels, and speed on the background."""
    for t in range(1, len(field)):
        on = square[t] if valid is None else square[t] & valid[t]
        assert on.sum() > 0.5 * square[t].sum()
        assert np.median(field[t][on], axis=0) == pytest.approx(VELOCITY, abs=0.5)
        bg = ~square[t] if valid is None else ~square[t] & valid[t]
        # blocks straddling the square's edge carry its vector; the rest is ~0
        assert np.median(speed(field[t][bg])) < 0.25
        assert (speed(field[t][bg]) < 0.5).mean() > 0.9


def test_moving_square_clip_is_consistent(clip):
    assert clip["frames"].shape == (8, 64, 64, 3) and clip["frames"].dtype == np.uint8
    pos = clip["positions"]
    assert (np.diff(pos, axis=0) == [VELOCITY[1], VELOCITY[0]]).all()
    moving = speed(clip["flow"]) > 0
    assert (moving[:-1] == clip["mask"][:-1]).all() and not moving[-1].any()
    with pytest.raises(ValueError, match="does not fit"):
        moving_square_clip(8, 32, 32, size=16, velocity=(4, 0))


def test_codec_motion_recovers_the_velocity(clip, codec):
    field, valid = codec
    assert field.shape == (8, 64, 64, 2) and field.dtype == np.float32
    assert not valid[0].any()  # frame 0 is an I-frame
    assert valid[1:].mean() > 0.9
    check_velocity(field, clip["mask"], valid)


def test_codec_median_subtraction_cancels_a_camera_pan(clip):
    pytest.importorskip("av")
    from vpe_lib.data.motion import codec_motion

    pan = np.stack([np.roll(f, shift=t, axis=1) for t, f in enumerate(clip["frames"])])
    field, valid = codec_motion(pan)
    square = np.stack([np.roll(m, shift=t, axis=1) for t, m in enumerate(clip["mask"])])
    for t in range(1, 8):
        on = square[t] & valid[t]
        assert np.median(field[t][on], axis=0) == pytest.approx(VELOCITY, abs=0.5)
        # the wrapped-around columns are new content: ignore them
        bg = ~square[t] & valid[t]
        bg[:, :t + 4] = False
        assert np.median(speed(field[t][bg])) < 0.25


def test_fill_missing_fills_iframes_and_intra_cells(codec):
    field, valid = codec
    filled = fill_missing(field, valid)
    assert (filled[0] == field[1]).all()  # frame 0 has only a next neighbour
    assert (field[0] == 0).all()  # input untouched
    # hand-made: a hole in frame 1, a frame without vectors between two with
    f = np.zeros((3, 4, 4, 2), np.float32)
    f[0] = (1, 0)
    f[2] = (3, 2)
    f[1, :, :2] = (5, 5)
    v = np.ones((3, 4, 4), bool)
    v[1, :, 2:] = False
    v[0] = False
    f[0] = 99  # must be ignored: not valid
    out = fill_missing(f, v)
    assert (out[1] == (5, 5)).all()  # nearest valid neighbour
    v2 = v.copy()
    v2[0] = True
    v2[1] = False
    f2 = f.copy()
    f2[0] = (1, 0)
    assert (fill_missing(f2, v2)[1] == (2, 1)).all()  # mean of previous and next frames
    with pytest.raises(ValueError, match="disagree"):
        fill_missing(f, v[:, :2])


def test_block_matching_recovers_the_velocity(clip):
    field = block_matching_motion(clip["frames"])
    assert field.shape == (8, 64, 64, 2) and field.dtype == np.float32
    assert (field[0] == 0).all()
    check_velocity(field, clip["mask"])
    with pytest.raises(ValueError, match="T, H, W, 3"):
        block_matching_motion(clip["frames"][..., 0])


def test_token_pooling():
    field = np.zeros((8, 64, 64, 2), np.float32)
    field[..., 0] = 3.0
    field[:, :, ::2, 0] = -3.0  # opposite motions inside each token
    assert token_flow(field, GRID).shape == (4, 16, 16, 2)
    assert np.allclose(token_flow(field, GRID), 0)
    assert token_motion(field, GRID).shape == (4, 16, 16)
    assert np.allclose(token_motion(field, GRID), 3.0)  # magnitudes do not cancel
    with pytest.raises(ValueError, match="does not divide"):
        token_motion(field, (3, 16, 16))


def test_true_moving_tokens_ignores_the_camera(clip):
    moving = true_moving_tokens(clip["flow"], GRID)
    assert moving.shape == GRID and moving.dtype == bool
    assert 10 <= moving[0].sum() <= 30  # a 16 px square covers 16-25 tokens of 4 px
    panned = clip["flow"] + np.array([1.5, -2.0], np.float32)
    assert (true_moving_tokens(panned, GRID) == moving).all()


def test_mgm_masks_cover_the_moving_object():
    """On clips whose motion is known, MGM from codec vectors hides the moving object."""
    pytest.importorskip("av")
    recalls = {"mgm": [], "random": [], "tube": []}
    for seed, velocity in enumerate([(2, 1), (-2, 2), (3, -1)]):
        c = moving_square_clip(8, 64, 64, size=16, velocity=velocity, seed=seed)
        motion = motion_for_masking(c["frames"], GRID, source="codec")
        moving = true_moving_tokens(c["flow"], GRID)
        for strategy in recalls:
            for s in range(3):
                m = make_mask(strategy, GRID, 0.5, np.random.default_rng(s), motion=motion)
                recalls[strategy].append(mask_motion_overlap(m[1:], moving[1:])["recall"])
    assert min(recalls["mgm"]) >= 0.9
    assert np.mean(recalls["mgm"]) > np.mean(recalls["random"]) + 0.25
    assert np.mean(recalls["mgm"]) > np.mean(recalls["tube"]) + 0.25


def test_mgm_on_pushworld_with_camera_shake():
    """Real generator output (noise, shadows, a shaking camera): the median subtraction
    must cancel the camera so that MGM still finds the arm and the pushed objects."""
    pytest.importorskip("av")
    from vpe_lib.data.pushworld import PushWorldConfig, generate_video

    mgm, rand = [], []
    for seed in range(4):
        v = generate_video(seed, PushWorldConfig(n_frames=8, camera_shake=1.0))
        motion = motion_for_masking(v["frames"], GRID)
        moving = true_moving_tokens(v["flow"], GRID)[1:]
        mgm.append(mask_motion_overlap(motion_guided(motion)[1:], moving))
        rand.append(mask_motion_overlap(
            make_mask("random", GRID, 0.5, np.random.default_rng(seed))[1:], moving))
    assert np.mean([o["recall"] for o in mgm]) >= 0.85
    assert np.mean([o["recall"] for o in mgm]) > np.mean([o["recall"] for o in rand]) + 0.3
    # and fewer moving tokens stay visible
    assert (np.mean([o["visible_moving"] for o in mgm])
            < 0.5 * np.mean([o["visible_moving"] for o in rand]))


def motion_guided(motion):
    return make_mask("mgm", GRID, 0.5, np.random.default_rng(0), motion=motion)


def _all_iframe_mp4(path, frames):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"g": "1", "bf": "0"}  # every frame a keyframe: no vectors
        for frame in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(p)
        for p in stream.encode():
            container.mux(p)
    return path


def test_no_motion_vectors_is_an_error_naming_file_and_option(tmp_path, clip):
    path = _all_iframe_mp4(tmp_path / "intra_only.mp4", clip["frames"])
    with pytest.raises(DataError, match="predict.motion_source=block_matching") as e:
        motion_for_masking(path, GRID)
    assert "intra_only.mp4" in str(e.value)
    # in-memory frames: the caller names the file
    with pytest.raises(DataError, match="clip_042.*predict.motion_source"):
        motion_for_masking(clip["frames"][:1], (1, 16, 16), path_for_errors="clip_042")
    # the explicit fallback works on the same file
    assert motion_for_masking(path, GRID, source="block_matching").shape == GRID
    with pytest.raises(ValueError, match="codec.*block_matching"):
        motion_for_masking(clip["frames"], GRID, source="raft")


def test_motion_cache_hits_without_recomputing(tmp_path):
    cache = MotionCache(tmp_path / "motion")
    calls = []

    def compute():
        calls.append(1)
        return np.arange(12, dtype=np.float32).reshape(1, 3, 4)

    key = {"source": "codec", "grid": [1, 3, 4], "video": "train/00017"}
    a = cache.get(key, compute)
    b = cache.get(dict(key), compute)
    assert len(calls) == 1 and (a == b).all() and b.dtype == np.float32
    assert (cache.hits, cache.misses) == (1, 1)
    cache.get({**key, "source": "block_matching"}, compute)  # another key: recomputed
    cache.get({**key, "grid": [2, 3, 4]}, compute)
    assert len(calls) == 3
    files = sorted(p.name for p in (tmp_path / "motion").iterdir())
    assert len(files) == 3 and all(f.startswith("train_00017-") and f.endswith(".npy")
                                   for f in files)  # no temp files left behind
    with pytest.raises(ValueError, match="video"):
        cache.get({"source": "codec", "grid": [1, 3, 4]}, compute)
    (tmp_path / "motion" / files[0]).write_bytes(b"garbage")
    with pytest.raises(DataError, match="delete it"):
        for k in (key, {**key, "source": "block_matching"}, {**key, "grid": [2, 3, 4]}):
            cache.get(k, compute)


def test_bench_quick_mode(load_bench, tmp_path):
    pytest.importorskip("av")
    bench = load_bench("bench_motion_vectors")
    out = tmp_path / "mv.json"
    result = bench.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["quick"] is True and result["inputs"]
    for row in result["inputs"].values():
        for k in ("codec_ms_per_frame", "block_matching_ms_per_frame", "decode_only_ms_per_frame",
                  "encode_ms_per_frame", "ratio_block_matching_over_codec", "intra_fraction"):
            assert k in row
        assert row["codec_ms_per_frame"] > 0 and row["block_matching_ms_per_frame"] > 0
