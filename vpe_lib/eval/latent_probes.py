"""What a single still frame's token features tell: motion probes, a common-fate probe, a foreground
probe and code purity, each with a 95% interval from a bootstrap over held-out *videos*.

Every probe is closed-form ridge (`vpe_lib.eval.probes`) on standardised token features: no learning
rate or schedule to tune, so a score reflects the features. Probes fit on tokens of training videos
and are scored on tokens of test videos. Frames of one video are near-duplicates, so the intervals
resample test videos, not tokens.

The intervals are `vpe_lib.eval.video_bootstrap`'s (re-exported here): sums per video, resampled as
vectors of video multiplicities; code purity's statistic is the code x class counts per video.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vpe_lib.data.errors import DataError
from vpe_lib.data.motion import (MotionCache, block_matching_motion, codec_motion, fill_missing, remove_camera_motion,
                                 token_flow, token_motion, true_moving_tokens)
from vpe_lib.data.samplers import to_unit_range
from vpe_lib.eval.probes import ridge_fit, ridge_predict
# the scores and their intervals, re-exported: the latent stage reads every score through this module
from vpe_lib.eval.video_bootstrap import (Estimate, Score, _with_interval, auroc, auroc_ci,  # noqa: F401
                                         balanced_accuracy_ci, balanced_threshold, bootstrap_counts, paired_difference,
                                         percentile_interval, pool_draws, r2_ci, video_index)
from vpe_lib.train.device import module_device


# the probes' metric names, as the latent stage writes them: latents/<metric>/<encoder>
PROBE_METRICS = ("motion_r2", "speed_r2", "mv_r2", "common_fate_auroc", "fg_auroc", "fg_balanced_acc", "code_purity")


# ---------------------------------------------------------------------------- probes


def ridge_probes(train_x: np.ndarray, train_targets: dict[str, np.ndarray], test_x: np.ndarray, *,
                 alpha: float = 10.0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One ridge fit for several targets of the same token rows (n, d): each target (n,) or (n, k) is a
    column block of one multi-output ridge, which is exactly separate ridges with the same alpha, at
    the cost of one. Returns the predictions on the training and on the test rows, per target."""
    names = list(train_targets)
    cols = [np.asarray(train_targets[k], np.float64).reshape(len(train_x), -1) for k in names]
    model = ridge_fit(train_x, np.concatenate(cols, 1), alpha=alpha)
    edges = np.cumsum([0] + [c.shape[1] for c in cols])
    out = []
    for x in (train_x, test_x):
        pred = ridge_predict(model, x)
        out.append({k: pred[:, a:b].reshape(len(x), *np.shape(train_targets[k])[1:])
                    for k, a, b in zip(names, edges[:-1], edges[1:])})
    return out[0], out[1]


def binary_scores(train_scores: np.ndarray, train_y: np.ndarray, test_scores: np.ndarray, test_y: np.ndarray,
                  test_groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0, keep_boots: bool = False
                  ) -> dict[str, Score | Estimate]:
    """A probe's scores for 0/1 labels judged by AUROC and by balanced accuracy at the threshold that
    is best on the training tokens (so the test set does not tune it)."""
    train_y = np.asarray(train_y, bool).ravel()
    if train_y.all() or not train_y.any():
        nan = Score(float("nan"), float("nan"), float("nan"))
        nan = Estimate(nan, np.full(n_boot, np.nan)) if keep_boots else nan
        return {"auroc": nan, "balanced_acc": nan}
    threshold = balanced_threshold(train_scores, train_y)
    kw = dict(n_boot=n_boot, seed=seed, keep_boots=keep_boots)
    return {"auroc": auroc_ci(test_y, test_scores, test_groups, **kw),
            "balanced_acc": balanced_accuracy_ci(test_y, np.ravel(test_scores) >= threshold, test_groups, **kw)}


def regression_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                     test_groups: np.ndarray, *, alpha: float = 10.0, n_boot: int = 1000, seed: int = 0) -> Score:
    """Ridge from token rows (n, d) to targets (n,) or (n, k): held-out R² with its interval."""
    model = ridge_fit(train_x, train_y, alpha=alpha)
    return r2_ci(test_y, ridge_predict(model, test_x), test_groups, n_boot=n_boot, seed=seed)


def binary_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 test_groups: np.ndarray, *, alpha: float = 10.0, n_boot: int = 1000, seed: int = 0
                 ) -> dict[str, Score]:
    """Ridge on 0/1 labels (a linear probability model: its score ranks tokens), judged by
    `binary_scores`."""
    train_y = np.asarray(train_y, bool).ravel()
    model = ridge_fit(train_x, train_y.astype(np.float64), alpha=alpha)
    return binary_scores(ridge_predict(model, train_x), train_y, ridge_predict(model, test_x), test_y, test_groups,
                         n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------- targets at token resolution


def target_rows(targets: np.ndarray) -> np.ndarray:
    """Token targets (n, h, w) or (n, h, w, k) -> rows (n·h·w,) or (n·h·w, k), in the (frame, y, x)
    order of `flatten_tokens`' feature rows."""
    targets = np.asarray(targets)
    return targets.reshape(int(np.prod(targets.shape[:3])), *targets.shape[3:])


def motion_targets(flow: np.ndarray, stride: int) -> dict[str, np.ndarray]:
    """Per-pixel flow (n, H, W, 2) from each frame to the next -> the token grid (n, h, w): ``flow``
    (n, h, w, 2) mean (dx, dy) and ``speed`` (n, h, w) mean |v|, each frame's median (the camera)
    removed first."""
    flow = remove_camera_motion(flow)
    n, H, W = flow.shape[:3]
    grid = (n, H // stride, W // stride)
    return {"flow": token_flow(flow, grid), "speed": token_motion(flow, grid)}


def fate_targets(future_flow: np.ndarray, stride: int, **moving) -> np.ndarray:
    """Flows (n, k, H, W, 2) of the k steps after each frame -> bool (n, h, w): the token (a fixed
    position of the grid) moves in at least one of them (`true_moving_tokens`: camera removed,
    > 0.5 px/frame on >= a quarter of its pixels, unless `moving` says otherwise)."""
    n, k, H, W = future_flow.shape[:4]
    grid = (k, H // stride, W // stride)
    return np.stack([true_moving_tokens(f, grid, **moving).any(0) for f in future_flow])


def patch_classes(semantic: np.ndarray, stride: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Semantic maps (n, H, W) -> (majority class (n, h, w), foreground fraction (n, h, w)) per token
    patch. Labels >= n_classes (COCO's 255 ignore) count as background."""
    s = torch.from_numpy(np.where(semantic < n_classes, semantic, 0).astype(np.int64))
    onehot = F.one_hot(s, n_classes).permute(0, 3, 1, 2).float()
    counts = F.avg_pool2d(onehot, stride).numpy()  # n C h w: share of each class
    return counts.argmax(1), 1.0 - counts[:, 0]


def probe_times(n_frames: int, per_video: int, horizon: int) -> np.ndarray:
    """`per_video` still frames spread evenly over a video, each with `horizon` frames after it
    (the common-fate window; 1 for the next frame's motion)."""
    last = n_frames - 1 - horizon
    if last < 0:
        raise ValueError(f"videos of {n_frames} frames have no frame with {horizon} frames after it")
    return np.unique(np.linspace(0, last, per_video).round().astype(int))


def video_mv_speed(frames: np.ndarray, times: np.ndarray, stride: int, *, source: str = "codec",
                   path_for_errors: str | None = None) -> np.ndarray:
    """Motion-vector speed on the token grid (len(times), h, w) between each frame t and t + 1, from the
    codec's vectors of the video up to the last frame needed (I-frames and intra blocks filled, the median
    vector removed) or, when `source` is "block_matching", from block matching. The codec's field at
    t + 1 is the motion of content arriving there from t."""
    times = np.asarray(times)
    clip = frames[:int(times.max()) + 2]
    if source == "block_matching":
        field = block_matching_motion(clip)
    else:
        field, valid = codec_motion(clip)
        if not valid.any():
            raise DataError("the H.264 encoding of this video carries no motion vectors; set "
                            "predict.motion_source=block_matching to use block matching instead",
                            path=path_for_errors, field="motion_vectors")
        field = fill_missing(field, valid)
    T, H, W = field.shape[:3]
    return token_motion(field[times + 1], (len(times), H // stride, W // stride))


def probe_data(store, videos, times: np.ndarray, *, stride: int, fate_frames: int, n_classes: int,
               mv_source: str | None = "codec", cache: MotionCache | None = None) -> dict[str, np.ndarray]:
    """Still frames of some videos of a `PushWorldStore` (the same `times` in each) and their
    targets at token resolution: ``frames`` (n, H, W, 3), ``video`` (n,), ``flow`` (n, h, w, 2) and
    ``speed`` (n, h, w) from t to t + 1 (true flow), ``fate`` (n, h, w) bool (moves within the next
    `fate_frames` steps), ``majority`` and ``fg`` (n, h, w) (patch class, foreground share) and, unless
    `mv_source` is None, ``mv`` (n, h, w) the motion-vector speed (cached per video in `cache`)."""
    times = np.asarray(times)
    out: dict[str, list] = {k: [] for k in ("frames", "video", "flow", "speed", "fate", "majority", "fg", "mv")}
    for v in videos:
        v = int(v)
        out["frames"].append(store.get("frames", v, times))
        out["video"].append(np.full(len(times), v))
        flow = store.get("flow", v).astype(np.float32)  # (T, H, W, 2), t -> t + 1
        m = motion_targets(flow[times], stride)
        out["flow"].append(m["flow"])
        out["speed"].append(m["speed"])
        out["fate"].append(fate_targets(flow[times[:, None] + np.arange(fate_frames)], stride))
        majority, fg = patch_classes(store.get("semantic", v, times), stride, n_classes)
        out["majority"].append(majority)
        out["fg"].append(fg)
        if mv_source is not None:
            compute = lambda: video_mv_speed(store.get("frames", v), times, stride, source=mv_source,  # noqa: E731
                                             path_for_errors=f"{store.root} ({store.split} video {v})")
            key = {"split": store.split, "video": v, "source": mv_source, "root": str(store.root),
                   "grid": [1, store.world.height // stride, store.world.width // stride],
                   "times": [int(t) for t in times], "kind": "latents/next_frame_speed"}
            out["mv"].append(cache.get(key, compute) if cache is not None else compute())
    return {k: np.concatenate(val) for k, val in out.items() if val}


def pixel_patches(images: torch.Tensor, stride: int) -> torch.Tensor:
    """Pixels (b, 3, H, W) -> each token's patch as its feature (b, 3·s·s, H/s, W/s) (space to depth)."""
    return F.pixel_unshuffle(images, stride)


@torch.no_grad()
def token_features(encoder, frames: np.ndarray, stride: int, *, codes: torch.Tensor | None = None,
                   batch_size: int = 32) -> np.ndarray:
    """An `ImageEncoder`'s last map for still frames (n, H, W, 3) uint8, at the token stride: (n, c, h, w)
    float32 on the CPU (the encoder runs where its weights are). A finer map (raw pixels, stride 1)
    becomes each token's patch (space to depth). `codes`: a `PredictorEncoder`'s condition tokens of
    these frames, already computed (`condition_codes` of an encoder with the same tokenizer): the
    transformer starts from them."""
    encoder.eval()
    device = module_device(encoder)
    s = encoder.feature_info[-1].stride
    if stride % s:
        raise ValueError(f"the encoder's last map has stride {s}, which does not divide the token stride {stride}")
    out = []
    for i in range(0, len(frames), batch_size):
        if codes is not None:
            f = encoder.forward_from_codes(codes[i:i + batch_size].to(device))[-1]
        else:
            f = encoder.forward_features(to_unit_range(frames[i:i + batch_size]).permute(0, 3, 1, 2).to(device))
        f = f.float().cpu()
        out.append((pixel_patches(f, stride // s) if s < stride else f).numpy())
    return np.concatenate(out)


@torch.no_grad()
def condition_codes(encoder, frames: np.ndarray, *, batch_size: int = 32) -> torch.Tensor:
    """A `PredictorEncoder`'s condition tokens (n, cond_frames, h, w) of still frames (n, H, W, 3) uint8."""
    device = module_device(encoder)
    return torch.cat([encoder.condition_codes(to_unit_range(frames[i:i + batch_size]).permute(0, 3, 1, 2).to(device))
                      for i in range(0, len(frames), batch_size)])


# ---------------------------------------------------------------------------- codes


def code_purity_ci(codes: np.ndarray, classes: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95, keep_boots: bool = False) -> Score | Estimate:
    """Per-class purity of a code assignment: for each code, the share of its tokens whose patch class
    is the code's most frequent class, averaged over codes weighted by usage (= Σ_code max_class
    count / tokens). 1 when every code sees one class only. Bootstrap over `groups` (videos)."""
    codes, classes = np.asarray(codes).ravel(), np.asarray(classes).ravel()
    vid, V = video_index(groups)
    _, code = np.unique(codes, return_inverse=True)
    _, cls = np.unique(classes, return_inverse=True)
    K, C = int(code.max()) + 1, int(cls.max()) + 1
    table = np.zeros((V, K * C))
    np.add.at(table, (vid, code * C + cls), 1.0)

    def stat(c: np.ndarray) -> np.ndarray:
        out = np.empty(len(c))
        for i in range(0, len(c), 64):  # (64, K, C) at a time: the table of every resample would be large
            t = (c[i:i + 64] @ table).reshape(-1, K, C)
            out[i:i + 64] = t.max(2).sum(1) / t.sum((1, 2))
        return out
    return _with_interval(stat, V, n_boot, seed, level, keep_boots)


def code_purity(codes: np.ndarray, classes: np.ndarray) -> float:
    return code_purity_ci(codes, classes, np.zeros(len(np.ravel(codes)), int), n_boot=1).value


def chance_code_purity(codes: np.ndarray, classes: np.ndarray, *, seed: int = 0) -> float:
    """Purity of the same code usage with the classes shuffled across tokens: what a code assignment
    that knows nothing of the classes scores (rarely used codes are pure by chance, and the majority
    class alone makes every code fairly pure)."""
    classes = np.random.default_rng(seed).permutation(np.asarray(classes).ravel())
    return code_purity(codes, classes)


def usage_stats(usage: np.ndarray) -> dict[str, float]:
    """Codebook usage counts (K,) -> perplexity exp(H) of the usage distribution (K when uniform, 1
    when one code takes everything) and the number of dead (never used) codes."""
    usage = np.asarray(usage, np.float64)
    p = usage[usage > 0] / usage.sum()
    return {"perplexity": float(np.exp(-(p * np.log(p)).sum())), "dead_codes": int((usage == 0).sum())}
