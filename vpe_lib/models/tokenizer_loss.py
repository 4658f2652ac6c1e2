"""The tokenizer's training objective: reconstruction (L1 / L2 / SSIM) + quantizer loss, and
optionally MAGVIT's adversarial term (3D discriminator, R1 penalty, LeCam regularisation).

``TokenizerTrainer`` wraps a ``VQVAE3D`` with what only training needs (discriminator, LeCam
EMAs, an update counter) and returns ``(loss, logs)``, so the generic loop trains generator and
discriminator with *one* optimiser and *one* backward pass: the generator's adversarial term
calls the discriminator with detached parameters (``torch.func.functional_call``), and the
discriminator's terms see the reconstruction detached. Each network therefore gets exactly the
gradients of its own loss, and gradient clipping, accumulation, EMA, AMP, DDP and exact resume
come from ``vpe_lib.train.loop`` unchanged (the step counter and EMAs are buffers, so they are in
every checkpoint). The tokenizer alone is ``trainer.tokenizer``; ``tokenizer_state_dict``
extracts its weights from a saved trainer.

No perceptual loss: its network (VGG / I3D) would have to be downloaded, which neither this
machine nor offline clusters can do, and a randomly initialised one would be a fake.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.func import functional_call

from vpe_lib.models.ssim import ssim_tensor
from vpe_lib.models.discriminator import Discriminator3D, DiscriminatorConfig
from vpe_lib.models.tokenizer import VQVAE3D


@dataclass(frozen=True)
class TokenizerLossConfig:
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    ssim_weight: float = 0.0  # weight of (1 - SSIM) over frames; 0 = off
    adversarial: bool = False  # off in the CPU profiles: it doubles the cost of a step
    adversarial_weight: float = 0.1  # generator's non-saturating GAN loss (MAGVIT: 0.1)
    # generator and discriminator both start at this update (VQGAN / MAGVIT: after the
    # autoencoder has learnt to reconstruct, so the discriminator has something to judge)
    adversarial_start_step: int = 0
    r1_weight: float = 10.0  # R1 gradient penalty on real clips (MAGVIT: 10)
    lecam_weight: float = 0.001  # LeCam regularisation (MAGVIT: 0.001)
    lecam_decay: float = 0.999  # EMA decay of the discriminator's mean outputs LeCam anchors to
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        for name in ("l1_weight", "l2_weight", "ssim_weight", "adversarial_weight", "r1_weight", "lecam_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"loss.{name} must be a number >= 0, got {v!r}")
        if not 0 <= self.lecam_decay < 1:
            raise ValueError(f"loss.lecam_decay must be in [0, 1), got {self.lecam_decay!r}")
        if not isinstance(self.adversarial, bool):
            raise ValueError(f"loss.adversarial must be a bool, got {self.adversarial!r}")
        if not isinstance(self.adversarial_start_step, int) or self.adversarial_start_step < 0:
            raise ValueError(f"loss.adversarial_start_step must be an int >= 0, got {self.adversarial_start_step!r}")
        if self.l1_weight == self.l2_weight == self.ssim_weight == 0:
            raise ValueError("loss: at least one of l1_weight, l2_weight, ssim_weight must be > 0")
        if isinstance(self.discriminator, dict):
            object.__setattr__(self, "discriminator", DiscriminatorConfig(**self.discriminator))


class TokenizerTrainer(nn.Module):
    def __init__(self, tokenizer: VQVAE3D, cfg: TokenizerLossConfig = TokenizerLossConfig(), *, grad_accum: int = 1):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.grad_accum = grad_accum  # micro-batches per update, to count updates for adversarial_start_step
        self.discriminator = Discriminator3D(cfg.discriminator, tokenizer.cfg.in_channels) if cfg.adversarial else None
        self.register_buffer("micro_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("lecam_real", torch.zeros(()))
        self.register_buffer("lecam_fake", torch.zeros(()))

    def reconstruction_loss(self, recon: Tensor, video: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        l1, l2 = F.l1_loss(recon, video), F.mse_loss(recon, video)
        loss = c.l1_weight * l1 + c.l2_weight * l2
        logs = {"l1": l1.item(), "l2": l2.item()}
        if c.ssim_weight:
            frames = lambda v: rearrange(v, "b c t h w -> (b t) c h w")  # noqa: E731
            s = ssim_tensor(frames(recon), frames(video))
            loss = loss + c.ssim_weight * (1 - s)
            logs["ssim"] = s.item()
        return loss, logs

    def adversarial_losses(self, recon: Tensor, video: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Generator + discriminator terms; each network gets gradients of its own part only."""
        c, disc = self.cfg, self.discriminator
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        g_logits = functional_call(disc, frozen, (recon,))
        g_loss = F.softplus(-g_logits).mean()  # non-saturating

        real = video.detach().requires_grad_(True)
        d_real, d_fake = disc(real), disc(recon.detach())
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        # LeCam (Tseng et al. 2021): keep D's outputs near the running means of the other side
        lecam = F.relu(d_real - self.lecam_fake).pow(2).mean() + F.relu(self.lecam_real - d_fake).pow(2).mean()
        with torch.no_grad():
            # means over the global batch, so every rank keeps the anchors one process would
            means = _mean_over_ranks(torch.stack([d_real.mean(), d_fake.mean()]))
            self.lecam_real.lerp_(means[0], 1 - c.lecam_decay)
            self.lecam_fake.lerp_(means[1], 1 - c.lecam_decay)
        loss = c.adversarial_weight * g_loss + d_loss + 0.5 * c.r1_weight * r1 + c.lecam_weight * lecam
        logs = {"g_adv": g_loss.item(), "d_loss": d_loss.item(), "r1": r1.item(), "lecam": lecam.item(),
                "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
        return loss, logs

    def forward(self, video: Tensor) -> tuple[Tensor, dict[str, float]]:
        out = self.tokenizer(video)
        recon_loss, logs = self.reconstruction_loss(out.recon, video)
        loss = recon_loss + out.quant_loss
        logs.update(recon_loss=recon_loss.item(), quant_loss=float(out.quant_loss.detach()))
        for k, v in (out.quant_info or {}).items():
            logs[f"quant/{k}"] = float(v)
        if self.training:
            update = int(self.micro_steps) // self.grad_accum
            if self.discriminator is not None and update >= self.cfg.adversarial_start_step:
                adv_loss, adv_logs = self.adversarial_losses(out.recon, video)
                loss = loss + adv_loss
                logs.update(adv_logs)
            elif self.discriminator is not None:
                # before the start step the discriminator is idle: give its parameters zero
                # gradients so DDP (which insists every parameter takes part) and one process agree
                loss = loss + 0.0 * sum(p.sum() for p in self.discriminator.parameters())
            self.micro_steps += 1
        return loss, logs


def _mean_over_ranks(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def tokenizer_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The VQVAE3D weights from a saved TokenizerTrainer (or a bare VQVAE3D) state dict."""
    prefix = "tokenizer."
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
