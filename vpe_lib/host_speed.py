"""How fast this host is, measured in a few seconds, so wall times from different machines can be
read side by side (the same 2-core budget took 1.5x longer on a Zen 1 EPYC than on the host the
budgets were set on, measured: the tokenizer trained at 9.6 instead of 14.3 clips/s).

`host_speed()` times fp32 work shaped like ours with torch's own threads: a 2048² matmul and a
64-channel 3x3x3 convolution over a clip batch. Each is the best of a few repeats after a warm-up
(the best, not the mean: another process's burst slows a repeat, never speeds it up)."""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path
from typing import Callable


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best_gflops(fn: Callable[[], object], flops: float, repeats: int) -> float:
    fn()  # warm-up: allocation, kernel selection
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


@functools.lru_cache(maxsize=None)  # once per process: the host does not change under it
def host_speed(repeats: int = 5) -> dict[str, float | int | str]:
    """{'cpu_model', 'threads', 'fp32_matmul_gflops', 'fp32_conv3d_gflops'} (about 2 s on 2 cores)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    conv = torch.nn.Conv3d(64, 64, 3, padding=1)
    x = torch.randn(2, 64, 4, 32, 32, generator=g)
    with torch.no_grad():
        matmul = _best_gflops(lambda: a @ b, 2 * 2048 ** 3, repeats)
        conv3d = _best_gflops(lambda: conv(x), 2 * 64 * 64 * 27 * x[0, 0].numel() * x.shape[0], repeats)
    return {"cpu_model": cpu_model(), "threads": torch.get_num_threads(),
            "fp32_matmul_gflops": round(matmul, 1), "fp32_conv3d_gflops": round(conv3d, 1)}
