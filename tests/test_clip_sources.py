"""Clip sources over real video formats (HDF5, TFRecord, frame folders, video files) and RealClipBatches."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vpe_lib.data.bair import BairHdf5Source, BairTFRecordSource
from vpe_lib.data.tfrecord import _TABLE_LIST, crc32c, encode_example, iter_tfrecord, parse_example, write_tfrecord
from vpe_lib.data.clip_batches import RealClipBatches
from vpe_lib.data.clips import (ClipSource, FrameFolderSource, SkippedVideosWarning,
                                VideoFolderSource)
from vpe_lib.data.open_clips import open_clip_source
from vpe_lib.data.errors import DataError
from vpe_lib.data.exports import export_mp4

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real-data sample not available: {p}")
    return p


def videos(n: int, t: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """n distinct uint8 videos: per-video random content, so any mix-up is visible."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8) for _ in range(n)]


def smooth_video(t: int, h: int, w: int, phase: float) -> np.ndarray:
    """A moving smooth pattern (survives H.264 nearly intact)."""
    yy, xx = np.mgrid[:h, :w]
    frames = [np.stack([128 + 90 * np.sin((xx + 2 * k) / 5 + phase),
                        128 + 90 * np.cos((yy - k) / 4 + phase),
                        np.full((h, w), 60 + 40 * phase)], -1) for k in range(t)]
    return np.clip(frames, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# VideoGPT BAIR HDF5


def write_h5(path: Path, vids: list[np.ndarray], split: str = "train") -> Path:
    with h5py.File(path, "w") as f:
        f[f"{split}_data"] = np.concatenate(vids)
        f[f"{split}_idx"] = np.cumsum([0] + [len(v) for v in vids[:-1]])
    return path


def test_bair_hdf5_reads_back_exactly(tmp_path):
    vids = videos(3, 30, 16, 16)
    src = BairHdf5Source(write_h5(tmp_path / "bair.h5", vids), split="train")
    assert isinstance(src, ClipSource)
    assert len(src) == 3 and [src.num_frames(i) for i in range(3)] == [30, 30, 30] and src.skipped == []
    for i, v in enumerate(vids):
        np.testing.assert_array_equal(src.read_clip(i, 0, 30), v)
        np.testing.assert_array_equal(src.read_clip(i, 7, 16), v[7:23])
    with pytest.raises(IndexError):
        src.read_clip(0, 20, 16)
    clone = pickle.loads(pickle.dumps(src))  # handle re-opened lazily (data-loader workers)
    np.testing.assert_array_equal(clone.read_clip(2, 1, 3), vids[2][1:4])
    resized = BairHdf5Source(tmp_path / "bair.h5", size=(8, 8)).read_clip(0, 0, 2)
    assert resized.shape == (2, 8, 8, 3) and resized.dtype == np.uint8


def test_bair_hdf5_short_videos_skipped_or_raise(tmp_path):
    vids = [*videos(1, 30, 16, 16), *videos(1, 5, 16, 16, seed=1), *videos(1, 20, 16, 16, seed=2)]
    path = write_h5(tmp_path / "bair.h5", vids, split="test")
    with pytest.warns(SkippedVideosWarning, match="skipped 1 of 3 videos"):
        src = BairHdf5Source(path, split="test", min_frames=16)
    assert len(src) == 2 and [src.num_frames(i) for i in range(2)] == [30, 20]
    assert src.skipped == [(f"{path}#test_data[1]", "only 5 frames (< min_frames=16)")]
    np.testing.assert_array_equal(src.read_clip(1, 0, 20), vids[2])
    with pytest.raises(DataError, match=r"test_data\[1\].*only 5 frames"):
        BairHdf5Source(path, split="test", min_frames=16, on_error="raise")


@pytest.mark.parametrize("mutate, field, message", [
    (lambda f: f.pop("train_idx"), "train_idx", "missing dataset 'train_idx'"),
    (lambda f: f.pop("train_data"), "train_data", "missing dataset 'train_data'"),
    (lambda f: f.update(train_idx=np.array([0, 40, 30])), "train_idx", "not strictly increasing"),
    (lambda f: f.update(train_idx=np.array([0, 30, 30])), "train_idx", "not strictly increasing"),
    (lambda f: f.update(train_idx=np.array([0, 30, 90])), "train_idx", "out of range"),
    (lambda f: f.update(train_idx=np.array([-1, 30])), "train_idx", "out of range"),
    (lambda f: f.update(train_data=np.zeros((90, 16, 16), np.uint8)), "train_data", "uint8"),
])
def test_bair_hdf5_bad_layout_names_key(tmp_path, mutate, field, message):
    arrays = {"train_data": np.concatenate(videos(3, 30, 16, 16)), "train_idx": np.array([0, 30, 60])}
    mutate(arrays)
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
    with pytest.raises(DataError, match=message) as err:
        BairHdf5Source(path)
    assert err.value.field == field and err.value.path == str(path)


def test_bair_hdf5_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="cannot open as HDF5"):
        BairHdf5Source(tmp_path / "x.h5")
    with pytest.raises(DataError, match="not found"):
        BairHdf5Source(tmp_path / "missing.h5")


# ---------------------------------------------------------------------------
# BAIR TFRecords (own writer; no tensorflow)


def bair_example(frames: np.ndarray, png: bool = False) -> bytes:
    feats = {}
    for t, frame in enumerate(frames):
        if png:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="PNG")
            feats[f"{t}/image_aux1/encoded"] = buf.getvalue()
        else:
            feats[f"{t}/image_aux1/encoded"] = frame.tobytes()
        feats[f"{t}/image_main/encoded"] = frame[::-1].tobytes()
        feats[f"{t}/action"] = np.array([t, -t, 0.5, 1.0], np.float32)
        feats[f"{t}/endeffector_pos"] = np.array([t, 2.0 * t, 3.0], np.float32)
    return encode_example(feats)


def test_crc32c_and_example_roundtrip():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    data = np.random.default_rng(0).integers(0, 256, 200_003, dtype=np.uint8).tobytes()
    reg = 0xFFFFFFFF  # vectorised path == byte-by-byte path
    for b in data:
        reg = _TABLE_LIST[(reg ^ b) & 0xFF] ^ (reg >> 8)
    assert crc32c(data) == reg ^ 0xFFFFFFFF
    ex = parse_example(encode_example({"b": [b"x", b""], "f": np.array([1.5, -2.0]),
                                       "i": np.array([3, -7, 2**40]), "one": b"raw"}))
    assert ex["b"] == [b"x", b""] and ex["one"] == [b"raw"]
    np.testing.assert_array_equal(ex["f"], np.array([1.5, -2.0], np.float32))
    np.testing.assert_array_equal(ex["i"], np.array([3, -7, 2**40]))


def test_bair_tfrecord_reads_back_exactly(tmp_path):
    vids = videos(4, 10, 64, 64)
    records = [bair_example(v, png=(i == 3)) for i, v in enumerate(vids)]
    write_tfrecord(tmp_path / "traj_0_to_1.tfrecords", records[:2])
    write_tfrecord(tmp_path / "traj_2_to_3.tfrecords", records[2:])
    assert list(iter_tfrecord(tmp_path / "traj_0_to_1.tfrecords")) == records[:2]
    src = BairTFRecordSource(tmp_path)  # a folder: every *.tfrecord* file, naturally sorted
    assert len(src) == 4 and src.skipped == [] and src.num_frames(0) == 10
    for i, v in enumerate(vids):
        np.testing.assert_array_equal(src.read_clip(i, 0, 10), v)
    np.testing.assert_array_equal(src.read_clip(1, 4, 3), vids[1][4:7])
    actions = src.read_feature(2, "action")
    assert actions.shape == (10, 4) and actions[5].tolist() == [5, -5, 0.5, 1.0]
    main = BairTFRecordSource(tmp_path / "traj_0_to_1.tfrecords", image_key="image_main", size=(32, 32))
    assert main.read_clip(0, 0, 2).shape == (2, 32, 32, 3)


def test_bair_tfrecord_corrupt_records_skipped(tmp_path):
    vids = videos(3, 10, 64, 64)
    good = write_tfrecord(tmp_path / "a.tfrecords", [bair_example(v) for v in vids])
    blob = bytearray(good.read_bytes())
    rec = len(blob) // 3
    blob[rec + 500] ^= 0xFF  # a flipped byte inside record 1's data
    (tmp_path / "b.tfrecords").write_bytes(bytes(blob))
    (tmp_path / "c.tfrecords").write_bytes(good.read_bytes()[:rec + 1000])  # truncated in record 1
    (tmp_path / "d.tfrecords").write_bytes(b"definitely not a tfrecord file")
    short = write_tfrecord(tmp_path / "e.tfrecords", [bair_example(vids[0][:3]), b"\x0a\x05junk"])
    with pytest.warns(SkippedVideosWarning, match="skipped 5 of 11 videos"):
        src = BairTFRecordSource(tmp_path, min_frames=5)
    assert len(src) == 6  # a: 3, b: 2, c: 1
    reasons = dict(src.skipped)
    assert "data CRC mismatch" in reasons[f"{tmp_path / 'b.tfrecords'}#1"]
    assert "truncated file" in reasons[str(tmp_path / "c.tfrecords")]
    assert "corrupt length CRC" in reasons[str(tmp_path / "d.tfrecords")]
    assert "only 3 frames" in reasons[f"{short}#0"]
    assert "bad tf.train.Example" in reasons[f"{short}#1"]
    np.testing.assert_array_equal(src.read_clip(4, 0, 10), vids[2])  # b's record 2
    with pytest.raises(DataError, match="b.tfrecords#1: data CRC mismatch"):
        BairTFRecordSource(tmp_path, on_error="raise")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no .tfrecord"):
        BairTFRecordSource(tmp_path / "sub")


def test_bair_tfrecord_readable_by_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")  # optional cross-check, skipped where TF is absent
    frames = videos(1, 3, 64, 64)[0]
    path = write_tfrecord(tmp_path / "x.tfrecords", [bair_example(frames)])
    (raw,) = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    ex = tf.train.Example.FromString(raw)
    assert ex.features.feature["1/image_aux1/encoded"].bytes_list.value[0] == frames[1].tobytes()


# ---------------------------------------------------------------------------
# frame folders


def save_frames(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t}.png")


def test_frame_folders_skip_short_and_corrupt(tmp_path):
    vids = videos(4, 12, 16, 16)
    for name, v in zip(["good_a", "good_b", "corrupt", "truncated"], vids):
        save_frames(tmp_path / name, v)
    save_frames(tmp_path / "short", vids[0][:4])
    (tmp_path / "corrupt" / "5.png").write_bytes(b"not a png at all")
    png = (tmp_path / "truncated" / "3.png").read_bytes()
    (tmp_path / "truncated" / "3.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no frames here")

    summary = r"skipped 4 of 6 videos in .*: corrupt/5.png: cannot read image"
    with pytest.warns(SkippedVideosWarning, match=summary):
        src = FrameFolderSource(tmp_path, min_frames=8)
    assert len(src) == 2
    assert [src.video_id(i) for i in range(2)] == [str(tmp_path / "good_a"), str(tmp_path / "good_b")]
    np.testing.assert_array_equal(src.read_clip(0, 0, 12), vids[0])  # natural order: 10 after 9
    reasons = dict(src.skipped)
    assert set(reasons) == {str(tmp_path / n) for n in ("short", "notes")} | {
        str(tmp_path / "corrupt" / "5.png"), str(tmp_path / "truncated" / "3.png")}
    assert "only 4 frames" in reasons[str(tmp_path / "short")]
    assert "cannot read image" in reasons[str(tmp_path / "corrupt" / "5.png")]
    assert "no frame matching" in reasons[str(tmp_path / "notes")]

    with pytest.raises(DataError) as err:
        FrameFolderSource(tmp_path, min_frames=8, on_error="raise")
    assert err.value.path == str(tmp_path / "corrupt" / "5.png")

    cropped = FrameFolderSource(tmp_path / "good_b", crop_border=(1, 2), size=None)  # root = one video
    np.testing.assert_array_equal(cropped.read_clip(0, 2, 3), vids[1][2:5, 1:, 2:])
    small = FrameFolderSource(tmp_path / "good_b", crop_border=2, size=(8, 6))
    assert small.read_clip(0, 0, 1).shape == (1, 8, 6, 3)


def test_empty_roots_raise(tmp_path):
    (tmp_path / "empty").mkdir()
    for make in (FrameFolderSource, VideoFolderSource, open_clip_source):
        with pytest.raises(DataError) as err:
            make(tmp_path / "empty")
        assert err.value.path == str(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        FrameFolderSource(tmp_path / "missing")


# ---------------------------------------------------------------------------
# video folders


def test_video_folder_reads_good_and_skips_bad(tmp_path):
    a, b = smooth_video(12, 32, 32, 0.0), smooth_video(9, 32, 48, 1.0)
    export_mp4(a, tmp_path / "a.mp4")
    export_mp4(b, tmp_path / "sub" / "b.mp4")
    gif = np.repeat(np.repeat(np.arange(10, dtype=np.uint8)[:, None, None, None] * 25, 16, 1), 16, 2)
    gif = np.repeat(gif, 3, 3)
    Image.fromarray(gif[0]).save(tmp_path / "c.gif", save_all=True, duration=100, loop=0,
                                 append_images=[Image.fromarray(f) for f in gif[1:]])
    full = export_mp4(a, tmp_path / "tmp_full.mp4").read_bytes()
    (tmp_path / "tmp_full.mp4").unlink()
    (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 2])  # index (moov) lost
    cut_fast = export_mp4(a, tmp_path / "fast.mp4", faststart=True).read_bytes()
    (tmp_path / "fast.mp4").write_bytes(cut_fast[: len(cut_fast) - 600])  # frames lost at the end
    (tmp_path / "text.mp4").write_text("this is not a video")
    (tmp_path / "notes.txt").write_text("ignored: not a video extension")

    with pytest.warns(SkippedVideosWarning, match="skipped 3 of 6 videos"):
        src = VideoFolderSource(tmp_path)
    assert [Path(src.video_id(i)).name for i in range(len(src))] == ["a.mp4", "c.gif", "b.mp4"]
    assert [src.num_frames(i) for i in range(3)] == [12, 10, 9]
    assert {Path(p).name for p, _ in src.skipped} == {"cut.mp4", "fast.mp4", "text.mp4"}
    reasons = {Path(p).name: r for p, r in src.skipped}
    assert "truncated" in reasons["fast.mp4"] and "cannot open video" in reasons["text.mp4"]
    decoded = src.read_clip(0, 0, 12).astype(float)  # lossy H.264 (yuv420: chroma at half size)
    assert np.abs(decoded - a).mean() < 8 and np.corrcoef(decoded.ravel(), a.ravel())[0, 1] > 0.95
    np.testing.assert_array_equal(src.read_clip(1, 2, 5)[:, 0, 0, 0], gif[2:7, 0, 0, 0])
    assert src.read_clip(2, 0, 9).shape == (9, 32, 48, 3)

    with pytest.raises(DataError) as err:
        VideoFolderSource(tmp_path, on_error="raise")
    assert Path(err.value.path).name in {"cut.mp4", "fast.mp4", "text.mp4"}

    # resize / stride / max_frames, and the no-cache path decodes the same frames
    small = VideoFolderSource(tmp_path / "a.mp4", size=(16, 16), stride=2, max_frames=5)
    nocache = VideoFolderSource(tmp_path / "a.mp4", size=(16, 16), stride=2, max_frames=5, cache_bytes=0)
    assert small.num_frames(0) == 5 and small.read_clip(0, 1, 4).shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(small.read_clip(0, 1, 4), nocache.read_clip(0, 1, 4))
    assert nocache._cache == {}


# ---------------------------------------------------------------------------
# real samples (skipped when ../shared/data is absent)


def test_bair_samples_frame_folder():
    root = shared("bair_samples", "frames")
    src = FrameFolderSource(root, crop_border=(1, 1))
    assert len(src) == 4 and all(src.num_frames(i) == 30 for i in range(4)) and src.skipped == []
    clip = src.read_clip(2, 10, 16)
    assert clip.shape == (16, 63, 63, 3) and clip.dtype == np.uint8 and clip.std() > 10
    resized = FrameFolderSource(root, crop_border=(1, 1), size=(64, 64))
    assert resized.read_clip(0, 0, 16).shape == (16, 64, 64, 3)
    auto = open_clip_source(root, crop_border=(1, 1))
    assert isinstance(auto, FrameFolderSource) and len(auto) == 4


def test_bear_mp4_video_folder():
    path = shared("clips", "bear.mp4")
    src = VideoFolderSource(path.parent, size=(64, 64), max_frames=32)
    assert len(src) == 1 and src.num_frames(0) == 32
    clip = src.read_clip(0, 8, 16)
    assert clip.shape == (16, 64, 64, 3) and clip.std() > 10
    batches = RealClipBatches(src, clip_frames=16, batch_size=2, seed=0)
    assert batches(0).shape == (2, 3, 16, 64, 64)


# ---------------------------------------------------------------------------
# RealClipBatches and open_clip_source


def test_real_clip_batches_deterministic(tmp_path):
    vids = [*videos(3, 20, 16, 16), *videos(1, 6, 16, 16, seed=3)]
    src = BairHdf5Source(write_h5(tmp_path / "bair.h5", vids))
    with pytest.warns(SkippedVideosWarning, match="1 of 4 videos"):
        batches = RealClipBatches(src, clip_frames=8, batch_size=5, seed=7)
    x = batches(3)
    assert x.shape == (5, 3, 8, 16, 16) and x.dtype == torch.float32
    assert -1 <= x.min() and x.max() <= 1 and x.std() > 0.3
    assert torch.equal(x, batches.batches(3)) and not torch.equal(x, batches(4))
    with pytest.warns(SkippedVideosWarning):
        again = RealClipBatches(src, clip_frames=8, batch_size=5, seed=7)  # a resumed run
    assert torch.equal(again(3), x)
    # every clip is a real window of one of the long videos
    frames = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    for clip in frames:
        assert any(np.array_equal(clip, v[s:s + 8]) for v in vids[:3] for s in range(13))
    fixed = batches.fixed(6)
    assert fixed.shape == (6, 3, 8, 16, 16) and torch.equal(fixed, batches.fixed(6))
    with pytest.warns(SkippedVideosWarning):
        up = RealClipBatches(src, clip_frames=8, batch_size=2, size=(32, 24))(0)
    assert up.shape == (2, 3, 8, 32, 24) and -1 <= up.min() and up.max() <= 1
    with pytest.raises(DataError, match="clip_frames=21"):
        RealClipBatches(src, clip_frames=21, batch_size=2)


def test_real_clip_batches_mixed_sizes_need_size(tmp_path):
    export_mp4(smooth_video(8, 16, 16, 0.0), tmp_path / "a.mp4")
    export_mp4(smooth_video(8, 32, 16, 1.0), tmp_path / "b.mp4")
    src = VideoFolderSource(tmp_path)
    with pytest.raises(DataError, match="pass size"):
        for step in range(20):  # some step draws both videos
            RealClipBatches(src, clip_frames=4, batch_size=4)(step)
    assert RealClipBatches(src, clip_frames=4, batch_size=4, size=(16, 16))(0).shape == (4, 3, 4, 16, 16)


def test_open_clip_source_dispatch(tmp_path):
    vids = videos(2, 10, 64, 64)
    assert isinstance(open_clip_source(write_h5(tmp_path / "b.hdf5", vids)), BairHdf5Source)
    (tmp_path / "tf").mkdir()
    rec = write_tfrecord(tmp_path / "tf" / "t.tfrecords", [bair_example(v) for v in vids])
    assert isinstance(open_clip_source(rec), BairTFRecordSource)
    assert len(open_clip_source(tmp_path / "tf")) == 2
    assert len(open_clip_source(str(tmp_path / "tf" / "*.tfrecords"))) == 2
    export_mp4(vids[0], tmp_path / "mp4s" / "x.mp4")
    assert isinstance(open_clip_source(tmp_path / "mp4s", size=(32, 32)), VideoFolderSource)
    save_frames(tmp_path / "jpgs" / "seq", vids[1])
    for p in (tmp_path / "jpgs" / "seq").glob("*.png"):
        Image.open(p).save(p.with_suffix(".jpg"))
        p.unlink()
    frames = open_clip_source(tmp_path / "jpgs")
    assert isinstance(frames, FrameFolderSource) and frames.pattern == "*.jpg" and frames.num_frames(0) == 10
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"looked for .*\.h5.*tfrecord.*\.mp4.*\.png") as err:
        open_clip_source(tmp_path / "other")
    assert err.value.path == str(tmp_path / "other")
    with pytest.raises(DataError, match="not found"):
        open_clip_source(tmp_path / "nope")
    with pytest.raises(TypeError):  # a keyword the chosen source does not take is not dropped silently
        open_clip_source(tmp_path / "b.hdf5", crop_border=1)
