"""Segmentation scoring over a split: IoU/Dice/boundary F, seed comparisons, curves, COCO AP."""

import math
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vpe_lib.data.pushworld.config import CLASS_NAMES
from vpe_lib.eval.segmentation import (SegAccumulator, coco_ground_truth, curve_status,
                                       instance_ap, paired_difference, rle_area,
                                       semantic_to_instances, verdict)
from vpe_lib.eval.segmentation import score_segmentation as _score_segmentation

OBJECTS = range(2, 7)


def score_segmentation(pred, true, **kw):
    """PushWorld's 7 classes, as the study scores them."""
    return _score_segmentation(pred, true, n_classes=len(CLASS_NAMES), **kw)


def decode(rle):
    with warnings.catch_warnings():  # pycocotools 2.0.11 + numpy 2: harmless __array__(copy=) warning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def acc_for(**kw):
    return SegAccumulator(len(CLASS_NAMES), object_classes=OBJECTS, **kw)


def square(h, w, y0, y1, x0, x1, value=1, dtype=np.int64):
    a = np.zeros((h, w), dtype)
    a[y0:y1, x0:x1] = value
    return a


def scene():
    """Two 16x16 images: arm (1), disc (2), box (3) on background."""
    t = np.zeros((2, 16, 16), np.int64)
    t[0, 0:3, 0:6] = 1
    t[0, 5:10, 5:10] = 2
    t[1, 2:6, 2:6] = 3
    t[1, 10:14, 9:15] = 2
    return t


# ---------------------------------------------------------------------------
# SegAccumulator


def test_perfect_prediction_scores_one_everywhere():
    t = scene()
    r = score_segmentation(t, t)
    for k in ("fg_iou", "fg_iou_objects", "miou", "dice", "boundary_f", "pixel_acc"):
        assert r[k] == 1.0, k
    for c in (0, 1, 2, 3):
        assert r[f"iou/{c}"] == 1.0
    for c in (4, 5, 6):  # never in truth nor prediction
        assert math.isnan(r[f"iou/{c}"])


def test_all_background_prediction():
    t = scene()
    r = score_segmentation(np.zeros_like(t), t)
    assert r["fg_iou"] == 0.0 and r["fg_iou_objects"] == 0.0 and r["dice"] == 0.0
    assert r["miou"] == 0.0 and r["boundary_f"] == 0.0 and r["boundary_recall"] == 0.0
    assert r["pixel_acc"] == pytest.approx(1 - (t != 0).sum() / t.size)


def test_fg_iou_is_summed_over_the_split_not_averaged():
    # image 1: 50-pixel object, perfect; image 2: 1-pixel object, missed.
    t = np.zeros((2, 10, 10), np.int64)
    t[0, :5] = 2
    t[1, 0, 0] = 2
    p = t.copy()
    p[1, 0, 0] = 0
    acc = acc_for()
    acc.update(p[:1], t[:1])
    acc.update(p[1:], t[1:])  # two updates == one over the whole split
    r = acc.result()
    assert r["fg_iou"] == pytest.approx(50 / 51)  # a per-image mean would say 0.5
    assert r["dice"] == pytest.approx(100 / 101)
    assert r == pytest.approx(score_segmentation(p, t), nan_ok=True)


def test_objects_only_foreground_excludes_the_arm():
    t = np.zeros((1, 8, 8), np.int64)
    t[0, 0:2, :] = 1  # arm, 16 px
    t[0, 4:6, 4:6] = 2  # disc, 4 px
    p = t.copy()
    p[0, 0:2, :] = 0  # arm missed
    p[0, 7, :] = 1  # and hallucinated where there is table
    r = score_segmentation(p, t)
    assert r["fg_iou_objects"] == 1.0  # the arm is background for this metric
    assert r["fg_iou"] == pytest.approx(4 / (4 + 16 + 8))
    assert r["iou/1"] == 0.0


def test_objects_only_counts_arm_object_confusion():
    t = square(8, 8, 2, 6, 2, 6, value=2)[None]
    p = t.copy()
    p[0, 2:4, 2:6] = 1  # half of the disc labelled arm: object pixels missed
    r = score_segmentation(p, t)
    assert r["fg_iou"] == 1.0  # still foreground
    assert r["fg_iou_objects"] == pytest.approx(0.5)


def test_ignore_pixels_are_excluded_from_every_count():
    t = scene()
    p = t.copy()
    t_ign = t.copy()
    t_ign[0, 12:16, :] = 255  # crowd-like region
    p[0, 12:16, :] = 4  # whatever is predicted there does not matter
    r = score_segmentation(p, t_ign)
    assert r["fg_iou"] == 1.0 and r["miou"] == 1.0 and r["pixel_acc"] == 1.0
    assert r["boundary_f"] == 1.0 and math.isnan(r["iou/4"])
    # and it equals scoring with those pixels cut away
    keep = scene()[0, :12][None]
    assert score_segmentation(p[:1, :12], keep)["fg_iou"] == 1.0


def test_miou_averages_classes_present_in_truth():
    t = np.zeros((1, 4, 8), np.int64)
    t[0, :, 0:4] = 2  # 16 px of class 2
    t[0, :, 4:6] = 3  # 8 px of class 3
    p = t.copy()
    p[0, :, 0] = 4  # 4 px of class 2 predicted as class 4 (absent from truth)
    p[0, :, 6] = 3  # 4 background px predicted as class 3
    r = score_segmentation(p, t)
    assert r["iou/2"] == pytest.approx(12 / 16)
    assert r["iou/3"] == pytest.approx(8 / 12)
    assert r["iou/4"] == 0.0  # reported, but not part of mIoU
    assert math.isnan(r["iou/5"])
    assert r["miou"] == pytest.approx((12 / 16 + 8 / 12) / 2)


def test_dice_hand_computed():
    t = square(6, 6, 1, 3, 1, 4, value=3)[None]  # 6 px
    p = square(6, 6, 1, 3, 2, 4, value=3)[None]  # 4 px, 4 overlap
    p[0, 4, 4] = 2  # 1 extra px elsewhere, different object class
    r = score_segmentation(p, t)
    assert r["dice"] == pytest.approx(2 * 4 / (5 + 6))
    assert r["fg_iou"] == pytest.approx(4 / 7)


def test_boundary_f_hand_computed():
    # 3x3 squares, pred shifted right by 1: rings of 8 px each share 4 px.
    t = square(6, 6, 1, 4, 1, 4, value=2)[None]
    p = square(6, 6, 1, 4, 2, 5, value=2)[None]
    r0 = score_segmentation(p, t, boundary_px=0)
    assert r0["boundary_precision"] == pytest.approx(0.5)
    assert r0["boundary_recall"] == pytest.approx(0.5)
    assert r0["boundary_f"] == pytest.approx(0.5)
    assert score_segmentation(p, t, boundary_px=1)["boundary_f"] == 1.0
    # without the boundary (validation during training): the region metrics are the same, boundary F is NaN
    fast = score_segmentation(p, t, boundary_px=0, boundary=False)
    assert math.isnan(fast["boundary_f"]) and {k: v for k, v in fast.items() if "boundary" not in k} == {
        k: v for k, v in r0.items() if "boundary" not in k}


def test_boundary_ignores_the_image_edge():
    # Masks touching the frame: only the inner column is a contour.
    t = square(6, 6, 0, 6, 0, 3, value=2)[None]
    p = square(6, 6, 0, 6, 0, 4, value=2)[None]
    assert score_segmentation(p, t, boundary_px=0)["boundary_f"] == 0.0
    assert score_segmentation(p, t, boundary_px=1)["boundary_f"] == 1.0


def test_boundary_empty_versus_nonempty():
    blob = square(8, 8, 2, 5, 2, 5, value=2)  # ring of 8 px
    empty = np.zeros_like(blob)
    # both empty: contributes nothing
    assert score_segmentation(np.stack([blob, empty]), np.stack([blob, empty]))["boundary_f"] == 1.0
    # truth empty, prediction not: its 8 px are unmatched -> precision 8/16, recall 1
    r = score_segmentation(np.stack([blob, blob]), np.stack([blob, empty]))
    assert r["boundary_precision"] == pytest.approx(0.5) and r["boundary_recall"] == 1.0
    assert r["boundary_f"] == pytest.approx(2 * 0.5 / 1.5)
    # prediction empty, truth not: recall 8/16
    r = score_segmentation(np.stack([blob, empty]), np.stack([blob, blob]))
    assert r["boundary_precision"] == 1.0 and r["boundary_recall"] == pytest.approx(0.5)
    # nothing predicted anywhere: F = 0; nothing anywhere: undefined
    assert score_segmentation(empty[None], blob[None])["boundary_f"] == 0.0
    assert math.isnan(score_segmentation(empty[None], empty[None])["boundary_f"])


def test_shape_and_value_errors():
    acc = acc_for()
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        acc.update(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int))
    with pytest.raises(ValueError, match="prediction values"):
        acc.update(np.full((1, 2, 2), 7), np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="integer"):
        acc.update(np.zeros((1, 2, 2), float), np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="object_classes"):
        SegAccumulator(3, object_classes=[5])
    r = acc_for().result()  # nothing seen: undefined, not 0 or 1
    assert math.isnan(r["fg_iou"]) and math.isnan(r["boundary_f"]) and math.isnan(r["pixel_acc"])


# ---------------------------------------------------------------------------
# paired seeds, verdicts, curves


def test_paired_difference_values():
    d = paired_difference([0.5, 0.7, 0.9], [0.4, 0.5, 0.6])  # differences 0.1, 0.2, 0.3
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert d["mean"] == pytest.approx(0.2) and d["std"] == pytest.approx(0.1) and d["n"] == 3
    assert d["ci_low"] == pytest.approx(0.2 - half) and d["ci_high"] == pytest.approx(0.2 + half)
    one = paired_difference([0.5], [0.4])
    assert one["mean"] == pytest.approx(0.1) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    with pytest.raises(ValueError, match="length"):
        paired_difference([1, 2], [1, 2, 3])


def test_verdict_branches():
    up = paired_difference([0.59, 0.70, 0.81], [0.4, 0.5, 0.6])  # differences 0.19, 0.2, 0.21
    s = verdict(up, better="VPE", worse="UNet")
    assert s.startswith("VPE beats UNet by 0.200 foreground IoU (95% CI [")
    assert "3 seeds" in s
    down = paired_difference([0.4, 0.5, 0.6], [0.59, 0.70, 0.81])
    s = verdict(down, better="VPE", worse="UNet")
    assert s.startswith("UNet beats VPE by 0.200")
    lo, hi = -down["ci_high"], -down["ci_low"]
    assert f"[{lo:.3f}, {hi:.3f}]" in s
    # positive mean, interval through 0: the sign of the mean does not decide
    noisy = paired_difference([0.6, 0.4, 0.7], [0.5, 0.5, 0.5])
    assert noisy["mean"] > 0 and noisy["ci_low"] < 0 < noisy["ci_high"]
    s = verdict(noisy, better="VPE", worse="UNet", metric="mIoU")
    assert s.startswith("no measurable difference between VPE and UNet in mIoU") and "95% CI" in s
    s = verdict(paired_difference([0.6], [0.5]), better="VPE", worse="UNet")
    assert "could not be computed" in s and "1 seed " in s


def test_the_verdict_rule_on_each_side_of_zero_and_bounds_that_never_read_0_000():
    from vpe_lib.eval.segmentation import fmt_bound, interval_side

    def diff(lo, hi):
        return {"mean": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "n": 3, "confidence": 0.95}

    just_above = verdict(diff(2e-5, 0.268), better="A", worse="B")
    assert just_above.startswith("A beats B") and "[2e-05, 0.268]" in just_above and "0.000" not in just_above
    just_below = verdict(diff(-0.113, -3e-5), better="A", worse="B")
    assert just_below.startswith("B beats A") and "[3e-05, 0.113]" in just_below
    touching = verdict(diff(0.0, 0.2), better="A", worse="B")  # touching 0 is not beating
    assert touching.startswith("no measurable difference") and "[0.000, 0.200]" in touching
    assert [interval_side(lo, hi) for lo, hi in ((1e-9, 1), (-1, -1e-9), (0, 1), (-1, 0), (-1, 1))] == [1, -1, 0, 0, 0]
    assert fmt_bound(0.1234) == "0.123" and fmt_bound(-0.0004) == "-0.0004" and fmt_bound(0.0) == "0.000"


def test_p_values_from_intervals_and_holm_adjustment():
    from scipy import stats as st

    from vpe_lib.eval.segmentation import holm, paired_p_value

    a, b = [0.59, 0.70, 0.83], [0.4, 0.5, 0.6]
    d = paired_difference(a, b)
    assert paired_p_value(d["mean"], d["ci_low"], d["ci_high"], d["n"]) == pytest.approx(st.ttest_rel(a, b).pvalue)
    assert math.isnan(paired_p_value(0.1, float("nan"), float("nan"), 3))
    adj = holm({"x": 0.01, "y": 0.04, "z": 0.03, "w": float("nan")})
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert adj["x"] == pytest.approx(0.03) and adj["z"] == pytest.approx(0.06) and adj["y"] == pytest.approx(0.06)
    assert math.isnan(adj["w"])


def test_curve_status():
    steps = [0, 100, 200, 300, 400]
    assert curve_status(steps, [0.1, 0.2, 0.3, 0.4, 0.5]) == "still rising"
    assert curve_status(steps, [0.1, 0.5, 0.6, 0.6, 0.602]) == "converged"  # +0.002 < tol
    assert curve_status(steps, [0.1, 0.5, 0.6, 0.55, 0.52]) == "converged"  # falling tail
    assert curve_status(steps, [0.1, 0.5, 0.6, 0.6, 0.602], tol=0.001) == "still rising"
    assert curve_status([0, 100], [0.1, 0.9]) == "too short"
    # the tail is by step: with evaluations at 0, 10, 20, 1000 only step 1000 is in it
    assert curve_status([0, 10, 20, 1000], [0.1, 0.8, 0.7, 0.81]) == "still rising"
    with pytest.raises(ValueError, match="NaN"):
        curve_status(steps, [0.1, 0.2, float("nan"), 0.3, 0.4])


# ---------------------------------------------------------------------------
# instances, COCO


def one_hot(sem, n=7, p=0.9):
    probs = np.full((n, *sem.shape), (1 - p) / (n - 1))
    np.put_along_axis(probs, sem[None], p, axis=0)
    return probs


def test_semantic_to_instances_components():
    sem = np.zeros((12, 12), np.int64)
    sem[1:4, 1:4] = 2
    sem[1:4, 7:10] = 2  # a second disc, apart from the first
    sem[8:11, 1:5] = 3
    sem[10, 10] = 2  # speckle below min_area
    sem[6:8, 6:8] = 1  # arm: not asked for
    inst = semantic_to_instances(one_hot(sem), classes=OBJECTS)
    assert [(d["category_id"], int(d["mask"].sum())) for d in inst] == [(2, 9), (2, 9), (3, 12)]
    assert all(d["mask"].dtype == bool and d["score"] == pytest.approx(0.9) for d in inst)
    # the documented limit: touching objects of one class merge (8-connectivity: corners too)
    sem[4, 4] = 0
    sem[4, 4:7] = 2
    assert len(semantic_to_instances(one_hot(sem), classes=[2])) == 1


def test_rle_area_beyond_255():
    rng = np.random.default_rng(0)
    masks = rng.random((300, 9, 7)) < 0.4
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    np.testing.assert_array_equal(rle_area(rles), masks.reshape(300, -1).sum(1))
    assert rle_area([]).shape == (0,)


def gt_split():
    sem = scene()
    inst = np.zeros_like(sem)
    inst[sem == 1] = 1
    inst[0][sem[0] == 2] = 2
    inst[1][sem[1] == 3] = 2
    inst[1][sem[1] == 2] = 3
    return inst, sem


def test_coco_ground_truth():
    inst, sem = gt_split()
    gt = coco_ground_truth(inst, sem, class_names=CLASS_NAMES, classes=OBJECTS)
    assert [im["id"] for im in gt["images"]] == [1, 2]
    assert gt["images"][0]["height"] == 16 and gt["images"][0]["width"] == 16
    assert [c["name"] for c in gt["categories"]] == list(CLASS_NAMES[2:])
    anns = gt["annotations"]
    assert [(a["image_id"], a["category_id"]) for a in anns] == [(1, 2), (2, 3), (2, 2)]  # no arm, no table
    a = anns[2]
    m = decode(a["segmentation"])
    np.testing.assert_array_equal(m, inst[1] == 3)
    assert isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0
    assert a["area"] == 24 and a["bbox"] == [9, 10, 6, 4]
    np.testing.assert_allclose(mask_utils.toBbox(a["segmentation"]), a["bbox"])


def test_instance_ap():
    inst, sem = gt_split()
    gt = coco_ground_truth(inst, sem, class_names=CLASS_NAMES, classes=OBJECTS)
    perfect = [[] for _ in gt["images"]]
    for a in gt["annotations"]:
        perfect[a["image_id"] - 1].append({"mask": decode(a["segmentation"]),
                                            "category_id": a["category_id"], "score": 1.0})
    r = instance_ap(gt, perfect)
    assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)
    # end to end from a confident semantic map
    decoded = [semantic_to_instances(one_hot(s), classes=OBJECTS) for s in sem]
    assert instance_ap(gt, decoded)["ap"] == pytest.approx(1.0)
    assert instance_ap(gt, [[], []])["ap"] == 0.0
    # shifted by one column: IoU 0.6-0.8 on these objects, so AP@0.5 holds, AP@[.5:.95] drops
    shifted = [[dict(d, mask=np.roll(d["mask"], 1, axis=1)) for d in dets] for dets in perfect]
    r = instance_ap(gt, shifted)
    assert r["ap50"] == pytest.approx(1.0) and r["ap"] < 0.9
    with pytest.raises(ValueError, match="prediction lists"):
        instance_ap(gt, perfect[:1])
