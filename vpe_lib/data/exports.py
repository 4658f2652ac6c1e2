"""Write PushWorld videos in standard formats: COCO instances, DAVIS, H.264 mp4.

Each video is ``(video_id, arrays)`` with the generator's conventions:

* ``frames``   uint8 (T, H, W, 3)
* ``instance`` uint8 (T, H, W): 0 = background, 1 = arm, 2.. = objects
* ``semantic`` uint8 (T, H, W): index into ``CLASS_NAMES``

so that tools written for real data (pycocotools/COCOeval, DAVIS evaluation
code, anything that reads mp4) run unchanged on the synthetic data, and the
project's own readers (:mod:`.coco`, :mod:`.davis`, :mod:`.video`) can be
tested by round-trip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from .errors import DataError
from .video import export_mp4

__all__ = ["export_coco", "export_davis", "export_mp4", "davis_palette", "mask_to_rle"]


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary (H, W) mask -> COCO compressed RLE with ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _check_video(video_id: str, arrays: Mapping[str, np.ndarray], keys: Sequence[str]
                 ) -> dict[str, np.ndarray]:
    out = {}
    for k in keys:
        if k not in arrays:
            raise DataError(f"video {video_id!r} has no {k!r} array", field=k)
        out[k] = np.asarray(arrays[k])
    f = out.get("frames")
    if f is not None and (f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8):
        raise DataError(f"video {video_id!r}: frames must be uint8 (T, H, W, 3), "
                        f"got {f.dtype} {f.shape}", field="frames")
    ref = f.shape[:3] if f is not None else None
    for k in ("instance", "semantic"):
        a = out.get(k)
        if a is None:
            continue
        if a.ndim != 3 or a.dtype != np.uint8:
            raise DataError(f"video {video_id!r}: {k} must be uint8 (T, H, W), "
                            f"got {a.dtype} {a.shape}", field=k)
        if ref is None:
            ref = a.shape
        elif a.shape != ref:
            raise DataError(f"video {video_id!r}: {k} shape {a.shape} != frames {ref}", field=k)
    return out


def _save_image(rgb: np.ndarray, path: Path, fmt: str, quality: int) -> None:
    im = Image.fromarray(rgb)
    if fmt == "png":
        im.save(path, format="PNG")
    else:
        # 4:4:4 keeps thin coloured edges; DAVIS/COCO readers accept either.
        im.save(path, format="JPEG", quality=quality, subsampling=0)


# ---------------------------------------------------------------------------
# COCO


def export_coco(videos: Iterable[tuple[str, Mapping[str, np.ndarray]]], out_dir, *,
                class_names: Sequence[str], frame_stride: int = 1,
                image_format: str = "png", quality: int = 95,
                ann_name: str = "instances.json") -> Path:
    """Write still frames + one COCO instance-segmentation json.

    Layout: ``out_dir/images/<video_id>_<t:02d>.png`` (or ``.jpg`` with
    ``image_format="jpeg"``; PNG by default so masks and pixels match exactly)
    and ``out_dir/annotations/<ann_name>``.

    * images: id (1..), file_name, height, width, video_id (str), frame_index
    * categories: id = semantic id, name = class_names[id], for ids 1.. (the
      arm and the shape classes; 0 = background gets no category)
    * annotations: one per instance id > 0 present in a frame; segmentation
      is compressed RLE (counts str); category_id is the semantic class
      under the instance (majority vote; an instance lying on background
      semantics is an error); iscrowd 0.

    Returns the annotation json path.
    """
    from pycocotools import mask as mask_utils

    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    ann_dir = out_dir / "annotations"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    ext = "png" if image_format == "png" else "jpg"
    ncls = len(class_names)

    images, annotations, video_list = [], [], []
    seen = set()
    for video_id, arrays in videos:
        video_id = str(video_id)
        if video_id in seen:
            raise DataError(f"duplicate video_id {video_id!r}", field="video_id")
        seen.add(video_id)
        a = _check_video(video_id, arrays, ("frames", "instance", "semantic"))
        frames, inst, sem = a["frames"], a["instance"], a["semantic"]
        if sem.max(initial=0) >= ncls:
            raise DataError(f"video {video_id!r}: semantic id {int(sem.max())} >= "
                            f"len(class_names)={ncls}", field="semantic")
        video_list.append({"id": len(video_list) + 1, "name": video_id,
                           "length": int(frames.shape[0])})
        T, H, W = inst.shape
        for t in range(0, T, frame_stride):
            image_id = len(images) + 1
            file_name = f"{video_id}_{t:02d}.{ext}"
            _save_image(frames[t], img_dir / file_name, image_format, quality)
            images.append({"id": image_id, "file_name": file_name, "height": H, "width": W,
                           "video_id": video_id, "frame_index": t})
            for k in np.unique(inst[t]):
                if k == 0:
                    continue
                m = inst[t] == k
                votes = np.bincount(sem[t][m], minlength=ncls)
                cat = int(votes.argmax())
                if cat == 0:
                    raise DataError(f"video {video_id!r} frame {t}: instance {int(k)} lies on "
                                    "background semantics", field="semantic")
                rle = mask_to_rle(m)
                # one RLE per call: pycocotools 2.0.11 + numpy 2 overflows on lists >= 256
                bbox = [float(x) for x in mask_utils.toBbox(rle)]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                    "segmentation": rle, "area": float(m.sum()), "bbox": bbox,
                    "iscrowd": 0, "instance_id": int(k),
                })
    categories = [{"id": i, "name": str(class_names[i]), "supercategory": "pushworld"}
                  for i in range(1, ncls)]
    dataset = {
        "info": {"description": "PushWorld export (vpe_lib.data.exports.export_coco)",
                 "version": "1.0"},
        "licenses": [],
        "videos": video_list,
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    ann_path = ann_dir / ann_name
    ann_path.write_text(json.dumps(dataset))
    return ann_path


# ---------------------------------------------------------------------------
# DAVIS


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS annotations (the PASCAL VOC colour map)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def export_davis(videos: Iterable[tuple[str, Mapping[str, np.ndarray]]], out_dir, *,
                 quality: int = 95, resolution: str = "480p", instance_masks: bool = False,
                 split: str = "val", year: str = "2017") -> Path:
    """Write the DAVIS layout.

    ``JPEGImages/<resolution>/<seq>/00000.jpg`` (JPEG, ``quality``),
    ``Annotations/<resolution>/<seq>/00000.png`` and
    ``ImageSets/<year>/<split>.txt`` (one sequence name per line).

    Masks: by default DAVIS-2016 style binary foreground (``instance > 0``)
    as 8-bit greyscale 0/255; with ``instance_masks=True`` DAVIS-2017 style
    palette PNGs whose pixel values are the instance ids. The resolution
    folder keeps the name "480p" by default although PushWorld frames are
    64x64, because DAVIS tools look for that folder.
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    names = []
    palette = davis_palette()
    for seq, arrays in videos:
        seq = str(seq)
        if seq in names:
            raise DataError(f"duplicate sequence name {seq!r}", field="video_id")
        a = _check_video(seq, arrays, ("frames", "instance"))
        img_dir = out_dir / "JPEGImages" / resolution / seq
        ann_dir = out_dir / "Annotations" / resolution / seq
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for t, (rgb, inst) in enumerate(zip(a["frames"], a["instance"])):
            _save_image(rgb, img_dir / f"{t:05d}.jpg", "jpeg", quality)
            if instance_masks:
                # frombytes keeps the raw ids as palette indices (no colour quantisation)
                im = Image.frombytes("P", (inst.shape[1], inst.shape[0]),
                                     np.ascontiguousarray(inst).tobytes())
                im.putpalette(palette)
            else:
                im = Image.fromarray(((inst > 0) * 255).astype(np.uint8))
            im.save(ann_dir / f"{t:05d}.png", format="PNG")
        names.append(seq)
    sets = out_dir / "ImageSets" / year
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return out_dir
