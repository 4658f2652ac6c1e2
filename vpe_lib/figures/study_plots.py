"""Figures of the segmentation study, from the heads stage's files (per_seed.json, test_preds.npz).

Every figure shows the seeds themselves (dots), not only a mean: with three seeds a reader
should see the spread the intervals come from.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from vpe_lib.figures import plots


def is_main_method(name: str) -> bool:
    return name.count("/") <= 2  # encoder/head/mode or unet: not an ablation


# One hue per encoder family, used by every figure of the study; within a family the shade tells the variant
# (pretrained dark, its random-weight twin light; the head and mode move the shade), the marker the mode.
FAMILY_COLOURMAPS = {"tokenizer": "Blues", "masked": "Greens", "ar": "Purples", "pixels": "Greys", "unet": "Reds"}
HEAD_ORDER, MODE_MARKERS = ("conv", "linear", "segformer"), {"frozen": "o", "finetuned": "s", "": "D"}


def method_style(name: str) -> dict:
    """{"color", "marker", "linestyle"} of a method of the study grid ("unet" or "<encoder>/<head>/<mode>",
    ablation tags ignored): the same method looks the same on every page, and no two methods of the grid
    share a colour."""
    encoder, head, mode = (name.split("/") + ["", ""])[:3]
    random = encoder.startswith("random_")
    family = encoder.removeprefix("random_")
    cmap = plt.get_cmap(FAMILY_COLOURMAPS.get(family, "Oranges"))
    h = HEAD_ORDER.index(head) if head in HEAD_ORDER else 0
    # 12 distinct shades: pretrained in [0.55, 0.95], random twins in [0.25, 0.5]
    step = h * 2 + (mode == "finetuned")
    shade = (0.5 - 0.045 * step) if random else (0.95 - 0.07 * step)
    return {"color": cmap(shade), "marker": MODE_MARKERS.get(mode, "o"), "linestyle": "--" if random else "-"}


ENCODER_NAMES = {"tokenizer": "tokenizer", "masked": "masked transformer", "ar": "AR transformer", "pixels": "raw pixels"}
FAMILY_ORDER = ("tokenizer", "masked", "ar", "pixels", "unet")


def readable_name(name: str) -> str:
    """"tokenizer, frozen, conv head" for "tokenizer/conv/frozen"; "random-weight AR transformer, ..." for its
    twin; "UNet from scratch" for "unet"; ablation tags after the mode are kept in brackets."""
    if name == "unet":
        return "UNet from scratch"
    encoder, head, mode, *tags = (name.split("/") + ["", ""])[:3] + name.split("/")[3:]
    family = encoder.removeprefix("random_")
    label = ("random-weight " if encoder.startswith("random_") else "") + ENCODER_NAMES.get(family, family)
    mode = {"finetuned": "fine-tuned"}.get(mode, mode)
    text = ", ".join(p for p in (label, mode, f"{head} head" if head else "") if p)
    return text + (f" [{', '.join(tags)}]" if tags else "")


def _family(name: str) -> str:
    return name.split("/")[0].removeprefix("random_")


def _family_key(name: str) -> tuple:
    encoder, _, rest = name.partition("/")
    family = _family(name)
    order = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    return (order, encoder.startswith("random_"), rest)


def forest_by_budget(m: dict, *, prefix: str = "seg", against: str = "unet", figsize_w: float = 6.4):
    """The paired differences (95% intervals) of every method of the grid against the UNet (`against="unet"`)
    or its random-weight twin (`"random"`), one panel per label budget, one row per method named in words,
    in the method's own colour and marker (:func:`method_style`); methods grouped by encoder family. An
    interval that touches 0 is no measurable difference (grey band: the line at 0)."""
    head = f"{prefix}/diff_vs_{against}/"
    rows: dict[str, dict[float, tuple]] = {}
    for key, v in m.items():
        if key.startswith(head) and key.endswith("/mean") and v is not None:
            name, budget = key[len(head):-len("/mean")].rsplit("/", 1)
            if is_main_method(name):
                rows.setdefault(name, {})[float(budget.removeprefix("labels"))] = (
                    v, m.get(key[:-4] + "ci_low"), m.get(key[:-4] + "ci_high"))
    names = sorted(rows, key=_family_key)
    budgets = sorted({b for r in rows.values() for b in r})
    fig, axes = plt.subplots(1, max(1, len(budgets)), figsize=(figsize_w, 0.8 + 0.22 * max(3, len(names))),
                             sharey=True, squeeze=False, layout="constrained")
    axes = axes[0]
    for ax, b in zip(axes, budgets):
        for y, name in enumerate(names):
            if b not in rows[name]:
                continue
            mean, lo, hi = rows[name][b]
            style = method_style(name)
            err = None if lo is None or hi is None or lo != lo else [[mean - lo], [hi - mean]]
            ax.errorbar(mean, y, xerr=err, fmt=style["marker"], color=style["color"], ecolor=style["color"],
                        capsize=2.5, ms=4.5, mec="k", mew=0.4, ls="none")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{b:g}% labels", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(names)), [readable_name(n) for n in names], fontsize=7)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    if not names:
        axes[0].text(0.5, 0.5, f"no paired differences against {against}", ha="center", va="center",
                     transform=axes[0].transAxes)
    ref = "the UNet from scratch" if against == "unet" else "its random-weight twin"
    fig.supxlabel(f"test foreground IoU minus {ref} (paired over seeds, 95% interval)", fontsize=7.5)
    return fig


def score_bars(per_seed: dict, *, metric: str = "fg_iou", methods=None, ax=None, title: str = ""):
    """Per label budget, one bar per method (mean over seeds) with every seed as a dot."""
    methods = methods or [m for m in per_seed if is_main_method(m)]
    budgets = sorted({b for m in methods for b in per_seed[m]}, key=lambda b: float(b.removeprefix("labels")))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.1 * len(budgets) * len(methods) / 3, 3.4))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        for j, b in enumerate(budgets):
            vals = [r[metric] for r in per_seed[m].get(b, [])]
            if not vals:
                continue
            x = j + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, np.mean(vals), width * 0.9, color=method_style(m)["color"], alpha=0.85, label=m if j == 0 else None,
                   hatch="//" if m.startswith("random_") else None, edgecolor="white", lw=0.3)
            ax.scatter([x] * len(vals), vals, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(budgets)), [f"{b.removeprefix('labels')}% labels" for b in budgets])
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the bars
    ax.grid(axis="y", alpha=0.3)
    return ax


def learning_curves(per_seed: dict, *, methods=None, budgets=None, metric_label: str = "validation fg IoU"):
    """Held-out (validation) curves of every run at its chosen learning rate, as small multiples: one row per
    encoder family (the pretrained encoder and its random-weight twin, every head and mode), one column per label
    budget, the UNet from scratch in every panel for reference; one colour per method, one line per seed. A curve
    still rising at the end was not converged."""
    methods = methods or [m for m in per_seed if is_main_method(m)]
    budgets = budgets or sorted({b for m in methods for b in per_seed[m]}, key=lambda b: float(b.removeprefix("labels")))
    families = sorted({_family(m) for m in methods if m != "unet"}, key=_family_key)
    families = families or ["unet"]
    fig, axes = plt.subplots(len(families), len(budgets), figsize=(3.6 * len(budgets) + 2.6, 2.4 * len(families)),
                             squeeze=False, sharex="col", sharey=True)
    for row, family in zip(axes, families):
        shown = [m for m in methods if _family(m) == family] + (["unet"] if "unet" in methods and family != "unet" else [])
        for ax, b in zip(row, budgets):
            for m in shown:
                for k, r in enumerate(per_seed[m].get(b, [])):
                    if r["curve"]:
                        steps, vals = zip(*r["curve"])
                        st = method_style(m)
                        ax.plot(steps, vals, color=st["color"], linestyle=st["linestyle"], alpha=0.85, lw=1,
                                label=readable_name(m) if k == 0 else None)
            ax.grid(alpha=0.3)
        row[0].set_ylabel(f"{ENCODER_NAMES.get(family, family)}\n{metric_label}", fontsize=8)
        handles, labels = [], []
        for ax in row:  # a method may have runs at some budgets only
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        row[-1].legend(handles, labels, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax, b in zip(axes[0], budgets):
        ax.set_title(f"{b.removeprefix('labels')}% labels", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("update")
    fig.tight_layout()
    return fig


def convergence(runs: list[dict], ax=None, metric_label: str = "validation fg IoU"):
    """The convergence check (`heads_stage.run_convergence` rows): per method and seed, the validation
    curve of the grid's run (dashed, the budget's schedule) and of the same run trained longer (solid),
    each best point marked. A solid curve that keeps rising past the dashed one's end says
    the budget's schedule stopped that method early."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.4))
    colours = {name: method_style(name)["color"] for name in dict.fromkeys(r["method"] for r in runs)}
    labelled = set()
    for r in runs:  # one colour per method, one pair of lines per seed, labelled once
        for curve, style, label in ((r.get("budget_curve"), "--", f"{r['budget_steps']} updates"),
                                    (r["curve"], "-", f"{r['steps']} updates")):
            if not curve:
                continue
            steps, vals = zip(*curve)
            name = f"{r['method']}, {label}"
            ax.plot(steps, vals, style, color=colours[r["method"]], lw=1.2, alpha=0.85,
                    label=None if name in labelled else name)
            labelled.add(name)
            j = int(np.argmax(vals))
            ax.plot(steps[j], vals[j], "o", color=colours[r["method"]], ms=4)
    ax.set_xlabel("update")
    ax.set_ylabel(metric_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def level_probes(per_seed: dict, *, budget: str, ax=None):
    """Linear probes on each encoder level alone: pretrained vs random weights, seeds as dots."""
    probes = sorted({m.split("/probe-")[1] for m in per_seed if "/probe-" in m})
    if not probes:
        return None
    if ax is None:
        _, ax = plt.subplots(figsize=(1.5 + 1.2 * len(probes), 3.2))
    for i, enc in enumerate(("tokenizer", "random_tokenizer")):
        for j, level in enumerate(probes):
            runs = per_seed.get(f"{enc}/linear/frozen/probe-{level}", {}).get(budget, [])
            vals = [r["fg_iou"] for r in runs]
            if vals:
                x = j + (i - 0.5) * 0.38
                ax.bar(x, np.mean(vals), 0.36, color=f"C{i}", alpha=0.75, label=enc if j == 0 else None)
                ax.scatter([x] * len(vals), vals, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(probes)), probes)
    ax.set_xlabel("encoder level (finest first)")
    ax.set_ylabel("test fg IoU, linear probe")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return ax


def per_frame_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Foreground IoU of every frame (1 where both are empty), to find the hardest ones."""
    p, t = pred > 0, (truth > 0) & (truth != 255)
    inter, union = (p & t).sum((1, 2)), (p | t).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def hardest_frames(frames: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray], *, k: int = 4, size=1.3):
    """For every method, its k worst test frames by foreground IoU: frame, truth, prediction."""
    rows, titles = [], []
    for name, pred in preds.items():
        iou = per_frame_iou(pred, truth)
        worst = np.argsort(iou, kind="stable")[:k]
        row = []
        for i in worst:
            row += [frames[i], plots.colourise(truth[i]), plots.colourise(pred[i])]
        rows.append(row)
        titles.append(f"{name}\n(IoU {', '.join(f'{iou[i]:.2f}' for i in worst)})")
    cols = ["frame", "truth", "prediction"] * k
    return plots.image_grid(rows, row_titles=titles, col_titles=cols, size=size)
