"""Readers on the real data samples (skipped when ../shared/data is absent) and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpe_lib.data.coco import IGNORE, load_coco_instances
from vpe_lib.data.davis import load_davis
from vpe_lib.data.errors import DataError
from vpe_lib.data.exports import export_davis, export_mp4
from vpe_lib.data.frames import list_sequences, load_frame_folder
from vpe_lib.data.video import iter_motion_vectors, read_motion_vectors, read_video

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real-data sample not available: {p}")
    return p


# ---------------------------------------------------------------------------
# real data samples


def test_tiny_coco_loads():
    root = shared("tiny_coco")
    ds = load_coco_instances(root / "annotations" / "instances_train2017.json", root / "train2017")
    assert len(ds) == 50
    assert ds.class_names[0] == "background" and len(ds.class_names) == 81
    crowd_images = 0
    for i in range(len(ds)):
        item = ds[i]
        h, w = item["instance"].shape
        assert item["image"].shape == (h, w, 3) and item["image"].dtype == np.uint8
        assert item["instance"].dtype == np.uint16 and item["semantic"].dtype == np.uint8
        assert item["instance"].max() == len(item["annotation_ids"])
        np.testing.assert_array_equal(item["foreground"], item["instance"] > 0)
        assert ((item["semantic"] > 0) & (item["semantic"] != IGNORE) == item["foreground"]).all()
        if item["ignore"].any():
            crowd_images += 1
            assert (item["semantic"][item["ignore"]] == IGNORE).all()
            assert not item["foreground"][item["ignore"]].any()
    n_crowd_anns = sum(a.get("iscrowd", 0) for a in ds.coco.anns.values())
    assert n_crowd_anns == 5 and crowd_images >= 1


def test_davis_sample_loads():
    ds = load_davis(shared("davis_sample"))
    assert ds.sequences() == ["blackswan", "car-shadow", "dog", "motocross-jump"]
    assert [ds.num_frames(s) for s in ds.sequences()] == [50, 40, 60, 40]
    assert len(ds) == 190
    item = ds[0]
    assert item["image"].shape == (480, 854, 3) and item["image"].dtype == np.uint8
    assert item["foreground"].dtype == bool and item["foreground"].shape == (480, 854)
    assert 0 < item["foreground"].mean() < 0.5
    assert item["sequence"] == "blackswan" and item["frame_index"] == 0
    assert load_davis(shared("davis_sample"), sequences=["dog"]).sequences() == ["dog"]


def test_bair_frames_load():
    root = shared("bair_samples", "frames")
    seqs = list_sequences(root)
    assert len(seqs) == 4
    for s in seqs:
        video = load_frame_folder(root / s)
        assert video.shape == (30, 64, 64, 3) and video.dtype == np.uint8


def test_bear_mp4_decodes_with_motion_vectors():
    path = shared("clips", "bear.mp4")
    video = read_video(path, size=(64, 64), max_frames=6)
    assert video.shape == (6, 64, 64, 3) and video.std() > 10
    types = [pt for _, pt, *_ in iter_motion_vectors(path, max_frames=6)]
    assert types[0] == "I"
    mv = read_motion_vectors(path, size=(64, 64), max_frames=6)
    assert mv.shape == (6, 64, 64, 2) and mv.dtype == np.float32
    assert not mv[0].any()  # I-frame: no vectors
    for t, pt in enumerate(types):
        if pt in ("P", "B"):
            assert np.abs(mv[t]).max() > 0, f"no motion on {pt}-frame {t}"


# ---------------------------------------------------------------------------
# codec motion vectors on a synthetic clip with known motion


def test_motion_vectors_match_true_translation(tmp_path):
    T, H, W, S = 8, 64, 64, 16
    vx, vy = 3, -2  # pixels per frame, right and up
    yy, xx = np.mgrid[:H, :W]
    bg = (60 + 20 * np.sin(xx / 7.0) + 20 * np.cos(yy / 5.0)).astype(np.uint8)
    sy, sx = np.mgrid[:S, :S]
    square = (100 + 100 * ((sx // 4 + sy // 4) % 2)).astype(np.uint8)  # textured: unambiguous match
    frames = np.repeat(np.repeat(bg[None, ..., None], T, 0), 3, -1)
    corners = [(36 + vy * t, 8 + vx * t) for t in range(T)]
    for t, (y0, x0) in enumerate(corners):
        frames[t, y0:y0 + S, x0:x0 + S] = square[..., None]
    path = export_mp4(frames, tmp_path / "square.mp4")

    mv = read_motion_vectors(path)
    assert mv.shape == (T, H, W, 2)
    assert not mv[0].any()  # I-frame
    for t in range(1, T):
        y0, x0 = corners[t]
        inner = mv[t, y0 + 4:y0 + S - 4, x0 + 4:x0 + S - 4].reshape(-1, 2)
        np.testing.assert_allclose(np.median(inner, 0), [vx, vy], atol=0.5)
        # the static background does not move
        assert np.abs(np.median(mv[t, :16, 40:].reshape(-1, 2), 0)).max() < 0.5
    blocks = read_motion_vectors(path, block_size=8, max_frames=3)
    assert blocks.shape == (3, 8, 8, 2)
    half = read_motion_vectors(path, size=(32, 32), max_frames=2)
    y0, x0 = corners[1]
    np.testing.assert_allclose(np.median(half[1, y0 // 2 + 2:y0 // 2 + 6, x0 // 2 + 2:x0 // 2 + 6]
                                         .reshape(-1, 2), 0), [vx / 2, vy / 2], atol=0.5)


# ---------------------------------------------------------------------------
# bad inputs -> DataError naming the file / field


def _tiny_coco_json(tmp_path: Path) -> tuple[dict, Path]:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "categories": [{"id": 3, "name": "box"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0,
                         "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]], "area": 16,
                         "bbox": [1, 1, 4, 4]}],
    }
    return data, tmp_path / "ann.json"


def test_coco_good_minimal(tmp_path):
    data, path = _tiny_coco_json(tmp_path)
    path.write_text(json.dumps(data))
    item = load_coco_instances(path, tmp_path / "images")[0]
    assert item["foreground"].sum() > 0 and set(np.unique(item["semantic"])) == {0, 1}


def test_coco_missing_annotations_key(tmp_path):
    data, path = _tiny_coco_json(tmp_path)
    del data["annotations"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_coco_instances(path, tmp_path / "images")
    assert str(path) in str(e.value) and "annotations" in str(e.value)


def test_coco_unknown_image_id(tmp_path):
    data, path = _tiny_coco_json(tmp_path)
    data["annotations"][0]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_coco_instances(path, tmp_path / "images")
    msg = str(e.value)
    assert str(path) in msg and "image_id" in msg and "annotation id 7" in msg


def test_coco_unknown_category_and_bad_json(tmp_path):
    data, path = _tiny_coco_json(tmp_path)
    data["annotations"][0]["category_id"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="category_id"):
        load_coco_instances(path, tmp_path / "images")
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="invalid JSON"):
        load_coco_instances(path, tmp_path / "images")
    with pytest.raises(DataError, match="not found"):
        load_coco_instances(tmp_path / "nope.json", tmp_path / "images")


def test_coco_image_size_mismatch(tmp_path):
    data, path = _tiny_coco_json(tmp_path)
    data["images"][0]["height"] = 9
    path.write_text(json.dumps(data))
    ds = load_coco_instances(path, tmp_path / "images")
    with pytest.raises(DataError, match="a.png"):
        ds[0]


def _small_davis(tmp_path: Path) -> Path:
    inst = np.zeros((3, 16, 16), np.uint8)
    inst[:, 4:10, 4:10] = 2
    frames = np.full((3, 16, 16, 3), 128, np.uint8)
    return export_davis([("seq", {"frames": frames, "instance": inst})], tmp_path / "davis")


def test_davis_missing_mask(tmp_path):
    root = _small_davis(tmp_path)
    missing = root / "Annotations" / "480p" / "seq" / "00001.png"
    missing.unlink()
    with pytest.raises(DataError) as e:
        load_davis(root)
    assert str(missing) in str(e.value)


def test_davis_size_mismatch_and_missing_sequence(tmp_path):
    root = _small_davis(tmp_path)
    bad = root / "Annotations" / "480p" / "seq" / "00002.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad)
    with pytest.raises(DataError) as e:
        load_davis(root)
    assert str(bad) in str(e.value)
    with pytest.raises(DataError, match="nosuch"):
        load_davis(root, sequences=["nosuch"])


def test_frame_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        load_frame_folder(empty)
    assert str(empty) in str(e.value)

    seq = tmp_path / "seq"
    seq.mkdir()
    for i in (0, 1, 2, 10):  # natural order: 10 after 2
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(seq / f"{i}.png")
    video = load_frame_folder(seq)
    assert video[:, 0, 0, 0].tolist() == [0, 1, 2, 10]
    assert list_sequences(tmp_path) == ["seq"]

    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(seq / "11.png")
    with pytest.raises(DataError) as e:
        load_frame_folder(seq)
    assert str(seq / "11.png") in str(e.value)
    (seq / "11.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        load_frame_folder(seq)
    assert str(seq / "11.png") in str(e.value)


def test_truncated_and_fake_mp4(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    good = export_mp4(frames, tmp_path / "good.mp4")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n")
    # index first (faststart): the container opens, the frames run out early
    streamable = export_mp4(frames, tmp_path / "fast.mp4", faststart=True).read_bytes()
    assert streamable.find(b"moov") < streamable.find(b"mdat")
    truncated_fast = tmp_path / "truncated_fast.mp4"
    truncated_fast.write_bytes(streamable[: len(streamable) // 2])
    for bad in (truncated, truncated_fast, fake, tmp_path / "missing.mp4"):
        with pytest.raises(DataError) as e:
            read_video(bad)
        assert str(bad) in str(e.value)
        with pytest.raises(DataError):
            read_motion_vectors(bad)
