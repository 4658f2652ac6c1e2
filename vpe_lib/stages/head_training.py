"""What one head run of the segmentation study trains with: frozen encoders' maps cached on disk (feature stores,
and the prediction transformers' token stores), batches drawn from them, a head on cached maps, the probabilities
on held-out frames, and the best weights on validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from vpe_lib.data.feature_store import FeatureStore, write_feature_store
from vpe_lib.data.samplers import to_unit_range
from vpe_lib.models.encoders import (ImageEncoder, PredictorEncoder)
from vpe_lib.train.device import module_device
from vpe_lib.train.checkpoint import atomic_save


MAX_CACHED_ENCODERS = 6  # frozen-feature stores kept on disk (cpu profile: ~0.75 GB each)


def segmentation_step(model: nn.Module, batch):
    inputs, target = batch
    logits = model(inputs)
    return F.cross_entropy(logits, target, ignore_index=255), {}


def with_flips(frames: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal-flip augmentation as extra labelled frames: the same set for every model."""
    return np.concatenate([frames, frames[:, :, ::-1]]), np.concatenate([labels, labels[:, :, ::-1]])


def foreground(semantic: np.ndarray) -> np.ndarray:
    """Any class but background; ignore (255, COCO crowd) is not foreground."""
    return (semantic > 0) & (semantic != 255)


def images(frames: np.ndarray) -> torch.Tensor:
    return rearrange(to_unit_range(frames), "b h w c -> b c h w")


@torch.no_grad()
def encoder_features(encoder: ImageEncoder, frames: np.ndarray, *, batch_size: int = 32, progress: bool = False,
                     desc: str = "encoder features") -> list[torch.Tensor]:
    """The frozen encoder's maps for every frame, in float16 in CPU memory (small sets and tests; the
    study writes them to disk with `encoder_feature_store`, whose memory does not grow with the set)."""
    encoder.eval()
    device = module_device(encoder)
    chunks = []
    for k in tqdm(range(0, len(frames), batch_size), desc=desc, disable=not progress, leave=False):
        maps = encoder.forward_intermediates(images(frames[k:k + batch_size]).to(device))
        chunks.append([f.half().cpu() for f in maps])
    return [torch.cat(level) for level in zip(*chunks)]


@torch.no_grad()
def encoder_feature_store(encoder: ImageEncoder, frames: np.ndarray, folder: Path, *, batch_size: int = 32,
                          progress: bool = False, desc: str = "encoder features") -> FeatureStore:
    """The frozen encoder's maps for every frame, computed once (on the encoder's device) and written
    in float16 to `folder`, a chunk at a time (see `vpe_lib.data.feature_store`)."""
    encoder.eval()
    device = module_device(encoder)

    def compute(start: int, stop: int) -> list[torch.Tensor]:
        return encoder.forward_intermediates(images(frames[start:stop]).to(device))

    return _write_store_with_bar(folder, len(frames), compute, batch_size, progress, desc)


def _write_store_with_bar(folder: Path, n: int, compute, batch_size: int, progress: bool, desc: str) -> FeatureStore:
    """`write_feature_store` with a progress bar over the rows written."""
    bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
    try:
        return write_feature_store(folder, n, compute, chunk=batch_size, on_chunk=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()


def token_store(encoder: PredictorEncoder, frames: np.ndarray, folder: Path, *,
                batch_size: int = 32) -> FeatureStore:
    """What a predictor encoder's tokenizer makes of every frame: its maps at the first time index
    (the maps `forward_intermediates` returns) and, as a last level, the condition codes (integers
    below the codebook size, exact in float16). Every predictor on the same tokenizer (the trained
    one and the random twin of each seed) reads them instead of tokenizing again: the tokenizer is
    most of a predictor encoder's cost (4.3 s of 6.8 s per 256 frames at the cpu profile, measured)."""
    encoder.eval()
    device = module_device(encoder)

    def compute(start: int, stop: int) -> list[torch.Tensor]:
        with torch.no_grad():
            maps, codes = encoder._tokenize(images(frames[start:stop]).to(device))
        return [m[:, :, 0] for m in maps] + [codes.half()]

    return write_feature_store(folder, len(frames), compute, chunk=batch_size)


def predictor_feature_store(encoder: PredictorEncoder, tokens: FeatureStore, folder: Path, *,
                            batch_size: int = 32, progress: bool = False,
                            desc: str = "encoder features") -> FeatureStore:
    """The predictor encoder's maps from a `token_store` of the same frames and tokenizer: the same
    maps as `encoder_feature_store` (float16 values survive the round trip exactly), the tokenizer
    run once."""
    if not encoder.with_tokenizer_maps:
        raise ValueError("predictor_feature_store needs an encoder that returns the tokenizer's maps too")
    encoder.eval()
    device = module_device(encoder)

    def compute(start: int, stop: int) -> list[torch.Tensor]:
        *maps, codes = tokens.rows(np.arange(start, stop))
        with torch.no_grad():
            states = encoder.forward_from_codes(codes.long().to(device))
        return maps + states

    return _write_store_with_bar(folder, len(tokens), compute, batch_size, progress, desc)


def feature_rows(features, idx: torch.Tensor) -> list[torch.Tensor]:
    """Rows `idx` of every level, float32, from in-memory maps or a store on disk."""
    if isinstance(features, (list, tuple)):
        return [f[idx].float() for f in features]
    return features.rows(idx)


class CachedFeatureBatches:
    """Random (cached features, labels) batches of a subset; deterministic per step like FrameBatches."""

    def __init__(self, features, labels: np.ndarray, index: np.ndarray, *, batch_size: int, seed: int):
        # labels stay in their own (uint8) dtype; a batch's rows become int64 (all of them at once would
        # be 8x the labels' memory)
        self.features, self.labels = features, torch.from_numpy(np.ascontiguousarray(labels))
        self.index, self.batch_size, self.seed = torch.from_numpy(index), batch_size, seed

    def __call__(self, step: int):
        pick = np.random.default_rng([self.seed, step]).integers(0, len(self.index), self.batch_size)
        idx = self.index[torch.from_numpy(pick)]
        return feature_rows(self.features, idx), self.labels[idx].long()


class HeadOnFeatures(nn.Module):
    """A head trained on cached maps; the same module the full model uses."""

    def __init__(self, head: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.head, self.size = head, size

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(features, size=self.size)


@torch.no_grad()
def predict_probs(model: nn.Module, inputs, *, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, C, H, W) float16 for uint8 frames, or for cached feature maps (in
    memory or a store on disk), computed on the model's device and returned in CPU memory."""
    was = model.training
    model.eval()
    device = module_device(model)
    if isinstance(inputs, np.ndarray):
        batches = (images(inputs[k:k + batch_size]) for k in range(0, len(inputs), batch_size))
    elif isinstance(inputs, (list, tuple)):
        batches = ([f[k:k + batch_size].float() for f in inputs] for k in range(0, len(inputs[0]), batch_size))
    else:
        batches = inputs.chunks(batch_size)
    out = []
    for x in batches:
        x = x.to(device) if isinstance(x, torch.Tensor) else [f.to(device) for f in x]
        out.append(model(x).softmax(1).half().cpu().numpy())
    model.train(was)
    return np.concatenate(out)


class BestOnValidation:
    """Keeps the weights of a run's best validation evaluation on disk (`path`, written atomically),
    so the test set sees the model at the step validation chose: early stopping, with the same
    evaluation schedule for every method. A run that starts fresh (`fresh`) forgets an older file;
    a resumed one goes on from the best it had."""

    def __init__(self, path: Path, *, fresh: bool):
        self.path = Path(path)
        if fresh:
            self.path.unlink(missing_ok=True)
        self.score = float(torch.load(self.path, map_location="cpu")["score"]) if self.path.exists() else -np.inf

    def offer(self, score: float, model: nn.Module) -> None:
        if score > self.score:  # strictly better: ties keep the earlier (shorter) run
            self.score = float(score)
            atomic_save({"score": self.score, "model": model.state_dict()}, self.path)

    def restore(self, model: nn.Module) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no validation evaluation was kept (seg.train.eval_every = 0?)")
        model.load_state_dict(torch.load(self.path, map_location=module_device(model))["model"])


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
