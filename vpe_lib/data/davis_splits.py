"""DAVIS sequences as labelled stills (`load_davis_splits`) and as pretraining clips (`davis_clip_source`):
the layout ``JPEGImages/<res>/<seq>/*.jpg`` + ``Annotations/<res>/<seq>/*.png`` (2016 greyscale 0/255 or
2017 palette masks), split by sequence (`resolve_davis_splits`). What is skipped and what raises, and the
non-binary mask rule, are in `seg_sources`' docstring."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .clips import FrameFolderSource, InMemoryClipSource
from .coco import IGNORE
from .davis import _image_size, open_mask
from .errors import DataError
from .frames import natural_key, read_rgb, resize_frames
from .labelled import (FRAME_EXTENSIONS, SPLITS, LabelledSplit, SkippedDataWarning, SkipReport, _auto_counts, _reason, _stack_split,
                       _stride_of, resize_labels)

DAVIS_CLASSES = ["background", "foreground"]

# non-binary rule for DAVIS-2016 greyscale masks (see seg_sources' docstring)
GREY_BAND = (64, 191)
MAX_GREY_FRACTION = 0.02




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
