"""The study's data source, chosen by a parameter (``data.source``): which kind it is, and its labelled
still frames (the loaders live in ``davis_splits``, ``coco_splits``; the shared types in ``labelled``).

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

from pathlib import Path
from typing import Mapping, Sequence

from .clips import InMemoryClipSource
from .coco import IGNORE
from .coco_splits import load_coco_splits
from .davis_splits import (DAVIS_CLASSES, davis_clip_source, davis_sequences, load_davis_splits,
                           read_davis_semantic, resolve_davis_splits)
from .errors import DataError
from .labelled import SPLITS, LabelledSplit, SkippedDataWarning, SkipReport, resize_labels
from .frames import resize_frames

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


def pretraining_clip_source(cfg_data, *, split_names: Sequence[str] = ("train",), size: int | None = None,
                            frame_stride: int = 1, min_frames: int = 1) -> InMemoryClipSource:
    """Clips for tokenizer pretraining from the frames of the DAVIS sequences of ``split_names``.

    The sequences are those of :func:`resolve_davis_splits` for the config's
    ``davis_train/val/test`` (or the automatic split), so pretraining on
    ``("train",)`` never sees a val/test sequence. ``size`` defaults to
    :func:`real_image_size`. Feed it to ``clip_batches.RealClipBatches(source, clip_frames=...,
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
