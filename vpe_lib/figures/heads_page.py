"""The tables and figures of the segmentation page (notebook 05), from the heads stage's metrics and files.

Rows come from the results stage's builders (`study_rows`, `benchmark_rows`); this module only lays them out
as markdown, so the notebook calls and displays and the tests reach every table.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt

from vpe_lib.figures import study_plots
from vpe_lib.figures.tables import bullets, interval, num, row_mean_std


def seeds_note(n_seeds: int, pretrain_seeds: int) -> str:
    """What the seeds vary: the pretraining too, or only the labels, the heads and the random encoders."""
    return f"{n_seeds} seeds; " + (
        f"**{pretrain_seeds} pretrained tokenizer(s)**: the seeds vary the pretraining too." if pretrain_seeds > 1 else
        "**one pretrained tokenizer** (this profile pretrains once): the seeds vary the labels, the heads and the "
        "random encoder, not the pretraining; the study profile pretrains three.")


def convergence_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The convergence check's longer runs against the grid's run of the same method and seed."""
    head = ("| method | seed | updates | best at | test fg IoU | grid run (updates, test fg IoU) | gain | longer run's curve |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {r['method']} | {r['seed']} | {r['steps']} | {r['best_step']} | {r['fg_iou']:.3f} | {r['budget_steps']}, "
        f"{r['budget_fg_iou']:.3f} | {r['fg_iou'] - r['budget_fg_iou']:+.3f} | {r['curve_status']} |" for r in runs)


def study_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every method at every label budget: the metrics (mean ± std over seeds), the paired differences against
    the UNet and the random-weight twin, the cost and the schedule."""
    lines = ["| labels | method | fg IoU | objects IoU | mIoU | Dice | boundary F | AP | AP50 | Δ UNet [95% CI] | "
             "Δ random [95% CI] | params | train s | lr | best / run updates | curve |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['pct']:g}% | {r['method']} | {row_mean_std(r, 'fg_iou')} | {row_mean_std(r, 'fg_iou_objects')} | "
            f"{row_mean_std(r, 'miou')} | {row_mean_std(r, 'dice')} | {row_mean_std(r, 'boundary_f')} | {num(r['ap'])} | "
            f"{num(r['ap50'])} | {interval(r['diff_vs_unet'])} | {interval(r['diff_vs_random'])} | {num(r['params'], 0)} | "
            f"{num(r['train_s'], 0)} | {num(r['lr'], 4)} | {num(r.get('best_step'), 0)} / {num(r.get('steps'), 0)} | "
            f"{r['curve']} |")
    return "\n".join(lines)


def benchmark_table(bench: Sequence[Mapping[str, Any]], ceiling: Mapping[str, float] | None, size: int) -> str:
    """DAVIS J&F (or COCO mask AP) as the benchmark scores the written files, with DAVIS's round-trip ceiling at
    the study's `size`; a sentence for PushWorld, whose own metrics are exact."""
    if not bench:
        return "_PushWorld: the study's own metrics are exact; there is no external benchmark format._"
    at = f"\n\nAt {bench[0]['labels'].removeprefix('labels')}% labels; mean ± std over seeds."
    if any(r["jf_mean"] is not None for r in bench):
        rows = ["| method | J&F (native) | J | F | J&F at the study's size | pooled IoU |", "|---|---|---|---|---|---|"]
        rows += [f"| {r['method']} | {row_mean_std(r, 'jf_mean')} | {row_mean_std(r, 'j_mean')} | {row_mean_std(r, 'f_mean')} | "
                 f"{num(r['model_res_jf_mean'])} | {num(r['pooled_iou'])} |" for r in bench]
        if ceiling:
            rows.append(f"| **ceiling** (truth at {size} px and back) | **{num(ceiling['jf_mean'])}** | "
                        f"{num(ceiling['j_mean'])} | {num(ceiling['f_mean'])} | 1.000 | — |")
        return "\n".join(rows) + at
    rows = ["| method | mask AP (native, from the JSON) | AP50 | pooled IoU |", "|---|---|---|---|"]
    rows += [f"| {r['method']} | {row_mean_std(r, 'ap')} | {row_mean_std(r, 'ap50')} | {num(r['pooled_iou'])} |" for r in bench]
    return "\n".join(rows) + at


def baselines_table(baselines: Mapping[str, Mapping[str, float]]) -> str:
    return ("| baseline | fg IoU | objects IoU | mIoU | Dice |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {k} | {num(v.get('fg_iou'))} | {num(v.get('fg_iou_objects'))} | {num(v.get('miou'))} | {num(v.get('dice'))} |"
        for k, v in baselines.items()))


def lr_table(lr_search: Mapping[str, Mapping[str, Mapping[str, float]]], grid: Sequence[float]) -> str:
    """Validation fg IoU of the first seed at every rate of the grid, per method and budget searched."""
    return ("Validation fg IoU of the first seed at every learning rate of the grid (the best is kept):\n\n"
            "| method | budget | " + " | ".join(f"lr {x:g}" for x in grid) + " |\n|---|---|" + "---|" * len(grid) + "\n"
            + "\n".join(f"| {m} | {b} | " + " | ".join(num(v.get(f"{x:g}")) for x in grid) + " |"
                        for m, d in lr_search.items() for b, v in d.items()))


def skipped_lines(skipped_file: Mapping[str, Any], shown: int = 10) -> list[str]:
    """The input files the stage skipped (the first `shown`, with the reason) and the methods a source could not
    run, each as a markdown paragraph; empty when nothing was skipped."""
    out = []
    skipped = skipped_file.get("skipped", [])
    if skipped:
        out.append(f"**{len(skipped)} input files were skipped** (see `skipped.json`): " + "; ".join(
            f"`{s['path']}`: {s['reason']}" for s in skipped[:shown]))
    out += [f"**Not run on this source:** {', '.join(nr['methods'])}: {nr['reason']}."
            for nr in skipped_file.get("methods_not_run", [])]
    return out


# ---------------------------------------------------------------------------- the page's sections


def main_methods(per_seed: Mapping[str, Any]) -> list[str]:
    """The grid's methods, without the ablations (level probes, heads: names with more than two slashes)."""
    return [m for m in per_seed if study_plots.is_main_method(m)]


def foreground_titles(prefix: str) -> tuple[str, str | None]:
    """What "foreground" is on this source (PushWorld: the objects and the arm, then the objects alone; DAVIS and
    COCO: every labelled object, with no second panel)."""
    return ("objects + arm", "objects only") if prefix == "seg" else ("foreground (every labelled object)", None)


def score_figure(per_seed: Mapping[str, Any], prefix: str):
    """Per label budget, one bar per method with every seed as a dot: foreground IoU, and on PushWorld the
    objects alone beside it."""
    whole, objects = foreground_titles(prefix)
    fig, axes = plt.subplots(1, 2 if objects else 1, figsize=(13 if objects else 7, 3.6), squeeze=False)
    methods = main_methods(per_seed)
    study_plots.score_bars(per_seed, metric="fg_iou", methods=methods, ax=axes[0][0], title=whole)
    if objects:
        study_plots.score_bars(per_seed, metric="fg_iou_objects", methods=methods, ax=axes[0][1], title=objects)
    return fig


def convergence_markdown(conv: Mapping[str, Any] | None, notes: Sequence[str]) -> str:
    """The convergence check's table and what it says, or why there is none."""
    if conv is None:
        return "_No convergence check in this profile (`seg.convergence_steps` = 0)._"
    return convergence_table(conv["runs"]) + "\n\n" + bullets(notes)


def shown_predictions(preds: Mapping[str, Any]) -> dict[str, Any]:
    """The saved test predictions of the grid's methods (`test_preds.npz`, keys with "/" written as "__")."""
    names = {k: k.replace("__", "/") for k in preds.files if k not in ("frames", "truth")}
    return {name: preds[k] for k, name in names.items() if study_plots.is_main_method(name)}


def protocol_markdown(baselines: Mapping[str, Any], lr_search: Mapping[str, Any], grid: Sequence[float],
                      skipped_file: Mapping[str, Any]) -> str:
    """The trivial baselines, the learning-rate search and what was skipped, one block."""
    return "\n\n".join([baselines_table(baselines), lr_table(lr_search, grid), *skipped_lines(skipped_file)])
