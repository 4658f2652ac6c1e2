"""Models: forward shapes, backward, no NaN, determinism — over tiny configs of every model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from einops import repeat

from vpe_lib.models import (
    PixelEncoder,
    SegmentationModel,
    TokenizerEncoder,
    TokenizerConfig,
    UNet2D,
    VQVAE3D,
    build_head,
    codebook_stats,
)
from vpe_lib.models.encoders import select_levels
from vpe_lib.models.heads import HEADS

TOKENIZER_CONFIGS = {
    # 2 levels, temporal + spatial down, no full-resolution blocks
    "smoke": TokenizerConfig.smoke(),
    # 3 levels, spatial-only first step, full-resolution blocks on
    "t-late": TokenizerConfig.smoke(channel_mults=(1, 2, 2), temporal_down=(False, True), spatial_down=(True, True),
                                    full_res_blocks=True, clip_frames=2),
    # no temporal downsampling at all, 2 blocks per level
    "no-t-down": TokenizerConfig.smoke(channel_mults=(1, 1, 2), temporal_down=(False, False),
                                       spatial_down=(True, True), blocks_per_level=2, clip_frames=1),
    # strided conv down / transposed conv up, with a level that only downsamples time
    "strided": TokenizerConfig.smoke(channel_mults=(1, 2, 2), temporal_down=(True, False), spatial_down=(True, True),
                                     resample="strided"),
}
CAUSAL = TokenizerConfig.smoke(causal=True)  # MAGVIT-v2: a still image is a valid one-frame video
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


QUANTIZER_CONFIGS = {
    "vq": TokenizerConfig.smoke(quantizer="vq"),
    "lfq": TokenizerConfig.smoke(quantizer="lfq"),  # 32 codes = 5 bits
    "fsq": TokenizerConfig.smoke(quantizer="fsq", fsq_levels=(8, 4)),  # 32 codes
}


@pytest.mark.parametrize("quantizer", list(QUANTIZER_CONFIGS))
def test_quantizers(quantizer):
    """Every quantizer: shapes, finite backward into every parameter, codes in [0, K), the
    codes -> latent -> recon round trip, still-image features and codebook_stats."""
    cfg = QUANTIZER_CONFIGS[quantizer]
    model = _tokenizer(cfg)
    x = _video()
    t, h, w = model.latent_shape(*x.shape[-3:])
    out = model(x)
    assert out.recon.shape == x.shape
    assert out.codes.shape == (2, t, h, w) and out.codes.dtype == torch.long
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < cfg.codebook_size
    for loss in (out.loss, out.recon_loss, out.quant_loss):
        assert loss.ndim == 0 and torch.isfinite(loss)  # lfq's quant_loss is typically < 0
    assert torch.allclose(out.loss, out.recon_loss + out.quant_loss)
    assert all(v.ndim == 0 and torch.isfinite(v) and not v.requires_grad for v in out.quant_info.values())
    if quantizer == "lfq":
        info = out.quant_info
        assert {"per_sample_entropy", "codebook_entropy", "entropy_aux", "commitment"} <= set(info)
        assert torch.allclose(info["entropy_aux"] + info["commitment"], out.quant_loss.detach(), atol=1e-6)
    out.loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n

    model.eval()
    with torch.no_grad():
        ref = model(x)
        zq, codes, aux = model.encode(x)
        assert zq.shape == (2, cfg.embed_dim, t, h, w) and torch.equal(codes, ref.codes)
        assert aux.ndim == 0 and torch.isfinite(aux) and aux >= 0  # eval: commitment only (0 for fsq)
        latent = model.codes_to_latent(codes)
        assert latent.shape == zq.shape
        assert torch.allclose(latent, zq, atol=1e-5)
        assert torch.allclose(model.decode_codes(codes), ref.recon, atol=1e-5)
        feats = model.forward_features(x[:, :, 0])
        inter = model.forward_intermediates(x[:, :, 0])
    assert feats.shape == (2, cfg.embed_dim, h, w) and torch.allclose(inter[-1], feats, atol=1e-6)
    stats = codebook_stats(codes, cfg.codebook_size)
    assert 0 < stats["utilisation"] <= 1 and stats["perplexity"] >= 1
    if quantizer == "vq":
        assert model.ema_cluster_size.shape == (cfg.codebook_size,)
    else:
        assert not hasattr(model, "ema_cluster_size")


def test_lfq_losses_match_library():
    """Our LFQ entropy / commitment losses (computed outside the library for its DDP bug) are the
    library's formula: same codes and loss as vector_quantize_pytorch.LFQ on one process."""
    from vector_quantize_pytorch import LFQ

    cfg = QUANTIZER_CONFIGS["lfq"]
    model = _tokenizer(cfg).train()
    z = torch.randn(2, cfg.embed_dim, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    zq, codes, loss, info = model.quantizer(z)
    x, _ = model.quantizer._grid(z)
    ref = LFQ(dim=5, codebook_size=32, entropy_loss_weight=cfg.entropy_loss_weight,
              diversity_gamma=cfg.diversity_gamma, commitment_loss_weight=cfg.commitment_weight).train()
    (_, ref_codes, ref_loss), parts = ref(x, return_loss_breakdown=True)
    assert torch.equal(codes.flatten(1), ref_codes.long())
    assert torch.allclose(loss, ref_loss, atol=1e-6)
    assert torch.allclose(info["codebook_entropy"], parts.batch_entropy, atol=1e-6)
    assert torch.allclose(info["per_sample_entropy"], parts.per_sample_entropy, atol=1e-6)


def test_quantizer_state_dict_keys_unchanged_for_vq():
    """Checkpoints of the vq tokenizer written before lfq/fsq existed still load."""
    keys = set(_tokenizer(QUANTIZER_CONFIGS["vq"]).state_dict())
    assert "quantizer._codebook.embed" in keys and "quantizer._codebook.cluster_size" in keys
    assert not any("project_in" in k for k in keys)


CAUSAL = TokenizerConfig.smoke(channel_mults=(1, 2, 2), temporal_down=(True, True), spatial_down=(True, True),
                               causal=True, quantizer="fsq", fsq_levels=(8, 4))  # temporal factor 4


@pytest.mark.parametrize("t", [1, 5, 9])
def test_causal_shapes(t):
    model = _tokenizer(CAUSAL)
    x = _video(shape=(2, 3, t, 16, 16))
    out = model(x)
    assert model.latent_shape(t, 16, 16) == (1 + (t - 1) // 4, 4, 4)
    assert out.recon.shape == x.shape and out.codes.shape == (2, 1 + (t - 1) // 4, 4, 4)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError):
        model.latent_shape(8, 16, 16)


def test_causal_future_frames_do_not_change_past_latents():
    model = _tokenizer(CAUSAL).eval()
    x = _video(shape=(1, 3, 9, 16, 16))  # latent frame j sees input frames <= 4j
    with torch.no_grad():
        z = model.encode_continuous(x)
        codes = model.encode(x)[1]
        future = x.clone()
        future[:, :, 5:] = _video(7, shape=(1, 3, 4, 16, 16))
        z_future = model.encode_continuous(future)
        assert torch.equal(z_future[:, :, :2], z[:, :, :2]) and not torch.equal(z_future[:, :, 2], z[:, :, 2])
        assert torch.equal(model.encode(future)[1][:, :2], codes[:, :2])
        all_but_first = x.clone()
        all_but_first[:, :, 1:] = 0
        assert torch.equal(model.encode_continuous(all_but_first)[:, :, 0], z[:, :, 0])
        # the decoder is causal too: recon of frame 0 depends on latent frame 0 only
        assert torch.equal(model(all_but_first).recon[:, :, 0], model(x).recon[:, :, 0])
        # a still image is encoded alone (t = 1), and that is the first latent frame of any clip
        feats = model.forward_features(x[:, :, 0])
        inter = model.forward_intermediates(x[:, :, 0])
    assert feats.shape == (1, CAUSAL.embed_dim, 4, 4) and torch.equal(feats, z[:, :, 0])
    assert [f.shape[1] for f in inter] == model.feature_channels and torch.allclose(inter[-1], feats)


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
        ("quantizer", "pq"),
        ("entropy_loss_weight", -0.1),
        ("diversity_gamma", -1.0),
        ("fsq_levels", (8, 2)),  # level 2 needs the library's symmetry-preserving mode
        ("causal", 1),
        ("commitment_weight", -1.0),
        ("clip_frames", 6),  # not divisible by the temporal factor 4
        ("resample", "bilinear"),
    ],
)
def test_bad_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        TokenizerConfig(**{field: value})


@pytest.mark.parametrize(
    "kw, names",
    [
        (dict(quantizer="lfq", codebook_size=1000), ["lfq", "codebook_size", "power of 2"]),
        (dict(quantizer="fsq"), ["fsq_levels", "codebook_size"]),  # prod((8, 5, 5, 5)) = 1000 != 1024
        (dict(causal=True, clip_frames=16), ["clip_frames", "causal"]),
        (dict(causal=False, clip_frames=17), ["clip_frames"]),
        (dict(causal=True, resample="strided", clip_frames=17), ["strided", "causal"]),
    ],
)
def test_quantizer_and_causal_config_errors_name_fields(kw, names):
    with pytest.raises(ValueError) as info:
        TokenizerConfig(**kw)
    assert all(n in str(info.value) for n in names), str(info.value)


def test_quantizer_configs_valid():
    assert TokenizerConfig(quantizer="fsq", codebook_size=1000).fsq_levels == (8, 5, 5, 5)
    assert TokenizerConfig(quantizer="lfq").codebook_size == 1024
    assert TokenizerConfig(quantizer="fsq", fsq_levels=[8, 8, 4, 4]).fsq_levels == (8, 8, 4, 4)  # 1024
    # causal presets get one frame more: frame 0 alone, then the usual clip
    assert TokenizerConfig.bair(causal=True).clip_frames == 17
    assert TokenizerConfig.smoke(causal=True).clip_frames == 5
    assert TokenizerConfig.smoke(causal=True, clip_frames=3).clip_frames == 3


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
        "tokenizer": TokenizerEncoder(_tokenizer(TOKENIZER_CONFIGS["t-late"])),
        "pixels": PixelEncoder(),
    }


@pytest.mark.parametrize("encoder_name", ["tokenizer", "pixels"])
@pytest.mark.parametrize("head_name", HEADS)
@pytest.mark.parametrize("out_stride", [1, 2])
def test_heads(encoder_name, head_name, out_stride):
    """Every head on every encoder: logits at the image size, finite, gradients everywhere."""
    torch.manual_seed(0)
    encoder = _encoders()[encoder_name]
    head = build_head(head_name, encoder.feature_info, n_classes=3, hidden=16, out_stride=out_stride)
    model = SegmentationModel(encoder, head, frozen=False)
    x = _video()[:, :, 0]
    y = model(x)
    assert y.shape == (2, 3, 16, 16) and torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert all(p.grad is not None for p in encoder.parameters())


def test_feature_info_matches_the_maps():
    """Strides and channels come from the config; the maps the encoder returns agree with them."""
    for name in ("smoke", "t-late"):
        tok = _tokenizer(TOKENIZER_CONFIGS[name])
        enc = TokenizerEncoder(tok, with_codes=True)
        x = torch.randn(2, 3, 16, 16)
        maps = enc.forward_intermediates(x)
        assert len(maps) == len(enc.feature_info)
        for m, info in zip(maps, enc.feature_info):
            assert m.shape[1] == info.channels and m.shape[-1] == 16 // info.stride, (name, info)
        assert [f.name for f in enc.feature_info][-3:] == ["mid", "latent", "codes"]
        # the encoder view drops the decoder: its parameters are the encoder's alone
        assert sum(p.numel() for p in enc.parameters()) == sum(p.numel() for p in tok.encoder.parameters()) \
            + sum(p.numel() for p in tok.quantizer.parameters())


def test_select_levels_and_bad_levels():
    enc = TokenizerEncoder(_tokenizer(TOKENIZER_CONFIGS["t-late"]))
    coarse = select_levels(enc, [f.name for f in enc.feature_info if f.stride > 1])
    assert all(f.stride > 1 for f in coarse.feature_info)
    maps = coarse.forward_intermediates(torch.randn(1, 3, 16, 16))
    assert [m.shape[1] for m in maps] == coarse.feature_channels
    assert select_levels(enc, None) is enc
    with pytest.raises(ValueError, match="unknown feature level 'nope'"):
        select_levels(enc, ["nope"])


def test_still_image_modes():
    """A causal tokenizer encodes a still image alone ("single"), which equals the first latent
    frame of the repeated clip; "repeat" takes the last one. A non-causal one refuses "single"."""
    causal = _tokenizer(CAUSAL).eval()
    x = torch.randn(2, 3, 16, 16)
    single = TokenizerEncoder(causal, still="single").forward_intermediates(x)
    rep = TokenizerEncoder(causal, still="repeat").forward_intermediates(x)
    first = [m[:, :, 0] for m in causal.encoder(repeat(x, "b c h w -> b c t h w", t=causal.cfg.clip_frames),
                                                  intermediates=True)]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(single, first))
    assert not torch.allclose(single[-1], rep[-1])
    with pytest.raises(ValueError, match="needs a causal tokenizer"):
        TokenizerEncoder(_tokenizer(TOKENIZER_CONFIGS["smoke"]), still="single")
    with pytest.raises(ValueError, match="expected images b 3 h w"):
        TokenizerEncoder(causal).forward_intermediates(torch.randn(2, 3, 4, 16, 16))


def _multi_level_maps(seed: int = 0):
    from vpe_lib.models.encoders import FeatureInfo

    g = torch.Generator().manual_seed(seed)
    info = [FeatureInfo("a", 5, 1), FeatureInfo("b", 7, 2), FeatureInfo("c", 6, 4)]
    maps = [torch.randn(3, i.channels, 16 // i.stride, 16 // i.stride, generator=g) * (1 + k) + k
            for k, i in enumerate(info)]
    return info, maps


def test_segformer_head_equals_concatenating_at_the_finest_stride():
    """The per-map composition is SegFormer's decoder, not an approximation of it: the same
    logits as projecting, resizing, concatenating and fusing at the finest stride."""
    from vpe_lib.models.encoders import resize_to_stride

    info, maps = _multi_level_maps()
    torch.manual_seed(0)
    head = build_head("segformer", info, n_classes=4, hidden=8).eval()
    with torch.no_grad():
        head.fuse[1].running_mean.uniform_(-1, 1)
        head.fuse[1].running_var.uniform_(0.5, 2)
        x = torch.cat([resize_to_stride(p(f), (16, 16), 1) for f, p in zip(maps, head.proj)], 1)
        reference = F.interpolate(head.classifier(head.fuse(x)), size=(16, 16), mode="bilinear", align_corners=False)
        assert torch.allclose(head(maps, size=(16, 16)), reference, atol=1e-5)


def test_linear_head_equals_the_probe_on_the_concatenation():
    """In eval mode (running statistics) the per-map probe is exactly BatchNorm + 1×1 conv on the
    maps resized and concatenated; in training mode it normalises each map at its own resolution,
    updates the running statistics of every channel, and counts the batch."""
    from vpe_lib.models.encoders import resize_to_stride

    info, maps = _multi_level_maps()
    torch.manual_seed(0)
    head = build_head("linear", info, n_classes=4)
    before = head.norm.running_mean.clone()
    head.train()
    y = head(maps, size=(16, 16))
    assert y.shape == (3, 4, 16, 16) and torch.isfinite(y).all()
    assert int(head.norm.num_batches_tracked) == 1
    assert (head.norm.running_mean != before).all()  # every level's channels moved
    expected = torch.cat([f.mean((0, 2, 3)) for f in maps])  # each map's own statistics
    assert torch.allclose(head.norm.running_mean, 0.9 * before + 0.1 * expected, atol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    head.eval()
    with torch.no_grad():
        x = torch.cat([resize_to_stride(f, (16, 16), 1) for f in maps], 1)
        reference = F.interpolate(head.classifier(head.norm(x)), size=(16, 16), mode="bilinear", align_corners=False)
        assert torch.allclose(head(maps, size=(16, 16)), reference, atol=1e-5)


def test_head_rejects_maps_that_do_not_match_its_feature_info():
    enc = PixelEncoder()
    head = build_head("conv", enc.feature_info, n_classes=2, hidden=8)
    with pytest.raises(ValueError, match="has 4 channels"):
        head([torch.randn(1, 4, 8, 8)], size=(8, 8))
    with pytest.raises(ValueError, match="unknown head"):
        build_head("mlp", enc.feature_info, n_classes=2)


def test_fine_tuned_encoder_gets_a_lower_learning_rate():
    from vpe_lib.train.optim import param_groups

    enc = TokenizerEncoder(_tokenizer(TOKENIZER_CONFIGS["smoke"]))
    model = SegmentationModel(enc, build_head("linear", enc.feature_info, n_classes=2), frozen=False,
                              encoder_lr_scale=0.1)
    groups = param_groups(model, 0.01, lr=1e-3)
    enc_ids = {id(p) for p in enc.parameters()}
    for g in groups:
        in_enc = {id(p) in enc_ids for p in g["params"]}
        assert len(in_enc) == 1  # a group is all encoder or all head
        assert g.get("lr", 1e-3) == pytest.approx(1e-4 if in_enc.pop() else 1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_frozen_segmentation_model_leaves_encoder_alone():
    torch.manual_seed(0)
    encoder = TokenizerEncoder(_tokenizer(TOKENIZER_CONFIGS["smoke"]))
    head = build_head("conv", encoder.feature_info, n_classes=2, hidden=16)
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


@pytest.mark.parametrize("kind", ["masked", "ar"])
def test_predictor_encoder_gives_tokenizer_maps_then_transformer_states(kind):
    """A still image -> condition tokens -> the transformer's states, after the tokenizer's maps; a head
    fits it from feature_info alone and trains the transformer (not the tokenizer's argmax codes)."""
    from vpe_lib.models.encoders import PredictorEncoder
    from vpe_lib.models.transformer import TransformerConfig, build_predictor

    tok = _tokenizer(TOKENIZER_CONFIGS["smoke"])
    x = torch.randn(2, 3, 16, 16)
    grid = tok.latent_shape(tok.cfg.clip_frames, 16, 16)
    torch.manual_seed(0)
    pred = build_predictor(kind, TransformerConfig(codebook_size=tok.cfg.codebook_size, grid=grid, dim=16, depth=2,
                                                   heads=2))
    enc = PredictorEncoder(tok, pred, clip_frames=tok.cfg.clip_frames)
    maps = enc.forward_intermediates(x)
    assert [f.name for f in enc.feature_info][-2:] == ["layer0", "layer1"]
    assert len(maps) == len(enc.feature_info)
    for m, info in zip(maps, enc.feature_info):
        assert m.shape[1] == info.channels and m.shape[-1] == 16 // info.stride and torch.isfinite(m).all()
    head = build_head("conv", enc.feature_info, n_classes=3, hidden=8)
    model = SegmentationModel(enc, head, frozen=False)
    model(x).logsumexp(1).mean().backward()
    # the transformer learns from the segmentation loss (all but its final norm and logit layer, unused here)
    assert all(p.grad is not None for n, p in pred.named_parameters() if not n.startswith(("norm.", "head.")))
    torch.manual_seed(1)
    other = PredictorEncoder(tok, build_predictor(kind, pred.cfg), clip_frames=tok.cfg.clip_frames)
    assert not torch.allclose(other.forward_intermediates(x)[-1], maps[-1])  # another draw, other states
    assert torch.equal(other.forward_intermediates(x)[0], maps[0])  # the same tokenizer maps
