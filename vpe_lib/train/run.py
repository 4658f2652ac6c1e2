"""One call of `vpe_lib.train.loop.train` as an object: the model with its optimiser, schedule, EMA and fp16
scaler, where the run stands, and one method per job of the loop (resume, one update, checkpoint, log,
evaluate). The loop's contract (resume, DDP, precision, non-finite losses) is in `vpe_lib.train.loop`'s doc."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .batches import Batches, StepFn, as_float, batch_items, read_batch, to_device
from .checkpoint import (atomic_save, atomic_write_text, capture_rng_state, load_checkpoint, preserved_rng,
                         restore_rng_state, seed_everything)
from .device import compile_model, module_device, resolve_amp
from .distributed import all_gather_object, all_reduce_mean, any_rank, barrier, get_rank, get_world_size, shard_batch
from .optim import ModelEMA, autocast, grad_scaler, lr_lambda, param_groups
from .recipe import COSMETIC, TrainConfig, norm_value, run_identity
from .run_files import LogWindow, read_metrics, say, set_aside_stale

log = logging.getLogger("vpe_lib.train")


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, metrics: dict[str, float], last_checkpoint_step: int | None):
        self.step, self.metrics = step, metrics
        vals = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        where = f"step {last_checkpoint_step}" if last_checkpoint_step is not None else "none written"
        super().__init__(f"non-finite loss at step {step}: {vals} (last good checkpoint: {where})")



def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel / DataParallel / compile wrapper."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def warn_unsynced_codebooks(model: nn.Module) -> None:
    """VectorQuantize decides at construction whether to all-reduce its EMA codebook statistics
    (only if a process group is already up); built before, each rank would update its own
    codebook and DDP's buffer broadcast would keep rank 0's, fed by rank 0's shard alone."""
    if any(getattr(m, "use_ddp", True) is False and hasattr(m, "all_reduce_fn") for m in model.modules()):
        warnings.warn("the model's VectorQuantize codebook was built before the process group was "
                      "initialised, so its EMA statistics are not synced across ranks; build the model "
                      "after vpe_lib.train.distributed.init_distributed()", stacklevel=3)


class Run:
    """One call of `train`: the model, its optimizer, schedule, EMA and fp16 scaler, where it stands
    (step, wall time before this call, skipped updates) and the files it keeps in out_dir. Each method
    is one of the loop's jobs: resume, one update, checkpoint, log, evaluate."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, out_dir: Path, desc: str, identity: Any):
        self.cfg, self.out_dir, self.desc = cfg, out_dir, desc
        self.rank, self.world = get_rank(), get_world_size()
        self.main = self.rank == 0
        if self.main:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path, self.final_path = out_dir / "checkpoint.pt", out_dir / "final.pt"
        self.metrics_path = out_dir / "metrics.jsonl"
        self.raw = raw = unwrap_model(model)
        device = module_device(raw)
        if self.world > 1 and torch.distributed.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())  # NCCL needs the model on this rank's GPU
            raw.to(device)
        self.device = device
        self.trainable = [p for p in raw.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(param_groups(raw, cfg.weight_decay, cfg.lr), lr=cfg.lr, betas=cfg.betas)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.ema = ModelEMA(raw, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.precision = resolve_amp(cfg.amp, device)  # here, before any work: bf16 asked of a GPU without it fails
        self.scaler = grad_scaler(self.precision, device)  # fp16 only
        self.step, self.elapsed_before, self.skipped, self.scaler_skipped, self.last_ckpt = 0, 0.0, 0, 0, None
        self.run_id = run_identity(cfg, identity)
        self.t_start = time.perf_counter()
        self.history: list[dict] = []

    # -- resume

    def resume_or_seed(self) -> None:
        """Continue from out_dir/checkpoint.pt when it was written by this run's identity and recipe
        (another one is set aside first); else seed every RNG from cfg.seed."""
        cfg, main, world, ckpt_path = self.cfg, self.main, self.world, self.ckpt_path
        if main and ckpt_path.exists():
            set_aside_stale(self.out_dir, self.run_id, self.desc)
        if world > 1:
            barrier()  # every rank sees the same folder before deciding to resume
        resume = ckpt_path.exists()
        if world > 1:
            seen = all_gather_object(resume)
            if any(seen) != all(seen):
                raise RuntimeError(f"{ckpt_path} exists on ranks {[r for r, s in enumerate(seen) if s]} but not on "
                                   f"the others: out_dir must be on a filesystem every rank shares")
        if resume:
            state = load_checkpoint(ckpt_path)  # on every rank
            self.raw.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            if self.ema is not None:
                if state.get("ema") is None:
                    raise ValueError(f"{ckpt_path} has no EMA state but cfg.ema_decay = {cfg.ema_decay}")
                self.ema.load_state_dict(state["ema"])
            if self.scaler is not None and state.get("scaler"):
                # the loss scale and its growth counter: without them a resumed fp16 run would restart at
                # 2**16 and overflow / skip updates the uninterrupted run did not
                self.scaler.load_state_dict(state["scaler"])
            restore_rng_state(state["rng"])
            self.step = self.last_ckpt = state["step"]
            self.elapsed_before, self.skipped = state.get("elapsed_s", 0.0), state.get("skipped", 0)
            self.scaler_skipped = state.get("fp16_overflows", 0)
            changed = {k: (v, getattr(cfg, k)) for k, v in state["cfg"].items()
                       if k != "steps" and k not in COSMETIC
                       and hasattr(cfg, k) and norm_value(v) != norm_value(getattr(cfg, k))}
            if changed and main:
                warnings.warn(f"resuming {ckpt_path} with a changed config (saved, now): {changed}", stacklevel=3)
            say(f"{self.desc}: resuming from step {self.step} ({ckpt_path})", cfg.progress and main)
        else:
            seed_everything(cfg.seed)
        self.history = read_metrics(self.metrics_path, self.step, rewrite=main)
        if main:
            atomic_write_text(json.dumps(asdict(cfg), indent=2) + "\n", self.out_dir / "train_config.json")

    # -- files

    def save_checkpoint(self) -> None:
        if self.main:
            atomic_save({
                "model": self.raw.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step,
                "rng": capture_rng_state(),
                "cfg": asdict(self.cfg),
                "elapsed_s": self.elapsed_before + time.perf_counter() - self.t_start,
                "skipped": self.skipped,
                "fp16_overflows": self.scaler_skipped,
                "world_size": self.world,  # informational: batches are global, resume works on any world size
                "identity": self.run_id,
            }, self.ckpt_path)
        if self.world > 1:
            barrier()  # nobody reads or races past a half-written checkpoint
        self.last_ckpt = self.step

    def emit(self, record: dict) -> None:
        self.history.append(record)
        if self.main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def run_eval(self, eval_fn: Callable[[nn.Module], dict[str, float]]) -> None:
        target = self.ema.module if self.ema is not None else self.raw
        was_training = target.training
        target.eval()
        try:
            with preserved_rng():
                results = eval_fn(target)
        finally:
            target.train(was_training)
        self.emit({"step": self.step, **{f"eval/{k}": as_float(v) for k, v in results.items()}})

    def log_window(self, window: LogWindow, lr: float) -> None:
        now = time.perf_counter()
        means = all_reduce_mean(window.means())  # over ranks: the global-batch values
        scaler = self.scaler
        self.emit({
            "step": self.step,
            "lr": lr,
            "loss": means.pop("loss", None),
            **means,
            "items_per_s": window.items / max(now - window.t0, 1e-9),
            "elapsed_s": self.elapsed_before + now - self.t_start,
            "skipped": self.skipped,
            # fp16: the loss scale, and the updates its overflows skipped (not in `skipped`)
            **({"grad_scale": scaler.get_scale(), "fp16_overflows": self.scaler_skipped} if scaler is not None else {}),
        })
        window.reset(now)

    # -- one update

    def forward_model(self, model: nn.Module) -> tuple[nn.Module, nn.parallel.DistributedDataParallel | None]:
        """What step_fn gets (DDP-wrapped under torchrun, compiled when asked) and the DDP wrapper."""
        ddp = None
        if self.world > 1:
            if isinstance(model, nn.parallel.DistributedDataParallel):
                ddp = model
            else:
                if self.main:
                    warn_unsynced_codebooks(self.raw)
                ddp = nn.parallel.DistributedDataParallel(
                    model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        fwd_model = ddp if ddp is not None else model
        if self.cfg.compile:
            fwd_model = compile_model(fwd_model, self.device)  # shares the parameters: optimizer, checkpoints unchanged
        return fwd_model, ddp

    def gradients(self, step_fn: StepFn, fwd_model: nn.Module, ddp, batches: Batches
                  ) -> tuple[dict[str, float], int, dict | None]:
        """Accumulate the gradients of cfg.grad_accum micro-batches: (mean metrics, global items, the
        metrics of a non-finite loss on any rank, or None)."""
        cfg = self.cfg
        sums: dict[str, float] = {}
        items = 0
        for j in range(cfg.grad_accum):
            # the global micro-batch, or only this rank's slice of it where the source reads that alone
            batch, local = read_batch(batches, self.step * cfg.grad_accum + j, self.rank, self.world)
            items += batch_items(batch) * (self.world if local else 1)  # global items, either way
            batch = to_device(batch if local else shard_batch(batch, self.rank, self.world), self.device)
            # DDP: all but the last micro-batch accumulate locally, without the gradient all-reduce.
            sync = ddp is None or j == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else ddp.no_sync():
                with autocast(self.precision, self.device):
                    loss, metrics = step_fn(fwd_model, batch)
                values = {k: as_float(v) for k, v in metrics.items()}
                values["loss"] = as_float(loss)
                nonfinite = not math.isfinite(values["loss"])
                # every rank must take the same branch, or DDP's gradient all-reduce would hang
                if any_rank(nonfinite):
                    return sums, items, values if nonfinite else {**values, "nonfinite_on_another_rank": 1.0}
                scaled = loss / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
        return sums, items, None

    def update(self, step_fn: StepFn, fwd_model: nn.Module, ddp, batches: Batches, window: LogWindow
               ) -> tuple[dict[str, float], int, bool]:
        """One optimizer update (or a skipped one: a non-finite loss or gradient, an fp16 overflow) and
        the schedule's step -> (mean metrics, global items, whether it was applied)."""
        cfg, opt, scaler = self.cfg, self.opt, self.scaler
        # A skipped update must not leave half-updated buffers behind (e.g. an EMA codebook
        # that already absorbed a NaN batch), so keep a copy to restore.
        saved = [b.detach().clone() for b in self.raw.buffers()] if cfg.nonfinite == "skip" else None
        opt.zero_grad(set_to_none=True)
        sums, items, bad = self.gradients(step_fn, fwd_model, ddp, batches)
        overflow, grad_norm = False, math.nan
        if bad is None:
            if scaler is not None:
                scaler.unscale_(opt)  # clip (and log) the true gradients, not the scaled ones
            # after DDP's all-reduce the gradients (hence the norm) are the same on every rank
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)) if self.trainable else 0.0
            if not math.isfinite(grad_norm):
                if scaler is not None:
                    # fp16 overflow of the *scaled* gradients: routine while the scaler finds its
                    # scale; it skips this update and halves the scale (not a non-finite loss)
                    overflow = True
                else:
                    bad = {**sums, "grad_norm": grad_norm}
        if bad is not None:
            if cfg.nonfinite == "stop":
                raise NonFiniteLossError(self.step + 1, bad, self.last_ckpt)
            opt.zero_grad(set_to_none=True)
            if saved is not None:
                with torch.no_grad():
                    for b, s in zip(self.raw.buffers(), saved):
                        b.copy_(s)
            self.skipped += 1
            log.warning("%s: skipped update %d (non-finite: %s)", self.desc, self.step + 1, bad)
        elif scaler is not None:
            scaler.step(opt)  # skips opt.step() when the unscaled gradients hold inf / NaN
            scaler.update()
            if overflow:
                self.scaler_skipped += 1
            else:
                if self.ema is not None:
                    self.ema.update(self.raw)
                window.add({**sums, "grad_norm": grad_norm}, items)
        else:
            opt.step()
            if self.ema is not None:
                self.ema.update(self.raw)
            window.add({**sums, "grad_norm": grad_norm}, items)
        with warnings.catch_warnings():
            # an update skipped before the first optimizer step (fp16 overflow, nonfinite="skip")
            # still advances the schedule, so update k always runs at lr(k) as on resume
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
            self.sched.step()
        self.step += 1
        return sums, items, bad is None
