"""SSIM as a differentiable tensor: a loss term of the tokenizer (vpe_lib.models.tokenizer_loss) and,
without gradients, a metric (vpe_lib.eval.metrics.ssim). Here, below both, so models never import eval."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ssim_tensor(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0, window: int = 7) -> torch.Tensor:
    """Mean SSIM with a uniform window over `... c h w` tensors, as a differentiable 0-d tensor
    (the tokenizer's optional SSIM loss uses it; videos: fold time into the batch first)."""
    x = x.float().reshape(-1, 1, *x.shape[-2:])
    y = y.float().reshape(-1, 1, *y.shape[-2:])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy = pool(x * x) - mx**2, pool(y * y) - my**2
    cov = pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean()
