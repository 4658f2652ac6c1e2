"""Stage 03: what is in the tokenizer's latent space?

- codebook usage on held-out clips (which codes are used, how evenly)
- token features of still frames (MAGVIT-v1 style: the frame repeated to a
  clip), pretrained vs a randomly initialised encoder of the same architecture,
  embedded in 2-D (UMAP, or PCA in the smoke profile) and coloured by what
  lies under each token
- a linear probe: does a token's feature tell whether its patch is foreground?
  Trained on tokens of training videos, scored on held-out videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vpe_lib.config import RunConfig
from vpe_lib.data.samplers import ClipBatches, to_unit_range
from vpe_lib.data.store import PushWorldStore
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.stages.common import require, stage_device, write_metrics
from vpe_lib.stages.pretrain_stage import load_tokenizer
from vpe_lib.train.device import module_device


@torch.no_grad()
def token_features(model: VQVAE3D, frames: np.ndarray, semantic: np.ndarray, *, batch_size: int = 32
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token features of still frames with, per token, the majority class and foreground fraction of its patch."""
    device = module_device(model)
    feats = []
    for k in range(0, len(frames), batch_size):
        x = rearrange(to_unit_range(frames[k : k + batch_size]), "b h w c -> b c h w").to(device)
        feats.append(model.forward_features(x).cpu())
    f = torch.cat(feats)  # b c h' w'
    _, _, th, tw = f.shape
    ph, pw = frames.shape[1] // th, frames.shape[2] // tw
    patches = rearrange(semantic, "b (th ph) (tw pw) -> (b th tw) (ph pw)", ph=ph, pw=pw)
    n_classes = int(semantic.max()) + 1
    counts = np.stack([(patches == c).sum(1) for c in range(n_classes)], 1)
    majority = counts.argmax(1)
    fg_fraction = 1.0 - counts[:, 0] / patches.shape[1]
    return rearrange(f, "b c h w -> (b h w) c").numpy(), majority, fg_fraction


def embed_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(StandardScaler().fit_transform(features))
    if method == "umap":
        import umap  # imported lazily: numba JIT costs ~1 minute per process

        return umap.UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.1, n_jobs=1).fit_transform(features)
    raise ValueError(f"unknown analysis.embedding {method!r}; valid: umap, pca")


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    if len(np.unique(train_y)) < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def _frames(store: PushWorldStore, n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vids = rng.integers(0, len(store), n_frames)
    ts = rng.integers(0, store.n_frames, n_frames)
    frames = np.stack([store.get("frames", int(v), int(t)) for v, t in zip(vids, ts)])
    semantic = np.stack([store.get("semantic", int(v), int(t)) for v, t in zip(vids, ts)])
    return frames, semantic


def run_latents_stage(cfg: RunConfig, run_dir: Path, out: Path) -> dict[str, float]:
    device = stage_device(cfg)
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    pretrained = load_tokenizer(run_dir, device=device)
    torch.manual_seed(0)
    random_init = VQVAE3D(cfg=pretrained.cfg).eval()  # drawn on the CPU: the same weights on every device
    if pretrained.channels_last:  # on CUDA (load_tokenizer): the same layout, the same speed
        random_init.channels_last_()
    random_init.to(device)
    train_store = PushWorldStore(data_dir / "pushworld", "train")
    test_store = PushWorldStore(data_dir / "pushworld", "test")
    a = cfg.analysis

    # Codebook usage on held-out clips.
    clips = ClipBatches(test_store, clip_frames=pretrained.cfg.clip_frames, batch_size=1).fixed(cfg.pretrain.n_eval_clips)
    with torch.no_grad():
        codes = torch.cat([pretrained.encode(c.to(device))[1].flatten().cpu() for c in clips.split(8)])
    usage = np.bincount(codes.numpy(), minlength=pretrained.cfg.codebook_size)

    test_frames, test_sem = _frames(test_store, a.n_frames, seed=1)
    train_frames, train_sem = _frames(train_store, a.n_frames, seed=2)
    metrics: dict[str, float] = {
        "latents/codes_used": int((usage > 0).sum()),
        "latents/codebook_size": pretrained.cfg.codebook_size,
    }
    arrays: dict[str, np.ndarray] = {"code_usage": usage}
    rng = np.random.default_rng(0)
    for name, model in (("pretrained", pretrained), ("random", random_init)):
        x_tr, _, fg_tr = token_features(model, train_frames, train_sem)
        x_te, maj_te, fg_te = token_features(model, test_frames, test_sem)
        metrics[f"latents/probe_fg_acc/{name}"] = probe_accuracy(x_tr, fg_tr > 0.5, x_te, fg_te > 0.5)
        pick = rng.choice(len(x_te), size=min(a.n_points, len(x_te)), replace=False)
        arrays[f"embedding_{name}"] = embed_2d(x_te[pick], a.embedding)
        arrays[f"majority_{name}"] = maj_te[pick]
        arrays[f"fg_fraction_{name}"] = fg_te[pick]
    metrics["latents/probe_fg_acc/majority_class"] = float(max((fg_te > 0.5).mean(), 1 - (fg_te > 0.5).mean()))
    np.savez_compressed(out / "latents.npz", **arrays)
    write_metrics(out, metrics)
    return metrics
