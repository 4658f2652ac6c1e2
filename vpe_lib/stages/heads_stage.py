"""Stage 05: the segmentation study. Does a video-pretrained encoder segment objects from a
single still image better than the same architecture with random weights, and than a UNet
trained from scratch?

For every method (encoder × head × frozen / fine-tuned, and the UNet), at every label budget
and seed (see `seg_protocol`): the learning rate is chosen on validation videos from the same
grid, the run's held-out learning curve is kept, and the test videos are scored once.

- Frozen encoders: the heads train on cached features (computed once per encoder instance, in
  float16); the encoder's forward pass would otherwise dominate every step of every run.
- Fine-tuned encoders: the encoder trains at `seg.encoder_lr_scale` × the head's rate, with
  the same schedule for the pretrained and the random-init control.
- Seeds vary the label subset, the head's init and batch order, the random encoder's draw and,
  where the pretrain stage trained several tokenizers, the pretraining.
- Every model predicts the semantic classes; foreground (objects + arm), objects only, mIoU,
  Dice, boundary F and COCO mask AP all come from that one prediction.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vpe_lib.config import RunConfig
from vpe_lib.eval.baselines import colour_baseline, fit_frame_difference, frame_difference
from vpe_lib.eval.segmentation import (coco_ground_truth, instance_ap, paired_difference, semantic_to_instances)
from vpe_lib.models.encoders import PREDICTOR_ENCODERS
from vpe_lib.stages.common import stage_device, write_json, write_metrics
from vpe_lib.stages.head_training import foreground
from vpe_lib.stages.heads_grid import convergence_work, grid_plan, row_work, searches_lr
from vpe_lib.stages.heads_study import DAVIS_KEYS, NATIVE_KEYS, Study
from vpe_lib.progress import WorkEta, format_duration
from vpe_lib.stages.seg_protocol import (Method, budget_index, choose_lr, main_methods, method_from_name,
                                         pct_name)


def _summarise(records: list[dict]) -> dict[str, float]:
    out = {}
    for key in ("fg_iou", "fg_iou_objects", "miou", "dice", "boundary_f", "ap", "ap50", "ap75", *DAVIS_KEYS,
                *NATIVE_KEYS):
        vals = np.array([r[key] for r in records if key in r], float)
        if len(vals):
            out[key] = float(vals.mean())
            out[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
    return out


def run_heads_stage(cfg: RunConfig, run_dir: Path, out: Path, *, progress: bool = True,
                    log: Callable[[str], None] = print) -> dict[str, float]:
    device = stage_device(cfg)
    s = cfg.seg
    study = Study(cfg, run_dir, out, progress=progress, device=device)
    test = study.splits["test"]
    gt = coco_ground_truth(test.instance, test.semantic, class_names=study.class_names,
                           classes=study.object_classes) if s.coco_ap and test.instance is not None else None
    encoders = list(s.encoders)
    if study.source == "coco" and any(e in PREDICTOR_ENCODERS for e in encoders):
        # stage 03 has no video to train the predictors on (still images): methods not run, listed apart
        # from skipped data, with the reason
        dropped = [e for e in encoders if e in PREDICTOR_ENCODERS]
        encoders = [e for e in encoders if e not in PREDICTOR_ENCODERS]
        study.not_run.append({"methods": dropped, "reason": "the source holds still images: the prediction "
                              "stage (03) has no video to train the transformers on"})
    methods = main_methods(encoders, s.heads, s.modes, s.finetune_heads, s.head_encoders, s.finetune_predictors)
    largest = max(s.label_pcts)
    ablations = ablation_methods(cfg, study)
    plan = grid_plan(methods, ablations, s)
    chosen: dict[str, float] = {}

    per_run: dict[str, dict[str, list[dict]]] = {}
    lr_search: dict[str, dict[str, dict[str, float]]] = {}
    test_preds: dict[str, np.ndarray] = {}
    # the ETA weighs each row by its updates and the pace of its kind (a fine-tuned encoder's update
    # costs several frozen heads'), and counts the convergence check that follows the grid
    eta = WorkEta()
    # a row searches the rate at a searched budget, or where its method has none (its first row); the
    # others reuse the method's choice
    first_rows = {m.name: i for i, (m, _) in reversed(list(enumerate(plan)))}
    searches = [searches_lr(s, pct) or first_rows[m.name] == i for i, (m, pct) in enumerate(plan)]
    work = [row_work(m, pct, s, search=search) for (m, pct), search in zip(plan, searches)]
    check = convergence_work(s, methods)
    t0 = time.perf_counter()
    for i, (method, pct) in enumerate(plan):
        elapsed = time.perf_counter() - t0
        left = eta.remaining_s(work[i:] + check)
        eta_text = f", ETA {format_duration(left)}" if left is not None else ""
        log(f"[heads] {i + 1}/{len(plan)} {method.name} at {pct:g}% labels ({format_duration(elapsed)}{eta_text})")
        row_start = time.perf_counter()
        seed0 = s.seeds[0]
        if searches[i]:
            first = {lr: study.run(method, pct, 0, seed0, lr) for lr in s.lr_grid}
            lr = chosen[method.name] = choose_lr({lr: r["val_fg_iou"] for lr, r in first.items()})
            lr_search.setdefault(method.name, {})[pct_name(pct)] = {f"{k:g}": r["val_fg_iou"] for k, r in first.items()}
        else:  # the rate this method chose at a searched budget
            lr = chosen[method.name]
            first = {lr: study.run(method, pct, 0, seed0, lr)}
        runs = [first[lr]] + [study.run(method, pct, k, seed, lr) for k, seed in enumerate(s.seeds) if k > 0]
        for r in runs:
            probs = r.pop("probs")
            pred = probs.argmax(1).astype(np.uint8)
            r.update(study.score(pred))
            if gt is not None:
                r.update(instance_ap(gt, [semantic_to_instances(p.astype(np.float32), classes=study.object_classes)
                                          for p in probs]))
            if pct == largest:  # every seed's predictions in the benchmark's format, scored from those files
                r.update(study.benchmark_outputs(method, r["seed"], probs))
                if r["seed"] == seed0:
                    test_preds[method.key] = pred
        per_run.setdefault(method.name, {})[pct_name(pct)] = runs
        # the pace from the updates this call ran: runs found finished in the cache took no time
        eta.record(work[i][0], sum(r["trained_steps"] for r in [*first.values(), *runs[1:]]),
                   time.perf_counter() - row_start)

    study.remove_feature_stores()
    metrics = collect(per_run, s, study)
    if s.convergence_steps:
        conv = run_convergence(cfg, run_dir, out, per_run, device=device, progress=progress, log=log)
        metrics.update(conv["metrics"])
        write_json(out / "convergence.json", {k: v for k, v in conv.items() if k != "metrics"})
    baselines = run_baselines(study, s)
    for name, res in baselines.items():
        for k, v in res.items():
            metrics[f"seg/{k}/{name}"] = v
    if study.source == "davis":  # the ceiling at native resolution: the truth at the study's size and back
        metrics.update({f"seg/ceiling/{k}": v for k, v in study.davis_ceiling().items()})
    if study.source != "pushworld":  # seg/davis/..., seg/coco/...: never mistaken for PushWorld rows
        metrics = {k.replace("seg/", f"seg/{study.source}/", 1): v for k, v in metrics.items()}
        metrics[f"seg/{study.source}/n_skipped"] = len(study.skipped)
    write_json(out / "skipped.json", {"skipped": study.skipped, "methods_not_run": study.not_run})
    write_json(out / "per_seed.json", {m: {p: [{k: v for k, v in r.items()} for r in rs] for p, rs in d.items()}
                                       for m, d in per_run.items()})
    write_json(out / "lr_search.json", lr_search)
    write_json(out / "baselines.json", baselines)
    np.savez_compressed(out / "test_preds.npz", frames=test.frames, truth=test.semantic, **test_preds)
    write_metrics(out, metrics)
    return metrics


def run_convergence(cfg: RunConfig, run_dir: Path, out: Path, per_run: dict[str, dict[str, list[dict]]], *,
                    device, progress: bool, log: Callable[[str], None]) -> dict:
    """The heads stage's convergence check (seg.convergence_*): `convergence_check` on the methods of the
    grid, each at the learning rate it chose at the largest budget, beside the grid's runs of the same
    seeds. Metrics per method: means over the seeds, the gain over the grid's runs, the share still
    rising, and with two or more seeds the paired difference from the UNet trained as long."""
    s = cfg.seg
    largest_pct = max(s.label_pcts)
    largest, budget_steps = pct_name(largest_pct), s.steps_at(largest_pct)
    names = [n for n in s.convergence_methods if n in per_run]
    missing = [n for n in s.convergence_methods if n not in per_run]
    if missing:  # said, not dropped silently: those rows are not in this profile's grid
        log(f"[heads] convergence check: {', '.join(missing)} not in this study's methods, left out")
    seeds = list(s.seeds[:s.convergence_seeds])
    log(f"[heads] convergence check: {', '.join(names)} at {largest_pct:g}% labels for "
        f"{s.convergence_steps} updates, seed(s) {', '.join(map(str, seeds))}")
    rows = convergence_check(cfg, run_dir, out, [(method_from_name(n), per_run[n][largest][0]["lr"]) for n in names],
                             s.convergence_steps, n_seeds=len(seeds), device=device, progress=progress)
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        grid = next(r for r in per_run[row["method"]][largest] if r["seed"] == row["seed"])
        row.update(budget_curve=grid["curve"], budget_fg_iou=grid["fg_iou"], budget_steps=budget_steps)
        by_method.setdefault(row["method"], []).append(row)
    m: dict[str, float] = {}
    for name, rs in by_method.items():
        key = f"seg/convergence/{name}"
        for k in ("steps", "budget_steps", "fg_iou", "fg_iou_objects", "budget_fg_iou", "val_fg_iou", "best_step",
                  "train_wall_s"):
            m[f"{key}/{k}"] = float(np.mean([r[k] for r in rs]))
        m[f"{key}/gain"] = float(np.mean([r["fg_iou"] - r["budget_fg_iou"] for r in rs]))
        m[f"{key}/still_rising"] = float(np.mean([r["curve_status"] == "still rising" for r in rs]))
        m[f"{key}/n_seeds"] = float(len(rs))
        if name != "unet" and "unet" in by_method and len(rs) >= 2:
            d = paired_difference([r["fg_iou"] for r in rs], [r["fg_iou"] for r in by_method["unet"]])
            for k in ("mean", "ci_low", "ci_high"):
                m[f"{key}/diff_vs_unet/{k}"] = d[k]
    return {"label_pct": largest_pct, "seeds": seeds, "runs": rows, "metrics": m}


def convergence_check(cfg: RunConfig, run_dir: Path, out: Path, methods: list[tuple[Method, float]], steps: int,
                      *, n_seeds: int = 1, device: torch.device | str | None = None, progress: bool = False
                      ) -> list[dict]:
    """Each (method, learning rate) once more at the largest label budget for `steps` updates: the
    first `n_seeds` seeds (their label subsets and initialisations), its own warmup + cosine schedule
    and validation every seg.train.eval_every updates; test weights from its best validation step, as
    in the grid. Only the update count differs from the grid's runs of those seeds, so the curves show
    whether the budget's schedule had converged. Runs are cached like the grid's (resumable, reused
    when finished)."""
    s = cfg.seg
    largest = max(s.label_pcts)
    per_budget = s.budget_steps or tuple(s.train.steps for _ in s.label_pcts)
    budget = tuple(steps if p == largest else n for p, n in zip(s.label_pcts, per_budget))
    study = Study(dataclasses.replace(cfg, seg=dataclasses.replace(s, budget_steps=budget)), run_dir, out,
                  progress=progress, device=device)
    fields = ("method", "seed", "lr", "curve", "curve_status", "best_step", "val_fg_iou", "fg_iou", "fg_iou_objects",
              "train_wall_s")
    rows = []
    for method, lr in methods:
        for k, seed in enumerate(s.seeds[:n_seeds]):
            r = study.run(method, largest, k, seed, lr)
            r.update(study.score(r.pop("probs").argmax(1)))
            rows.append({"steps": steps, **{f: r[f] for f in fields}})
    study.remove_feature_stores()
    return rows


def ablation_methods(cfg: RunConfig, study: Study) -> list[Method]:
    """Where is the signal? A linear probe on each encoder level alone, and the main head without
    the near-pixel (stride-1) maps; pretrained and random, frozen, at the largest budget."""
    s = cfg.seg
    out: list[Method] = []
    encs = [e for e in ("tokenizer", "random_tokenizer") if e in s.encoders]
    if not encs:
        return out
    info = study.encoder(Method("tokenizer"), 0, s.seeds[0])[0].feature_info
    if s.level_probes:
        for f in info:
            out += [Method(e, "linear", "frozen", levels=(f.name,), tag=f"probe-{f.name}") for e in encs]
    # the structural ablations use the main head (conv) only: repeating them per head doubled the
    # study's ablation time for a question the probes already answer level by level
    ablated_heads = [h for h in s.heads if h == "conv"] or list(s.heads[:1])
    if s.without_pixel_levels:
        coarse = tuple(f.name for f in info if f.stride > 1)
        for head in ablated_heads:
            out += [Method(e, head, "frozen", levels=coarse, tag="no-stride1") for e in encs]
    if s.coarse_out_stride:
        for head in ablated_heads:
            out += [Method(e, head, "frozen", out_stride=s.coarse_out_stride, tag=f"out-stride{s.coarse_out_stride}")
                    for e in encs]
    return out


def collect(per_run: dict[str, dict[str, list[dict]]], s, study: Study) -> dict[str, float]:
    """Flat metrics: per method and budget the mean ± std over seeds, the paired difference from the
    UNet and (for pretrained encoders) from the random-weight control, with 95% intervals."""
    m: dict[str, float] = {
        "seg/n_train_frames": len(study.train_frames),
        "seg/n_train_videos": len(np.unique(study.train_vids)),
        "seg/n_val_frames": len(study.splits["val"].frames),
        "seg/n_test_frames": len(study.splits["test"].frames),
        "seg/test_fg_fraction": float(foreground(study.splits["test"].semantic).mean()),
        "seg/n_seeds": len(s.seeds),
        "seg/pretrain_seeds": len(study.tokenizers),
    }
    for name, budgets in per_run.items():
        for pct, runs in budgets.items():
            for k, v in _summarise(runs).items():
                metric, std = (k[:-4], "_std") if k.endswith("_std") else (k, "")
                prefix = "coco_ap" if metric.startswith("ap") else metric + std
                if metric.startswith("ap"):
                    if std:
                        continue
                    m[f"seg/coco_ap/{name}/{pct}/{metric}"] = v
                else:
                    m[f"seg/{prefix}/{name}/{pct}"] = v
            m[f"seg/lr/{name}/{pct}"] = runs[0]["lr"]
            m[f"seg/trainable_params/{name}/{pct}"] = runs[0]["trainable_params"]
            m[f"seg/train_wall_s/{name}/{pct}"] = float(np.mean([r["train_wall_s"] for r in runs]))
            m[f"seg/steps/{name}/{pct}"] = float(s.steps_at(runs[0]["pct"]))
            m[f"seg/best_step/{name}/{pct}"] = float(np.mean([r.get("best_step", np.nan) for r in runs]))
            m[f"seg/still_rising/{name}/{pct}"] = float(np.mean([r["curve_status"] == "still rising" for r in runs]))
    for name, budgets in per_run.items():
        if name == "unet":
            continue
        for pct, runs in budgets.items():
            a = [r["fg_iou"] for r in runs]
            refs = {"diff_vs_unet": per_run.get("unet", {}).get(pct)}
            if not name.startswith("random_") and "random_" + name in per_run:  # its random-weight twin
                refs["diff_vs_random"] = per_run.get("random_" + name, {}).get(pct)
            encoder, _, rest = name.partition("/")
            if encoder in ("masked", "ar"):  # what the transformer adds over the tokenizer it reads (same head, mode)
                refs["diff_vs_tokenizer"] = per_run.get(f"tokenizer/{rest}", {}).get(pct)
            if encoder == "masked":  # masked against autoregressive prediction
                refs["diff_vs_ar"] = per_run.get(f"ar/{rest}", {}).get(pct)
            for label, ref in refs.items():
                if ref:
                    d = paired_difference(a, [r["fg_iou"] for r in ref])
                    for k in ("mean", "ci_low", "ci_high"):
                        m[f"seg/{label}/{name}/{pct}/{k}"] = d[k]
                    # the same on the pushable objects alone: foreground IoU is dominated by the arm
                    d = paired_difference([r["fg_iou_objects"] for r in runs], [r["fg_iou_objects"] for r in ref])
                    for k in ("mean", "ci_low", "ci_high"):
                        m[f"seg/objects_{label}/{name}/{pct}/{k}"] = d[k]
    # aliases of the flat keys earlier reports used: the 100% frozen rows
    for name in per_run:
        full = f"seg/fg_iou/{name}/labels100"
        if name.endswith("/frozen") and full in m:
            m[f"seg/fg_iou/{name.removesuffix('/frozen')}"] = m[full]
    if "seg/fg_iou/unet/labels100" in m:
        m["seg/fg_iou/unet"] = m["seg/fg_iou/unet/labels100"]
    return m


def run_baselines(study: Study, s) -> dict[str, dict[str, float]]:
    """All-background, all-foreground, the per-pixel colour model (per budget, first seed's videos)
    and frame differencing (threshold chosen on validation)."""
    test = study.splits["test"]
    out = {"all_background": study.score(np.zeros_like(test.semantic)),
           "all_foreground": study.score(np.ones_like(test.semantic))}
    for pct in s.label_pcts:
        idx = budget_index(study.train_vids, pct, s.seeds[0])
        fg = colour_baseline(study.train_frames[idx], foreground(study.train_labels[idx]), test.frames,
                             n_pixels=s.colour_baseline_pixels)
        out[f"colour_baseline/{pct_name(pct)}"] = study.score(fg.astype(np.uint8))
    if study.previous:  # video sources only
        val = study.splits["val"]
        thr, _ = fit_frame_difference(val.frames, study.previous["val"], foreground(val.semantic))
        fd = frame_difference(test.frames, study.previous["test"], thr)
        out["frame_difference"] = {**study.score(fd.astype(np.uint8)), "threshold": thr}
    return out
