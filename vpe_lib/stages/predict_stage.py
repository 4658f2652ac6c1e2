"""Stage 03: video prediction over the tokenizer's codes.

Two frame-conditioned transformers (MAGVIT COMMIT masked, VideoGPT-style autoregressive;
`vpe_lib.models.transformer`) learn p(future tokens | condition frame) on PushWorld clips:

1. Tokenize: every training / validation / test video is cut into non-overlapping clips of
   `predict.clip_frames`; each clip's codes, and the condition tokens (its first frame edge-padded
   to a clip and encoded, first `cond_frames` latent frames, as COMMIT does). Cached, keyed by the
   tokenizer checkpoint's digest and the clip settings.
2. Train each model (resumable, learning curve in held-out bits per token on validation videos).
3. Judge on test videos:
   * cross-entropy per future token, in bits, per latent horizon, against the unigram code
     distribution, copying the condition tokens (smoothed; the mixing weight fitted on training
     clips) and a (condition code -> future code) table at the same place (counted on training
     clips, its mixing weight fitted on validation clips). Futures are stochastic (the arm's actions are not given), so likelihood is the
     clean test that a model has learned something;
   * PSNR / SSIM per predicted frame of sampled futures, over the whole frame and over the truly
     moving pixels, against copying the condition frame in pixels, copying it in token space, and the
     tokenizer's reconstruction of the true future (the ceiling).

The non-learned baselines are `vpe_lib.eval.token_baselines`, the pixel judgement `frame_prediction.py`.
The masking study (the same masked model pretrained with other masks) is `masking_study.py`; both train
through `predictor_training.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat

from vpe_lib.config import RunConfig
from vpe_lib.atomic import atomic_open
from vpe_lib.data.errors import DataError
from vpe_lib.data.motion import moving_tokens
from vpe_lib.data.prediction_videos import (MOTION_KINDS, PredictionVideos, PushWorldVideos,
                                            davis_prediction_videos, video_prediction_videos)
from vpe_lib.data.seg_sources import parse_source
from vpe_lib.data.samplers import to_unit_range
from vpe_lib.data.store import PushWorldStore
from vpe_lib.models.code_prior import TablePrior
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.transformer import TransformerConfig
from vpe_lib.eval.token_baselines import fit_baselines
from vpe_lib.stages.common import require, stage_device, write_json, write_metrics
from vpe_lib.stages.pretrain_stage import load_tokenizer, loader_settings
from vpe_lib.stages.frame_prediction import frame_prediction
from vpe_lib.stages.masking_study import run_masking_study
from vpe_lib.stages.predictor_training import future_bits, run_folder, train_predictor, transformer_config
from vpe_lib.stages.seg_protocol import file_digest, run_key
from vpe_lib.train.device import module_device
from vpe_lib.train.distributed import barrier, is_main_process



# ---------------------------------------------------------------------------
# clips and their tokens


def clip_starts(n_frames: int, clip_frames: int) -> list[int]:
    """Non-overlapping clips of a video: each frame is in at most one clip, so a test clip's future
    is never a training clip's past."""
    return list(range(0, n_frames - clip_frames + 1, clip_frames))


def prediction_videos(store: PushWorldStore, n_val_videos: int) -> dict[str, PushWorldVideos]:
    """PushWorld's train / val videos: val = the last `n_val_videos` training videos, as in the
    segmentation study (so its validation videos are never used to pretrain the predictor either)."""
    return {"train": PushWorldVideos(store, range(0, len(store) - n_val_videos)),
            "val": PushWorldVideos(store, range(len(store) - n_val_videos, len(store)))}


def stage_videos(cfg: RunConfig, run_dir: Path) -> dict[str, PredictionVideos]:
    """train / val / test videos of the run's source: PushWorld's store (the data stage's), the
    DAVIS sequences of the study's split, or a `video:` source's files split by file (the same the
    tokenizer pretrained on and was held out from).
    A source without video (COCO stills) raises ValueError."""
    kind = parse_source(cfg.data.source)[0]
    if kind == "pushworld":
        data_dir = require(run_dir, "data", "pushworld/manifest.json") / "pushworld"
        test_store = PushWorldStore(data_dir, "test")
        return {**prediction_videos(PushWorldStore(data_dir, "train"), cfg.seg.n_val_videos),
                "test": PushWorldVideos(test_store, range(len(test_store)))}
    if kind == "davis":
        return davis_prediction_videos(cfg.data, min_frames=cfg.predict.clip_frames)
    if kind == "video":
        return video_prediction_videos(cfg.data)
    raise ValueError(f"data.source {cfg.data.source!r} has no video to predict ({kind} holds still images)")


@torch.no_grad()
def tokenize_clips(tokenizer: VQVAE3D, videos: PredictionVideos, *, clip_frames: int, cond_frames: int,
                   batch_size: int = 16) -> dict[str, np.ndarray]:
    """codes (N, t, h, w), cond (N, cond_frames, h, w), video (N,), start (N,) for every clip of
    every video (non-overlapping clips; a video's frames past its last whole clip are not used)."""
    tokenizer.eval()
    device = module_device(tokenizer)
    items = [(v, s) for v in videos.ids for s in clip_starts(videos.num_frames(v), clip_frames)]
    if not items:
        raise DataError(f"{videos.name}: no video has {clip_frames} frames (predict.clip_frames)")
    codes, cond = [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        frames = np.stack([videos.frames(v, slice(s, s + clip_frames)) for v, s in chunk])  # b t h w c
        clip = rearrange(to_unit_range(frames), "b t h w c -> b c t h w").to(device)
        codes.append(tokenizer.encode(clip)[1].cpu())
        # COMMIT: the condition frame edge-padded to the clip length, encoded by the same tokenizer
        padded = repeat(clip[:, :, 0], "b c h w -> b c t h w", t=clip_frames)
        cond.append(tokenizer.encode(padded)[1][:, :cond_frames].cpu())
    return {"codes": torch.cat(codes).numpy().astype(np.int16), "cond": torch.cat(cond).numpy().astype(np.int16),
            "video": np.array([v for v, _ in items]), "start": np.array([s for _, s in items])}


def videos_key(videos: dict[str, PredictionVideos]) -> str:
    """What names a real source's clips in cache keys: every split's sequences, their frame counts
    and the frame size."""
    return run_key(json.dumps({split: v.identity for split, v in videos.items()}, sort_keys=True))


def cached_tokens(cfg: RunConfig, run_dir: Path, out: Path, tokenizer: VQVAE3D, *, weights: Path | None = None,
                  videos: dict[str, PredictionVideos] | None = None) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """Tokens of every split, cached in out/tokens/<split>_<key>.npz (key: tokenizer digest + data +
    clip settings), and the key: whatever is trained on these tokens is keyed by it too. Under
    torchrun rank 0 tokenizes and writes the cache; the other ranks wait, then read it. `weights`:
    the final.pt `tokenizer` was loaded from, when not the run's main one (another pretraining seed);
    `videos`: the stage's (`stage_videos`), read again when not given."""
    p = cfg.predict
    weights = weights or require(run_dir, "pretrain", "final.pt") / "final.pt"
    videos = videos or stage_videos(cfg, run_dir)
    if parse_source(cfg.data.source)[0] == "pushworld":  # the key's layout before real sources (caches stay valid)
        data_dir = require(run_dir, "data", "pushworld/manifest.json") / "pushworld"
        key = run_key(file_digest(weights), file_digest(data_dir / "manifest.json"), p.clip_frames,
                      p.cond_frames, cfg.seg.n_val_videos)
    else:
        key = run_key(file_digest(weights), videos_key(videos), p.clip_frames, p.cond_frames)
    paths = {split: out / "tokens" / f"{split}_{key}.npz" for split in videos}
    for split, split_videos in videos.items():
        if is_main_process() and not paths[split].exists():
            arrays = tokenize_clips(tokenizer, split_videos, clip_frames=p.clip_frames, cond_frames=p.cond_frames)
            with atomic_open(paths[split]) as f:  # a killed run never leaves half a cache
                np.savez(f, **arrays)
    barrier()  # (torchrun) the cache is complete before another rank reads it
    tokens = {}
    for split, path in paths.items():
        with np.load(path) as z:
            tokens[split] = {k: z[k] for k in z.files}
    return tokens, key


# ---------------------------------------------------------------------------
# training


def train_stage_predictor(cfg: RunConfig, kind: str, tcfg: TransformerConfig, tokens: dict, tokens_key: str,
                          out: Path, prior: TablePrior, *, device, progress: bool, seed: int | None = None):
    """One of the stage's predictors with the profile's recipe, in its keyed folder under out/<kind>/ ->
    (TrainResult, folder). seed: another training seed (that of an extra tokenizer seed); None = the recipe's."""
    p = cfg.predict
    train_cfg = dataclasses.replace(p.train_config(kind), progress=progress,
                                    **({} if seed is None else {"seed": seed}))
    folder = run_folder(out / kind, tokens_key, tcfg, train_cfg, p.masking, p.mask_ratio)
    desc = f"predictor [{kind}]" if seed is None else f"predictor [{kind}, tokenizer seed {seed}]"
    result = train_predictor(kind, tcfg, tokens["train"], train_cfg, folder, mask_ratio=p.mask_ratio,
                             masking=p.masking, eval_tokens=tokens["val"], desc=desc, device=device, prior=prior,
                             **loader_settings(cfg))
    return result, folder


def train_seed_predictors(cfg: RunConfig, run_dir: Path, out: Path, tcfg: TransformerConfig, *,
                          device, progress: bool = True, videos: dict | None = None) -> dict[str, float]:
    """Both predictors on each extra pretraining seed's tokenizer (pretrain/seeds/seed<k>), trained with
    seed k, against that tokenizer's own code table; out/<kind>/seed<k>.json names each. Test bits per
    token: predict/<kind>/seed<k>/..., predict/code_table/seed<k>/...."""
    p, metrics = cfg.predict, {}
    for seed in cfg.pretrain.extra_seeds:
        weights = require(run_dir, "pretrain", f"seeds/seed{seed}/final.pt") / f"seeds/seed{seed}/final.pt"
        tokenizer = load_tokenizer(run_dir, weights=weights, device=device)
        tokens, key = cached_tokens(cfg, run_dir, out, tokenizer, weights=weights, videos=videos)
        bits, prior, _ = fit_baselines(tokens, tokenizer.cfg.codebook_size, p.cond_frames)
        metrics[f"predict/code_table/seed{seed}/nll_bits_per_token"] = float(bits["code_table"].mean())
        for kind in p.models:
            result, folder = train_stage_predictor(cfg, kind, tcfg, tokens, key, out, prior, device=device,
                                                   progress=progress, seed=seed)
            if is_main_process():
                write_json(out / kind / f"seed{seed}.json", {"folder": folder.name, "tokenizer": str(weights)})
            metrics[f"predict/{kind}/seed{seed}/nll_bits_per_token"] = float(future_bits(result.model, tokens["test"]).mean())
            metrics[f"predict/{kind}/seed{seed}/train_wall_s"] = result.wall_time_s
    barrier()
    return metrics


def static_token_metrics(bits: dict[str, np.ndarray], test: dict, videos: PredictionVideos, grid, clip_frames: int,
                         cf: int) -> dict[str, float]:
    """Where do the models know more than the table? Bits per future token on the tokens whose patch has
    not moved since the condition (`videos.motion_kind`: ground-truth flow, or the frame-difference proxy)
    and on the others; and how often a static token keeps the condition's code (a vocabulary stationary in
    time would make this 1)."""
    moving = np.stack([moving_tokens(videos.moving_steps(int(v), slice(int(s), int(s) + clip_frames)), grid)
                       for v, s in zip(test["video"], test["start"])])
    static = ~np.logical_or.accumulate(moving, axis=1)[:, cf:]  # unmoved from the condition to that latent frame
    future = test["codes"][:, cf:]
    m = {"predict/static_token_fraction": float(static.mean()),
         "predict/copy_tokens/static_exact_share": float((future == test["cond"][:, :1])[static].mean())
         if static.any() else float("nan")}
    for name, b in bits.items():
        if static.any():
            m[f"predict/{name}/static_bits_per_token"] = float(b[static].mean())
        if (~static).any():
            m[f"predict/{name}/moving_bits_per_token"] = float(b[~static].mean())
    return m


# ---------------------------------------------------------------------------
# the stage


def run_predict_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True) -> dict[str, float]:
    """Under torchrun (`vpe stage predict`, vpe_lib.stages.runner) every rank trains its share of
    each batch and computes the same evaluations; rank 0 alone writes the stage's files."""
    if parse_source(cfg.data.source)[0] == "coco":
        # still images: nothing to predict. Said in the metrics (and on the page), never silently.
        metrics = {"predict/skipped_no_video": 1.0}
        if is_main_process():
            write_metrics(out, metrics)
        return metrics
    device = stage_device(cfg)
    p = cfg.predict
    tokenizer = load_tokenizer(run_dir, device=device)
    videos = stage_videos(cfg, run_dir)
    t0 = time.perf_counter()
    tokens, tokens_key = cached_tokens(cfg, run_dir, out, tokenizer, videos=videos)
    metrics: dict[str, float] = {"predict/tokenize_wall_s": time.perf_counter() - t0,
                                 # 1: the moving-pixel scores come from frame differencing (no flow), not motion
                                 "predict/motion_is_proxy": float(videos["test"].motion_kind != "flow")}
    if is_main_process():
        write_json(out / "videos.json", {split: {"name": v.name, "videos": len(v), "motion": MOTION_KINDS[v.motion_kind]}
                                         for split, v in videos.items()})
    grid = tuple(tokens["train"]["codes"].shape[1:])
    tcfg = transformer_config(cfg, tokenizer, grid)
    K = tokenizer.cfg.codebook_size
    cf = p.cond_frames
    test_future = tokens["test"]["codes"][:, cf:]
    bits, prior, base_metrics = fit_baselines(tokens, K, cf)
    metrics.update(base_metrics)
    # how often a future token is the condition token at the same place (plain copying's ceiling)
    metrics["predict/copy_tokens/exact_share"] = float((test_future == tokens["test"]["cond"][:, :1]).mean())
    models = {}
    for kind in p.models:
        result, folder = train_stage_predictor(cfg, kind, tcfg, tokens, tokens_key, out, prior, device=device,
                                               progress=progress)
        if is_main_process():
            write_json(out / kind / "latest.json", {"folder": folder.name})
        barrier()  # (torchrun) the masking study's ranks read latest.json
        models[kind] = result.model.eval()
        bits[kind] = future_bits(models[kind], tokens["test"])
        metrics[f"predict/{kind}/train_wall_s"] = result.wall_time_s
        metrics[f"predict/{kind}/train_clips_per_s"] = result.items_per_s
        metrics[f"predict/{kind}/params"] = sum(q.numel() for q in models[kind].parameters())
    if p.per_seed and cfg.pretrain.extra_seeds:
        # seeds vary all pretraining: each extra tokenizer seed gets its own predictors (the heads of that
        # seed read them); the main models are those of the main tokenizer's seed
        for kind in models:
            metrics[f"predict/{kind}/seed{cfg.pretrain.train.seed}/nll_bits_per_token"] = float(bits[kind].mean())
        metrics[f"predict/code_table/seed{cfg.pretrain.train.seed}/nll_bits_per_token"] = float(bits["code_table"].mean())
        metrics.update(train_seed_predictors(cfg, run_dir, out, tcfg, device=device, progress=progress,
                                             videos=videos))
    for name, b in bits.items():
        metrics[f"predict/{name}/nll_bits_per_token"] = float(b.mean())
        for h in range(b.shape[1]):
            metrics[f"predict/{name}/horizon{h + 1}/nll_bits_per_token"] = float(b[:, h].mean())
    metrics["predict/n_test_clips"] = len(test_future)
    metrics["predict/n_train_clips"] = len(tokens["train"]["codes"])
    metrics["predict/tokens_per_clip"] = int(np.prod(grid))
    metrics["predict/uniform_bits_per_token"] = math.log2(K)
    metrics.update(static_token_metrics(bits, tokens["test"], videos["test"], grid, p.clip_frames, cf))
    t0 = time.perf_counter()
    metrics.update(frame_prediction(cfg, tokenizer, models, tokens["test"], videos["test"], out))
    metrics["predict/sampling_wall_s"] = time.perf_counter() - t0
    if p.study_maskings:

        t0 = time.perf_counter()
        metrics.update(run_masking_study(cfg, tokenizer, tokens, tokens_key, tcfg, videos, out, progress=progress,
                                         device=device, prior=prior))
        metrics["masking/wall_s"] = time.perf_counter() - t0
    if is_main_process():
        write_metrics(out, metrics)
    return metrics
