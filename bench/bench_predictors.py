"""Training and sampling throughput, memory and (on a GPU) MFU of the prediction transformers.

    python bench/bench_predictors.py                          # the cpu profile's sizes, both models
    python bench/bench_predictors.py --profile gpu --device cuda --amp bf16 --batch 32
    [--steps 5] [--warmup 2] [--out bench/results/predictors.json]

For each model (masked COMMIT, autoregressive): full training steps (forward + backward, clipping,
AdamW) on random tokens already on the device, after untimed warm-up steps; clips/s; FLOPs per
clip counted by ``torch.utils.flop_counter`` (matmuls, and attention on CUDA: torch 2.13's counter has
no rule for the CPU attention kernel, so CPU counts leave attention out and say so; MFU = FLOPs ×
clips/s / the device's dense peak); peak memory (CUDA: max allocated; CPU: the growth of the process's max RSS);
and sampling clips/s (MaskGIT decoding with the profile's steps; AR with its KV cache).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenizer_mfu import count_train_flops, peak_tflops  # noqa: E402
from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.models.transformer import ARVideoTransformer, TransformerConfig, build_predictor  # noqa: E402
from vpe_lib.train.optim import autocast  # noqa: E402


def token_grid(cfg) -> tuple[int, int, int]:
    tok, p, world = cfg.pretrain.tokenizer, cfg.predict, cfg.data.world
    t = 1 + (p.clip_frames - 1) // tok.temporal_factor if tok.causal else p.clip_frames // tok.temporal_factor
    return t, world.height // tok.spatial_factor, world.width // tok.spatial_factor


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def bench_model(kind: str, tcfg: TransformerConfig, args, device: torch.device, maskgit_steps: int) -> dict:
    torch.manual_seed(0)
    model = build_predictor(kind, tcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, (t, h, w) = args.batch, tcfg.grid
    codes = torch.randint(0, tcfg.codebook_size, (b, t, h, w), device=device)
    cond = torch.randint(0, tcfg.codebook_size, (b, tcfg.cond_frames, h, w), device=device)
    mask = torch.rand(b, t, h, w, device=device) < 0.6

    def step():
        with autocast(args.amp, device):
            loss, _ = model(codes, cond, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    rss0 = max_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    train_s = (time.perf_counter() - t0) / args.steps
    one = (codes[:1], cond[:1], mask[:1])
    flops = count_train_flops(lambda: model(*one)[0])
    opt.zero_grad(set_to_none=True)
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(args.amp, device):
        if isinstance(model, ARVideoTransformer):
            model.generate(cond, generator=g)
        else:
            model.generate(cond, steps=maskgit_steps, generator=g)
    sync()
    sample_s = time.perf_counter() - t0
    peak = peak_tflops(device, args.amp)
    clips_s = b / train_s
    out = {"params": sum(p.numel() for p in model.parameters()), "train_clips_per_s": clips_s,
           "train_step_s": train_s, "train_gflop_per_clip": flops / 1e9, "achieved_tflops": flops * clips_s / 1e12,
           "sample_clips_per_s": b / sample_s,
           "peak_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                              else max_rss_mb() - rss0)}
    if peak:
        out["mfu"] = out["achieved_tflops"] / peak
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="off", choices=("off", "bf16"))
    ap.add_argument("--batch", type=int, default=0, help="0 = the profile's predict.train.batch_size")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default="bench/results/predictors.json")
    args = ap.parse_args(argv)
    cfg = get_config(args.profile)
    p = cfg.predict
    args.batch = args.batch or p.train.batch_size
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    tcfg = TransformerConfig(codebook_size=cfg.pretrain.tokenizer.codebook_size, grid=token_grid(cfg),
                             cond_frames=p.cond_frames, dim=p.dim, depth=p.depth, heads=p.heads)
    results = {kind: bench_model(kind, tcfg, args, device, p.maskgit_steps) for kind in p.models}
    report = {"profile": args.profile, "device": str(device), "amp": args.amp, "batch": args.batch,
              "grid": list(tcfg.grid), "dim": p.dim, "depth": p.depth, "torch": torch.__version__,
              "host": platform.node(), "threads": torch.get_num_threads(),
              "flops_include_attention": device.type == "cuda", "models": results}
    for kind, r in results.items():
        mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
        print(f"{kind:7s} train {r['train_clips_per_s']:8.1f} clips/s ({r['train_gflop_per_clip']:.2f} GFLOP/clip, "
              f"{r['achieved_tflops'] * 1e3:.0f} GFLOP/s{mfu}) "
              f"· sample {r['sample_clips_per_s']:.2f} clips/s · peak {r['peak_memory_mb']:.0f} MB")
    if len(results) == 2:
        print(f"masked / ar training speed: {results['masked']['train_clips_per_s'] / results['ar']['train_clips_per_s']:.2f}x; "
              f"sampling: {results['masked']['sample_clips_per_s'] / results['ar']['sample_clips_per_s']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
