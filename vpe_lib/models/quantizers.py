"""Quantizers of the tokenizer, all behind one interface: ``forward(z b d t h w) -> (z_q, codes
b t h w long, aux loss, info dict)`` and ``codes_to_latent``. See ``vpe_lib.models.tokenizer``'s
docstring for what each does; ``build_quantizer`` picks one from a ``TokenizerConfig``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, LFQ, VectorQuantize

from vpe_lib.models.norms import group_norm

if TYPE_CHECKING:  # only its type is needed here
    from vpe_lib.models.tokenizer_config import TokenizerConfig


def build_quantizer(cfg: TokenizerConfig) -> nn.Module:
    """The quantizer named by cfg.quantizer (QUANTIZER_BUILDERS: the one place one is chosen by name)."""
    if cfg.quantizer not in QUANTIZER_BUILDERS:
        raise ValueError(f"unknown quantizer {cfg.quantizer!r}; valid: {', '.join(QUANTIZER_BUILDERS)}")
    return QUANTIZER_BUILDERS[cfg.quantizer](cfg)


def _vector_quantizer(cfg: TokenizerConfig) -> nn.Module:
    return VectorQuantize(
        dim=cfg.embed_dim,
        codebook_size=cfg.codebook_size,
        decay=0.99,
        kmeans_init=True,  # first training batch initialises the codebook by k-means
        kmeans_iters=10,
        threshold_ema_dead_code=2,  # codes with EMA count < 2 are re-seeded from the batch
        commitment_weight=cfg.commitment_weight,
        # The library defaults to the rotation trick; an EMA codebook wants the plain
        # straight-through estimator, so set it explicitly.
        rotation_trick=False,
        accept_image_fmap=False,
        # sync_codebook is left to the library: it syncs the EMA codebook across ranks when
        # the model is built after torch.distributed.init_process_group (vpe_lib.train.distributed).
    )


class _ScalarQuantizer(nn.Module):
    """Shared shell of lfq / fsq: 1×1×1 conv embed_dim -> q channels -> [norm] -> quantize each
    channel -> 1×1×1 conv back to embed_dim. Returns what VQVAE3D._quantize returns."""

    def __init__(self, cfg: TokenizerConfig, q_dim: int, norm: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.q_dim = q_dim
        self.project_in = nn.Conv3d(cfg.embed_dim, q_dim, 1)
        self.norm = norm
        self.project_out = nn.Conv3d(q_dim, cfg.embed_dim, 1)

    def _grid(self, z: Tensor) -> tuple[Tensor, dict]:
        """b d t h w -> (normalised projection as b (t h w) q, shape kwargs to undo it)."""
        x = self.norm(self.project_in(z))
        _, _, t, h, w = x.shape
        return rearrange(x, "b q t h w -> b (t h w) q"), dict(t=t, h=h, w=w)

    def _out(self, q: Tensor, codes: Tensor, shape: dict) -> tuple[Tensor, Tensor]:
        q = rearrange(q, "b (t h w) q -> b q t h w", **shape)
        codes = rearrange(codes.long(), "b (t h w) -> b t h w", **shape)
        return self.project_out(q), codes

    def _bits(self, codes: Tensor) -> Tensor:  # b n -> b n q
        raise NotImplementedError

    def codes_to_latent(self, codes: Tensor) -> Tensor:
        """codes b t h w -> z_q b embed_dim t h w."""
        b, t, h, w = codes.shape
        q = self._bits(rearrange(codes.long(), "b t h w -> b (t h w)"))
        return self.project_out(rearrange(q, "b (t h w) q -> b q t h w", t=t, h=h, w=w))


class LookupFreeQuantizer(_ScalarQuantizer):
    """LFQ on log2(codebook_size) channels behind a non-affine GroupNorm (see the module docstring).

    The library's LFQ quantizes (sign, straight-through, bit indices); the entropy and commitment
    losses are computed here with the library's formula, because its multi-process path is wrong
    in vector-quantize-pytorch 1.32: ``maybe_distributed_mean`` drops the result of
    ``torch.distributed.nn.all_reduce`` (which returns a new tensor), so under DDP each rank would
    use its local code distribution divided by the world size. Here the distribution is averaged
    over ranks with gradients flowing back, so W ranks train exactly as one process with the
    global batch (tests/test_distributed.py). The library still computes its own, zero-weighted
    entropy (one more tokens × codebook_size softmax, and under DDP one small wasted all_reduce):
    negligible next to the encoder's convolutions.
    """

    inv_temperature = 100.0  # the library's default: softmax over -distance * 100

    def __init__(self, cfg: TokenizerConfig):
        bits = int(math.log2(cfg.codebook_size))
        super().__init__(cfg, bits, group_norm(bits, cfg.groups, affine=False, per_frame=cfg.causal))
        self.lfq = LFQ(
            dim=bits,
            codebook_size=cfg.codebook_size,
            entropy_loss_weight=0.0,  # computed in forward (see the class docstring)
            commitment_loss_weight=0.0,
            has_projections=False,  # we project with 1×1×1 convs around the norm ourselves
            num_codebooks=1,
            # spell out the options that change the quantizer (there is no rotation_trick here):
            spherical=False,
            orthogonal_rotation=False,
            experimental_softplus_entropy_loss=False,
            frac_per_sample_entropy=1.0,
            channel_first=False,
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        x, shape = self._grid(z)
        q, codes, _ = self.lfq(x)  # q: ±1 (straight-through in training), codes: b n
        commitment = self.cfg.commitment_weight * F.mse_loss(x, q.detach())
        info = {"commitment": commitment.detach()}
        loss = commitment  # eval: the entropy is a batch statistic of training, as in the library
        if self.training:
            per_sample, codebook = self.entropies(x)
            entropy_aux = self.cfg.entropy_loss_weight * (per_sample - self.cfg.diversity_gamma * codebook)
            loss = loss + entropy_aux
            info.update(per_sample_entropy=per_sample.detach(), codebook_entropy=codebook.detach(),
                        entropy_aux=entropy_aux.detach())
        zq, codes = self._out(q, codes, shape)
        return zq, codes, loss, info

    def entropies(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: b n bits (pre-quantization) -> (mean per-token entropy of the soft code assignment,
        entropy of the code distribution averaged over the batch, over all ranks if distributed)."""
        x = rearrange(x.float(), "b n d -> (b n) d")
        logits = 2 * self.inv_temperature * x @ self.lfq.codebook.float().t()  # = -distance * inv_temp
        prob = logits.softmax(dim=-1)
        per_sample = _entropy(prob).mean()
        avg_prob = _mean_over_ranks(prob.mean(dim=0))
        return per_sample, _entropy(avg_prob)

    def _bits(self, codes: Tensor) -> Tensor:
        return self.lfq.indices_to_codes(codes, project_out=False)


def _entropy(prob: Tensor) -> Tensor:
    return (-prob * prob.clamp(min=1e-5).log()).sum(dim=-1)  # the library's eps


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of each rank's input is the sum of the
    gradients of every rank's output."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def _mean_over_ranks(t: Tensor) -> Tensor:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    return _AllReduceSum.apply(t) / dist.get_world_size()


class FiniteScalarQuantizer(_ScalarQuantizer):
    """FSQ on len(fsq_levels) channels (tanh-bounded, rounded); no aux loss."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__(cfg, len(cfg.fsq_levels), nn.Identity())
        self.fsq = FSQ(levels=list(cfg.fsq_levels), dim=len(cfg.fsq_levels), orthogonal_rotation=False,
                       preserve_symmetry=False, noise_dropout=0.0, channel_first=False)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        x, shape = self._grid(z)
        q, codes = self.fsq(x)
        zq, codes = self._out(q, codes, shape)
        return zq, codes, z.new_zeros(()), {}

    def _bits(self, codes: Tensor) -> Tensor:
        return self.fsq.indices_to_codes(codes)


# ---------------------------------------------------------------------------- diagnostics


def codebook_stats(codes: Tensor, codebook_size: int) -> dict[str, float]:
    """Usage of a codebook in a sample of codes.

    utilisation: fraction of codes used at least once; perplexity: exp(entropy) of the
    empirical code distribution (= codebook_size when uniform, 1 when collapsed);
    dead_codes: codes never used in this sample.
    """
    counts = torch.bincount(codes.detach().flatten().long().cpu(), minlength=codebook_size).double()
    if counts.numel() > codebook_size:
        raise ValueError(f"codes contain values >= codebook_size ({codebook_size})")
    total = counts.sum()
    if total == 0:
        return {"utilisation": 0.0, "perplexity": 0.0, "dead_codes": codebook_size}
    p = counts[counts > 0] / total
    used = int((counts > 0).sum())
    return {
        "utilisation": used / codebook_size,
        "perplexity": float(torch.exp(-(p * p.log()).sum())),
        "dead_codes": codebook_size - used,
    }


# name -> builder(cfg)
QUANTIZER_BUILDERS = {"vq": _vector_quantizer, "lfq": LookupFreeQuantizer, "fsq": FiniteScalarQuantizer}
