"""Models: forward shapes, backward, no NaN, determinism — over tiny configs of every model."""

from __future__ import annotations

import math

import pytest
import torch

from vpe_lib.models import (
    ConvHead,
    LinearHead,
    SegmentationModel,
    TokenizerConfig,
    UNet2D,
    VQVAE3D,
    codebook_stats,
)

TOKENIZER_CONFIGS = {
    # 2 levels, temporal + spatial down, no full-resolution blocks
    "smoke": TokenizerConfig.smoke(),
    # 3 levels, spatial-only first step, full-resolution blocks on
    "t-late": TokenizerConfig.smoke(channel_mults=(1, 2, 2), temporal_down=(False, True), spatial_down=(True, True),
                                    full_res_blocks=True, clip_frames=2),
    # no temporal downsampling at all, 2 blocks per level
    "no-t-down": TokenizerConfig.smoke(channel_mults=(1, 1, 2), temporal_down=(False, False),
                                       spatial_down=(True, True), blocks_per_level=2, clip_frames=1),
}
CLIP = (2, 3, 4, 16, 16)


def _video(seed: int = 0, shape=CLIP) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def _tokenizer(cfg: TokenizerConfig, seed: int = 0) -> VQVAE3D:
    torch.manual_seed(seed)
    return VQVAE3D(cfg=cfg)


@pytest.mark.parametrize("name", list(TOKENIZER_CONFIGS))
def test_tokenizer_forward_backward(name):
    cfg = TOKENIZER_CONFIGS[name]
    model = _tokenizer(cfg)
    x = _video()
    out = model(x)
    t, h, w = model.latent_shape(*x.shape[-3:])
    assert out.recon.shape == x.shape
    assert out.codes.shape == (x.shape[0], t, h, w) and out.codes.dtype == torch.long
    assert int(out.codes.max()) < cfg.codebook_size
    for loss in (out.loss, out.recon_loss, out.quant_loss):
        assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.allclose(out.loss, out.recon_loss + out.quant_loss)
    out.loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
    # encode / decode agree with forward's shapes
    zq, codes, aux = model.encode(x)
    assert zq.shape == (x.shape[0], cfg.embed_dim, t, h, w)
    assert model.decode(zq).shape == x.shape


@pytest.mark.parametrize("name", list(TOKENIZER_CONFIGS))
def test_tokenizer_deterministic(name):
    cfg = TOKENIZER_CONFIGS[name]
    outs = []
    for _ in range(2):
        model = _tokenizer(cfg, seed=3)
        torch.manual_seed(4)  # k-means init of the codebook samples from the global RNG
        outs.append(model(_video(1)))
    assert torch.equal(outs[0].recon, outs[1].recon)
    assert torch.equal(outs[0].codes, outs[1].codes)


@pytest.mark.parametrize("name", list(TOKENIZER_CONFIGS))
def test_tokenizer_still_image_features(name):
    cfg = TOKENIZER_CONFIGS[name]
    model = _tokenizer(cfg).eval()
    images = _video()[:, :, 0]  # b c h w
    feats = model.forward_features(images)
    _, h, w = model.latent_shape(cfg.clip_frames, 16, 16)
    assert feats.shape == (2, cfg.embed_dim, h, w)
    inter = model.forward_intermediates(images)
    assert [f.shape[1] for f in inter] == model.feature_channels
    assert inter[0].shape[-2:] == (16, 16) and inter[-1].shape[-2:] == (h, w)
    assert all(f.ndim == 4 and torch.isfinite(f).all() for f in inter)
    assert torch.allclose(inter[-1], feats, atol=1e-6)


def test_tokenizer_codes_roundtrip():
    model = _tokenizer(TOKENIZER_CONFIGS["smoke"])
    x = _video()
    model(x)  # k-means init
    model.eval()
    zq, codes, _ = model.encode(x)
    assert torch.allclose(model.codes_to_latent(codes), zq, atol=1e-6)
    assert model.decode_codes(codes).shape == x.shape


def test_tokenizer_channels_last_matches():
    cfg = TOKENIZER_CONFIGS["t-late"]
    x = _video()
    ref = _tokenizer(cfg)
    fast = _tokenizer(cfg).channels_last_()
    torch.manual_seed(0)
    a = ref(x)
    torch.manual_seed(0)
    b = fast(x)
    assert torch.equal(a.codes, b.codes)
    assert torch.allclose(a.recon, b.recon, atol=1e-5)
    b.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters())
    assert torch.allclose(ref.eval().forward_features(x[:, :, 0]), fast.eval().forward_features(x[:, :, 0]), atol=1e-5)


def test_latent_shape():
    cfg = TokenizerConfig(base_channels=8, embed_dim=8, codebook_size=16)  # BAIR layout
    model = VQVAE3D(cfg=cfg)
    assert model.latent_shape(16, 64, 64) == (4, 16, 16)
    with pytest.raises(ValueError):
        model.latent_shape(15, 64, 64)


@pytest.mark.parametrize(
    "field, value",
    [
        ("base_channels", 0),
        ("channel_mults", ()),
        ("temporal_down", (True,)),
        ("spatial_down", (True, True, True)),
        ("blocks_per_level", -1),
        ("embed_dim", 0),
        ("codebook_size", 1),
        ("quantizer", "lfq"),
        ("commitment_weight", -1.0),
        ("clip_frames", 6),  # not divisible by the temporal factor 4
    ],
)
def test_bad_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        TokenizerConfig(**{field: value})


def test_config_accepts_lists():
    cfg = TokenizerConfig(channel_mults=[1, 2], temporal_down=[True], spatial_down=[True], clip_frames=2)
    assert cfg.channel_mults == (1, 2) and hash(cfg)


def test_codebook_stats():
    codes = torch.tensor([[0, 0], [1, 1]])
    s = codebook_stats(codes, 4)
    assert s["utilisation"] == 0.5
    assert s["dead_codes"] == 2
    assert math.isclose(s["perplexity"], 2.0, rel_tol=1e-9)
    s = codebook_stats(torch.arange(8), 8)
    assert s["utilisation"] == 1.0 and s["dead_codes"] == 0 and math.isclose(s["perplexity"], 8.0, rel_tol=1e-9)
    assert codebook_stats(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == 1.0


@pytest.mark.parametrize("base, depth", [(8, 2), (8, 3)])
def test_unet(base, depth):
    torch.manual_seed(0)
    model = UNet2D(in_channels=3, n_classes=3, base_channels=base, depth=depth)
    x = _video()[:, :, 0]
    y = model(x)
    assert y.shape == (2, 3, 16, 16) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.manual_seed(0)
    again = UNet2D(in_channels=3, n_classes=3, base_channels=base, depth=depth)
    assert torch.equal(again(x), y.detach())
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 10, 10))


def _encoders():
    return {
        "tokenizer": _tokenizer(TOKENIZER_CONFIGS["t-late"]),
        "unet": UNet2D(base_channels=8, depth=2),
    }


@pytest.mark.parametrize("encoder_name", ["tokenizer", "unet"])
@pytest.mark.parametrize("head_name", ["linear", "conv"])
def test_heads(encoder_name, head_name):
    torch.manual_seed(0)
    encoder = _encoders()[encoder_name]
    if head_name == "linear":
        head = LinearHead(in_channels=encoder.feature_channels[-1], n_classes=2)
    else:
        head = ConvHead(in_channels=encoder.feature_channels, n_classes=2, hidden=16)
    model = SegmentationModel(encoder, head, frozen=False)
    x = _video()[:, :, 0]
    y = model(x)
    assert y.shape == (2, 2, 16, 16) and torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    # the single-map path works too
    single = SegmentationModel(encoder, LinearHead(in_channels=encoder.feature_channels[-1], n_classes=2),
                               use_intermediates=False)
    assert single(x).shape == (2, 2, 16, 16)


def test_frozen_segmentation_model_leaves_encoder_alone():
    torch.manual_seed(0)
    encoder = _tokenizer(TOKENIZER_CONFIGS["smoke"])
    head = ConvHead(in_channels=encoder.feature_channels, n_classes=2, hidden=16)
    model = SegmentationModel(encoder, head, frozen=True)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = [p.detach().clone() for p in head.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    assert not encoder.training and head.training
    x = _video()[:, :, 0]
    target = (x[:, 0] > 0).long()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    opt.step()
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(head.parameters(), head_before))
    assert len(model.trainable_parameters()) == len(list(head.parameters()))
