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
