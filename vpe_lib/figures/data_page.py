"""The figures of the data page (notebook 01): PushWorld's frames with their labels and motion, BAIR beside it,
and the labels' statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from vpe_lib.figures import plots
from vpe_lib.data.frames import load_frame_folder


def labels_grid(videos: Sequence[Mapping[str, np.ndarray]], t: int):
    """Frame t of each video with its instance, semantic and foreground labels and its motion, one row each."""
    rows = [[v["frames"][t] for v in videos],
            [plots.colourise(v["instance"][t]) for v in videos],
            [plots.colourise(v["semantic"][t]) for v in videos],
            [(v["instance"][t] > 0) for v in videos],
            [plots.flow_to_rgb(v["flow"][t]) for v in videos]]
    return plots.image_grid(rows, row_titles=["frame", "instance", "semantic", "foreground", "motion"], size=1.6)


def videos_html(videos: Sequence[Mapping[str, np.ndarray]]) -> str:
    """Each video playing beside its instances and its motion (GIFs)."""
    return "".join(plots.gif_html(plots.hstack_videos(v["frames"], plots.colourise(v["instance"]), plots.flow_to_rgb(v["flow"])),
                                  scale=3, title=f"held-out video {i}") for i, v in enumerate(videos))


def bair_beside_pushworld(bair_root: Path, videos: Sequence[Mapping[str, np.ndarray]], times: Sequence[int] = (0, 10, 20, 29)):
    """Four BAIR sample sequences (frame folders) above two PushWorld videos at the same times; None without BAIR."""
    if not bair_root.is_dir():
        return None

    seqs = sorted(p for p in bair_root.iterdir() if p.is_dir())[:4]
    bair = [load_frame_folder(p)[:, 1:, 1:] for p in seqs]  # row/col 0 are figure borders
    rows = [[b[min(k, len(b) - 1)] for k in times] for b in bair]
    rows += [[v["frames"][min(k, len(v["frames"]) - 1)] for k in times] for v in videos[:2]]
    return plots.image_grid(rows, row_titles=[p.name[:14] for p in seqs] + ["PushWorld 0", "PushWorld 1"],
                            col_titles=[f"t={k}" for k in times], size=1.6)


def label_statistics(fg_fractions: Sequence[float], semantic_counts: np.ndarray, class_names: Sequence[str]):
    """The foreground fraction per video (histogram) and each class's share of the pixels (log scale)."""
    fig, ax = plt.subplots(1, 2, figsize=(8, 2.6))
    ax[0].hist(fg_fractions, bins=20)
    ax[0].set_xlabel("foreground fraction per video")
    ax[0].set_ylabel("videos")
    ax[1].bar(range(len(class_names)), semantic_counts / semantic_counts.sum())
    ax[1].set_xticks(range(len(class_names)), class_names, rotation=45, fontsize=7)
    ax[1].set_yscale("log")
    ax[1].set_ylabel("pixel share")
    fig.tight_layout()
    return fig
