"""The latent and UMAP explorers: their logic without a kernel, their widgets driven by setting
slider values (what a user's drag does), and their static figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.data.store import PushWorldStore, build_dataset  # noqa: E402
from vpe_lib.explore.latents import (LatentData, LatentExplorer, UmapExplorer, class_colour, class_counts,  # noqa: E402
                               embedding_pair_figure, patch_at, points_in_box, selection_summary)
from vpe_lib.models.tokenizer import VQVAE3D  # noqa: E402


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory):
    cfg = get_config("smoke")
    root = tmp_path_factory.mktemp("pw")
    build_dataset(root, cfg.data.world, n_train=1, n_test=4, videos_per_shard=2, seed=3, workers=1, progress=False)
    torch.manual_seed(0)
    model = VQVAE3D(cfg=cfg.pretrain.tokenizer)
    return LatentData(model, PushWorldStore(root, "test"), n_index_videos=4)


def test_pure_helpers():
    frame = np.arange(8 * 8 * 3).reshape(8, 8, 3)
    assert np.array_equal(patch_at(frame, 1, 0, 4), frame[4:8, 0:4])
    pts = np.array([[0, 0], [1, 1], [2, 2], [1, 3]], float)
    assert points_in_box(pts, (0.5, 2), (0.5, 2)).tolist() == [1, 2]
    assert class_counts(np.array([0, 2, 2]), ["a", "b", "c"]) == {"a": 1, "b": 0, "c": 2}


def test_view_codes_and_gallery(latent_data):
    d = latent_data
    v = d.view(1, 2)
    t, h, w = v.codes.shape
    assert v.frames.shape[0] == d.clip_frames and v.recon.shape == v.frames.shape and v.recon.dtype == np.uint8
    assert h * d.stride == v.frames.shape[1] and w * d.stride == v.frames.shape[2]
    code = v.code_at(0, 0, 0)
    idx = d.code_index()
    assert len(idx["code"]) == d.n_index_videos * t * h * w
    gallery = d.gallery(code, exclude_video=1, k=5)
    assert len(gallery) <= 5 and all(pv != 1 for _, pv, _ in gallery)
    for patch, pv, pt in gallery:  # each patch really is a token of that code in that video
        assert patch.shape == (d.stride, d.stride, 3)
    # a patch listed for a video is the frame's pixels at a token that uses the code
    any_code = int(idx["code"][0])
    first = d.gallery(any_code, k=1)[0]
    assert np.array_equal(first[0], patch_at(d.store.get("frames", int(idx["video"][0]), first[2]),
                                             int(idx["row"][0]), int(idx["col"][0]), d.stride))
    with pytest.raises(ValueError, match="out of range"):
        d.view(99, 0)
    with pytest.raises(ValueError, match="clip start"):
        d.view(0, 10_000)


def test_latent_explorer_widget_follows_its_sliders(latent_data):
    ex = LatentExplorer(latent_data, video=0, start=0, gallery_size=4)
    box = ex.widget
    assert box is ex.widget  # built once
    ex.sliders["video"].value = 2
    ex.sliders["col"].value = 1
    ex.sliders["t"].value = 1
    s = ex.state()
    assert (s["video"], s["col"], s["frame"]) == (2, 1, 1)
    assert s["code"] == latent_data.view(2, 0).code_at(1, 0, 1)
    fig = ex.render()
    assert len(fig.axes) >= 4
    plt.close("all")


def test_umap_explorer_selects_points_and_checks_shapes():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 2))
    patches = rng.integers(0, 255, size=(50, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=50)
    ex = UmapExplorer(emb, patches, labels, ["background", "arm", "disc"])
    ex.widget
    ex.sliders["x"].value = (-10.0, 10.0)
    ex.sliders["y"].value = (-10.0, 10.0)
    assert len(ex.selected()) == 50 and sum(ex.summary().values()) == 50
    ex.sliders["x"].value = (0.0, 10.0)
    assert (emb[ex.selected(), 0] >= 0).all()
    assert len(ex.render().axes) >= 2
    plt.close("all")
    with pytest.raises(ValueError, match="one row per point"):
        UmapExplorer(emb, patches[:3], labels)


def test_embedding_points_are_coloured_by_their_class_with_a_legend():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(60, 2))
    labels = np.repeat([0, 1, 3], 20)
    names = ["background", "arm", "disc", "box"]
    fig = UmapExplorer(emb, rng.integers(0, 255, size=(60, 4, 4, 3), dtype=np.uint8), labels, names).render()
    ax = fig.axes[0]
    scatters = [c for c in ax.collections if len(c.get_offsets())]
    assert len(scatters) == 3  # one per class present
    for c, col in zip((0, 1, 3), scatters):
        assert np.allclose(col.get_facecolor()[0][:3], class_colour(c))  # the colour follows the label
        assert np.array_equal(np.asarray(col.get_offsets()), emb[labels == c])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["background (20)", "arm (20)", "box (20)"]
    assert len({tuple(class_colour(c)) for c in range(4)}) == 4
    plt.close("all")
    pair = embedding_pair_figure({"pretrained": emb, "random": emb[::-1]}, {"pretrained": labels, "random": labels[::-1]},
                                 names)
    assert [a.get_title() for a in pair.axes] == ["pretrained", "random"]
    plt.close("all")


def test_the_selection_summary_wraps_instead_of_clipping():
    counts = {f"class{i}": 10 + i for i in range(12)}
    text = selection_summary(sum(counts.values()), counts, width=40)
    assert all(len(line) <= 40 for line in text.splitlines()) and len(text.splitlines()) > 2
    assert "class11 21" in text.replace("\n", " ")
