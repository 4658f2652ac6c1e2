"""Stage 04: what is in the latent space? What does a single still frame's token feature tell?

For every encoder of the study (the pretrained tokenizer, its random-weight twin, raw pixel patches
and, when stage 03 trained them, the masked / AR transformers and their random twins), closed-form
ridge probes from the token features of one still frame (see `vpe_lib.eval.latent_probes`):

- motion: the true flow (dx, dy) of each token to the next frame, its speed, and the codec's
  motion-vector speed (R²);
- common fate: will the token move within the next `analysis.fate_frames` frames (AUROC);
- foreground: is the token's patch mostly foreground (AUROC and balanced accuracy: 85% of the
  tokens are background, so plain accuracy would reward the majority class).

Probes fit on frames of training videos (not the segmentation study's validation videos) and are
scored on test videos, with 95% intervals from a bootstrap over test videos. Then the codebook: its
usage on held-out clips (perplexity, dead codes) and the per-class purity of the codes of the
pretrained and the random tokenizer; and a 2-D embedding (UMAP, or PCA in the smoke profile) of
token features for the figure.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from einops import rearrange, repeat
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from vpe_lib.config import RunConfig
from vpe_lib.data.motion import MotionCache
from vpe_lib.data.pushworld import CLASS_NAMES
from vpe_lib.data.samplers import ClipBatches, to_unit_range
from vpe_lib.data.store import PushWorldStore
from vpe_lib.eval import latent_probes as lp
from vpe_lib.eval.latent_probes import PROBE_METRICS
from vpe_lib.figures.plots import context_patch, patch_at
from vpe_lib.eval.probes import flatten_tokens
from vpe_lib.models.encoders import (PREDICTOR_ENCODERS, ImageEncoder, PixelEncoder, PredictorEncoder,
                                     TokenizerEncoder)
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.stages.common import require, stage_device, write_json, write_metrics
from vpe_lib.stages.encoder_loading import load_predictor_encoder, predictor_available, random_tokenizer
from vpe_lib.stages.pretrain_stage import load_tokenizer


N_EXAMPLES = 4  # test frames whose probe outputs latents.npz keeps for the figure


def embed_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(StandardScaler().fit_transform(features))
    if method == "umap":
        import umap  # imported lazily: numba JIT costs ~1 minute per process

        return umap.UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.1, n_jobs=1).fit_transform(features)
    raise ValueError(f"unknown analysis.embedding {method!r}; valid: umap, pca")


@torch.no_grad()
def still_codes(tokenizer: VQVAE3D, encoder: TokenizerEncoder, frames: np.ndarray, *, batch_size: int = 32
                ) -> np.ndarray:
    """The codes (n, h, w) a tokenizer gives still frames, entered as `encoder` enters them (the same
    repeated clip and latent frame), so they are the codes of the probed features."""
    out, device = [], lp.module_device(tokenizer)
    for i in range(0, len(frames), batch_size):
        x = rearrange(to_unit_range(frames[i:i + batch_size]), "b h w c -> b c h w").to(device)
        codes = tokenizer.encode(repeat(x, "b c h w -> b c t h w", t=encoder.clip_frames))[1]
        out.append(codes[:, encoder._time_index()].cpu().numpy())
    return np.concatenate(out)


def draw_seeds(cfg: RunConfig) -> list[int]:
    """The seeds of the random twins' draws: the heads stage's seeds, first `analysis.random_draws`
    of them (more draws than seeds continue from the last seed)."""
    seeds = list(cfg.seg.seeds)
    n = cfg.analysis.random_draws
    return (seeds + list(range(seeds[-1] + 1, seeds[-1] + 1 + n)))[:n] if n > len(seeds) else seeds[:n]


def draw_name(name: str, k: int, seed: int) -> str:
    """'random_tokenizer' for the first draw (the rows every figure shows), 'random_tokenizer@1' after."""
    return name if k == 0 else f"{name}@{seed}"


def pretraining_folders(run_dir: Path) -> list[Path]:
    """The pretrain folders of every pretrained tokenizer, in the heads stage's order: the main one, then
    the extra pretraining seeds (pretrain/seeds/seed<k>/)."""
    pre = Path(run_dir) / "pretrain"
    extra = sorted((pre / "seeds").glob("seed*")) if (pre / "seeds").exists() else []
    return [pre] + [f for f in extra if (f / "final.pt").exists()]


def build_encoders(cfg: RunConfig, run_dir: Path, log: Callable[[str], None], device: torch.device | str = "cpu"
                   ) -> dict[str, tuple[ImageEncoder, VQVAE3D | None]]:
    """The encoders of `analysis.encoders`, built as the heads stage builds them, with the tokenizer
    behind each tokenizer encoder; on `device` (run.device: features only, the probes are closed-form
    on the CPU). Every random twin comes in `analysis.random_draws` draws (`draw_seeds`): the first
    under its own name, the others as 'name@seed'. With several pretraining seeds (pretrain.extra_seeds,
    predict.per_seed) the pretrained encoders come in draws too, draw k reading pretraining seed k's models
    as the heads stage's seed k does (and a transformer's random twin sits on that seed's tokenizer), so
    their intervals include pretraining's variance."""
    seeds = draw_seeds(cfg)
    still = dict(still=cfg.seg.still, clip_frames=cfg.seg.still_clip_frames or None)
    folders = pretraining_folders(run_dir)
    main = Path(run_dir) / "pretrain"
    out: dict[str, tuple[ImageEncoder, VQVAE3D | None]] = {}

    def tokenizer_seed(kind: str, k: int) -> int | None:
        folder = folders[k % len(folders)]
        if folder == main:
            return None
        n = int(folder.name.removeprefix("seed"))
        return n if (Path(run_dir) / "predict" / kind / f"seed{n}.json").exists() else None

    for name in cfg.analysis.encoders:
        random = name.startswith("random_")
        draws = list(enumerate(seeds)) if random else list(enumerate(seeds))[:max(1, len(folders))]
        if name == "pixels":
            out[name] = (PixelEncoder(), None)
        elif name in ("tokenizer", "random_tokenizer"):
            pretrained = load_tokenizer(run_dir)  # read once: the random draws need only its config
            for k, seed in draws:
                folder = folders[k % len(folders)]
                if random:  # the heads stage's random draw of this seed
                    tok = random_tokenizer(pretrained.cfg, seed)
                else:
                    tok = pretrained if folder == main else load_tokenizer(run_dir, weights=folder / "final.pt")
                tok = tok.channels_last_().to(device)  # the whole tokenizer: still_codes uses its quantizer
                out[draw_name(name, k, seed)] = (TokenizerEncoder(tok, **still), tok)
        elif name in PREDICTOR_ENCODERS:
            if not predictor_available(run_dir, name):
                log(f"latents: no {name.removeprefix('random_')!r} predictor in {run_dir / 'predict'}: "
                    f"the {name} rows are skipped")
                continue
            kind = name.removeprefix("random_")
            for k, seed in draws:
                out[draw_name(name, k, seed)] = (load_predictor_encoder(
                    run_dir, name, seed, clip_frames=cfg.predict.clip_frames, device=device,
                    tokenizer_seed=tokenizer_seed(kind, k))[0], None)
    return out


def _tokenizer_key(encoder: PredictorEncoder) -> tuple:
    """What a PredictorEncoder's condition tokens depend on: its tokenizer encoder's weights (the
    codebook comes from the same checkpoint) and how a still frame enters it."""
    h = hashlib.sha256()
    for k, v in encoder.tokens.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return encoder.tokens.clip_frames, encoder.cond_frames, h.hexdigest()


class SharedCodes:
    """Condition tokens of the probe frames, computed once per tokenizer for all predictor encoders."""

    def __init__(self):
        self._codes: dict[tuple, torch.Tensor] = {}

    def __call__(self, encoder: ImageEncoder, split: str, frames: np.ndarray) -> torch.Tensor | None:
        if not isinstance(encoder, PredictorEncoder):
            return None
        key = (split, _tokenizer_key(encoder))
        if key not in self._codes:
            self._codes[key] = lp.condition_codes(encoder, frames)
        return self._codes[key]


# the encoders with a random-weight twin: their paired differences get intervals
PAIRS = (("tokenizer", "random_tokenizer"), ("masked", "random_masked"), ("ar", "random_ar"))


def _put(metrics: dict, key: str, score: lp.Score) -> None:
    metrics[key], metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = score


def probe_encoder(encoder: ImageEncoder, tokenizer: VQVAE3D | None, data: dict, *, stride: int, alpha: float,
                  boot: dict, codes: SharedCodes) -> tuple[dict[str, lp.Estimate], np.ndarray, np.ndarray]:
    """Every probe of one encoder: {metric: Estimate}, the test token features (rows) and the common-fate
    probe's test scores (n, h, w)."""
    rows = lambda split, key: lp.target_rows(data[split][key])  # noqa: E731
    x_tr, x_te = (flatten_tokens(lp.token_features(encoder, data[s]["frames"], stride,
                                                   codes=codes(encoder, s, data[s]["frames"])))
                  for s in ("train", "test"))
    targets = [k for k in ("flow", "speed", "mv") if k in data["train"]]
    binary = {k: (rows("train", k) > 0.5, rows("test", k) > 0.5) for k in ("fate", "fg")}
    pred_tr, pred_te = lp.ridge_probes(x_tr, {**{k: rows("train", k) for k in targets},
                                              **{k: v[0] for k, v in binary.items()}}, x_te, alpha=alpha)
    groups = np.repeat(data["test"]["video"], data["test"]["speed"][0].size)
    kw = dict(**boot, keep_boots=True)
    est = {key: lp.r2_ci(rows("test", target), pred_te[target], groups, **kw)
           for key, target in (("motion_r2", "flow"), ("speed_r2", "speed"), ("mv_r2", "mv")) if target in targets}
    fate = lp.binary_scores(pred_tr["fate"], binary["fate"][0], pred_te["fate"], binary["fate"][1], groups, **kw)
    fg = lp.binary_scores(pred_tr["fg"], binary["fg"][0], pred_te["fg"], binary["fg"][1], groups, **kw)
    est.update(common_fate_auroc=fate["auroc"], fg_auroc=fg["auroc"], fg_balanced_acc=fg["balanced_acc"])
    if tokenizer is not None:
        codes_te = still_codes(tokenizer, encoder, data["test"]["frames"])
        est["code_purity"] = lp.code_purity_ci(codes_te, rows("test", "majority"), groups, **kw)
        est["code_purity_chance"] = lp.chance_code_purity(codes_te, rows("test", "majority"), seed=boot["seed"])
        est["codes_on_probe_frames"] = len(np.unique(codes_te))
    return est, x_te, pred_te["fate"].reshape(data["test"]["fate"].shape)


def run_latents_stage(cfg: RunConfig, run_dir: Path, out: Path, *, log: Callable[[str], None] = print
                      ) -> dict[str, float]:
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    a = cfg.analysis
    device = stage_device(cfg)  # run.device, checked before any work
    pretrained = load_tokenizer(run_dir, device=device)
    stride = pretrained.cfg.spatial_factor
    train_store = PushWorldStore(data_dir / "pushworld", "train")
    test_store = PushWorldStore(data_dir / "pushworld", "test")
    timing: dict[str, float] = {}

    # Codebook usage on held-out clips.
    clips = ClipBatches(test_store, clip_frames=pretrained.cfg.clip_frames, batch_size=1).fixed(cfg.pretrain.n_eval_clips)
    with torch.no_grad():
        codes = torch.cat([pretrained.encode(c.to(device))[1].flatten().cpu() for c in clips.split(8)])
    usage = np.bincount(codes.numpy(), minlength=pretrained.cfg.codebook_size)
    u = lp.usage_stats(usage)
    metrics: dict[str, float] = {
        "latents/codes_used": int((usage > 0).sum()),
        "latents/codebook_size": pretrained.cfg.codebook_size,
        "latents/code_perplexity": u["perplexity"],
        "latents/dead_codes": u["dead_codes"],
    }

    # Still frames and their targets: training videos (not the study's validation videos) and test videos.
    t0 = time.perf_counter()
    n_train = max(1, len(train_store) - cfg.seg.n_val_videos)
    train_videos = range(min(a.probe_train_videos, n_train))
    test_videos = range(min(a.probe_test_videos or len(test_store), len(test_store)))
    times = lp.probe_times(train_store.n_frames, a.frames_per_video, a.fate_frames)
    cache = MotionCache(out / "motion_cache")
    data = {split: lp.probe_data(store, videos, times, stride=stride, fate_frames=a.fate_frames,
                                 n_classes=len(CLASS_NAMES), cache=cache,
                                 mv_source=cfg.predict.motion_source if a.mv_probe else None)
            for split, store, videos in (("train", train_store, train_videos), ("test", test_store, test_videos))}
    timing["latents/targets_wall_s"] = time.perf_counter() - t0
    test = data["test"]
    fg_te = test["fg"] > 0.5
    metrics.update({
        "latents/n_probe_train_frames": len(data["train"]["frames"]),
        "latents/n_probe_test_frames": len(test["frames"]),
        "latents/n_probe_test_videos": len(test_videos),
        "latents/fate_frames": a.fate_frames,
        "latents/fg_prevalence": float(fg_te.mean()),
        "latents/common_fate_prevalence": float(test["fate"].mean()),
        "latents/fg_balanced_acc/majority_class": 0.5,  # a constant prediction, whatever the imbalance
        "latents/fg_accuracy/majority_class": float(max(fg_te.mean(), 1 - fg_te.mean())),
    })

    # a few test frames for the figure: what the probes see and what they predict
    example = np.linspace(0, len(test["frames"]) - 1, N_EXAMPLES).round().astype(int)
    arrays = {"code_usage": usage, "probe_times": times,
              **{f"example_{k}": test[k][example] for k in ("frames", "speed", "fate", "fg")}}
    t0 = time.perf_counter()
    encoders = build_encoders(cfg, run_dir, log, device)
    estimates: dict[str, dict] = {}
    test_features: dict[str, np.ndarray] = {}
    shared = SharedCodes()
    draws: dict[str, list[dict]] = {}
    for name, (encoder, tokenizer) in encoders.items():
        est, features, fate_scores = probe_encoder(
            encoder, tokenizer, data, stride=stride, alpha=a.ridge_alpha, boot=dict(n_boot=a.n_boot, seed=a.ci_seed),
            codes=shared)
        draws.setdefault(name.split("@")[0], []).append(est)
        if "@" not in name:  # the figures and the embedding show the first draw
            test_features[name] = features
            arrays[f"example_fate_score_{name}"] = fate_scores[example]
    for name, ests in draws.items():
        # one draw: its estimates; several (a random twin): their mean, the interval resampling the draws too
        est = {**ests[0], **{key: lp.pool_draws([e[key] for e in ests], seed=a.ci_seed)
                             for key, v in ests[0].items() if isinstance(v, lp.Estimate)}}
        estimates[name] = est
        if len(ests) > 1:
            metrics[f"latents/n_draws/{name}"] = len(ests)
        for key, e in est.items():
            if isinstance(e, lp.Estimate):
                _put(metrics, f"latents/{key}/{name}", e.score)
        if "code_purity" in est:
            metrics[f"latents/code_purity/{name}_chance"] = est["code_purity_chance"]
            metrics[f"latents/codes_on_probe_frames/{name}"] = est["codes_on_probe_frames"]
    for pre, rnd in PAIRS:  # the same resamples of the test videos for both: paired differences
        if pre in estimates and rnd in estimates:
            for key in PROBE_METRICS:
                if key in estimates[pre]:
                    _put(metrics, f"latents/diff_vs_random/{key}/{pre}",
                         lp.paired_difference(estimates[pre][key], estimates[rnd][key]))
    timing["latents/probes_wall_s"] = time.perf_counter() - t0
    write_json(out / "encoders.json", {"probed": list(draws), "random_draw_seeds": draw_seeds(cfg),
                                       "skipped": [e for e in a.encoders if e not in encoders]})

    # 2-D embedding of test tokens (the same tokens for both tokenizers), for the figure.
    t0 = time.perf_counter()
    majority, fg_frac = lp.target_rows(test["majority"]), lp.target_rows(test["fg"])
    pick = np.random.default_rng(0).choice(len(majority), size=min(a.n_points, len(majority)), replace=False)
    for name, key in (("tokenizer", "pretrained"), ("random_tokenizer", "random")):
        if name in test_features:
            arrays[f"embedding_{key}"] = embed_2d(test_features[name][pick], a.embedding)
            arrays[f"majority_{key}"] = majority[pick]
            arrays[f"fg_fraction_{key}"] = fg_frac[pick]
    # the pixels under each embedded token, for the UMAP explorer (vpe_lib.explore.latents.umap_explorer)
    n, h, w = test["majority"].shape[:3]
    frame_i, cell = np.divmod(pick, h * w)
    where = list(zip(frame_i, zip(*np.divmod(cell, w))))
    arrays["token_patches"] = np.stack([patch_at(test["frames"][f], r, c, stride) for f, (r, c) in where])
    # and each token in its neighbourhood, outlined: the report's hover preview (vpe_lib.figures.hover_umap)
    arrays["token_context"] = np.stack([context_patch(test["frames"][f], r, c, stride) for f, (r, c) in where])
    metrics["latents/umap_wall_s"] = time.perf_counter() - t0
    metrics.update(timing)
    np.savez_compressed(out / "latents.npz", **arrays)
    write_metrics(out, metrics)
    return metrics
