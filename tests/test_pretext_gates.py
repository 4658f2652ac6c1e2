"""The pretext gates: each pretrained model judged on its own task before anything is built on it,
and a downstream sentence about a model that failed its gate saying so."""

from __future__ import annotations

from vpe_lib.eval.pretext_gates import failed_clause, gate_metrics, gate_table_html, pretext_gates
from vpe_lib.stages.results_stage import answers

BASE = {
    "tokenizer/psnr_db": 23.1, "tokenizer/jpeg_psnr_db_at_same_rate": 22.8,
    "tokenizer/seed1/psnr_db": 22.5, "tokenizer/seed2/psnr_db": 23.0,
    "predict/code_table/nll_bits_per_token": 6.5,
    "predict/masked/nll_bits_per_token": 7.6,  # loses to the table: fails
    "predict/ar/nll_bits_per_token": 5.4,  # beats it: passes
    "predict/masked/psnr_db_static": 20.0, "predict/copy_tokens/psnr_db_static": 21.0,
    "predict/masked/psnr_db_moving": 14.0, "predict/copy_pixels/psnr_db_moving": 12.0,
}


def by(rows, model, seed=0):
    return next(r for r in rows if r["model"] == model and r["seed"] == seed)


def test_gates_pass_and_fail_with_margins():
    rows = pretext_gates(BASE)
    assert by(rows, "tokenizer")["passed"] and abs(by(rows, "tokenizer")["margin"] - 0.3) < 1e-9
    assert not by(rows, "tokenizer", 1)["passed"] and by(rows, "tokenizer", 2)["passed"]
    assert not by(rows, "masked")["passed"] and abs(by(rows, "masked")["margin"] + 1.1) < 1e-9
    assert by(rows, "ar")["passed"] and abs(by(rows, "ar")["margin"] - 1.1) < 1e-9
    samples = by(rows, "masked_samples")  # static pixels worse than copying the tokens: fails
    assert not samples["passed"] and abs(samples["margin"] + 1.0) < 1e-9


def test_gate_metrics_names():
    m = gate_metrics(pretext_gates(BASE))
    assert m["gate/masked/seed0/passed"] == 0.0 and m["gate/ar/seed0/passed"] == 1.0
    assert m["gate/tokenizer/seed1/passed"] == 0.0 and abs(m["gate/tokenizer/seed1/margin"] + 0.3) < 1e-9


def test_per_seed_predictors_use_their_own_table():
    m = {"predict/code_table/nll_bits_per_token": 6.5,
         "predict/masked/seed0/nll_bits_per_token": 6.0, "predict/code_table/seed0/nll_bits_per_token": 6.4,
         "predict/masked/seed1/nll_bits_per_token": 6.6, "predict/code_table/seed1/nll_bits_per_token": 6.7}
    rows = [r for r in pretext_gates(m) if r["model"] == "masked"]
    assert [(r["seed"], r["passed"]) for r in rows] == [(0, True), (1, True)]
    assert abs(rows[1]["margin"] - 0.1) < 1e-9


def test_a_failed_gate_is_said_in_the_same_sentence():
    assert failed_clause(BASE, "ar") == ""
    assert "did not beat the code table" in failed_clause(BASE, "masked")
    assert "1 of 3 seeds" in failed_clause(BASE, "tokenizer")
    m = {**BASE, "seg/fg_iou/masked/conv/frozen/labels10": 0.5,
         "seg/diff_vs_unet/masked/conv/frozen/labels10/mean": -0.1,
         "seg/diff_vs_unet/masked/conv/frozen/labels10/ci_low": -0.2,
         "seg/diff_vs_unet/masked/conv/frozen/labels10/ci_high": -0.05}
    sentence = answers(m, n_seeds=3)[0]
    assert sentence.startswith("At 10% labels") and "failed its gate" in sentence


def test_margins_over_the_pretraining_seeds_get_a_paired_interval():
    m = gate_metrics(pretext_gates(BASE))  # tokenizer margins +0.3, -0.3, +0.2 dB over three seeds
    assert abs(m["gate/tokenizer/margin/mean"] - 0.2 / 3) < 1e-9 and m["gate/tokenizer/margin/n"] == 3.0
    assert m["gate/tokenizer/margin/ci_low"] < 0 < m["gate/tokenizer/margin/ci_high"]
    assert "gate/masked/margin/mean" not in m  # one seed: no interval
    seeds = {"predict/masked/seed0/nll_bits_per_token": 6.0, "predict/code_table/seed0/nll_bits_per_token": 6.8,
             "predict/masked/seed1/nll_bits_per_token": 6.5, "predict/code_table/seed1/nll_bits_per_token": 7.2,
             "predict/masked/seed2/nll_bits_per_token": 7.0, "predict/code_table/seed2/nll_bits_per_token": 7.8}
    page = gate_table_html(seeds)
    assert "masked: margin +0.767 bits" in page and "over 3 pretraining seeds (excludes 0)" in page


def test_gate_table_shows_fail():
    html = gate_table_html(BASE)
    assert html.count("FAIL") == 3 and "pass" in html
    assert "No pretraining gate" in gate_table_html({})


def test_seed_paper_rows_carry_the_gate_of_the_pretraining_behind_them():
    from vpe_lib.stages.results_stage import seed_paper_rows

    m = {**BASE}
    for name, v in (("masked/conv/finetuned", 0.70), ("random_masked/conv/finetuned", 0.69), ("unet", 0.72),
                    ("ar/conv/finetuned", 0.71)):
        m[f"seg/fg_iou/{name}/labels100"], m[f"seg/fg_iou_std/{name}/labels100"] = v, 0.01
        m[f"seg/fg_iou/{name}/labels10"] = v - 0.1
    rows = {r["method"]: r for r in seed_paper_rows(m)}
    assert set(rows) == {"masked/conv/finetuned", "random_masked/conv/finetuned", "ar/conv/finetuned", "unet"}
    assert rows["masked/conv/finetuned"]["labels"] == "100%" and rows["masked/conv/finetuned"]["fg_iou"] == 0.70
    assert "did not beat the code table" in rows["masked/conv/finetuned"]["pretext"]
    assert rows["ar/conv/finetuned"]["pretext"] == "passed its gate" and rows["unet"]["pretext"] == "—"


def test_seed_paper_rows_stand_at_the_budget_the_fine_tuned_transformers_ran_at():
    from vpe_lib.stages.results_stage import seed_paper_rows

    m = {**BASE}
    m["seg/fg_iou/masked/conv/finetuned/labels1"] = 0.40  # the study fine-tunes the transformers at 1% only
    for name in ("unet", "tokenizer/conv/finetuned"):
        m[f"seg/fg_iou/{name}/labels1"], m[f"seg/fg_iou/{name}/labels100"] = 0.30, 0.70
    rows = {r["method"]: r for r in seed_paper_rows(m)}
    assert {r["labels"] for r in rows.values()} == {"1%"}  # like for like, not the UNet at 100%
    assert rows["unet"]["fg_iou"] == 0.30 and rows["masked/conv/finetuned"]["fg_iou"] == 0.40
