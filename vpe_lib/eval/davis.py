"""DAVIS J and F as the benchmark defines them (Perazzi et al., CVPR 2016; the davis2017-evaluation code).

Per frame, on binary masks at the annotation's resolution:
- **J** (region similarity): intersection over union; a frame where both masks are empty scores 1.
- **F** (contour accuracy): the F-measure of boundary precision and recall, where a boundary pixel counts
  as matched if the other mask's boundary lies within a disk of radius ceil(0.008 × the image diagonal)
  (`bound_th`; >= 1 means pixels). Boundaries are one pixel wide, a pixel where the mask differs from its
  east, south or south-east neighbour (the Berkeley seg2bmap convention). An empty prediction against a
  non-empty truth has precision 1 and recall 0 (F = 0); both empty: F = 1.
Per sequence, each measure gives its **mean**, its **recall** (the share of frames above 0.5) and its
**decay** (the mean of the first quarter of the frames minus that of the last quarter); the dataset's
numbers are the means over sequences, and **J&F** is the mean of J and F. As the benchmark does, the first
and last frame of each sequence are left out by default (`skip_first_last`).

This is not the pooled foreground IoU of `vpe_lib.eval.segmentation` (intersection and union summed over
all frames before dividing), which weighs large objects more and is never to be called J.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

BOUND_TH = 0.008


def region_j(pred: np.ndarray, true: np.ndarray) -> float:
    """J of one frame: IoU of two binary masks (1 when both are empty)."""
    pred, true = _pair(pred, true)
    union = np.count_nonzero(pred | true)
    return 1.0 if union == 0 else np.count_nonzero(pred & true) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask: pixels that differ from their east, south or south-east
    neighbour (last row / column against the one neighbour they have; the bottom-right corner never)."""
    seg = np.asarray(mask, dtype=bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def tolerance_px(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """The boundary tolerance in pixels: ceil(bound_th × the diagonal), or bound_th itself when >= 1."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk(radius: int) -> np.ndarray:
    """A filled disk of the given radius, (2r+1) x (2r+1): x² + y² <= r²."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def boundary_f(pred: np.ndarray, true: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F of one frame (see the module docstring)."""
    pred, true = _pair(pred, true)
    pb, tb = boundary_map(pred), boundary_map(true)
    n_p, n_t = np.count_nonzero(pb), np.count_nonzero(tb)
    if n_p == 0 and n_t == 0:
        return 1.0
    if n_p == 0 or n_t == 0:
        precision, recall = (1.0, 0.0) if n_p == 0 else (0.0, 1.0)
    else:
        d = disk(tolerance_px(pred.shape, bound_th))
        precision = np.count_nonzero(pb & ndimage.binary_dilation(tb, structure=d)) / n_p
        recall = np.count_nonzero(tb & ndimage.binary_dilation(pb, structure=d)) / n_t
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def statistics(per_frame: Sequence[float]) -> dict[str, float]:
    """mean, recall (share > 0.5) and decay (first quarter's mean - last quarter's) of one sequence's
    per-frame values, binned as the benchmark bins them."""
    v = np.asarray(per_frame, dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "recall": float("nan"), "decay": float("nan")}
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(int)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return {"mean": float(np.nanmean(v)), "recall": float(np.nanmean(v > 0.5)),
            "decay": float(np.nanmean(bins[0]) - np.nanmean(bins[3]))}


def davis_scores(preds, truths, sequences: Sequence, *, bound_th: float = BOUND_TH,
                 skip_first_last: bool = True) -> dict[str, float]:
    """J, F and J&F over a set of frames (n h w binary arrays, or lists of h w frames of any size, each
    prediction the size of its truth: native resolution), in each sequence's frame order, grouped by
    `sequences` (one id per frame): per-frame values, statistics per sequence, then the mean over
    sequences. Keys: j_mean, j_recall, j_decay, f_mean, f_recall, f_decay, jf_mean, n_sequences, n_frames."""
    if isinstance(preds, np.ndarray) and isinstance(truths, np.ndarray) and (
            preds.shape != truths.shape or preds.ndim != 3):
        raise ValueError(f"predictions {preds.shape} and ground truth {truths.shape} must be the same n h w")
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} ground-truth frames")
    sequences = np.asarray(sequences)
    if len(sequences) != len(preds):
        raise ValueError(f"{len(sequences)} sequence ids for {len(preds)} frames")
    per_seq: dict[str, list[dict[str, float]]] = {"j": [], "f": []}
    n_frames = 0
    for seq in dict.fromkeys(sequences.tolist()):
        idx = np.flatnonzero(sequences == seq)
        if skip_first_last and len(idx) > 2:
            idx = idx[1:-1]
        n_frames += len(idx)
        per_seq["j"].append(statistics([region_j(preds[i], truths[i]) for i in idx]))
        per_seq["f"].append(statistics([boundary_f(preds[i], truths[i], bound_th) for i in idx]))
    out = {f"{m}_{k}": float(np.nanmean([s[k] for s in per_seq[m]])) for m in ("j", "f")
           for k in ("mean", "recall", "decay")}
    out["jf_mean"] = (out["j_mean"] + out["f_mean"]) / 2
    out["n_sequences"], out["n_frames"] = float(len(per_seq["j"])), float(n_frames)
    return out


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"a frame's prediction {pred.shape} and truth {true.shape} must be the same h w")
    return pred, true
