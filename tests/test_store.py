"""The on-disk PushWorld store: build, resume, read, and clear errors on damaged shards."""


import numpy as np
import pytest
import torch

from vpe_lib.data.errors import DataError
from vpe_lib.data.pushworld import PushWorldConfig, generate_video
from vpe_lib.data.samplers import ClipBatches, FrameBatches, labelled_frames
from vpe_lib.data.store import SPLIT_ID_OFFSET, PushWorldStore, build_dataset, video_seed

WORLD = PushWorldConfig(height=32, width=32, n_frames=6)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw")
    report = build_dataset(root, WORLD, n_train=5, n_test=3, videos_per_shard=2, seed=7, workers=2, progress=False)
    return root, report


def test_build_and_read(dataset):
    root, report = dataset
    assert report.generated_shards == 3 + 2 and report.reused_shards == 0
    train, test = PushWorldStore(root, "train"), PushWorldStore(root, "test")
    assert len(train) == 5 and len(test) == 3
    v = test.video(2)
    expected = generate_video(video_seed(7, SPLIT_ID_OFFSET["test"] + 2), WORLD)
    for key, arr in expected.items():
        np.testing.assert_array_equal(v[key], arr)
    assert PushWorldStore(root, "train", verify=True).get("frames", 4).shape == (6, 32, 32, 3)


def test_train_and_test_videos_differ(dataset):
    root, _ = dataset
    train, test = PushWorldStore(root, "train"), PushWorldStore(root, "test")
    assert not any(np.array_equal(train.get("frames", i), test.get("frames", j)) for i in range(5) for j in range(3))


def test_resume_keeps_finished_shards(tmp_path):
    kw = dict(n_train=4, n_test=2, videos_per_shard=2, seed=1, workers=1, progress=False)
    build_dataset(tmp_path, WORLD, **kw)
    # simulate an interrupted build: one shard never finished (no meta.json)
    (tmp_path / "train" / "shard_00001" / "meta.json").unlink()
    before = (tmp_path / "train" / "shard_00000" / "frames.npy").stat().st_mtime_ns
    report = build_dataset(tmp_path, WORLD, **kw)
    assert (report.generated_shards, report.reused_shards) == (1, 2)
    assert (tmp_path / "train" / "shard_00000" / "frames.npy").stat().st_mtime_ns == before
    assert len(PushWorldStore(tmp_path, "train")) == 4


def test_spec_mismatch_is_refused(tmp_path):
    build_dataset(tmp_path, WORLD, n_train=2, n_test=1, videos_per_shard=2, workers=1, progress=False)
    with pytest.raises(DataError, match="different spec"):
        build_dataset(tmp_path, WORLD, n_train=3, n_test=1, videos_per_shard=2, workers=1, progress=False)


def test_truncated_shard_names_the_file(tmp_path):
    build_dataset(tmp_path, WORLD, n_train=2, n_test=1, videos_per_shard=2, workers=1, progress=False)
    path = tmp_path / "train" / "shard_00000" / "instance.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"instance\.npy.*truncated"):
        PushWorldStore(tmp_path, "train")


def test_missing_dataset_is_clear(tmp_path):
    with pytest.raises(DataError, match="manifest.json missing"):
        PushWorldStore(tmp_path, "train")


def test_samplers_are_deterministic_per_step(dataset):
    root, _ = dataset
    store = PushWorldStore(root, "train")
    clips = ClipBatches(store, clip_frames=4, batch_size=3, seed=0)
    a, b, c = clips(5), clips(5), clips(6)
    assert a.shape == (3, 3, 4, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    frames, masks = labelled_frames(store, frame_stride=2)
    assert frames.shape == (5 * 3, 32, 32, 3) and masks.dtype == bool
    x, y = FrameBatches(frames, masks, batch_size=4, seed=1)(0)
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.long
    with pytest.raises(ValueError, match="clip_frames"):
        ClipBatches(store, clip_frames=10, batch_size=1)
