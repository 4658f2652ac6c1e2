"""Stage 05: gather every stage's metrics into one table and the headline comparisons."""

from __future__ import annotations

from pathlib import Path

from vpe_lib.stages.common import STAGES, read_metrics, write_metrics

# Below this gap (in IoU points) between the UNet and the per-pixel colour
# baseline the world is too easy to tell encoders apart (issue 2).
MIN_DIFFICULTY_GAP = 0.10


def collect_metrics(run_dir: str | Path, *, include_results: bool = False) -> dict[str, float]:
    """All stages' metrics, one flat mapping (names already carry their stage prefix)."""
    merged: dict[str, float] = {}
    for stage in STAGES:
        if stage != "results" or include_results:
            merged.update(read_metrics(run_dir, stage))
    return merged


def segmentation_rows(metrics: dict[str, float]) -> list[dict]:
    """One row per segmentation model: name, fg IoU mean/std, mIoU."""
    rows = []
    for key, value in metrics.items():
        if key.startswith("seg/fg_iou/"):
            name = key.removeprefix("seg/fg_iou/")
            rows.append({"model": name, "fg_iou": value, "fg_iou_std": metrics.get(f"seg/fg_iou_std/{name}"),
                         "miou": metrics.get(f"seg/miou/{name}")})
    return sorted(rows, key=lambda r: -(r["fg_iou"] if r["fg_iou"] is not None else -1))


def run_results_stage(run_dir: Path, out: Path, *, head: str) -> dict[str, float]:
    m = collect_metrics(run_dir)
    unet, colour = m["seg/fg_iou/unet"], m["seg/fg_iou/colour_baseline"]
    tok, rnd = m[f"seg/fg_iou/tokenizer/{head}"], m[f"seg/fg_iou/random_tokenizer/{head}"]
    derived = {
        "results/unet_minus_colour_baseline": unet - colour,
        "results/world_hard_enough": float(unet - colour >= MIN_DIFFICULTY_GAP),
        "results/tokenizer_minus_unet": tok - unet,
        "results/tokenizer_minus_random_tokenizer": tok - rnd,
    }
    write_metrics(out, derived)
    return {**m, **derived}
