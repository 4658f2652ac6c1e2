"""Closed-form probes: ridge recovers a linear map, R² conventions, the foreground probe's IoU."""

import numpy as np
import pytest

from vpe_lib.eval.probes import (flatten_tokens, foreground_probe_iou, motion_probe_r2, r2_score, ridge_fit,
                                 ridge_predict, token_targets)


def test_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.array([1, 10, 100, 0.1, 1, 1])  # scales differ: standardised inside
    w = rng.normal(size=(6, 2))
    y = x @ w + 3.0
    pred = ridge_predict(ridge_fit(x, y, alpha=1e-6), x)
    assert np.allclose(pred, y, atol=1e-3)


def test_r2_conventions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y, -y) < 0
    assert np.isnan(r2_score(np.ones(4), np.ones(4)))


def test_ridge_rejects_bad_shapes():
    with pytest.raises(ValueError, match="ridge_fit"):
        ridge_fit(np.zeros((4, 2)), np.zeros(5))


def test_token_targets_and_flatten():
    v = np.zeros((2, 8, 8)); v[:, :4, :4] = 1
    t = token_targets(v, 4)
    assert t.shape == (2, 2, 2) and t[0, 0, 0] == 1 and t[0, 1, 1] == 0
    f = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    rows = flatten_tokens(f)
    assert rows.shape == (8, 3) and (rows[1] == f[0, :, 0, 1]).all()


def test_foreground_probe_separates_informative_from_noise_features():
    rng = np.random.default_rng(1)
    n, h = 40, 4
    fg = np.zeros((n, 16, 16), bool)
    for i in range(n):
        r, c = rng.integers(0, 3, 2) * 4
        fg[i, r:r + 8, c:c + 8] = True
    informative = token_targets(fg, 4)[:, None] + 0.05 * rng.normal(size=(n, 1, h, h))
    feats = np.concatenate([informative, rng.normal(size=(n, 3, h, h))], axis=1)
    noise = rng.normal(size=(n, 4, h, h))
    good = foreground_probe_iou(feats[:30], fg[:30], feats[30:], fg[30:])
    bad = foreground_probe_iou(noise[:30], fg[:30], noise[30:], fg[30:])
    assert good > 0.8 and bad < 0.5
    motion = token_targets(fg.astype(float), 4)
    assert motion_probe_r2(feats[:30], motion[:30], feats[30:], motion[30:]) > 0.9
    assert motion_probe_r2(noise[:30], motion[:30], noise[30:], motion[30:]) < 0.3
