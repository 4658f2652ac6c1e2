"""Exports round-trip through pycocotools and the project's own readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vpe_lib.data.coco import coco_mask_ap, load_coco_instances, masks_to_coco_results
from vpe_lib.data.davis import load_davis
from vpe_lib.data.errors import DataError
from vpe_lib.data.exports import export_coco, export_davis, export_mp4
from vpe_lib.data.video import read_video

# pycocotools 2.0.11 + numpy 2 warns inside annToMask; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CLASS_NAMES = ("background", "arm", "disc", "box", "triangle", "polygon", "lshape")


def make_video(T=6, H=32, W=48, seed=0):
    """Arm (rect), a disc and a box moving so that the disc passes over the box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    frames = np.zeros((T, H, W, 3), np.uint8)
    inst = np.zeros((T, H, W), np.uint8)
    sem = np.zeros((T, H, W), np.uint8)
    bg = np.stack([40 + 30 * np.sin(xx / 6.0), 60 + 20 * np.cos(yy / 5.0),
                   np.full_like(xx, 90.0)], -1)
    colors = {1: (200, 200, 200), 2: (220, 40, 40), 3: (40, 200, 60)}
    classes = {1: 1, 2: 2, 3: 3}
    for t in range(T):
        f = bg.copy()
        box = (yy >= 14) & (yy < 24) & (xx >= 20 + t) & (xx < 32 + t)
        disc = (yy - 16) ** 2 + (xx - (8 + 4 * t)) ** 2 <= 25
        arm = (yy < 6) & (xx >= 4 + 2 * t) & (xx < 10 + 2 * t)
        for k, m in ((3, box), (2, disc), (1, arm)):  # later = in front
            inst[t][m] = k
            sem[t][m] = classes[k]
            f[m] = colors[k]
        frames[t] = np.clip(f + rng.normal(0, 1.0, f.shape), 0, 255).astype(np.uint8)
    return {"frames": frames, "instance": inst, "semantic": sem}


@pytest.fixture(scope="module")
def videos():
    return [("vid_a", make_video(seed=0)), ("vid_b", make_video(T=4, seed=1))]


def test_coco_export_roundtrip(tmp_path, videos):
    from pycocotools.coco import COCO

    ann = export_coco(videos, tmp_path, class_names=CLASS_NAMES)
    assert ann == tmp_path / "annotations" / "instances.json"
    coco = COCO(str(ann))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == \
        list(enumerate(CLASS_NAMES))[1:]
    by_name = dict(videos)
    assert len(coco.imgs) == 6 + 4
    for img in coco.imgs.values():
        arrays = by_name[img["video_id"]]
        t = img["frame_index"]
        assert img["file_name"] == f"{img['video_id']}_{t:02d}.png"
        pixels = np.asarray(Image.open(tmp_path / "images" / img["file_name"]))
        np.testing.assert_array_equal(pixels, arrays["frames"][t])  # PNG: exact
        rebuilt = np.zeros_like(arrays["instance"][t])
        sem = np.zeros_like(rebuilt)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert sorted(a["instance_id"] for a in anns) == \
            sorted(set(np.unique(arrays["instance"][t])) - {0})
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            assert not (rebuilt[m] != 0).any(), "instance masks overlap"
            rebuilt[m] = a["instance_id"]
            sem[m] = a["category_id"]
            assert a["area"] == m.sum() and a["iscrowd"] == 0
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert isinstance(a["segmentation"]["counts"], str)
        np.testing.assert_array_equal(rebuilt, arrays["instance"][t])
        np.testing.assert_array_equal(sem, arrays["semantic"][t])


def test_coco_export_reads_back_with_loader_and_scores(tmp_path, videos):
    ann = export_coco(videos, tmp_path, class_names=CLASS_NAMES, frame_stride=2,
                      image_format="jpeg")
    ds = load_coco_instances(ann, tmp_path / "images",
                             category_map={i: i for i in range(1, len(CLASS_NAMES))})
    assert len(ds) == 3 + 2
    assert ds.class_names == list(CLASS_NAMES)
    item = ds[0]
    arrays = dict(videos)["vid_a"]
    assert item["file_name"].endswith(".jpg")
    np.testing.assert_array_equal(item["foreground"], arrays["instance"][0] > 0)
    np.testing.assert_array_equal(item["semantic"], arrays["semantic"][0])
    assert np.abs(item["image"].astype(int) - arrays["frames"][0]).mean() < 3

    # perfect predictions -> AP 1; shifted masks -> lower AP; nothing -> 0
    gt = json.loads(ann.read_text())
    perfect, shifted = [], []
    for a in gt["annotations"]:
        img = next(i for i in gt["images"] if i["id"] == a["image_id"])
        m = dict(videos)[img["video_id"]]["instance"][img["frame_index"]] == a["instance_id"]
        perfect += masks_to_coco_results(a["image_id"], m[None], [0.9], a["category_id"])
        shifted += masks_to_coco_results(a["image_id"], np.roll(m, 2, axis=1)[None], [0.9],
                                         a["category_id"])
    assert coco_mask_ap(ann, perfect)["AP"] == pytest.approx(1.0)
    assert coco_mask_ap(ann, shifted)["AP"] < 0.9
    assert coco_mask_ap(ann, [])["AP"] == 0.0
    json.dumps(perfect)  # results are JSON-serialisable


def test_coco_export_rejects_bad_arrays(tmp_path):
    v = make_video()
    v["semantic"] = v["semantic"][:, :, :-1]
    with pytest.raises(DataError, match="semantic"):
        export_coco([("bad", v)], tmp_path, class_names=CLASS_NAMES)


@pytest.mark.parametrize("instance_masks", [False, True])
def test_davis_export_roundtrip(tmp_path, videos, instance_masks):
    out = export_davis(videos, tmp_path, instance_masks=instance_masks, resolution="480p")
    assert (out / "ImageSets" / "2017" / "val.txt").read_text().split() == ["vid_a", "vid_b"]
    ds = load_davis(out)
    assert ds.sequences() == ["vid_a", "vid_b"]
    assert [ds.num_frames(s) for s in ds.sequences()] == [6, 4]
    assert len(ds) == 10
    for seq, arrays in videos:
        images, fg = ds.load_sequence(seq)
        np.testing.assert_array_equal(fg, arrays["instance"] > 0)
        assert np.abs(images.astype(int) - arrays["frames"]).mean() < 3
    item = ds[0]
    if instance_masks:
        assert Image.open(item["mask_path"]).mode == "P"
        np.testing.assert_array_equal(item["mask"], videos[0][1]["instance"][0])
    else:
        assert set(np.unique(np.asarray(Image.open(item["mask_path"])))) <= {0, 255}


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_mp4_export_roundtrip(tmp_path):
    T, H, W = 12, 48, 64
    yy, xx = np.mgrid[:H, :W]
    frames = np.stack([np.stack([128 + 60 * np.sin((xx + 2 * t) / 9.0),
                                 128 + 60 * np.cos((yy - t) / 7.0),
                                 np.full((H, W), 100.0)], -1) for t in range(T)]).astype(np.uint8)
    path = export_mp4(frames, tmp_path / "v.mp4", fps=10)
    video = read_video(path)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert _psnr(video, frames) > 30
    assert read_video(path, stride=3).shape[0] == 4
    assert read_video(path, size=(24, 32), max_frames=5).shape == (5, 24, 32, 3)


def test_mp4_export_odd_size(tmp_path):
    frames = np.full((3, 33, 35, 3), 120, np.uint8)
    with pytest.raises(DataError, match="even"):
        export_mp4(frames, tmp_path / "odd.mp4", odd_size="error")
    video = read_video(export_mp4(frames, tmp_path / "odd.mp4"))
    assert video.shape == (3, 34, 36, 3)  # padded by edge replication
    assert np.abs(video[:, :33, :35].astype(int) - 120).max() <= 2
