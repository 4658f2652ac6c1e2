"""The live-JupyterLab check (vpe_lib.report.lab_check) on a tiny widget notebook: a slider drives an
image, as in the explorers. It opens the notebook in a real JupyterLab in headless Chromium, runs
every cell, and moves the slider with the keyboard. Skips where Chromium is missing."""

import json

import pytest

from vpe_lib.report.browser_check import find_chromium
from vpe_lib.report.lab_check import check_lab_notebook

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")

WIDGET_CELL = """
import io
import ipywidgets as w
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

slider = w.IntSlider(value=1, min=0, max=5, description="bars")
image = w.Image(format="png")

def draw(n):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(range(max(n, 1)), range(1, max(n, 1) + 1), color="C0" if n else "w")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    image.value = buf.getvalue()

draw(slider.value)
slider.observe(lambda change: draw(change["new"]), names="value")
w.VBox([slider, image])
"""


def _notebook(cells: list[str]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": src} for i, src in enumerate(cells)]}


@needs_chromium
@pytest.mark.timeout(600)
def test_a_slider_redraws_its_figure_in_a_live_jupyterlab(tmp_path):
    nb = tmp_path / "widgets.ipynb"
    nb.write_text(json.dumps(_notebook(["x = 1", WIDGET_CELL])))
    check = check_lab_notebook(nb, screenshot=tmp_path / "lab.png", timeout_s=300)
    assert check.errors == []
    assert check.cells_run == check.cells_total == 2
    assert check.widget_views == 1 and check.sliders == 1
    assert check.figure_changed_on_slider
    assert check.ok
    assert (tmp_path / "lab.png").stat().st_size > 1000


@needs_chromium
@pytest.mark.timeout(600)
def test_an_error_in_a_cell_fails_the_check(tmp_path):
    nb = tmp_path / "broken.ipynb"
    nb.write_text(json.dumps(_notebook(["raise RuntimeError('the explorer failed')", "y = 2"])))
    check = check_lab_notebook(nb, timeout_s=300)
    assert not check.ok
    assert any("RuntimeError" in e for e in check.errors) or check.cells_run < check.cells_total
