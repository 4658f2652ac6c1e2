"""Scores with a 95% interval from a bootstrap over held-out *videos* (frames of one video are near-duplicates, so
the intervals resample videos, not tokens): R², AUROC, balanced accuracy, paired differences and pooled draws.

The bootstrap works on per-video sufficient statistics: every score here is a function of sums over
videos (R²: counts, sums, squares and squared errors; balanced accuracy: the four confusion counts;
AUROC: the matrix of positive-negative pairs ranked correctly, per pair of videos). A resample is a
vector of video multiplicities, and its score a matrix product, so 1000 resamples cost milliseconds
whatever the number of tokens. The latent probes (`vpe_lib.eval.latent_probes`) score with these.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np


class Score(NamedTuple):
    """A point estimate on all test videos and its percentile bootstrap interval (over videos)."""

    value: float
    ci_low: float
    ci_high: float


# ---------------------------------------------------------------------------- the bootstrap over videos


def video_index(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-row video ids (any values) -> (row -> 0..V-1 index, V)."""
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    return inv.ravel(), int(inv.max()) + 1 if inv.size else 0


def bootstrap_counts(n_videos: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_videos) multiplicities: each row resamples the videos with replacement. Deterministic
    in `seed`."""
    if n_videos < 1 or n_boot < 1:
        raise ValueError(f"need n_videos >= 1 and n_boot >= 1, got {n_videos}, {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_videos, np.full(n_videos, 1.0 / n_videos), size=n_boot).astype(np.float64)


class Estimate(NamedTuple):
    """A `Score` with its bootstrap values (one per resample, nan where undefined), for paired
    differences: every score computed with the same `n_boot`, `seed` and test videos sees the same
    resamples."""

    score: Score
    boots: np.ndarray


def _with_interval(stat: Callable[[np.ndarray], np.ndarray], n_videos: int, n_boot: int, seed: int,
                   level: float, keep_boots: bool = False) -> Score | Estimate:
    """stat(counts (B, V)) -> (B,) scores; the point estimate is stat at all-ones counts."""
    value = float(stat(np.ones((1, n_videos)))[0])
    boots = stat(bootstrap_counts(n_videos, n_boot, seed))
    score = Score(value, *percentile_interval(boots, level))
    return Estimate(score, boots) if keep_boots else score


def percentile_interval(boots: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of the finite bootstrap values (nan, nan if there are none)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    boots = np.asarray(boots, np.float64)
    boots = boots[np.isfinite(boots)]
    if not len(boots):
        return float("nan"), float("nan")
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(boots, [q, 100 - q])
    return float(lo), float(hi)


def paired_difference(a: Estimate, b: Estimate, level: float = 0.95) -> Score:
    """a - b with the interval of the difference over the same resamples of the test videos (paired:
    the videos where both probes do well or badly cancel)."""
    if a.boots.shape != b.boots.shape:
        raise ValueError(f"paired_difference needs the same resamples; got {a.boots.shape} and {b.boots.shape}")
    return Score(a.score.value - b.score.value, *percentile_interval(a.boots - b.boots, level))


def pool_draws(draws: Sequence[Estimate], *, seed: int = 0, level: float = 0.95) -> Estimate:
    """The mean of K estimates from independent random draws (random-weight encoders of different
    seeds, scored on the same test videos with the same resamples), with an interval over both
    sources: replicate b keeps the videos of resample b and resamples the K draws with replacement.
    So the interval of a pretrained-vs-random difference includes how much one random draw differs
    from another, which a single draw leaves out. With K = 1 it is that estimate unchanged."""
    if not draws:
        raise ValueError("pool_draws needs at least one estimate")
    if len(draws) == 1:
        return draws[0]
    if any(d.boots.shape != draws[0].boots.shape for d in draws):
        raise ValueError(f"pool_draws needs the same resamples; got {[d.boots.shape for d in draws]}")
    boots = np.stack([np.asarray(d.boots, np.float64) for d in draws])  # (K, B)
    k, b = boots.shape
    pick = np.random.default_rng(seed).integers(0, k, size=(b, k))
    pooled = boots[pick, np.arange(b)[:, None]].mean(1)
    value = float(np.mean([d.score.value for d in draws]))
    return Estimate(Score(value, *percentile_interval(pooled, level)), pooled)


def _per_video_sums(values: np.ndarray, vid: np.ndarray, n_videos: int) -> np.ndarray:
    """(n, k) -> (V, k) sums over each video's rows."""
    values = values.reshape(len(values), -1)
    return np.stack([np.bincount(vid, weights=values[:, j], minlength=n_videos) for j in range(values.shape[1])], 1)


def r2_ci(y: np.ndarray, y_hat: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
          level: float = 0.95, keep_boots: bool = False) -> Score | Estimate:
    """R² of y (n,) or (n, k) against predictions, with a bootstrap over `groups` (video per row).
    For k > 1 outputs (dx, dy), the variance-weighted R² 1 - ΣSSE / ΣSST, with SST around each
    output's own mean (a shared mean would credit a probe for knowing that dx and dy differ)."""
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    y_hat = np.asarray(y_hat, np.float64).reshape(len(y_hat), -1)
    if y.shape != y_hat.shape:
        raise ValueError(f"r2_ci: y {y.shape} and y_hat {y_hat.shape} differ")
    vid, V = video_index(groups)
    n = np.bincount(vid, minlength=V).astype(np.float64)
    s, q, e = (_per_video_sums(a, vid, V) for a in (y, y ** 2, (y - y_hat) ** 2))

    def stat(c: np.ndarray) -> np.ndarray:
        N, S, Q, E = c @ n, c @ s, c @ q, c @ e
        with np.errstate(invalid="ignore", divide="ignore"):
            sst = (Q - S ** 2 / N[:, None]).sum(1)
            return np.where(sst > 1e-12 * np.maximum(Q.sum(1), 1e-300), 1.0 - E.sum(1) / sst, np.nan)
    return _with_interval(stat, V, n_boot, seed, level, keep_boots)


def _pair_matrix(labels: np.ndarray, scores: np.ndarray, vid: np.ndarray, V: int) -> np.ndarray:
    """A[u, v] = Σ over positives i of video u and negatives j of video v of [s_i > s_j] + ½[s_i = s_j]
    (the Mann-Whitney count, split by the videos of the pair)."""
    pos, neg = labels, ~labels
    A = np.zeros((V, V))
    s_pos, v_pos = scores[pos], vid[pos]
    for v in range(V):
        neg_v = np.sort(scores[neg & (vid == v)])
        if not len(neg_v) or not len(s_pos):
            continue
        lo = np.searchsorted(neg_v, s_pos, side="left")
        hi = np.searchsorted(neg_v, s_pos, side="right")
        A[:, v] = np.bincount(v_pos, weights=lo + 0.5 * (hi - lo), minlength=V)
    return A


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); nan without both classes."""
    return auroc_ci(labels, scores, np.zeros(len(np.ravel(labels)), int), n_boot=1).value


def auroc_ci(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95, keep_boots: bool = False) -> Score | Estimate:
    """AUROC of `scores` for bool `labels`, with a bootstrap over `groups` (video per row)."""
    labels = np.asarray(labels, bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"auroc: labels {labels.shape} and scores {scores.shape} differ")
    vid, V = video_index(groups)
    A = _pair_matrix(labels, scores, vid, V)
    p = np.bincount(vid, weights=labels, minlength=V)
    m = np.bincount(vid, weights=~labels, minlength=V)

    def stat(c: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("bu,uv,bv->b", c, A, c) / ((c @ p) * (c @ m))
    return _with_interval(stat, V, n_boot, seed, level, keep_boots)


def balanced_accuracy_ci(labels: np.ndarray, predicted: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95, keep_boots: bool = False) -> Score | Estimate:
    """(true positive rate + true negative rate) / 2, with a bootstrap over `groups`. A constant
    prediction scores 0.5 however imbalanced the labels."""
    labels = np.asarray(labels, bool).ravel()
    predicted = np.asarray(predicted, bool).ravel()
    vid, V = video_index(groups)
    counts = _per_video_sums(np.stack([labels & predicted, labels, ~labels & ~predicted, ~labels], 1).astype(float),
                             vid, V)

    def stat(c: np.ndarray) -> np.ndarray:
        tp, p, tn, n = (c @ counts).T
        with np.errstate(invalid="ignore", divide="ignore"):
            return 0.5 * (tp / p + tn / n)
    return _with_interval(stat, V, n_boot, seed, level, keep_boots)


def balanced_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (predict positive when score >= it) that maximises balanced accuracy on these
    (training) scores. Chosen on training tokens, so the test score is not tuned on the test set."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    if labels.all() or not labels.any():
        return float("inf") if not labels.any() else float("-inf")
    order = np.argsort(-scores, kind="stable")
    s, l = scores[order], labels[order]
    tpr = np.cumsum(l) / l.sum()  # predicting positive for the first k+1 (highest) scores
    fpr = np.cumsum(~l) / (~l).sum()
    last = np.r_[s[1:] != s[:-1], True]  # a cut is only possible between distinct scores
    bal = np.where(last, 0.5 * (tpr + 1 - fpr), -1.0)
    k = int(np.argmax(bal))
    return float(s[k]) if bal[k] > 0.5 else float("inf")  # no cut beats a constant: predict negative
