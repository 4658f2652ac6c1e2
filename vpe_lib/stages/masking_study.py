"""The masking study (part of stage 03): does motion-guided masking (MGM, from the codec's motion
vectors) pretrain a better masked transformer, and with fewer updates, than random or tube masking?

Each strategy × budget (a fraction of the main model's updates) × seed trains the masked transformer
at `predict.study_mask_ratio` (0: a ratio per sample from MaskGIT's cosine schedule, the main
model's recipe, which then *is* the random / x1 row of its seed). Each is judged by closed-form probes on its frozen features of *still
frames* (training videos fit the probe, test videos score it): foreground IoU and R² of the true
motion magnitude. The control is the same transformer with random weights. Where the masks fall is
measured against the ground-truth moving tokens (recall, and how much motion the visible tokens keep).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat

from vpe_lib.config import RunConfig
from vpe_lib.data.motion import (MotionCache, block_matching_motion, codec_motion, codec_motion_from_file,
                                 fill_missing, moving_tokens, token_motion)
from vpe_lib.data.errors import DataError
from vpe_lib.data.prediction_videos import PredictionVideos
from vpe_lib.data.samplers import to_unit_range
from vpe_lib.data.store import PushWorldStore
from vpe_lib.eval.probes import foreground_probe_iou, motion_probe_r2, token_targets
from vpe_lib.eval.segmentation import paired_difference
from vpe_lib.data.masking import make_mask, mask_motion_overlap
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.transformer import TransformerConfig, build_predictor
from vpe_lib.stages.predictor_training import TokenBatches, load_predictor, predictor_folder, run_folder, train_predictor
from vpe_lib.stages.pretrain_stage import loader_settings, read_history
from vpe_lib.train.device import module_device
from vpe_lib.train.distributed import is_main_process
from vpe_lib.data.clips import FrameFolderSource
from vpe_lib.data.video import read_video
from vpe_lib.stages.common import REPO_ROOT, require


def budget_name(fraction: float) -> str:
    """1.0 -> 'x1', 2/3 -> 'x0.67', 1/3 -> 'x0.33' (the metric names of the issue)."""
    return f"x{fraction:.2g}"


def video_clip_motion(videos: PredictionVideos, video: int, starts, clip_frames: int, grid, cache: MotionCache,
                      source: str) -> np.ndarray:
    """Token motion magnitude (n_clips, t, h, w) of a video's clips, from the motion vectors of the
    whole video's H.264 encoding (its decoded frames encoded once, as a user's camera would; camera median
    removed, I-frames and intra blocks filled) or, when configured, block matching; cached per video
    (a few KB, not the per-pixel field)."""
    stream = videos.codec_file(video) if source == "codec" else None

    def compute() -> np.ndarray:
        if source == "block_matching":
            field = block_matching_motion(videos.frames(video))
        else:
            if stream is not None:  # the file's own vectors (B-frames and all), at the decoded frames' size
                field, valid = codec_motion_from_file(stream, max_frames=videos.num_frames(video),
                                                      size=videos.frames(video, 0).shape[:2])
                if len(field) < videos.num_frames(video):
                    raise DataError(f"its codec stream gave motion for {len(field)} frames, the decoder "
                                    f"{videos.num_frames(video)}", path=stream, field="motion_vectors")
            else:
                field, valid = codec_motion(videos.frames(video))
            if not valid.any():
                raise DataError("the H.264 encoding of this video carries no motion vectors; set "
                                "predict.motion_source=block_matching to use block matching instead",
                                path=f"{videos.name} video {video}", field="motion_vectors")
            field = fill_missing(field, valid)
        return np.stack([token_motion(field[s:s + clip_frames], grid) for s in starts]).astype(np.float32)
    key = {**videos.identity, "video": int(video), "source": source, "grid": list(grid),
           "starts": [int(s) for s in starts], "clip_frames": clip_frames,
           **({"stream": str(stream)} if stream is not None else {})}
    return cache.get(key, compute)


def clip_motions(videos: PredictionVideos, tokens: dict, grid, clip_frames: int, cache: MotionCache,
                 source: str) -> np.ndarray:
    """(N, t, h, w) token motion magnitude of every clip of `tokens`, for MGM."""
    out = np.zeros((len(tokens["video"]), *grid), np.float32)
    for v in np.unique(tokens["video"]):
        rows = np.flatnonzero(tokens["video"] == v)
        out[rows] = video_clip_motion(videos, int(v), tokens["start"][rows], clip_frames, grid, cache, source)
    return out


def measure_motion_cost(videos: PredictionVideos, ids, *, block: int = 8) -> dict[str, float]:
    """ms per frame of codec vectors (encode + decode with export_mvs + field) against block matching,
    on the same frames in one run."""
    frames = [videos.frames(int(v)) for v in ids]
    n = sum(len(f) for f in frames)
    t0 = time.perf_counter()
    for f in frames:
        codec_motion(f)
    codec_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in frames:
        block_matching_motion(f, block=block)
    bm_s = time.perf_counter() - t0
    return {"mv/extract_ms_per_frame": 1e3 * codec_s / n, "mv/block_matching_ms_per_frame": 1e3 * bm_s / n,
            "mv/block_matching_over_codec": bm_s / codec_s}


def probe_frames(videos: PredictionVideos, ids, per_video: int):
    """Still frames, foreground masks (None where the videos have no labels) and motion magnitude
    (`videos.motion_kind`: true flow with the camera removed, or the frame-difference proxy) of some videos."""
    frames, fg, motion = [], [], []
    for v in ids:
        t = np.linspace(0, videos.num_frames(int(v)) - 2, per_video).round().astype(int)  # each has a next frame
        frames.append(videos.frames(int(v), t))
        if videos.has_labels:
            fg.append(videos.foreground(int(v), t))
        motion.append(videos.step_motion(int(v), t))
    return np.concatenate(frames), np.concatenate(fg) if fg else None, np.concatenate(motion)


@torch.no_grad()
def condition_tokens(tokenizer: VQVAE3D, frames: np.ndarray, clip_frames: int, cond_frames: int,
                     batch_size: int = 32) -> torch.Tensor:
    """Still frames (n, H, W, 3) uint8 -> COMMIT condition tokens (n, cond_frames, h, w), on the CPU."""
    device = module_device(tokenizer)
    out = []
    for i in range(0, len(frames), batch_size):
        x = rearrange(to_unit_range(frames[i:i + batch_size]), "b h w c -> b c h w").to(device)
        out.append(tokenizer.encode(repeat(x, "b c h w -> b c t h w", t=clip_frames))[1][:, :cond_frames].cpu())
    return torch.cat(out)


@torch.no_grad()
def transformer_features(model, cond: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    model.eval()
    device = module_device(model)
    return torch.cat([model.forward_features(c.to(device)).cpu() for c in cond.split(batch_size)]).numpy()


def probe_scores(feats_train, fg_train, motion_train, feats_test, fg_test, motion_test) -> dict[str, float]:
    """Foreground IoU (omitted where the videos have no labels: fg None) and motion R² of the probes."""
    stride = motion_train.shape[-1] // feats_train.shape[-1]
    scores = {"motion_r2": motion_probe_r2(feats_train, token_targets(motion_train, stride), feats_test,
                                           token_targets(motion_test, stride))}
    if fg_train is not None:
        scores["probe_fg_iou"] = foreground_probe_iou(feats_train, fg_train, feats_test, fg_test)
    return scores


# the study's question (Fan et al. 2023): does MGM at a third of the budget match the others at the full one?
MGM_COMPARISONS = (("mgm", 1 / 3, "random", 1.0), ("mgm", 1 / 3, "tube", 1.0), ("mgm", 1.0, "random", 1.0))


def masking_differences(per_seed: dict[str, list[dict]], maskings, budgets) -> dict[str, float]:
    """Paired (by seed) differences of the probes between strategy/budget pairs, with 95% intervals:
    masking/<a>/<budget>/minus_<b>_<budget>/<probe>/{mean,ci_low,ci_high,n}."""
    out = {}
    for a, ba, b, bb in MGM_COMPARISONS:
        if a not in maskings or b not in maskings or not any(abs(x - ba) < 1e-9 for x in budgets) \
                or not any(abs(x - bb) < 1e-9 for x in budgets):
            continue
        ra, rb = per_seed.get(f"{a}/{budget_name(ba)}"), per_seed.get(f"{b}/{budget_name(bb)}")
        if not ra or not rb or len(ra) != len(rb):
            continue
        for probe in [k for k in ("probe_fg_iou", "motion_r2") if k in ra[0]]:
            d = paired_difference([r[probe] for r in ra], [r[probe] for r in rb])
            key = f"masking/{a}/{budget_name(ba)}/minus_{b}_{budget_name(bb)}/{probe}"
            out.update({f"{key}/{k}": float(d[k]) for k in ("mean", "ci_low", "ci_high", "n")})
    return out


def actual_mask_ratios(p, grid, motion: np.ndarray | None, train_tokens: dict, n: int = 256) -> dict[str, float]:
    """The share of tokens each strategy actually masks in training (as `TokenBatches` draws them: a
    fixed study_mask_ratio, or the cosine schedule's per-sample ratios when it is 0), on `n` draws."""
    out = {}
    for strategy in p.study_maskings:
        batches = TokenBatches(train_tokens, batch_size=n, seed=12345, masking=strategy, mask_ratio=p.study_mask_ratio,
                               motion=motion if strategy == "mgm" else None)
        out[f"masking/{strategy}/actual_mask_ratio"] = float(batches(0)["mask"].float().mean())
    return out


def run_masking_study(cfg: RunConfig, tokenizer: VQVAE3D, tokens: dict, tokens_key: str, tcfg: TransformerConfig,
                      videos: dict[str, PredictionVideos], out: Path, *, progress: bool = True,
                      device: torch.device | str | None = None, prior=None) -> dict[str, float]:
    """The study's metrics; its transformers train and run on `device` (default: the tokenizer's).
    prior: the code table (`predict_stage.TablePrior`) a `table_prior` transformer is built on."""
    device = module_device(tokenizer) if device is None else torch.device(device)
    p = cfg.predict
    grid = tcfg.grid
    cache = MotionCache(out / "motion_cache", write=is_main_process())  # torchrun: rank 0 writes, all compute
    m: dict[str, float] = {}
    m.update(measure_motion_cost(videos["test"], videos["test"].ids[:4]))
    motions = {}
    if "mgm" in p.study_maskings:
        t0 = time.perf_counter()
        motions = {split: clip_motions(videos[split], tokens[split], grid, p.clip_frames, cache, p.motion_source)
                   for split in ("train", "test")}
        m["masking/mgm/motion_wall_s"] = time.perf_counter() - t0
        # 1: every video's vectors came from its own codec stream; 0: from H.264 encodings of decoded frames
        m["masking/mgm/motion_from_own_stream"] = float(p.motion_source == "codec" and all(
            videos[split].codec_file(v) is not None for split in ("train", "test") for v in videos[split].ids))

    # where the masks fall: against the moving tokens of the test clips (ground truth, or the stated proxy)
    rng = np.random.default_rng(0)
    test = tokens["test"]
    moving = [moving_tokens(videos["test"].moving_steps(int(v), slice(int(s), int(s) + p.clip_frames)), grid)
              for v, s in zip(test["video"], test["start"])]
    overlap_ratio = p.study_mask_ratio or 0.75  # the schedule has no single ratio: judge masks at MGM's
    for strategy in p.study_maskings:
        stats = [mask_motion_overlap(make_mask(strategy, grid, overlap_ratio, rng,
                                               motion=motions["test"][i] if strategy == "mgm" else None), mv)
                 for i, mv in enumerate(moving)]
        for k in ("recall", "precision", "visible_moving"):
            vals = np.array([s[k] for s in stats], float)
            m[f"masking/{strategy}/moving_{k}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        m[f"masking/{strategy}/moving_overlap"] = m[f"masking/{strategy}/moving_recall"]

    # probe data: still frames of training videos (fit) and test videos (score)
    fr_tr, fg_tr, mo_tr = probe_frames(videos["train"], videos["train"].ids[:p.probe_videos], p.probe_frames_per_video)
    fr_te, fg_te, mo_te = probe_frames(videos["test"], videos["test"].ids, p.probe_frames_per_video)
    cond_tr = condition_tokens(tokenizer, fr_tr, p.clip_frames, p.cond_frames)
    cond_te = condition_tokens(tokenizer, fr_te, p.clip_frames, p.cond_frames)

    def score(model) -> dict[str, float]:
        return probe_scores(transformer_features(model, cond_tr), fg_tr, mo_tr,
                            transformer_features(model, cond_te), fg_te, mo_te)

    per_seed: dict[str, list[dict]] = {}
    for seed in p.study_seeds:
        torch.manual_seed(10_000 + seed)
        per_seed.setdefault("random_init", []).append(score(build_predictor("masked", tcfg).to(device)))
        for strategy in p.study_maskings:
            for budget in p.study_budgets:
                steps = max(1, round(budget * p.train.steps))
                train_cfg = dataclasses.replace(p.train_config("masked"), steps=steps, seed=seed, progress=progress,
                                                warmup_steps=min(p.train.warmup_steps, steps // 10),
                                                eval_every=0, ckpt_every=0)
                name = f"{strategy}/{budget_name(budget)}"
                if (strategy, budget, seed, p.study_mask_ratio) == ("random", 1.0, p.train.seed, 0.0) and \
                        (p.masking, p.mask_ratio) == ("random", 0.0) and "masked" in p.models:
                    # exactly the main masked model's recipe: read it, do not train it twice
                    main_folder = predictor_folder(out, "masked")
                    main = load_predictor(main_folder, codebook_size=tcfg.codebook_size, grid=tcfg.grid,
                                          device=device)
                    wall = [h["elapsed_s"] for h in read_history(main_folder) if "elapsed_s" in h]
                    per_seed.setdefault(name, []).append({**score(main), "train_wall_s": wall[-1] if wall else float("nan")})
                    continue
                folder = run_folder(out / "masking" / strategy / budget_name(budget) / f"seed{seed}", tokens_key,
                                    tcfg, train_cfg, strategy, p.study_mask_ratio, p.motion_source)
                result = train_predictor("masked", tcfg, tokens["train"], train_cfg, folder,
                                         masking=strategy, mask_ratio=p.study_mask_ratio,
                                         motion=motions.get("train") if strategy == "mgm" else None,
                                         desc=f"masking [{name} seed {seed}]", device=device, prior=prior,
                                         **loader_settings(cfg))
                per_seed.setdefault(name, []).append({**score(result.model), "train_wall_s": result.wall_time_s})
    tok_device = module_device(tokenizer)
    with torch.no_grad():
        tok_feats = lambda fr: torch.cat([tokenizer.forward_features(  # noqa: E731
            rearrange(to_unit_range(fr[i:i + 64]), "b h w c -> b c h w").to(tok_device), clip_frames=p.clip_frames
        ).cpu() for i in range(0, len(fr), 64)]).numpy()
        per_seed["tokenizer_latent"] = [probe_scores(tok_feats(fr_tr), fg_tr, mo_tr, tok_feats(fr_te), fg_te, mo_te)]
    m.update(masking_differences(per_seed, p.study_maskings, p.study_budgets))
    m.update(actual_mask_ratios(p, grid, motions.get("train"), tokens["train"]))
    for name, runs in per_seed.items():
        for k in runs[0]:
            vals = np.array([r[k] for r in runs], float)
            m[f"masking/{name}/{k}"] = float(vals.mean())
            m[f"masking/{name}/{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
    m["masking/n_seeds"] = len(p.study_seeds)
    m["masking/mask_ratio"] = p.study_mask_ratio  # 0: MaskGIT's cosine schedule per sample
    m["masking/overlap_ratio"] = overlap_ratio
    m["masking/n_probe_train_frames"] = len(fr_tr)
    m["masking/n_probe_test_frames"] = len(fr_te)
    return m


def mask_overlay(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Token-grid masks (t, h, w) over frames (T, H, W, 3): masked tokens whitened, for figures."""
    T, H, W = frames.shape[:3]
    t, h, w = mask.shape
    up = mask.repeat(T // t, 0).repeat(H // h, 1).repeat(W // w, 2)
    return np.where(up[..., None], (0.4 * frames + 0.6 * 255).astype(np.uint8), frames)


def mgm_figure_data(cfg: RunConfig, run_dir: Path, out: Path, *, real_video: Path | None = None,
                    n_frames: int = 8) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Frames, codec motion field and MGM mask of a PushWorld test clip and, when present, of a real
    video (`../shared/data/clips/bear.mp4` by default), for the notebook's figure."""
    p = cfg.predict
    tok = cfg.pretrain.tokenizer
    tf, sf = tok.temporal_factor, tok.spatial_factor
    store = PushWorldStore(require(run_dir, "data", "pushworld/manifest.json") / "pushworld", "test")
    n = min(n_frames, store.n_frames) // tf * tf
    clips = [("PushWorld test video 0", store.get("frames", 0, slice(0, n)))]
    shared = REPO_ROOT.parent / "shared" / "data"
    real_video = real_video or shared / "clips" / "bear.mp4"
    if real_video.exists():
        clips.append((f"{real_video.name} (real video)", read_video(real_video, size=(128, 224), max_frames=n)))
    # the real BAIR and DAVIS samples, when present beside the project (frame folders)
    for title, root, kw in (("BAIR sample (real robot pushing)", shared / "bair_samples" / "frames",
                             {"crop_border": (1, 1), "size": (64, 64)}),
                            ("DAVIS sample", shared / "davis_sample" / "JPEGImages" / "480p",
                             {"pattern": "*.jpg", "size": (128, 224)})):
        if root.exists():
            try:
                src = FrameFolderSource(root, min_frames=n, verify="header", **kw)
                if len(src):
                    clips.append((f"{title}: {Path(src.video_id(0)).name}", src.read_clip(0, 0, n)))
            except DataError:
                pass  # a sample that does not load is the clip readers' business; the figure goes on without it
    data = []
    for title, frames in clips:
        field, valid = codec_motion(frames)
        field = fill_missing(field, valid)
        s = sf if frames.shape[1] <= 64 else 8  # a coarser grid for the larger real frames
        grid = (len(frames) // tf, frames.shape[1] // s, frames.shape[2] // s)
        mask = make_mask("mgm", grid, p.study_mask_ratio or 0.75, np.random.default_rng(0), motion=token_motion(field, grid))
        data.append((title, {"frames": frames, "field": field, "overlay": mask_overlay(frames, mask)}))
    return data
