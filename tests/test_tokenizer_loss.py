"""The tokenizer objective: reconstruction terms, SSIM, and the one-backward GAN split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vpe_lib.config import ConfigError, get_config
from vpe_lib.models import TokenizerConfig, VQVAE3D
from vpe_lib.models.discriminator import Discriminator3D, DiscriminatorConfig
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig, TokenizerTrainer, tokenizer_state_dict

SMALL_D = DiscriminatorConfig(base_channels=4, channel_mults=(1, 2))


def fsq_tokenizer(seed: int = 0) -> VQVAE3D:
    # FSQ has no codebook state, so two forward passes of the same weights give the same output
    torch.manual_seed(seed)
    return VQVAE3D(cfg=TokenizerConfig.smoke(quantizer="fsq", codebook_size=27, fsq_levels=(3, 3, 3)))


def video(seed: int = 0, b: int = 2, t: int = 4) -> torch.Tensor:
    return torch.rand(b, 3, t, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_default_objective_is_the_tokenizers_own_loss():
    tok = fsq_tokenizer()
    trainer = TokenizerTrainer(tok)
    x = video()
    loss, logs = trainer(x)
    assert torch.allclose(loss, tok(x).loss)
    assert {"l1", "l2", "recon_loss", "quant_loss"} <= logs.keys()
    assert trainer.discriminator is None


def test_ssim_term_adds_one_minus_ssim_and_backprops():
    x = video()
    plain, _ = TokenizerTrainer(fsq_tokenizer())(x)
    trainer = TokenizerTrainer(fsq_tokenizer(), TokenizerLossConfig(ssim_weight=2.0))
    loss, logs = trainer(x)
    assert -1 <= logs["ssim"] <= 1
    assert loss.item() == pytest.approx(plain.item() + 2.0 * (1 - logs["ssim"]), rel=1e-5)
    loss.backward()
    grads = [p.grad for p in trainer.tokenizer.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("t", [4, 5, 16])
def test_discriminator_shapes_and_backward(t):
    d = Discriminator3D(SMALL_D)
    x = video(t=t).requires_grad_(True)
    logits = d(x)
    assert logits.shape == (2,)
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_each_network_gets_only_its_own_gradients():
    """One backward of the combined loss == separate backwards of the generator's and the
    discriminator's losses (R1 and LeCam off to keep the reference short)."""
    cfg = TokenizerLossConfig(adversarial=True, adversarial_weight=0.3, r1_weight=0.0, lecam_weight=0.0,
                              discriminator=SMALL_D)
    x = video()
    torch.manual_seed(1)
    trainer = TokenizerTrainer(fsq_tokenizer(), cfg)
    loss, logs = trainer(x)
    loss.backward()

    tok, disc = trainer.tokenizer, trainer.discriminator
    ref_tok, ref_disc = fsq_tokenizer(), Discriminator3D(SMALL_D)
    ref_tok.load_state_dict(tok.state_dict())
    ref_disc.load_state_dict(disc.state_dict())
    out = ref_tok(x)
    g_loss = out.recon_loss + out.quant_loss + 0.3 * F.softplus(-ref_disc(out.recon)).mean()
    g_grads = torch.autograd.grad(g_loss, list(ref_tok.parameters()), allow_unused=True)
    d_loss = F.softplus(-ref_disc(x)).mean() + F.softplus(ref_disc(out.recon.detach())).mean()
    d_grads = torch.autograd.grad(d_loss, list(ref_disc.parameters()))

    for p, g in zip(tok.parameters(), g_grads):
        if g is None:
            assert p.grad is None or not p.grad.any()
        else:
            assert torch.allclose(p.grad, g, atol=1e-6, rtol=1e-4)
    for p, g in zip(disc.parameters(), d_grads):
        assert torch.allclose(p.grad, g, atol=1e-6, rtol=1e-4)
    assert logs["d_loss"] == pytest.approx(d_loss.item(), rel=1e-5)


def test_r1_and_lecam_are_finite_and_lecam_anchors_move():
    cfg = TokenizerLossConfig(adversarial=True, lecam_decay=0.5, discriminator=SMALL_D)
    trainer = TokenizerTrainer(fsq_tokenizer(), cfg)
    loss, logs = trainer(video())
    loss.backward()
    assert torch.isfinite(loss) and logs["r1"] > 0 and logs["lecam"] >= 0
    assert trainer.lecam_real.item() == pytest.approx(0.5 * logs["d_real"], rel=1e-5)
    assert trainer.lecam_fake.item() == pytest.approx(0.5 * logs["d_fake"], rel=1e-5)
    assert all(torch.isfinite(p.grad).all() for p in trainer.discriminator.parameters())


def test_adversarial_start_step_counts_updates():
    cfg = TokenizerLossConfig(adversarial=True, adversarial_start_step=2, discriminator=SMALL_D)
    trainer = TokenizerTrainer(fsq_tokenizer(), cfg, grad_accum=2)
    seen = []
    for i in range(6):  # micro-batches 0..5 = updates 0, 0, 1, 1, 2, 2
        _, logs = trainer(video(i))
        seen.append("d_loss" in logs)
    assert seen == [False, False, False, False, True, True]
    trainer.eval()
    _, logs = trainer(video())  # evaluation: no adversarial terms, no counting
    assert "d_loss" not in logs and int(trainer.micro_steps) == 6
    trainer.train()
    trainer.micro_steps.zero_()
    trainer(video())[0].backward()  # idle discriminator: zero (not missing) gradients
    assert all(p.grad is not None and not p.grad.any() for p in trainer.discriminator.parameters())


def test_tokenizer_state_dict_extracts_the_tokenizer():
    trainer = TokenizerTrainer(fsq_tokenizer(), TokenizerLossConfig(adversarial=True, discriminator=SMALL_D))
    state = tokenizer_state_dict(trainer.state_dict())
    fresh = fsq_tokenizer(seed=5)
    fresh.load_state_dict(state)  # strict: exactly the tokenizer's keys
    assert tokenizer_state_dict(fresh.state_dict()).keys() == fresh.state_dict().keys()


@pytest.mark.parametrize("kw, name", [
    (dict(ssim_weight=-1.0), "ssim_weight"),
    (dict(lecam_decay=1.0), "lecam_decay"),
    (dict(adversarial_start_step=-1), "adversarial_start_step"),
    (dict(l1_weight=0.0, l2_weight=0.0), "l1_weight"),
    (dict(adversarial="yes"), "adversarial"),
])
def test_bad_loss_config_names_field(kw, name):
    with pytest.raises(ValueError, match=name):
        TokenizerLossConfig(**kw)


def test_loss_config_through_run_config():
    cfg = get_config("smoke", {"pretrain.loss.adversarial": True, "pretrain.loss.discriminator.base_channels": 8})
    assert cfg.pretrain.loss.adversarial and cfg.pretrain.loss.discriminator.base_channels == 8
    assert not get_config("cpu").pretrain.loss.adversarial  # off in the CPU profiles
    with pytest.raises(ConfigError, match="gan_weight"):
        get_config("smoke", {"pretrain.loss.gan_weight": 1.0})

