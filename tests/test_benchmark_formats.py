"""Predictions in the benchmarks' formats at native resolution: written, read back as the benchmarks
read them, scored; the DAVIS ceiling; COCO results from probabilities."""

import numpy as np
import pytest
from PIL import Image

from vpe_lib.eval.benchmark_formats import coco_results, davis_ceiling, davis_native, read_davis_pngs, resize_probability
from vpe_lib.eval.davis import davis_scores


def _annotations(tmp_path, n=4, size=(48, 80)):
    """A DAVIS-like sequence: a 0/255 square moving right, masks at 48 x 80."""
    items, truths = [], []
    folder = tmp_path / "Annotations" / "seq"
    folder.mkdir(parents=True)
    for t in range(n):
        m = np.zeros(size, np.uint8)
        m[10:30, 10 + 5 * t:40 + 5 * t] = 255
        Image.fromarray(m).save(folder / f"{t:05d}.png")
        items.append({"sequence": "seq", "frame": f"{t:05d}", "annotation": str(folder / f"{t:05d}.png")})
        truths.append(m > 0)
    return items, truths


def test_native_scores_come_from_the_written_pngs_and_match_the_reference_definition(tmp_path):
    items, truths = _annotations(tmp_path)
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, (len(items), 16, 16)).astype(np.float32)  # the study's 16 x 16 probabilities
    scores = davis_native(probs, items, out_dir=tmp_path / "out")
    back = read_davis_pngs(tmp_path / "out", items)
    assert back[0].shape == (48, 80) and Image.open(tmp_path / "out/seq/00000.png").mode == "P"
    expected = [resize_probability(p, (48, 80)) >= 0.5 for p in probs]
    assert all(np.array_equal(a, b) for a, b in zip(back, expected))
    ref = davis_scores(np.stack(back), np.stack(truths), ["seq"] * len(items))
    for k in ("j_mean", "f_mean", "jf_mean", "j_decay"):
        assert scores[k] == pytest.approx(ref[k], abs=1e-12), k
    assert davis_scores(truths, truths, ["seq"] * len(items))["jf_mean"] == 1.0  # a list of frames: native sizes


def test_the_ceiling_is_below_one_when_resolution_is_lost_and_one_when_not(tmp_path):
    items, truths = _annotations(tmp_path)
    low = davis_ceiling(items, 8)  # 48 x 80 -> 8 x 8 and back: the square's edges move
    assert 0.3 < low["jf_mean"] < 1.0 and low["j_mean"] < 1.0
    assert davis_ceiling(items, (48, 80))["jf_mean"] == 1.0


def test_coco_results_from_probabilities_at_the_images_size():
    probs = np.zeros((1, 3, 8, 8), np.float32)
    probs[0, 0] = 1.0
    probs[0, :, 1:3, 1:3] = [[[0.1]], [[0.7]], [[0.2]]]  # a class-1 blob
    probs[0, :, 5:8, 4:8] = [[[0.2]], [[0.2]], [[0.6]]]  # a class-2 blob
    res = coco_results(probs, [{"image_id": 7, "height": 32, "width": 16}], [None, 11, 12], classes=[1, 2])
    from pycocotools import mask as mask_utils
    by_cat = {r["category_id"]: r for r in res}
    assert set(by_cat) == {11, 12} and all(r["image_id"] == 7 for r in res)
    assert by_cat[11]["score"] == pytest.approx(0.7) and by_cat[12]["score"] == pytest.approx(0.6)
    m = mask_utils.decode(by_cat[11]["segmentation"])
    assert m.shape == (32, 16) and m.sum() == 2 * 4 * 2 * 2  # 2x2 cells, each 4 rows x 2 columns
