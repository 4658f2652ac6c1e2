"""The data page's figures (vpe_lib.figures.data_page)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vpe_lib.figures import data_page as page  # noqa: E402


def _video(t=5, s=8):
    return {"frames": np.zeros((t, s, s, 3), np.uint8), "instance": np.ones((t, s, s), np.int64),
            "semantic": np.ones((t, s, s), np.int64), "flow": np.zeros((t, s, s, 2), np.float32)}


def test_figures_of_the_data_page(tmp_path):
    vids = [_video(), _video()]
    fig = page.labels_grid(vids, 2)
    assert fig is not None
    plt.close("all")
    assert page.videos_html(vids).count("<img") == 2
    assert page.bair_beside_pushworld(tmp_path / "no_bair", vids) is None
    fig = page.label_statistics([0.1, 0.2, 0.3], np.array([100, 10, 1]), ["background", "arm", "object"])
    assert fig.axes[1].get_yscale() == "log" and len(fig.axes[1].patches) == 3
    plt.close(fig)
