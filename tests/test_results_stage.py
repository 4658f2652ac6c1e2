"""The results stage (vpe_lib.stages.results_stage): table rows, the one-sentence answers from the paired
intervals and the gates, the convergence notes, and which stages it reads."""

from study_metrics import study_metrics

from vpe_lib.report.index import render_index
from vpe_lib.stages.results_stage import answers, convergence_notes, segmentation_rows, study_rows


def test_study_rows_one_per_method_and_budget_sorted_by_budget():
    rows = study_rows(study_metrics())
    assert [(r["pct"], r["method"]) for r in rows][:2] == [(10.0, "unet"), (10.0, "tokenizer/conv/frozen")]
    assert len(rows) == 10  # 5 methods (the colour baseline has budget rows too) x 2 budgets
    by = {(r["method"], r["labels"]): r for r in rows}
    assert by[("unet", "labels100")]["curve"] == "still rising (33% of seeds)"
    assert by[("tokenizer/conv/frozen", "labels100")]["curve"] == "converged"
    assert by[("tokenizer/conv/frozen", "labels10")]["diff_vs_unet"]["ci_low"] == 0.02
    # the flat alias seg/fg_iou/unet is not a row of its own
    assert not any(r["method"] == "unet" and r["labels"] == "" for r in rows)


def test_answers_come_from_the_interval_not_the_mean():
    text = answers(study_metrics(), n_seeds=3)
    ten = [t for t in text if t.startswith("At 10% labels") and "UNet" in t]
    hundred = [t for t in text if t.startswith("At 100% labels") and "UNet" in t]
    assert len(ten) == 1 and "beats the UNet" in ten[0] and "no measurable" not in ten[0]
    assert len(hundred) == 1 and "no measurable difference" in hundred[0]
    assert not any("probe-" in t for t in text)  # ablations stay in the table


def test_segmentation_rows_largest_budget_plus_trivial_baselines():
    rows = segmentation_rows(study_metrics())
    names = [r["model"] for r in rows]
    assert "all_foreground" in names and "unet" in names and "tokenizer/conv/frozen" in names
    assert len(names) == len(set(names))


def test_segmentation_rows_of_a_real_data_source_use_its_prefix():
    from vpe_lib.stages.results_stage import seg_prefix

    coco = {k.replace("seg/", "seg/coco/", 1): v for k, v in study_metrics().items() if k.startswith("seg/")}
    assert seg_prefix(coco) == "seg/coco"
    rows = segmentation_rows(coco, seg_prefix(coco))
    assert [r["model"] for r in rows] == [r["model"] for r in segmentation_rows(study_metrics())]
    assert segmentation_rows(coco) == []  # the PushWorld prefix finds none of them


def test_convergence_notes_say_what_training_longer_gave():
    m = study_metrics()
    assert convergence_notes(m) == []  # no check in this run
    for name, (fg, gain, rising) in (("tokenizer/conv/finetuned", (0.70, 0.004, 0.0)), ("unet", (0.74, 0.04, 1.0))):
        m.update({f"seg/convergence/{name}/{k}": v for k, v in (("steps", 1920), ("budget_steps", 480), ("fg_iou", fg),
                                                               ("gain", gain), ("still_rising", rising))})
    unet, tok = convergence_notes(m)  # the UNet first
    assert "Convergence check, 1 seed: the UNet from scratch trained for 1920 updates instead of 480 scores 0.740" in unet
    assert "+0.040 against the grid's runs" in unet and "the longer curve was still rising" in unet
    assert "within 0.01 of the grid's runs (+0.004)" in tok and "still rising" not in tok and "UNet" not in tok
    # three seeds: the share of curves still rising, and the paired interval against the UNet trained as long
    for name in ("unet", "tokenizer/conv/finetuned"):
        m[f"seg/convergence/{name}/n_seeds"] = 3
    m["seg/convergence/unet/still_rising"] = 2 / 3
    m.update({"seg/convergence/tokenizer/conv/finetuned/diff_vs_unet/" + k: v
              for k, v in (("mean", -0.04), ("ci_low", -0.07), ("ci_high", -0.01))})
    unet, tok = convergence_notes(m)
    assert "3 seeds" in unet and "67% of the longer curves still rose" in unet
    assert "Trained as long: the UNet beats tokenizer/conv/finetuned by 0.040" in tok
    summary = {"metrics": m, "provenance": {"profile": "study", "commit": "abc", "dirty": False,
                                            "hardware": {"cpu_count": 2, "gpu": None}, "torch": "x", "start_time": "t"},
               "wall_time_s": {"total": 1.0}, "status": "ok"}
    assert "Convergence check, 3 seeds: the UNet" in render_index(summary, [])


def test_results_read_the_stages_that_ran_and_require_the_study(tmp_path):
    """A run whose heads trained on COCO images has no latent analysis (it needs PushWorld's videos):
    the results stage reads what is there and says what is not; without the study it refuses."""
    import json

    import pytest

    from vpe_lib.stages.common import MissingArtifactError
    from vpe_lib.stages.results_stage import collect_metrics, missing_stages

    for stage, metrics in (("data", {"data/n": 1.0}), ("heads", {"seg/coco/fg_iou/unet/labels100": 0.1})):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "metrics.json").write_text(json.dumps(metrics))
    assert collect_metrics(tmp_path) == {"data/n": 1.0, "seg/coco/fg_iou/unet/labels100": 0.1}
    assert missing_stages(tmp_path) == ["pretrain", "predict", "latents"]
    (tmp_path / "heads" / "metrics.json").unlink()
    with pytest.raises(MissingArtifactError, match="heads"):
        collect_metrics(tmp_path)


def test_the_four_questions_are_answered_from_their_intervals_with_the_gates():
    from vpe_lib.stages.results_stage import question_answers, question_sentences, what_was_run

    m = {"seg/n_seeds": 3, "data/n_train_videos": 240.0, "data/n_test_videos": 40.0, "data/frames_per_video": 30.0,
         "tokenizer/params": 1.1e6, "tokenizer/steps": 1000.0, "tokenizer/train_wall_s": 1680.0,
         "tokenizer/psnr_db": 23.5, "tokenizer/jpeg_psnr_db_at_same_rate": 22.8,
         "predict/masked/nll_bits_per_token": 6.9, "predict/ar/nll_bits_per_token": 7.9,
         "predict/code_table/nll_bits_per_token": 7.7}
    for method in ("tokenizer/conv/frozen", "unet", "masked/conv/frozen", "ar/conv/frozen"):
        m[f"seg/fg_iou/{method}/labels10"] = 0.5

    def put(key, mean, lo, hi, n=None):
        m.update({f"{key}/mean": mean, f"{key}/ci_low": lo, f"{key}/ci_high": hi})
        if n is not None:
            m[f"{key}/n"] = n

    put("seg/diff_vs_unet/tokenizer/conv/frozen/labels10", -0.05, -0.14, 0.04)
    put("seg/diff_vs_tokenizer/masked/conv/frozen/labels10", 0.03, 0.01, 0.05)
    put("seg/diff_vs_ar/masked/conv/frozen/labels10", -0.02, -0.03, -0.01)
    put("masking/mgm/x0.33/minus_random_x1/probe_fg_iou", -0.01, -0.05, 0.03, n=3)
    qs = dict(question_answers(m))
    assert len(qs) == 4
    (a,) = [v for k, v in qs.items() if k.startswith("(a)")]
    assert a[0].startswith("At 10% labels: no measurable difference between the frozen tokenizer")
    assert a[-1] == "Pretraining: the tokenizer passed its own task at 1 of 1 seeds."
    (b,) = [v for k, v in qs.items() if k.startswith("(b)")]
    assert b[0].startswith("At 10% labels: the masked transformer's states beats the tokenizer's maps by 0.030")
    assert "the autoregressive model did not beat the code table" in b[-1]  # 7.9 bits against the table's 7.7
    (c,) = [v for k, v in qs.items() if k.startswith("(c)")]
    assert c[0].startswith("At 10% labels: the autoregressive one beats the masked transformer by 0.020")
    (d,) = [v for k, v in qs.items() if k.startswith("(d)")]
    assert d[0].startswith("no measurable difference between MGM at a third of the budget and random masking")
    assert "3 seeds" in d[0]
    assert what_was_run(m).startswith("What ran: PushWorld (synthetic video with exact labels): 240 training")
    # the first screen's one sentence per question groups the budgets by verdict, with the intervals
    put("seg/diff_vs_unet/tokenizer/conv/frozen/labels100", -0.1, -0.13, -0.07)
    m["seg/fg_iou/tokenizer/conv/frozen/labels100"] = 0.5
    short = dict(question_sentences(m))
    assert len(short) == 4
    (a,) = [v for k, v in short.items() if k.startswith("(a)")]
    assert ("frozen, behind at 100% (-0.100 [-0.130, -0.070]); no measurable difference at 10% (-0.050 [-0.140, 0.040])"
            in a) and a.endswith("(the tokenizer passed its own task at 1 of 1 seeds).")
    (d,) = [v for k, v in short.items() if k.startswith("(d)")]
    assert "against random masking on the linear foreground probe, no measurable difference (-0.010 [-0.050, 0.030])" in d
    assert what_was_run({**m, "tokenizer/real_train_videos": 3.0}).startswith(
        "What ran: the encoders pretrained on 3 real training videos; segmentation on PushWorld's")
    real = {**m, "seg/davis/n_train_frames": 55.0, "seg/davis/n_test_frames": 40.0}
    assert what_was_run(real, "seg/davis").startswith("What ran: DAVIS (real labelled frames, split by sequence): 55 "
                                                      "training and 40 test frames; the encoders pretrained on its "
                                                      "training sequences;")
