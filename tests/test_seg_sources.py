"""Labelled splits from real data (DAVIS, COCO), their bad inputs, the config keys and the pretraining clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpe_lib.config import ConfigError, get_config, load_config, save_config
from vpe_lib.data.clip_batches import RealClipBatches
from vpe_lib.data.clips import ClipSource
from vpe_lib.data.errors import DataError
from vpe_lib.data.seg_sources import (IGNORE, SkippedDataWarning, SkipReport, davis_clip_source,
                                      load_coco_splits, load_davis_splits, load_labelled_splits,
                                      parse_source, pretraining_clip_source, read_davis_semantic,
                                      resize_frames, resize_labels)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAVIS_SEQS = ["blackswan", "car-shadow", "dog", "motocross-jump"]  # 50, 40, 60, 40 frames


def shared(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real-data sample not available: {p}")
    return p


# ---------------------------------------------------------------------------
# synthetic data


def write_davis(root: Path, seqs: dict[str, int], *, w: int = 20, h: int = 12) -> Path:
    """A tiny DAVIS layout: `seqs` name -> number of frames; 0/255 masks with a moving box."""
    for seq, n in seqs.items():
        (root / "JPEGImages" / "480p" / seq).mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / "480p" / seq).mkdir(parents=True, exist_ok=True)
        for t in range(n):
            img = np.full((h, w, 3), 40 + 10 * t, np.uint8)
            mask = np.zeros((h, w), np.uint8)
            mask[2:8, 2 + t:10 + t] = 255
            img[mask > 0] = 220
            Image.fromarray(img).save(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", quality=95)
            Image.fromarray(mask).save(root / "Annotations" / "480p" / seq / f"{t:05d}.png")
    return root


def ann_path(root: Path, seq: str, t: int) -> Path:
    return root / "Annotations" / "480p" / seq / f"{t:05d}.png"


def img_path(root: Path, seq: str, t: int) -> Path:
    return root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg"


SPLITS3 = {"train": ["a"], "val": ["b"], "test": ["c"]}


def kinds(report: SkipReport) -> list[tuple[str, str]]:
    return [(Path(s["path"]).name, s["kind"]) for s in report.skipped]


def write_coco(root: Path, n: int = 10, *, hw: int = 16) -> Path:
    """`n` images; categories in json order zebra (id 7), apple (id 3); image 0 has a crowd RLE."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, anns = [], []
    for i in range(n):
        name = f"{i:012d}.jpg"
        Image.fromarray(np.full((hw, hw, 3), 20 * i % 255, np.uint8)).save(root / "val2017" / name)
        images.append({"id": 100 + i, "file_name": name, "height": hw, "width": hw})
        anns.append({"id": 1000 + 2 * i, "image_id": 100 + i, "category_id": 7, "iscrowd": 0, "area": 64,
                     "bbox": [2, 2, 8, 8], "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]})
        anns.append({"id": 1001 + 2 * i, "image_id": 100 + i, "category_id": 3, "iscrowd": 0, "area": 9,
                     "bbox": [11, 11, 3, 3], "segmentation": [[11, 11, 14, 11, 14, 14, 11, 14]]})
    # crowd on image 0: uncompressed RLE (column-major) of the last 3 columns
    anns.append({"id": 5000, "image_id": 100, "category_id": 7, "iscrowd": 1, "area": 3 * hw,
                 "bbox": [hw - 3, 0, 3, hw], "segmentation": {"counts": [hw * (hw - 3), 3 * hw], "size": [hw, hw]}})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "apple"}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


# ---------------------------------------------------------------------------
# source spec, config


def test_parse_source():
    assert parse_source("pushworld") == ("pushworld", None)
    assert parse_source("davis:/data/DAVIS") == ("davis", Path("/data/DAVIS"))
    assert parse_source("coco:/data/coco") == ("coco", Path("/data/coco"))
    with pytest.raises(ValueError, match=r"unknown data source kind 'kitti'.*valid: pushworld, davis:.*coco:"):
        parse_source("kitti:/x")
    with pytest.raises(ValueError, match="'davis' needs a path"):
        parse_source("davis:")
    with pytest.raises(ValueError, match="takes no path"):
        parse_source("pushworld:/x")


def test_config_source_keys(tmp_path):
    assert get_config("smoke").data.source == "pushworld"
    cfg = get_config("smoke", {"data.source": "davis:/x", "data.davis_train": ["a", "b"],
                               "data.davis_test": ["c"]})
    assert cfg.data.source == "davis:/x" and cfg.data.davis_train == ("a", "b") and cfg.data.davis_val == ()
    assert load_config(save_config(cfg, tmp_path / "c.json")) == cfg
    with pytest.raises(ConfigError, match=r"unknown data source kind 'davsi'.*valid: pushworld, davis"):
        get_config("smoke", {"data.source": "davsi:/x"})
    with pytest.raises(ConfigError, match="'a' is listed twice: in davis_train and in davis_test"):
        get_config("smoke", {"data.source": "davis:/x", "data.davis_train": ["a"], "data.davis_test": ["a"]})
    with pytest.raises(ConfigError, match="davis_train and davis_test must both"):
        get_config("smoke", {"data.source": "davis:/x", "data.davis_train": ["a"]})
    with pytest.raises(ConfigError, match="set but source is 'pushworld'"):
        get_config("smoke", {"data.davis_train": ["a"], "data.davis_test": ["b"]})
    with pytest.raises(ConfigError, match="coco_fractions"):
        get_config("smoke", {"data.source": "coco:/x", "data.coco_fractions": [0.5, 0.6, 0.1]})


# ---------------------------------------------------------------------------
# resizing


def test_resize_helpers():
    frames = np.random.default_rng(0).integers(0, 256, (2, 12, 20, 3), dtype=np.uint8)
    assert resize_frames(frames, 8).shape == (2, 8, 8, 3) and resize_frames(frames[0], (6, 4)).shape == (6, 4, 3)
    labels = np.zeros((12, 20), np.uint8)
    labels[:, 10:] = 1
    labels[0, 0] = IGNORE
    small = resize_labels(labels, 10)
    assert small.dtype == np.uint8 and set(np.unique(small)) <= {0, 1, IGNORE}
    assert (small[:, :5] != 1).all() and (small[:, 5:] == 1).all()  # squashed, not cropped
    inst = np.arange(240, dtype=np.int32).reshape(12, 20) * 1000
    out = resize_labels(inst[None], 6)
    assert out.dtype == np.int32 and set(np.unique(out)) <= set(np.unique(inst))  # nearest: no new values


# ---------------------------------------------------------------------------
# DAVIS sample


def test_davis_sample_splits_by_sequence():
    root = shared("davis_sample")
    splits = {"train": ["blackswan", "dog"], "val": ["car-shadow"], "test": ["motocross-jump"]}
    out, report, classes = load_davis_splits(root, size=24, splits=splits,
                                             frame_stride={"train": 10, "val": 20, "test": 20})
    assert classes == ["background", "foreground"] and len(report) == 0
    assert out["train"].names == ["blackswan", "dog"]
    assert out["train"].video_ids.tolist() == [0] * 5 + [1] * 6  # frames 0,10..40 / 0,10..50
    assert out["val"].names == ["car-shadow"] and len(out["val"]) == 2
    assert out["test"].names == ["motocross-jump"] and len(out["test"]) == 2
    for split in out.values():
        assert split.frames.shape == (len(split), 24, 24, 3) and split.frames.dtype == np.uint8
        assert split.semantic.shape == (len(split), 24, 24) and split.semantic.dtype == np.uint8
        assert set(np.unique(split.semantic)) == {0, 1} and split.instance is None


def test_davis_sample_auto_split_is_deterministic():
    root = shared("davis_sample")
    a, _, _ = load_davis_splits(root, size=16, splits=None, frame_stride=20)
    b, _, _ = load_davis_splits(root, size=16, splits=None, frame_stride=20)
    assert [a[k].names for k in ("train", "val", "test")] == [["blackswan", "car-shadow"], ["dog"], ["motocross-jump"]]
    for k in a:
        np.testing.assert_array_equal(a[k].frames, b[k].frames)
        np.testing.assert_array_equal(a[k].semantic, b[k].semantic)


def test_davis_sample_resize_keeps_foreground_fraction():
    root = shared("davis_sample")
    sem, problem = read_davis_semantic(root / "Annotations" / "480p" / "dog" / "00000.png")
    assert problem is None and sem.shape == (480, 854)
    out, _, _ = load_davis_splits(root, size=64, splits={"train": ["dog"], "test": ["blackswan"]}, frame_stride=100)
    assert set(out) == {"train", "test"}  # no val listed -> no val split
    assert abs(out["train"].semantic[0].mean() - sem.mean()) < 0.02  # squashed, nothing cropped away


def test_davis_pretraining_clips_come_from_train_sequences_only():
    root = shared("davis_sample")
    cfg = get_config("smoke", {"data.source": f"davis:{root}", "data.davis_train": ["dog"],
                               "data.davis_val": ["car-shadow"], "data.davis_test": ["blackswan"]})
    src = pretraining_clip_source(cfg.data, frame_stride=4)
    assert isinstance(src, ClipSource) and [src.video_id(i) for i in range(len(src))] == ["dog"]
    assert src.num_frames(0) == 15 and src.read_clip(0, 0, 4).shape == (4, 32, 32, 3)  # world 32x32
    x = RealClipBatches(src, clip_frames=4, batch_size=2, seed=0)(0)
    assert tuple(x.shape) == (2, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="only 'davis:<root>'"):
        pretraining_clip_source(get_config("smoke").data)


# ---------------------------------------------------------------------------
# COCO sample


def test_tiny_coco_classes_crowd_and_splits():
    root = shared("tiny_coco")
    out, report, classes = load_coco_splits(root, size=32, seed=0)
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    assert classes == ["background", *(c["name"] for c in data["categories"])] and len(classes) == 81
    assert {k: len(v) for k, v in out.items()} == {"train": 30, "val": 10, "test": 10} and len(report) == 0
    names = [n for v in out.values() for n in v.names]
    assert sorted(names) == sorted(i["file_name"] for i in data["images"])  # every image once: split by image
    crowd = 0
    for v in out.values():
        assert v.video_ids.tolist() == list(range(len(v)))
        assert v.instance.dtype == np.int32 and v.instance.shape == v.semantic.shape
        assert v.semantic[v.semantic != IGNORE].max() <= 80
        crowd += int((v.semantic == IGNORE).sum())
        assert (v.instance[v.semantic == IGNORE] == 0).all()
        assert ((v.instance > 0) == ((v.semantic > 0) & (v.semantic != IGNORE))).all()
    assert crowd > 0
    again, _, _ = load_coco_splits(root, size=32, seed=0)
    other, _, _ = load_coco_splits(root, size=32, seed=1)
    assert again["test"].names == out["test"].names and other["test"].names != out["test"].names


# ---------------------------------------------------------------------------
# synthetic COCO


def test_coco_json_category_order_and_crowd(tmp_path):
    root = write_coco(tmp_path / "coco")
    out, report, classes = load_coco_splits(root, size=16, fractions=(0.8, 0.0, 0.2), seed=3)
    assert classes == ["background", "zebra", "apple"]  # json order, not category-id order
    assert set(out) == {"train", "test"} and len(out["train"]) == 8 and len(report) == 0
    allsem = np.concatenate([v.semantic for v in out.values()])
    assert (allsem[:, 2:10, 2:10] == 1).all() and (allsem[:, 11:14, 11:13] == 2).all()
    first = next(v for v in out.values() if "000000000000.jpg" in v.names)
    sem0 = first.semantic[first.names.index("000000000000.jpg")]
    assert (sem0[:10, 13:] == IGNORE).all() and (sem0[:10, 11:13] == 0).all()  # crowd not under an object
    # the json itself as the source; "coco:<json>" via the config
    cfg = get_config("smoke", {"data.source": f"coco:{root / 'annotations' / 'instances_val2017.json'}",
                               "data.image_size": 8})
    via_cfg, _, _ = load_labelled_splits(cfg.data)
    assert via_cfg["train"].frames.shape[1:] == (8, 8, 3) and set(via_cfg) == {"train", "val", "test"}


def test_coco_missing_unreadable_and_wrong_size_images_are_skipped(tmp_path):
    root = write_coco(tmp_path / "coco")
    (root / "val2017" / "000000000001.jpg").unlink()
    (root / "val2017" / "000000000002.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(root / "val2017" / "000000000003.jpg")
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    data["annotations"].append({"id": 9000, "image_id": 104, "category_id": 3, "iscrowd": 0,  # RLE of 8x8
                                "segmentation": {"counts": [10, 54], "size": [8, 8]}})
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.warns(SkippedDataWarning, match="missing image: 1"):
        out, report, _ = load_coco_splits(root, size=16)
    assert sorted(kinds(report)) == [("000000000001.jpg", "missing image"),
                                     ("000000000002.jpg", "unreadable image"),
                                     ("000000000003.jpg", "size mismatch"),
                                     ("000000000004.jpg", "bad annotation")]
    assert "image_id 101" in report.skipped[[k for _, k in kinds(report)].index("missing image")]["reason"]
    assert "annotation id 9000" in report.skipped[[k for _, k in kinds(report)].index("bad annotation")]["reason"]
    assert sum(len(v) for v in out.values()) == 6
    assert "missing image: 1" in report.summary() and "000000000001.jpg" in report.summary()


def test_coco_split_emptied_by_skips_names_the_split(tmp_path):
    root = write_coco(tmp_path / "coco", n=3)
    for p in (root / "val2017").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"split 'train' is empty: all 1 of its images were skipped.*missing image"):
        load_coco_splits(root, size=8)


# ---------------------------------------------------------------------------
# synthetic DAVIS: the bad inputs


def test_davis_2017_palette_mask(tmp_path):
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 1:3], ids[3:5, 4:7], ids[0, 7] = 1, 2, 255  # two instances and a void pixel
    im = Image.fromarray(ids, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
    im.save(tmp_path / "m.png")
    sem, problem = read_davis_semantic(tmp_path / "m.png")
    assert problem is None
    np.testing.assert_array_equal(sem, np.where(ids == 255, IGNORE, ids > 0).astype(np.uint8))


def test_davis_frame_without_mask_is_skipped(tmp_path):
    root = write_davis(tmp_path, {"a": 3, "b": 2, "c": 2})
    ann_path(root, "a", 1).unlink()
    with pytest.warns(SkippedDataWarning, match="no mask: 1"):
        out, report, _ = load_davis_splits(root, size=8, splits=SPLITS3)
    assert kinds(report) == [("00001.jpg", "no mask")] and "00001.png" in report.skipped[0]["reason"]
    assert len(out["train"]) == 2


def test_davis_mask_of_another_size_is_skipped(tmp_path):
    root = write_davis(tmp_path, {"a": 2, "b": 2, "c": 2})
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(ann_path(root, "b", 0))
    with pytest.warns(SkippedDataWarning, match="size mismatch"):
        out, report, _ = load_davis_splits(root, size=8, splits=SPLITS3)
    assert kinds(report) == [("00000.png", "size mismatch")]
    assert "10x12" in report.skipped[0]["reason"] and "20x12" in report.skipped[0]["reason"]
    assert len(out["val"]) == 1


def test_davis_non_binary_masks(tmp_path):
    root = write_davis(tmp_path, {"a": 4, "b": 1, "c": 1})
    soft = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (12, 1))  # a soft matte
    Image.fromarray(soft).save(ann_path(root, "a", 0))
    labels = np.zeros((12, 20), np.uint8)
    labels[2:8, 2:10] = 1  # a 0/1 label map, would read as all background
    Image.fromarray(labels).save(ann_path(root, "a", 1))
    noisy = np.zeros((12, 20), np.uint8)
    noisy[2:8, 2:10] = 250
    noisy[0, :] = 12
    noisy[8, 2:10] = 240
    noisy[11, 19] = 128  # 1 clearly grey pixel of 240 (< 2 %): edge noise, accepted
    Image.fromarray(noisy).save(ann_path(root, "a", 2))
    with pytest.warns(SkippedDataWarning, match="non-binary mask: 2"):
        out, report, _ = load_davis_splits(root, size=20, splits=SPLITS3)
    assert kinds(report) == [("00000.png", "non-binary mask"), ("00001.png", "non-binary mask")]
    assert "grey" in report.skipped[0]["reason"] and "label map" in report.skipped[1]["reason"]
    assert len(out["train"]) == 2  # the noisy one and the clean one
    np.testing.assert_array_equal(out["train"].semantic[0], resize_labels((noisy > 127).astype(np.uint8), 20))


def test_davis_unreadable_frame_and_mask_are_skipped(tmp_path):
    root = write_davis(tmp_path, {"a": 3, "b": 1, "c": 1})
    img_path(root, "a", 0).write_bytes(b"\xff\xd8 truncated")
    ann_path(root, "a", 2).write_bytes(b"not a png")
    with pytest.warns(SkippedDataWarning, match="unreadable image: 2"):
        out, report, _ = load_davis_splits(root, size=8, splits=SPLITS3)
    assert kinds(report) == [("00000.jpg", "unreadable image"), ("00002.png", "unreadable image")]
    assert report.skipped[0]["reason"].startswith("frame: cannot read")
    assert report.skipped[1]["reason"].startswith("mask: cannot read")
    assert len(out["train"]) == 1 and out["train"].names == ["a"]


def test_davis_sequence_listed_twice(tmp_path):
    root = write_davis(tmp_path, {"a": 1, "b": 1, "c": 1})
    with pytest.raises(DataError, match="sequence 'a' is listed twice: twice in split 'train'"):
        load_davis_splits(root, size=8, splits={"train": ["a", "a"], "test": ["c"]})
    with pytest.raises(DataError, match="sequence 'b' is listed twice: in split 'val' and in split 'test'"):
        load_davis_splits(root, size=8, splits={"train": ["a"], "val": ["b"], "test": ["b", "c"]})
    with pytest.raises(DataError, match="sequence 'zz' of split 'test' not found; available: a, b, c"):
        load_davis_splits(root, size=8, splits={"train": ["a"], "test": ["zz"]})


def test_davis_empty_split(tmp_path):
    root = write_davis(tmp_path, {"a": 1, "b": 1, "c": 2})
    with pytest.raises(DataError, match="split 'val' is empty: no sequence listed"):
        load_davis_splits(root, size=8, splits={"train": ["a"], "val": [], "test": ["c"]})
    with pytest.raises(DataError, match="split 'test' is empty: no sequence listed"):
        load_davis_splits(root, size=8, splits={"train": ["a"]})
    for t in range(2):
        ann_path(root, "c", t).unlink()
    with pytest.raises(DataError, match=r"split 'test' is empty: all 2 frames of its sequences \(c\) were "
                                        r"skipped -- skipped 2 \(no mask: 2\)"):
        load_davis_splits(root, size=8, splits=SPLITS3)
    two = write_davis(tmp_path / "two", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="split 'train' would be empty: the automatic .* at least 3 sequences, "
                                        "found 2"):
        load_davis_splits(two, size=8, splits=None)


def test_davis_clip_source_skips_a_sequence_with_a_bad_frame(tmp_path):
    root = write_davis(tmp_path, {"a": 5, "b": 5, "c": 5})
    img_path(root, "b", 3).write_bytes(b"junk")
    with pytest.warns(SkippedDataWarning, match="skipped 1 of 3 sequences"):
        src = davis_clip_source(root, ["a", "b", "c"], size=8)
    assert [src.video_id(i) for i in range(len(src))] == ["a", "c"] and src.skipped[0][0].endswith("00003.jpg")
    assert src.read_clip(1, 1, 3).shape == (3, 8, 8, 3)


def test_davis_root_without_annotations_names_the_folder(tmp_path):
    import shutil
    root = write_davis(tmp_path, {"a": 1, "b": 1, "c": 1})
    shutil.rmtree(root / "Annotations")
    with pytest.raises(DataError, match="DAVIS annotation folder not found") as err:
        load_davis_splits(root, size=8, splits=None)
    assert str(err.value.path).endswith("Annotations/480p")


def test_an_mp4_without_a_video_stream_is_skipped_and_named(tmp_path):
    """An audio-only mp4 (what a screen recorder or a phone can leave): skipped with its reason."""
    import av
    from vpe_lib.data.clips import SkippedVideosWarning, VideoFolderSource
    from vpe_lib.data.video import export_mp4
    export_mp4(np.zeros((6, 16, 16, 3), np.uint8), tmp_path / "good.mp4")
    with av.open(str(tmp_path / "sound.mp4"), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.warns(SkippedVideosWarning, match="skipped 1 of 2 videos"):
        src = VideoFolderSource(tmp_path)
    assert [Path(p).name for p, _ in src.skipped] == ["sound.mp4"] and len(src) == 1
