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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.pipeline import make_pipeline
from tqdm.auto import tqdm

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


def _head(kind: str, encoder: VQVAE3D, hidden: int, resolution: int = 0) -> tuple[nn.Module, bool]:
    if kind == "conv":
        return ConvHead(in_channels=list(encoder.feature_channels), n_classes=2, hidden=hidden,
                        max_resolution=resolution or None), True
    if kind == "linear":
        return LinearHead(in_channels=encoder.feature_channels[-1], n_classes=2), False
    raise ValueError(f"unknown seg.head {kind!r}; valid: conv, linear")


@torch.no_grad()
def frozen_features(model: SegmentationModel, frames: np.ndarray, *, batch_size: int = 32, progress: bool = True
                    ) -> list[torch.Tensor]:
    """The frozen encoder's feature maps for every frame, computed once and kept in float16.

    A frozen encoder gives the same features every epoch, so the heads train on this
    cache: the encoder's forward pass (a clip of repeated frames through 3D convs)
    would otherwise dominate the cost of every step and every seed.
    """
    chunks: list[list[torch.Tensor]] = []
    for k in tqdm(range(0, len(frames), batch_size), desc="encoder features", disable=not progress, leave=False):
        x = rearrange(to_unit_range(frames[k : k + batch_size]), "b h w c -> b c h w")
        feats = model.features(x)
        chunks.append([f.half() for f in (feats if isinstance(feats, list) else [feats])])
    return [torch.cat(level) for level in zip(*chunks)]


class CachedFeatureBatches:
    """Random (cached features, masks) batches; deterministic per step like FrameBatches."""

    def __init__(self, features: list[torch.Tensor], masks: np.ndarray, *, batch_size: int, seed: int):
        self.features, self.masks = features, torch.from_numpy(masks).long()
        self.batch_size, self.seed = batch_size, seed

    def __call__(self, step: int):
        idx = torch.from_numpy(np.random.default_rng([self.seed, step]).integers(0, len(self.masks), self.batch_size))
        return [f[idx].float() for f in self.features], self.masks[idx]


class HeadOnFeatures(nn.Module):
    """Trains a head on cached features; its weights are the same module the full model uses."""

    def __init__(self, head: nn.Module, size: tuple[int, int], multi_level: bool):
        super().__init__()
        self.head, self.size, self.multi_level = head, size, multi_level

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(features if self.multi_level else features[-1], size=self.size)


def with_flips(frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal-flip augmentation as extra labelled frames: the same set for every model."""
    return np.concatenate([frames, frames[:, :, ::-1]]), np.concatenate([masks, masks[:, :, ::-1]])


def run_heads_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True) -> dict[str, float]:
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    require(run_dir, "pretrain", "final.pt")
    s = cfg.seg
    train_frames, train_masks = labelled_frames(PushWorldStore(data_dir / "pushworld", "train"), frame_stride=s.frame_stride)
    test_frames, test_masks = labelled_frames(PushWorldStore(data_dir / "pushworld", "test"), frame_stride=s.test_frame_stride)
    if s.flip_augment:
        train_frames, train_masks = with_flips(train_frames, train_masks)
    size = tuple(train_frames.shape[1:3])

    def frozen_model(pretrained: bool, head_seed: int = 0) -> SegmentationModel:
        enc = load_tokenizer(run_dir)
        if not pretrained:
            torch.manual_seed(0)  # one fixed random encoder: the control's features are cached once
            enc = VQVAE3D(cfg=enc.cfg).eval()  # same architecture, random weights
        torch.manual_seed(head_seed)
        head, multi = _head(s.head, enc, s.head_hidden, s.head_resolution)
        return SegmentationModel(enc, head, frozen=True, use_intermediates=multi)

    per_seed: dict[str, list[dict]] = {}
    examples: dict[str, np.ndarray] = {}
    n_show = min(6, len(test_frames))

    def record(name: str, seed: int, model: nn.Module, result) -> None:
        pred = predict_foreground(model, test_frames)
        res = score(pred, test_masks)
        res.update(seed=seed, train_wall_s=result.wall_time_s,
                   trainable_params=sum(p.numel() for p in result.model.parameters() if p.requires_grad))
        per_seed.setdefault(name, []).append(res)
        if seed == s.seeds[0]:
            examples[name] = pred[:n_show]

    def train_dir(name: str, seed: int) -> Path:
        return out / "models" / name.replace("/", "_") / f"seed{seed}"

    # Heads on frozen encoders (pretrained, and the random-weights control), trained on cached features.
    for name, pretrained in ((f"tokenizer/{s.head}", True), (f"random_tokenizer/{s.head}", False)):
        features = frozen_features(frozen_model(pretrained), train_frames, progress=progress)
        for seed in s.seeds:
            model = frozen_model(pretrained, head_seed=seed)
            head_model = HeadOnFeatures(model.head, size, model.use_intermediates)
            batches = CachedFeatureBatches(features, train_masks, batch_size=s.train.batch_size, seed=seed)
            tcfg = dataclasses.replace(s.train, seed=seed, progress=progress)
            result = train(head_model, segmentation_step, batches, tcfg, train_dir(name, seed), desc=f"{name} seed {seed}")
            model.head = result.final_model.head
            record(name, seed, model, result)
        del features

    # The UNet from scratch sees the same frames, steps and batch size.
    for seed in s.seeds:
        torch.manual_seed(seed)
        model = UNet2D(in_channels=3, n_classes=2, base_channels=s.unet_base_channels, depth=s.unet_depth)
        batches = FrameBatches(train_frames, train_masks, batch_size=s.train.batch_size, seed=seed, flip=False)
        tcfg = dataclasses.replace(s.train, seed=seed, progress=progress)
        result = train(model, segmentation_step, batches, tcfg, train_dir("unet", seed), desc=f"unet seed {seed}")
        record("unet", seed, result.final_model, result)

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
