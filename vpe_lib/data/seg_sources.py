"""Labelled still frames from real data, chosen by a parameter (``data.source``).

``data.source`` is one of

* ``"pushworld"`` -- the generated videos of the data stage (not read here);
* ``"davis:<DAVIS root>"`` -- the DAVIS layout ``JPEGImages/<res>/<seq>/*.jpg`` +
  ``Annotations/<res>/<seq>/*.png`` (2016 greyscale 0/255 or 2017 palette masks);
* ``"coco:<COCO root>"`` (``annotations/instances_*.json`` + an image folder) or
  ``"coco:<path to an instances json>"``;
* ``"video:<a video file or folder of videos>"`` -- unlabelled video that pretrains the models
  (`video_source`); the labelled frames are then PushWorld's.

:func:`load_davis_splits` and :func:`load_coco_splits` return
``({"train"|"val"|"test": LabelledSplit}, SkipReport, class_names)``: frames
resized to ``size x size`` (image bilinear, antialiased when shrinking; labels
nearest), semantic maps (0 background, 255 ignore), the video each frame comes
from (splits are by video -- a DAVIS sequence, a COCO image) and, for COCO,
instance maps.

Resizing does **not keep the aspect ratio** (DAVIS 854x480 is squashed to a
square) rather than centre-cropping: a crop would cut away labelled objects
near the sides (DAVIS objects cross the frame; COCO images have any aspect
ratio and objects anywhere), whereas squashing keeps every labelled pixel, and
every model compared sees the same squashed inputs.

Bad input never disappears silently. A bad *item* is skipped and recorded in
the :class:`SkipReport` (``{"path", "kind", "reason"}``; one
:class:`SkippedDataWarning` summarises them); a problem that makes the run
meaningless raises :class:`DataError` naming the file, sequence or split.

Skipped (``kind``), the file named in ``path``:

* ``no mask`` -- a DAVIS frame without its ``Annotations/<res>/<seq>/<frame>.png``;
* ``size mismatch`` -- a mask of another size than its frame (DAVIS), an image
  file whose size differs from the json's height/width (COCO);
* ``non-binary mask`` -- a DAVIS greyscale mask that is not 0/255 (rule below);
* ``unreadable image`` -- a corrupt / non-image frame or mask;
* ``missing image`` -- a COCO image entry (and so its annotations) whose file is absent;
* ``bad annotation`` -- a COCO segmentation that cannot be decoded for its image;
* ``no frames`` -- a DAVIS sequence folder without frame images.

DataError: a sequence listed twice (in one split or in two), a listed sequence
that does not exist, an empty split (nothing listed for it, too few sequences
or images for the automatic split, or every one of its items skipped -- the
message then carries the skip summary), a missing root/annotation file/image folder.

Non-binary rule (DAVIS-2016 greyscale/RGB masks): foreground = value > 127, as
:func:`~vpe_lib.data.davis.read_davis_mask`. Grey pixels within 63 of 0 or 255
are edge noise (JPEG ringing, antialiasing) and are thresholded; a mask is
*non-binary* when more than 2 % of its pixels are clearly grey (64..191) --
a soft matte or a grey-coded label map -- or when it has non-zero values but
none above 127 (a 0/1 or 0..k label map, which the threshold would read as
empty). Palette (DAVIS-2017) masks are instance ids: id > 0 -> 1, 255 (DAVIS
"void") -> ignore.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from .coco import IGNORE, CocoDataset
from .davis import _image_size, open_mask
from .errors import DataError
from .frames import natural_key, read_rgb

__all__ = ["IGNORE", "SOURCE_KINDS", "SPLITS", "DAVIS_CLASSES", "LabelledSplit", "SkipReport",
           "SkippedDataWarning", "parse_source", "labels_kind", "UNLABELLED_KINDS", "resize_frames", "resize_labels",
           "read_davis_semantic", "davis_sequences", "resolve_davis_splits", "load_davis_splits",
           "load_coco_splits", "real_image_size", "davis_splits_from_config",
           "load_labelled_splits", "InMemoryClipSource", "davis_clip_source",
           "pretraining_clip_source"]

SOURCE_KINDS = {"pushworld": "pushworld", "davis": "davis:<DAVIS root>",
                "coco": "coco:<COCO root or annotations/instances_*.json>",
                "video": "video:<a video file or a folder of videos>"}
# sources without labels: their videos pretrain, PushWorld's labelled frames measure the transfer
UNLABELLED_KINDS = ("video",)


def labels_kind(spec: str) -> str:
    """Where a source's segmentation labels come from: its own kind, or "pushworld" for a source of
    unlabelled video (``video:``), whose encoders are judged on PushWorld's labelled frames."""
    kind = parse_source(spec)[0]
    return "pushworld" if kind in UNLABELLED_KINDS else kind
SPLITS = ("train", "val", "test")
DAVIS_CLASSES = ["background", "foreground"]
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")

# non-binary rule for DAVIS-2016 greyscale masks (see the module docstring)
GREY_BAND = (64, 191)
MAX_GREY_FRACTION = 0.02


class SkippedDataWarning(UserWarning):
    """Some frames/images were skipped while loading labelled splits (see the SkipReport)."""


@dataclass
class LabelledSplit:
    frames: np.ndarray      # (N, S, S, 3) uint8, resized to the model resolution S
    semantic: np.ndarray    # (N, S, S) uint8 class ids, 0 = background, 255 = ignore (COCO crowd)
    video_ids: np.ndarray   # (N,) int: which video/sequence/image each frame comes from
    names: list[str]        # name of each video id (DAVIS sequence / COCO file name), index = video id
    instance: np.ndarray | None = None  # (N, S, S) int32 instance ids when the source has them
    # where each frame comes from, for outputs in the benchmarks' formats at native resolution: DAVIS
    # {"sequence", "frame" (file stem), "annotation" (its mask file)}; COCO {"image_id", "height", "width"}
    items: list[dict] | None = None
    meta: dict = field(default_factory=dict)  # COCO: {"annotations": the json, "category_ids": id of class k}

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.frames.ndim != 4 or self.semantic.shape != self.frames.shape[:3] \
                or self.video_ids.shape != (n,) \
                or (self.instance is not None and self.instance.shape != self.semantic.shape):
            raise ValueError(f"LabelledSplit arrays disagree: frames {self.frames.shape}, semantic "
                             f"{self.semantic.shape}, video_ids {self.video_ids.shape}, instance "
                             f"{None if self.instance is None else self.instance.shape}")

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class SkipReport:
    """Everything skipped while loading: ``{"path", "kind", "reason"}`` per item."""

    skipped: list[dict] = field(default_factory=list)

    def add(self, path, kind: str, reason: str) -> None:
        self.skipped.append({"path": str(path), "kind": kind, "reason": reason})

    def __len__(self) -> int:
        return len(self.skipped)

    def counts(self) -> dict[str, int]:
        """Number of skipped items per kind (``"no mask"``, ``"size mismatch"``, ...)."""
        return dict(Counter(s["kind"] for s in self.skipped))

    def summary(self, first: int = 5) -> str:
        """Counts by kind, then the first few paths with their reasons."""
        if not self.skipped:
            return "nothing skipped"
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items()))
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in self.skipped[:first])
        more = f"; ... {len(self.skipped) - first} more" if len(self.skipped) > first else ""
        return f"skipped {len(self.skipped)} ({counts}): {shown}{more}"

    def warn(self, what: str) -> None:
        if self.skipped:
            warnings.warn(f"{what}: {self.summary()}", SkippedDataWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# source spec


def parse_source(spec: str) -> tuple[str, Path | None]:
    """``"pushworld"`` -> ("pushworld", None); ``"davis:/x"`` -> ("davis", Path("/x")); same for coco.

    The path is not checked for existence here (a config may be written on a
    machine without the data); the loaders do that. ValueError lists the valid kinds.
    """
    valid = ", ".join(SOURCE_KINDS.values())
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data source must be a non-empty string, got {spec!r}; valid: {valid}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown data source kind {kind!r} in {spec!r}; valid: {valid}")
    if kind == "pushworld":
        if sep:
            raise ValueError(f"data source 'pushworld' takes no path, got {spec!r}; valid: {valid}")
        return kind, None
    if not rest.strip():
        raise ValueError(f"data source {kind!r} needs a path ({SOURCE_KINDS[kind]}), got {spec!r}; "
                         f"valid: {valid}")
    return kind, Path(rest.strip()).expanduser()


# ---------------------------------------------------------------------------
# resizing


def _size2(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    return h, w


def resize_frames(frames: np.ndarray, size) -> np.ndarray:
    """uint8 (H, W, 3) or (N, H, W, 3) -> ``size`` (int S or (H, W)); PIL bilinear, antialiased
    when shrinking. The aspect ratio is not kept."""
    h, w = _size2(size)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        return resize_frames(frames[None], (h, w))[0]
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def resize_labels(labels: np.ndarray, size) -> np.ndarray:
    """Integer maps (H, W) or (N, H, W) -> ``size``, nearest neighbour (PIL), same dtype."""
    h, w = _size2(size)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return resize_labels(labels[None], (h, w))[0]
    if labels.shape[1:3] == (h, w):
        return labels
    if labels.dtype == np.uint8:
        work = labels
    else:
        if labels.size and (labels.min() < np.iinfo(np.int32).min or labels.max() > np.iinfo(np.int32).max):
            raise ValueError("label values do not fit int32")
        work = labels.astype(np.int32)
    out = np.stack([np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)) for m in work])
    return out.astype(labels.dtype, copy=False)


# ---------------------------------------------------------------------------
# DAVIS


def read_davis_semantic(path) -> tuple[np.ndarray, str | None]:
    """A DAVIS mask -> (semantic uint8 (H, W): 0/1, 255 = void; problem or None).

    ``problem`` says why the mask is non-binary (see the module docstring); the
    foreground rule is the one of :func:`~vpe_lib.data.davis.read_davis_mask`.
    """
    mode, arr = open_mask(path)
    if mode == "P":  # DAVIS-2017: instance ids
        sem = (arr > 0).astype(np.uint8)
        sem[arr == 255] = IGNORE
        return sem, None
    if arr.ndim == 3:
        grey = arr[..., :3].max(-1)
    elif arr.dtype == bool:
        grey = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:  # 16-bit greyscale
        top = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else 1.0
        grey = np.clip(np.round(arr.astype(np.float64) * 255.0 / top), 0, 255).astype(np.uint8)
    else:
        grey = arr
    problem = None
    lo, hi = GREY_BAND
    frac = float(((grey >= lo) & (grey <= hi)).mean()) if grey.size else 0.0
    top = int(grey.max()) if grey.size else 0
    if frac > MAX_GREY_FRACTION:
        problem = (f"non-binary mask: {frac:.1%} of its pixels are grey ({lo}..{hi}); at most "
                   f"{MAX_GREY_FRACTION:.0%} is accepted as edge noise (DAVIS-2016 masks are 0/255)")
    elif 0 < top <= 127:
        values = np.unique(grey)
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        problem = (f"non-binary mask: values {{{shown}}}, none above 127 -- a label map, not a 0/255 "
                   f"mask (it would read as all background); save it as 0/255 or as a palette PNG")
    return (grey > 127).astype(np.uint8), problem


def _davis_dirs(root, resolution: str) -> tuple[Path, Path]:
    root = Path(root)
    img_root = root / "JPEGImages" / resolution
    ann_root = root / "Annotations" / resolution
    if not img_root.is_dir():
        raise DataError("DAVIS image folder not found", path=img_root)
    if not ann_root.is_dir():
        raise DataError("DAVIS annotation folder not found", path=ann_root)
    return img_root, ann_root


def davis_sequences(root, resolution: str = "480p") -> list[str]:
    """Sequence folders of ``JPEGImages/<resolution>``, naturally sorted."""
    img_root, _ = _davis_dirs(root, resolution)
    return sorted((d.name for d in img_root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=natural_key)


def _auto_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """(train, val, test) counts: val/test = round(f * n), at least 1 when f > 0; train = the rest."""
    def count(f: float) -> int:
        return 0 if f <= 0 else max(1, int(math.floor(f * n + 0.5)))

    n_val, n_test = count(fractions[1]), count(fractions[2])
    return n - n_val - n_test, n_val, n_test


def resolve_davis_splits(root, splits: Mapping[str, Sequence[str]] | None = None, *,
                         resolution: str = "480p") -> dict[str, list[str]]:
    """Sequence names per split, checked: known split keys, no duplicates, no empty split,
    every sequence present.

    ``splits=None``: the automatic split of the naturally sorted sequence names --
    val and test get ``round(0.2 * n)`` sequences each (at least 1), train the rest;
    train takes the first names, val the next, test the last (4 sequences: 2/1/1).
    Given ``splits`` must have "train" and "test"; "val" is optional.
    """
    img_root, _ = _davis_dirs(root, resolution)
    available = davis_sequences(root, resolution)
    if splits is None:
        n_train, n_val, n_test = _auto_counts(len(available), (0.6, 0.2, 0.2))
        if n_train < 1:
            raise DataError(f"split 'train' would be empty: the automatic train/val/test split needs "
                            f"at least 3 sequences, found {len(available)} ({', '.join(available) or 'none'}); "
                            f"list the sequences per split instead", path=img_root)
        return {"train": available[:n_train], "val": available[n_train:n_train + n_val],
                "test": available[n_train + n_val:]}
    unknown = [k for k in splits if k not in SPLITS]
    if unknown:
        raise DataError(f"unknown split(s) {unknown}; valid: {', '.join(SPLITS)}", field="splits")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        if split not in splits:
            if split != "val":
                raise DataError(f"split {split!r} is empty: no sequence listed for it "
                                f"(train and test are required)", field=f"splits.{split}")
            continue
        names = splits[split]
        if isinstance(names, str):
            names = [names]
        names = [str(s) for s in names]
        if not names:
            raise DataError(f"split {split!r} is empty: no sequence listed for it", field=f"splits.{split}")
        for name in names:
            if name in seen:
                where = f"twice in split {split!r}" if seen[name] == split else \
                    f"in split {seen[name]!r} and in split {split!r}"
                raise DataError(f"sequence {name!r} is listed twice: {where} (splits are by video)",
                                field=f"splits.{split}")
            seen[name] = split
            if not (img_root / name).is_dir():
                raise DataError(f"sequence {name!r} of split {split!r} not found; available: "
                                f"{', '.join(available) or 'none'}", path=img_root / name)
        out[split] = names
    return out


def _frame_files(seq_dir: Path) -> list[Path]:
    return sorted((p for p in seq_dir.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


def _reason(e: Exception) -> str:
    """A DataError's message without the path prefix it already carries."""
    msg = str(e)
    path = getattr(e, "path", None)
    return msg[len(path) + 2:] if path and msg.startswith(f"{path}: ") else msg


def _load_davis_frame(img: Path, ann: Path, size, report: SkipReport):
    """(frame, semantic) resized, or None after recording why in ``report``."""
    if not ann.is_file():
        report.add(img, "no mask", f"frame has no mask (expected {ann})")
        return None
    try:
        isz = _image_size(img)
    except DataError as e:
        report.add(img, "unreadable image", f"frame: {_reason(e)}")
        return None
    try:
        asz = _image_size(ann)
    except DataError as e:
        report.add(ann, "unreadable image", f"mask: {_reason(e)}")
        return None
    if isz != asz:
        report.add(ann, "size mismatch", f"mask is {asz[0]}x{asz[1]} but its frame {img.name} is "
                                         f"{isz[0]}x{isz[1]} (W x H)")
        return None
    try:
        rgb = read_rgb(img)
    except DataError as e:
        report.add(img, "unreadable image", f"frame: {_reason(e)}")
        return None
    try:
        sem, problem = read_davis_semantic(ann)
    except DataError as e:
        report.add(ann, "unreadable image", f"mask: {_reason(e)}")
        return None
    if problem is not None:
        report.add(ann, "non-binary mask", problem)
        return None
    if sem.shape != rgb.shape[:2]:  # the headers said otherwise
        report.add(ann, "size mismatch", f"mask shape {sem.shape} != frame {img.name} {rgb.shape[:2]}")
        return None
    return resize_frames(rgb, size), resize_labels(sem, size)


def _stride_of(frame_stride, split: str) -> int:
    k = frame_stride.get(split, 1) if isinstance(frame_stride, Mapping) else frame_stride
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"frame_stride must be an int >= 1 (or a dict of them per split), got {k!r}")
    return int(k)


def _stack_split(frames: list, sems: list, vids: list, names: list[str], size, instances=None, *,
                 items: list[dict] | None = None, meta: dict | None = None):
    h, w = _size2(size)
    return LabelledSplit(
        items=items, meta=meta or {},
        frames=np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8),
        semantic=np.stack(sems) if sems else np.zeros((0, h, w), np.uint8),
        video_ids=np.asarray(vids, np.int64),
        names=names,
        instance=None if instances is None else
        (np.stack(instances).astype(np.int32) if instances else np.zeros((0, h, w), np.int32)))


def load_davis_splits(root, *, size: int, splits: Mapping[str, Sequence[str]] | None = None,
                      frame_stride: int | Mapping[str, int] = 1, resolution: str = "480p"
                      ) -> tuple[dict[str, LabelledSplit], SkipReport, list[str]]:
    """DAVIS sequences -> labelled stills per split, foreground (1) / background (0).

    ``splits``: split name -> sequence names (see :func:`resolve_davis_splits`;
    None = the automatic split). ``frame_stride``: every k-th frame of each
    sequence (an int, or a dict per split, missing splits 1). ``names`` of a
    split are its sequences that kept at least one frame; ``video_ids`` index them.
    """
    img_root, ann_root = _davis_dirs(root, resolution)
    per_split = resolve_davis_splits(root, splits, resolution=resolution)
    report = SkipReport()
    out: dict[str, LabelledSplit] = {}
    for split, seqs in per_split.items():
        stride = _stride_of(frame_stride, split)
        frames, sems, vids, names, items = [], [], [], [], []
        n_tried = 0
        for seq in seqs:
            files = _frame_files(img_root / seq)
            if not files:
                report.add(img_root / seq, "no frames", f"sequence {seq!r} has no frame images "
                                                       f"({', '.join(FRAME_EXTENSIONS)})")
                continue
            kept = 0
            for img in files[::stride]:
                n_tried += 1
                item = _load_davis_frame(img, ann_root / seq / (img.stem + ".png"), size, report)
                if item is None:
                    continue
                frames.append(item[0])
                sems.append(item[1])
                vids.append(len(names))
                items.append({"sequence": seq, "frame": img.stem, "annotation": str(ann_root / seq / (img.stem + ".png"))})
                kept += 1
            if kept:
                names.append(seq)
        if not frames:
            raise DataError(f"split {split!r} is empty: all {n_tried} frames of its sequences "
                            f"({', '.join(seqs)}) were skipped -- {report.summary()}", path=img_root)
        out[split] = _stack_split(frames, sems, vids, names, size, items=items)
    report.warn(f"DAVIS {root}")
    return out, report, list(DAVIS_CLASSES)


# ---------------------------------------------------------------------------
# COCO


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


# ---------------------------------------------------------------------------
# from a DataConfig


def real_image_size(cfg_data) -> int:
    """The side S real frames are resized to: ``data.image_size``, or 0 -> the world's height."""
    s = int(getattr(cfg_data, "image_size", 0) or 0)
    return s if s > 0 else int(cfg_data.world.height)


def davis_splits_from_config(cfg_data) -> dict[str, tuple[str, ...]] | None:
    """``data.davis_train/val/test`` -> a splits dict (None when all empty = automatic; empty val left out)."""
    given = {k: tuple(getattr(cfg_data, f"davis_{k}", ()) or ()) for k in SPLITS}
    if not any(given.values()):
        return None
    return {k: v for k, v in given.items() if v or k != "val"}


def load_labelled_splits(cfg_data, *, frame_stride: int | Mapping[str, int] = 1, size: int | None = None
                         ) -> tuple[dict[str, LabelledSplit], SkipReport, list[str]]:
    """The labelled splits of ``data.source`` (davis or coco) at ``size`` (default :func:`real_image_size`)."""
    kind, path = parse_source(cfg_data.source)
    size = real_image_size(cfg_data) if size is None else size
    if kind == "davis":
        return load_davis_splits(path, size=size, splits=davis_splits_from_config(cfg_data),
                                 frame_stride=frame_stride,
                                 resolution=getattr(cfg_data, "davis_resolution", "480p"))
    if kind == "coco":
        return load_coco_splits(path, size=size, fractions=getattr(cfg_data, "coco_fractions", (0.6, 0.2, 0.2)),
                                seed=int(cfg_data.seed), image_dir=getattr(cfg_data, "coco_image_dir", "") or None)
    raise ValueError("data.source 'pushworld': the labelled frames come from the data stage's "
                     "PushWorldStore (samplers.labelled_frames), not from load_labelled_splits")


# ---------------------------------------------------------------------------
# pretraining clips from DAVIS sequences


class InMemoryClipSource:
    """A :class:`~vpe_lib.data.clips.ClipSource` over decoded videos held in memory.

    ``videos``: name -> uint8 (T, H, W, 3), all the same H, W. ``read_clip`` is a
    slice (no decoding during training).
    """

    kind = "memory"

    def __init__(self, videos: Mapping[str, np.ndarray], *, name: str, root=None,
                 skipped: Sequence[tuple[str, str]] = ()):
        self.name = name
        self.root = Path(root) if root is not None else None
        self.skipped: list[tuple[str, str]] = list(skipped)
        self._ids = list(videos)
        self._videos = [np.ascontiguousarray(videos[k]) for k in self._ids]
        if not self._videos:
            raise DataError(f"no usable video for {name}", path=root)
        shapes = {v.shape[1:] for v in self._videos}
        if len(shapes) != 1 or any(v.ndim != 4 or v.dtype != np.uint8 for v in self._videos):
            raise ValueError(f"videos must be uint8 (T, H, W, 3) of one size, got {sorted(shapes)}")

    def __len__(self) -> int:
        return len(self._videos)

    def num_frames(self, i: int) -> int:
        return len(self._videos[i])

    def video_id(self, i: int) -> str:
        return self._ids[i]

    def read_clip(self, i: int, start: int, length: int) -> np.ndarray:
        if not 0 <= i < len(self._videos):
            raise IndexError(f"video {i} out of range for {len(self._videos)} videos of {self.name}")
        n = len(self._videos[i])
        if length < 1 or start < 0 or start + length > n:
            raise IndexError(f"clip [{start}, {start + length}) out of range for {n} frames of {self._ids[i]}")
        return self._videos[i][start:start + length].copy()

    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._videos)

    def __repr__(self) -> str:
        return f"InMemoryClipSource({self.name!r}, videos={len(self)}, skipped={len(self.skipped)})"


def davis_clip_source(root, sequences: Sequence[str], *, size: int, resolution: str = "480p",
                      frame_stride: int = 1, min_frames: int = 1) -> InMemoryClipSource:
    """Clips from the frames of some DAVIS sequences (no masks needed), resized to size x size.

    Each ``JPEGImages/<resolution>/<seq>`` folder is read with
    :class:`~vpe_lib.data.clips.FrameFolderSource` (``on_error="raise"``), every
    ``frame_stride``-th frame kept, decoded and resized once and held in memory.
    A sequence with an unreadable frame or fewer than ``min_frames`` frames is
    skipped whole (a clip must be consecutive frames) and listed in ``.skipped``
    with one :class:`SkippedDataWarning`; none usable -> DataError.
    """
    from .clips import FrameFolderSource

    frame_stride = _stride_of(frame_stride, "train")
    img_root, _ = _davis_dirs(root, resolution)
    videos: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    for seq in sequences:
        seq_dir = img_root / seq
        if not seq_dir.is_dir():
            raise DataError(f"sequence {seq!r} not found", path=seq_dir)
        files = _frame_files(seq_dir)
        if not files:
            skipped.append((str(seq_dir), "no frames"))
            continue
        try:
            src = FrameFolderSource(seq_dir, pattern="*" + files[0].suffix, size=(size, size),
                                    on_error="raise", verify="header")
            # one frame at a time: only the kept frames are decoded, never a whole full-res sequence
            video = np.stack([src.read_clip(0, t, 1)[0] for t in range(0, src.num_frames(0), frame_stride)])
        except DataError as e:
            skipped.append((e.path or str(seq_dir), _reason(e)))
            continue
        if len(video) < min_frames:
            skipped.append((str(seq_dir), f"only {len(video)} frames (< min_frames={min_frames})"))
            continue
        videos[seq] = video
    if skipped:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        warnings.warn(f"DAVIS clips: skipped {len(skipped)} of {len(sequences)} sequences: {shown}",
                      SkippedDataWarning, stacklevel=2)
    if not videos:
        raise DataError(f"no usable sequence among {', '.join(sequences)}", path=img_root)
    return InMemoryClipSource(videos, name=f"davis:{Path(root).name}", root=img_root, skipped=skipped)


def pretraining_clip_source(cfg_data, *, split_names: Sequence[str] = ("train",), size: int | None = None,
                            frame_stride: int = 1, min_frames: int = 1) -> InMemoryClipSource:
    """Clips for tokenizer pretraining from the frames of the DAVIS sequences of ``split_names``.

    The sequences are those of :func:`resolve_davis_splits` for the config's
    ``davis_train/val/test`` (or the automatic split), so pretraining on
    ``("train",)`` never sees a val/test sequence. ``size`` defaults to
    :func:`real_image_size`. Feed it to ``RealClipBatches(source, clip_frames=...,
    batch_size=..., seed=...)``. Only ``davis:`` sources have videos.
    """
    kind, path = parse_source(cfg_data.source)
    if kind != "davis":
        raise ValueError(f"pretraining clips from data.source {cfg_data.source!r}: only 'davis:<root>' "
                         f"sources have videos (pushworld pretrains on its store; COCO has stills)")
    resolution = getattr(cfg_data, "davis_resolution", "480p")
    per_split = resolve_davis_splits(path, davis_splits_from_config(cfg_data), resolution=resolution)
    unknown = [s for s in split_names if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; valid: {', '.join(SPLITS)}")
    seqs = [seq for s in split_names for seq in per_split.get(s, [])]
    if not seqs:
        raise DataError(f"split(s) {list(split_names)} list no sequence", path=path)
    return davis_clip_source(path, seqs, size=real_image_size(cfg_data) if size is None else size,
                             resolution=resolution, frame_stride=frame_stride, min_frames=min_frames)
