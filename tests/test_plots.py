"""Figure helpers: colours, flow rendering, inline GIFs."""

import base64
import io

import numpy as np
from PIL import Image

from vpe_lib.figures import plots


def test_colourise_and_overlay_shapes():
    labels = np.array([[0, 1], [2, 13]])
    rgb = plots.colourise(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] != rgb[0, 1]).any()
    frame = np.zeros((2, 2, 3), np.uint8)
    out = plots.overlay(frame, labels > 0)
    assert (out[0, 0] == 0).all() and (out[1, 1] > 0).any()


def test_flow_to_rgb_direction_and_magnitude():
    flow = np.zeros((1, 3, 2), np.float32)
    flow[0, 1] = (1, 0)
    flow[0, 2] = (-2, 0)
    rgb = plots.flow_to_rgb(flow, max_mag=2)
    assert (rgb[0, 0] == 0).all()  # no motion is black
    assert rgb[0, 2].max() > rgb[0, 1].max()  # faster is brighter
    assert not np.array_equal(rgb[0, 1] > 0, rgb[0, 2] > 0) or (rgb[0, 1] != rgb[0, 2]).any()  # other direction, other hue


def test_gif_html_is_an_animated_gif():
    frames = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    tag = plots.gif_html(plots.hstack_videos(frames, frames), scale=2, title="x")
    data = base64.b64decode(tag.split("base64,")[1].split('"')[0])
    img = Image.open(io.BytesIO(data))
    assert img.format == "GIF" and img.n_frames == 4 and img.size == ((8 * 2 + 2) * 2, 16)


def test_rate_distortion_figure():
    ref = {"jpeg": [{"bits_per_pixel": 0.1, "psnr_db": 20.0}, {"bits_per_pixel": 1.0, "psnr_db": 27.0}],
           "resample_psnr_db": {"2x": 28.0, "4x": 24.0}}
    ax = plots.rate_distortion(ref, {"vq": (0.31, 0.28, 21.0), "lfq": (0.31, 0.30, 21.5)})
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0].startswith("JPEG") and labels[-2:] == ["vq", "lfq"] and len(labels) == 5
    assert ax.get_xscale() == "log"
    import matplotlib.pyplot as plt
    plt.close(ax.figure)
