"""The figures and tables of the latent-analysis page (notebook 04), from the latent stage's metrics and
`latents.npz`. The probe rows and their interval tables come from the stage (`probe_rows`,
`interval_markdown`); this module draws and lays them out."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from vpe_lib.figures import plots

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
