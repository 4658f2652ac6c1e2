"""COCO images as labelled stills, split by image (`load_coco_splits`); what is skipped and what raises
is in `seg_sources`' docstring."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .coco import IGNORE, CocoDataset
from .errors import DataError
from .labelled import (FRAME_EXTENSIONS, LabelledSplit, SkipReport, _auto_counts, _reason, _stack_split, resize_labels)
from .frames import resize_frames



def _coco_paths(root, ann, image_dir) -> tuple[Path, Path]:
    root = Path(root)
    if root.is_file() and ann is None:  # "coco:/x/annotations/instances_val2017.json"
        ann_path = root
        root = root.parent.parent if root.parent.name == "annotations" else root.parent
    elif not root.is_dir():
        raise DataError("COCO root not found", path=root)
    elif ann is not None:
        ann_path = Path(ann) if Path(ann).is_absolute() else root / ann
        if not ann_path.is_file():
            raise DataError("COCO annotation file not found", path=ann_path)
    else:
        found = sorted((root / "annotations").glob("instances_*.json"))
        if not found:
            raise DataError("no COCO annotation file: looked for annotations/instances_*.json", path=root)
        if len(found) > 1:
            raise DataError(f"several COCO annotation files ({', '.join(p.name for p in found)}): "
                            f"choose one (ann=..., or coco:<path to the json>)", path=root / "annotations")
        ann_path = found[0]
    if image_dir is not None:
        img_dir = Path(image_dir) if Path(image_dir).is_absolute() else root / image_dir
        if not img_dir.is_dir():
            raise DataError("COCO image folder not found", path=img_dir)
        return ann_path, img_dir
    tried = []
    stem = ann_path.stem
    if stem.startswith("instances_"):
        name = stem[len("instances_"):]
        tried += [root / name, root / "images" / name]
    tried += [root / "images"]
    for d in tried:
        if d.is_dir():
            return ann_path, d
    others = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != "annotations"
              and not d.name.startswith(".")
              and any(p.suffix.lower() in FRAME_EXTENSIONS for p in d.iterdir())]
    if len(others) == 1:
        return ann_path, others[0]
    raise DataError(f"cannot find the COCO image folder; tried {', '.join(str(d) for d in tried)} and a "
                    f"single image folder beside annotations/ (found {len(others)}); pass image_dir",
                    path=root)


def _check_fractions(fractions) -> tuple[float, float, float]:
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or min(f) < 0 or f[0] <= 0 or f[2] <= 0 or abs(sum(f) - 1) > 1e-6:
        raise ValueError(f"fractions must be (train, val, test) >= 0 summing to 1 with train and test "
                         f"> 0, got {fractions!r}")
    return f


def load_coco_splits(root, *, size: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                     ann: str | None = None, image_dir: str | None = None
                     ) -> tuple[dict[str, LabelledSplit], SkipReport, list[str]]:
    """COCO instances -> labelled stills per split; every image is its own "video".

    ``root``: a COCO root (``annotations/instances_*.json``, exactly one unless
    ``ann`` names it; images in ``<root>/<train2017|val2017...>`` after the json's
    name, ``<root>/images[/<name>]`` or the one image folder there, unless
    ``image_dir``) or the json itself. Semantic = 1..K in the order of the json's
    categories, crowd regions 255; ``class_names = ["background", *names]``.
    Split: the sorted image ids of the json are permuted by ``seed``; val and test
    get ``round(f * n)`` images (at least 1 when f > 0; val 0 -> no "val" split),
    train the rest. Images are skipped *after* the split, so one bad file never
    moves another image to another split.
    """
    f = _check_fractions(fractions)
    ann_path, img_dir = _coco_paths(root, ann, image_dir)
    ds = CocoDataset(ann_path, img_dir)  # reads and validates the json once
    cats = ds.coco.dataset["categories"]
    if len(cats) >= IGNORE:
        raise DataError(f"{len(cats)} categories do not fit uint8 ids 1..254", path=ann_path,
                        field="categories")
    # ids 1..K in the order of the json's categories (CocoDataset's default is increasing
    # category id, the same for real COCO files); both are public attributes it reads per item
    ds.category_map = {int(c["id"]): i + 1 for i, c in enumerate(cats)}
    ds.class_names = class_names = ["background", *(str(c["name"]) for c in cats)]
    n = len(ds.image_ids)
    n_train, n_val, n_test = _auto_counts(n, f)
    if n_train < 1:
        raise DataError(f"split 'train' would be empty: {n} images cannot be split as {f}",
                        path=ann_path)
    order = np.random.default_rng(seed).permutation(n)
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    report = SkipReport()
    out: dict[str, LabelledSplit] = {}
    for split, idx in parts.items():
        if split == "val" and n_val == 0:
            continue
        frames, sems, insts, vids, names, items = [], [], [], [], [], []
        for i in sorted(int(j) for j in idx):
            info = ds.coco.imgs[ds.image_ids[i]]
            img_path = img_dir / info["file_name"]
            n_ann = len(ds.coco.imgToAnns.get(info["id"], []))
            if not img_path.is_file():
                report.add(img_path, "missing image", f"image file not found (image_id {info['id']}, "
                                                      f"{n_ann} annotations)")
                continue
            try:
                item = ds[i]
            except DataError as e:
                if e.field is not None:
                    kind = "bad annotation"
                elif "json says" in str(e):
                    kind = "size mismatch"
                else:
                    kind = "unreadable image"
                report.add(img_path, kind, _reason(e))
                continue
            frames.append(resize_frames(item["image"], size))
            sems.append(resize_labels(item["semantic"], size))
            insts.append(resize_labels(item["instance"].astype(np.int32), size))
            vids.append(len(names))
            names.append(str(info["file_name"]))
            items.append({"image_id": int(info["id"]), "height": int(item["image"].shape[0]),
                          "width": int(item["image"].shape[1])})
        if not frames:
            raise DataError(f"split {split!r} is empty: all {len(idx)} of its images were skipped -- "
                            f"{report.summary()}", path=ann_path)
        out[split] = _stack_split(frames, sems, vids, names, size, insts, items=items, meta={
            "annotations": str(ann_path), "category_ids": [None, *(int(c["id"]) for c in cats)]})
    report.warn(f"COCO {ann_path}")
    return out, report, class_names
