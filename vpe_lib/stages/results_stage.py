"""Stage 06: gather every stage's metrics into one table and the headline comparisons.

The segmentation study's table and its one-sentence answers are built here from the flat
metrics (`seg/<metric>/<method>/labels<pct>`), so the notebook, the index page and the tests
read the same rows and the same sentences.
"""

from __future__ import annotations

import re
from pathlib import Path

from vpe_lib.eval.pretext_gates import failed_clause, gate_metrics, pretext_gates
from vpe_lib.eval.segmentation import fmt_bound, interval_side, verdict
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


def benchmark_rows(m: dict[str, float], prefix: str) -> tuple[list[dict], dict[str, float]]:
    """The real-data sources scored as their benchmarks score them, at the largest label budget:
    per method the native-resolution scores from the written files (DAVIS J&F, J, F; COCO AP, AP50;
    mean and std over seeds) beside the study's pooled IoU at its own resolution; and the DAVIS
    ceiling (the truth brought to the study's resolution and back). Empty for PushWorld."""
    rows = []
    for r in study_rows(m, prefix):
        get = lambda k: m.get(f"{prefix}/{k}/{r['method']}/{r['labels']}")  # noqa: E731
        native = {k: get(f"native_{k}") for k in ("jf_mean", "j_mean", "f_mean", "ap", "ap50")}
        if all(v is None for v in native.values()):
            continue
        rows.append({"method": r["method"], "labels": r["labels"], "pooled_iou": r["fg_iou"],
                     "model_res_jf_mean": get("jf_mean"), **native,
                     **{f"{k}_std": get(f"native_{k}_std") for k in native}})
    ceiling = {k: m[f"{prefix}/ceiling/{k}"] for k in ("jf_mean", "j_mean", "f_mean") if f"{prefix}/ceiling/{k}" in m}
    return sorted(rows, key=lambda r: -max(r["jf_mean"] or -1, r["ap"] or -1)), ceiling


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


# ---------------------------------------------------------------------------- the four questions


def gate_status(m: dict[str, float], encoder: str) -> str:
    """'the tokenizer passed its own task at 3 of 3 seeds', or the failure, for the sentence of an answer."""
    model = {"tokenizer": "tokenizer", "masked": "masked", "ar": "ar"}[encoder]
    rows = [r for r in pretext_gates(m) if r["model"] == model and r["passed"] is not None]
    if not rows:
        return f"no gate could be computed for the {encoder} pretraining"
    failed = failed_clause(m, encoder)
    what = {"tokenizer": "the tokenizer", "masked": "the masked model", "ar": "the autoregressive model"}[model]
    return f"its pretraining failed its own task: {failed}" if failed else (
        f"{what} passed its own task at {len(rows)} of {len(rows)} seeds")


def _diff(m: dict[str, float], key: str, n: int) -> dict | None:
    d = {k: m.get(f"{key}/{k}") for k in ("mean", "ci_low", "ci_high")}
    if d["mean"] is None:
        return None
    if d["ci_low"] is None:
        d["ci_low"] = d["ci_high"] = float("nan")
    return {**d, "n": n}


def question_answers(m: dict[str, float], prefix: str = "seg") -> list[tuple[str, list[str]]]:
    """The study's four questions, each with one sentence per label budget (or masking budget) from the
    paired 95% intervals and the verdict rule, and whether the pretraining behind it passed its own task:
    (a) the video-pretrained tokenizer, frozen and fine-tuned, against a UNet from scratch;
    (b) the prediction transformers' states against the tokenizer's latents they read;
    (c) masked against autoregressive prediction;
    (d) MGM at a third of the update budget against random and tube masking at the full budget."""
    n = int(m.get(f"{prefix}/n_seeds") or 0)
    budgets = sorted({r["pct"] for r in study_rows(m, prefix)})
    out: list[tuple[str, list[str]]] = []

    def rows_for(ref: str, pairs) -> list[str]:
        lines = []
        for pct in budgets:
            for method, better, worse in pairs:
                d = _diff(m, f"{prefix}/{ref}/{method}/labels{pct:g}", n)
                if d is not None:
                    lines.append(f"At {pct:g}% labels: " + verdict(d, better=better, worse=worse))
        return lines

    a = rows_for("diff_vs_unet", [("tokenizer/conv/frozen", "the frozen tokenizer (conv head)", "the UNet"),
                                  ("tokenizer/conv/finetuned", "the fine-tuned tokenizer (conv head)", "the UNet")])
    if a:
        out.append(("(a) Does a video-pretrained encoder beat a UNet trained from scratch?",
                    a + [f"Pretraining: {gate_status(m, 'tokenizer')}."]))
    b = rows_for("diff_vs_tokenizer", [(f"{k}/conv/frozen", f"the {name} transformer's states", "the tokenizer's maps")
                                       for k, name in (("masked", "masked"), ("ar", "autoregressive"))])
    if b:
        out.append(("(b) Do the prediction transformers' states add to the tokenizer's latents (frozen, conv head)?",
                    b + [f"Pretraining: {gate_status(m, 'masked')}; {gate_status(m, 'ar')}."]))
    c = rows_for("diff_vs_ar", [("masked/conv/frozen", "the masked transformer", "the autoregressive one")])
    if c:
        out.append(("(c) Masked or autoregressive prediction (frozen states, conv head)?",
                    c + [f"Pretraining: {gate_status(m, 'masked')}; {gate_status(m, 'ar')}."]))
    d_lines = []
    for probe, metric in (("probe_fg_iou", "linear foreground-probe IoU"), ("motion_r2", "motion-probe R²")):
        for other in ("random", "tube"):
            key = f"masking/mgm/x0.33/minus_{other}_x1/{probe}"
            nn = int(m.get(f"{key}/n") or 0)
            d = _diff(m, key, nn)
            if d is not None:
                d_lines.append(verdict(d, better="MGM at a third of the budget", worse=f"{other} masking at the full budget",
                                       metric=metric))
    if d_lines:
        out.append(("(d) Does motion-guided masking (MGM) at a third of the updates match random and tube masking "
                    "at the full budget?", d_lines + [f"Pretraining: {gate_status(m, 'masked')} (the main masked model; "
                                                      "the masking study's runs are probed, not gated)."]))
    return out


_SIDE_WORDS = {1: "ahead", -1: "behind", 0: "no measurable difference"}


def budget_clause(m: dict[str, float], keys: dict[str, str], n: int) -> str | None:
    """The verdicts of one paired comparison in one clause, labels with the same verdict grouped, each
    with its mean and 95% interval: "behind at 10% (-0.055 [-0.060, -0.050]) and 100% (...); no measurable
    difference at 1% (...)". `keys`: {label: metric key} (e.g. {"1%": "seg/diff_vs_unet/.../labels1"}; an
    empty label for a single comparison). None when none of the keys has a difference."""

    groups: dict[int, list[str]] = {}
    for label, key in keys.items():
        d = _diff(m, key, n)
        if d is None:
            continue
        lo, hi = d["ci_low"], d["ci_high"]
        no_ci = lo != lo or hi != hi
        side = 0 if no_ci else interval_side(lo, hi)  # without an interval there is no verdict
        ci = "no interval" if no_ci else f"[{fmt_bound(lo)}, {fmt_bound(hi)}]"
        number = f"({'+' if d['mean'] > 0 else ''}{fmt_bound(d['mean'])} {ci})"
        groups.setdefault(side, []).append(f"{label} {number}" if label else number)
    parts = []
    for side in (1, -1, 0):
        items = groups.get(side)
        if items:
            joined = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
            parts.append(f"{_SIDE_WORDS[side]} {'at ' if any(keys) else ''}{joined}")
    return "; ".join(parts) or None


def question_sentences(m: dict[str, float], prefix: str = "seg") -> list[tuple[str, str]]:
    """The four questions of :func:`question_answers`, each answered in one sentence for the first screen:
    the verdict per label budget grouped by side, with its interval, and whether the pretraining behind it
    passed its own task. Differences are (first named - second named), paired over seeds."""
    n = int(m.get(f"{prefix}/n_seeds") or 0)
    budgets = sorted({r["pct"] for r in study_rows(m, prefix)})
    out: list[tuple[str, str]] = []

    def clause(ref: str, method: str) -> str | None:
        return budget_clause(m, {f"{pct:g}%": f"{prefix}/{ref}/{method}/labels{pct:g}" for pct in budgets}, n)

    frozen, tuned = clause("diff_vs_unet", "tokenizer/conv/frozen"), clause("diff_vs_unet", "tokenizer/conv/finetuned")
    parts = [f"frozen, {frozen}" if frozen else "", f"fine-tuned, {tuned}" if tuned else ""]
    if frozen or tuned:
        out.append(("(a) A video-pretrained tokenizer against a UNet from scratch",
                    "The tokenizer's encoder with a conv head, minus the UNet in test foreground IoU: "
                    + "; ".join(p for p in parts if p) + f" ({gate_status(m, 'tokenizer')})."))
    b = [(name, clause("diff_vs_tokenizer", f"{k}/conv/frozen")) for k, name in (("masked", "masked"), ("ar", "autoregressive"))]
    if any(c for _, c in b):
        out.append(("(b) The prediction transformers' states against the tokenizer's latents",
                    "Frozen with a conv head, states minus latents: " + "; ".join(
                        f"the {name} transformer's: {c}" for name, c in b if c)
                    + f" ({gate_status(m, 'masked')}; {gate_status(m, 'ar')})."))
    c = clause("diff_vs_ar", "masked/conv/frozen")
    if c:
        out.append(("(c) Masked against autoregressive prediction",
                    f"The masked transformer's frozen states minus the autoregressive one's: {c} "
                    f"({gate_status(m, 'masked')}; {gate_status(m, 'ar')})."))
    d_parts = []
    for probe, metric in (("probe_fg_iou", "the linear foreground probe"), ("motion_r2", "the motion probe")):
        for other in ("random", "tube"):
            key = f"masking/mgm/x0.33/minus_{other}_x1/{probe}"
            cl = budget_clause(m, {"": key}, int(m.get(f"{key}/n") or 0))
            if cl:
                d_parts.append(f"against {other} masking on {metric}, {cl}")
    if d_parts:
        out.append(("(d) Motion-guided masking at a third of the updates against random and tube masking at all of them",
                    "MGM with a third of the updates minus the full budget: " + "; ".join(d_parts)
                    + " (the masking study's runs are probed, not gated)."))
    return out


def what_was_run(m: dict[str, float], prefix: str = "seg") -> str:
    """One sentence on the data and the pretraining compute, from the metrics."""
    parts = []
    source = prefix.split("/")[1] if prefix.count("/") == 1 else None
    if source is not None and m.get(f"{prefix}/n_test_frames") is not None:  # a real-data study
        pretrained_on = "its training sequences" if source == "davis" else "PushWorld video (COCO holds stills)"
        parts.append(f"{source.upper()} (real labelled frames, split by {'sequence' if source == 'davis' else 'image'}): "
                     f"{m.get(f'{prefix}/n_train_frames', 0):.0f} training and {m[f'{prefix}/n_test_frames']:.0f} test "
                     f"frames; the encoders pretrained on {pretrained_on}")
    elif m.get("tokenizer/real_train_videos") is not None:  # a video: source, judged on PushWorld's labels
        parts.append(f"the encoders pretrained on {m['tokenizer/real_train_videos']:.0f} real training videos; "
                     f"segmentation on PushWorld's labelled frames (the videos have no labels)")
    elif m.get("data/n_train_videos") is not None:
        parts.append(f"PushWorld (synthetic video with exact labels): {m['data/n_train_videos']:.0f} training and "
                     f"{m.get('data/n_test_videos', 0):.0f} test videos of {m.get('data/frames_per_video', 0):.0f} frames")
    if m.get("tokenizer/params") is not None:
        seeds = 1 + sum(1 for k in m if k.startswith("tokenizer/seed") and k.endswith("/psnr_db"))
        parts.append(f"a {m['tokenizer/params'] / 1e6:.1f}M-parameter tokenizer trained for "
                     f"{m.get('tokenizer/steps', 0):.0f} updates ({m.get('tokenizer/train_wall_s', 0) / 60:.0f} "
                     f"minutes), {seeds} pretraining seed{'s' if seeds > 1 else ''}")
    kinds = [k for k in ("masked", "ar") if m.get(f"predict/{k}/params") is not None]
    if kinds:
        mins = sum(m.get(f"predict/{k}/train_wall_s", 0) for k in kinds) / 60
        names = {"masked": "masked", "ar": "autoregressive"}
        parts.append(" and ".join(f"a {m[f'predict/{k}/params'] / 1e6:.2f}M-parameter {names[k]} transformer" for k in kinds)
                     + f" on its codes ({mins:.0f} minutes for the main seed's pair)")
    if m.get(f"{prefix}/n_seeds") is not None:
        parts.append(f"segmentation heads on {m[f'{prefix}/n_seeds']:.0f} paired seeds")
    return ("What ran: " + "; ".join(parts) + ".") if parts else ""
