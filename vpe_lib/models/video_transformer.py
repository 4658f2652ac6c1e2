"""The trunk both video predictors share (`vpe_lib.models.transformer` describes the two models): the
config, the layers (attention with an optional KV cache, pre-LN blocks, a factorised space-time position
embedding), and `VideoTransformer`: token + segment + position embeddings, the blocks, a head to K logits
(optionally a residual over the code table's), and the states a segmentation head reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vpe_lib.models.code_prior import CodeTablePrior


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


# ---------------------------------------------------------------------------- sampling noise


def _rand(shape, generator: torch.Generator | None, device) -> Tensor:
    """U(0, 1) drawn on the generator's device, then moved: the same seed gives the same draw on CPU and GPU."""
    src = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=src).to(device)


def _gumbel(shape, generator: torch.Generator | None, device) -> Tensor:
    u = _rand(shape, generator, device).clamp_(min=1e-20)  # u in [1e-20, 1): -log(u) in (0, 46]
    return -torch.log(-torch.log(u))



# ---------------------------------------------------------------------------- layers


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


class VideoTransformer(nn.Module):
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
