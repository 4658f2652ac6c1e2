"""The prediction page's tables and figures (vpe_lib.figures.predict_page) from a predict stage's metrics."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vpe_lib.figures import predict_page as page  # noqa: E402


def _metrics():
    m = {"predict/uniform_bits_per_token": 10.0, "predict/copy_tokens/mixing_weight": 0.5,
         "predict/n_test_clips": 40.0, "predict/tokens_per_clip": 512.0, "predict/n_sample_clips": 16.0,
         "predict/moving_pixel_fraction": 0.12, "predict/copy_tokens/exact_share": 0.0}
    for n, bits in (("unigram", 9.0), ("copy_tokens", 9.1), ("code_table", 7.7), ("masked", 6.9), ("ar", 7.9)):
        m[f"predict/{n}/nll_bits_per_token"] = bits
        m[f"predict/{n}/horizon1/nll_bits_per_token"] = bits - 0.1
        m[f"predict/{n}/val_bits_per_token"] = bits
    for n in ("copy_pixels", "copy_tokens", "ceiling", "masked", "ar"):
        m.update({f"predict/{n}/psnr_db": 20.0, f"predict/{n}/psnr_db_moving": 12.0, f"predict/{n}/ssim": 0.8})
    return m


def test_the_bits_table_and_the_gates_say_which_model_beats_the_code_table():
    m = _metrics()
    table = page.bits_table(m, ["masked", "ar"])
    assert "| code_table | 7.700 | 7.600 |" in table and "latent frame +1" in table
    masked, ar = page.gate_lines(m, ["masked", "ar"])
    assert "beats the best baseline by 0.800 bits per token: **passes its gate**" in masked
    assert "0.200 bits per token worse. **It fails its gate**" in ar
    assert page.static_moving_table(m, ["masked"]) is None  # no ground-truth motion: no table
    assert "0.0% of the time" in page.exact_share_line(m)
    recipe = SimpleNamespace(train=SimpleNamespace(steps=400, batch_size=8), dim=96, depth=3, table_prior=True,
                             cond_input=False)
    assert page.recipe_line(recipe) == ("Recipe: 400 updates of 8 clips, width 96, depth 3; levers: logits as a "
                                        "residual over the code table.")
    assert "| masked | 20.00 | 12.00 | 0.800 |" in page.psnr_table(m, ["masked"])


def test_the_masking_tables_and_figures_cover_every_strategy_and_budget():
    m = {"masking/n_seeds": 3.0, "masking/n_probe_train_frames": 240.0, "masking/n_probe_test_frames": 120.0,
         "masking/random_init/probe_fg_iou": 0.1, "masking/random_init/motion_r2": 0.0}
    for s in ("random", "mgm"):
        for b in (1.0, 1 / 3):
            m.update({f"masking/{s}/x{b:.2g}/probe_fg_iou": 0.2, f"masking/{s}/x{b:.2g}/probe_fg_iou_std": 0.01,
                      f"masking/{s}/x{b:.2g}/motion_r2": 0.05})
        m.update({f"masking/{s}/moving_recall": 0.5, f"masking/{s}/moving_precision": 0.4,
                  f"masking/{s}/moving_visible_moving": 0.1})
    table = page.masking_table(m, ["random", "mgm"], [1.0, 1 / 3])
    assert "| mgm/x0.33 | 0.200 ± 0.010 |" in table and "3 seed(s) per row" in table
    assert "| mgm | 0.500 | 0.400 | 0.100 |" in page.masking_recall_table(m, ["random", "mgm"])
    fig = page.masking_figure(m, ["random", "mgm"], [1.0, 1 / 3])
    assert len(fig.axes[0].lines) == 3  # two strategies and the random-weight line
    plt.close(fig)
    no_labels = {k: v for k, v in m.items() if "probe_fg_iou" not in k}
    fig = page.masking_figure(no_labels, ["random"], [1.0])
    assert "no labels" in fig.axes[0].get_title()
    plt.close(fig)


def test_the_learning_curves_and_the_samples_row():
    curve = [{"step": 50, "elapsed_s": 10.0, "bits_per_token": 8.0}, {"step": 100, "elapsed_s": 20.0, "bits_per_token": 7.0}]
    fig = page.learning_curves_figure({"masked": ([{"step": 20, "loss": 5.0}], curve)}, _metrics())
    assert [a.get_xlabel() for a in fig.axes] == ["update", "update", "training wall-clock (s)"]
    assert len(fig.axes[2].lines) == 1 + 3  # the model and the three baselines
    plt.close(fig)
    clip = np.zeros((2, 4, 8, 8, 3), np.uint8)
    s = {"true": clip, "ref_ceiling": clip, "ref_copy_tokens": clip, "sample_masked": np.zeros((2, 2, 4, 8, 8, 3), np.uint8)}
    vids, titles = page.sample_rows(s, ["masked"], 1)
    assert titles == ["true", "ceiling", "copy tokens", "masked #0", "masked #1"] and len(vids) == 5


def test_the_page_blocks_join_their_parts_and_the_strips_and_mgm_figure_show_every_row():
    m = _metrics()
    recipe = SimpleNamespace(models=("masked", "ar"), train=SimpleNamespace(steps=400, batch_size=8), dim=96, depth=3,
                             table_prior=False, cond_input=False)
    block = page.gate_markdown(m, recipe)
    assert block.index("| code_table |") < block.index("passes its gate") < block.index("Recipe:")
    assert "\n\nNone" not in block  # the static / moving table is left out where there is no motion truth
    videos = {"train": {"name": "DAVIS", "videos": 3, "motion": "frame difference"},
              "test": {"name": "DAVIS", "videos": 1, "motion": "frame difference"}}
    assert page.videos_markdown(videos) == ("**Videos:** train: DAVIS, 3 videos; test: DAVIS, 1 videos. "
                                            "Where things move: frame difference.")
    assert "coco:x" in page.skipped_markdown("coco:x")
    m.update({"mv/extract_ms_per_frame": 1.0, "mv/block_matching_ms_per_frame": 3.0, "mv/block_matching_over_codec": 3.0,
              "masking/mgm/moving_recall": 0.5, "masking/mgm/moving_precision": 0.4,
              "masking/mgm/moving_visible_moving": 0.1})
    notes = page.masking_notes(m, ["mgm"])
    assert "| mgm | 0.500 | 0.400 | 0.100 |" in notes and "3.0x" in notes
    clip = np.zeros((2, 4, 8, 8, 3), np.uint8)
    samples = {"true": clip, "ref_ceiling": clip, "ref_copy_tokens": clip, "sample_masked": np.zeros((2, 3, 4, 8, 8, 3), np.uint8)}
    strips = list(page.sample_strips(samples, ["masked"]))
    assert len(strips) == 2 and all(gif.startswith("<") and len(fig.axes) == 6 * 4 for gif, fig in strips)
    plt.close("all")
    d = {"frames": np.zeros((3, 8, 8, 3), np.uint8), "field": np.zeros((3, 8, 8, 2), np.float32),
         "overlay": np.zeros((3, 8, 8, 3), np.uint8)}
    fig = page.mgm_figure("clip", d)
    assert len(fig.axes) == 9 and fig._suptitle.get_text() == "clip"
    plt.close(fig)
