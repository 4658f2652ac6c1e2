"""One generic training loop for every stage (tokenizer, transformer, UNet, heads).

    result = train(model, step_fn, batches, TrainConfig(steps=2000), Path("runs/x/tokenizer"))

* ``step_fn(model, batch) -> (loss, metrics)``: a scalar loss tensor (a mean over the batch)
  and a dict of floats (or 0-d tensors) to log.
* ``batches(i) -> batch``: the i-th micro-batch of the run, a pure function of ``i``
  (a tensor, or a tuple / list / dict of tensors; moved to the model's device here).
  Update number ``k`` (1-based) consumes micro-batches ``(k-1)*grad_accum ... k*grad_accum - 1``;
  with ``grad_accum=1`` that is simply ``batches(k - 1)``. Because the data position is
  a function of the step, a resumed run sees exactly the data the uninterrupted run would
  have seen, with no data-loader state to save. ``cfg.batch_size`` is the micro-batch size
  the caller builds ``batches`` with; the effective batch is ``batch_size * grad_accum``.
* "step" everywhere (logs, checkpoints, results) counts completed updates.

Device and precision: the loop trains where the model's parameters are (a stage moves the model
to ``run.device``, see ``vpe_lib.train.device``) and moves each batch there. ``cfg.amp``: "auto"
is bf16 autocast on a GPU with bf16 and fp32 on CPU; "bf16"; "fp16", with a
``torch.amp.GradScaler`` (gradients unscaled before clipping; an overflowing update is skipped and
the scale lowered, logged as ``fp16_overflows``, not as a non-finite loss; the scaler's state is
in the checkpoint, so resume is exact); "off".

Artifacts in ``out_dir``: ``checkpoint.pt`` (everything needed to resume, written atomically),
``final.pt`` (weights only, the EMA weights when EMA is on), ``metrics.jsonl`` (one JSON
object per log step and per evaluation) and ``train_config.json``. If ``checkpoint.pt``
exists the run resumes from it and reproduces the uninterrupted run bit-exactly on CPU.

Distributed data parallel (``torchrun``; see ``vpe_lib.train.distributed``). When a process
group of more than one rank is up, ``train`` wraps the model in ``DistributedDataParallel``
(on NCCL a CPU model is first moved to the rank's GPU) and:

* ``batches(i)`` still returns the i-th *global* micro-batch, identical on every rank (it is a
  pure function of ``i``); rank ``r`` of ``W`` keeps the contiguous slice
  ``[r*n/W, (r+1)*n/W)`` along dim 0 of every tensor in it (``shard_batch``; ``n`` must be a
  multiple of ``W``). DDP averages gradients over ranks and the loss is a batch mean, so W
  processes with global batch B compute the gradients of 1 process with batch B, and a run can
  resume on a different number of ranks and still see the same data. A batch source with a
  ``shard(i, rank, world)`` method (the clip samplers) reads only that slice on each rank (the
  same values, 1/W of the reads and decoding); one wrapped by ``batch_source(..., rank=, world=)``
  serves the slice from its DataLoader workers (``rank_local``). Any other source is called in
  full on every rank, which keeps its slice: cheap for in-memory batches.
* ``step_fn`` receives the DDP wrapper: call it (``model(x)``) so gradients are synchronised;
  reach attributes through ``unwrap_model(model)``. Gradient-accumulation micro-steps other
  than the last run under ``no_sync()``.
* Every rank seeds identically and restores the same RNG state on resume: data order never
  comes from the RNG, but dropout then draws the same mask pattern on every rank's shard
  (correlated across ranks, unlike one process with the global batch) — harmless for training,
  but runs with dropout are not bit-identical to a single process. Models with an EMA
  ``VectorQuantize`` codebook must be built after ``init_distributed()`` so the library syncs
  the codebook statistics over ranks (a warning says so otherwise).
* Logged values are means over ranks (= the global-batch values); ``items_per_s`` counts global
  items. A non-finite loss on any rank stops / skips the update on all ranks.
* Rank 0 alone writes ``checkpoint.pt``, ``final.pt``, ``metrics.jsonl``, ``train_config.json``
  and shows the progress bar; the others wait at a barrier after each write. Every rank loads
  ``checkpoint.pt`` on resume (``out_dir`` must be on a filesystem all ranks see). ``eval_fn``
  runs on every rank on the unwrapped (or EMA) model; rank 0's results are logged.

A stage under torchrun::

    info = init_distributed()            # rank 0 of 1 without torchrun: the same code runs anywhere
    torch.manual_seed(seed)
    model = VQVAE3D(cfg=tok_cfg).to(info.device)
    result = train(model, step_fn, batches, train_cfg, out_dir)   # batches(i): global batch i
    cleanup()

launched with ``torchrun --standalone --nproc_per_node=N my_stage_script.py``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from vpe_lib import progress

from .checkpoint import (
    atomic_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    preserved_rng,
    restore_rng_state,
    seed_everything,
)
from .device import check_amp, module_device, resolve_amp
from .distributed import (
    all_gather_object,
    all_reduce_mean,
    any_rank,
    barrier,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    shard_batch,
)

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any], "tuple[Tensor, dict[str, float]]"]
Batches = Callable[[int], Any]


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # micro-batch size (used by whoever builds `batches`)
    lr: float = 3e-4
    weight_decay: float = 0.01  # applied to weights with ndim >= 2 only (not biases / norms)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # <= 0 disables clipping (the norm is still logged)
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0 disables EMA of weights
    log_every: int = 10
    eval_every: int = 0  # 0 = only at the end
    ckpt_every: int = 200  # 0 = only at the end of the run
    nonfinite: str = "stop"  # "stop" | "skip"
    seed: int = 0
    # "auto": bf16 autocast on CUDA (on a GPU with bf16), fp32 on CPU, where bf16 is ~20x slower |
    # "bf16" | "fp16" (autocast + a GradScaler, whose state is checkpointed) | "off" (fp32)
    amp: str = "auto"
    # torch.compile the model for the training steps (evaluation stays eager). Same maths, another
    # float order: a compiled run is not bit-identical to an eager one, but it is the same recipe, so
    # the two share cache folders and a run may resume either way. Off by default: on 2 CPU cores the
    # compile time outweighs the gain for short runs (bench/bench_compile.py measures both)
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("steps", "warmup_steps", "eval_every", "ckpt_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        check_amp(self.amp)


@dataclass
class TrainResult:
    model: nn.Module  # the module passed in, trained (raw weights)
    step: int  # completed updates
    history: list[dict]  # every record of metrics.jsonl, including those of earlier (resumed) runs
    wall_time_s: float  # training time summed over all runs of this out_dir
    items_per_s: float  # throughput of this call
    trained_steps: int = 0  # updates run in this call (0: found finished, or resumed at the end, in out_dir)
    ema_model: nn.Module | None = None  # EMA copy when cfg.ema_decay > 0
    final_path: Path | None = None  # out_dir/final.pt once cfg.steps is reached
    skipped: int = 0  # updates skipped for non-finite loss / gradients

    @property
    def final_model(self) -> nn.Module:
        """The weights final.pt holds: the EMA copy if EMA is on, else the trained model."""
        return self.ema_model if self.ema_model is not None else self.model


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, metrics: dict[str, float], last_checkpoint_step: int | None):
        self.step, self.metrics = step, metrics
        vals = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        where = f"step {last_checkpoint_step}" if last_checkpoint_step is not None else "none written"
        super().__init__(f"non-finite loss at step {step}: {vals} (last good checkpoint: {where})")


# ---------------------------------------------------------------------------- distributed hooks
# is_distributed / is_main_process live in .distributed (re-exported here).


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel / DataParallel / compile wrapper."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ---------------------------------------------------------------------------- pieces


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of cfg.lr for update index s (0-based): linear warmup, then cosine to min_lr_ratio."""

    def f(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        progress = min(1.0, (s - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Weight decay on weights with ndim >= 2 only; a model with `lr_scale(name) -> float`
    (e.g. a fine-tuned encoder at a lower rate than its head) gets one group per scale."""
    scale_of = getattr(model, "lr_scale", None)
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = float(scale_of(name)) if scale_of is not None else 1.0
            groups.setdefault((p.ndim >= 2, scale), []).append(p)
    out = []
    for (decay, scale), params in sorted(groups.items(), key=lambda kv: (-kv[0][1], not kv[0][0])):
        g = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("param_groups: the model scales learning rates per parameter; pass lr")
            g["lr"] = lr * scale
        out.append(g)
    return out


class ModelEMA:
    """EMA of the weights; buffers (GroupNorm has none, the VQ codebook does) are copied.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates so short runs
    are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        out = [to_device(v, device) for v in batch]
        return type(batch)(*out) if hasattr(batch, "_fields") else type(batch)(out)
    return batch


def batch_items(batch: Any) -> int:
    """Number of items in a batch: dim 0 of its first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = batch_items(v)
        if n:
            return n
    return 0


def read_batch(batches: Batches, i: int, rank: int, world: int) -> tuple[Any, bool]:
    """(batch, rank_local): global micro-batch i, or only this rank's slice of it when the source
    can read that alone (see the module doc); rank_local says which, so the caller shards the rest."""
    if world > 1:
        local = getattr(batches, "rank_local", None)
        if local is not None:
            if tuple(local) != (rank, world):
                raise RuntimeError(f"the batch source serves rank {local[0]} of {local[1]}, "
                                   f"but this is rank {rank} of {world}")
            return batches(i), True
        if callable(getattr(batches, "shard", None)):
            return batches.shard(i, rank, world), True
    return batches(i), False


def _float(v: Any) -> float:
    return float(v.detach()) if isinstance(v, Tensor) else float(v)


def _autocast(amp: str, device: torch.device):
    precision = resolve_amp(amp, device)
    if precision == "off":
        return contextlib.nullcontext()
    if device.type == "cpu":
        warnings.warn(f"{precision} autocast on CPU is much slower than fp32 here (bf16 ~20x); use amp='auto'",
                      stacklevel=3)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _grad_scaler(amp: str, device: torch.device) -> "torch.amp.GradScaler | None":
    """fp16 only: its 5 exponent bits flush small gradients to zero unless the loss is scaled up
    (bf16 has fp32's range and needs no scaler)."""
    return torch.amp.GradScaler(device.type) if resolve_amp(amp, device) == "fp16" else None


def _warn_unsynced_codebooks(model: nn.Module) -> None:
    """VectorQuantize decides at construction whether to all-reduce its EMA codebook statistics
    (only if a process group is already up); built before, each rank would update its own
    codebook and DDP's buffer broadcast would keep rank 0's, fed by rank 0's shard alone."""
    if any(getattr(m, "use_ddp", True) is False and hasattr(m, "all_reduce_fn") for m in model.modules()):
        warnings.warn("the model's VectorQuantize codebook was built before the process group was "
                      "initialised, so its EMA statistics are not synced across ranks; build the model "
                      "after vpe_lib.train.distributed.init_distributed()", stacklevel=3)


def _read_metrics(path: Path, upto_step: int, *, rewrite: bool = True) -> list[dict]:
    """Records of an earlier run up to `upto_step`; later ones (logged after the checkpoint
    we resume from) would be repeated by this run, so the file is rewritten without them
    (by rank 0 only: `rewrite`)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r.get("step", 0) <= upto_step]
    if rewrite and len(kept) != len(records):
        atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), path)
    return kept


class _Window:
    """Running means of the logged values between two log steps."""

    def __init__(self) -> None:
        self.reset(time.perf_counter())

    def reset(self, t: float) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.items = 0
        self.t0 = t

    def add(self, values: dict[str, float], items: int) -> None:
        self.n += 1
        self.items += items
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.sums.items()} if self.n else {}


# ---------------------------------------------------------------------------- the loop


class _Run:
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
        self.scaler = _grad_scaler(self.precision, device)  # fp16 only
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
            _set_aside_stale(self.out_dir, self.run_id, self.desc)
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
                       if k != "steps" and k not in _COSMETIC
                       and hasattr(cfg, k) and _norm(v) != _norm(getattr(cfg, k))}
            if changed and main:
                warnings.warn(f"resuming {ckpt_path} with a changed config (saved, now): {changed}", stacklevel=3)
            _say(f"{self.desc}: resuming from step {self.step} ({ckpt_path})", cfg.progress and main)
        else:
            seed_everything(cfg.seed)
        self.history = _read_metrics(self.metrics_path, self.step, rewrite=main)
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
        self.emit({"step": self.step, **{f"eval/{k}": _float(v) for k, v in results.items()}})

    def log_window(self, window: _Window, lr: float) -> None:
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
                    _warn_unsynced_codebooks(self.raw)
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
                with _autocast(self.precision, self.device):
                    loss, metrics = step_fn(fwd_model, batch)
                values = {k: _float(v) for k, v in metrics.items()}
                values["loss"] = _float(loss)
                nonfinite = not math.isfinite(values["loss"])
                # every rank must take the same branch, or DDP's gradient all-reduce would hang
                if any_rank(nonfinite):
                    return sums, items, values if nonfinite else {**values, "nonfinite_on_another_rank": 1.0}
                scaled = loss / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
        return sums, items, None

    def update(self, step_fn: StepFn, fwd_model: nn.Module, ddp, batches: Batches, window: _Window
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


def train(
    model: nn.Module,
    step_fn: StepFn,
    batches: Batches,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    desc: str = "train",
    max_steps_this_run: int | None = None,
    identity: Any = None,
) -> TrainResult:
    """Train `model` for cfg.steps updates (resuming from out_dir/checkpoint.pt if present).

    max_steps_this_run: stop (with a checkpoint) after this many updates in this call — for
    tests of resume and for time-sliced runs; the next call continues from there.
    eval_fn(model) -> dict: run every cfg.eval_every steps and at the end, on the EMA model when
    EMA is on, in eval mode, with the training RNG streams preserved; logged as "eval/<key>".
    identity: what else determines the run besides `cfg` (the model's config, the loss, the data's
    digest; anything JSON-serialisable). A checkpoint written under another identity or another
    recipe (`cfg` up to logging fields) is never resumed: it is moved to out_dir/stale-<key>/ and
    the run starts fresh, saying so.
    """
    run = _Run(model, cfg, Path(out_dir), desc, identity)
    run.resume_or_seed()
    end_step = cfg.steps if max_steps_this_run is None else min(cfg.steps, run.step + max_steps_this_run)
    fwd_model, ddp = run.forward_model(model)
    model.train()
    fwd_model.train()
    pbar = tqdm(total=cfg.steps, initial=run.step, desc=desc, disable=not (cfg.progress and run.main),
                dynamic_ncols=True)
    run.t_start = t_start = time.perf_counter()
    start_step, items_run = run.step, 0
    window = _Window()
    try:
        while run.step < end_step:
            lr = run.opt.param_groups[0]["lr"]  # the rate this update runs at
            sums, items, applied = run.update(step_fn, fwd_model, ddp, batches, window)
            items_run += items
            step = run.step
            if applied:
                pbar.set_postfix(loss=f"{sums['loss']:.4f}", items_s=f"{items_run / (time.perf_counter() - t_start):.1f}",
                                 refresh=False)
            pbar.update(1)
            if run.main:
                progress.training_step(desc, step, cfg.steps, start_step, time.perf_counter() - t_start)
            if step % cfg.log_every == 0 or step == end_step:
                run.log_window(window, lr)
            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                run.run_eval(eval_fn)
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == end_step:
                run.save_checkpoint()
    finally:
        pbar.close()

    run_time = time.perf_counter() - t_start
    done = run.step >= cfg.steps
    if done:
        if run.step == start_step and run.last_ckpt != run.step:  # cfg.steps == 0 or an odd resume
            run.save_checkpoint()
        if run.main:
            atomic_save((run.ema.module if run.ema is not None else run.raw).state_dict(), run.final_path)
        has_final_eval = any(r.get("step") == run.step and any(k.startswith("eval/") for k in r) for r in run.history)
        if eval_fn is not None and not has_final_eval:
            run.run_eval(eval_fn)
    if run.world > 1:
        barrier()  # final.pt and the last metrics are on disk before any rank moves on
    return TrainResult(
        model=model,
        step=run.step,
        history=run.history,
        wall_time_s=run.elapsed_before + run_time,
        items_per_s=items_run / run_time if items_run else 0.0,
        trained_steps=run.step - start_step,
        ema_model=run.ema.module if run.ema is not None else None,
        final_path=run.final_path if done else None,
        skipped=run.skipped,
    )


# TrainConfig fields that change what is logged or shown, or how fast, not what is trained
_COSMETIC = ("progress", "log_every", "eval_every", "ckpt_every", "compile")


def recipe(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of `cfg` that determine what a run trains (for cache keys): a change of progress
    bar, logging cadence or compilation reuses the same run folder."""
    return {k: v for k, v in asdict(cfg).items() if k not in _COSMETIC}


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor would build CPU code with (CXX, else g++ or clang++)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    return shutil.which(cxx) if cxx else None


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile (inductor) of `model`, checked up front: on the CPU inductor writes and builds
    C++, so a machine without a compiler gets this message instead of one from deep in the first step."""
    if device.type == "cpu":
        if cxx_compiler() is None:
            raise RuntimeError("train.compile=true on the CPU needs a C++ compiler for torch.compile's inductor "
                               "backend (g++ or clang++ on PATH, or CXX); install one or set train.compile=false")
    return torch.compile(model)


def run_identity(cfg: TrainConfig, identity: Any = None) -> str:
    """A digest of everything that determines a training run: the recipe (`cfg` without the
    logging fields; `steps` included, because the learning-rate schedule depends on it) and the
    caller's `identity` (model config, loss, data)."""
    blob = json.dumps([recipe(cfg), identity], sort_keys=True, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _set_aside_stale(out_dir: Path, run_id: str, desc: str) -> None:
    """A checkpoint of another run (another recipe, model or data) in out_dir: move it and its
    final weights and metrics to out_dir/stale-<its id>/, so the run starts fresh and nothing is lost.
    Checkpoints written before identities existed carry none and are resumed as before."""
    ckpt_path = out_dir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path)
    saved = state.get("identity")
    if saved is None:  # written before identities existed: resumed as before (a changed recipe warns)
        return
    if saved == run_id:
        return
    target = out_dir / f"stale-{saved}"
    target.mkdir(exist_ok=True)
    for name in ("checkpoint.pt", "final.pt", "metrics.jsonl", "train_config.json"):
        if (out_dir / name).exists():
            os.replace(out_dir / name, target / name)
    msg = (f"{desc}: {ckpt_path} was written by another run (identity {saved}, now {run_id}: the recipe, "
           f"model or data changed); moved it to {target} and starting fresh")
    warnings.warn(msg, stacklevel=3)
    _say(msg, True)


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _say(msg: str, show: bool) -> None:
    log.info(msg)
    if show:
        tqdm.write(msg)


__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "ModelEMA",
    "is_distributed",
    "is_main_process",
    "lr_lambda",
    "train",
    "unwrap_model",
]
