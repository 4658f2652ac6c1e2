"""Figures and animations for the notebooks (matplotlib + inline GIFs).

Kept here rather than in the notebooks so that tests reach them. GIFs are
embedded as base64 `<img>` tags: they animate in the static HTML report with
no kernel and no JavaScript.
"""

from __future__ import annotations

from typing import Sequence

import base64
import io

import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter
import numpy as np
from PIL import Image

# One colour per instance / class id (0 = background is dark grey).
PALETTE = np.array(
    [[40, 40, 40], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]],
    dtype=np.uint8,
)


def colourise(labels: np.ndarray) -> np.ndarray:
    """Integer label maps (..., H, W) -> RGB uint8 (..., H, W, 3)."""
    return PALETTE[np.asarray(labels) % len(PALETTE)]


def flow_to_rgb(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
    """Optical flow (..., H, W, 2) as colour: hue = direction, brightness = magnitude."""
    flow = np.asarray(flow, dtype=np.float32)
    mag = np.linalg.norm(flow, axis=-1)
    ang = (np.arctan2(flow[..., 1], flow[..., 0]) + np.pi) / (2 * np.pi)
    scale = max_mag or max(float(np.percentile(mag, 99)), 1e-6)
    value = np.clip(mag / scale, 0, 1)
    # HSV -> RGB with saturation 1
    h6 = ang * 6.0
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p, q, t = np.zeros_like(value), value * (1 - f), value * f
    table = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    rgb = np.zeros(flow.shape[:-1] + (3,), np.float32)
    for k, (r, g, b) in enumerate(table):
        sel = i == k
        rgb[sel] = np.stack([r[sel], g[sel], b[sel]], -1)
    return (rgb * 255).astype(np.uint8)


def overlay(frames: np.ndarray, mask: np.ndarray, colour=(255, 40, 40), alpha: float = 0.5) -> np.ndarray:
    """Blend a boolean mask onto uint8 frames."""
    out = frames.astype(np.float32)
    m = np.asarray(mask, bool)[..., None]
    out = np.where(m, (1 - alpha) * out + alpha * np.array(colour, np.float32), out)
    return out.astype(np.uint8)


def gif_html(frames: np.ndarray, *, scale: int = 3, fps: int = 8, title: str = "") -> str:
    """An animated GIF of uint8 frames (T, H, W, 3) as an inline <img> tag."""
    frames = np.asarray(frames, dtype=np.uint8)
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    data = base64.b64encode(buf.getvalue()).decode()
    caption = f"<figcaption>{title}</figcaption>" if title else ""
    return f'<figure style="display:inline-block;margin:4px"><img src="data:image/gif;base64,{data}"/>{caption}</figure>'


def hstack_videos(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """Place videos (T, H, W, 3) side by side with a white gap, for one GIF."""
    t, h = videos[0].shape[:2]
    spacer = np.full((t, h, gap, 3), 255, np.uint8)
    parts = []
    for v in videos:
        parts += [np.asarray(v, np.uint8), spacer]
    return np.concatenate(parts[:-1], axis=2)


def image_grid(rows: list[list[np.ndarray]], *, row_titles=None, col_titles=None, size: float = 1.4):
    """A matplotlib figure of images (each HxW or HxWx3), rows x columns."""
    n_r, n_c = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_r, n_c, figsize=(size * n_c, size * n_r), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_c):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            else:
                ax.axis("off")
            if col_titles and i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
            if row_titles and j == 0 and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def rate_distortion(reference: dict, points: dict[str, tuple[float, float, float]], ax=None):
    """PSNR against bits per pixel: the JPEG curve and resampling baselines of
    `vpe_lib.eval.rate_distortion.rate_distortion_reference`, and tokenizers as
    ``{name: (nominal bpp, entropy bpp, psnr_db)}`` (a filled marker at the nominal rate, a
    hollow one at the entropy rate, joined)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    jpeg = reference["jpeg"]
    ax.plot([p["bits_per_pixel"] for p in jpeg], [p["psnr_db"] for p in jpeg], "s-", color="0.45",
            label="JPEG, per frame (scan bits)")
    for (name, db), style in zip(reference["resample_psnr_db"].items(), (":", "--")):
        ax.axhline(db, color="0.6", linestyle=style, label=f"area down {name} + bicubic up (unquantised)")
    for i, (name, (nominal, entropy, db)) in enumerate(points.items()):
        colour = f"C{i}"
        ax.plot([entropy, nominal], [db, db], "-", color=colour, alpha=0.6)
        ax.plot(nominal, db, "o", color=colour, label=name)
        ax.plot(entropy, db, "o", mfc="none", color=colour)
    ax.set_xscale("log")
    ticks = [v * 10.0**e for e in range(-3, 2) for v in (1, 2, 5)]  # 1-2-5 labels, no crowded minor ones
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel (tokenizer: ● log2 codebook, ○ code entropy)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return ax


def interval_dots(rows: list[dict], metric: str, *, ax=None, title: str = "", reference: float | None = None):
    """One dot per row (`vpe_lib.figures.latents_page.probe_rows`) with its 95% interval as a bar;
    `reference`: a dashed line at the chance / no-information value."""
    rows = [r for r in rows if r.get(metric) is not None]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 0.35 * len(rows) + 1.0))
    for i, r in enumerate(rows):
        v, lo, hi = (np.nan if x is None else x for x in r[metric])
        random = r["encoder"].startswith("random_")
        ax.errorbar([v], [i], xerr=[[v - lo], [hi - v]], fmt="o", color="0.55" if random else "C0", capsize=3)
    ax.set_yticks(range(len(rows)), [r["encoder"] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top (idempotent, unlike invert_yaxis on shared axes)
    if reference is not None:
        ax.axvline(reference, color="k", ls="--", lw=0.8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return ax


def patch_at(frame: np.ndarray, row: int, col: int, stride: int) -> np.ndarray:
    """The pixels under token (row, col) of a frame h w c, for a token grid of `stride` pixels."""
    return frame[row * stride:(row + 1) * stride, col * stride:(col + 1) * stride]


def context_patch(frame: np.ndarray, row: int, col: int, stride: int, *, around: int = 3,
                  outline: Sequence[int] = (255, 225, 25)) -> np.ndarray:
    """The pixels of token (row, col) and `around` tokens on each side ((2*around+1)*stride square,
    black beyond the frame), the token itself outlined: what a hover preview needs to show where
    a 4-pixel token sits."""
    size = (2 * around + 1) * stride
    h, w = frame.shape[:2]
    out = np.zeros((size, size, frame.shape[2]), frame.dtype)
    y0, x0 = (row - around) * stride, (col - around) * stride
    ys, xs = slice(max(y0, 0), min(y0 + size, h)), slice(max(x0, 0), min(x0 + size, w))
    out[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = frame[ys, xs]
    a, b = around * stride - 1, (around + 1) * stride  # one pixel outside the token
    lo, hi = max(a, 0), min(b, size - 1)
    out[lo, lo:hi + 1] = out[hi, lo:hi + 1] = outline
    out[lo:hi + 1, lo] = out[lo:hi + 1, hi] = outline
    return out
