"""The report's hover embedding: one point per token with its patch, plotly.js beside the page."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from vpe_lib.figures.plots import context_patch
from vpe_lib.figures.hover_umap import PLOTLY_JS, hover_embedding_html, png_data_uri, write_plotly_js
from vpe_lib.figures.plots import PALETTE


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_png_data_uri_keeps_the_pixels():
    patch = np.random.default_rng(0).integers(0, 255, (3, 5, 3), dtype=np.uint8)
    big = _decode(png_data_uri(patch, scale=4))
    assert big.shape == (12, 20, 3) and np.array_equal(big[::4, ::4], patch)
    with pytest.raises(ValueError, match="uint8"):
        png_data_uri(patch.astype(np.float32))


def test_context_patch_outlines_the_token_and_pads_the_border():
    frame = np.full((16, 16, 3), 100, np.uint8)
    frame[8:12, 4:8] = 7  # token (2, 1) of a 4-pixel grid
    out = context_patch(frame, 2, 1, 4, around=1)
    assert out.shape == (12, 12, 3)
    assert (out[4:8, 4:8] == 7).all()  # the token in the middle
    assert (out[3, 3:9] == (255, 225, 25)).all() and (out[8, 3:9] == (255, 225, 25)).all()
    corner = context_patch(frame, 0, 0, 4, around=1)
    assert (corner[:3] == 0).all() and (corner[:, :3] == 0).all()  # beyond the frame: black (row 3: the outline)


def test_hover_embedding_html_has_every_point_and_its_patch():
    rng = np.random.default_rng(1)
    n = 30
    emb = {"pretrained": rng.normal(size=(n, 2)), "random": rng.normal(size=(n, 2))}
    lab = {k: rng.integers(0, 3, n) for k in emb}
    patches = rng.integers(0, 255, (n, 12, 12, 3), dtype=np.uint8)
    page = hover_embedding_html(emb, lab, patches, ["background", "arm", "cube"], PALETTE,
                                fg_fraction={k: rng.random(n) for k in emb}, div_id="t")
    assert f'src="{PLOTLY_JS}"' in page and "plotly_hover" in page and 'id="t-patch"' in page
    assert "https://" not in page  # nothing fetched from the network
    # every token's patch once (shared by the panels), plus the preview's first
    assert len(re.findall(r"data:image/png;base64,", page)) == n + 1
    with pytest.raises(ValueError, match="29 points"):
        hover_embedding_html({"a": emb["pretrained"][:29]}, {"a": lab["pretrained"][:29]}, patches,
                             ["b", "a", "c"], PALETTE)


def test_write_plotly_js_once(tmp_path):
    path = write_plotly_js(tmp_path)
    assert path.name == PLOTLY_JS and path.stat().st_size > 1_000_000 and "Plotly" in path.read_text()[:5000]
    mtime = path.stat().st_mtime_ns
    assert write_plotly_js(tmp_path).stat().st_mtime_ns == mtime  # unchanged: not rewritten


def test_hovering_a_point_shows_its_patch_in_chromium(tmp_path):
    """The page as the report writes it (plotly.min.js beside it), in headless Chromium: it loads
    offline without errors, and hovering point 3 of the first class puts that token's patch in
    the preview box."""
    from vpe_lib.report.browser_check import check_pages, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium (make browser installs it)")
    rng = np.random.default_rng(2)
    n = 12
    lab = np.zeros(n, int)
    patches = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    frag = hover_embedding_html({"pretrained": rng.normal(size=(n, 2))}, {"pretrained": lab}, patches,
                                ["background"], PALETTE, div_id="h")
    page = tmp_path / "page.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head><body>{frag}</body></html>")
    write_plotly_js(tmp_path)
    # a real mouse move over point 3 (Plotly.Fx.hover does not emit plotly_hover)
    probe = ("(async () => { const gd = document.getElementById('h');"
             " const pt = gd.querySelectorAll('.scatterlayer .trace .points path')[3].getBoundingClientRect();"
             " gd.querySelector('.nsewdrag').dispatchEvent(new MouseEvent('mousemove',"
             " {clientX: pt.left + pt.width / 2, clientY: pt.top + pt.height / 2, bubbles: true}));"
             " await new Promise(r => setTimeout(r, 300));"
             " return document.querySelector('#h-patch img').src; })()")
    (check,) = check_pages([page], probe_js=probe)
    assert check.ok, check.problems()
    assert check.probe == png_data_uri(patches[3], scale=1)
