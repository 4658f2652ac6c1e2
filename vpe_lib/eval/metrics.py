"""Metrics: segmentation IoU summed over a split, PSNR, SSIM.

Foreground IoU is intersection / union summed over every pixel of the split,
not a mean of per-image IoUs (which lets empty or tiny masks dominate), and it
is reported on its own: background IoU inflates mIoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vpe_lib.models.ssim import ssim_tensor  # noqa: F401 (also re-exported: the tensor form of `ssim`)


@dataclass
class IoUAccumulator:
    """Running intersection/union counts for foreground and background over a split."""

    fg_inter: int = 0
    fg_union: int = 0
    bg_inter: int = 0
    bg_union: int = 0
    n_pixels: int = 0
    n_correct: int = 0

    def update(self, pred_fg, true_fg) -> None:
        pred = np.asarray(pred_fg, dtype=bool)
        true = np.asarray(true_fg, dtype=bool)
        if pred.shape != true.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {true.shape}")
        self.fg_inter += int(np.sum(pred & true))
        self.fg_union += int(np.sum(pred | true))
        self.bg_inter += int(np.sum(~pred & ~true))
        self.bg_union += int(np.sum(~pred | ~true))
        self.n_pixels += pred.size
        self.n_correct += int(np.sum(pred == true))

    def result(self) -> dict[str, float]:
        fg = self.fg_inter / self.fg_union if self.fg_union else float("nan")
        bg = self.bg_inter / self.bg_union if self.bg_union else float("nan")
        return {"fg_iou": fg, "bg_iou": bg, "miou": (fg + bg) / 2, "pixel_acc": self.n_correct / max(self.n_pixels, 1)}


def foreground_iou(pred_fg, true_fg) -> float:
    acc = IoUAccumulator()
    acc.update(pred_fg, true_fg)
    return acc.result()["fg_iou"]


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0) -> float:
    """PSNR in dB over the whole batch; tensors in [-1, 1] by default (range 2)."""
    mse = F.mse_loss(x.float().clamp(-1, 1), y.float().clamp(-1, 1)).item()
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0, window: int = 7) -> float:
    """Mean SSIM with a uniform window, over `... c h w` tensors (videos: fold time into batch first)."""
    with torch.no_grad():
        return float(ssim_tensor(x, y, data_range=data_range, window=window))
