"""Stage 02: train the 3D VQ-VAE video tokenizer on PushWorld clips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from vpe_lib.config import RunConfig, load_config
from vpe_lib.data.samplers import ClipBatches, from_unit_range
from vpe_lib.data.store import PushWorldStore
from vpe_lib.eval.metrics import psnr, ssim
from vpe_lib.models.tokenizer import VQVAE3D, codebook_stats
from vpe_lib.stages.common import require, write_json, write_metrics
from vpe_lib.train.loop import train


def tokenizer_step(model: VQVAE3D, clips: torch.Tensor):
    out = model(clips)
    return out.loss, {"recon_loss": out.recon_loss.item(), "quant_loss": float(out.quant_loss.detach())}


@torch.no_grad()
def evaluate_tokenizer(model: VQVAE3D, clips: torch.Tensor, *, batch_size: int = 8) -> dict[str, float]:
    """Reconstruction quality and codebook health on a fixed set of held-out clips."""
    was_training = model.training
    model.eval()
    recons, codes = [], []
    for chunk in clips.split(batch_size):
        out = model(chunk)
        recons.append(out.recon)
        codes.append(out.codes)
    model.train(was_training)
    recon = torch.cat(recons)
    stats = codebook_stats(torch.cat(codes), model.cfg.codebook_size)
    # SSIM per frame: fold time into the batch
    frames = lambda v: v.transpose(1, 2).reshape(-1, v.shape[1], *v.shape[-2:])  # noqa: E731
    return {
        "psnr_db": psnr(recon, clips),
        "ssim": ssim(frames(recon), frames(clips)),
        "codebook_utilisation": stats["utilisation"],
        "codebook_perplexity": stats["perplexity"],
        "dead_codes": stats["dead_codes"],
    }


def run_pretrain_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True) -> dict[str, float]:
    data_dir = require(run_dir, "data", "pushworld/manifest.json")
    train_store = PushWorldStore(data_dir / "pushworld", "train")
    test_store = PushWorldStore(data_dir / "pushworld", "test")
    p = cfg.pretrain
    torch.manual_seed(p.train.seed)
    model = VQVAE3D(cfg=p.tokenizer).channels_last_()  # +14-34% on CPU, same results (tested)
    clip_frames = p.tokenizer.clip_frames
    batches = ClipBatches(train_store, clip_frames=clip_frames, batch_size=p.train.batch_size, seed=p.train.seed)
    eval_clips = ClipBatches(test_store, clip_frames=clip_frames, batch_size=1).fixed(p.n_eval_clips)

    train_cfg = dataclasses.replace(p.train, progress=progress)
    result = train(model, tokenizer_step, batches, train_cfg, out,
                   eval_fn=lambda m: evaluate_tokenizer(m, eval_clips), desc="tokenizer")
    model = result.model
    final = evaluate_tokenizer(model, eval_clips)

    # Filmstrips for the report: a few held-out clips and their reconstructions.
    with torch.no_grad():
        model.eval()
        shown = eval_clips[:4]
        recon = model(shown).recon
    np.savez_compressed(out / "samples.npz", original=from_unit_range(shown), recon=from_unit_range(recon))

    n_params = sum(p_.numel() for p_ in model.parameters())
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
    }
    write_metrics(out, metrics)
    return metrics


def load_tokenizer(run_dir: str | Path) -> VQVAE3D:
    """The trained tokenizer of a run, in eval mode (reads pretrain/config.json and final.pt)."""
    pre = require(run_dir, "pretrain", "final.pt", "config.json")
    cfg = load_config(pre / "config.json")
    model = VQVAE3D(cfg=cfg.pretrain.tokenizer)
    state = torch.load(pre / "final.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def read_history(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
