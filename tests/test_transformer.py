"""Video-prediction transformers: config, COMMIT inputs and loss, masking, MaskGIT decoding, the
prefix-LM's mask and KV cache, features, reproducibility, and a tiny overfit — on tiny configs."""

from __future__ import annotations

import math

import pytest
import torch

from vpe_lib.models.transformer import (
    PREDICTORS,
    ARVideoTransformer,
    MaskedVideoTransformer,
    TransformerConfig,
    build_predictor,
    check_compatible,
    cosine_mask_ratio,
    random_token_mask,
    sample_mask_ratio,
)

K = 16
# a small grid with h != w (catches transposed maps); 6 condition + 12 future tokens
CFG = TransformerConfig(codebook_size=K, grid=(3, 2, 3), dim=32, depth=2, heads=2)
B = 2


def make(kind: str, cfg: TransformerConfig = CFG, seed: int = 0):
    torch.manual_seed(seed)
    return build_predictor(kind, cfg).eval()


def batch(seed: int = 0, b: int = B, cfg: TransformerConfig = CFG):
    g = torch.Generator().manual_seed(seed)
    t, h, w = cfg.grid
    codes = torch.randint(0, K, (b, t, h, w), generator=g)
    cond = torch.randint(0, K, (b, cfg.cond_frames, h, w), generator=g)
    mask = random_token_mask(b, cfg.grid, torch.tensor([0.4, 0.8][:b]), g)
    return codes, cond, mask


@pytest.fixture(scope="module", params=PREDICTORS)
def kind(request):
    return request.param


# ---------------------------------------------------------------------------- config and helpers


@pytest.mark.parametrize("overrides, field", [
    ({"codebook_size": 1}, "codebook_size"),
    ({"codebook_size": 0}, "codebook_size"),
    ({"grid": (3, 4)}, "grid"),
    ({"grid": (3, 0, 4)}, "grid"),
    ({"cond_frames": 0}, "cond_frames"),
    ({"cond_frames": 3}, "cond_frames"),
    ({"dim": 30, "heads": 4}, "heads"),
    ({"depth": 0}, "depth"),
    ({"heads": 1.5}, "heads"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"mlp_ratio": 0}, "mlp_ratio"),
    ({"recon_weight": -1.0}, "recon_weight"),
    ({"mask_weight": float("nan")}, "mask_weight"),
])
def test_config_validation(overrides, field):
    kw = {"codebook_size": K, "grid": (3, 4, 4), **overrides}
    with pytest.raises(ValueError, match=field):
        TransformerConfig(**kw)


def test_config_properties_and_lists():
    cfg = TransformerConfig(codebook_size=K, grid=[4, 2, 3], cond_frames=2)
    assert cfg.grid == (4, 2, 3)
    assert (cfg.n_tokens, cfg.n_cond, cfg.n_future) == (24, 12, 12)


def test_check_compatible_names_both():
    check_compatible(CFG, codebook_size=K, grid=[3, 2, 3])
    with pytest.raises(ValueError) as e:
        check_compatible(CFG, codebook_size=32, grid=(3, 2, 3), source="ckpt.pt")
    msg = str(e.value)
    assert "ckpt.pt" in msg and "codebook_size=16" in msg and "codebook_size=32" in msg
    with pytest.raises(ValueError, match=r"grid=\(3, 2, 3\).*grid=\(4, 2, 3\)"):
        check_compatible(CFG, codebook_size=K, grid=(4, 2, 3))


def test_build_predictor_kinds():
    assert isinstance(build_predictor("masked", CFG), MaskedVideoTransformer)
    assert isinstance(build_predictor("ar", CFG), ARVideoTransformer)
    with pytest.raises(ValueError, match="masked, ar"):
        build_predictor("diffusion", CFG)


def test_cosine_schedule_and_ratios():
    assert cosine_mask_ratio(0.0) == 1.0
    assert cosine_mask_ratio(1.0) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(cosine_mask_ratio(torch.tensor([0.0, 0.5, 1.0])),
                          torch.tensor([1.0, math.sqrt(0.5), 0.0]), atol=1e-6)
    r1 = sample_mask_ratio(1000, torch.Generator().manual_seed(1), n_tokens=18)
    r2 = sample_mask_ratio(1000, torch.Generator().manual_seed(1), n_tokens=18)
    assert torch.equal(r1, r2) and r1.shape == (1000,)
    assert r1.min() >= 1 / 18 and r1.max() <= 1
    assert 0.55 < r1.mean() < 0.72  # E[cos(pi/2 u)] = 2/pi


def test_random_mask_exact_counts():
    grid = (3, 4, 4)
    ratios = torch.tensor([0.0, 0.25, 0.5, 0.99, 1.0])
    m = random_token_mask(5, grid, ratios, torch.Generator().manual_seed(0))
    assert m.shape == (5, *grid) and m.dtype == torch.bool
    assert m.flatten(1).sum(1).tolist() == [1, 12, 24, 48, 48]
    assert torch.equal(m, random_token_mask(5, grid, ratios, torch.Generator().manual_seed(0)))
    assert not torch.equal(m, random_token_mask(5, grid, ratios, torch.Generator().manual_seed(1)))


# ---------------------------------------------------------------------------- both predictors


def test_forward_backward(kind):
    model = make(kind).train()
    loss, logs = model(*batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["loss"] == pytest.approx(loss.item())
    assert all(isinstance(v, float) for v in logs.values())
    assert set(logs) == ({"loss", "ce_masked", "ce_refine", "ce_recon", "mask_ratio"} if kind == "masked"
                         else {"loss", "ce"})
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.tok_emb.weight.grad.abs().sum() > 0 and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_determinism(kind):
    a, b = make(kind, seed=3), make(kind, seed=3)
    data = batch(5)
    assert torch.equal(a(*data)[0], b(*data)[0])
    assert not torch.equal(a(*data)[0], make(kind, seed=4)(*data)[0])


def test_generate(kind):
    model = make(kind)
    _, cond, _ = batch(1)
    out = model.generate(cond, generator=torch.Generator().manual_seed(0))
    assert out.shape == (B, *CFG.grid) and out.dtype == torch.long
    assert out.min() >= 0 and out.max() < K
    assert torch.equal(out[:, :CFG.cond_frames], cond)
    assert torch.equal(out, model.generate(cond, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(out, model.generate(cond, generator=torch.Generator().manual_seed(1)))


def test_forward_intermediates_and_features(kind):
    model = make(kind)
    _, h, w = CFG.grid
    _, cond, _ = batch(2)
    maps = model.forward_intermediates(cond)
    assert model.feature_channels == [CFG.dim] * CFG.depth
    assert [tuple(m.shape) for m in maps] == [(B, c, h, w) for c in model.feature_channels]
    last = model.forward_intermediates(cond, layers=[-1])
    assert len(last) == 1 and torch.equal(last[0], maps[-1])
    with pytest.raises(ValueError, match="layer"):
        model.forward_intermediates(cond, layers=[CFG.depth])
    feats = model.forward_features(cond)
    assert feats.shape == (B, CFG.dim, h, w) and torch.isfinite(feats).all()
    assert torch.allclose(feats, model.norm(maps[-1].movedim(1, -1)).movedim(-1, 1))  # last state, normed
    assert not torch.allclose(feats[0], feats[1])  # two different images
    other = model.forward_features(cond.flip(0))
    assert torch.allclose(other, feats.flip(0), atol=1e-6)  # per-sample, no batch mixing


def _overfit(kind: str) -> tuple[float, float]:
    model = make(kind).train()
    codes, cond, mask = batch(7)  # one fixed batch (and mask)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, _ = model(codes, cond, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_overfit_one_batch(kind):
    first, last = _overfit(kind)
    assert last < 0.5 * first, (first, last)


# ---------------------------------------------------------------------------- masked (COMMIT / MaskGIT)


def test_commit_inputs():
    model = make("masked")
    codes, cond, mask = batch(3)
    inputs, segment = model.commit_inputs(codes, cond, mask)
    c = CFG.cond_frames
    is_cond = torch.zeros_like(mask)
    is_cond[:, :c] = True
    assert torch.equal(inputs[~mask], codes[~mask])  # unmasked keep the true code
    assert (inputs[mask & ~is_cond] == model.mask_id).all()  # masked future -> [MASK]
    cond_padded = torch.cat([cond, torch.zeros_like(codes[:, c:])], 1)
    assert torch.equal(inputs[mask & is_cond], cond_padded[mask & is_cond])  # masked cond -> cond tokens
    assert torch.equal(segment.bool(), mask & is_cond)
    assert (mask & is_cond).any() and (~mask & is_cond).any()  # both cases exercised
    # everything masked: the condition region holds cond_codes, the rest [MASK] (future_log_probs' input)
    full, seg = model.commit_inputs(codes, cond, torch.ones_like(mask))
    assert torch.equal(full[:, :c], cond) and (full[:, c:] == model.mask_id).all()
    assert (seg[:, :c] == 1).all() and (seg[:, c:] == 0).all()


def test_masked_loss_terms_and_empty_counts():
    model = make("masked", TransformerConfig(codebook_size=K, grid=CFG.grid, dim=32, depth=2, heads=2,
                                             mask_weight=1.0, refine_weight=0.5, recon_weight=0.1))
    codes, cond, mask = batch(4)
    loss, logs = model(codes, cond, mask)
    expect = logs["ce_masked"] + 0.5 * logs["ce_refine"] + 0.1 * logs["ce_recon"]
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert logs["mask_ratio"] == pytest.approx(mask.float().mean().item())
    # nothing masked: only the reconstruction term; the empty ones are 0, not NaN
    none = torch.zeros_like(mask)
    loss, logs = model(codes, cond, none)
    assert logs["ce_masked"] == 0 and logs["ce_refine"] == 0 and logs["mask_ratio"] == 0
    assert loss.item() == pytest.approx(0.1 * logs["ce_recon"], rel=1e-5)
    # ... and with recon_weight 0 the loss is exactly 0 and still backpropagates (DDP needs the graph)
    zero = make("masked", TransformerConfig(codebook_size=K, grid=CFG.grid, dim=32, depth=2, heads=2,
                                            recon_weight=0.0))
    loss, _ = zero(codes, cond, none)
    loss.backward()
    assert loss.item() == 0 and all(torch.isfinite(p.grad).all() for p in zero.parameters())
    # everything masked: no reconstruction term
    _, logs = model(codes, cond, torch.ones_like(mask))
    assert logs["ce_recon"] == 0 and math.isfinite(logs["ce_masked"]) and logs["mask_ratio"] == 1


def test_masked_sample_mask():
    model = make("masked")
    m1 = model.sample_mask(4, generator=torch.Generator().manual_seed(0))
    m2 = model.sample_mask(4, generator=torch.Generator().manual_seed(0))
    assert m1.shape == (4, *CFG.grid) and torch.equal(m1, m2) and (m1.flatten(1).sum(1) >= 1).all()


def test_masked_future_log_probs_normalised():
    model = make("masked")
    _, cond, _ = batch(2)
    lp = model.future_log_probs(cond)
    assert lp.shape == (B, CFG.grid[0] - CFG.cond_frames, *CFG.grid[1:], K)
    assert torch.allclose(lp.logsumexp(-1), torch.zeros(()), atol=1e-5)


@pytest.mark.parametrize("schedule, steps", [("cosine", 12), ("linear", 5), ("cosine", 30)])
def test_maskgit_schedule_and_fixed_tokens(schedule, steps):
    """Record the model's input at every step: the number still masked follows the schedule, a
    position once fixed never changes, and the output is the last input with its masks filled."""
    model = make("masked")
    _, cond, _ = batch(1)
    seen = []
    logits = model.logits

    def record(inputs, segment, *args):
        seen.append(inputs.clone())
        return logits(inputs, segment, *args)

    model.logits = record
    out = model.generate(cond, steps=steps, schedule=schedule, generator=torch.Generator().manual_seed(0))
    assert len(seen) == steps
    n_future = CFG.n_future
    ratio = (lambda p: math.cos(math.pi / 2 * p)) if schedule == "cosine" else (lambda p: 1 - p)
    for s, inputs in enumerate(seen):
        masked = inputs == model.mask_id
        assert (masked.flatten(1).sum(1) == math.floor(n_future * ratio(s / steps))).all(), s
        assert torch.equal(inputs[:, :CFG.cond_frames], cond)
        if s:
            fixed = seen[s - 1] != model.mask_id
            assert torch.equal(inputs[fixed], seen[s - 1][fixed]), s  # never resampled
    fixed = seen[-1] != model.mask_id
    assert torch.equal(out[fixed], seen[-1][fixed]) and (out != model.mask_id).all()


def test_maskgit_greedy_and_errors():
    model = make("masked")
    _, cond, _ = batch(2)
    # one step at a near-zero temperature: every future token is the argmax of the one-pass marginals
    greedy = model.future_log_probs(cond).argmax(-1)
    for seed in (0, 1):
        out = model.generate(cond, steps=1, temperature=1e-6, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out[:, CFG.cond_frames:], greedy)
    zero = model.generate(cond, steps=1, temperature=0.0)
    assert torch.equal(zero[:, CFG.cond_frames:], greedy)
    with pytest.raises(ValueError, match="schedule"):
        model.generate(cond, schedule="exp")


# ---------------------------------------------------------------------------- autoregressive prefix-LM


def _seq(codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return torch.cat([cond, codes[:, CFG.cond_frames:]], 1).flatten(1)


def test_ar_kv_cache_matches_full_pass():
    model = make("ar")
    codes, cond, _ = batch(6)
    seq = _seq(codes, cond)[:, :-1]
    full = model.logits(seq)
    n_cond = CFG.n_cond
    # prefix pass, then one token per step
    cache = model.new_cache()
    parts = [model.logits(seq[:, :n_cond], cache=cache)]
    for j in range(n_cond, seq.shape[1]):
        parts.append(model.logits(seq[:, j:j + 1], start=j, cache=cache))
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    # prefix pass, then a chunk of 4 (causal within the chunk), then the rest
    cache = model.new_cache()
    parts = [model.logits(seq[:, :n_cond], cache=cache), model.logits(seq[:, n_cond:n_cond + 4], start=n_cond,
                                                                      cache=cache)]
    parts.append(model.logits(seq[:, n_cond + 4:], start=n_cond + 4, cache=cache))
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="cached"):
        model.logits(seq[:, :1], start=3, cache=model.new_cache())


def test_ar_prefix_lm_mask():
    model = make("ar")
    codes, cond, _ = batch(8)
    seq = _seq(codes, cond)[:, :-1]
    base = model.logits(seq)
    n_cond = CFG.n_cond
    j = n_cond + 5  # a future position: earlier positions must not see it
    later = seq.clone()
    later[:, j] = (later[:, j] + 1) % K
    out = model.logits(later)
    assert torch.equal(out[:, :j], base[:, :j])
    assert not torch.allclose(out[:, j:], base[:, j:])
    # the last condition token: every position sees it, the first condition token included
    last_cond = seq.clone()
    last_cond[:, n_cond - 1] = (last_cond[:, n_cond - 1] + 1) % K
    out = model.logits(last_cond)
    assert not torch.isclose(out, base).all(-1).any()


def test_ar_future_log_probs():
    model = make("ar")
    codes, cond, _ = batch(9)
    lp = model.future_log_probs(codes, cond)
    assert lp.shape == (B, CFG.grid[0] - CFG.cond_frames, *CFG.grid[1:], K)
    assert torch.allclose(lp.logsumexp(-1), torch.zeros(()), atol=1e-5)
    # the mean NLL of the true future tokens is the training loss
    nll = -lp.gather(-1, codes[:, CFG.cond_frames:, ..., None]).mean()
    loss, logs = model(codes, cond)
    assert nll.item() == pytest.approx(loss.item(), rel=1e-5) and logs["ce"] == pytest.approx(loss.item())


def test_ar_greedy_generation_is_self_consistent():
    """Greedy cached sampling picks, at every position, the argmax of the full teacher-forced pass
    over its own output; top_k=1 is greedy at any temperature."""
    model = make("ar")
    _, cond, _ = batch(10)
    out = model.generate(cond, temperature=0.0)
    assert torch.equal(model.future_log_probs(out, cond).argmax(-1), out[:, CFG.cond_frames:])
    top1 = model.generate(cond, temperature=2.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1, out)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(cond, top_k=0)
