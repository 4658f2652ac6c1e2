"""Stage 03's own logic: clips, baselines, moving pixels, batches, likelihood, and the stage at the
smoke scale (the full notebook path is in test_pipeline)."""

import json

import numpy as np
import pytest
import torch

from vpe_lib.config import ConfigError, get_config
from vpe_lib.models.transformer import TransformerConfig, build_predictor
from vpe_lib.stages.masking_study import budget_name, mask_overlay
from vpe_lib.eval.token_baselines import copy_token_bits, fit_copy_eps, unigram_log_probs
from vpe_lib.stages.frame_prediction import frame_errors, moving_pixels, psnr_db, squared_error
from vpe_lib.stages.predict_stage import clip_starts
from vpe_lib.stages.predictor_training import TokenBatches, future_bits, load_predictor


def test_clips_do_not_overlap():
    assert clip_starts(30, 6) == [0, 6, 12, 18, 24]
    assert clip_starts(8, 4) == [0, 4]
    assert clip_starts(3, 4) == []


def test_unigram_is_normalised_and_smoothed():
    lp = unigram_log_probs(np.array([0, 0, 1]), 4)
    assert np.isclose(np.exp(lp).sum(), 1) and np.all(np.isfinite(lp))
    assert lp[0] > lp[1] > lp[2] == lp[3]


def test_copy_baseline_fits_its_mixing_weight():
    rng = np.random.default_rng(0)
    cond = rng.integers(0, 16, (200, 4, 4))
    future = np.repeat(cond[:, None], 2, axis=1).copy()
    change = rng.random(future.shape) < 0.3  # 30% of tokens change
    future[change] = rng.integers(0, 16, change.sum())
    uni = unigram_log_probs(future, 16)
    eps = fit_copy_eps(future, cond, uni)
    assert 0.2 < eps < 0.45  # about the share of changed tokens (a changed one may land on the same code)
    bits = copy_token_bits(future, cond, uni, eps).mean()
    assert bits < (-uni[future] / np.log(2)).mean()  # copying beats the unigram when most tokens stay


def test_moving_pixels_accumulate_and_ignore_the_camera():
    flow = np.zeros((4, 8, 8, 2), np.float32)
    flow[:, :, :, 0] = 1.0  # the camera pans: every pixel moves by 1 px, nothing moves relative to it
    flow[1, 2:4, 2:4, 0] = 3.0  # an object moves at step 1 -> 2
    m = moving_pixels(flow)
    assert m.shape == (4, 8, 8)
    assert not m[:2].any()
    assert m[2, 2:4, 2:4].all() and m[3, 2:4, 2:4].all() and m[2].sum() == 4


def test_frame_errors_whole_and_moving():
    true = np.zeros((2, 3, 4, 4, 3), np.uint8)
    pred = true.copy()
    pred[:, 1, :2] = 10
    moving = np.zeros((2, 3, 4, 4), bool)
    moving[:, 1, :2] = True
    whole, mov = frame_errors(squared_error(pred, true), moving)
    assert whole[0] == 0 and np.isclose(whole[1], 50.0) and mov[1] == 100.0 and np.isnan(mov[0])
    assert psnr_db(0.0) == float("inf") and np.isclose(psnr_db(255.0**2), 0.0)


def test_token_batches_are_a_function_of_the_step():
    tokens = {"codes": np.random.default_rng(0).integers(0, 32, (10, 2, 4, 4)).astype(np.int16),
              "cond": np.random.default_rng(1).integers(0, 32, (10, 1, 4, 4)).astype(np.int16)}
    b = TokenBatches(tokens, batch_size=4, seed=3)
    x, y, z = b(5), b(5), b(6)
    assert all(torch.equal(x[k], y[k]) for k in x) and not torch.equal(x["mask"], z["mask"])
    assert x["codes"].dtype == torch.int64 and x["mask"].dtype == torch.bool and x["mask"].shape == (4, 2, 4, 4)
    motion = np.random.default_rng(2).random((10, 2, 4, 4)).astype(np.float32)
    mgm = TokenBatches(tokens, batch_size=4, seed=3, masking="mgm", mask_ratio=0.5, motion=motion)(0)
    assert (mgm["mask"].flatten(1).sum(1) == 16).all()  # 0.5 of each 4x4 frame, 2 frames


def test_likelihood_in_bits_and_checkpoint_compatibility(tmp_path):
    cfg = TransformerConfig(codebook_size=8, grid=(2, 2, 2), dim=16, depth=1, heads=2)
    tokens = {"codes": np.random.default_rng(0).integers(0, 8, (5, 2, 2, 2)),
              "cond": np.random.default_rng(1).integers(0, 8, (5, 1, 2, 2))}
    for kind in ("masked", "ar"):
        torch.manual_seed(0)
        model = build_predictor(kind, cfg)
        bits = future_bits(model, tokens)
        assert bits.shape == (5, 1, 2, 2) and np.all(bits > 0) and abs(bits.mean() - 3.0) < 1.0  # ~uniform at init
        folder = tmp_path / kind
        folder.mkdir()
        torch.save(model.state_dict(), folder / "final.pt")
        (folder / "transformer.json").write_text(json.dumps({"kind": kind, **{k: getattr(cfg, k) for k in (
            "codebook_size", "grid", "cond_frames", "dim", "depth", "heads")}}))
        assert np.allclose(future_bits(load_predictor(folder, codebook_size=8, grid=(2, 2, 2)), tokens), bits)
        with pytest.raises(ValueError, match="codebook"):
            load_predictor(folder, codebook_size=16, grid=(2, 2, 2))


def test_prediction_config_is_checked_at_config_time():
    with pytest.raises(ConfigError, match="clip_frames"):
        get_config("smoke", {"predict.clip_frames": 40})  # longer than the 8-frame videos
    with pytest.raises(ConfigError, match="temporal factor"):
        get_config("smoke", {"predict.clip_frames": 3})
    with pytest.raises(ConfigError, match="mask_ratio"):
        get_config("smoke", {"predict.mask_ratio": 1.5})
    with pytest.raises(ConfigError, match="study_mask_ratio"):
        get_config("smoke", {"predict.study_mask_ratio": 1.0})
    with pytest.raises(ConfigError, match="study_maskings"):
        get_config("smoke", {"predict.study_maskings": ["zigzag"]})
    with pytest.raises(ConfigError, match="motion_source"):
        get_config("smoke", {"predict.motion_source": "optical_flow"})


def test_budget_names_and_mask_overlay():
    assert [budget_name(b) for b in (1.0, 2 / 3, 1 / 3, 0.5)] == ["x1", "x0.67", "x0.33", "x0.5"]
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0, 0] = True
    over = mask_overlay(frames, mask)
    assert over[:2, :4, :4].min() > 100 and over[2:].max() == 0 and over[:2, 4:].max() == 0


def test_a_changed_tokenizer_or_recipe_trains_afresh(tmp_path):
    """Runs are keyed by what determines them: never resumed or scored on another tokenizer's codes."""
    from vpe_lib.stages.predictor_training import predictor_folder, run_folder
    from vpe_lib.train.loop import TrainConfig

    cfg = TransformerConfig(codebook_size=8, grid=(2, 2, 2), dim=16, depth=1, heads=2)
    tc = TrainConfig(steps=10)
    a = run_folder(tmp_path / "masked", "tokA", cfg, tc, "random", 0.0)
    assert a == run_folder(tmp_path / "masked", "tokA", cfg, TrainConfig(steps=10, progress=False), "random", 0.0)
    assert a != run_folder(tmp_path / "masked", "tokB", cfg, tc, "random", 0.0)
    assert a != run_folder(tmp_path / "masked", "tokA", cfg, TrainConfig(steps=20), "random", 0.0)
    assert a != run_folder(tmp_path / "masked", "tokA", cfg, tc, "mgm", 0.75)
    with pytest.raises(FileNotFoundError, match="03_predict"):
        predictor_folder(tmp_path, "masked")
    (tmp_path / "masked").mkdir()
    (tmp_path / "masked" / "latest.json").write_text(json.dumps({"folder": a.name}))
    assert predictor_folder(tmp_path, "masked") == a


def test_code_table_learns_a_relabelling_that_copying_misses():
    """A tokenizer may code the same patch differently at another latent time index: the table
    baseline learns that mapping, plain copying cannot."""
    from vpe_lib.eval.token_baselines import code_table, code_table_bits, fit_table_eps

    rng = np.random.default_rng(0)
    cond = rng.integers(0, 8, (300, 3, 3))
    future = ((cond + 8)[:, None]).repeat(2, axis=1)  # code c always becomes c + 8
    noisy = future.copy()
    flip = rng.random(noisy.shape) < 0.1
    noisy[flip] = rng.integers(0, 16, flip.sum())
    uni = unigram_log_probs(noisy[:200], 16)
    counts = code_table(noisy[:200], cond[:200], 16)
    eps = fit_table_eps(noisy[200:250], cond[200:250], counts, uni)
    table = code_table_bits(noisy[250:], cond[250:], counts, uni, eps).mean()
    copy = copy_token_bits(noisy[250:], cond[250:], uni, fit_copy_eps(noisy[:200], cond[:200], uni)).mean()
    assert table < 1.0 < copy  # ~0.6 bits against ~3 bits
    unseen = code_table_bits(np.array([[[[3]]]]), np.array([[[15]]]), counts, uni, eps)  # code 15 never conditioned
    assert np.isclose(unseen, -uni[3] / np.log(2)).all()
