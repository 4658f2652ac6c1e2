"""Stage 04: single-frame foreground segmentation.

Every model gets the same labelled frames (train videos), the same steps,
batch size and augmentation, and is scored on the same held-out videos:

- `tokenizer/<head>`: a head on the frozen, pretrained tokenizer encoder
- `random_tokenizer/<head>`: the same head on a frozen, randomly initialised
  encoder of the same architecture (is it pretraining, or just the architecture?)
- `unet`: a 2D UNet trained from scratch
- `colour_baseline`: per-pixel logistic regression on RGB and position (how hard is the world?)
- `all_foreground`: predicts foreground everywhere (`all_background` scores 0 by definition)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.pipeline import make_pipeline

from vpe_lib.config import RunConfig
from vpe_lib.data.samplers import FrameBatches, labelled_frames, to_unit_range
from vpe_lib.data.store import PushWorldStore
from vpe_lib.eval.metrics import IoUAccumulator
from vpe_lib.models.heads import ConvHead, LinearHead, SegmentationModel
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.unet import UNet2D
from vpe_lib.stages.common import require, write_json, write_metrics
from vpe_lib.stages.pretrain_stage import load_tokenizer
from vpe_lib.train.loop import train


def segmentation_step(model: nn.Module, batch):
    images, masks = batch
    logits = model(images)
    loss = F.cross_entropy(logits, masks)
    return loss, {}


@torch.no_grad()
def predict_foreground(model: nn.Module, frames: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Boolean foreground masks (N, H, W) for uint8 frames (N, H, W, 3)."""
    model.eval()
    preds = []
    for k in range(0, len(frames), batch_size):
        x = rearrange(to_unit_range(frames[k : k + batch_size]), "b h w c -> b c h w")
        preds.append(model(x).argmax(1).numpy().astype(bool))
    return np.concatenate(preds)


def score(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    acc = IoUAccumulator()
    acc.update(pred, true)
    return acc.result()


def _pixel_features(frames: np.ndarray) -> np.ndarray:
    n, h, w, _ = frames.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    pos = np.broadcast_to(np.stack([yy, xx], -1), (n, h, w, 2))
    return np.concatenate([frames / 255.0, pos], -1).reshape(-1, 5).astype(np.float32)


def colour_baseline(train_frames, train_masks, test_frames, *, n_pixels: int, seed: int = 0) -> np.ndarray:
    """Per-pixel logistic regression on RGB and (x, y), with quadratic feature crosses."""
    rng = np.random.default_rng(seed)
    x, y = _pixel_features(train_frames), train_masks.reshape(-1)
    pick = rng.choice(len(x), size=min(n_pixels, len(x)), replace=False)
    clf = make_pipeline(PolynomialFeatures(2), StandardScaler(), LogisticRegression(max_iter=500))
    clf.fit(x[pick], y[pick])
    return clf.predict(_pixel_features(test_frames)).reshape(test_frames.shape[:3]).astype(bool)


def _head(kind: str, encoder: VQVAE3D, hidden: int) -> tuple[nn.Module, bool]:
    if kind == "conv":
        return ConvHead(in_channels=list(encoder.feature_channels), n_classes=2, hidden=hidden), True
    if kind == "linear":
        return LinearHead(in_channels=encoder.feature_channels[-1], n_classes=2), False
    raise ValueError(f"unknown seg.head {kind!r}; valid: conv, linear")


def run_heads_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True) -> dict[str, float]:
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    require(run_dir, "pretrain", "final.pt")
    s = cfg.seg
    train_frames, train_masks = labelled_frames(PushWorldStore(data_dir / "pushworld", "train"), frame_stride=s.frame_stride)
    test_frames, test_masks = labelled_frames(PushWorldStore(data_dir / "pushworld", "test"), frame_stride=s.test_frame_stride)

    models: dict[str, Callable[[int], nn.Module]] = {}

    def pretrained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        enc = load_tokenizer(run_dir)
        head, multi = _head(s.head, enc, s.head_hidden)
        return SegmentationModel(enc, head, frozen=True, use_intermediates=multi)

    def random_encoder(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        enc = VQVAE3D(cfg=load_tokenizer(run_dir).cfg)  # same architecture, random weights
        head, multi = _head(s.head, enc, s.head_hidden)
        return SegmentationModel(enc, head, frozen=True, use_intermediates=multi)

    def unet(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return UNet2D(in_channels=3, n_classes=2, base_channels=s.unet_base_channels, depth=s.unet_depth)

    models[f"tokenizer/{s.head}"] = pretrained
    models[f"random_tokenizer/{s.head}"] = random_encoder
    models["unet"] = unet

    per_seed: dict[str, list[dict]] = {name: [] for name in models}
    examples: dict[str, np.ndarray] = {}
    n_show = min(6, len(test_frames))
    for name, build in models.items():
        for seed in s.seeds:
            model = build(seed)
            batches = FrameBatches(train_frames, train_masks, batch_size=s.train.batch_size, seed=seed)
            tcfg = dataclasses.replace(s.train, seed=seed, progress=progress)
            result = train(model, segmentation_step, batches, tcfg, out / "models" / name.replace("/", "_") / f"seed{seed}",
                           desc=f"{name} seed {seed}")
            pred = predict_foreground(result.model, test_frames)
            res = score(pred, test_masks)
            res.update(seed=seed, train_wall_s=result.wall_time_s, trainable_params=sum(
                p.numel() for p in result.model.parameters() if p.requires_grad))
            per_seed[name].append(res)
            if seed == s.seeds[0]:
                examples[name] = pred[:n_show]

    colour_pred = colour_baseline(train_frames, train_masks, test_frames, n_pixels=s.colour_baseline_pixels)
    per_seed["colour_baseline"] = [score(colour_pred, test_masks)]
    examples["colour_baseline"] = colour_pred[:n_show]
    per_seed["all_foreground"] = [score(np.ones_like(test_masks), test_masks)]

    metrics: dict[str, float] = {
        "seg/n_train_frames": len(train_frames),
        "seg/n_test_frames": len(test_frames),
        "seg/test_fg_fraction": float(test_masks.mean()),
        "seg/n_seeds": len(s.seeds),
    }
    for name, runs in per_seed.items():
        for key in ("fg_iou", "miou"):
            vals = np.array([r[key] for r in runs])
            metrics[f"seg/{key}/{name}"] = float(vals.mean())
            if len(runs) > 1:
                metrics[f"seg/{key}_std/{name}"] = float(vals.std(ddof=1))
    write_json(out / "per_seed.json", per_seed)
    np.savez_compressed(out / "examples.npz", frames=test_frames[:n_show], truth=test_masks[:n_show],
                        **{k.replace("/", "__"): v for k, v in examples.items()})
    write_metrics(out, metrics)
    return metrics
