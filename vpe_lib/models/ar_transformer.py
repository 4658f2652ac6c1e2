"""A VideoGPT-style autoregressive prior (`vpe_lib.models.transformer` describes it beside the masked model):
raster order, the condition tokens a bidirectional prefix, sampled token by token with a KV cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vpe_lib.models.video_transformer import LayerCache, TransformerConfig, VideoTransformer, _gumbel


class ARVideoTransformer(VideoTransformer):
    """Autoregressive prior over the raster sequence [condition tokens (n_cond), future tokens (n_future)].

    Attention is a prefix-LM: condition tokens attend to all condition tokens (a still image's
    features see the whole frame), each future token to all condition tokens and the future
    tokens up to itself. Teacher forcing is a plain shift, no BOS token: the logits at sequence
    index j predict token j + 1, so the last condition token's logits predict the first future
    token and the last token is never an input.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg, vocab=cfg.codebook_size)
        n, n_cond = cfg.n_tokens, cfg.n_cond
        i = torch.arange(n)
        # allowed[query, key]: the key is in the prefix, or not after the query
        self.register_buffer("allowed", (i[None, :] < n_cond) | (i[None, :] <= i[:, None]), persistent=False)

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache() for _ in range(self.cfg.depth)]

    def _hidden(self, tokens: Tensor, start: int, cache: list[LayerCache] | None, keep=frozenset(),
                plane: Tensor | None = None):
        n = tokens.shape[1]
        past = 0 if cache is None else len(cache[0])
        if past != start:
            raise ValueError(f"start ({start}) must equal the number of cached positions ({past})")
        if start + n > self.cfg.n_tokens:
            raise ValueError(f"positions {start}..{start + n - 1} exceed the {self.cfg.n_tokens} of the grid")
        # everything is allowed within the prefix and for a single new position: no mask, SDPA's
        # fastest path (and no device sync to find out)
        allowed = None if n == 1 or start + n <= self.cfg.n_cond else self.allowed[start:start + n, :start + n]
        segment = (torch.arange(start, start + n, device=tokens.device) < self.cfg.n_cond).expand_as(tokens)
        x = self._embed(tokens, segment, start, plane)
        return self._blocks(x, allowed, cache, keep)

    def logits(self, tokens: Tensor, *, start: int = 0, cache: list[LayerCache] | None = None,
               cond_codes: Tensor | None = None, own: Tensor | None = None) -> Tensor:
        """tokens b L at sequence positions start .. start + L - 1 -> logits b L K (index j predicts
        the token at position start + j + 1). With `cache` (from `new_cache`, holding exactly the
        positions before `start`) earlier keys/values come from it and the new ones are appended.
        cond_codes: needed by the table prior and the condition input; own: the true future codes
        these logits predict, of a clip counted into the table (leave-one-out)."""
        plane = self._cond_plane(cond_codes)
        x, _ = self._hidden(tokens, start, cache, plane=plane)
        return self._with_prior(self.head(self.norm(x)), plane, start + 1, own)

    def _sequence(self, codes: Tensor, cond_codes: Tensor) -> Tensor:
        c = self.cfg.cond_frames
        self._check("codes", codes, self.cfg.grid[0])
        self._check("cond_codes", cond_codes, c)
        return rearrange(torch.cat([cond_codes, codes[:, c:]], 1), "b t h w -> b (t h w)")

    def _future_logits(self, codes: Tensor, cond_codes: Tensor, exclude_own: bool = False) -> tuple[Tensor, Tensor]:
        seq = self._sequence(codes, cond_codes)
        target = seq[:, self.cfg.n_cond:]
        own = target if exclude_own and self.prior is not None else None
        logits = self.logits(seq[:, :-1], cond_codes=cond_codes, own=own)[:, self.cfg.n_cond - 1:]  # tokens n_cond ..
        return logits, target

    def forward(self, codes: Tensor, cond_codes: Tensor, mask: Tensor | None = None, *,
                exclude_own: bool = False) -> tuple[Tensor, dict[str, float]]:
        """Mean cross-entropy of the future tokens codes[:, cond_frames:] given cond_codes and the
        earlier future tokens. `mask` is ignored (the masked model's signature). exclude_own: the
        clips were counted into the table prior (training clips): leave them out of it."""
        logits, target = self._future_logits(codes, cond_codes, exclude_own)
        loss = F.cross_entropy(rearrange(logits, "b n k -> b k n").float(), target)
        return loss, {"loss": loss.item(), "ce": loss.item()}

    def future_log_probs(self, codes: Tensor, cond_codes: Tensor) -> Tensor:
        """Teacher-forced log p(future token | condition, earlier future tokens), b t' h w K: the
        joint log-likelihood of the true future is the sum of the targets' entries."""
        _, h, w = self.cfg.grid
        logits, _ = self._future_logits(codes, cond_codes)
        return rearrange(logits.float().log_softmax(-1), "b (t h w) k -> b t h w k", h=h, w=w)

    @torch.no_grad()
    def generate(self, cond_codes: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Sample the future in raster order -> codes b t h w (condition region = cond_codes).

        One prefix pass over the condition tokens fills the KV cache, then one position per step.
        temperature = 0 is greedy; top_k keeps the k most likely tokens. Dropout follows the module's mode."""
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
        cfg = self.cfg
        self._check("cond_codes", cond_codes, cfg.cond_frames)
        cache = self.new_cache()
        seq = [rearrange(cond_codes, "b t h w -> b (t h w)")]
        logits = self.logits(seq[0], cache=cache, cond_codes=cond_codes)[:, -1]
        for i in range(cfg.n_future):
            logits = logits.float()
            if temperature == 0:
                token = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = logits.topk(top_k, -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                token = (logits + _gumbel(logits.shape, generator, logits.device)).argmax(-1)  # Gumbel-max
            seq.append(token[:, None])
            if i + 1 < cfg.n_future:
                logits = self.logits(token[:, None], start=cfg.n_cond + i, cache=cache, cond_codes=cond_codes)[:, -1]
        _, h, w = cfg.grid
        return rearrange(torch.cat(seq, 1), "b (t h w) -> b t h w", h=h, w=w)

    def _condition_states(self, cond_codes: Tensor, keep: set[int]) -> list[Tensor]:
        # the prefix alone: it is bidirectional, so every position sees the whole frame
        return self._hidden(rearrange(cond_codes, "b t h w -> b (t h w)"), 0, None, keep,
                            self._cond_plane(cond_codes))[1]
