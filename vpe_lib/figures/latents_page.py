"""The figures and tables of the latent-analysis page (notebook 04), from the latent stage's metrics and
`latents.npz`. The probe rows (`probe_rows`: one per encoder, each metric a value and its
95% interval) and their tables are built here from the stage's flat metrics."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from vpe_lib.eval.latent_probes import PROBE_METRICS
from vpe_lib.figures import plots
from vpe_lib.figures.hover_umap import hover_embedding_html
from vpe_lib.models.encoders import ENCODERS

MOTION_PROBES = ("motion_r2", "speed_r2", "mv_r2")
FOREGROUND_PROBES = ("fg_auroc", "fg_balanced_acc")
FATE_SHOWN = ("tokenizer", "random_tokenizer", "pixels", "masked", "random_masked")


def probes_note(metrics: Mapping[str, float], probe_times: Sequence[int], skipped: Sequence[str]) -> str:
    return (f"Probes fit on {int(metrics['latents/n_probe_train_frames'])} frames of training videos and are scored on "
            f"{int(metrics['latents/n_probe_test_frames'])} frames of {int(metrics['latents/n_probe_test_videos'])} test "
            f"videos (frames {', '.join(map(str, probe_times))} of each). "
            + (f"Not probed (their transformer was not trained): {', '.join(skipped)}." if skipped else ""))


def interval_panels(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], titles: Sequence[str], *, reference: float,
                    xlabel: str | None = None, width: float = 13.0):
    """One panel of per-encoder dots with 95% intervals per probe metric, sharing the encoder axis."""
    fig, axes = plt.subplots(1, len(keys), figsize=(width, 0.35 * len(rows) + 1.2), sharey=True, squeeze=False)
    for ax, key, title in zip(axes[0], keys, titles):
        plots.interval_dots(rows, key, ax=ax, title=title, reference=reference)
        if xlabel:
            ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def fate_examples(z: Mapping[str, np.ndarray], k: int):
    """Test frames, the tokens that move within k frames, and each probe's score on one fixed 0..1 scale."""
    shown = [e for e in FATE_SHOWN if f"example_fate_score_{e}" in z]
    heat = lambda s: plt.cm.viridis(np.clip(s, 0, 1))[..., :3]  # noqa: E731
    grid = [[f for f in z["example_frames"]], [m.astype(float) for m in z["example_fate"]]]
    grid += [[heat(s) for s in z[f"example_fate_score_{e}"]] for e in shown]
    return plots.image_grid([list(r) for r in zip(*grid)],
                            col_titles=["frame", f"moves within {k}"] + [f"probe: {e}" for e in shown], size=1.5)


def code_usage_figure(usage: np.ndarray, metrics: Mapping[str, float]):
    """Each code's share of the held-out tokens, sorted, log scale; the title counts used and dead codes."""
    usage = np.sort(usage)[::-1]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.bar(np.arange(len(usage)), usage / usage.sum(), width=1.0)
    ax.set_xlabel("code (sorted by frequency)")
    ax.set_ylabel("share of tokens")
    ax.set_yscale("log")
    ax.set_title(f"{(usage > 0).sum()} of {len(usage)} codes used on held-out clips; perplexity "
                 f"{metrics['latents/code_perplexity']:.0f}, {int(metrics['latents/dead_codes'])} dead codes")
    return fig


def code_purity_table(metrics: Mapping[str, float]) -> str:
    lines = ["| tokenizer | code purity [95% interval] | chance purity | codes used on the probe frames |",
             "|---|---|---|---|"]
    for e in ("tokenizer", "random_tokenizer"):
        if f"latents/code_purity/{e}" in metrics:
            k = f"latents/code_purity/{e}"
            lines.append(f"| `{e}` | {metrics[k]:.3f} [{metrics[k + '_ci_low']:.3f}, {metrics[k + '_ci_high']:.3f}] | "
                         f"{metrics[k + '_chance']:.3f} | {int(metrics[f'latents/codes_on_probe_frames/{e}'])} |")
    return "\n".join(lines)


def embedding_figure(z: Mapping[str, np.ndarray], class_names: Sequence[str], method: str):
    """The 2-D embedding of the pretrained and the random encoder's tokens, coloured by each token's majority class."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, name in zip(axes, ["pretrained", "random"]):
        if f"embedding_{name}" not in z:
            continue
        e, lab = z[f"embedding_{name}"], z[f"majority_{name}"]
        for c in np.unique(lab):
            sel = lab == c
            ax.scatter(e[sel, 0], e[sel, 1], s=4, color=plots.PALETTE[c] / 255, label=class_names[c])
        ax.set_title(f"{name} encoder ({method.upper()})")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(markerscale=3, fontsize=7)
    fig.tight_layout()
    return fig


METRIC_LABELS = {
    "motion_r2": "flow (dx, dy) R²", "speed_r2": "speed R²", "mv_r2": "codec MV speed R²",
    "common_fate_auroc": "moves soon: AUROC", "fg_auroc": "foreground AUROC",
    "fg_balanced_acc": "foreground bal. acc.", "code_purity": "code purity",
}


def probe_rows(m: dict[str, float], *, diff: bool = False) -> list[dict]:
    """One row per encoder with probe metrics in the flat metrics `m` (ENCODERS' order), each metric a
    (value, ci_low, ci_high) triple or None; `diff`: the paired differences from the random twin."""
    head = "latents/diff_vs_random" if diff else "latents"
    rows = []
    for enc in ENCODERS:
        row = {"encoder": enc}
        for key in PROBE_METRICS:
            k = f"{head}/{key}/{enc}"
            row[key] = (m[k], m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high")) if m.get(k) is not None else None
        if any(row[key] is not None for key in PROBE_METRICS):
            rows.append(row)
    return rows


def _cell(v, digits: int) -> str:
    if v is None:
        return "—"
    value, lo, hi = (float("nan") if x is None else x for x in v)
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def interval_markdown(rows: list[dict], metrics=PROBE_METRICS, *, digits: int = 3, extra: dict | None = None) -> str:
    """A markdown table of `probe_rows`: value [95% interval] per metric; `extra` adds rows of plain
    reference values (e.g. {"majority class": {"fg_balanced_acc": 0.5}})."""
    metrics = [k for k in metrics if any(r[k] is not None for r in rows)]
    lines = ["| features | " + " | ".join(METRIC_LABELS.get(k, k) for k in metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| `{r['encoder']}` | " + " | ".join(_cell(r[k], digits) for k in metrics) + " |" for r in rows]
    for name, vals in (extra or {}).items():
        lines.append(f"| *{name}* | " + " | ".join(f"{vals[k]:.{digits}f}" if k in vals else "" for k in metrics)
                     + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the page's sections


def motion_section(rows: list[dict], motion_source: str):
    """(markdown, figure): the motion probes' table and dots (held-out R², 0 = knows nothing)."""
    fig = interval_panels(rows, MOTION_PROBES, ("true flow (dx, dy) to the next frame", "true speed",
                          f"codec motion-vector speed ({motion_source})"), reference=0.0, xlabel="held-out R²")
    return interval_markdown(rows, MOTION_PROBES), fig


def fate_section(rows: list[dict], metrics: Mapping[str, float]):
    """(markdown, figure): the common-fate probe (does a token move within k frames?) by AUROC."""
    k = int(metrics["latents/fate_frames"])
    md = (f"k = {k} frames; {metrics['latents/common_fate_prevalence']:.1%} of test tokens move within them.\n\n"
          + interval_markdown(rows, ("common_fate_auroc",)))
    ax = plots.interval_dots(rows, "common_fate_auroc", title=f"moves within {k} frames: AUROC", reference=0.5)
    ax.set_xlabel("AUROC on test videos")
    return md, ax.figure


def foreground_section(rows: list[dict], metrics: Mapping[str, float]):
    """(markdown, figure): the foreground probe against always answering *background*."""
    md = (f"{metrics['latents/fg_prevalence']:.1%} of test tokens are foreground: always answering *background* is "
          f"{metrics['latents/fg_accuracy/majority_class']:.1%} accurate.\n\n"
          + interval_markdown(rows, FOREGROUND_PROBES, extra={"majority class": {"fg_auroc": 0.5, "fg_balanced_acc": 0.5}}))
    fig = interval_panels(rows, FOREGROUND_PROBES, [METRIC_LABELS[k] for k in FOREGROUND_PROBES], reference=0.5, width=9)
    return md, fig


def twin_differences_markdown(diffs: list[dict]) -> str:
    """Each pretrained encoder minus its random twin, paired over the same test videos."""
    return interval_markdown(diffs) if diffs else "*No pretrained encoder has its random twin in this run.*"


def embedding_time_line(metrics: Mapping[str, float]) -> str:
    return (f"Embedding time: {metrics['latents/umap_wall_s']:.1f} s (UMAP compiles itself with numba in every new "
            "process).")


def hover_html(z: Mapping[str, np.ndarray], class_names: Sequence[str]) -> str | None:
    """The embedding of the pretrained and random tokenizers' tokens with each token's neighbourhood shown on
    hover (`vpe_lib.figures.hover_umap`); None when the stage embedded neither."""
    shown = {k: z[f"embedding_{k}"] for k in ("pretrained", "random") if f"embedding_{k}" in z}
    if not shown or "token_context" not in z:
        return None
    return hover_embedding_html(shown, {k: z[f"majority_{k}"] for k in shown}, z["token_context"], class_names,
                                plots.PALETTE, fg_fraction={k: z[f"fg_fraction_{k}"] for k in shown})
