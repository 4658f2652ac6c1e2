"""Read COCO-format instance annotations; turn predictions into COCO results; mask AP.

``load_coco_instances(ann_json, image_dir)`` validates the json up front (a
malformed field raises :class:`DataError` naming the file, the field and the
annotation id) and then decodes masks lazily per image with pycocotools
(polygons, uncompressed RLE and compressed RLE, crowd or not).

Crowd regions (``iscrowd=1``): they are not instances (no instance id, not
foreground) and are marked **ignore**: ``semantic == IGNORE (255)`` and
``ignore == True`` wherever a crowd mask is not covered by a non-crowd
instance. Metrics should skip those pixels, as COCO does.

Overlaps between non-crowd instances: instances are painted largest first,
so a small object lying on a large one stays visible; instance ids
(1..N) follow that order and ``annotation_ids[k-1]`` gives the COCO id of
instance k.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DataError
from .frames import read_rgb

__all__ = ["IGNORE", "CocoDataset", "load_coco_instances", "read_coco_json",
           "masks_to_coco_results", "coco_mask_ap"]

IGNORE = 255


def _quiet():
    """pycocotools prints progress to stdout; keep notebooks and tests clean."""
    return contextlib.redirect_stdout(io.StringIO())


def read_coco_json(ann_json) -> dict:
    """Load and validate a COCO instances json; DataError names file, field and annotation id."""
    path = Path(ann_json)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise DataError("annotation file not found", path=path) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file: {e}", path=path) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON (line {e.lineno}, column {e.colno}): {e.msg}",
                        path=path) from e
    validate_coco(data, path)
    return data


def validate_coco(data: Any, path=None) -> None:
    """Check the structure COCO readers rely on; raise DataError naming the field."""
    if not isinstance(data, dict):
        raise DataError("top level must be a JSON object", path=path)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"missing top-level key {key!r}", path=path, field=key)
        if not isinstance(data[key], list):
            raise DataError(f"{key!r} must be a list", path=path, field=key)
    image_ids = set()
    for i, img in enumerate(data["images"]):
        for k in ("id", "file_name", "height", "width"):
            if not isinstance(img, dict) or k not in img:
                raise DataError(f"image entry {i} has no {k!r}", path=path, field=f"images[{i}].{k}")
        if img["id"] in image_ids:
            raise DataError(f"duplicate image id {img['id']}", path=path, field=f"images[{i}].id")
        image_ids.add(img["id"])
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        for k in ("id", "name"):
            if not isinstance(cat, dict) or k not in cat:
                raise DataError(f"category entry {i} has no {k!r}", path=path,
                                field=f"categories[{i}].{k}")
        cat_ids.add(cat["id"])
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"annotation entry {i} is not an object", path=path,
                            field=f"annotations[{i}]")
        aid = ann.get("id", f"<index {i}>")
        for k in ("id", "image_id", "category_id", "segmentation"):
            if k not in ann:
                raise DataError(f"annotation id {aid} has no {k!r}", path=path,
                                field=f"annotations[{i}].{k}")
        if aid in ann_ids:
            raise DataError(f"duplicate annotation id {aid}", path=path,
                            field=f"annotations[{i}].id")
        ann_ids.add(aid)
        if ann["image_id"] not in image_ids:
            raise DataError(f"annotation id {aid} refers to unknown image_id {ann['image_id']!r}",
                            path=path, field=f"annotations[{i}].image_id")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"annotation id {aid} refers to unknown category_id "
                            f"{ann['category_id']!r}", path=path,
                            field=f"annotations[{i}].category_id")
        seg = ann["segmentation"]
        ok = (isinstance(seg, list) and all(isinstance(p, list) and len(p) >= 4
                                              and len(p) % 2 == 0 for p in seg)) or \
             (isinstance(seg, dict) and "counts" in seg and "size" in seg)
        if not ok:
            raise DataError(f"annotation id {aid} has a malformed segmentation (need polygons "
                            "[[x,y,...]] with >= 2 points, or RLE {counts, size})",
                            path=path, field=f"annotations[{i}].segmentation")


class CocoDataset:
    """COCO instance annotations as dense per-image maps.

    ``ds[i]`` -> dict(image uint8 (H, W, 3), instance uint16 (H, W),
    semantic uint8 (H, W), foreground bool (H, W), ignore bool (H, W),
    image_id, file_name, annotation_ids list).

    ``semantic`` values: 0 background, ``category_map[cat_id]`` for objects
    (default: COCO category ids remapped to 1..K in increasing id order),
    :data:`IGNORE` (255) on crowd regions. ``class_names[v]`` names value v.
    Annotations whose category is not in a user ``category_map`` are dropped
    (their pixels count as background).
    """

    def __init__(self, ann_json, image_dir, *, category_map: Mapping[int, int] | None = None):
        from pycocotools.coco import COCO

        self.ann_path = Path(ann_json)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError("COCO image folder not found", path=self.image_dir)
        data = read_coco_json(self.ann_path)
        with _quiet():
            coco = COCO()
            coco.dataset = data
            coco.createIndex()
        self.coco = coco
        cats = sorted(data["categories"], key=lambda c: c["id"])
        if category_map is None:
            category_map = {c["id"]: i + 1 for i, c in enumerate(cats)}
        else:
            category_map = dict(category_map)
            names = {c["id"] for c in cats}
            for cid, v in category_map.items():
                if cid not in names:
                    raise DataError(f"category_map key {cid!r} is not a category id",
                                    path=self.ann_path, field="categories")
                if not (isinstance(v, (int, np.integer)) and 1 <= int(v) < IGNORE):
                    raise DataError(f"category_map[{cid}] = {v!r} must be an int in 1..254",
                                    field="category_map")
        self.category_map = {int(k): int(v) for k, v in category_map.items()}
        n = max(self.category_map.values(), default=0) + 1
        by_value: dict[int, list[str]] = {}
        for c in cats:
            if c["id"] in self.category_map:
                by_value.setdefault(self.category_map[c["id"]], []).append(str(c["name"]))
        self.class_names = ["background"] + ["/".join(by_value.get(v, [f"class{v}"]))
                                             for v in range(1, n)]
        self.image_ids = sorted(coco.imgs)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _ann_mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                # pycocotools 2.0.11 + numpy 2: harmless __array__(copy=...) deprecation
                warnings.simplefilter("ignore", DeprecationWarning)
                m = self.coco.annToMask(ann)
        except Exception as e:  # pycocotools raises TypeError/ValueError/IndexError variously
            raise DataError(f"annotation id {ann['id']}: cannot decode segmentation: {e}",
                            path=self.ann_path, field="segmentation") from e
        if m.shape != (h, w):
            raise DataError(f"annotation id {ann['id']}: mask shape {m.shape} != image "
                            f"{(h, w)} (image_id {ann['image_id']})", path=self.ann_path,
                            field="segmentation.size")
        return m.astype(bool)

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        image_id = self.image_ids[i]
        info = self.coco.imgs[image_id]
        h, w = int(info["height"]), int(info["width"])
        img_path = self.image_dir / info["file_name"]
        image = read_rgb(img_path)
        if image.shape[:2] != (h, w):
            raise DataError(f"image is {image.shape[:2]} but the json says (height, width) = "
                            f"{(h, w)} for image_id {image_id}", path=img_path)
        anns = [a for a in self.coco.imgToAnns.get(image_id, [])
                if a["category_id"] in self.category_map]
        instance = np.zeros((h, w), np.uint16)
        semantic = np.zeros((h, w), np.uint8)
        crowd = np.zeros((h, w), bool)
        things = []
        for a in anns:
            m = self._ann_mask(a, h, w)
            if a.get("iscrowd", 0):
                crowd |= m
            else:
                things.append((int(m.sum()), a, m))
        things.sort(key=lambda x: -x[0])  # largest first: small objects end on top
        ann_ids = []
        for k, (_, a, m) in enumerate(things, start=1):
            instance[m] = k
            semantic[m] = self.category_map[a["category_id"]]
            ann_ids.append(a["id"])
        ignore = crowd & (instance == 0)
        semantic[ignore] = IGNORE
        return {"image": image, "instance": instance, "semantic": semantic,
                "foreground": instance > 0, "ignore": ignore, "image_id": image_id,
                "file_name": info["file_name"], "annotation_ids": ann_ids}


def load_coco_instances(ann_json, image_dir, *,
                        category_map: Mapping[int, int] | None = None) -> CocoDataset:
    """Open a COCO instances json + image folder as a :class:`CocoDataset`."""
    return CocoDataset(ann_json, image_dir, category_map=category_map)


# ---------------------------------------------------------------------------
# predictions -> COCO results, mask AP


def masks_to_coco_results(image_ids, masks, scores, category_ids) -> list[dict]:
    """Predictions -> COCO result dicts (compressed RLE with ``counts`` as str).

    ``masks`` (N, H, W) bool/uint8; ``scores`` (N,); ``category_ids`` (N,) or
    one int; ``image_ids`` (N,) or one int. Empty masks are kept (COCOeval
    scores them as misses) so the result count equals N.
    """
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    n = len(masks)
    scores = np.broadcast_to(np.asarray(scores, np.float64), (n,))
    cats = np.broadcast_to(np.asarray(category_ids), (n,))
    imgs = np.broadcast_to(np.asarray(image_ids), (n,))
    out = []
    for m, s, c, im in zip(masks, scores, cats, imgs):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": im.item(), "category_id": int(c), "segmentation": rle,
                    "score": float(s)})
    return out


def coco_mask_ap(gt_json, results: Sequence[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """Segmentation AP via ``COCOeval(gt, dt, "segm")`` with pycocotools' printing silenced.

    ``gt_json``: a path, a COCO dict, or a ``pycocotools.coco.COCO``.
    Returns AP (0.5:0.95), AP50, AP75, APs, APm, APl; NaN where COCO reports
    -1 (no ground truth in that range). No results at all gives 0.0.
    ``image_ids``: evaluate on these images only (a test split of the json's images).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(gt_json, COCO):
        gt = gt_json
    else:
        data = gt_json if isinstance(gt_json, dict) else read_coco_json(gt_json)
        if isinstance(gt_json, dict):
            validate_coco(data)
        with _quiet():
            gt = COCO()
            gt.dataset = data
            gt.createIndex()
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    if len(results) == 0:
        return {k: (0.0 if gt.anns else math.nan) for k in keys}
    gt_imgs = set(gt.getImgIds())
    for r in results:
        if r.get("image_id") not in gt_imgs:
            raise DataError(f"result refers to image_id {r.get('image_id')!r} absent from the "
                            "ground truth", field="image_id")
    with _quiet():
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys in place
        ev = COCOeval(gt, dt, "segm")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (math.nan if v < 0 else float(v)) for k, v in zip(keys, ev.stats[:6])}
