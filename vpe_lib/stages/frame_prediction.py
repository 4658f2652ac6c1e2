"""Stage 03's pixel judgement of sampled futures: PSNR / SSIM per predicted frame on test clips, over the whole
frame, the pixels that moved since the condition frame and those that stayed put, for each model and three
references (copying the condition frame in pixels, copying it in token space, and the tokenizer's reconstruction
of the true future: the ceiling); and the filmstrips of several samples from the same frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vpe_lib.config import RunConfig
from vpe_lib.data.motion import remove_camera_motion
from vpe_lib.data.prediction_videos import PredictionVideos
from vpe_lib.data.samplers import from_unit_range, to_unit_range
from vpe_lib.eval.metrics import ssim
from vpe_lib.models.tokenizer import VQVAE3D
from vpe_lib.models.transformer import ARVideoTransformer
from vpe_lib.stages.common import write_json
from vpe_lib.train.device import module_device
from vpe_lib.train.distributed import is_main_process


def moving_pixels(flow: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(T, H, W) bool: pixels that have moved since frame 0 (ground-truth flow, the camera's median
    motion removed): frame k is marked where any step j < k moved by more than `threshold` px."""
    return moved_since_first(np.linalg.norm(remove_camera_motion(flow), axis=-1) > threshold)


def moved_since_first(step: np.ndarray) -> np.ndarray:
    """(T, H, W) bool from per-step motion `step` (step j: from frame j to j + 1): frame k is marked
    where any step j < k moved."""
    moved = np.zeros(step.shape, bool)
    moved[1:] = np.logical_or.accumulate(step[:-1], axis=0)
    return moved


def psnr_db(mse: float) -> float:
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def squared_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-pixel squared error averaged over colour: (N, T, H, W) from (N, T, H, W, 3) uint8."""
    return ((pred.astype(np.float64) - true.astype(np.float64)) ** 2).mean(-1)


def frame_errors(sq: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame index: MSE over all pixels and over moving pixels (summed error, counted pixels),
    pooled over clips. sq = `squared_error` (N, T, H, W), moving (N, T, H, W)."""
    whole = sq.mean(axis=(0, 2, 3))
    n_moving = moving.sum(axis=(0, 2, 3))
    moving_mse = np.where(n_moving > 0, (sq * moving).sum(axis=(0, 2, 3)) / np.maximum(n_moving, 1), np.nan)
    return whole, moving_mse


@torch.no_grad()
def decode(tokenizer: VQVAE3D, codes: torch.Tensor) -> np.ndarray:
    """codes (b t h w, any device) -> frames (b T H W 3) uint8, decoded on the tokenizer's device."""
    frames = from_unit_range(tokenizer.decode_codes(codes.to(module_device(tokenizer))))  # a numpy array
    return rearrange(frames, "b c t h w -> b t h w c")


@torch.no_grad()
def sample_futures(model, cond: torch.Tensor, p, seed: int) -> torch.Tensor:
    """Sampled future codes (on the CPU) for condition codes, on the model's device. The generator
    stays on the CPU: the transformers draw their noise there and move it (the same seed, the same noise)."""
    g = torch.Generator().manual_seed(seed)
    cond = cond.to(module_device(model))
    if isinstance(model, ARVideoTransformer):
        return model.generate(cond, temperature=p.temperature, generator=g).cpu()
    return model.generate(cond, steps=p.maskgit_steps, temperature=p.temperature, generator=g).cpu()


def frame_prediction(cfg: RunConfig, tokenizer: VQVAE3D, models: dict, tokens: dict, videos: PredictionVideos,
                     out: Path) -> dict[str, float]:
    """PSNR / SSIM per predicted frame on `n_sample_clips` test clips, whole frame and moving pixels,
    for each model and the three references; filmstrips of several samples from the same frame."""
    p = cfg.predict
    n = min(p.n_sample_clips, len(tokens["codes"]))
    pick = np.linspace(0, len(tokens["codes"]) - 1, n).round().astype(int)
    codes = torch.from_numpy(tokens["codes"][pick].astype(np.int64))
    cond = torch.from_numpy(tokens["cond"][pick].astype(np.int64))
    vids, starts = tokens["video"][pick], tokens["start"][pick]
    true = np.stack([videos.frames(int(v), slice(int(s), int(s) + p.clip_frames)) for v, s in zip(vids, starts)])
    moving = np.stack([moved_since_first(videos.moving_steps(int(v), slice(int(s), int(s) + p.clip_frames)))
                       for v, s in zip(vids, starts)])
    t_lat = codes.shape[1]
    tf = tokenizer.cfg.temporal_factor
    # the first frame that no condition latent frame covers: what is predicted, not given
    first = 1 + (p.cond_frames - 1) * tf if tokenizer.cfg.causal else p.cond_frames * tf
    preds = {
        "copy_pixels": np.repeat(true[:, :1], p.clip_frames, axis=1),
        "copy_tokens": decode(tokenizer, cond[:, :1].expand(-1, t_lat, -1, -1)),
        "ceiling": decode(tokenizer, codes),
    }
    samples = {}
    n_show = min(3, n)  # clips in the filmstrips
    for kind, model in models.items():
        futures = sample_futures(model, cond, p, seed=0)
        preds[kind] = decode(tokenizer, futures)
        shown = cond[:n_show].repeat_interleave(p.n_shown_samples, 0)
        samples[kind] = decode(tokenizer, sample_futures(model, shown, p, seed=1)).reshape(
            n_show, p.n_shown_samples, *preds[kind].shape[1:])
    if is_main_process():
        np.savez_compressed(out / "samples.npz", true=true[:n_show], **{f"sample_{k}": v for k, v in samples.items()},
                            **{f"ref_{k}": preds[k][:n_show] for k in ("copy_pixels", "copy_tokens", "ceiling")})
    m: dict[str, float] = {"predict/first_predicted_frame": first, "predict/n_sample_clips": n,
                           "predict/moving_pixel_fraction": float(moving[:, first:].mean())}
    per_frame = {}
    for name, pred in preds.items():
        sq, mov_mask = squared_error(pred[:, first:], true[:, first:]), moving[:, first:]
        whole, mov = frame_errors(sq, mov_mask)
        m[f"predict/{name}/psnr_db"] = psnr_db(float(sq.mean()))
        m[f"predict/{name}/psnr_db_moving"] = psnr_db(float(sq[mov_mask].mean())) if mov_mask.any() else float("nan")
        # the pixels that truly stayed put: a sample should be as good there as copying the tokens (the gate)
        m[f"predict/{name}/psnr_db_static"] = psnr_db(float(sq[~mov_mask].mean())) if (~mov_mask).any() else float("nan")
        as_images = lambda v: to_unit_range(v[:, first:]).flatten(0, 1).permute(0, 3, 1, 2)  # noqa: E731
        m[f"predict/{name}/ssim"] = ssim(as_images(pred), as_images(true))
        per_frame[name] = {"psnr_db": [psnr_db(e) for e in whole], "psnr_db_moving": [psnr_db(e) if e == e else None for e in mov]}
        for j, (e, em) in enumerate(zip(whole, mov)):
            m[f"predict/{name}/frame{first + j}/psnr_db"] = psnr_db(e)
            m[f"predict/{name}/frame{first + j}/psnr_db_moving"] = psnr_db(em) if em == em else float("nan")
    if is_main_process():
        write_json(out / "per_frame_psnr.json", {"first_predicted_frame": first, "frames": per_frame})
    return m
