"""Video-prediction transformers over the tokenizer's codes ``b t h w`` (``long`` in ``[0, K)``).

Two priors over the same token grid, behind one interface (``forward(codes, cond_codes, mask)
-> (loss, logs)``, so one training step serves both, and ``forward_intermediates`` /
``forward_features`` on a still image's condition tokens, so the segmentation heads can read
their states like any `ImageEncoder`):

- ``"masked"`` `MaskedVideoTransformer`: MAGVIT's COMMIT. A bidirectional transformer sees the
  clip with a random subset of positions masked; masked positions *inside* the condition region
  (the first ``cond_frames`` latent frames) hold the condition tokens instead of ``[MASK]``
  ("embedding the condition"), and a segment embedding flags them. It learns to predict every
  position: masked future tokens (generation), masked condition positions (refining the
  condition's tokens into the clip's), unmasked ones (reconstruction, small weight). Sampling
  is MaskGIT's iterative decoding.
- ``"ar"`` `ARVideoTransformer`: a VideoGPT-style autoregressive prior in raster order with the
  condition tokens as a bidirectional prefix (a prefix-LM), sampled token by token with a KV
  cache.

Condition tokens are the tokenizer's codes of the condition frame edge-padded to a clip (the
MAGVIT trick), which differ from the clip's own first latent frame: the latter has seen the
following frames too. Both models therefore take ``codes`` (the clip) and ``cond_codes``
(``b cond_frames h w``) separately.

Positions carry a factorised space-time embedding (separate learned tables for t, h and w,
summed): 3 small tables instead of one per token, and it generalises across frames. The
sequence order is raster (t, h, w) everywhere, so for the AR model the condition prefix is
exactly the first ``n_cond`` positions of the clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vpe_lib.models.code_prior import CodeTablePrior

PREDICTORS = ("masked", "ar")
SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class TransformerConfig:
    codebook_size: int  # K, the tokenizer's codes 0..K-1
    grid: tuple[int, int, int]  # (t, h, w) token grid of one clip
    cond_frames: int = 1  # latent frames given as condition (the first ones)
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # masked (COMMIT) loss weights: masked non-condition positions, masked condition positions
    # ("refine"), unmasked positions ("reconstruct"; a copy task, hence the small weight)
    mask_weight: float = 1.0
    refine_weight: float = 1.0
    recon_weight: float = 0.1
    # Two levers that let a small model beat the code table within a CPU budget (measured in the
    # predict stage; see `vpe_lib.models.code_prior`):
    # table_prior: future logits = the head's output + log p_table(x | condition code at the same
    #   place); the head starts at zero, so the model starts at the table's likelihood.
    # cond_input: every position's input also embeds the condition code at its (h, w), so a future
    #   position knows which patch it continues without first finding it by attention.
    table_prior: bool = False
    cond_input: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(self.grid))  # lists from JSON; stay hashable
        for name in ("codebook_size", "cond_frames", "dim", "depth", "heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be an int >= 2, got {self.codebook_size!r}")
        if len(self.grid) != 3 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in self.grid):
            raise ValueError(f"grid must be 3 positive ints (t, h, w), got {self.grid!r}")
        if not self.cond_frames < self.grid[0]:
            raise ValueError(f"cond_frames must be in [1, t) = [1, {self.grid[0]}) for grid {self.grid}, "
                             f"got {self.cond_frames}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("mask_weight", "refine_weight", "recon_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def n_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def n_cond(self) -> int:
        return self.cond_frames * self.grid[1] * self.grid[2]

    @property
    def n_future(self) -> int:
        return self.n_tokens - self.n_cond


def check_compatible(cfg: TransformerConfig, *, codebook_size: int, grid,
                     source: str = "transformer checkpoint") -> None:
    """Raise if a transformer (e.g. loaded from `source`) was not built for this tokenizer's codes."""
    grid = tuple(grid)
    if cfg.codebook_size != codebook_size or cfg.grid != grid:
        raise ValueError(f"{source} was built for codebook_size={cfg.codebook_size}, grid={cfg.grid}, but the "
                         f"tokenizer gives codebook_size={codebook_size}, grid={grid}")


# ---------------------------------------------------------------------------- masking (COMMIT / MaskGIT)


def _rand(shape, generator: torch.Generator | None, device) -> Tensor:
    """U(0, 1) drawn on the generator's device, then moved: the same seed gives the same draw on CPU and GPU."""
    src = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=src).to(device)


def _gumbel(shape, generator: torch.Generator | None, device) -> Tensor:
    u = _rand(shape, generator, device).clamp_(min=1e-20)  # u in [1e-20, 1): -log(u) in (0, 46]
    return -torch.log(-torch.log(u))


def cosine_mask_ratio(u: Tensor | float) -> Tensor | float:
    """MaskGIT's schedule: the fraction of tokens masked at progress u in [0, 1] (1 at u=0, 0 at u=1)."""
    return torch.cos(u * math.pi / 2) if isinstance(u, Tensor) else math.cos(u * math.pi / 2)


def sample_mask_ratio(batch: int, generator: torch.Generator | None = None, *, n_tokens: int,
                      device="cpu") -> Tensor:
    """Training mask ratios cos(pi/2 u), u ~ U(0, 1), one per sample, clamped to [1/n_tokens, 1]
    (at least one masked token: a clip shown whole teaches nothing but copying)."""
    u = _rand((batch,), generator, device)
    return cosine_mask_ratio(u).clamp(1 / n_tokens, 1.0)


def random_token_mask(batch: int, grid, ratios: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """bool b t h w, True = masked, with exactly round(ratio * n) (at least 1) masked per sample,
    uniformly placed: rank i.i.d. scores, mask the lowest ranks."""
    t, h, w = grid
    n = t * h * w
    counts = (ratios.float() * n).round().long().clamp(1, n)
    scores = _rand((batch, n), generator, ratios.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return rearrange(ranks < counts[:, None], "b (t h w) -> b t h w", t=t, h=h, w=w)


# ---------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class DecodeStep:
    """One MaskGIT iteration (MaskedVideoTransformer.decode_steps), tensors b t h w over the whole grid:
    `codes` the tokens kept so far (mask id where still masked, the condition in its frames), `guess` this
    step's sample at every position, `committed` the future positions fixed so far, `confidence` the
    log-probability of each position's guess."""

    step: int
    of: int
    codes: Tensor
    guess: Tensor
    committed: Tensor
    confidence: Tensor


class LayerCache:
    """One attention layer's keys and values of the positions seen so far (b heads n head_dim).

    A KV cache is a list of these, one per block (`ARVideoTransformer.new_cache`): each
    attention call appends its new keys/values and attends over everything cached, so decoding
    one token costs one position's worth of compute instead of the whole prefix.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is not None:
            k, v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
        self.k, self.v = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        """attn_mask: bool (queries, keys), True = may attend (SDPA's convention); the keys are
        the cached positions followed by x's."""
        q, k, v = rearrange(self.qkv(x), "b n (three k d) -> three b k n d", three=3, k=self.heads)
        if cache is not None:
            k, v = cache.extend(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(rearrange(y, "b k n d -> b n (k d)")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), attn_mask, cache)
        return x + self.mlp(self.ln2(x))


class SpaceTimePosition(nn.Module):
    """Learned factorised position embedding: table_t[t] + table_h[h] + table_w[w], in raster order."""

    def __init__(self, grid: tuple[int, int, int], dim: int):
        super().__init__()
        self.t, self.h, self.w = (nn.Parameter(torch.randn(n, dim) * 0.02) for n in grid)

    def forward(self, start: int = 0, length: int | None = None) -> Tensor:
        """(length, dim) embeddings of raster positions start .. start + length - 1."""
        pos = self.t[:, None, None] + self.h[None, :, None] + self.w[None, None, :]
        pos = rearrange(pos, "t h w d -> (t h w) d")
        return pos[start:] if length is None else pos[start:start + length]


class _VideoTransformer(nn.Module):
    """The trunk both predictors share: token + segment + position embeddings, pre-LN blocks,
    final LayerNorm, linear head to K logits. Subclasses decide the inputs and the attention mask."""

    def __init__(self, cfg: TransformerConfig, vocab: int):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(vocab, cfg.dim)
        self.seg_emb = nn.Embedding(2, cfg.dim)  # 1 = the position holds a condition token
        self.pos_emb = SpaceTimePosition(cfg.grid, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.codebook_size)
        self.cond_emb = nn.Embedding(cfg.codebook_size, cfg.dim) if cfg.cond_input else None
        self.prior = CodeTablePrior(cfg.codebook_size) if cfg.table_prior else None
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections so the residual stream's variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.depth))
        if self.prior is not None:  # a residual over the table: the model starts exactly at the table
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def _cond_plane(self, cond_codes: Tensor | None) -> Tensor | None:
        """The last condition latent frame, b (h w): the code "at the same place" of every position."""
        if cond_codes is None:
            if self.cfg.cond_input or self.cfg.table_prior:
                raise ValueError("this model was built with cond_input / table_prior: pass cond_codes")
            return None
        return rearrange(cond_codes[:, -1], "b h w -> b (h w)")

    def _at_place(self, plane: Tensor, start: int, n: int) -> Tensor:
        """The condition codes at the (h, w) of raster positions start .. start + n - 1, b n."""
        hw = self.cfg.grid[1] * self.cfg.grid[2]
        return plane[:, torch.arange(start, start + n, device=plane.device) % hw]

    def _with_prior(self, logits: Tensor, plane: Tensor | None, start: int, own: Tensor | None = None) -> Tensor:
        """logits b n K predicting raster positions start .. start + n - 1: add the table's log p(x |
        condition code at the same place) at the future positions (the others are left as they are).
        own: b n_future, the true future codes of a clip counted into the table (leave-one-out)."""
        if self.prior is None:
            return logits
        n = logits.shape[1]
        lo, hi = max(self.cfg.n_cond - start, 0), min(self.cfg.n_tokens - start, n)
        if lo >= hi:
            return logits
        if own is not None and own.shape[1] != hi - lo:
            raise ValueError(f"own must hold the {hi - lo} future codes these logits predict, got {tuple(own.shape)}")
        prior = self.prior.log_probs(self._at_place(plane, start + lo, hi - lo), own).to(logits.dtype)
        return torch.cat([logits[:, :lo], logits[:, lo:hi] + prior, logits[:, hi:]], 1)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def _embed(self, tokens: Tensor, segment: Tensor, start: int = 0, plane: Tensor | None = None) -> Tensor:
        """tokens, segment b n (raster positions start .. start + n - 1) -> b n dim; with cond_input
        the condition code at each position's place (from `plane`, b (h w)) is embedded too."""
        x = self.tok_emb(tokens) + self.seg_emb(segment.long()) + self.pos_emb(start, tokens.shape[1])
        if self.cond_emb is not None:
            x = x + self.cond_emb(self._at_place(plane, start, tokens.shape[1]))
        return self.drop(x)

    def _blocks(self, x: Tensor, attn_mask: Tensor | None = None, cache: list[LayerCache] | None = None,
                keep: set[int] = frozenset()) -> tuple[Tensor, list[Tensor]]:
        """Run the blocks; return the last state (before the final norm) and those after blocks in `keep`."""
        states = []
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, None if cache is None else cache[i])
            if i in keep:
                states.append(x)
        return x, states

    def _condition_states(self, cond_codes: Tensor, keep: set[int]) -> list[Tensor]:  # pragma: no cover
        """States b n dim after the blocks in `keep` (ascending) for a condition alone."""
        raise NotImplementedError

    def forward_intermediates(self, cond_codes: Tensor, *, layers=None) -> list[Tensor]:
        """A still image's condition tokens b cond_frames h w -> the state after each block (or the
        blocks in `layers`, negative indices allowed) at latent frame 0, maps b dim h w. Which
        positions the condition pass holds is the subclass's (`_condition_states`)."""
        self._check("cond_codes", cond_codes, self.cfg.cond_frames)
        depth, (_, h, w) = self.cfg.depth, self.cfg.grid
        layers = list(range(depth) if layers is None else layers)
        if any(not -depth <= i < depth for i in layers):
            raise ValueError(f"layer indices {layers} out of range for depth {depth}")
        layers = [i % depth for i in layers]
        states = dict(zip(sorted(set(layers)), self._condition_states(cond_codes, set(layers))))
        return [rearrange(states[i][:, :h * w], "b (h w) d -> b d h w", h=h, w=w) for i in layers]

    def _check(self, name: str, x: Tensor, t: int) -> None:
        shape = (t, *self.cfg.grid[1:])
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must be b {' '.join(map(str, shape))} (t h w), got {tuple(x.shape)}")

    def forward_features(self, cond_codes: Tensor) -> Tensor:
        """A still image's condition tokens b cond_frames h w -> the last block's state after the
        final LayerNorm at latent frame 0, b dim h w."""
        last = self.forward_intermediates(cond_codes, layers=[-1])[0]
        return self.norm(last.movedim(1, -1)).movedim(-1, 1)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each map `forward_intermediates` returns by default (one per block)."""
        return [self.cfg.dim] * self.cfg.depth


# ---------------------------------------------------------------------------- MAGVIT COMMIT


class MaskedVideoTransformer(_VideoTransformer):
    """Bidirectional masked-token transformer trained with COMMIT's inputs and loss (see the module docstring)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg, vocab=cfg.codebook_size + 1)
        self.mask_id = cfg.codebook_size
        t, h, w = cfg.grid
        self.register_buffer("is_cond", (torch.arange(t) < cfg.cond_frames)[:, None, None].expand(t, h, w).clone(),
                             persistent=False)

    def logits(self, inputs: Tensor, segment: Tensor, cond_codes: Tensor | None = None,
               own: Tensor | None = None) -> Tensor:
        """inputs (codes or mask_id), segment: b t h w -> logits b t h w K. cond_codes (b cond_frames
        h w) is needed by the table prior and the condition input; own (b t' h w, the true future of a
        clip the table was counted on) takes that clip out of the table."""
        t, h, w = self.cfg.grid
        self._check("inputs", inputs, t)
        plane = self._cond_plane(cond_codes)
        x, _ = self._blocks(self._embed(rearrange(inputs, "b t h w -> b (t h w)"),
                                        rearrange(segment, "b t h w -> b (t h w)"), plane=plane))
        own = None if own is None else rearrange(own, "b t h w -> b (t h w)")
        out = self._with_prior(self.head(self.norm(x)), plane, 0, own)
        return rearrange(out, "b (t h w) k -> b t h w k", t=t, h=h, w=w)

    def _pad_cond(self, cond_codes: Tensor) -> Tensor:
        """cond_codes b cond_frames h w -> b t h w, zeros past the condition region (never read there)."""
        self._check("cond_codes", cond_codes, self.cfg.cond_frames)
        t = self.cfg.grid[0]
        return F.pad(cond_codes, (0, 0, 0, 0, 0, t - self.cfg.cond_frames))

    def commit_inputs(self, codes: Tensor, cond_codes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """COMMIT's input: unmasked positions hold the true code, masked positions of the condition
        region hold the condition tokens, other masked positions hold mask_id. segment = 1 where
        the input holds a condition token. Returns (inputs, segment), both b t h w long."""
        self._check("codes", codes, self.cfg.grid[0])
        self._check("mask", mask, self.cfg.grid[0])
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (True = masked), got {mask.dtype}")
        refine = mask & self.is_cond
        inputs = torch.where(refine, self._pad_cond(cond_codes), codes)
        inputs = torch.where(mask & ~self.is_cond, torch.full_like(codes, self.mask_id), inputs)
        return inputs, refine.long()

    def forward(self, codes: Tensor, cond_codes: Tensor, mask: Tensor, *,
                exclude_own: bool = False) -> tuple[Tensor, dict[str, float]]:
        """codes b t h w, cond_codes b cond_frames h w, mask b t h w bool (True = masked) -> (loss, logs).
        exclude_own: the clips were counted into the table prior (training clips): leave them out of it.

        The loss is computed here, not by the caller, so DistributedDataParallel sees it."""
        cfg = self.cfg
        inputs, segment = self.commit_inputs(codes, cond_codes, mask)
        own = codes[:, cfg.cond_frames:] if exclude_own and self.prior is not None else None
        logits = self.logits(inputs, segment, cond_codes, own)
        ce = F.cross_entropy(rearrange(logits, "b t h w k -> b k t h w").float(), codes, reduction="none")
        terms = {}
        for name, where in (("masked", mask & ~self.is_cond), ("refine", mask & self.is_cond), ("recon", ~mask)):
            # mean over the term's positions in the batch; an empty term is 0 (still in the graph, for DDP)
            terms[name] = (ce * where).sum() / where.sum().clamp(min=1)
        loss = (cfg.mask_weight * terms["masked"] + cfg.refine_weight * terms["refine"]
                + cfg.recon_weight * terms["recon"])
        logs = {"loss": loss.item(), **{f"ce_{k}": v.item() for k, v in terms.items()},
                "mask_ratio": mask.float().mean().item()}
        return loss, logs

    def sample_mask(self, batch: int, *, generator: torch.Generator | None = None, device="cpu") -> Tensor:
        """A training mask b t h w: ratio from the cosine schedule, then that many random positions."""
        ratios = sample_mask_ratio(batch, generator, n_tokens=self.cfg.n_tokens, device=device)
        return random_token_mask(batch, self.cfg.grid, ratios, generator)

    def _cond_inputs(self, cond_codes: Tensor) -> tuple[Tensor, Tensor]:
        """The condition region holding the condition tokens (segment 1), every future position masked."""
        pad = self._pad_cond(cond_codes)
        inputs = torch.where(self.is_cond, pad, torch.full_like(pad, self.mask_id))
        return inputs, self.is_cond.long().expand_as(inputs)

    def future_log_probs(self, cond_codes: Tensor) -> Tensor:
        """log p(token) of every future position given only the condition, in one pass: per-token
        marginals, b t' h w K with t' = t - cond_frames."""
        return self.logits(*self._cond_inputs(cond_codes), cond_codes)[:, self.cfg.cond_frames:].float().log_softmax(-1)

    @torch.no_grad()
    def generate(self, cond_codes: Tensor, *, steps: int = 12, temperature: float = 1.0, schedule: str = "cosine",
                 generator: torch.Generator | None = None) -> Tensor:
        """MaskGIT decoding of the future given cond_codes -> codes b t h w (condition region = cond_codes).

        Each step predicts every position, samples the masked ones (categorical at `temperature`,
        via the Gumbel-max trick with `generator`), and keeps the most confident samples, leaving
        floor(n_future * schedule((s + 1) / steps)) masked; confidence = log p(sample) + Gumbel
        noise annealed by (1 - (s + 1) / steps) * temperature (MaskGIT's "choice temperature").
        Fixed tokens are never resampled; after the last step nothing is masked.
        temperature = 0 is greedy (argmax, no noise). Dropout follows the module's mode.
        `decode_steps` yields the same decoding step by step."""
        for step in self.decode_steps(cond_codes, steps=steps, temperature=temperature, schedule=schedule,
                                      generator=generator):
            pass
        return step.codes

    @torch.no_grad()
    def decode_steps(self, cond_codes: Tensor, *, steps: int = 12, temperature: float = 1.0, schedule: str = "cosine",
                     generator: torch.Generator | None = None) -> Iterator[DecodeStep]:
        """`generate`, one DecodeStep per MaskGIT iteration (the same draws: the last step's codes are
        what `generate` returns), for watching a future being decoded."""
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        t, h, w = self.cfg.grid
        grid = "b (t h w) -> b t h w"
        inputs, segment = self._cond_inputs(cond_codes)
        inputs = rearrange(inputs, "b t h w -> b (t h w)")
        unknown = inputs == self.mask_id  # b n, True = still masked
        n_future = self.cfg.n_future
        for s in range(steps):
            progress = (s + 1) / steps
            logits = self.logits(rearrange(inputs, grid, t=t, h=h, w=w), segment, cond_codes)
            logp = rearrange(logits, "b t h w k -> b (t h w) k").float().log_softmax(-1)
            if temperature > 0:
                logp = (logp / temperature).log_softmax(-1)
                sampled = (logp + _gumbel(logp.shape, generator, logp.device)).argmax(-1)
            else:
                sampled = logp.argmax(-1)
            sampled = torch.where(unknown, sampled, inputs)  # never resample a fixed token
            ratio = math.cos(math.pi / 2 * progress) if schedule == "cosine" else 1.0 - progress
            n_masked = min(math.floor(n_future * ratio), int(unknown.sum(1).min()))
            confidence = logp.gather(-1, sampled[..., None])[..., 0]
            if n_masked == 0:
                inputs, unknown = sampled, torch.zeros_like(unknown)
            else:
                noisy = confidence
                if temperature > 0:
                    noisy = confidence + (1 - progress) * temperature * _gumbel(confidence.shape, generator,
                                                                                confidence.device)
                noisy = noisy.masked_fill(~unknown, math.inf)  # fixed / condition: never re-masked
                remask = torch.zeros_like(unknown).scatter_(1, noisy.argsort(1)[:, :n_masked], True)
                inputs = torch.where(remask, torch.full_like(sampled, self.mask_id), sampled)
                unknown = remask
            yield DecodeStep(step=s + 1, of=steps,
                             codes=rearrange(inputs, grid, t=t, h=h, w=w),
                             guess=rearrange(sampled, grid, t=t, h=h, w=w),
                             committed=rearrange(~unknown, grid, t=t, h=h, w=w) & ~self.is_cond,
                             confidence=rearrange(confidence, grid, t=t, h=h, w=w))


    def _condition_states(self, cond_codes: Tensor, keep: set[int]) -> list[Tensor]:
        # the whole grid, the future masked, as in `future_log_probs`
        inputs, segment = self._cond_inputs(cond_codes)
        return self._blocks(self._embed(rearrange(inputs, "b t h w -> b (t h w)"),
                                        rearrange(segment, "b t h w -> b (t h w)"),
                                        plane=self._cond_plane(cond_codes)), keep=keep)[1]


# ---------------------------------------------------------------------------- VideoGPT-style prefix-LM


class ARVideoTransformer(_VideoTransformer):
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


# name -> class: the one place a predictor is chosen by name
PREDICTOR_CLASSES = {"masked": MaskedVideoTransformer, "ar": ARVideoTransformer}
assert tuple(PREDICTOR_CLASSES) == PREDICTORS  # the names config validation lists


def build_predictor(kind: str, cfg: TransformerConfig) -> nn.Module:
    if kind not in PREDICTOR_CLASSES:
        raise ValueError(f"unknown predictor {kind!r}; valid: {', '.join(PREDICTOR_CLASSES)}")
    return PREDICTOR_CLASSES[kind](cfg)


__all__ = [
    "PREDICTORS",
    "ARVideoTransformer",
    "Block",
    "DecodeStep",
    "LayerCache",
    "MaskedVideoTransformer",
    "TransformerConfig",
    "build_predictor",
    "check_compatible",
    "cosine_mask_ratio",
    "random_token_mask",
    "sample_mask_ratio",
]
