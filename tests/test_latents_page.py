"""The latent-analysis page's figures and tables (vpe_lib.figures.latents_page)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vpe_lib.figures import latents_page as page  # noqa: E402


def test_notes_and_tables():
    m = {"latents/n_probe_train_frames": 120.0, "latents/n_probe_test_frames": 60.0, "latents/n_probe_test_videos": 20.0,
         "latents/code_purity/tokenizer": 0.61, "latents/code_purity/tokenizer_ci_low": 0.58,
         "latents/code_purity/tokenizer_ci_high": 0.64, "latents/code_purity/tokenizer_chance": 0.5,
         "latents/codes_on_probe_frames/tokenizer": 300.0, "latents/code_perplexity": 512.0, "latents/dead_codes": 3.0}
    note = page.probes_note(m, [2, 10, 20], ["ar"])
    assert "120 frames of training videos" in note and "(frames 2, 10, 20 of each)" in note and "trained): ar." in note
    assert "| `tokenizer` | 0.610 [0.580, 0.640] | 0.500 | 300 |" in page.code_purity_table(m)
    from vpe_lib.figures.tables import metrics_table
    assert "| `x` | — |" in metrics_table({"x": None}) and "| `y` | 0.5 |" in metrics_table({"y": 0.5})
    fig = page.code_usage_figure(np.array([0, 5, 3, 0]), m)
    assert fig.axes[0].get_title().startswith("2 of 4 codes used")
    plt.close(fig)


def test_figures_draw_every_encoder_and_class():
    rows = [{"encoder": "tokenizer", "fg_auroc": (0.8, 0.7, 0.9)}, {"encoder": "random_tokenizer", "fg_auroc": (0.6, 0.5, 0.7)}]
    fig = page.interval_panels(rows, ["fg_auroc"], ["foreground"], reference=0.5, width=5)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "foreground"
    plt.close(fig)
    rng = np.random.default_rng(0)
    z = {"embedding_pretrained": rng.normal(size=(30, 2)), "majority_pretrained": np.repeat([0, 1, 2], 10)}
    fig = page.embedding_figure(z, ["background", "arm", "object"], "umap")
    assert fig.axes[0].get_title() == "pretrained encoder (UMAP)" and len(fig.axes[0].collections) == 3
    plt.close(fig)


def _probe_metrics():
    m = {"latents/fate_frames": 4.0, "latents/common_fate_prevalence": 0.25, "latents/fg_prevalence": 0.2,
         "latents/fg_accuracy/majority_class": 0.8, "latents/umap_wall_s": 3.25}
    for key, (enc, v) in [(k, e) for k in ("motion_r2", "speed_r2", "mv_r2", "common_fate_auroc", "fg_auroc",
                                          "fg_balanced_acc") for e in (("tokenizer", 0.6), ("random_tokenizer", 0.5))]:
        m[f"latents/{key}/{enc}"], m[f"latents/{key}/{enc}_ci_low"], m[f"latents/{key}/{enc}_ci_high"] = v, v - 0.1, v + 0.1
    return m


def test_the_page_sections_give_a_table_and_a_figure_from_the_stage_metrics():
    m = _probe_metrics()
    rows = page.probe_rows(m)
    assert [r["encoder"] for r in rows] == ["tokenizer", "random_tokenizer"]
    md, fig = page.motion_section(rows, "codec")
    assert "flow (dx, dy) R²" in md and len(fig.axes) == 3 and "(codec)" in fig.axes[2].get_title()
    md, fig = page.fate_section(rows, m)
    assert md.startswith("k = 4 frames; 25.0% of test tokens") and "moves within 4 frames" in fig.axes[0].get_title()
    md, fig = page.foreground_section(rows, m)
    assert "always answering *background* is 80.0% accurate" in md and "| *majority class* | 0.500 | 0.500 |" in md
    assert len(fig.axes) == 2
    plt.close("all")
    assert "No pretrained encoder" in page.twin_differences_markdown([])
    assert page.embedding_time_line(m).startswith("Embedding time: 3.2 s")
    assert page.hover_html({}, ["background"]) is None  # the stage embedded nothing: no hover figure
