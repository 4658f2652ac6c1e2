"""The segmentation protocol's rules (vpe_lib.stages.seg_protocol): label budgets by video, the method grid and
its names, the learning-rate choice on validation, and what identifies a run."""

import dataclasses

import numpy as np
import pytest

from vpe_lib.config import get_config
from vpe_lib.stages.seg_protocol import (
    Method,
    budget_index,
    budget_videos,
    choose_lr,
    main_methods,
    method_from_name,
    pct_name,
    run_key,
    seg_identity,
)


def test_label_budgets_are_by_video_paired_by_seed_and_nested_in_size():
    vids = np.repeat(np.arange(50), 6)
    a, b = budget_videos(vids, 10, seed=0), budget_videos(vids, 10, seed=0)
    assert np.array_equal(a, b) and len(a) == 5  # the same videos for every method at one seed
    assert not np.array_equal(a, budget_videos(vids, 10, seed=1))  # seeds vary the subset
    assert len(budget_videos(vids, 1, seed=0)) == 1  # at least one video
    assert np.array_equal(budget_videos(vids, 100, seed=3), np.arange(50))
    idx = budget_index(vids, 10, seed=0)
    assert set(np.unique(vids[idx])) == set(a) and len(idx) == 5 * 6  # every frame of a chosen video
    with pytest.raises(ValueError, match="label budget"):
        budget_videos(vids, 0, seed=0)
    assert pct_name(10.0) == "labels10" and pct_name(1.0) == "labels1" and pct_name(0.5) == "labels0.5"


def test_method_grid_and_names():
    methods = main_methods(["tokenizer", "pixels"], ["conv"], ["frozen", "finetuned"])
    names = [m.name for m in methods]
    # pixels have no weights to fine-tune; the UNet always closes the grid
    assert names == ["tokenizer/conv/frozen", "tokenizer/conv/finetuned", "pixels/conv/frozen", "unet"]
    assert Method("tokenizer", "linear", "frozen", ("mid",), "probe-mid").name == "tokenizer/linear/frozen/probe-mid"
    with pytest.raises(ValueError, match="unknown encoder"):
        main_methods(["dino"], ["conv"], ["frozen"])
    # head_encoders: only they run every head; the others run the first (main) head
    limited = main_methods(["tokenizer", "masked"], ["conv", "linear"], ["frozen"], head_encoders=["tokenizer"])
    assert [m.name for m in limited] == ["tokenizer/conv/frozen", "tokenizer/linear/frozen", "masked/conv/frozen",
                                         "unet"]
    # the prediction transformers fine-tune only when asked (the seed paper's best configuration)
    assert "masked/conv/finetuned" not in [m.name for m in main_methods(["masked"], ["conv"], ["frozen", "finetuned"])]
    assert [m.name for m in main_methods(["masked", "random_ar"], ["conv"], ["finetuned"], finetune_predictors=True)] \
        == ["masked/conv/finetuned", "random_ar/conv/finetuned", "unet"]


def test_lr_choice_is_on_validation_with_ties_to_the_smaller_rate():
    assert choose_lr({1e-3: 0.5, 3e-3: 0.6}) == 3e-3
    assert choose_lr({1e-3: 0.6, 3e-3: 0.6}) == 1e-3
    assert choose_lr({1e-3: float("nan"), 3e-3: 0.1}) == 3e-3
    with pytest.raises(ValueError, match="no learning rate"):
        choose_lr({1e-3: float("nan")})


def test_run_key_changes_with_anything_that_determines_the_run():
    base = run_key(Method("unet"), 10.0, 0, 1e-3, {"steps": 100})
    assert base == run_key(Method("unet"), 10.0, 0, 1e-3, {"steps": 100})
    assert base != run_key(Method("unet"), 10.0, 0, 1e-3, {"steps": 101})
    assert base != run_key(Method("unet"), 10.0, 1, 1e-3, {"steps": 100})


def test_method_names_round_trip_and_the_convergence_check_is_not_part_of_a_run_identity():
    for m in main_methods(["tokenizer", "pixels"], ["conv", "linear"], ["frozen", "finetuned"]):
        assert method_from_name(m.name) == m
    with pytest.raises(ValueError, match="encoder"):
        method_from_name("tokenizer/conv")
    s = get_config("study").seg
    base = seg_identity(s)
    assert "convergence_steps" not in base and "progress" not in base["train"]
    assert seg_identity(dataclasses.replace(s, convergence_steps=1920, convergence_methods=("unet",))) == base
    assert seg_identity(dataclasses.replace(s, budget_steps=(120, 240, 1920))) != base
    with pytest.raises(ValueError, match="convergence_methods"):
        dataclasses.replace(s, convergence_methods=("tokenizer/conv/thawed",))
    with pytest.raises(ValueError, match="convergence_steps"):
        dataclasses.replace(s, convergence_steps=-1)
