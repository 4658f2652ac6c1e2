"""Stage 05: gather every stage's metrics into one table and the headline comparisons.

The segmentation study's table and its one-sentence answers are built here from the flat
metrics (`seg/<metric>/<method>/labels<pct>`), so the notebook, the index page and the tests
read the same rows and the same sentences.
"""

from __future__ import annotations

import re
from pathlib import Path

from vpe_lib.eval.pretext_gates import failed_clause, gate_metrics, pretext_gates
from vpe_lib.eval.segmentation import verdict
from vpe_lib.stages.common import STAGES, read_metrics, write_metrics

# Below this gap (in IoU points) between the UNet and the per-pixel colour
# baseline the world is too easy to tell encoders apart (issue 2).
MIN_DIFFICULTY_GAP = 0.10
ROW_METRICS = ("fg_iou", "fg_iou_objects", "miou", "dice", "boundary_f")
_ROW = re.compile(r"^(?P<method>.+)/(?P<pct>labels[0-9.]+)$")  # after "<prefix>/fg_iou/"


def seg_prefix(m: dict) -> str:
    """Where the study's metrics live: seg/ for PushWorld, seg/<source>/ for DAVIS or COCO runs."""
    for key in m:
        parts = key.split("/")
        if len(parts) > 3 and parts[0] == "seg" and parts[2] == "fg_iou" and parts[1] in ("davis", "coco"):
            return f"seg/{parts[1]}"
    return "seg"


# the stages a results page cannot do without; the others (e.g. the latent analysis, which needs
# PushWorld's videos, on a run that trained its heads on COCO images) may not have been run
REQUIRED_STAGES = ("heads",)


def missing_stages(run_dir: str | Path) -> list[str]:
    """The stages (before results) that have written no metrics in this run folder."""
    return [stage for stage in STAGES
            if stage != "results" and not (Path(run_dir) / stage / "metrics.json").exists()]


def collect_metrics(run_dir: str | Path, *, include_results: bool = False,
                    required: tuple[str, ...] = REQUIRED_STAGES) -> dict[str, float]:
    """All stages' metrics, one flat mapping (names already carry their stage prefix). A missing
    `required` stage raises (naming it and how to run it); any other missing stage is left out,
    and `missing_stages` says which, for the page to state."""
    merged: dict[str, float] = {}
    absent = set(missing_stages(run_dir)) - set(required)
    for stage in STAGES:
        if (stage != "results" or include_results) and stage not in absent:
            merged.update(read_metrics(run_dir, stage))
    return merged


def _pct(label: str) -> float:
    return float(label.removeprefix("labels"))


def study_rows(m: dict[str, float], prefix: str = "seg") -> list[dict]:
    """One row per (method, label budget) of the study: every metric's mean and std over seeds,
    COCO AP, the paired differences from the UNet and from the random-weight control (95% CI),
    trainable parameters, training time, chosen learning rate and learning-curve status."""
    rows = []
    for key in m:
        head = prefix + "/fg_iou/"
        hit = _ROW.match(key[len(head):]) if key.startswith(head) else None
        if not hit:
            continue
        method, pct = hit["method"], hit["pct"]
        get = lambda k: m.get(f"{prefix}/{k}/{method}/{pct}")  # noqa: E731
        row = {"method": method, "labels": pct, "pct": _pct(pct)}
        for metric in ROW_METRICS:
            row[metric], row[metric + "_std"] = get(metric), get(metric + "_std")
        for k in ("ap", "ap50", "ap75"):
            row[k] = m.get(f"{prefix}/coco_ap/{method}/{pct}/{k}")
        for ref in ("diff_vs_unet", "diff_vs_random", "objects_diff_vs_unet", "objects_diff_vs_random"):
            row[ref] = {k: m.get(f"{prefix}/{ref}/{method}/{pct}/{k}") for k in ("mean", "ci_low", "ci_high")}
        row["params"], row["train_s"], row["lr"] = get("trainable_params"), get("train_wall_s"), get("lr")
        row["steps"], row["best_step"] = get("steps"), get("best_step")  # updates run; the best, on validation
        rising = get("still_rising")
        row["curve"] = "—" if rising is None else ("still rising" if rising > 0 else "converged")
        if rising is not None and 0 < rising < 1:
            row["curve"] = f"still rising ({rising:.0%} of seeds)"
        rows.append(row)
    return sorted(rows, key=lambda r: (r["pct"], -(r["fg_iou"] if r["fg_iou"] is not None else -1)))


def segmentation_rows(metrics: dict[str, float], prefix: str = "seg") -> list[dict]:
    """The study's rows at the largest label budget, plus the trivial baselines (one per name);
    `prefix` as `seg_prefix` gives it (seg/tiny_coco, seg/davis for the real-data sources)."""
    rows = study_rows(metrics, prefix)
    top = max((r["pct"] for r in rows), default=None)
    out = [{"model": r["method"], "fg_iou": r["fg_iou"], "fg_iou_std": r["fg_iou_std"], "miou": r["miou"]}
           for r in rows if r["pct"] == top]
    for key, value in metrics.items():
        name = key.removeprefix(f"{prefix}/fg_iou/")
        if key.startswith(f"{prefix}/fg_iou/") and name in ("all_background", "all_foreground", "frame_difference"):
            out.append({"model": name, "fg_iou": value, "fg_iou_std": None, "miou": metrics.get(f"{prefix}/miou/{name}")})
    return sorted(out, key=lambda r: -(r["fg_iou"] if r["fg_iou"] is not None else -1))


# encoders with a random-weight twin (random_<name>): the rows the index answers for
PRETRAINED_ENCODERS = ("tokenizer", "masked", "ar")


def answers(m: dict[str, float], *, n_seeds: int, prefix: str = "seg") -> list[str]:
    """One sentence per label budget and pretrained method, from the paired 95% intervals:
    against the UNet, and against the same architecture with random weights. A method whose
    pretraining failed its own task (`pretext_gates`) says so in the same sentence."""
    rows = study_rows(m, prefix)
    out = []
    for r in rows:
        if r["method"].split("/")[0] not in PRETRAINED_ENCODERS or r["method"].count("/") != 2:
            continue  # the main pretrained rows; ablations are in the table
        for ref, other, metric in (("diff_vs_unet", "the UNet from scratch", "foreground IoU"),
                                   ("diff_vs_random", f"random_{r['method']}", "foreground IoU"),
                                   ("objects_diff_vs_unet", "the UNet from scratch", "objects-only IoU"),
                                   ("objects_diff_vs_random", f"random_{r['method']}", "objects-only IoU")):
            d = r[ref]
            if d["mean"] is None:
                continue
            diff = {**d, "n": n_seeds}
            if d["ci_low"] is None:
                diff["ci_low"] = diff["ci_high"] = float("nan")
            sentence = f"At {r['pct']:g}% labels: " + verdict(diff, better=r["method"], worse=other, metric=metric)
            failed = failed_clause(m, r["method"].split("/")[0])
            if failed:  # in the same sentence: a verdict about a model that did not learn its own task
                sentence = sentence.removesuffix(".") + f"; the pretraining behind {r['method']} failed its gate ({failed})."
            out.append(sentence)
    return out


def convergence_notes(m: dict[str, float], prefix: str = "seg", tol: float = 0.01) -> list[str]:
    """One sentence per method of the convergence check (seg.convergence_*): what training longer than
    the largest budget's schedule gave on the test videos (mean over its seeds), whether the longer
    curves still rose, and with two or more seeds the paired interval against the UNet trained as long.
    A mean gain below `tol` is called no gain rather than given a sign."""
    head = f"{prefix}/convergence/"
    names = sorted({k[len(head):-len("/steps")] for k in m if k.startswith(head) and k.endswith("/steps")},
                   key=lambda n: (n != "unet", n))
    out = []
    for name in names:
        g = {k: m.get(f"{head}{name}/{k}") for k in ("steps", "budget_steps", "fg_iou", "gain", "still_rising")}
        if any(v is None for v in g.values()):
            continue
        n = int(m.get(f"{head}{name}/n_seeds") or 1)
        what = "the UNet from scratch" if name == "unet" else name
        gain = (f"within {tol:g} of the grid's runs ({g['gain']:+.3f}): that schedule had converged for it"
                if abs(g["gain"]) < tol else f"{g['gain']:+.3f} against the grid's runs")
        rising = "" if not g["still_rising"] else (
            "; the longer curve was still rising" if n == 1 else f"; {g['still_rising']:.0%} of the longer curves still rose")
        text = (f"Convergence check, {n} seed{'s' if n > 1 else ''}: {what} trained for {g['steps']:.0f} updates "
                f"instead of {g['budget_steps']:.0f} scores {g['fg_iou']:.3f} test foreground IoU, {gain}{rising}.")
        d = {k: m.get(f"{head}{name}/diff_vs_unet/{k}") for k in ("mean", "ci_low", "ci_high")}
        if d["mean"] is not None:
            text += " Trained as long: " + verdict({**d, "n": n}, better=name, worse="the UNet")
        out.append(text)
    return out


# The seed study's reported best configuration (the report this project started from): one run on BAIR.
SEED_PAPER = {"setup": "fine-tuned tokenizer encoder + transformer-informed latent, conv decoder",
              "data": "BAIR robot pushing (real video), 64x64", "runs": "1 (no interval)", "fg_iou": 0.83,
              "pretext": "video generation not achieved (the authors' words)"}


def seed_paper_rows(m: dict[str, float], prefix: str = "seg") -> list[dict]:
    """The seed paper's best configuration beside ours: the fine-tuned predictor encoders with the conv head
    (study profile: seg.finetune_predictors), their random twins, the fine-tuned tokenizer and the UNet, all
    at the largest label budget the fine-tuned predictors ran at (seg.finetune_predictor_pcts; without them,
    the largest budget), with each mean ± std over seeds and the pretext gate behind it."""
    from vpe_lib.eval.pretext_gates import failed_clause

    rows = study_rows(m, prefix)
    want = ("masked/conv/finetuned", "random_masked/conv/finetuned", "ar/conv/finetuned", "random_ar/conv/finetuned",
            "tokenizer/conv/finetuned", "unet")
    theirs = [r["pct"] for r in rows if r["method"] in want[:4]]
    top = max(theirs or [r["pct"] for r in rows], default=None)
    out = []
    for name in want:
        r = next((r for r in rows if r["method"] == name and r["pct"] == top), None)
        if r is None:
            continue
        enc = name.split("/")[0]
        failed = "" if enc.startswith("random_") or enc == "unet" else failed_clause(m, enc)
        gate = "—" if enc.startswith("random_") or enc == "unet" else (
            f"failed its gate: {failed}" if failed else "passed its gate")
        out.append({"method": name, "labels": f"{top:g}%", "fg_iou": r["fg_iou"], "fg_iou_std": r["fg_iou_std"],
                    "fg_iou_objects": r["fg_iou_objects"], "pretext": gate})
    return out


def run_results_stage(run_dir: Path, out: Path) -> dict[str, float]:
    m = collect_metrics(run_dir)
    derived: dict[str, float] = gate_metrics(pretext_gates(m))  # did pretraining succeed? (gate/<model>/seed<k>/...)
    unet, colour = m.get("seg/fg_iou/unet"), m.get("seg/fg_iou/colour_baseline/labels100")
    if unet is not None and colour is not None:
        derived["results/unet_minus_colour_baseline"] = unet - colour
        derived["results/world_hard_enough"] = float(unet - colour >= MIN_DIFFICULTY_GAP)
    write_metrics(out, derived)
    return {**m, **derived}
