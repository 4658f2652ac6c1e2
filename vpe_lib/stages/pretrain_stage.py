"""Stage 02: train the 3D VQ-VAE video tokenizer on PushWorld clips (and, by config, short
like-for-like runs of the other quantizers for the VQ / LFQ / FSQ comparison)."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import Any
from pathlib import Path

import numpy as np
import torch

from vpe_lib.config import PretrainConfig, RunConfig
from vpe_lib.data.clip_batches import RealClipBatches
from vpe_lib.data.loader import batch_source
from vpe_lib.data.samplers import ClipBatches, from_unit_range
from vpe_lib.data.seg_sources import parse_source, pretraining_clip_source
from vpe_lib.data.video_source import video_pretraining_source
from vpe_lib.data.store import PushWorldStore
from vpe_lib.eval.metrics import psnr, ssim
from vpe_lib.eval.rate_distortion import rate_distortion_reference, token_bits_per_pixel
from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D, codebook_stats
from vpe_lib.models.tokenizer_loss import TokenizerTrainer, tokenizer_state_dict
from vpe_lib.stages.common import require, stage_device, write_json, write_metrics
from vpe_lib.train.device import module_device, saved_in_channels_last
from vpe_lib.train.distributed import get_rank, get_world_size, is_main_process
from vpe_lib.train.loop import TrainConfig, train


# Below this share of the codebook in use on the held-out clips, the tokenizer is collapsing
# and every downstream result would be about a broken model: say so loudly.
UTILISATION_WARNING = 0.25


def tokenizer_step(trainer: TokenizerTrainer, clips: torch.Tensor):
    return trainer(clips)  # (loss, logs); see vpe_lib.models.tokenizer_loss


@torch.no_grad()
def evaluate_tokenizer(model: VQVAE3D, clips: torch.Tensor, *, batch_size: int = 8) -> dict[str, float]:
    """Reconstruction quality and codebook health on a fixed set of held-out clips (on the CPU; the
    model may be on a GPU: each chunk goes there and its outputs come back)."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    recons, codes = [], []
    for chunk in clips.split(batch_size):
        out = model(chunk.to(device))
        recons.append(out.recon.cpu())
        codes.append(out.codes.cpu())
    model.train(was_training)
    recon = torch.cat(recons)
    stats = codebook_stats(torch.cat(codes), model.cfg.codebook_size)
    if stats["utilisation"] < UTILISATION_WARNING:
        warnings.warn(f"tokenizer codebook collapsing: {stats['utilisation']:.1%} of {model.cfg.codebook_size} codes "
                      f"used on {len(clips)} held-out clips ({stats['dead_codes']} dead)", stacklevel=2)
    # SSIM per frame: fold time into the batch
    frames = lambda v: v.transpose(1, 2).reshape(-1, v.shape[1], *v.shape[-2:])  # noqa: E731
    return {
        "psnr_db": psnr(recon, clips),
        "ssim": ssim(frames(recon), frames(clips)),
        "codebook_utilisation": stats["utilisation"],
        "codebook_perplexity": stats["perplexity"],
        "dead_codes": stats["dead_codes"],
    }


def token_rates(model: VQVAE3D, clips: torch.Tensor, perplexity: float) -> dict[str, float]:
    """Bits per pixel of the model's token grid for these clips: nominal (log2 of the codebook
    size per token) and entropy (log2 of the perplexity of the codes in use)."""
    _, _, t, h, w = clips.shape
    n_tokens, n_pixels = math.prod(model.latent_shape(t, h, w)), t * h * w
    return {"bits_per_pixel": token_bits_per_pixel(n_tokens, n_pixels, model.cfg.codebook_size),
            "entropy_bits_per_pixel": token_bits_per_pixel(n_tokens, n_pixels, model.cfg.codebook_size,
                                                           perplexity=max(perplexity, 1.0))}


def clip_frames_uint8(clips: torch.Tensor) -> np.ndarray:
    """Clips b c t h w in [-1, 1] -> their frames as uint8 (b*t, h, w, c), what the R-D yardsticks read."""
    return from_unit_range(clips).transpose(0, 2, 3, 4, 1).reshape(-1, *clips.shape[-2:], clips.shape[1])


def train_tokenizer(tok_cfg: TokenizerConfig, p: PretrainConfig, train_cfg: TrainConfig, train_store: PushWorldStore,
                    eval_clips: torch.Tensor, out: Path, *, desc: str = "tokenizer", data_id: Any = None,
                    device: torch.device | str = "cpu", loader_workers: int = 0, loader_prefetch: int = 2):
    """Train one tokenizer on `device` into `out` (resumes from out/checkpoint.pt when that checkpoint
    is of the same tokenizer, loss, recipe and data `data_id`; else starts fresh, keeping the old one
    aside); returns (model, TrainResult, eval metrics). The weights are drawn on the CPU, so every
    device starts from the same ones. loader_workers > 0: the clips are read by that many DataLoader
    workers (`run.loader_workers`; the same batches, see vpe_lib.data.loader)."""
    torch.manual_seed(train_cfg.seed)
    model = VQVAE3D(cfg=tok_cfg).channels_last_()  # +14-34% on CPU, same results (tested)
    trainer = TokenizerTrainer(model, p.loss, grad_accum=train_cfg.grad_accum).to(device)  # keeps channels_last
    batch_type = ClipBatches if isinstance(train_store, PushWorldStore) else RealClipBatches  # real video
    batches = batch_type(train_store, clip_frames=tok_cfg.clip_frames, batch_size=train_cfg.batch_size,
                         seed=train_cfg.seed)
    with batch_source(batches, workers=loader_workers, prefetch_factor=loader_prefetch, device=device,
                      stop=train_cfg.steps * train_cfg.grad_accum, rank=get_rank(), world=get_world_size()) as batches:
        result = train(trainer, tokenizer_step, batches, train_cfg, out,
                       eval_fn=lambda t: evaluate_tokenizer(t.tokenizer, eval_clips), desc=desc,
                       identity={"tokenizer": tok_cfg, "loss": p.loss, "data": data_id})
    model = result.model.tokenizer
    return model, result, evaluate_tokenizer(model, eval_clips)


# FSQ levels the FSQ paper recommends for a codebook of about 2**bits codes (Mentzer et al. 2023,
# Table 1); 5 and 6 bits (smoke-sized codebooks) are ours.
FSQ_LEVELS = {5: (8, 4), 6: (8, 8), 8: (8, 6, 5), 10: (8, 5, 5, 5), 12: (7, 5, 5, 5, 5), 14: (8, 8, 8, 6, 5), 16: (8, 8, 8, 5, 5, 5)}


def quantizer_variant(tok: TokenizerConfig, quantizer: str) -> TokenizerConfig:
    """The same tokenizer with another quantizer at about the same codebook size
    (LFQ: the nearest power of 2; FSQ: the paper's levels for that many bits)."""
    bits = round(math.log2(tok.codebook_size))
    if quantizer == "lfq":
        return dataclasses.replace(tok, quantizer="lfq", codebook_size=2**bits)
    if quantizer == "fsq":
        if bits not in FSQ_LEVELS:
            raise ValueError(f"no recommended FSQ levels for a codebook of ~2**{bits}; known: "
                             f"{', '.join(f'2**{b}' for b in FSQ_LEVELS)}")
        levels = FSQ_LEVELS[bits]
        return dataclasses.replace(tok, quantizer="fsq", fsq_levels=levels, codebook_size=math.prod(levels))
    return dataclasses.replace(tok, quantizer=quantizer)


def run_quantizer_comparison(cfg: RunConfig, train_store: PushWorldStore, eval_clips: torch.Tensor, out: Path,
                             *, progress: bool = True, data_id: Any = None,
                             device: torch.device | str = "cpu") -> dict[str, float]:
    """Short like-for-like runs, one per quantizer, in out/compare/<quantizer>/."""
    p = cfg.pretrain
    metrics: dict[str, float] = {}
    train_cfg = dataclasses.replace(p.train, steps=p.compare_steps, progress=progress,
                                    eval_every=max(1, p.compare_steps // 4), ckpt_every=0)
    for q in p.compare_quantizers:
        tok_cfg = quantizer_variant(p.tokenizer, q)
        model, result, final = train_tokenizer(tok_cfg, p, train_cfg, train_store, eval_clips,
                                               out / "compare" / q, desc=f"tokenizer [{q}]", data_id=data_id,
                                               device=device, **loader_settings(cfg))
        final.update(token_rates(model, eval_clips, final["codebook_perplexity"]))
        for k in ("psnr_db", "ssim", "codebook_utilisation", "codebook_perplexity", "dead_codes",
                  "bits_per_pixel", "entropy_bits_per_pixel"):
            metrics[f"tokenizer/compare/{q}/{k}"] = final[k]
        metrics[f"tokenizer/compare/{q}/codebook_size"] = tok_cfg.codebook_size
        metrics[f"tokenizer/compare/{q}/train_clips_per_s"] = result.items_per_s
    return metrics


def loader_settings(cfg: RunConfig) -> dict[str, int]:
    """How the training batches are built (`run.loader_*`): never what they are."""
    return {"loader_workers": cfg.run.loader_workers, "loader_prefetch": cfg.run.loader_prefetch}


def run_pretrain_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True) -> dict[str, float]:
    """Under torchrun (`vpe stage pretrain`, vpe_lib.stages.runner) every rank trains its share of
    each batch and computes the same evaluations; rank 0 alone writes the stage's files."""
    device = stage_device(cfg)
    p = cfg.pretrain
    kind = parse_source(cfg.data.source)[0]
    if kind in ("davis", "video"):
        # pretrain on the frames of the training sequences / videos; held-out clips from the others
        clip_source = pretraining_clip_source if kind == "davis" else video_pretraining_source
        train_store = clip_source(cfg.data, split_names=("train",))
        held_out = clip_source(cfg.data, split_names=("val", "test"))
        eval_clips = RealClipBatches(held_out, clip_frames=p.tokenizer.clip_frames, batch_size=1).fixed(p.n_eval_clips)
    else:  # PushWorld (also for COCO: its images are not video; the encoder is judged on transfer)
        data_dir = require(run_dir, "data", "pushworld/manifest.json")
        train_store = PushWorldStore(data_dir / "pushworld", "train")
        test_store = PushWorldStore(data_dir / "pushworld", "test")
        eval_clips = ClipBatches(test_store, clip_frames=p.tokenizer.clip_frames, batch_size=1).fixed(p.n_eval_clips)
    train_cfg = dataclasses.replace(p.train, progress=progress)
    # what the tokenizer was trained on (a checkpoint from other data is not resumed): PushWorld's
    # manifest holds every shard's sha256; a real source is named by its data section
    data_id = getattr(train_store, "manifest", None) or cfg.data
    model, result, final = train_tokenizer(p.tokenizer, p, train_cfg, train_store, eval_clips, out, data_id=data_id,
                                           device=device, **loader_settings(cfg))

    # Filmstrips for the report: a few held-out clips and their reconstructions.
    with torch.no_grad():
        model.eval()
        shown = eval_clips[:4]
        recon = model(shown.to(device)).recon.cpu()
    if is_main_process():
        np.savez_compressed(out / "samples.npz", original=from_unit_range(shown), recon=from_unit_range(recon))

    n_params = sum(p_.numel() for p_ in model.parameters())  # the tokenizer alone, not the discriminator
    # Yardsticks on the same held-out frames: what PSNR does JPEG reach at the tokenizer's rate?
    rates = token_rates(model, eval_clips, final["codebook_perplexity"])
    reference = rate_distortion_reference(clip_frames_uint8(eval_clips), token_bpp=rates["bits_per_pixel"])
    metrics = {
        "tokenizer/psnr_db": final["psnr_db"],
        "tokenizer/ssim": final["ssim"],
        "tokenizer/codebook_utilisation": final["codebook_utilisation"],
        "tokenizer/codebook_perplexity": final["codebook_perplexity"],
        "tokenizer/dead_codes": final["dead_codes"],
        "tokenizer/train_clips_per_s": result.items_per_s,
        "tokenizer/train_wall_s": result.wall_time_s,
        "tokenizer/steps": result.step,
        "tokenizer/params": n_params,
        "tokenizer/bits_per_pixel": rates["bits_per_pixel"],
        "tokenizer/entropy_bits_per_pixel": rates["entropy_bits_per_pixel"],
        "tokenizer/resample2x_psnr_db": reference["resample_psnr_db"]["2x"],
        "tokenizer/resample4x_psnr_db": reference["resample_psnr_db"]["4x"],
    }
    if kind in ("davis", "video"):  # pretrained on the user's real video: how much of it (the index says so)
        metrics["tokenizer/real_train_videos"] = len(train_store)
    if math.isfinite(reference["jpeg_psnr_db_at_token_rate"]):  # NaN: rate outside JPEG's range
        metrics["tokenizer/jpeg_psnr_db_at_same_rate"] = reference["jpeg_psnr_db_at_token_rate"]
    if p.compare_quantizers:
        metrics.update(run_quantizer_comparison(cfg, train_store, eval_clips, out, progress=progress,
                                                data_id=data_id, device=device))
    for seed in p.extra_seeds:  # more pretrained tokenizers: the study's seeds then vary the pretraining
        seed_cfg = dataclasses.replace(train_cfg, seed=seed)
        _, _, seed_final = train_tokenizer(p.tokenizer, p, seed_cfg, train_store, eval_clips,
                                           out / "seeds" / f"seed{seed}", desc=f"tokenizer seed {seed}",
                                           data_id=data_id, device=device, **loader_settings(cfg))
        metrics[f"tokenizer/seed{seed}/psnr_db"] = seed_final["psnr_db"]
        metrics[f"tokenizer/seed{seed}/codebook_utilisation"] = seed_final["codebook_utilisation"]
    if is_main_process():
        write_json(out / "rate_distortion.json", reference)  # atomic; NaN (no JPEG point there) -> null
        write_metrics(out, metrics)
    return metrics


def load_tokenizer(run_dir: str | Path, *, weights: str | Path | None = None,
                   device: torch.device | str = "cpu") -> VQVAE3D:
    """The trained tokenizer of a run, in eval mode, on `device` (reads pretrain/config.json and
    final.pt); `weights`: another final.pt of the same recipe (e.g. pretrain/seeds/seed1/final.pt).

    On CUDA it keeps the channels_last_3d layout it was trained in (feature extraction 14-34% faster);
    on the CPU it loads in the default layout, as the stages always have: channels_last is equal
    only up to float rounding there, and CPU runs must keep giving the same numbers."""
    pre = require(run_dir, "pretrain", "final.pt", "config.json")
    # Only the tokenizer's section: a run made before another section's fields changed still loads.
    try:
        tok_cfg = TokenizerConfig(**json.loads((pre / "config.json").read_text())["pretrain"]["tokenizer"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{pre / 'config.json'}: no valid pretrain.tokenizer section ({err})") from err
    model = VQVAE3D(cfg=tok_cfg)
    state = torch.load(Path(weights) if weights else pre / "final.pt", map_location="cpu", weights_only=True)
    state = tokenizer_state_dict(state)  # final.pt holds the TokenizerTrainer
    model.load_state_dict(state)
    device = torch.device(device)
    if device.type == "cuda" and saved_in_channels_last(state):
        model.channels_last_()
    return model.to(device).eval()


def read_history(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
