"""MAGVIT's COMMIT (`vpe_lib.models.transformer` describes it beside the AR model): a bidirectional transformer
over a clip with a random subset of positions masked, the condition embedded in its own frames, and MaskGIT's
iterative decoding (`generate`, and `decode_steps` one iteration at a time for the explorer)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vpe_lib.models.video_transformer import TransformerConfig, VideoTransformer, _gumbel, _rand

SCHEDULES = ("cosine", "linear")


# ---------------------------------------------------------------------------- masking (COMMIT / MaskGIT)


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


class MaskedVideoTransformer(VideoTransformer):
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
