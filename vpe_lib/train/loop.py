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

The parts: the recipe and its digest (``recipe.py``), the schedule, parameter groups, EMA and mixed precision
(``optim.py``), batches (``batches.py``), one call's state and its jobs (``run.py``), the run folder's metrics
log and stale checkpoints (``run_files.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn
from tqdm.auto import tqdm

from vpe_lib import progress

from .batches import Batches, StepFn
from .checkpoint import atomic_save
from .distributed import barrier, is_distributed, is_main_process
from .recipe import TrainConfig, recipe, run_identity
from .run import NonFiniteLossError, Run, unwrap_model
from .run_files import LogWindow


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
    run = Run(model, cfg, Path(out_dir), desc, identity)
    run.resume_or_seed()
    end_step = cfg.steps if max_steps_this_run is None else min(cfg.steps, run.step + max_steps_this_run)
    fwd_model, ddp = run.forward_model(model)
    model.train()
    fwd_model.train()
    pbar = tqdm(total=cfg.steps, initial=run.step, desc=desc, disable=not (cfg.progress and run.main),
                dynamic_ncols=True)
    run.t_start = t_start = time.perf_counter()
    start_step, items_run = run.step, 0
    window = LogWindow()
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


__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "is_distributed",
    "is_main_process",
    "recipe",
    "run_identity",
    "train",
    "unwrap_model",
]
