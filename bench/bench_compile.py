"""torch.compile (`train.compile=true`) against eager, per model a profile trains: compile time and
steady-state speed-up, side by side in one process.

    python bench/bench_compile.py                         # the cpu profile's shapes, every model
    python bench/bench_compile.py --profile gpu --device cuda --models tokenizer,masked
    [--steps 6] [--warmup 2] [--out bench/results/compile.json]

For each model (the tokenizer with its loss, the masked and autoregressive transformers, the UNet,
the conv head on frozen features), the same full training step (forward, backward, clipping, AdamW)
as `vpe_lib.train.loop.train`, on fixed random inputs of the profile's batch shape:

* eager: `--warmup` untimed steps, then the median of `--steps` timed steps;
* compiled (`vpe_lib.train.device.compile_model`, as `train` calls it): the first step's wall time
  (tracing + code generation + the step: the compile cost) and the median of `--steps` steps after
  `--warmup` more;
* the speed-up (eager / compiled median), the break-even number of updates (compile cost / time
  saved per update; "never" when compiled is not faster) and the loss difference of the first
  training step (the same weights and batch: float order only).

On the CPU the inductor backend builds C++ with the machine's compiler: the first step's time is
mostly that build, measured cold (inductor's on-disk caches off). The JSON names the host (CPU model, threads, torch) beside the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# cold compiles: inductor's on-disk caches would make a second run's compile time look free
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.host_speed import cpu_model  # noqa: E402
from vpe_lib.models import VQVAE3D  # noqa: E402
from vpe_lib.models.encoders import TokenizerEncoder  # noqa: E402
from vpe_lib.models.heads import build_head  # noqa: E402
from vpe_lib.models.tokenizer_loss import TokenizerTrainer  # noqa: E402
from vpe_lib.models.transformer import TransformerConfig, build_predictor  # noqa: E402
from vpe_lib.models.unet import UNet2D  # noqa: E402
from vpe_lib.train.device import compile_model  # noqa: E402
from vpe_lib.train.optim import autocast  # noqa: E402

MODELS = ("tokenizer", "masked", "ar", "unet", "conv_head")


def build(name: str, cfg, device: torch.device) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """(module, loss(module)): the module a stage hands to `train`, and its step's loss on a fixed batch."""
    torch.manual_seed(0)
    tok_cfg, world = cfg.pretrain.tokenizer, cfg.data.world
    hw = (world.height, world.width)
    if name == "tokenizer":
        b = cfg.pretrain.train.batch_size
        model = TokenizerTrainer(VQVAE3D(cfg=tok_cfg).channels_last_(), cfg.pretrain.loss).to(device)
        clips = (torch.rand(b, tok_cfg.in_channels, tok_cfg.clip_frames, *hw, device=device) * 2 - 1
                 ).contiguous(memory_format=torch.channels_last_3d)
        return model, lambda m: m(clips)[0]
    if name in ("masked", "ar"):
        p = cfg.predict
        t = p.clip_frames // tok_cfg.temporal_factor
        grid = (t, hw[0] // tok_cfg.spatial_factor, hw[1] // tok_cfg.spatial_factor)
        tcfg = TransformerConfig(codebook_size=tok_cfg.codebook_size, grid=grid, cond_frames=p.cond_frames,
                                 dim=p.dim, depth=p.depth, heads=p.heads)
        model = build_predictor(name, tcfg).to(device)
        b = p.train.batch_size
        codes = torch.randint(0, tok_cfg.codebook_size, (b, *grid), device=device)
        cond = torch.randint(0, tok_cfg.codebook_size, (b, p.cond_frames, *grid[1:]), device=device)
        mask = torch.rand(b, *grid, device=device) < 0.6
        return model, lambda m: m(codes, cond, mask)[0]
    s = cfg.seg
    b = s.train.batch_size
    target = torch.randint(0, 7, (b, *hw), device=device)
    if name == "unet":
        model = UNet2D(in_channels=3, n_classes=7, base_channels=s.unet_base_channels, depth=s.unet_depth).to(device)
        x = torch.rand(b, 3, *hw, device=device)
        return model, lambda m: nn.functional.cross_entropy(m(x), target)
    if name == "conv_head":  # the frozen-encoder head on cached maps, as the heads stage trains it
        enc = TokenizerEncoder(VQVAE3D(cfg=tok_cfg), clip_frames=s.still_clip_frames or None).to(device)
        with torch.no_grad():
            feats = [f.detach() for f in enc(torch.rand(b, 3, *hw, device=device))]
        model = build_head("conv", enc.feature_info, n_classes=7, hidden=s.head_hidden,
                           out_stride=s.head_out_stride).to(device)

        def loss(m):
            return nn.functional.cross_entropy(m(feats, hw), target)
        return model, loss
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def timed_steps(fwd: nn.Module, params, loss_fn, n: int, device: torch.device, amp: str
                ) -> tuple[list[float], list[float]]:
    """Wall time and loss of `n` full training steps (the loss is read after the clock stops)."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, losses = [], []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        with autocast(amp, device):
            loss = loss_fn(fwd)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(loss.detach())
    return times, [float(v) for v in losses]


def bench(name: str, cfg, args, device: torch.device) -> dict:
    model, loss_fn = build(name, cfg, device)
    twin = copy.deepcopy(model)  # the same initial weights: the first steps' losses differ by float order only
    params = [p for p in model.parameters() if p.requires_grad]
    eager, eager_losses = timed_steps(model, params, loss_fn, args.warmup + args.steps, device, args.amp)
    eager = eager[args.warmup:]
    # the first compiled call is the training step itself: its time holds the whole compile (no other
    # compiled call runs before it, so none of the tracing or code generation goes untimed)
    compiled = compile_model(twin, device)
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    times, losses = timed_steps(compiled, twin_params, loss_fn, 1 + args.warmup + args.steps, device, args.amp)
    e, c = statistics.median(eager), statistics.median(times[1 + args.warmup:])
    saved = e - c
    return {"params": sum(p.numel() for p in params), "eager_step_s": e, "compiled_step_s": c,
            "first_compiled_step_s": times[0], "compile_s": times[0] - c, "speedup": e / c,
            "break_even_updates": (times[0] - c) / saved if saved > 0 else None,
            "first_loss_abs_diff": abs(eager_losses[0] - losses[0])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="off", choices=("off", "bf16"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default="bench/results/compile.json")
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    cfg = get_config(args.profile)
    device = torch.device(args.device)
    results = {}
    for name in names:
        results[name] = r = bench(name, cfg, args, device)
        be = "never" if r["break_even_updates"] is None else f"{r['break_even_updates']:.0f} updates"
        print(f"{name:10s} eager {r['eager_step_s'] * 1e3:8.1f} ms/step · compiled {r['compiled_step_s'] * 1e3:8.1f} "
              f"ms/step ({r['speedup']:.2f}x) · compile {r['compile_s']:.1f} s · break-even {be} · "
              f"|loss diff| {r['first_loss_abs_diff']:.1e}", flush=True)
    report = {"profile": args.profile, "device": str(device), "amp": args.amp, "torch": torch.__version__,
              "cpu": cpu_model(), "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
              "models": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
