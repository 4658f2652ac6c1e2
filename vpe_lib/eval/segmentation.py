"""Scoring semantic segmentation predictions over a split, honestly.

* :class:`SegAccumulator` sums pixel counts over the whole split before dividing
  (a per-image mean lets empty or tiny masks dominate), reports foreground IoU on
  its own (background IoU inflates mIoU) and a DAVIS-style boundary F-measure.
* :func:`paired_difference` / :func:`verdict` compare two methods over paired seeds
  and phrase the comparison from the confidence interval, never from the sign of
  the mean.
* :func:`curve_status` says whether a held-out learning curve is still rising.
* :func:`semantic_to_instances`, :func:`coco_ground_truth`, :func:`instance_ap`
  score a semantic head as an instance segmenter with COCO mask AP.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage, stats

from ..data.coco import coco_mask_ap, masks_to_coco_results

__all__ = ["SegAccumulator", "score_segmentation", "paired_difference", "verdict",
           "curve_status", "semantic_to_instances", "coco_ground_truth", "rle_area",
           "instance_ap"]

_NAN = float("nan")


def _ratio(num: int, den: int) -> float:
    return num / den if den else _NAN


class SegAccumulator:
    """Running counts for semantic segmentation metrics over a split.

    ``update(pred, true)`` takes integer class maps of shape (N, H, W) (or one
    (H, W) map); ``true`` may hold ``ignore_index``, and those pixels are left
    out of every count (IoU, Dice, accuracy, boundary). ``result()`` gives:

    * ``fg_iou``: foreground = class != 0, intersection / union summed over the split.
    * ``fg_iou_objects``: foreground = class in ``object_classes`` (PushWorld: 2..6,
      so the arm counts as background here).
    * ``iou/<c>`` for every class c (0 included): summed IoU of class c; NaN if c
      never occurs in truth nor prediction.
    * ``miou``: mean of ``iou/<c>`` over the non-background classes that occur in
      the truth of the split. Classes absent from the truth are left out, because
      their IoU is 0 for any false positive and undefined otherwise, which would make
      mIoU depend on which classes a split happens to contain; their false positives
      still cost the true class at those pixels (they enlarge its union).
      Background is left out: it is large and easy and would inflate the mean.
    * ``dice``: foreground (class != 0) Dice 2|P∩T| / (|P|+|T|), summed over the split.
    * ``boundary_f`` (+ ``boundary_precision``, ``boundary_recall``): a boundary F-measure on
      the foreground (class != 0), pooled over the split; not the DAVIS benchmark's F, which is
      per frame with a disk tolerance and averaged per sequence (``vpe_lib.eval.davis``). A mask's boundary is its pixels with a
      non-mask 8-neighbour; the image edge is not a contour (a mask touching the
      frame has no boundary there). A predicted boundary pixel matches if a true
      boundary pixel lies within ``boundary_px`` in Chebyshev distance (square
      dilation; DAVIS uses a disk), and vice versa for recall. Matched and total
      counts are summed over the split, so images where both boundaries are empty
      contribute nothing. An image with an empty truth and a non-empty prediction
      adds unmatched predicted pixels (precision drops); the reverse adds
      unmatched true pixels (recall drops). If nothing is predicted at all
      precision is taken as 0 so F = 0; no boundary anywhere gives NaN.
    * ``pixel_acc``: correct / non-ignored pixels.
    """

    def __init__(self, n_classes: int, *, object_classes: Sequence[int],
                 ignore_index: int = 255, boundary_px: int = 2, boundary: bool = True):
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.object_classes = sorted({int(c) for c in object_classes})
        bad = [c for c in self.object_classes if not 1 <= c < n_classes]
        if bad:
            raise ValueError(f"object_classes {bad} outside 1..{n_classes - 1}")
        if 0 <= ignore_index < n_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id")
        if boundary_px < 0:
            raise ValueError(f"boundary_px must be >= 0, got {boundary_px}")
        self.n_classes, self.ignore_index, self.boundary_px = n_classes, ignore_index, boundary_px
        # boundary=False: no boundary F (NaN), for scores that only need the region metrics, e.g. the
        # validation evaluations during training, where the boundary's morphology was ~6% of a
        # linear probe's training time (profiled)
        self.boundary = boundary
        self._is_object = np.zeros(n_classes, bool)
        self._is_object[self.object_classes] = True
        self.confusion = np.zeros((n_classes, n_classes), np.int64)  # [true, pred]
        self.obj = np.zeros(3, np.int64)  # objects-only: inter, |pred|, |true|
        self.bnd = np.zeros(4, np.int64)  # matched pred, pred, matched true, true

    def update(self, pred: np.ndarray, true: np.ndarray) -> None:
        pred, true = np.asarray(pred), np.asarray(true)
        if pred.shape != true.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {true.shape}")
        if pred.ndim == 2:
            pred, true = pred[None], true[None]
        if pred.ndim != 3:
            raise ValueError(f"expected (N, H, W) class maps, got shape {pred.shape}")
        for name, a in (("prediction", pred), ("target", true)):
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} must be an integer class map, got dtype {a.dtype}")
        if pred.size == 0:
            return
        n = self.n_classes
        if pred.min() < 0 or pred.max() >= n:
            raise ValueError(f"prediction values must lie in 0..{n - 1}, "
                             f"got {pred.min()}..{pred.max()}")
        valid = true != self.ignore_index
        t, p = true[valid].astype(np.int64), pred[valid].astype(np.int64)
        if t.size and (t.min() < 0 or t.max() >= n):
            raise ValueError(f"target values must lie in 0..{n - 1} or be {self.ignore_index}")
        self.confusion += np.bincount(t * n + p, minlength=n * n).reshape(n, n)
        po, to = self._is_object[p], self._is_object[t]
        self.obj += [np.sum(po & to), po.sum(), to.sum()]
        if self.boundary:
            self._update_boundary(pred != 0, (true != 0) & valid, valid)

    def _update_boundary(self, fg_p, fg_t, valid) -> None:
        # Structures are (1, k, k): no coupling between images along axis 0.
        ring = np.ones((1, 3, 3), bool)
        bp = fg_p & ~ndimage.binary_erosion(fg_p, ring, border_value=1)
        bt = fg_t & ~ndimage.binary_erosion(fg_t, ring, border_value=1)
        k = 2 * self.boundary_px + 1
        near = lambda b: ndimage.binary_dilation(b, np.ones((1, k, k), bool))  # noqa: E731
        bp, bt = bp & valid, bt & valid  # boundary pixels on ignore do not count
        self.bnd += [np.sum(bp & near(bt)), bp.sum(), np.sum(bt & near(bp)), bt.sum()]

    def result(self) -> dict[str, float]:
        cm = self.confusion
        inter = np.diag(cm)
        n_true, n_pred = cm.sum(1), cm.sum(0)
        union = n_true + n_pred - inter
        out: dict[str, float] = {}
        # Foreground class != 0: everything outside row 0 / column 0 of the confusion matrix.
        fg_inter = int(cm[1:, 1:].sum())
        fg_pred, fg_true = int(n_pred[1:].sum()), int(n_true[1:].sum())
        out["fg_iou"] = _ratio(fg_inter, fg_pred + fg_true - fg_inter)
        oi, op, ot = (int(x) for x in self.obj)
        out["fg_iou_objects"] = _ratio(oi, op + ot - oi)
        ious = [_ratio(int(inter[c]), int(union[c])) for c in range(self.n_classes)]
        present = [ious[c] for c in range(1, self.n_classes) if n_true[c] > 0]
        out["miou"] = float(np.mean(present)) if present else _NAN
        out["dice"] = _ratio(2 * fg_inter, fg_pred + fg_true)
        mp, np_, mt, nt = (int(x) for x in self.bnd)
        if np_ + nt == 0 or not self.boundary:
            prec = rec = f = _NAN
        else:
            prec, rec = (mp / np_ if np_ else 0.0), (mt / nt if nt else 0.0)
            f = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        out.update(boundary_f=f, boundary_precision=prec, boundary_recall=rec)
        out["pixel_acc"] = _ratio(int(inter.sum()), int(cm.sum()))
        out.update({f"iou/{c}": v for c, v in enumerate(ious)})
        return out


def score_segmentation(pred: np.ndarray, true: np.ndarray, *, n_classes: int,
                       object_classes: Sequence[int] | None = None, **kw) -> dict[str, float]:
    """One-shot :class:`SegAccumulator`; the object classes default to 2.. (class 0 background, 1 the arm, as
    PushWorld labels them)."""
    if object_classes is None:
        object_classes = range(2, n_classes)
    acc = SegAccumulator(n_classes, object_classes=object_classes, **kw)
    acc.update(pred, true)
    return acc.result()


# ---------------------------------------------------------------------------
# comparing methods over seeds, learning curves


def paired_difference(a: Sequence[float], b: Sequence[float], *,
                      confidence: float = 0.95) -> dict:
    """Student-t confidence interval of the mean of a[i] - b[i] (a[i], b[i] share a seed).

    Pairing removes the seed-to-seed variance both methods share (same data order,
    same split), so it is tighter than comparing two independent means. Returns
    mean, std (ddof=1), ci_low, ci_high, n, confidence; the interval is NaN for n < 2.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d of equal length, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d, n = a - b, len(a)
    mean = float(d.mean()) if n else _NAN
    if n < 2:
        return {"mean": mean, "std": _NAN, "ci_low": _NAN, "ci_high": _NAN, "n": n,
                "confidence": confidence}
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n,
            "confidence": confidence}


def fmt_bound(x: float, digits: int = 3) -> str:
    """A number at `digits` decimals, unless that would print a non-zero value as 0.000 (an interval
    bound just off zero): then two significant digits, so a reader sees which side of 0 it lies on."""
    text = f"{x:.{digits}f}"
    if x != 0 and float(text) == 0:
        return f"{x:.2g}"
    return text


def interval_side(lo: float, hi: float) -> int:
    """The verdict rule, one place, on unrounded bounds: +1 when the whole interval lies above 0
    ("beats"), -1 when it lies below ("behind"), 0 when it contains or touches 0 ("no measurable
    difference")."""
    return 1 if lo > 0 else -1 if hi < 0 else 0


def paired_p_value(mean: float, ci_low: float, ci_high: float, n: int, confidence: float = 0.95) -> float:
    """Two-sided p-value of a paired Student-t difference, recovered from its interval (the
    half-width is t_crit * standard error); NaN without an interval."""
    if n is None or n < 2 or any(v is None or v != v for v in (mean, ci_low, ci_high)):
        return float("nan")
    half = (ci_high - ci_low) / 2
    if half <= 0:
        return 0.0 if mean != 0 else 1.0
    se = half / float(stats.t.ppf((1 + confidence) / 2, n - 1))
    return float(2 * stats.t.sf(abs(mean) / se, n - 1))


def holm(p_values: dict) -> dict:
    """Holm's step-down adjustment of a family of p-values ({name: p}; NaN stays NaN and is not
    counted): the adjusted p of the k-th smallest is max over j <= k of min(1, (m - j + 1) p_(j))."""
    finite = sorted((p, k) for k, p in p_values.items() if p == p)
    m, out, running = len(finite), {k: float("nan") for k in p_values}, 0.0
    for j, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - j) * p))
        out[k] = running
    return out


def verdict(diff: dict, *, better: str, worse: str, metric: str = "foreground IoU") -> str:
    """One sentence from a :func:`paired_difference` of (better - worse).

    ``better`` names method a and ``worse`` method b: it is the hypothesis, and the
    sentence follows the interval (:func:`interval_side`, on the unrounded bounds), not
    the sign of the mean. An interval touching 0 counts as "no measurable difference".
    Bounds are printed so that one off zero never reads "0.000" (:func:`fmt_bound`).
    """
    lo, hi, n, m = diff["ci_low"], diff["ci_high"], diff["n"], diff["mean"]
    f = fmt_bound
    pct = f"{100 * diff.get('confidence', 0.95):g}%"
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if math.isnan(lo) or math.isnan(hi):
        return (f"The {metric} difference between {better} and {worse} has no confidence "
                f"interval: it could not be computed from {seeds} (need at least 2).")
    side = interval_side(lo, hi)
    if side > 0:
        return (f"{better} beats {worse} by {f(m)} {metric} "
                f"({pct} CI [{f(lo)}, {f(hi)}], {seeds}).")
    if side < 0:  # reverse phrasing; the interval of (worse - better) is [-hi, -lo]
        return (f"{worse} beats {better} by {f(-m)} {metric} "
                f"({pct} CI [{f(-hi)}, {f(-lo)}], {seeds}).")
    return (f"no measurable difference between {better} and {worse} in {metric} "
            f"({better} - {worse} = {f(m)}, {pct} CI [{f(lo)}, {f(hi)}], {seeds}).")


def curve_status(steps: Sequence[int], values: Sequence[float], *,
                 tail_fraction: float = 0.25, tol: float = 0.005) -> str:
    """"still rising", "converged" or "too short" for a held-out curve (higher is better).

    The tail is the points whose step lies in the last ``tail_fraction`` of the
    step range [first, last] (by step, not by point count, so unevenly spaced
    evaluations weigh by training time). "still rising" if the best tail value
    exceeds the best earlier value by more than ``tol`` (absolute, in the
    metric's units): more training would likely still pay. Comparing bests
    rather than last values makes one noisy evaluation matter less. Fewer than
    3 points: "too short". Non-finite values raise (a diverged run is not "converged").
    """
    s, v = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if s.shape != v.shape or s.ndim != 1:
        raise ValueError(f"steps and values must be 1-d of equal length, got {s.shape}, {v.shape}")
    if not 0 < tail_fraction < 1:
        raise ValueError(f"tail_fraction must lie in (0, 1), got {tail_fraction}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values contain NaN/inf: the curve diverged or was not evaluated")
    if len(s) < 3:
        return "too short"
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    tail = s >= s[-1] - tail_fraction * (s[-1] - s[0])
    if tail.all():  # all steps equal: nothing to compare against
        return "too short"
    return "still rising" if v[tail].max() > v[~tail].max() + tol else "converged"


# ---------------------------------------------------------------------------
# instances in COCO format


def semantic_to_instances(probs: np.ndarray, *, classes: Sequence[int],
                          min_area: int = 4) -> list[dict]:
    """Decode one image's (C, H, W) softmax into instances: 8-connected components
    of the argmax map, per class in ``classes``.

    Why this is reasonable: a semantic head has no notion of identity, but objects
    in PushWorld are compact and mostly apart, so a connected region of one class
    is nearly always one object; the score (mean probability of the class inside
    the component) ranks confident regions above doubtful ones, which AP needs.
    Components below ``min_area`` pixels are speckle, not objects.
    Limit: touching objects of the same class merge into one instance (one miss
    plus one poor match), and an object split by an occluder becomes two.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (C, H, W), got shape {probs.shape}")
    labels = probs.argmax(0)
    eight = np.ones((3, 3), bool)
    out = []
    for c in classes:
        c = int(c)
        if not 0 <= c < probs.shape[0]:
            raise ValueError(f"class {c} outside 0..{probs.shape[0] - 1}")
        comp, k = ndimage.label(labels == c, structure=eight)
        for j in range(1, k + 1):
            m = comp == j
            if m.sum() >= min_area:
                out.append({"mask": m, "category_id": c, "score": float(probs[c][m].mean())})
    return out


def rle_area(rles: list[dict]) -> np.ndarray:
    """Pixel areas of COCO RLEs (int64).

    pycocotools' ``mask.area`` overflows (OverflowError: uint8 counter in _mask.pyx)
    on lists of 256+ RLEs with numpy 2, so call it in chunks of at most 255.
    """
    from pycocotools import mask as mask_utils

    rles = list(rles)
    parts = [np.asarray(mask_utils.area(rles[i:i + 255]), np.int64).reshape(-1)
             for i in range(0, len(rles), 255)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def coco_ground_truth(instance: np.ndarray, semantic: np.ndarray, *,
                      class_names: Sequence[str], classes: Sequence[int]) -> dict:
    """(N, H, W) instance ids + semantic maps -> a COCO instances dict.

    Images get ids 1..N (file_name "<id>.png", a placeholder COCO requires).
    Each (image, instance id) whose majority semantic class (ignore values 255 left
    out) is in ``classes`` becomes one annotation with that class as category id:
    compressed RLE (counts str), area, bbox [x, y, w, h], iscrowd 0.
    On PushWorld, the table (id 0, background) and the arm (class 1) drop out
    when ``classes`` = 2..6.
    """
    from pycocotools import mask as mask_utils

    instance, semantic = np.asarray(instance), np.asarray(semantic)
    if instance.shape != semantic.shape:
        raise ValueError(f"instance shape {instance.shape} != semantic shape {semantic.shape}")
    if instance.ndim == 2:
        instance, semantic = instance[None], semantic[None]
    keep = {int(c) for c in classes}
    n, h, w = instance.shape
    images = [{"id": i + 1, "file_name": f"{i + 1}.png", "height": h, "width": w}
              for i in range(n)]
    anns = []
    for i in range(n):
        for iid in np.unique(instance[i]):
            m = instance[i] == iid
            sem = semantic[i][m]
            sem = sem[sem != 255]
            if sem.size == 0:
                continue
            cls = int(np.bincount(sem.astype(np.int64)).argmax())
            if cls not in keep:
                continue
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls,
                         "segmentation": rle, "bbox": bbox, "iscrowd": 0})
    for a, area in zip(anns, rle_area([a["segmentation"] for a in anns])):
        a["area"] = int(area)
    cats = [{"id": c, "name": str(class_names[c])} for c in sorted(keep)]
    return {"images": images, "annotations": anns, "categories": cats}


def instance_ap(gt: dict, predictions: Sequence[list[dict]]) -> dict[str, float]:
    """COCO mask AP of per-image :func:`semantic_to_instances` outputs against ``gt``.

    ``predictions[i]`` belongs to image id i + 1; there must be one entry per
    ground-truth image (an empty list for an image with no detections), so a
    short list cannot silently skip images. Keys: ap, ap50, ap75, aps, apm, apl
    (coco_mask_ap's, lowercased; NaN where COCO has no ground truth in a range).
    """
    if len(predictions) != len(gt["images"]):
        raise ValueError(f"{len(predictions)} prediction lists for {len(gt['images'])} images")
    results = []
    for i, dets in enumerate(predictions):
        if len(dets) == 0:
            continue
        results += masks_to_coco_results(i + 1, np.stack([d["mask"] for d in dets]),
                                         [d["score"] for d in dets],
                                         [d["category_id"] for d in dets])
    return {k.lower(): v for k, v in coco_mask_ap(gt, results).items()}
