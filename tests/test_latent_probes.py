"""Latent-space probes: scores and their video-bootstrap intervals, targets at token resolution, code
purity, and the latents stage at smoke scale."""

import json

import numpy as np
import pytest
import torch

from vpe_lib.config import ConfigError, get_config
from vpe_lib.eval import latent_probes as lp


def _videos(n_videos=20, per_video=50, seed=0):
    return np.repeat(np.arange(n_videos), per_video), np.random.default_rng(seed)


# -- intervals


def test_bootstrap_is_deterministic_and_resamples_videos():
    a, b = lp.bootstrap_counts(10, 200, seed=3), lp.bootstrap_counts(10, 200, seed=3)
    assert np.array_equal(a, b) and a.shape == (200, 10)
    assert (a.sum(1) == 10).all()  # each resample draws as many videos as there are
    assert not np.array_equal(a, lp.bootstrap_counts(10, 200, seed=4))
    groups, rng = _videos()
    y = rng.normal(size=len(groups))
    p = y + 0.5 * rng.normal(size=len(y))
    s = lp.r2_ci(y, p, groups, n_boot=300, seed=1)
    assert s == lp.r2_ci(y, p, groups, n_boot=300, seed=1)  # the same interval every time
    assert s != lp.r2_ci(y, p, groups, n_boot=300, seed=2) and s.value == lp.r2_ci(y, p, groups, seed=2).value
    # resampling videos, not rows: a video's rows move together, so the video labels matter
    by_row = lp.r2_ci(y, p, np.arange(len(y)), n_boot=300, seed=1)
    assert by_row.value == pytest.approx(s.value) and by_row != s
    assert lp.r2_ci(y, y, groups, n_boot=10).value == pytest.approx(1.0)


def test_r2_of_a_probe_on_informative_and_on_noise_features():
    groups, rng = _videos(n_videos=40)
    n = len(groups)
    motion = rng.normal(size=(n, 2)) + rng.normal(size=(40, 2))[groups]  # (dx, dy), videos differ
    informative = np.concatenate([motion @ rng.normal(size=(2, 4)), rng.normal(size=(n, 4))], 1)
    noise = rng.normal(size=(n, 8))
    tr, te = groups < 20, groups >= 20  # split by video
    good = lp.regression_probe(informative[tr], motion[tr], informative[te], motion[te], groups[te], alpha=1e-3)
    assert good.value > 0.99 and good.ci_low <= good.value <= good.ci_high and good.ci_low > 0.98
    bad = lp.regression_probe(noise[tr], motion[tr], noise[te], motion[te], groups[te])
    assert bad.ci_low <= bad.value <= bad.ci_high
    # a useless probe's held-out R² is not 0 but a little below: it pays for its fitted noise and for
    # the training videos' mean (here the videos have their own offsets). No evidence of information:
    # the interval reaches no higher than about 0.
    assert -0.25 < bad.value < 0.01 and bad.ci_low < 0 and bad.ci_high < 0.02
    # i.i.d. targets (no video offsets): the bias is tiny, the interval hugs 0 from below (an interval
    # that must "cover 0" would fail for this honest reason, so the test asks for no evidence of R² > 0)
    iid = rng.normal(size=(n, 2))
    flat = lp.regression_probe(noise[tr], iid[tr], noise[te], iid[te], groups[te], alpha=1e3)
    assert abs(flat.value) < 0.01 and flat.ci_low < 0 and -0.01 < flat.ci_high < 0.01


def test_r2_uses_each_outputs_own_mean():
    # dx around 10, dy around -10: predicting the two means is R² 0, not close to 1
    groups, rng = _videos()
    y = np.stack([10 + rng.normal(size=len(groups)), -10 + rng.normal(size=len(groups))], 1)
    assert lp.r2_ci(y, np.broadcast_to(y.mean(0), y.shape), groups, n_boot=10).value == pytest.approx(0, abs=1e-9)


def test_auroc_conventions_and_interval():
    groups, rng = _videos()
    labels = rng.random(len(groups)) < 0.15
    assert lp.auroc(labels, labels.astype(float)) == 1.0
    assert lp.auroc(labels, -labels.astype(float)) == 0.0
    assert lp.auroc(labels, np.zeros(len(labels))) == 0.5  # a constant: every pair is a tie
    assert np.isnan(lp.auroc(np.zeros(5, bool), np.arange(5.0)))
    scores = labels + rng.normal(size=len(labels))
    # the Mann-Whitney count against a direct pairwise computation
    pos, neg = scores[labels], scores[~labels]
    direct = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    s = lp.auroc_ci(labels, scores, groups, n_boot=500, seed=0)
    assert s.value == pytest.approx(direct) and s.ci_low < s.value < s.ci_high
    assert s == lp.auroc_ci(labels, scores, groups, n_boot=500, seed=0)
    # ties across videos: rounded scores
    r = np.round(scores)
    pos, neg = r[labels], r[~labels]
    direct = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert lp.auroc_ci(labels, r, groups, n_boot=1).value == pytest.approx(direct)


def test_balanced_accuracy_ignores_the_majority_class():
    groups, rng = _videos()
    labels = rng.random(len(groups)) < 0.15
    assert lp.balanced_accuracy_ci(labels, np.zeros_like(labels), groups, n_boot=50).value == 0.5
    assert lp.balanced_accuracy_ci(labels, labels, groups, n_boot=50).value == 1.0
    s = lp.balanced_accuracy_ci(labels, labels ^ (rng.random(len(labels)) < 0.2), groups, n_boot=200)
    assert s.value == pytest.approx(0.8, abs=0.03) and s.ci_low < 0.8 < s.ci_high


def test_balanced_threshold_and_binary_probe():
    assert lp.balanced_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 0.8
    groups, rng = _videos(n_videos=30)
    labels = rng.random(len(groups)) < 0.1
    x = np.concatenate([labels[:, None] + 0.3 * rng.normal(size=(len(labels), 1)),
                        rng.normal(size=(len(labels), 3))], 1)
    tr, te = groups < 15, groups >= 15
    out = lp.binary_probe(x[tr], labels[tr], x[te], labels[te], groups[te])
    assert out["auroc"].value > 0.95 and out["balanced_acc"].value > 0.85  # not the majority's 0.5
    noise = lp.binary_probe(rng.normal(size=(len(labels), 4))[tr], labels[tr], rng.normal(size=(te.sum(), 4)),
                            labels[te], groups[te])
    assert noise["auroc"].ci_low < 0.5 < noise["auroc"].ci_high


def test_ridge_probes_fit_several_targets_as_separate_ridges():
    rng = np.random.default_rng(0)
    x, y1, y2 = rng.normal(size=(300, 5)), rng.normal(size=(300, 2)), rng.random(300) < 0.3
    tr, te = lp.ridge_probes(x[:200], {"flow": y1[:200], "fg": y2[:200]}, x[200:], alpha=3.0)
    from vpe_lib.eval.probes import ridge_fit, ridge_predict
    assert te["flow"].shape == (100, 2) and te["fg"].shape == (100,) and tr["fg"].shape == (200,)
    assert np.allclose(te["fg"], ridge_predict(ridge_fit(x[:200], y2[:200].astype(float), alpha=3.0), x[200:]))
    assert np.allclose(te["flow"], ridge_predict(ridge_fit(x[:200], y1[:200], alpha=3.0), x[200:]))


# -- targets and features at token resolution


def test_motion_and_fate_targets_on_a_moving_square():
    from vpe_lib.data.synthetic_motion import moving_square_clip

    clip = moving_square_clip(8, 32, 32, size=8, velocity=(2, 0), seed=0)
    m = lp.motion_targets(clip["flow"][:3], stride=8)
    assert m["flow"].shape == (3, 4, 4, 2) and m["speed"].shape == (3, 4, 4)
    assert m["flow"][..., 0].max() == pytest.approx(2.0, abs=0.6) and m["flow"][..., 1].max() == 0  # moves right
    fate = lp.fate_targets(np.stack([clip["flow"][t:t + 3] for t in (0, 4)]), stride=8)
    assert fate.shape == (2, 4, 4) and fate.any() and not fate.all()
    assert fate[0].sum() >= (m["speed"][0] > 0.5).sum()  # a window sees at least the next step's movers
    assert lp.target_rows(m["flow"]).shape == (48, 2) and lp.target_rows(fate).shape == (32,)
    assert lp.probe_times(30, 3, 4).tolist() == [0, 12, 25]
    with pytest.raises(ValueError, match="no frame"):
        lp.probe_times(4, 2, 4)


def test_patch_classes_and_pixel_patches():
    sem = np.zeros((1, 8, 8), np.uint8)
    sem[0, :4, :4] = 3
    sem[0, 4:, 4:6] = 2  # half of the bottom-right patch
    sem[0, 0, 7] = 255  # ignore counts as background
    majority, fg = lp.patch_classes(sem, 4, n_classes=7)
    assert majority[0].tolist() == [[3, 0], [0, 0]]  # a tie goes to the lower class (background)
    assert majority[0, 0, 0] == 3 and fg[0, 0, 0] == 1 and fg[0, 1, 1] == 0.5 and fg[0, 0, 1] == 0
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = lp.pixel_patches(x, 4)
    assert p.shape == (2, 48, 2, 2) and torch.equal(p[0, :16, 0, 0], x[0, 0, :4, :4].flatten())


def test_token_features_of_pixels_are_patches_at_the_token_stride():
    from vpe_lib.models.encoders import PixelEncoder

    frames = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    f = lp.token_features(PixelEncoder(), frames, 4, batch_size=2)
    assert f.shape == (3, 48, 4, 4) and f.dtype == np.float32
    assert np.allclose(f[1, :16, 2, 3], frames[1, 8:12, 12:16, 0].ravel() / 127.5 - 1, atol=1e-6)


# -- codes


def test_code_purity():
    groups, rng = _videos(n_videos=10, per_video=100)
    classes = rng.integers(0, 4, len(groups))
    assert lp.code_purity(classes * 10 + rng.integers(0, 3, len(classes)), classes) == 1.0  # codes within classes
    one_code = lp.code_purity(np.zeros(len(classes), int), classes)
    assert one_code == pytest.approx(np.bincount(classes).max() / len(classes))  # the majority class's share
    s = lp.code_purity_ci(rng.integers(0, 8, len(classes)), classes, groups, n_boot=200)
    assert s.ci_low <= s.value <= s.ci_high
    assert lp.chance_code_purity(classes, classes, seed=0) < 0.5  # shuffled classes: the codes no longer know them
    u = lp.usage_stats(np.array([5, 5, 0, 0]))
    assert u == {"perplexity": pytest.approx(2.0), "dead_codes": 2}
    assert lp.usage_stats(np.full(8, 3))["perplexity"] == pytest.approx(8.0)


# -- config


def test_analysis_config_validation():
    cfg = get_config("smoke", {"analysis.encoders": ["tokenizer", "pixels"], "analysis.fate_frames": 2})
    assert cfg.analysis.encoders == ("tokenizer", "pixels")
    for bad in ({"analysis.encoders": ["dino"]}, {"analysis.encoders": []}, {"analysis.n_boot": 0},
                {"analysis.fate_frames": 0}, {"analysis.ridge_alpha": 0.0}, {"analysis.probe_test_videos": -1},
                {"analysis.embedding": "tsne"}, {"analysis.fate_frames": 8}):  # smoke videos have 8 frames
        with pytest.raises(ConfigError):
            get_config("smoke", bad)


# -- the stage at smoke scale


@pytest.mark.slow
def test_latents_stage_at_smoke_scale(tmp_path):
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.data_stage import run_data_stage
    from vpe_lib.stages.latents_stage import run_latents_stage
    from vpe_lib.stages.predict_stage import run_predict_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    over = {"pretrain.compare_quantizers": [], "pretrain.compare_steps": 0, "pretrain.train.steps": 4,
            "predict.train.steps": 4, "predict.study_maskings": [], "predict.n_sample_clips": 2,
            "predict.models": ["masked"]}
    cfg, out = start_stage("smoke", tmp_path, "data", over)
    run_data_stage(cfg, out, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "pretrain", over)
    run_pretrain_stage(cfg, tmp_path, out, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "latents", over)
    logs = []
    m = run_latents_stage(cfg, tmp_path, out, log=logs.append)  # before stage 03: no predictor rows
    assert "latents/motion_r2/masked" not in m and any("masked" in s for s in logs)
    assert json.loads((out / "encoders.json").read_text())["skipped"] == ["masked", "random_masked", "ar", "random_ar"]
    cfg, out_p = start_stage("smoke", tmp_path, "predict", over)
    run_predict_stage(cfg, tmp_path, out_p, progress=False)
    cfg, out = start_stage("smoke", tmp_path, "latents", over)
    logs.clear()
    m = run_latents_stage(cfg, tmp_path, out, log=logs.append)
    for enc in ("tokenizer", "random_tokenizer", "pixels", "masked", "random_masked"):
        for key in ("motion_r2", "speed_r2", "mv_r2", "common_fate_auroc", "fg_auroc", "fg_balanced_acc"):
            k = f"latents/{key}/{enc}"
            assert isinstance(m[k], float), k
            if np.isfinite(m[k]):
                assert m[f"{k}_ci_low"] <= m[k] + 1e-9 and m[k] <= m[f"{k}_ci_high"] + 1e-9, k
    assert "latents/motion_r2/ar" not in m and any("'ar'" in s for s in logs)  # only the masked model was trained
    for enc in ("tokenizer", "random_tokenizer"):
        assert 0 < m[f"latents/code_purity/{enc}"] <= 1 and f"latents/code_purity/{enc}_chance" in m
    assert "latents/code_purity/pixels" not in m
    d = "latents/diff_vs_random/common_fate_auroc/tokenizer"
    assert m[f"{d}_ci_low"] <= m[d] <= m[f"{d}_ci_high"] and "latents/diff_vs_random/code_purity/tokenizer" in m
    assert "latents/diff_vs_random/fg_auroc/masked" in m
    assert m["latents/dead_codes"] + m["latents/codes_used"] == m["latents/codebook_size"]
    assert 1 <= m["latents/code_perplexity"] <= m["latents/codes_used"]
    assert m["latents/umap_wall_s"] >= 0 and "latents/probe_fg_acc/tokenizer" not in m
    disk = json.loads((out / "metrics.json").read_text())
    assert set(disk) == set(m)
    z = np.load(out / "latents.npz")
    for key in ("code_usage", "embedding_pretrained", "embedding_random", "majority_pretrained", "fg_fraction_random",
                "example_frames", "example_fate", "example_fate_score_masked"):
        assert key in z.files, key
    assert z["embedding_pretrained"].shape[1] == 2
    # the UMAP explorer reads the embedding with the pixels under each embedded token
    stride = cfg.pretrain.tokenizer.spatial_factor
    assert z["token_patches"].shape == (len(z["embedding_pretrained"]), stride, stride, 3)
    from vpe_lib.explore.latents import umap_explorer

    ex = umap_explorer(tmp_path, features="random")
    assert sum(ex.summary().values()) == len(ex.selected())
    assert list((out / "motion_cache").glob("*.npy"))  # the codec vectors are cached per video
    again = run_latents_stage(cfg, tmp_path, out, log=logs.append)
    timing = [k for k in m if k.endswith("wall_s")]
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in m.items() if k not in timing}


def test_paired_difference_uses_the_same_resamples():
    groups, rng = _videos(n_videos=30)
    labels = rng.random(len(groups)) < 0.2
    hard = rng.normal(size=30)[groups]  # some videos are harder for every probe: pairing cancels it
    a = lp.auroc_ci(labels, labels + hard + 0.5 * rng.normal(size=len(labels)), groups, n_boot=400, keep_boots=True)
    b = lp.auroc_ci(labels, labels + hard + 0.7 * rng.normal(size=len(labels)), groups, n_boot=400, keep_boots=True)
    assert isinstance(a, lp.Estimate) and a.boots.shape == (400,)
    d = lp.paired_difference(a, b)
    assert d.value == pytest.approx(a.score.value - b.score.value) and d.ci_low <= d.value <= d.ci_high
    assert d.ci_high - d.ci_low < (a.score.ci_high - a.score.ci_low) + (b.score.ci_high - b.score.ci_low)
    with pytest.raises(ValueError, match="same resamples"):
        lp.paired_difference(a, lp.auroc_ci(labels, labels, groups, n_boot=10, keep_boots=True))


def test_predictor_features_from_shared_codes_equal_the_encoders_own():
    from vpe_lib.models.encoders import PredictorEncoder, TokenizerEncoder
    from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D
    from vpe_lib.models.transformer import TransformerConfig, build_predictor
    from vpe_lib.stages.latents_stage import SharedCodes, _tokenizer_key, still_codes

    tiny = TokenizerConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, temporal_down=(True,),
                           spatial_down=(True,), full_res_blocks=False, embed_dim=8, codebook_size=16, clip_frames=4)
    torch.manual_seed(0)
    tok, other_tok = VQVAE3D(cfg=tiny).eval(), VQVAE3D(cfg=tiny).eval()
    grid = tok.latent_shape(4, 16, 16)
    tcfg = TransformerConfig(codebook_size=16, grid=grid, dim=16, depth=2, heads=2)
    a = PredictorEncoder(tok, build_predictor("masked", tcfg).eval(), clip_frames=4)
    b = PredictorEncoder(tok, build_predictor("ar", tcfg).eval(), clip_frames=4)
    c = PredictorEncoder(other_tok, build_predictor("ar", tcfg).eval(), clip_frames=4)
    assert _tokenizer_key(a) == _tokenizer_key(b) != _tokenizer_key(c)
    frames = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    shared = SharedCodes()
    codes = shared(a, "test", frames)
    assert shared(b, "test", frames) is codes and shared(c, "test", frames) is not codes
    assert shared(TokenizerEncoder(tok), "test", frames) is None
    own = lp.token_features(b, frames, 2, batch_size=2)
    assert np.allclose(lp.token_features(b, frames, 2, codes=codes), own, atol=1e-6)
    assert own.shape == (5, 16, 8, 8)
    # the codes of the tokenizer rows are the codes of the probed features (VQ: the nearest code of each)
    enc = TokenizerEncoder(tok)
    feats = torch.from_numpy(lp.token_features(enc, frames, 2))
    assert np.array_equal(still_codes(tok, enc, frames), tok.quantize(feats[:, :, None])[1][:, 0].numpy())


def test_probe_rows_table_and_interval_plot():
    import matplotlib

    matplotlib.use("Agg")
    from vpe_lib.figures import plots
    from vpe_lib.figures.latents_page import interval_markdown, probe_rows

    m = {"latents/fg_auroc/tokenizer": 0.8, "latents/fg_auroc/tokenizer_ci_low": 0.75,
         "latents/fg_auroc/tokenizer_ci_high": 0.85, "latents/fg_auroc/random_tokenizer": 0.7,
         "latents/fg_auroc/random_tokenizer_ci_low": 0.6, "latents/fg_auroc/random_tokenizer_ci_high": 0.8,
         "latents/diff_vs_random/fg_auroc/tokenizer": 0.1, "latents/diff_vs_random/fg_auroc/tokenizer_ci_low": -0.02,
         "latents/diff_vs_random/fg_auroc/tokenizer_ci_high": 0.2, "latents/codes_used": 3}
    rows = probe_rows(m)
    assert [r["encoder"] for r in rows] == ["tokenizer", "random_tokenizer"]  # ENCODERS' order, probed ones only
    assert rows[0]["fg_auroc"] == (0.8, 0.75, 0.85) and rows[0]["motion_r2"] is None
    assert [r["encoder"] for r in probe_rows(m, diff=True)] == ["tokenizer"]
    table = interval_markdown(rows, extra={"majority class": {"fg_auroc": 0.5}})
    assert "| `tokenizer` | 0.800 [0.750, 0.850] |" in table and "foreground AUROC" in table
    assert "motion" not in table and "| *majority class* | 0.500 |" in table  # absent metrics get no column
    ax = plots.interval_dots(rows, "fg_auroc", reference=0.5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["tokenizer", "random_tokenizer"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first row on top


@pytest.mark.parametrize("source", ["codec", "block_matching"])
def test_motion_vector_speed_finds_the_moving_square(source):
    from vpe_lib.data.synthetic_motion import moving_square_clip

    clip = moving_square_clip(8, 64, 64, size=16, velocity=(2, 1), seed=1)
    times = np.array([1, 4])
    mv = lp.video_mv_speed(clip["frames"], times, 8, source=source)
    truth = lp.motion_targets(clip["flow"][times], 8)["speed"]
    assert mv.shape == truth.shape == (2, 8, 8)
    moving = truth > 1.0
    assert mv[moving].mean() > 1.0 and mv[~moving].mean() < 0.5 * mv[moving].mean()


def _estimate(value: float, boots: np.ndarray) -> lp.Estimate:
    return lp.Estimate(lp.Score(value, *lp.percentile_interval(boots)), boots)


def test_pool_draws_averages_and_widens_by_the_draw_spread():
    rng = np.random.default_rng(0)
    video_noise = rng.normal(0, 0.01, 1000)  # the same test-video resamples for every draw
    one = _estimate(0.5, 0.5 + video_noise)
    assert lp.pool_draws([one]) is one
    same = lp.pool_draws([one, one, one])
    assert same.score.value == 0.5 and np.allclose(same.boots, one.boots)  # no draw spread: the video interval
    offsets = (-0.05, 0.0, 0.05)  # three draws that differ by more than the videos do
    pooled = lp.pool_draws([_estimate(0.5 + o, 0.5 + o + video_noise) for o in offsets], seed=1)
    assert pooled.score.value == pytest.approx(0.5)
    width = lambda e: e.score.ci_high - e.score.ci_low  # noqa: E731
    assert width(pooled) > 2 * width(one)  # the draws' spread is in the interval
    assert pooled.score.ci_low < 0.5 < pooled.score.ci_high and pooled.boots.shape == (1000,)
    with pytest.raises(ValueError, match="same resamples"):
        lp.pool_draws([one, _estimate(0.5, np.zeros(10))])
    with pytest.raises(ValueError, match="at least one"):
        lp.pool_draws([])


def test_random_draw_seeds_follow_the_heads_stage_seeds():
    from vpe_lib.config import get_config
    from vpe_lib.stages.latents_stage import draw_name, draw_seeds
    cfg = get_config("smoke", {"seg.seeds": [3, 4, 5], "analysis.random_draws": 2})
    assert draw_seeds(cfg) == [3, 4]
    cfg = get_config("smoke", {"seg.seeds": [3], "analysis.random_draws": 3})
    assert draw_seeds(cfg) == [3, 4, 5]
    assert draw_name("random_tokenizer", 0, 3) == "random_tokenizer" and draw_name("random_ar", 1, 4) == "random_ar@4"
    with pytest.raises(ValueError, match="random_draws"):
        get_config("smoke", {"analysis.random_draws": 0})


def test_with_several_pretraining_seeds_the_pretrained_encoders_come_in_draws(tmp_path):
    """Draw k of a pretrained encoder reads pretraining seed k's models, as the heads stage's seed k does."""
    import torch

    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.data_stage import run_data_stage
    from vpe_lib.stages.latents_stage import build_encoders, draw_seeds
    from vpe_lib.stages.predict_stage import run_predict_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    over = {"pretrain.compare_quantizers": [], "pretrain.compare_steps": 0, "pretrain.train.steps": 3,
            "pretrain.extra_seeds": [1], "predict.train.steps": 3, "predict.study_maskings": [],
            "predict.n_sample_clips": 2, "predict.models": ["masked"], "predict.per_seed": True,
            "analysis.encoders": ["tokenizer", "masked", "random_masked"]}
    for stage, run in (("data", lambda c, o: run_data_stage(c, o, progress=False)),
                       ("pretrain", lambda c, o: run_pretrain_stage(c, tmp_path, o, progress=False)),
                       ("predict", lambda c, o: run_predict_stage(c, tmp_path, o, progress=False))):
        cfg, out = start_stage("smoke", tmp_path, stage, over)
        run(cfg, out)
    cfg, _ = start_stage("smoke", tmp_path, "latents", over)
    encoders = build_encoders(cfg, tmp_path, log=lambda s: None)
    s = draw_seeds(cfg)
    assert set(encoders) == {"tokenizer", f"tokenizer@{s[1]}", "masked", f"masked@{s[1]}", "random_masked",
                             *(f"random_masked@{x}" for x in s[1:])}  # two pretraining seeds: two pretrained draws

    def first_weight(module):
        return next(iter(module.state_dict().values())).float()

    from vpe_lib.stages.pretrain_stage import load_tokenizer

    tok1 = encoders[f"tokenizer@{s[1]}"][1]
    seed1 = load_tokenizer(tmp_path, weights=tmp_path / "pretrain" / "seeds" / "seed1" / "final.pt")
    assert torch.equal(first_weight(tok1), first_weight(seed1))
    assert not torch.equal(first_weight(encoders["tokenizer"][1]), first_weight(tok1))
    # the transformer of draw 1 is the one trained on seed 1's tokenizer, and reads that tokenizer's codes
    assert torch.equal(first_weight(encoders[f"masked@{s[1]}"][0].tokens), first_weight(encoders[f"random_masked@{s[1]}"][0].tokens))
    assert not torch.equal(first_weight(encoders["masked"][0].predictor), first_weight(encoders[f"masked@{s[1]}"][0].predictor))
