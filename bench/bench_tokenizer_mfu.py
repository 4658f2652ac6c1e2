"""Tokenizer training throughput and model FLOP utilisation (MFU), e.g. the BAIR preset on a GPU.

    python bench/bench_tokenizer_mfu.py                       # BAIR preset, bf16 on CUDA if present
    python bench/bench_tokenizer_mfu.py --preset cpu --device cpu --amp off --batch 4 --steps 5
    [--causal] [--compile] [--peak-tflops T] [--out bench/results/tokenizer_mfu.json]

FLOPs per clip are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one
forward + backward of one clip through the tokenizer and its reconstruction loss (convolutions
and matrix products; elementwise ops are not counted, as usual for MFU). MFU = counted FLOPs per
clip x measured clips/s / the device's dense peak (bf16 for --amp bf16, else fp32/tf32): looked up
from the GPU's name for H100 / H200 / A100, or given with --peak-tflops. The issue's target for
the BAIR preset in bf16 is >= 35 %.

The timed steps are full training steps (TokenizerTrainer forward + backward, gradient clipping,
AdamW) on random clips already on the device, after --warmup untimed ones: data loading is not
part of it (PushWorld generates ~1,500 frames/s per core, measured by bench_pushworld.py).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D  # noqa: E402
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig, TokenizerTrainer  # noqa: E402
from vpe_lib.train.optim import autocast  # noqa: E402  (the training loop's own bf16 autocast)

TARGET_MFU = 0.35
# Dense peak TFLOP/s (no sparsity) by GPU name fragment and precision: NVIDIA data sheets (SXM parts).
PEAK_TFLOPS = {"H200": {"bf16": 989.0, "fp32": 494.0}, "H100": {"bf16": 989.0, "fp32": 494.0},
               "A100": {"bf16": 312.0, "fp32": 156.0}}
PRESETS = {"bair": TokenizerConfig.bair, "cpu": TokenizerConfig.cpu, "smoke": TokenizerConfig.smoke}


def peak_tflops(device: torch.device, amp: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks["bf16" if amp == "bf16" else "fp32"]  # fp32 matmuls run as tf32 below
    return None


def count_train_flops(loss_fn) -> int:
    """FLOPs (convs and matmuls) of one forward + backward: ``loss_fn()`` then ``.backward()``.
    The caller clears the gradients it leaves. Also used by bench_tokenizer.py."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn().backward()
    return int(counter.get_total_flops())


def run(args: argparse.Namespace, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = PRESETS[args.preset](causal=args.causal)
    torch.manual_seed(0)
    model = VQVAE3D(cfg=cfg).to(device).channels_last_()
    trainer = TokenizerTrainer(model, TokenizerLossConfig()).to(device)
    shape = (cfg.in_channels, cfg.clip_frames, args.side, args.side)
    one_clip = torch.rand(1, *shape, device=device) * 2 - 1
    flops_per_clip = count_train_flops(lambda: trainer(one_clip)[0])
    trainer.zero_grad(set_to_none=True)

    step_fn = torch.compile(trainer) if args.compile else trainer
    opt = torch.optim.AdamW(trainer.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.01)
    clips = (torch.rand(args.batch, *shape, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last_3d)

    def step() -> float:
        with autocast(args.amp, device):
            loss, _ = step_fn(clips)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    sync()
    elapsed = time.perf_counter() - start
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite loss in the timed steps: {losses}")

    clips_per_s = args.batch * args.steps / elapsed
    achieved = flops_per_clip * clips_per_s / 1e12
    peak = args.peak_tflops or peak_tflops(device, args.amp)
    result = {
        "preset": args.preset, "causal": args.causal, "clip_shape": list(shape), "batch": args.batch,
        "latent_shape": list(model.latent_shape(*shape[1:])), "params": sum(p.numel() for p in model.parameters()),
        "amp": args.amp, "compile": args.compile, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_gflop_per_clip": flops_per_clip / 1e9, "steps": args.steps, "warmup": args.warmup,
        "seconds": elapsed, "clips_per_s": clips_per_s, "achieved_tflops": achieved,
        "peak_tflops": peak, "mfu": achieved / peak if peak else None, "target_mfu": TARGET_MFU,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "final_loss": losses[-1],
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="bair")
    ap.add_argument("--causal", action="store_true", help="MAGVIT-v2 causal variant (17-frame clips)")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=("bf16", "off"), default=None, help="default: bf16 on CUDA, off on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", default="bench/results/tokenizer_mfu.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if args.amp is None:
        args.amp = "bf16" if device.type == "cuda" else "off"
    r = run(args, device)
    mfu = f"{r['mfu']:.1%} of {r['peak_tflops']:.3g} TFLOP/s (target {TARGET_MFU:.0%})" if r["mfu"] is not None \
        else "no known peak for this device (pass --peak-tflops)"
    print(f"{r['preset']} tokenizer{' (causal)' if r['causal'] else ''}: {r['params'] / 1e6:.1f}M params, "
          f"{r['clip_shape']} -> {r['latent_shape']}, {r['train_gflop_per_clip']:.0f} GFLOP per clip (fwd+bwd)")
    print(f"{r['device_name']}, amp {r['amp']}, batch {r['batch']}: {r['clips_per_s']:.2f} clips/s, "
          f"{r['achieved_tflops']:.2f} TFLOP/s, MFU {mfu}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {out}")
    return r


if __name__ == "__main__":
    main()
