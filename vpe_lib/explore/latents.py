"""Interactive explorers of the tokenizer's latent space (ipywidgets, live in JupyterLab: `make lab`).

- `LatentExplorer`: pick a video, a clip start and a frame; see the frame, its reconstruction, the
  token map coloured by code id and the ground-truth classes side by side; pick a token (row,
  column) to see its code and a gallery of patches from *other* videos that use the same code.
- `UmapExplorer`: select a rectangle of a 2-D embedding of token features; see the patches it
  contains and their classes.

The logic (`LatentData`, `points_in_box`, `class_counts`; `patch_at` in figures.plots) is plain numpy / torch so
tests reach it without a kernel; `render()` draws the current view as a matplotlib figure, which
is also what the static report shows (a widget needs a live kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange

from vpe_lib.figures import plots
from vpe_lib.figures.plots import patch_at
from vpe_lib.data.pushworld import CLASS_NAMES
from vpe_lib.data.samplers import from_unit_range, to_unit_range
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.data.store import PushWorldStore
from vpe_lib.stages.common import require
from vpe_lib.stages.pretrain_stage import load_tokenizer


def points_in_box(points: np.ndarray, x_range: Sequence[float], y_range: Sequence[float]) -> np.ndarray:
    """Indices of the 2-D points inside [x0, x1] × [y0, y1] (inclusive)."""
    x, y = points[:, 0], points[:, 1]
    return np.flatnonzero((x >= x_range[0]) & (x <= x_range[1]) & (y >= y_range[0]) & (y <= y_range[1]))


def class_counts(labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """{class name: count} of the labels, every class listed (0 where absent)."""
    counts = np.bincount(np.asarray(labels, int), minlength=len(names))
    return {n: int(c) for n, c in zip(names, counts)}


@dataclass
class TokenView:
    """One clip through the tokenizer: frames and reconstructions (t h w c uint8), semantic labels
    (t h w), codes (t' h' w'), and the factors from pixels to tokens."""

    video: int
    start: int
    frames: np.ndarray
    recon: np.ndarray
    semantic: np.ndarray
    codes: np.ndarray
    time_factor: int
    stride: int

    def latent_time(self, t: int) -> int:
        """The latent frame that frame t of the clip falls in."""
        return min(t // self.time_factor, len(self.codes) - 1)

    def code_at(self, t: int, row: int, col: int) -> int:
        return int(self.codes[self.latent_time(t), row, col])


class LatentData:
    """A tokenizer and a PushWorld split: clips through the tokenizer, and an index of which code
    each token of `n_index_videos` videos uses (for the same-code gallery), built on first use."""

    def __init__(self, model: VQVAE3D, store, *, n_index_videos: int = 24, seed: int = 0):
        self.model, self.store = model.eval(), store
        self.clip_frames = model.cfg.clip_frames
        self.n_index_videos = min(n_index_videos, len(store))
        self.seed = seed
        self._index: dict[str, np.ndarray] | None = None
        self.time_factor, self.stride = model.cfg.temporal_factor, model.cfg.spatial_factor

    @property
    def n_videos(self) -> int:
        return len(self.store)

    @property
    def max_start(self) -> int:
        return self.store.n_frames - self.clip_frames

    @torch.no_grad()
    def view(self, video: int, start: int) -> TokenView:
        if not 0 <= video < self.n_videos:
            raise ValueError(f"video {video} is out of range: the split has {self.n_videos} videos")
        if not 0 <= start <= self.max_start:
            raise ValueError(f"clip start {start} is out of range 0..{self.max_start}")
        t = np.arange(start, start + self.clip_frames)
        frames = self.store.get("frames", video, t)
        clip = rearrange(to_unit_range(frames), "t h w c -> 1 c t h w")
        device = next(self.model.parameters()).device
        out = self.model(clip.to(device))
        recon = rearrange(from_unit_range(out.recon), "1 c t h w -> t h w c")
        return TokenView(video, start, frames, recon, self.store.get("semantic", video, t), out.codes[0].cpu().numpy(),
                         self.time_factor, self.stride)

    @torch.no_grad()
    def code_index(self) -> dict[str, np.ndarray]:
        """For every token of the first clip of `n_index_videos` videos (spread over the split):
        video, frame of the clip's start, latent time, row, column and code."""
        if self._index is None:
            rng = np.random.default_rng(self.seed)
            videos = np.sort(rng.choice(self.n_videos, size=self.n_index_videos, replace=False))
            rows = []
            for v in videos:
                start = int(rng.integers(0, self.max_start + 1))
                codes = self.view(int(v), start).codes
                tt, rr, cc = np.meshgrid(*map(np.arange, codes.shape), indexing="ij")
                n = codes.size
                rows.append(np.stack([np.full(n, v), np.full(n, start), tt.ravel(), rr.ravel(), cc.ravel(),
                                      codes.ravel()], 1))
            table = np.concatenate(rows)
            self._index = dict(zip(("video", "start", "t", "row", "col", "code"), table.T))
        return self._index

    def gallery(self, code: int, *, exclude_video: int | None = None, k: int = 12) -> list[tuple[np.ndarray, int, int]]:
        """Up to k patches of other videos whose token uses `code`: (patch, video, frame), at most
        two per video so one video does not fill the gallery."""
        idx = self.code_index()
        hits = np.flatnonzero((idx["code"] == code) & (idx["video"] != (-1 if exclude_video is None else exclude_video)))
        out, per_video = [], {}
        for i in hits:
            v = int(idx["video"][i])
            if per_video.get(v, 0) >= 2:
                continue
            per_video[v] = per_video.get(v, 0) + 1
            frame_t = int(idx["start"][i] + idx["t"][i] * self.time_factor)
            frame = self.store.get("frames", v, frame_t)
            out.append((patch_at(frame, int(idx["row"][i]), int(idx["col"][i]), self.stride), v, frame_t))
            if len(out) >= k:
                break
        return out


def _show(fig) -> None:
    """Display a figure in the current output (the widget's) and close it, so it is drawn once."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def bind_controls(explorer, controls: dict):
    """An Output showing explorer.render(), redrawn whenever a control moves: each control's value is set on
    the explorer under the control's name first (the widgets' one loop, for every explorer)."""
    import ipywidgets as w

    out = w.Output()

    def redraw(_=None):
        for name, c in controls.items():
            setattr(explorer, name, c.value)
        out.clear_output(wait=True)
        with out:
            _show(explorer.render())

    for c in controls.values():
        c.observe(redraw, names="value")
    redraw()
    return out


def _code_colours(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """A fixed colour per code id (hashed, so neighbouring ids differ), h w -> h w 3 uint8."""
    rng = np.random.default_rng(12345)
    palette = rng.integers(30, 256, size=(codebook_size, 3), dtype=np.uint8)
    return palette[codes]


class LatentExplorer:
    """Sliders: video, clip start, frame in the clip, token row and column. Needs a live kernel for
    the sliders; `render()` draws the current view (what the static report shows)."""

    def __init__(self, data: LatentData, *, video: int = 0, start: int = 0, gallery_size: int = 12):
        self.data, self.gallery_size = data, gallery_size
        self.video, self.start, self.t, self.row, self.col = video, start, 0, 0, 0
        self._view: TokenView | None = None
        self._widget = None

    def current(self) -> TokenView:
        if self._view is None or (self._view.video, self._view.start) != (self.video, self.start):
            self._view = self.data.view(self.video, self.start)
        return self._view

    def state(self) -> dict:
        v = self.current()
        return {"video": self.video, "start": self.start, "frame": self.start + self.t, "row": self.row,
                "col": self.col, "code": v.code_at(self.t, self.row, self.col)}

    def render(self):
        v, s = self.current(), self.state()
        lt = v.latent_time(self.t)
        gallery = self.data.gallery(s["code"], exclude_video=self.video, k=self.gallery_size)
        fig = plt.figure(figsize=(11, 5.2))
        top = fig.add_gridspec(1, 4, top=0.93, bottom=0.42, wspace=0.08)
        bottom = fig.add_gridspec(1, max(self.gallery_size, 1), top=0.26, bottom=0.02, wspace=0.15)
        tiles = [(v.frames[self.t], f"video {self.video}, frame {s['frame']}"),
                 (v.recon[self.t], "reconstruction"),
                 (_code_colours(v.codes[lt], self.data.model.cfg.codebook_size), f"code ids (latent frame {lt})"),
                 (plots.colourise(v.semantic[self.t]), "ground truth")]
        st = v.stride
        for i, (img, title) in enumerate(tiles):
            ax = fig.add_subplot(top[0, i])
            extent = (0, img.shape[1] * st, img.shape[0] * st, 0) if i == 2 else None  # codes in pixel units
            ax.imshow(img, interpolation="nearest", extent=extent)
            ax.add_patch(plt.Rectangle((self.col * st - 0.5, self.row * st - 0.5), st, st, fill=False, ec="yellow", lw=1.5))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.text(0.5, 0.33, f"token ({self.row}, {self.col}) uses code {s['code']}: "
                 + (f"{len(gallery)} patches of other videos with the same code" if gallery
                    else "no other video in the index uses it"), ha="center", fontsize=9)
        for j, (patch, pv, pt) in enumerate(gallery):
            ax = fig.add_subplot(bottom[0, j])
            ax.imshow(patch, interpolation="nearest")
            ax.set_title(f"v{pv} f{pt}", fontsize=6)
            ax.axis("off")
        return fig

    @property
    def widget(self):
        """The ipywidgets box (sliders + the live figure)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self):
        import ipywidgets as w

        v = self.current()
        h_lat, w_lat = v.codes.shape[1:]
        sliders = {
            "video": w.IntSlider(self.video, 0, self.data.n_videos - 1, description="video"),
            "start": w.IntSlider(self.start, 0, self.data.max_start, description="clip start"),
            "t": w.IntSlider(self.t, 0, self.data.clip_frames - 1, description="frame in clip"),
            "row": w.IntSlider(self.row, 0, h_lat - 1, description="token row"),
            "col": w.IntSlider(self.col, 0, w_lat - 1, description="token col"),
        }
        out = bind_controls(self, sliders)
        self.sliders, self.output = sliders, out
        return w.VBox([w.HBox(list(sliders.values())[:3]), w.HBox(list(sliders.values())[3:]), out])


def class_colour(c: int) -> np.ndarray:
    """The colour of class c in every embedding figure (RGB in 0..1): the segmentation palette, but the
    background (class 0) a light grey, so the rarer classes drawn over it stand out."""
    if c == 0:
        return np.array([0.78, 0.78, 0.78])
    return plots.colourise(np.array([[c]]))[0, 0] / 255.0


def draw_embedding(ax, embedding: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> None:
    """Points coloured by class, with a legend: the background first, small, the other classes over it,
    larger (a token of the arm or an object is what the reader looks for)."""
    labels = np.asarray(labels)
    for c, name in enumerate(class_names):
        pts = embedding[labels == c]
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=4 if c == 0 else 10, color=class_colour(c), label=f"{name} ({len(pts)})",
                       alpha=0.5 if c == 0 else 0.85, linewidths=0, zorder=1 if c == 0 else 2)
    ax.legend(fontsize=6, markerscale=2, loc="best", framealpha=0.8)
    ax.set_xticks([]), ax.set_yticks([])


def selection_summary(n: int, counts: dict[str, int], width: int = 70) -> str:
    """'275 tokens selected: background 237, arm 32, ...', wrapped to lines of `width` characters (a long
    list of classes is never clipped at the figure's edge)."""
    import textwrap

    listed = ", ".join(f"{name} {c}" for name, c in counts.items() if c)
    return "\n".join(textwrap.wrap(f"{n} tokens selected: {listed or 'none'}", width))


def embedding_pair_figure(embeddings: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                          class_names: Sequence[str] = CLASS_NAMES):
    """Embeddings side by side (e.g. the pretrained tokenizer's and its random-weight twin's tokens),
    each coloured by class with the same colours."""
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5.2 * len(embeddings), 4.6), squeeze=False)
    for ax, (title, emb) in zip(axes[0], embeddings.items()):
        draw_embedding(ax, emb, labels[title], class_names)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class UmapExplorer:
    """A 2-D embedding of token features (UMAP, or PCA), the patch under each point and its class.
    Range sliders select a rectangle; the figure shows it, the patches inside and their classes."""

    def __init__(self, embedding: np.ndarray, patches: np.ndarray, labels: np.ndarray,
                 class_names: Sequence[str] = CLASS_NAMES, *, max_patches: int = 20, title: str = ""):
        if not len(embedding) == len(patches) == len(labels):
            raise ValueError(f"embedding ({len(embedding)}), patches ({len(patches)}) and labels ({len(labels)}) "
                             "must have one row per point")
        self.embedding, self.patches, self.labels = np.asarray(embedding), patches, np.asarray(labels)
        self.class_names, self.max_patches, self.title = list(class_names), max_patches, title
        lo, hi = self.embedding.min(0), self.embedding.max(0)
        centre, span = (lo + hi) / 2, (hi - lo) / 6
        self.x_range = (float(centre[0] - span[0]), float(centre[0] + span[0]))
        self.y_range = (float(centre[1] - span[1]), float(centre[1] + span[1]))
        self._widget = None

    def selected(self) -> np.ndarray:
        return points_in_box(self.embedding, self.x_range, self.y_range)

    def summary(self) -> dict[str, int]:
        return class_counts(self.labels[self.selected()], self.class_names)

    def render(self):
        sel = self.selected()
        # 9 inches: a widget's output area in JupyterLab crops a wider figure (its gallery was cut off)
        fig = plt.figure(figsize=(9, 4.6))
        grid = fig.add_gridspec(4, 9, top=0.8)
        ax = fig.add_subplot(grid[:, :4])
        draw_embedding(ax, self.embedding, self.labels, self.class_names)
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="k", lw=1.2))
        ax.set_title(self.title or "token features", fontsize=9)
        fig.text(0.72, 0.97, selection_summary(len(sel), self.summary(), width=60), ha="center", va="top", fontsize=8)
        for j, i in enumerate(sel[: self.max_patches]):
            a = fig.add_subplot(grid[j // 5, 4 + j % 5])
            a.imshow(self.patches[i], interpolation="nearest")
            a.set_title(self.class_names[int(self.labels[i])], fontsize=6)
            a.axis("off")
        return fig

    @property
    def widget(self):
        if self._widget is None:
            import ipywidgets as w

            lo, hi = self.embedding.min(0), self.embedding.max(0)
            xs = w.FloatRangeSlider(value=self.x_range, min=float(lo[0]), max=float(hi[0]),
                                    step=float(hi[0] - lo[0]) / 200, description="x")
            ys = w.FloatRangeSlider(value=self.y_range, min=float(lo[1]), max=float(hi[1]),
                                    step=float(hi[1] - lo[1]) / 200, description="y")
            out = w.Output()

            def redraw(_=None):
                self.x_range, self.y_range = tuple(xs.value), tuple(ys.value)
                out.clear_output(wait=True)
                with out:
                    _show(self.render())

            xs.observe(redraw, names="value")
            ys.observe(redraw, names="value")
            redraw()
            self.sliders, self.output = {"x": xs, "y": ys}, out
            self._widget = w.VBox([w.HBox([xs, ys]), out])
        return self._widget


def latent_explorer(run_dir: str | Path, *, split: str = "test", **kw) -> LatentExplorer:
    """The explorer on a run's tokenizer and PushWorld split (stages 01 and 02 must have run)."""
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    return LatentExplorer(LatentData(load_tokenizer(run_dir), PushWorldStore(data_dir / "pushworld", split)), **kw)


def umap_explorer(run_dir: str | Path, *, features: str = "pretrained", **kw) -> UmapExplorer:
    """The explorer on the embedding stage 04 computed for `features` ("pretrained" or "random"),
    with the patch under each embedded token (latents/latents.npz)."""
    path = require(run_dir, "latents", "latents.npz") / "latents.npz"
    arrays = np.load(path)
    keys = [f"embedding_{features}", "token_patches", f"majority_{features}"]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise KeyError(f"{path} has no {', '.join(missing)}: it was written by an older version of stage 04; "
                       f"run notebook 04_latent_analysis again (or `vpe report --force latents`)")
    emb, patches, labels = (arrays[k] for k in keys)
    return UmapExplorer(emb, patches, labels, CLASS_NAMES, title=f"{features} token features", **kw)


def umap_pair(run_dir: str | Path):
    """The pretrained and the random-weight token embeddings of stage 04 side by side, same colours."""
    path = require(run_dir, "latents", "latents.npz") / "latents.npz"
    arrays = np.load(path)
    missing = [k for f in ("pretrained", "random") for k in (f"embedding_{f}", f"majority_{f}") if k not in arrays]
    if missing:
        raise KeyError(f"{path} has no {', '.join(missing)}: it was written by an older version of stage 04; "
                       f"run notebook 04_latent_analysis again (or `vpe report --force latents`)")
    titles = {"pretrained": "pretrained tokenizer's tokens", "random": "random-weight twin's tokens"}
    return embedding_pair_figure({titles[f]: arrays[f"embedding_{f}"] for f in titles},
                                 {titles[f]: arrays[f"majority_{f}"] for f in titles}, CLASS_NAMES)
