"""The videos stage 03 reads, from any source: PushWorld's store (ground-truth flow) and decoded real
video (the frame-difference proxy), with the same interface; and the stage end to end on DAVIS."""

from pathlib import Path

import numpy as np
import pytest

from vpe_lib.data.errors import DataError
from vpe_lib.data.motion import moving_tokens, true_moving_tokens
from vpe_lib.data.prediction_videos import (FRAME_DIFFERENCE_THRESHOLD, ClipSourceVideos, PushWorldVideos,
                                            davis_prediction_videos)
from vpe_lib.data.clips import InMemoryClipSource

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} absent (real data samples live beside the project)")
    return path


def _square_video(n=6, size=16, step=2):
    """A white 4x4 square moving `step` px right per frame over black, and a static video."""
    moving = np.zeros((n, size, size, 3), np.uint8)
    for t in range(n):
        moving[t, 4:8, t * step:t * step + 4] = 255
    static = np.full((n, size, size, 3), 90, np.uint8)
    return InMemoryClipSource({"moving": moving, "static": static}, name="squares")


def test_frame_difference_marks_what_changes_and_nothing_else():
    v = ClipSourceVideos(_square_video(), name="squares", identity={"x": 1})
    assert v.motion_kind == "frame_difference" and v.ids == [0, 1]
    step = v.moving_steps(0)
    assert step.shape == (6, 16, 16)
    # step 0 (frame 0 -> 1): the square's trailing 2 columns went dark, its 2 new columns lit
    assert step[0, 4:8, 0:2].all() and step[0, 4:8, 4:6].all() and not step[0, 4:8, 2:4].any()
    assert not step[0, :4].any() and not step[-1].any()  # nothing above the square; the last frame has no next
    assert not v.moving_steps(1).any()  # a static video never moves
    assert float(v.step_motion(0)[0, 4, 0]) == 255.0 > FRAME_DIFFERENCE_THRESHOLD
    # frames by slice and by index array agree; a scalar index gives one frame
    assert np.array_equal(v.frames(0, slice(2, 4)), v.frames(0, np.array([2, 3])))
    assert v.frames(0, 3).shape == (16, 16, 3)
    with pytest.raises(DataError, match="no foreground labels"):
        v.foreground(0, [0])


def test_moving_tokens_is_true_moving_tokens_on_flow():
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 1, (4, 16, 16, 2)).astype(np.float32)
    from vpe_lib.data.motion import remove_camera_motion
    f = remove_camera_motion(flow)
    assert np.array_equal(moving_tokens(np.hypot(f[..., 0], f[..., 1]) > 0.5, (2, 4, 4)),
                          true_moving_tokens(flow, (2, 4, 4)))


def test_pushworld_videos_read_the_store(tmp_path):
    from vpe_lib.data.pushworld import PushWorldConfig
    from vpe_lib.data.store import PushWorldStore, build_dataset
    build_dataset(tmp_path, PushWorldConfig(height=32, width=32, n_frames=6), n_train=2, n_test=1,
                  videos_per_shard=2, workers=1)
    store = PushWorldStore(tmp_path, "train")
    v = PushWorldVideos(store, range(1, 2))
    assert v.ids == [1] and v.num_frames(1) == 6 and v.motion_kind == "flow"
    assert np.array_equal(v.frames(1, slice(0, 3)), store.get("frames", 1, slice(0, 3)))
    assert np.array_equal(v.foreground(1), store.get("semantic", 1) > 0)
    assert v.identity == {"split": "train", "root": str(tmp_path)}  # motion caches keyed as before


def test_davis_videos_split_by_sequence_with_masks():
    root = _shared("davis_sample")

    class Data:  # the DataConfig fields the reader uses
        source = f"davis:{root}"
        davis_train, davis_val, davis_test = ("blackswan", "dog"), (), ("motocross-jump",)
        davis_resolution, image_size, seed = "480p", 32, 0

    videos = davis_prediction_videos(Data())
    # no val sequence listed: the last training sequence validates the predictors, never a test one
    assert [videos[s].identity["sequences"] for s in ("train", "val", "test")] == \
        [["blackswan"], ["dog"], ["motocross-jump"]]
    test = videos["test"]
    assert test.num_frames(0) == 40 and test.frames(0, slice(0, 2)).shape == (2, 32, 32, 3)
    fg = test.foreground(0, [0, 10])
    assert fg.shape == (2, 32, 32) and fg.dtype == bool and 0 < fg.mean() < 1
    assert test.moving_steps(0, slice(0, 4)).any()  # motocross: things change

    class OneTrain(Data):
        davis_train = ("blackswan",)
    with pytest.raises(DataError, match="validation sequence"):
        davis_prediction_videos(OneTrain())


@pytest.mark.slow
def test_the_davis_profile_on_the_samples(tmp_path):
    """The davis profile (CI's smoke form: its models and data, a few updates): the predictors and the
    masking study train on the training sequences (with the frame-difference proxy for motion, said so),
    and the heads stage segments with the transformer-informed encoder like on PushWorld."""
    from vpe_lib.config import get_config
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.heads_stage import run_heads_stage
    from vpe_lib.stages.predict_stage import run_predict_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage
    import json

    over = {"data.source": f"davis:{_shared('davis_sample')}", "data.davis_train": ["blackswan", "dog"],
            "data.davis_val": ["car-shadow"], "data.davis_test": ["motocross-jump"],
            "pretrain.compare_quantizers": [], "pretrain.train.steps": 3,
            "predict.train.steps": 4, "predict.study_budgets": [1.0], "predict.study_maskings": ["random", "mgm"],
            "seg.train.steps": 4, "seg.train.eval_every": 2, "seg.level_probes": False,
            "seg.without_pixel_levels": False, "seg.label_pcts": [100], "seg.encoders": ["masked", "random_masked"],
            "seg.modes": ["frozen"], "seg.frame_stride": 8, "seg.test_frame_stride": 8, "seg.seeds": [0], "seg.convergence_steps": 0,
            "predict.probe_videos": 2, "predict.study_seeds": [0], "pretrain.n_eval_clips": 4,
            # CI's smoke form: the smoke profile's model sizes at 32 px (the profile's own: 64 px, ~4x the CPU)
            "data.image_size": 32, "pretrain.tokenizer.base_channels": 8, "pretrain.tokenizer.channel_mults": [1, 2],
            "pretrain.tokenizer.temporal_down": [True], "pretrain.tokenizer.spatial_down": [True],
            "pretrain.tokenizer.embed_dim": 16, "pretrain.tokenizer.codebook_size": 32,
            "predict.dim": 32, "predict.depth": 2, "predict.heads": 2, "predict.n_sample_clips": 2,
            "predict.maskgit_steps": 2, "seg.head_hidden": 8}
    assert get_config("davis").data.image_size == 64 and get_config("davis").data.source.startswith("davis:")
    cfg, out = start_stage("davis", tmp_path, "pretrain", over)
    run_pretrain_stage(cfg, tmp_path, out, progress=False)
    cfg, out = start_stage("davis", tmp_path, "predict", over)
    m = run_predict_stage(cfg, tmp_path, out, progress=False)
    assert m["predict/motion_is_proxy"] == 1.0 and "predict/skipped_no_video" not in m
    for name in ("masked", "ar", "code_table", "copy_tokens"):
        assert np.isfinite(m[f"predict/{name}/nll_bits_per_token"]), name
    assert np.isfinite(m["predict/masked/psnr_db"]) and 0 < m["predict/moving_pixel_fraction"] < 1
    assert np.isfinite(m["masking/mgm/x1/probe_fg_iou"]) and "masking/mgm/moving_recall" in m
    videos = json.loads((out / "videos.json").read_text())
    assert "motocross-jump" in videos["test"]["name"] and "proxy" in videos["test"]["motion"]
    cfg, out = start_stage("davis", tmp_path, "heads", over)
    hm = run_heads_stage(cfg, tmp_path, out, progress=False, log=lambda s: None)
    assert 0 <= hm["seg/davis/fg_iou/masked/conv/frozen/labels100"] <= 1
    assert 0 <= hm["seg/davis/native_jf_mean/masked/conv/frozen/labels100"] <= 1
    assert 0.5 < hm["seg/davis/ceiling/jf_mean"] < 1  # the truth at 32 px and back to 854 x 480
    assert json.loads((out / "skipped.json").read_text())["methods_not_run"] == []


def _bear_folder(tmp_path):
    """Three 'videos' (links to the real H.264 clip bear.mp4): a video source split by file."""
    bear = _shared("clips") / "bear.mp4"
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.mp4").symlink_to(bear)
    return folder


def test_video_source_splits_by_file_and_mgm_reads_the_files_own_stream(tmp_path, monkeypatch):
    from vpe_lib.config import get_config
    from vpe_lib.data.motion import MotionCache
    from vpe_lib.data.prediction_videos import video_prediction_videos
    from vpe_lib.stages import masking_study
    from vpe_lib.stages.masking_study import video_clip_motion

    def no_reencoding(frames):
        raise AssertionError("MGM re-encoded the frames of a video that has its own stream")
    monkeypatch.setattr(masking_study, "codec_motion", no_reencoding)

    cfg = get_config("smoke", {"data.source": f"video:{_bear_folder(tmp_path)}"})
    videos = video_prediction_videos(cfg.data)
    assert [len(videos[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    test = videos["test"]
    assert test.codec_file(test.ids[0]).name == "c.mp4" and test.motion_kind == "frame_difference"
    assert test.frames(test.ids[0], slice(0, 4)).shape == (4, 32, 32, 3)
    cache = MotionCache(tmp_path / "cache")
    motion = video_clip_motion(test, test.ids[0], [0, 4], 4, (2, 8, 8), cache, "codec")
    assert motion.shape == (2, 2, 8, 8) and np.isfinite(motion).all() and motion.max() > 0


def test_a_video_source_needs_three_videos(tmp_path):
    from vpe_lib.config import get_config
    from vpe_lib.data.prediction_videos import video_prediction_videos

    folder = _bear_folder(tmp_path)
    (folder / "c.mp4").unlink()
    with pytest.raises(DataError, match="at least 3 videos"):
        video_prediction_videos(get_config("smoke", {"data.source": f"video:{folder}"}).data)


@pytest.mark.slow
def test_pretraining_and_prediction_on_a_folder_of_videos(tmp_path):
    """`data.source=video:<folder>`: the tokenizer and both predictors train on the training videos,
    the masking study's MGM reads each file's own motion vectors (said in a metric)."""
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.predict_stage import run_predict_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    over = {"data.source": f"video:{_bear_folder(tmp_path)}", "pretrain.compare_quantizers": [],
            "pretrain.train.steps": 3, "predict.train.steps": 4, "predict.study_budgets": [1.0],
            "predict.study_maskings": ["random", "mgm"]}
    cfg, out = start_stage("smoke", tmp_path, "pretrain", over)
    pm = run_pretrain_stage(cfg, tmp_path, out, progress=False)
    assert pm["tokenizer/steps"] == 3 and pm["tokenizer/real_train_videos"] == 1  # a.mp4; b, c held out
    cfg, out = start_stage("smoke", tmp_path, "predict", over)
    m = run_predict_stage(cfg, tmp_path, out, progress=False)
    assert np.isfinite(m["predict/masked/nll_bits_per_token"]) and np.isfinite(m["predict/ar/nll_bits_per_token"])
    assert m["masking/mgm/motion_from_own_stream"] == 1.0 and m["predict/motion_is_proxy"] == 1.0
