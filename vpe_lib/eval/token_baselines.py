"""The non-learned baselines a video predictor must beat, in bits per future token: the unigram of the training
futures' codes, copying the condition token at the same place (smoothed), and a (condition code -> future code)
table at the same place, the token-space "copy" generalised. A predictor that loses to the table has not learned
to predict (the gate, `vpe_lib.eval.pretext_gates`); the table is also the prior the transformers' logits are a
residual over (`vpe_lib.models.code_prior`)."""

from __future__ import annotations

import math

import numpy as np

from vpe_lib.models.code_prior import TablePrior

LN2 = math.log(2.0)


def unigram_log_probs(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """log p(code) of the training futures' code frequencies, add-one smoothed (no zero probability)."""
    counts = np.bincount(codes.ravel().astype(np.int64), minlength=codebook_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def copy_token_bits(future: np.ndarray, cond_frame: np.ndarray, unigram: np.ndarray, eps: float) -> np.ndarray:
    """Bits per token of p = (1 - eps) * [x = the condition token at the same place] + eps * unigram."""
    same = (future == cond_frame[:, None]).astype(np.float64)
    p = (1 - eps) * same + eps * np.exp(unigram[future.astype(np.int64)])
    return -np.log2(p)


def best_mixing_weight(bits_of) -> float:
    """The mixing weight eps minimising bits_of(eps) (mean bits per token), on a fine grid in log
    space: one dimension, convex enough."""
    grid = np.logspace(-4, 0, 161)[:-1]
    return float(grid[int(np.argmin([bits_of(e) for e in grid]))])


def fit_copy_eps(future: np.ndarray, cond_frame: np.ndarray, unigram: np.ndarray) -> float:
    """The copy baseline's mixing weight, minimising training bits per token."""
    return best_mixing_weight(lambda e: copy_token_bits(future, cond_frame, unigram, e).mean())


def code_table(future: np.ndarray, cond_frame: np.ndarray, codebook_size: int) -> np.ndarray:
    """Counts (K, K) of (condition code, future code) at the same place, over every horizon: the
    token-space "copy" generalised to a lookup table. A tokenizer need not give a static patch the
    same code at every latent time index (a non-causal one pads its first and last frames
    differently), so plain copying can fail where this table does not."""
    c = np.broadcast_to(cond_frame[:, None], future.shape).ravel().astype(np.int64)
    counts = np.zeros((codebook_size, codebook_size))
    np.add.at(counts, (c, future.ravel().astype(np.int64)), 1.0)
    return counts


def code_table_bits(future: np.ndarray, cond_frame: np.ndarray, counts: np.ndarray, unigram: np.ndarray,
                    eps: float) -> np.ndarray:
    """Bits per token of p = (1 - eps) * table[c](x) + eps * unigram(x); a condition code never seen
    in training leaves only the unigram."""
    c = np.broadcast_to(cond_frame[:, None], future.shape).astype(np.int64)
    x = future.astype(np.int64)
    rows = counts.sum(1)
    seen = rows[c] > 0
    table = np.where(seen, counts[c, x] / np.maximum(rows[c], 1), 0.0)
    p = np.where(seen, (1 - eps) * table + eps * np.exp(unigram[x]), np.exp(unigram[x]))
    return -np.log2(p)


def fit_table_eps(future: np.ndarray, cond_frame: np.ndarray, counts: np.ndarray, unigram: np.ndarray) -> float:
    """The table's mixing weight, fitted on held-out (validation) clips: on its own training clips a
    count table always looks better than it is."""
    return best_mixing_weight(lambda e: code_table_bits(future, cond_frame, counts, unigram, e).mean())


def fit_baselines(tokens: dict, K: int, cf: int) -> tuple[dict[str, np.ndarray], TablePrior, dict[str, float]]:
    """The three non-learned baselines: their test bits per future token, the code table as a prior,
    and their metrics (mixing weights; validation bits, the lines the validation curves must cross).
    Unigram of the training futures; copying the condition token (mixing weight fitted on training
    clips); the code table (counted on training clips, its mixing weight fitted on validation clips)."""
    train_future, train_cond = tokens["train"]["codes"][:, cf:], tokens["train"]["cond"][:, 0]
    unigram = unigram_log_probs(train_future, K)
    eps = fit_copy_eps(train_future, train_cond, unigram)
    counts = code_table(train_future, train_cond, K)
    val_future, val_cond = tokens["val"]["codes"][:, cf:], tokens["val"]["cond"][:, 0]
    eps_table = fit_table_eps(val_future, val_cond, counts, unigram)
    test_future, test_cond = tokens["test"]["codes"][:, cf:], tokens["test"]["cond"][:, 0]
    bits = {"unigram": -unigram[test_future.astype(np.int64)] / LN2,
            "copy_tokens": copy_token_bits(test_future, test_cond, unigram, eps),
            "code_table": code_table_bits(test_future, test_cond, counts, unigram, eps_table)}
    metrics = {"predict/copy_tokens/mixing_weight": eps, "predict/code_table/mixing_weight": eps_table,
               "predict/unigram/val_bits_per_token": float((-unigram[val_future.astype(np.int64)] / LN2).mean()),
               "predict/copy_tokens/val_bits_per_token": float(copy_token_bits(val_future, val_cond, unigram, eps).mean()),
               "predict/code_table/val_bits_per_token": float(
                   code_table_bits(val_future, val_cond, counts, unigram, eps_table).mean())}
    return bits, TablePrior(counts, unigram, eps_table), metrics
