"""Encode and decode mp4 with PyAV, and read the codec's own motion vectors.

Why codec motion vectors: H.264 already estimated, for every inter-coded
block, where its content came from in the reference frame. Reading them costs
~0.05 ms per frame (vs. an optical-flow network), which makes them a cheap
signal for motion-guided masking.

Motion-vector facts (checked against PyAV 18.1 / its bundled FFmpeg):

* Decoding must be asked to export them:
  ``stream.codec_context.options = {"flags2": "+export_mvs"}`` (set before
  the first packet is decoded).
* ``frame.side_data.get("MOTION_VECTORS")`` is ``None`` on I-frames, else an
  ``av.sidedata.motionvectors.MotionVectors``; ``.to_ndarray()`` gives a
  structured array with fields ``source, w, h, src_x, src_y, dst_x, dst_y,
  flags, motion_x, motion_y, motion_scale``.
* ``dst_x, dst_y`` is the *centre* of a ``w x h`` block of the current frame;
  ``src = dst + motion / motion_scale`` is where its content sits in the
  reference frame; ``source`` is -1 for a past and +1 for a future reference.
  So the velocity (pixels per frame) of the content arriving at the block is
  ``sign(source) * motion / motion_scale`` (= dst - src for a past reference).
* Intra blocks inside P-frames get no vector (their velocity stays 0 here).
* Magnitudes equal per-frame velocity only when each P-frame references the
  previous frame: encode with B-frames off and one reference (``bf=0``,
  ``refs=1``), as :func:`export_mp4` does. Real clips (e.g. with B-frames or
  several references) give vectors whose direction is right but whose
  magnitude spans the distance to whichever frame was referenced.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from .errors import DataError

__all__ = [
    "export_mp4",
    "read_video",
    "video_info",
    "iter_motion_vectors",
    "read_motion_vectors",
    "VideoInfo",
    "block_velocities",
    "motion_field",
]


def _av():
    import av  # local import: keeps `import vpe_lib.data` cheap

    return av


# ---------------------------------------------------------------------------
# encode


def export_mp4(frames: np.ndarray, path, *, fps: float = 10, crf: int = 18,
               odd_size: str = "pad", faststart: bool = False) -> Path:
    """Write ``frames`` (T, H, W, 3) uint8 RGB as H.264 mp4 (yuv420p).

    B-frames are off and each P-frame references only the previous frame
    (``bf=0, refs=1``), so the codec's motion vectors are true per-frame
    velocities (see module docstring). yuv420p needs even width and height:
    with ``odd_size="pad"`` (default) an odd dimension is padded by repeating
    the last row/column (the decoded video is then one pixel larger there);
    with ``odd_size="error"`` a :class:`DataError` is raised.
    ``faststart=True`` puts the index (moov atom) first, for streaming in a
    browser (the HTML report).
    """
    av = _av()
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}",
                        path=path, field="frames")
    if len(frames) == 0:
        raise DataError("no frames to encode", path=path, field="frames")
    T, H, W, _ = frames.shape
    pad_h, pad_w = H % 2, W % 2
    if pad_h or pad_w:
        if odd_size == "error":
            raise DataError(f"H.264 yuv420p needs even height and width, got {H}x{W}",
                            path=path, field="frames")
        if odd_size != "pad":
            raise ValueError(f"odd_size must be 'pad' or 'error', got {odd_size!r}")
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=opts) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = W + pad_w
        stream.height = H + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "bf": "0", "refs": "1"}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------
# decode


class VideoInfo(NamedTuple):
    width: int
    height: int
    num_frames: int  # as declared by the container (0 if unknown)
    fps: float
    codec: str


def _open(path):
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise DataError("video file not found", path=path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot open video (corrupt, truncated or not a video): {e}",
                        path=path) from e
    if not container.streams.video:
        container.close()
        raise DataError("file has no video stream", path=path)
    return container


def video_info(path) -> VideoInfo:
    """Size, declared frame count, frame rate and codec of the first video stream."""
    with _open(path) as container:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or 0
        return VideoInfo(int(s.codec_context.width), int(s.codec_context.height),
                         int(s.frames or 0), float(rate), s.codec_context.name)


def _decode(path, container, stream) -> Iterator:
    """Yield decoded frames, turning FFmpeg errors into DataError naming ``path``."""
    av = _av()
    n = 0
    try:
        for frame in container.decode(stream):
            n += 1
            yield frame
    except av.error.FFmpegError as e:
        raise DataError(f"video is corrupt or truncated (after {n} frames): {e}",
                        path=path) from e
    declared = int(stream.frames or 0)
    if n == 0:
        raise DataError("no frame could be decoded (corrupt or truncated video)", path=path)
    if declared and n < declared:
        raise DataError(f"video is truncated: decoded {n} of {declared} declared frames",
                        path=path)


def read_video(path, *, size: tuple[int, int] | None = None, stride: int = 1,
               max_frames: int | None = None) -> np.ndarray:
    """Decode a video to uint8 RGB (T, H, W, 3).

    ``size=(H, W)`` resizes each frame (bilinear, by FFmpeg's swscale);
    ``stride`` keeps every stride-th frame; ``max_frames`` stops after that
    many *returned* frames (decoding stops early, so a long 1080p clip is
    cheap to sample). A corrupt, truncated or non-video file raises
    :class:`DataError` naming the path.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    path = Path(path)
    out = []
    kw = {}
    if size is not None:
        kw = {"height": int(size[0]), "width": int(size[1]), "interpolation": "BILINEAR"}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(_decode(path, container, stream)):
            if i % stride:
                continue
            out.append(frame.to_ndarray(format="rgb24", **kw))
            if max_frames is not None and len(out) >= max_frames:
                break
    if not out:
        raise DataError("no frame decoded", path=path)
    return np.stack(out)


# ---------------------------------------------------------------------------
# motion vectors


def _picture_type_name(value) -> str:
    # PyAV 18 gives pict_type as a plain int; av.video.frame.PictureType names it.
    from av.video.frame import PictureType

    try:
        return PictureType(int(value)).name
    except (ValueError, TypeError):
        return str(value)


def iter_motion_vectors(path, *, max_frames: int | None = None
                        ) -> Iterator[tuple[int, str, int, int, np.ndarray | None]]:
    """Yield ``(frame_index, pict_type, height, width, vectors)`` per decoded frame.

    ``vectors`` is PyAV's structured array (see module docstring), or ``None``
    when the frame has no motion vectors (I-frames). ``pict_type`` is "I",
    "P", "B", ... .
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        # export_mvs is a decoder flag: it must be set before decoding starts.
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for i, frame in enumerate(_decode(path, container, stream)):
            if max_frames is not None and i >= max_frames:
                break
            sd = frame.side_data.get("MOTION_VECTORS")
            vec = None if sd is None else np.array(sd.to_ndarray())  # copy: buffer dies with frame
            pt = _picture_type_name(frame.pict_type)
            yield i, pt, frame.height, frame.width, vec


def block_velocities(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block velocity (vx, vy) in pixels/frame: ``sign(source) * motion / motion_scale``."""
    scale = np.maximum(vectors["motion_scale"].astype(np.float32), 1.0)
    sign = np.sign(vectors["source"]).astype(np.float32)
    return (sign * vectors["motion_x"].astype(np.float32) / scale,
            sign * vectors["motion_y"].astype(np.float32) / scale)


def motion_field(vectors: np.ndarray | None, height: int, width: int,
                 cell: int = 4, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Paint block vectors into a (ceil(H/cell), ceil(W/cell), 2) float32 grid.

    Channel 0 is x (rightward) velocity, channel 1 is y (downward) velocity,
    in pixels per frame (:func:`block_velocities`, minus ``offset``). Cells
    without a vector (intra blocks, I-frames) are 0. H.264's smallest
    partition is 4x4, so ``cell=4`` loses nothing.
    """
    gh, gw = -(-height // cell), -(-width // cell)
    grid = np.zeros((gh, gw, 2), np.float32)
    if vectors is None or len(vectors) == 0:
        return grid
    v = vectors
    vx, vy = block_velocities(v)
    vx, vy = vx - offset[0], vy - offset[1]
    # block spans [dst - w/2, dst + w/2) (dst is the block centre)
    x0 = v["dst_x"].astype(np.int64) - v["w"].astype(np.int64) // 2
    y0 = v["dst_y"].astype(np.int64) - v["h"].astype(np.int64) // 2
    x1 = x0 + v["w"].astype(np.int64)
    y1 = y0 + v["h"].astype(np.int64)
    cx0 = np.clip(x0 // cell, 0, gw)
    cy0 = np.clip(y0 // cell, 0, gh)
    cx1 = np.clip(-(-x1 // cell), 0, gw)
    cy1 = np.clip(-(-y1 // cell), 0, gh)
    for a, b, c, d, u, w in zip(cy0, cy1, cx0, cx1, vx, vy):
        grid[a:b, c:d, 0] = u
        grid[a:b, c:d, 1] = w
    return grid


def read_motion_vectors(path, *, size: tuple[int, int] | None = None,
                        block_size: int | None = None, stride: int = 1,
                        max_frames: int | None = None,
                        subtract_median: bool = False) -> np.ndarray:
    """Codec motion vectors as a dense float32 field (T, H', W', 2) of (vx, vy).

    Velocity (pixels/frame, at the video's own resolution unless ``size``) of
    the content arriving at each pixel from the reference frame; 0 on I-frames
    and intra blocks. Frame t's vector refers to frame t-1 only when the video
    was encoded with ``bf=0, refs=1`` (:func:`export_mp4`).

    * ``size=(H, W)``: resample the field (nearest) and scale the vectors
      to that resolution (vx * W/W0, vy * H/H0).
    * ``block_size=b``: instead of per-pixel, return one vector per b x b
      block (mean over the block), shape (T, ceil(H/b), ceil(W/b), 2).
    * ``stride``/``max_frames`` as in :func:`read_video` (``max_frames``
      counts returned frames; vectors are still per decoded frame, not
      accumulated over the stride).
    * ``subtract_median``: subtract each P-frame's median vector over the
      blocks that have one, cancelling a camera pan.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    fields = []
    for i, _pt, h0, w0, vec in iter_motion_vectors(path):
        if i % stride:
            continue
        offset = (0.0, 0.0)
        if subtract_median and vec is not None and len(vec):
            vx, vy = block_velocities(vec)
            offset = (float(np.median(vx)), float(np.median(vy)))
        cell = 4
        grid = motion_field(vec, h0, w0, cell, offset)
        H, W = (h0, w0) if size is None else (int(size[0]), int(size[1]))
        # nearest sampling of the cell grid at output pixel centres
        ys = np.minimum(((np.arange(H) + 0.5) * h0 / H // cell).astype(np.int64), grid.shape[0] - 1)
        xs = np.minimum(((np.arange(W) + 0.5) * w0 / W // cell).astype(np.int64), grid.shape[1] - 1)
        field = grid[ys[:, None], xs[None, :]]
        if size is not None:
            field = field * np.array([W / w0, H / h0], np.float32)
        if block_size is not None:
            b = int(block_size)
            gh, gw = -(-H // b), -(-W // b)
            padded = np.zeros((gh * b, gw * b, 2), np.float32)
            padded[:H, :W] = field
            cnt = np.zeros((gh * b, gw * b, 1), np.float32)
            cnt[:H, :W] = 1
            field = (padded.reshape(gh, b, gw, b, 2).sum((1, 3))
                     / cnt.reshape(gh, b, gw, b, 1).sum((1, 3)))
        fields.append(field.astype(np.float32))
        if max_frames is not None and len(fields) >= max_frames:
            break
    return np.stack(fields)
