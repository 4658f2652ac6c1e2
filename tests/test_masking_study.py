"""The masking study's answer: paired differences of MGM at a third of the budget against the others at
the full one, and the share of tokens each strategy actually masks."""

from __future__ import annotations

import numpy as np
import pytest

from vpe_lib.config import get_config
from vpe_lib.stages.masking_study import actual_mask_ratios, masking_differences


def runs(values):
    return [{"probe_fg_iou": v, "motion_r2": v / 2} for v in values]


def test_mgm_third_against_random_and_tube_at_full_budget_paired_by_seed():
    per_seed = {"mgm/x0.33": runs([0.30, 0.32, 0.31]), "random/x1": runs([0.25, 0.28, 0.26]),
                "tube/x1": runs([0.31, 0.33, 0.30]), "mgm/x1": runs([0.35, 0.36, 0.34])}
    m = masking_differences(per_seed, ("random", "tube", "mgm"), (1.0, 1 / 3))
    key = "masking/mgm/x0.33/minus_random_x1/probe_fg_iou"
    assert m[f"{key}/mean"] == pytest.approx(0.0467, abs=1e-3) and m[f"{key}/n"] == 3
    assert 0 < m[f"{key}/ci_low"] < m[f"{key}/mean"] < m[f"{key}/ci_high"]  # MGM 1/3 beats random 1x here
    tube = "masking/mgm/x0.33/minus_tube_x1/probe_fg_iou"
    assert m[f"{tube}/ci_low"] < 0 < m[f"{tube}/ci_high"]  # no measurable difference
    assert "masking/mgm/x0.33/minus_random_x1/motion_r2/mean" in m
    # without the 1/3 budget only MGM 1x - random 1x is left
    full = masking_differences(per_seed, ("random", "mgm"), (1.0,))
    assert not any("x0.33" in k for k in full)
    assert full["masking/mgm/x1/minus_random_x1/probe_fg_iou/mean"] == pytest.approx(0.0867, abs=1e-3)


def test_actual_mask_ratio_follows_the_study_ratio():
    p = get_config("smoke").predict
    grid = (2, 4, 4)
    tokens = {"codes": np.zeros((8, *grid), np.int16), "cond": np.zeros((8, 1, 4, 4), np.int16)}
    p.study_maskings, p.study_mask_ratio = ("random", "tube"), 0.75
    fixed = actual_mask_ratios(p, grid, None, tokens)
    assert fixed["masking/random/actual_mask_ratio"] == pytest.approx(0.75, abs=0.02)
    assert 0.5 < fixed["masking/tube/actual_mask_ratio"] <= 1
    p.study_mask_ratio = 0.0  # the cosine schedule: mean ratio 2/pi
    sched = actual_mask_ratios(p, grid, None, tokens)
    assert sched["masking/random/actual_mask_ratio"] == pytest.approx(2 / np.pi, abs=0.06)
