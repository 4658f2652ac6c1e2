"""The code table as a prior the prediction transformers add their logits to.

The strongest non-learned baseline of video prediction over a tokenizer's codes is a lookup table:
p(future code x | the condition code c at the same place), counted on training clips, mixed with
the unigram of future codes (weight ``eps``, fitted on validation clips):

    p(x | c) = (1 - eps) * counts[c, x] / rows[c] + eps * unigram(x)      (rows[c] > 0)
    p(x | c) = unigram(x)                                                 (a condition code never seen)

A transformer that outputs ``logits + log p(x | c)`` (the residual parameterisation, its head
initialised at zero) *starts* at the table's likelihood and only has to learn what the table does
not know: where the arm goes, which object it pushes. Without it the model must first rediscover
a 1024 x 1024 table from ~1,400 clips, which 200 updates never did (it lost to the table by
1.1-1.3 bits per token).

Training clips were counted into the table, so on them the table is better than it will be on
held-out clips (it has seen their very pairs). A model trained on that optimistic prior learns to
trust it too much. ``log_probs(..., own=...)`` therefore removes the clip's own pairs from the
counts (leave-one-clip-out): the prior a training clip sees is the table of the other clips,
distributed like the prior a test clip sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TablePrior:
    """The code-table baseline's numbers (vpe_lib.eval.token_baselines.fit_baselines): counts (K, K) on
    training clips, the unigram log-probs and the mixing weight fitted on validation clips. A
    `table_prior` model is built on exactly these (CodeTablePrior.fit)."""

    counts: np.ndarray
    unigram: np.ndarray
    eps: float


class CodeTablePrior(nn.Module):
    """Buffers (saved with the model's weights): counts (K, K), unigram log-probs (K,), eps ()."""

    def __init__(self, codebook_size: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.register_buffer("counts", torch.zeros(codebook_size, codebook_size))
        # uniform until fitted, so an unfitted prior adds the same constant to every logit (no effect)
        self.register_buffer("unigram_logp", torch.full((codebook_size,), -float(torch.log(torch.tensor(codebook_size)))))
        self.register_buffer("eps", torch.tensor(1.0))

    @torch.no_grad()
    def fit(self, counts, unigram_logp, eps: float) -> "CodeTablePrior":
        """Set the table from the baseline's own numbers (`vpe_lib.eval.token_baselines.code_table`, its unigram and
        fitted mixing weight), so the prior is exactly the baseline the model is judged against."""
        K = self.codebook_size
        counts, unigram_logp = torch.as_tensor(counts, dtype=torch.float32), torch.as_tensor(unigram_logp, dtype=torch.float32)
        if tuple(counts.shape) != (K, K) or tuple(unigram_logp.shape) != (K,):
            raise ValueError(f"a code table for K={K} needs counts ({K}, {K}) and unigram ({K},), got "
                             f"{tuple(counts.shape)} and {tuple(unigram_logp.shape)}")
        if not 0 < eps <= 1:
            raise ValueError(f"the mixing weight eps must be in (0, 1], got {eps}")
        self.counts.copy_(counts)
        self.unigram_logp.copy_(unigram_logp)
        self.eps.fill_(eps)
        return self

    def log_probs(self, cond: Tensor, own: Tensor | None = None) -> Tensor:
        """cond: b n long, the condition code at each predicted position -> log p(x | c), b n K.

        own: b n long, the true codes of the same positions when the clip was counted into the
        table (training clips): its own pairs are taken out of the counts first."""
        rows = self.counts[cond]  # b n K
        if own is not None:
            # the clip's own pairs (c, x) for each position's c: same[b, i, j] = cond_i == cond_j
            same = (cond[:, :, None] == cond[:, None, :]).to(rows.dtype)
            onehot = nn.functional.one_hot(own, self.codebook_size).to(rows.dtype)
            rows = (rows - same @ onehot).clamp_(min=0)
        total = rows.sum(-1, keepdim=True)
        uni = self.unigram_logp.exp()
        p = torch.where(total > 0, (1 - self.eps) * rows / total.clamp(min=1) + self.eps * uni, uni)
        return p.clamp(min=1e-30).log()


__all__ = ["CodeTablePrior"]
