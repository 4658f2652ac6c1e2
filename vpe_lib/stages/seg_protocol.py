"""The segmentation study's protocol: splits by video, label budgets, the grid of methods, and
choosing hyperparameters on validation with the same search budget for every method.

Pure bookkeeping (no training here), so tests reach every rule:

- **Splits** are by video: PushWorld's training videos are cut into train and validation
  videos; its test videos are touched once, for the table.
- **Label budgets** are fractions of the labelled training *videos* (all frames of a chosen
  video are labelled, none of the others). The subset is drawn from (seed, budget), so a seed
  gives every method the same labelled videos: the seeds are paired across methods.
- **Methods**: encoder × head × mode (frozen / fine-tuned), plus the UNet from scratch.
- **Learning rate**: every method's learning rate is chosen from the same grid on validation
  foreground IoU, at each label budget, with the first seed; the other seeds reuse it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vpe_lib.data.labelled import LabelledSplit
from vpe_lib.data.store import PushWorldStore
from vpe_lib.models.encoders import ENCODERS, PREDICTOR_ENCODERS
from vpe_lib.models.heads import MODES
from vpe_lib.train.loop import recipe



# ---------------------------------------------------------------------------- data


def pushworld_splits(root: Path, *, n_val_videos: int, frame_stride: int, test_frame_stride: int
                     ) -> tuple[dict[str, LabelledSplit], dict[str, np.ndarray]]:
    """train / val / test `LabelledSplit`s of a PushWorld dataset, and for each split the frame
    *before* every labelled frame (the frame after, for frame 0), for the frame-difference
    baseline. The last `n_val_videos` training videos are validation (video seeds are
    independent draws, so which ones does not matter; fixed, so it never moves)."""
    train_store, test_store = PushWorldStore(root, "train"), PushWorldStore(root, "test")
    n = len(train_store)
    if not 0 < n_val_videos < n:
        raise ValueError(f"seg.n_val_videos={n_val_videos} must be between 1 and {n - 1} "
                         f"(the dataset has {n} training videos)")
    plan = {"train": (train_store, range(0, n - n_val_videos), frame_stride),
            "val": (train_store, range(n - n_val_videos, n), test_frame_stride),
            "test": (test_store, range(len(test_store)), test_frame_stride)}
    splits, previous = {}, {}
    for name, (store, videos, stride) in plan.items():
        t = np.arange(0, store.n_frames, stride)
        t_prev = np.where(t > 0, t - 1, 1)
        frames, sem, inst, prev, vids = [], [], [], [], []
        for v in videos:
            frames.append(store.get("frames", v, t))
            sem.append(store.get("semantic", v, t))
            inst.append(store.get("instance", v, t))
            prev.append(store.get("frames", v, t_prev))
            vids.append(np.full(len(t), v))
        names = [f"{name}-{v}" for v in range(max(videos) + 1)]
        splits[name] = LabelledSplit(frames=np.concatenate(frames), semantic=np.concatenate(sem),
                                     video_ids=np.concatenate(vids), names=names,
                                     instance=np.concatenate(inst).astype(np.int32))
        previous[name] = np.concatenate(prev)
    return splits, previous


def budget_videos(video_ids: np.ndarray, pct: float, seed: int) -> np.ndarray:
    """The labelled videos at a budget of `pct` % of the training videos (at least one),
    drawn from (seed, pct): every method sees the same ones for a given seed."""
    if not 0 < pct <= 100:
        raise ValueError(f"label budget {pct}% must be in (0, 100]")
    videos = np.unique(video_ids)
    k = max(1, math.ceil(len(videos) * pct / 100))
    if k >= len(videos):
        return videos
    rng = np.random.default_rng([seed, int(round(pct * 1000))])
    return np.sort(rng.choice(videos, size=k, replace=False))


def budget_index(video_ids: np.ndarray, pct: float, seed: int) -> np.ndarray:
    """Frame indices of the labelled videos at this budget."""
    return np.flatnonzero(np.isin(video_ids, budget_videos(video_ids, pct, seed)))


def pct_name(pct: float) -> str:
    return f"labels{pct:g}"


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One row of the table: `encoder` in ENCODERS or "unet"; `head` and `mode` are empty for the UNet.
    `levels` restricts the encoder's maps and `out_stride` sets the head's (ablations); `tag` names the ablation."""

    encoder: str
    head: str = ""
    mode: str = ""
    levels: tuple[str, ...] = ()
    tag: str = ""
    out_stride: int = 0  # 0 = the profile's seg.head_out_stride

    @property
    def name(self) -> str:
        if self.encoder == "unet":
            return "unet"
        base = f"{self.encoder}/{self.head}/{self.mode}"
        return f"{base}/{self.tag}" if self.tag else base

    @property
    def key(self) -> str:
        return self.name.replace("/", "__")


def method_from_name(name: str) -> Method:
    """The Method a table row's name stands for ("unet" or "<encoder>/<head>/<mode>[/<tag>]"); ablation
    tags carry no levels, so only main methods round-trip."""
    if name == "unet":
        return Method("unet")
    parts = name.split("/")
    if len(parts) != 3:
        raise ValueError(f"{name!r}: a main method's name is 'unet' or '<encoder>/<head>/<mode>'")
    return Method(*parts)


def main_methods(encoders: Sequence[str], heads: Sequence[str], modes: Sequence[str],
                 finetune_heads: Sequence[str] = (), head_encoders: Sequence[str] = (),
                 finetune_predictors: bool = False) -> list[Method]:
    """encoders × heads × modes, then the UNet. Raw pixels have no weights to fine-tune: they run
    frozen only; `finetune_heads` (if given) limits fine-tuning to those heads; `head_encoders` (if
    given) are the encoders that run every head, the others run only the first (the main) head.
    The prediction transformers run fine-tuned only with `finetune_predictors` (the seed paper's best
    configuration: the transformer-informed latent trained end to end with a conv decoder)."""
    out = []
    for enc in encoders:
        if enc not in ENCODERS:
            raise ValueError(f"unknown encoder {enc!r}; valid: {', '.join(ENCODERS)}")
        for head in heads if not head_encoders or enc in head_encoders else heads[:1]:
            for mode in modes:
                if mode not in MODES:
                    raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
                # raw pixels have no weights; fine-tuned, a prediction transformer and the tokenizer maps
                # it follows learn (the codes are an argmax, so no gradient reaches past them)
                if mode == "finetuned" and (enc == "pixels" or (enc in PREDICTOR_ENCODERS and not finetune_predictors)
                                            or (finetune_heads and head not in finetune_heads)):
                    continue
                out.append(Method(enc, head, mode))
    return out + [Method("unet")]


def run_key(*parts: Any) -> str:
    """A short digest of everything that determines a training run (its cache folder name):
    a result computed under another config, encoder or dataset is never reused."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# SegConfig fields that select extra runs without changing any run's recipe
NOT_RUN_IDENTITY = ("convergence_steps", "convergence_methods", "convergence_seeds", "finetune_predictors",
                    "lr_search_pcts", "head_comparison_pcts", "finetune_predictor_pcts")


def seg_identity(s) -> dict[str, Any]:
    """What of the study's config (a SegConfig) goes into a run's key: all of it but the fields that
    only add runs (the convergence check), with its train config reduced to the recipe (a progress
    bar or torch.compile reuses the run)."""
    d = {k: v for k, v in asdict(s).items() if k not in NOT_RUN_IDENTITY}
    d["train"] = recipe(s.train)
    return d


def file_digest(path: Path) -> str:
    """sha256 of a file (a checkpoint or manifest that a result depends on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def choose_lr(val_scores: dict[float, float]) -> float:
    """The learning rate with the best validation score (ties: the smaller rate; NaN loses)."""
    finite = {lr: s for lr, s in val_scores.items() if s == s}
    if not finite:
        raise ValueError(f"no learning rate gave a finite validation score: {val_scores}")
    return max(sorted(finite), key=lambda lr: finite[lr])
