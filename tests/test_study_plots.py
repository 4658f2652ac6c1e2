"""The study's figures (vpe_lib.figures.study_plots): convergence, score bars and curves, method colours, the
forest plot."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study_metrics import study_metrics  # noqa: E402

from vpe_lib.figures import study_plots  # noqa: E402


def _per_seed():
    rng = np.random.default_rng(0)
    rec = lambda s: {"seed": s, "fg_iou": rng.random(), "fg_iou_objects": rng.random(),  # noqa: E731
                     "curve": [[40, 0.3], [80, 0.4], [120, 0.45]]}
    names = ["tokenizer/conv/frozen", "unet", "tokenizer/linear/frozen/probe-mid",
             "random_tokenizer/linear/frozen/probe-mid"]
    return {n: {p: [rec(s) for s in range(3)] for p in ("labels10", "labels100")} for n in names}


def test_convergence_figure_draws_both_schedules():
    runs = [{"method": "unet", "steps": 90, "budget_steps": 30, "curve": [[30, 0.5], [60, 0.6], [90, 0.62]],
             "budget_curve": [[10, 0.4], [20, 0.5], [30, 0.55]]}]
    ax = study_plots.convergence(runs)
    assert len(ax.lines) == 4  # two curves, two best points
    assert ax.lines[0].get_linestyle() == "--" and ax.lines[2].get_linestyle() == "-"
    ax = study_plots.convergence(runs + [{**runs[0], "seed": 1}])  # a second seed: same colour, no new legend entry
    assert len(ax.lines) == 8 and ax.lines[0].get_color() == ax.lines[4].get_color()
    assert len(ax.get_legend().get_texts()) == 2
    plt.close("all")


def test_study_figures_draw():
    per_seed = _per_seed()
    ax = study_plots.score_bars(per_seed)
    assert len(ax.patches) == 4  # 2 main methods x 2 budgets (ablations are not main rows)
    fig = study_plots.learning_curves(per_seed)
    assert len(fig.axes) == 2  # one family (the tokenizer, with the UNet for reference) x 2 budgets
    fig = study_plots.learning_curves({**per_seed, "masked/conv/frozen": per_seed["tokenizer/conv/frozen"]})
    assert len(fig.axes) == 4  # small multiples: a row per encoder family
    assert len(fig.axes[2].lines) == 6  # the masked runs and the UNet's, 3 seeds each
    assert fig.axes[0].get_ylabel().startswith("tokenizer") and fig.axes[2].get_ylabel().startswith("masked transformer")
    ax = study_plots.level_probes(per_seed, budget="labels100")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mid"]
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    truth = np.zeros((5, 8, 8), np.uint8)
    truth[:, 2:5, 2:5] = 2
    pred = truth.copy()
    pred[3] = 0  # frame 3 is the miss
    assert list(study_plots.per_frame_iou(pred, truth)) == [1, 1, 1, 0, 1]
    fig = study_plots.hardest_frames(frames, truth, {"unet": pred}, k=2)
    assert "0.00" in fig.axes[0].get_ylabel()
    plt.close("all")


def test_every_method_of_the_study_grid_has_its_own_colour_and_a_family_hue():
    from vpe_lib.config import get_config
    from vpe_lib.stages.seg_protocol import main_methods
    from vpe_lib.figures.study_plots import method_style

    s = get_config("study").seg
    names = [m.name for m in main_methods(list(s.encoders), s.heads, s.modes, s.finetune_heads, s.head_encoders,
                                          s.finetune_predictors)]
    names += [f"{e}/{h}/{mode}" for e in ("tokenizer", "random_tokenizer") for h in ("linear", "segformer")
              for mode in ("frozen", "finetuned")]  # every head fine-tuned too, should a profile ask
    names = list(dict.fromkeys(names))
    colours = [tuple(np.round(method_style(n)["color"], 4)) for n in names]
    assert len(set(colours)) == len(names), "two methods share a colour"
    assert method_style("tokenizer/conv/frozen")["marker"] != method_style("tokenizer/conv/finetuned")["marker"]
    assert method_style("random_ar/conv/frozen")["linestyle"] == "--"
    blue = method_style("tokenizer/conv/frozen")["color"]
    assert blue[2] > blue[0] and method_style("unet")["color"][0] > method_style("unet")["color"][2]  # the hues


def test_the_forest_plot_has_a_panel_per_budget_and_methods_named_in_words():
    from vpe_lib.figures.study_plots import forest_by_budget, readable_name

    assert readable_name("random_ar/conv/finetuned") == "random-weight AR transformer, fine-tuned, conv head"
    assert readable_name("tokenizer/linear/frozen/probe-mid") == "tokenizer, frozen, linear head [probe-mid]"
    assert readable_name("unet") == "UNet from scratch"
    fig = forest_by_budget(study_metrics(), against="unet")
    assert [ax.get_title() for ax in fig.axes] == ["10% labels", "100% labels"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["tokenizer, frozen, conv head"]
    import matplotlib.pyplot as plt

    plt.close(fig)
