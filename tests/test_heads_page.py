"""The segmentation page's tables (vpe_lib.figures.heads_page)."""

from vpe_lib.figures import heads_page as page


def test_the_seeds_note_says_whether_the_seeds_vary_pretraining():
    assert "the seeds vary the pretraining too" in page.seeds_note(3, 3)
    assert "one pretrained tokenizer" in page.seeds_note(3, 1)


def test_the_convergence_and_study_tables_lay_out_their_rows():
    conv = page.convergence_table([{"method": "unet", "seed": 0, "steps": 960, "best_step": 900, "fg_iou": 0.75,
                                    "budget_steps": 480, "budget_fg_iou": 0.67, "curve_status": "converged"}])
    assert "| unet | 0 | 960 | 900 | 0.750 | 480, 0.670 | +0.080 | converged |" in conv
    row = {"pct": 10.0, "method": "tokenizer/conv/frozen", "fg_iou": 0.5, "fg_iou_std": 0.01, "ap": None, "ap50": None,
           "diff_vs_unet": {"mean": -0.05, "ci_low": -0.1, "ci_high": 0.0}, "diff_vs_random": None,
           "params": 455000.0, "train_s": 7.2, "lr": 0.003, "best_step": 90, "steps": 120, "curve": "converged"}
    table = page.study_table([row])
    assert table.count("\n") == 2 and "| 10% | tokenizer/conv/frozen | 0.500 ± 0.010 |" in table
    assert "| 90 / 120 | converged |" in table


def test_the_benchmark_table_reads_davis_coco_or_says_pushworld_has_none():
    assert "no external benchmark format" in page.benchmark_table([], None, 64)
    davis = [{"method": "unet", "labels": "labels100", "jf_mean": 0.41, "jf_mean_std": 0.01, "j_mean": 0.4, "f_mean": 0.42,
              "model_res_jf_mean": 0.45, "pooled_iou": 0.5}]
    out = page.benchmark_table(davis, {"jf_mean": 0.86, "j_mean": 0.9, "f_mean": 0.82}, 64)
    assert "| unet | 0.410 ± 0.010 |" in out and "truth at 64 px and back) | **0.860**" in out and "At 100% labels" in out
    coco = [{"method": "unet", "labels": "labels10", "jf_mean": None, "ap": 0.02, "ap50": 0.05, "pooled_iou": 0.3}]
    assert "mask AP (native, from the JSON)" in page.benchmark_table(coco, None, 64)


def test_baselines_lr_search_and_skipped_files():
    assert "| all_foreground | 0.160 |" in page.baselines_table({"all_foreground": {"fg_iou": 0.16}})
    lr = page.lr_table({"unet": {"labels10": {"0.003": 0.6, "0.01": 0.55}}}, [3e-3, 1e-2])
    assert "| unet | labels10 | 0.600 | 0.550 |" in lr
    lines = page.skipped_lines({"skipped": [{"path": "a.png", "reason": "unreadable"}],
                                "methods_not_run": [{"methods": ["masked"], "reason": "no video"}]})
    assert lines[0].startswith("**1 input files were skipped**") and "`a.png`: unreadable" in lines[0]
    assert lines[1] == "**Not run on this source:** masked: no video."
    assert page.skipped_lines({"skipped": []}) == []


def test_the_score_figure_and_sections_follow_the_source():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    row = {"fg_iou": 0.5, "fg_iou_objects": 0.4}
    per_seed = {"unet": {"labels100": [row, row]}, "tokenizer/conv/frozen": {"labels100": [row]},
                "tokenizer/conv/frozen/level0": {"labels100": [row]}}
    assert page.main_methods(per_seed) == ["unet", "tokenizer/conv/frozen"]
    fig = page.score_figure(per_seed, "seg")
    assert [ax.get_title() for ax in fig.axes] == ["objects + arm", "objects only"]
    fig = page.score_figure(per_seed, "seg/davis")  # DAVIS / COCO: no arm, no second panel
    assert [ax.get_title() for ax in fig.axes] == ["foreground (every labelled object)"]
    plt.close("all")
    assert "No convergence check" in page.convergence_markdown(None, [])
    assert page.bullets(["a", "b"]) == "- a\n- b"

    class Npz(dict):
        files = property(lambda self: list(self))
    preds = Npz(frames=np.zeros(1), truth=np.zeros(1), unet=np.ones(1), tokenizer__conv__frozen=np.ones(1),
                tokenizer__conv__frozen__level0=np.ones(1))
    assert list(page.shown_predictions(preds)) == ["unet", "tokenizer/conv/frozen"]
    block = page.protocol_markdown({"all background": {"fg_iou": 0.0}}, {"unet": {"labels100": {"0.003": 0.5}}},
                                   (3e-3,), {"skipped": [], "methods_not_run": [{"methods": ["ar"], "reason": "no video"}]})
    assert "| all background | 0.000 |" in block and "| unet | labels100 | 0.500 |" in block
    assert block.endswith("**Not run on this source:** ar: no video.")
