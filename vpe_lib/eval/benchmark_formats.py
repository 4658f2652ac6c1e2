"""Predictions in the benchmarks' own formats, at native resolution, and scored from them.

The study trains and predicts at S x S (64 px on the cpu profile). A benchmark scores the masks at the
resolution of its annotations, so:

* DAVIS: each frame's foreground probability is resized (bilinear) to its annotation's size and
  thresholded at 0.5, written as an indexed PNG (0 background, 1 the object: the layout the DAVIS
  evaluation reads, one folder per sequence), and J, F and J&F are computed against the annotation
  files themselves (`eval.davis`, per sequence, then over sequences). The **ceiling** is the truth itself
  brought down to S x S and back (nearest, as the models' labels are): what no model at S can beat.
* COCO: every connected region of a class in the argmax map is one instance (`semantic_to_instances`),
  its score the mean probability of the class inside it; masks resized to the image's size, RLE-encoded
  into a results JSON that plain pycocotools COCOeval reads, and the AP comes from that file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from vpe_lib.atomic import atomic_write_text
from vpe_lib.data.coco import coco_mask_ap, masks_to_coco_results
from vpe_lib.data.davis_splits import read_davis_semantic
from vpe_lib.data.labelled import resize_labels
from vpe_lib.eval.davis import davis_scores
from vpe_lib.eval.segmentation import semantic_to_instances

DAVIS_PALETTE = [0, 0, 0, 128, 0, 0] + [0] * (256 * 3 - 6)  # the DAVIS colours of ids 0 and 1


def resize_probability(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(S, S) float probabilities -> (H, W), bilinear (PIL, float mode)."""
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(prob, np.float32), "F").resize((w, h), Image.BILINEAR))


def native_truth(item: dict) -> np.ndarray:
    """The foreground of a DAVIS frame's annotation file, at its own size (void counts as background)."""
    sem, _ = read_davis_semantic(item["annotation"])
    return sem == 1


def davis_native(fg_probs: np.ndarray, items: list[dict], truths: list[np.ndarray] | None = None,
                 out_dir: Path | None = None) -> dict[str, float]:
    """Score (N, S, S) foreground probabilities at each annotation's resolution; with `out_dir`, write
    them as `<out_dir>/<sequence>/<frame>.png` first. `truths`: the native masks, when already read."""
    truths = truths if truths is not None else [native_truth(it) for it in items]
    preds = [resize_probability(p, t.shape) >= 0.5 for p, t in zip(fg_probs, truths)]
    if out_dir is not None:
        for pred, it in zip(preds, items):
            img = Image.fromarray(pred.astype(np.uint8), "P")
            img.putpalette(DAVIS_PALETTE)
            path = Path(out_dir) / it["sequence"] / f"{it['frame']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
    return davis_scores(preds, truths, [it["sequence"] for it in items])


def read_davis_pngs(folder: Path, items: list[dict]) -> list[np.ndarray]:
    """The masks a DAVIS results folder holds for `items`, as the benchmark reads them (id > 0)."""
    return [np.asarray(Image.open(Path(folder) / it["sequence"] / f"{it['frame']}.png")) > 0 for it in items]


def davis_ceiling(items: list[dict], size: int, truths: list[np.ndarray] | None = None) -> dict[str, float]:
    """J, F, J&F of the ground truth brought down to size x size and back (nearest): the ceiling."""
    truths = truths if truths is not None else [native_truth(it) for it in items]
    round_trip = [resize_labels(resize_labels(t.astype(np.uint8), size), t.shape) > 0 for t in truths]
    return davis_scores(round_trip, truths, [it["sequence"] for it in items])


def coco_results(probs: np.ndarray, items: list[dict], category_ids: Sequence, classes: Sequence[int]) -> list[dict]:
    """COCO result dicts (RLE at each image's size, score from the probabilities) of (N, C, S, S) softmax maps."""
    out = []
    for p, it in zip(probs, items):
        for inst in semantic_to_instances(p, classes=classes):
            up = resize_labels(inst["mask"].astype(np.uint8), (it["height"], it["width"])) > 0
            out += masks_to_coco_results(it["image_id"], up[None], inst["score"], category_ids[inst["category_id"]])
    return out


def write_coco_results(path: Path, results: list[dict]) -> None:
    atomic_write_text(json.dumps(results), Path(path))


def coco_ap_from_file(annotations, results_path: Path, image_ids: Sequence[int]) -> dict[str, float]:
    """AP, AP50, AP75 ... by pycocotools COCOeval of a results JSON, on `image_ids` only."""
    return coco_mask_ap(annotations, json.loads(Path(results_path).read_text()), image_ids=image_ids)
