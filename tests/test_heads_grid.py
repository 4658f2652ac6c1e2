"""The heads grid's plan (vpe_lib.stages.heads_grid): where the learning rate is searched, what each row costs,
and which methods run at which label budgets."""

from vpe_lib.config import get_config
from vpe_lib.stages.heads_grid import grid_plan, row_work, searches_lr
from vpe_lib.stages.seg_protocol import Method, main_methods


def test_lr_search_at_chosen_budgets_only():
    s = get_config("study").seg  # lr searched at 10% only: 2 rates + 2 more seeds there, 3 seeds elsewhere
    assert [searches_lr(s, q) for q in s.label_pcts] == [False, True, False]
    unet = Method("unet")
    assert [row_work(unet, q, s)[1] for q in s.label_pcts] == [120 * 3, 240 * 4, 480 * 3]
    s.lr_search_pcts = ()
    assert all(searches_lr(s, q) for q in s.label_pcts) and row_work(unet, 1.0, s)[1] == 120 * 4


def test_fine_tuned_predictors_and_other_heads_run_at_the_budgets_asked():
    s = get_config("study").seg
    methods = main_methods(["tokenizer", "masked"], ["conv", "linear"], ["frozen", "finetuned"],
                           finetune_heads=["conv"], head_encoders=["tokenizer"], finetune_predictors=True)
    plan = [(m.name, pct) for m, pct in grid_plan(methods, [], s)]
    assert s.finetune_predictor_pcts == (1.0,)  # the study fine-tunes the transformers at 1% only (their cost)
    assert [p for n, p in plan if n == "masked/conv/finetuned"] == [1.0]
    assert [p for n, p in plan if n == "tokenizer/conv/finetuned"] == [10.0, 1.0, 100.0]  # the searched budget first
    assert [p for n, p in plan if n == "masked/conv/frozen"] == [10.0, 1.0, 100.0]
    assert s.head_comparison_pcts == (10.0,)  # the study compares heads at one budget
    assert [p for n, p in plan if n == "tokenizer/linear/frozen"] == [10.0]
    s.head_comparison_pcts = s.finetune_predictor_pcts = ()  # empty: every budget
    plan = [(m.name, pct) for m, pct in grid_plan(methods, [], s)]
    assert [p for n, p in plan if n == "tokenizer/linear/frozen"] == [10.0, 1.0, 100.0]
    assert [p for n, p in plan if n == "masked/conv/finetuned"] == [10.0, 1.0, 100.0]
