"""The prediction explorer (vpe_lib.explore.predictions) through its Python API, without a kernel: the
decoding-step slider changes the committed tokens and the figure, the seed changes the samples, the
bits heat map is the model's against the code table's, and a run without prediction models says so."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.data.prediction_videos import PushWorldVideos  # noqa: E402
from vpe_lib.data.store import PushWorldStore, build_dataset  # noqa: E402
from vpe_lib.explore.predictions import (NoPredictionModels, PredictionData, PredictionExplorer,  # noqa: E402
                                         prediction_explorer)
from vpe_lib.models.tokenizer import VQVAE3D  # noqa: E402
from vpe_lib.models.transformer import TransformerConfig, build_predictor  # noqa: E402
from vpe_lib.models.code_prior import TablePrior  # noqa: E402
from vpe_lib.eval.token_baselines import code_table, code_table_bits, unigram_log_probs  # noqa: E402
from vpe_lib.stages.predict_stage import tokenize_clips  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = get_config("smoke")
    root = tmp_path_factory.mktemp("pw")
    build_dataset(root, cfg.data.world, n_train=1, n_test=3, videos_per_shard=3, seed=3, workers=1, progress=False)
    store = PushWorldStore(root, "test")
    videos = PushWorldVideos(store, range(len(store)))
    torch.manual_seed(0)
    tok = VQVAE3D(cfg=cfg.pretrain.tokenizer).eval()
    tokens = tokenize_clips(tok, videos, clip_frames=4, cond_frames=1)
    K = tok.cfg.codebook_size
    future, cond = tokens["codes"][:, 1:], tokens["cond"][:, 0]
    unigram = unigram_log_probs(future, K)
    table = TablePrior(code_table(future, cond, K), unigram, 0.3)
    tcfg = TransformerConfig(codebook_size=K, grid=tuple(tokens["codes"].shape[1:]), dim=16, depth=1, heads=2)
    models = {kind: build_predictor(kind, tcfg).eval() for kind in ("masked", "ar")}
    return PredictionData(tok, models, tokens, videos, table, clip_frames=4, maskgit_steps=4)


def pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    out = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return out


def test_the_step_slider_changes_the_committed_tokens_and_the_figure(data):
    e = PredictionExplorer(data, model="masked", step=1, n_samples=2)
    first = e.state()
    fig_first = pixels(e.render())
    e.step = data.maskgit_steps
    last = e.state()
    assert 0 < first["committed"] < last["committed"] == data.n_future  # MaskGIT: all committed at the end
    assert not np.array_equal(fig_first, pixels(e.render()))
    # the last step is what the model's generate() returns for the same seed
    final = data.models["masked"].generate(torch.from_numpy(data.cond[:1]).expand(2, -1, -1, -1).contiguous(),
                                           steps=data.maskgit_steps, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(last["sample_codes"], final.numpy())


def test_the_ar_model_samples_in_raster_order(data):
    e = PredictionExplorer(data, model="ar", step=1)
    counts = []
    for s in range(1, data.maskgit_steps + 1):
        e.step = s
        counts.append(e.state()["committed"])
    assert counts == sorted(counts) and counts[-1] == data.n_future and counts[0] < data.n_future
    codes = e.state()["sample_codes"][0]
    e.step = 1
    partial = e.state()["sample_codes"][0]
    todo = ~e.current()["committed"][0]
    assert np.array_equal(partial[1:][todo], data.copy_tokens(0)[1:][todo])  # not yet sampled: the condition's
    assert np.array_equal(partial[1:][~todo], codes[1:][~todo])


def test_the_seed_changes_the_samples_and_the_same_seed_repeats_them(data):
    e = PredictionExplorer(data, model="masked", seed=0)
    a = e.state()["sample_codes"]
    e.seed = 1
    b = e.state()["sample_codes"]
    assert not np.array_equal(a, b)
    data._samples.clear()
    e.seed = 0
    assert np.array_equal(a, e.state()["sample_codes"])
    assert not np.array_equal(a[0], a[1])  # several samples from one frame differ


def test_bits_are_the_model_s_and_the_table_s_on_the_true_future(data):
    e = PredictionExplorer(data, model="ar", clip=1)
    st = e.state()
    t = data.table
    expected = code_table_bits(data.codes[1:2, 1:], data.cond[1:2, 0], t.counts, t.unigram, t.eps).mean()
    assert st["bits_table"] == pytest.approx(expected)
    assert 0 < st["bits_model"] < 20 and np.isfinite(st["bits_model"])


def test_bad_controls_and_a_run_without_predictors_give_clear_errors(data, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'.*masked, ar"):
        PredictionExplorer(data, model="nope").state()
    with pytest.raises(ValueError, match="step 9 out of range 1..4"):
        PredictionExplorer(data, step=9).state()
    with pytest.raises(NoPredictionModels, match="no prediction models.*03_predict"):
        prediction_explorer(tmp_path / "run")


def test_the_widget_redraws_when_a_control_moves(data):
    pytest.importorskip("ipywidgets")
    e = PredictionExplorer(data, model="masked", step=1)
    box = e.widget
    assert box is e.widget
    e.controls["step"].value = data.maskgit_steps  # what a drag does
    assert e.step == data.maskgit_steps and e.state()["committed"] == data.n_future
    e.controls["model"].value = "ar"
    assert e.model == "ar"
