"""Tokenizer rate sweep: held-out PSNR against bits per pixel for several token grids, beside JPEG.

    python bench/tokenizer_rate_sweep.py [--profile cpu] [--run-dir runs/cpu] [--grids 2x4,2x2,1x2]
        [--steps N] [--set KEY=VALUE ...] [--out bench/results/tokenizer_rate_sweep.json]

A tokenizer's PSNR means little without its rate: the `cpu` profile's 2x16x16 grid of 1024-code
tokens for a 4x64x64 clip carries 0.31 bits per pixel, where JPEG reaches ~23 dB on PushWorld and
needs ~2.4 bits per pixel for 30 dB. This sweep asks what finer token grids buy at the same
training budget: it trains the profile's tokenizer (same architecture, quantizer, recipe, data and
number of updates) once per grid and reports, on the profile's held-out clips, PSNR, SSIM,
codebook use, nominal and entropy bits per pixel, JPEG's PSNR at the same rate (same frames), and
training throughput.

A grid ``TxS`` downsamples time by T and each side by S (powers of two, at most the tokenizer's
number of downsampling steps each); the steps that downsample come first, so a finer grid keeps
the early, cheap levels and runs the later ones at a higher resolution. The data are the run's
PushWorld (its `data` stage: run the 01_data notebook or `make report` first). Each grid trains
into ``<run-dir>/rate_sweep/<grid>_<steps>/`` with the training loop's checkpoints, so a killed
sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.cli import parse_overrides  # noqa: E402
from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.data.samplers import ClipBatches  # noqa: E402
from vpe_lib.data.store import PushWorldStore  # noqa: E402
from vpe_lib.eval.rate_distortion import psnr_at_rate, rate_distortion_reference  # noqa: E402
from vpe_lib.models.tokenizer import TokenizerConfig  # noqa: E402
from vpe_lib.stages.common import require, write_json  # noqa: E402
from vpe_lib.stages.pretrain_stage import clip_frames_uint8, token_rates, train_tokenizer  # noqa: E402

DEFAULT_GRIDS = ("2x4", "2x2", "1x2")


def parse_grid(text: str) -> tuple[int, int]:
    """'TxS' -> (temporal factor, spatial factor), both powers of two >= 1."""
    try:
        t, s = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"grid {text!r}: expected TxS, e.g. 2x4 (time / 2, each side / 4)") from None
    for v in (t, s):
        if v < 1 or v & (v - 1):
            raise ValueError(f"grid {text!r}: factors must be powers of two >= 1")
    return t, s


def parse_grids(text: str) -> list[str]:
    """'2x4,2x2' -> ['2x4', '2x2'], each checked by parse_grid."""
    grids = [g.strip() for g in text.split(",") if g.strip()]
    if not grids:
        raise ValueError(f"no token grid in {text!r}")
    for g in grids:
        parse_grid(g)
    return grids


def grid_config(tok: TokenizerConfig, grid: str) -> TokenizerConfig:
    """The tokenizer with its downsampling flags set for `grid` (first steps downsample)."""
    t, s = parse_grid(grid)
    n_down = len(tok.channel_mults) - 1
    nt, ns = int(math.log2(t)), int(math.log2(s))
    if nt > n_down or ns > n_down:
        raise ValueError(f"grid {grid!r}: the tokenizer has {n_down} downsampling steps, so factors up to "
                         f"{2 ** n_down} (channel_mults {tok.channel_mults})")
    return dataclasses.replace(tok, temporal_down=tuple(i < nt for i in range(n_down)),
                               spatial_down=tuple(i < ns for i in range(n_down)))


def run(args: argparse.Namespace) -> dict:
    cfg = get_config(args.profile, parse_overrides(args.set))
    p = cfg.pretrain
    run_dir = Path(args.run_dir or f"runs/{cfg.profile}")
    data = require(run_dir, "data", "pushworld/manifest.json") / "pushworld"
    train_store, test_store = PushWorldStore(data, "train"), PushWorldStore(data, "test")
    configs = {g: grid_config(p.tokenizer, g) for g in args.grids}  # too coarse for the model: fails before training
    steps = args.steps or p.train.steps
    train_cfg = dataclasses.replace(p.train, steps=steps, progress=not args.no_progress)

    eval_clips = ClipBatches(test_store, clip_frames=p.tokenizer.clip_frames, batch_size=1).fixed(p.n_eval_clips)
    # the same yardsticks on the same frames as the pretrain stage's R-D figure
    reference = rate_distortion_reference(clip_frames_uint8(eval_clips))
    rows = []
    for grid, tok in configs.items():
        t0 = time.perf_counter()
        model, result, final = train_tokenizer(tok, p, train_cfg, train_store, eval_clips,
                                               run_dir / "rate_sweep" / f"{grid}_{steps}", desc=f"tokenizer [{grid}]")
        rates = token_rates(model, eval_clips, final["codebook_perplexity"])
        jpeg = psnr_at_rate(reference["jpeg"], rates["bits_per_pixel"])  # NaN beyond JPEG's range
        rows.append({
            "grid": grid, "latent_shape": list(model.latent_shape(*eval_clips.shape[-3:])),
            "temporal_down": list(tok.temporal_down), "spatial_down": list(tok.spatial_down),
            "params": sum(x.numel() for x in model.parameters()), "steps": result.step,
            **rates, **final, "jpeg_psnr_db_at_same_rate": jpeg, "psnr_minus_jpeg_db": final["psnr_db"] - jpeg,
            "train_clips_per_s": result.items_per_s, "train_wall_s": result.wall_time_s,
            "sweep_wall_s": time.perf_counter() - t0,
        })
    return {
        "profile": cfg.profile, "run_dir": str(run_dir), "overrides": args.set, "steps": steps,
        "batch_size": p.train.batch_size, "lr": p.train.lr, "quantizer": p.tokenizer.quantizer,
        "codebook_size": p.tokenizer.codebook_size, "clip_frames": p.tokenizer.clip_frames,
        "n_eval_clips": len(eval_clips), "grids": rows, **reference,
        "host": {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                 "torch": torch.__version__},
    }


def print_table(r: dict) -> None:
    print(f"{r['profile']} tokenizer, {r['steps']} updates of {r['batch_size']} clips, {r['quantizer']} "
          f"{r['codebook_size']} codes, {r['n_eval_clips']} held-out clips; JPEG needs "
          f"{r['jpeg_bits_per_pixel_for_30db']:.2f} bpp for 30 dB")
    print(f"{'grid':>5} {'tokens':>10} {'bpp':>6} {'PSNR':>7} {'JPEG@bpp':>9} {'diff':>6} {'codes':>6} {'clips/s':>8}")
    for g in r["grids"]:
        shape = "x".join(map(str, g["latent_shape"]))
        print(f"{g['grid']:>5} {shape:>10} {g['bits_per_pixel']:6.3f} {g['psnr_db']:7.2f} "
              f"{g['jpeg_psnr_db_at_same_rate']:9.2f} {g['psnr_minus_jpeg_db']:+6.2f} "
              f"{g['codebook_utilisation']:6.1%} {g['train_clips_per_s']:8.2f}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--run-dir", default=None, help="run with a finished data stage (default runs/<profile>)")
    ap.add_argument("--grids", default=",".join(DEFAULT_GRIDS), help="comma-separated TxS token grids")
    ap.add_argument("--steps", type=int, default=None, help="updates per grid (default: the profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default="bench/results/tokenizer_rate_sweep.json")
    args = ap.parse_args(argv)
    try:
        args.grids = parse_grids(args.grids)
    except ValueError as err:
        ap.error(str(err))
    r = run(args)
    print_table(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, r)  # atomic; NaN (a rate beyond JPEG's curve) -> null
    print(f"wrote {out}")
    return r


if __name__ == "__main__":
    main()
