"""The tables and figures of the prediction page (notebook 03), from the predict stage's metrics and files.

Each builder takes the flat metrics (`predict/<name>/...`, `masking/<strategy>/x<budget>/...`) and returns
markdown or a matplotlib figure, so the notebook only calls and displays, and tests reach every table.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from vpe_lib.figures.plots import flow_to_rgb, gif_html, hstack_videos, image_grid
from vpe_lib.figures.tables import mean_std

BASELINES = ("unigram", "copy_tokens", "code_table")
NAN = float("nan")


def _key(name: str, what: str, horizon: int | None = None) -> str:
    return f"predict/{name}/horizon{horizon}/{what}" if horizon is not None else f"predict/{name}/{what}"


def horizons(metrics: Mapping[str, float]) -> list[int]:
    """The latent frames ahead the stage scored separately (`predict/<name>/horizon<h>/...`)."""
    return sorted({int(k.split("/horizon")[1].split("/")[0]) for k in metrics if "/horizon" in k})


def bits_table(metrics: Mapping[str, float], models: Sequence[str]) -> str:
    """Bits per future token of the baselines and the models, over all future tokens and per horizon."""
    hs = horizons(metrics)
    rows = ["| model | all future tokens | " + " | ".join(f"latent frame +{h}" for h in hs) + " |",
            "|---|---|" + "---|" * len(hs)]
    for n in [*BASELINES, *models]:
        rows.append(f"| {n} | {metrics[_key(n, 'nll_bits_per_token')]:.3f} | "
                    + " | ".join(f"{metrics[_key(n, 'nll_bits_per_token', h)]:.3f}" for h in hs) + " |")
    return ("\n".join(rows) + f"\n\nuniform: {metrics['predict/uniform_bits_per_token']:.2f} bits; "
            f"copy mixing weight fitted on training clips: {metrics['predict/copy_tokens/mixing_weight']:.3g}; "
            f"{metrics['predict/n_test_clips']:.0f} test clips of {metrics['predict/tokens_per_clip']:.0f} tokens")


def gate_lines(metrics: Mapping[str, float], models: Sequence[str]) -> list[str]:
    """One markdown bullet per model: its margin over the best baseline, and whether it passes its gate."""
    best = min(metrics[_key(b, "nll_bits_per_token")] for b in BASELINES)
    out = []
    for kind in models:
        gain = best - metrics[_key(kind, "nll_bits_per_token")]
        verdict = (f"beats the best baseline by {gain:.3f} bits per token: **passes its gate**" if gain > 0 else
                   f"does not beat the best baseline: {-gain:.3f} bits per token worse. **It fails its gate**: "
                   "what later pages say about its features is about a model that did not learn to predict")
        out.append(f"- **{kind}**: {verdict}.")
    return out


def recipe_line(p: Any) -> str:
    """The predictors' recipe in a sentence (updates, batch, width, depth, the levers switched on)."""
    levers = [name for name, on in (("logits as a residual over the code table", p.table_prior),
                                    ("the condition code at each place as an input", p.cond_input)) if on]
    return (f"Recipe: {p.train.steps} updates of {p.train.batch_size} clips, width {p.dim}, depth {p.depth}"
            + (f"; levers: {', '.join(levers)}" if levers else "; no levers") + ".")


def static_moving_table(metrics: Mapping[str, float], models: Sequence[str]) -> str | None:
    """Bits per token on the future tokens whose patch did not move (ground-truth flow) and on the others;
    None where the source has no ground-truth motion."""
    if "predict/static_token_fraction" not in metrics:
        return None
    rows = ["| model | static tokens | moving tokens |", "|---|---|---|"]
    for n in [*BASELINES, *models]:
        rows.append(f"| {n} | {metrics.get(_key(n, 'static_bits_per_token'), NAN):.3f} | "
                    f"{metrics.get(_key(n, 'moving_bits_per_token'), NAN):.3f} |")
    return ("**Where is the gain?** Bits per token on the future tokens whose patch has not moved since the "
            f"condition frame ({metrics['predict/static_token_fraction']:.1%} of them, ground-truth flow) and on "
            "the others:\n\n" + "\n".join(rows) + "\n\nA static token keeps the condition's code "
            f"{metrics['predict/copy_tokens/static_exact_share']:.1%} of the time: the tokenizer's vocabulary "
            "is not stationary in time, which is why the code table, not plain copying, is the baseline to beat.")


def exact_share_line(metrics: Mapping[str, float]) -> str:
    return (f"A future token equals the condition token at the same place {metrics['predict/copy_tokens/exact_share']:.1%} "
            "of the time: this tokenizer need not code a static patch the same way at another latent time index, "
            "which is why the *code table* (condition code → future code at the same place, counted on training "
            "clips) is the copying baseline to beat.")


def learning_curves_figure(runs: Mapping[str, tuple[list[dict], list[dict]]], metrics: Mapping[str, float]):
    """Training loss against updates, and validation bits per future token against updates and against
    training wall-clock seconds, with the baselines as lines. `runs`: {model: (training log rows with "loss",
    validation curve rows with "step", "elapsed_s", "bits_per_token")}."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.2))
    for kind, (train, curve) in runs.items():
        ax[0].plot([h["step"] for h in train], [h["loss"] for h in train], label=kind)
        ax[1].plot([c["step"] for c in curve], [c["bits_per_token"] for c in curve], "o-", label=kind)
        ax[2].plot([c["elapsed_s"] for c in curve], [c["bits_per_token"] for c in curve], "o-", label=kind)
    for a in ax[1:]:
        for n, ls in zip(BASELINES, (":", "--", "-.")):
            v = metrics.get(_key(n, "val_bits_per_token"))
            if v is not None:
                a.axhline(v, ls=ls, c="grey", label=n)
    ax[0].set(title="training loss (nats)", xlabel="update")
    ax[1].set(title="validation bits / future token", xlabel="update")
    ax[2].set(title="validation bits / future token", xlabel="training wall-clock (s)")
    ax[0].legend()
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def sample_rows(samples: Mapping[str, np.ndarray], models: Sequence[str], i: int) -> tuple[list[np.ndarray], list[str]]:
    """The videos of test clip `i` side by side (true, ceiling, copy-tokens, each model's samples), titled."""
    vids = [samples["true"][i], samples["ref_ceiling"][i], samples["ref_copy_tokens"][i]]
    titles = ["true", "ceiling", "copy tokens"]
    for kind in models:
        vids += list(samples[f"sample_{kind}"][i])
        titles += [f"{kind} #{j}" for j in range(len(samples[f"sample_{kind}"][i]))]
    return vids, titles


def per_frame_psnr_figure(per_frame: Mapping[str, Any]):
    """PSNR per predicted frame, whole frame and moving pixels, one line per prediction."""
    first = per_frame["first_predicted_frame"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3))
    for name, d in per_frame["frames"].items():
        x = np.arange(first, first + len(d["psnr_db"]))
        ax[0].plot(x, d["psnr_db"], "o-", label=name)
        ax[1].plot(x, [np.nan if v is None else v for v in d["psnr_db_moving"]], "o-", label=name)
    ax[0].set(title="PSNR, whole frame (dB)", xlabel="frame")
    ax[1].set(title="PSNR, moving pixels (dB)", xlabel="frame")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def psnr_table(metrics: Mapping[str, float], models: Sequence[str]) -> str:
    rows = ["| prediction | PSNR (dB) | PSNR moving (dB) | SSIM |", "|---|---|---|---|"]
    for name in ["copy_pixels", "copy_tokens", "ceiling", *models]:
        rows.append(f"| {name} | {metrics[_key(name, 'psnr_db')]:.2f} | {metrics[_key(name, 'psnr_db_moving')]:.2f} | "
                    f"{metrics[_key(name, 'ssim')]:.3f} |")
    return ("\n".join(rows) + f"\n\n{metrics['predict/n_sample_clips']:.0f} test clips; moving pixels are "
            f"{metrics['predict/moving_pixel_fraction']:.1%} of the predicted frames.")


def masking_rows(strategies: Sequence[str], budgets: Sequence[float]) -> list[str]:
    return ["random_init", "tokenizer_latent"] + [f"{s}/x{b:.2g}" for s in strategies for b in budgets]


def masking_table(metrics: Mapping[str, float], strategies: Sequence[str], budgets: Sequence[float]) -> str:
    """The masking study's probes on frozen features of still frames, mean ± std over its seeds."""
    rows = ["| features | probe fg IoU | motion R² | train s |", "|---|---|---|---|"]
    for n in masking_rows(strategies, budgets):
        cell = lambda k: mean_std(metrics.get(f"masking/{n}/{k}"), metrics.get(f"masking/{n}/{k}_std"))  # noqa: E731
        rows.append(f"| {n} | {cell('probe_fg_iou')} | {cell('motion_r2')} | "
                    f"{metrics.get(f'masking/{n}/train_wall_s', NAN):.0f} |")
    return ("\n".join(rows) + f"\n\n{metrics['masking/n_seeds']:.0f} seed(s) per row (± = std over seeds); "
            f"{metrics['masking/n_probe_train_frames']:.0f} probe training frames, "
            f"{metrics['masking/n_probe_test_frames']:.0f} test frames.")


def masking_figure(metrics: Mapping[str, float], strategies: Sequence[str], budgets: Sequence[float]):
    """Each probe against the fraction of the update budget, one line per strategy, random weights dotted."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3))
    for j, key in enumerate(("probe_fg_iou", "motion_r2")):
        if f"masking/random_init/{key}" not in metrics:  # a source without labels has no foreground probe
            ax[j].set_title(f"{key}: no labels on this source")
            ax[j].axis("off")
            continue
        for s in strategies:
            ax[j].plot(list(budgets), [metrics[f"masking/{s}/x{b:.2g}/{key}"] for b in budgets], "o-", label=s)
        ax[j].axhline(metrics[f"masking/random_init/{key}"], ls=":", c="grey", label="random weights")
        ax[j].set(xlabel="fraction of the update budget", title=key)
        ax[j].legend(fontsize=7)
    fig.tight_layout()
    return fig


def masking_recall_table(metrics: Mapping[str, float], strategies: Sequence[str]) -> str:
    rows = ["| strategy | recall of moving tokens | precision | visible tokens that move |", "|---|---|---|---|"]
    for s in strategies:
        rows.append(f"| {s} | {metrics[f'masking/{s}/moving_recall']:.3f} | {metrics[f'masking/{s}/moving_precision']:.3f} | "
                    f"{metrics[f'masking/{s}/moving_visible_moving']:.3f} |")
    return "\n".join(rows)


def motion_cost_line(metrics: Mapping[str, float]) -> str:
    return (f"**Cost of the motion:** codec vectors {metrics['mv/extract_ms_per_frame']:.2f} ms per frame (encode + decode "
            f"with exported vectors), block matching {metrics['mv/block_matching_ms_per_frame']:.2f} ms per frame: "
            f"{metrics['mv/block_matching_over_codec']:.1f}x. On a video that is already compressed only the decode is paid.")


def videos_markdown(videos: Mapping[str, Mapping[str, Any]]) -> str:
    """The clip source of each split (the stage's videos.json) and what 'moving' means on it."""
    return ("**Videos:** " + "; ".join(f"{split}: {v['name']}, {v['videos']} videos" for split, v in videos.items())
            + f". Where things move: {videos['test']['motion']}.")


def skipped_markdown(source: str) -> str:
    return f"**Skipped:** `data.source={source}` holds still images: there is no video to predict."


def gate_markdown(metrics: Mapping[str, float], p: Any) -> str:
    """The likelihood section in one block: bits per token against the baselines, the gate's verdicts, the
    recipe, where the models know more than the table (static vs moving tokens) and plain copying's ceiling."""
    parts = [bits_table(metrics, p.models), "\n".join(gate_lines(metrics, p.models)), recipe_line(p),
             static_moving_table(metrics, p.models), exact_share_line(metrics)]
    return "\n\n".join(part for part in parts if part)


def sample_strips(samples: Mapping[str, np.ndarray], models: Sequence[str]):
    """Per shown test clip: (an animated GIF of the true clip, the ceiling, copying and each model's samples
    side by side, as HTML; the same frames as a still grid)."""
    for i in range(len(samples["true"])):
        vids, titles = sample_rows(samples, models, i)
        gif = gif_html(hstack_videos(*vids), scale=2, fps=4, title=f"clip {i}: " + " | ".join(titles))
        yield gif, image_grid([list(v) for v in vids], row_titles=titles, size=0.9)


def masking_notes(metrics: Mapping[str, float], strategies: Sequence[str]) -> str:
    """How well each mask covers what moves, and what the codec's motion costs against block matching."""
    return masking_recall_table(metrics, strategies) + "\n\n" + motion_cost_line(metrics)


def mgm_figure(title: str, d: Mapping[str, np.ndarray]):
    """A clip's frames, the codec's motion and the MGM mask drawn from it (`masking_study.mgm_figure_data`)."""
    fig = image_grid([list(d["frames"]), [flow_to_rgb(f) for f in d["field"]], list(d["overlay"])],
                     row_titles=["frame", "codec motion", "MGM mask"], size=1.2)
    fig.suptitle(title, y=1.02)
    return fig
