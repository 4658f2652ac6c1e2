"""Every page of the committed reference reports opens in a real browser (headless Chromium),
offline, with no console error, no failed request and every image and animation present.
Skips where Chromium is missing (Debian: `apt-get install chromium`; `make test` tries)."""

from pathlib import Path

import pytest

from vpe_lib.report.browser_check import check_pages, find_chromium

REPO = Path(__file__).resolve().parents[1]
REPORT_DIRS = [d for d in (REPO / "reports", REPO / "reports" / "study") if (d / "index.html").exists()]

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")


@needs_chromium
@pytest.mark.parametrize("report_dir", REPORT_DIRS, ids=[d.relative_to(REPO).as_posix() for d in REPORT_DIRS])
def test_reference_report_pages_load_offline_without_errors(report_dir):
    pages = sorted(report_dir.glob("*.html"))
    assert (report_dir / "index.html") in pages and len(pages) >= 7
    results = check_pages(pages)
    bad = {r.page: r.problems() for r in results if not r.ok}
    assert not bad, bad
    by_name = {r.page: r for r in results}
    # the notebook pages are figures first: each has images, and the prediction page its animations
    for name, r in by_name.items():
        if name != "index.html" and not name.startswith("06_"):  # the results page is the tables
            assert r.n_images >= 1, name
    assert by_name["03_predict.html"].n_animations >= 1


@needs_chromium
def test_the_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><head><script src="https://cdn.example.org/x.js"></script></head><body>'
                    '<img src="missing.png"><script>undefinedFunction();</script>'
                    '<img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7">'
                    '</body></html>')
    good = tmp_path / "good.html"
    good.write_text("<html><body><p>fine</p></body></html>")
    bad_result, good_result = check_pages([page, good])
    assert good_result.ok and good_result.n_images == 0
    assert not bad_result.ok
    assert any("undefinedFunction" in e for e in bad_result.console_errors)
    assert any("cdn.example.org" in r for r in bad_result.failed_requests)
    assert any("missing.png" in i for i in bad_result.broken_images)
    assert bad_result.n_images == 2 and bad_result.n_animations == 1


def _study_sized_summary() -> dict:
    """The study grid's methods at three label budgets with intervals against the UNet, and all four questions:
    the most the first screen has to hold."""
    from vpe_lib.config import get_config
    from vpe_lib.stages.seg_protocol import main_methods

    s = get_config("study").seg
    names = [mm.name for mm in main_methods(list(s.encoders), s.heads, s.modes, s.finetune_heads, s.head_encoders,
                                            s.finetune_predictors)]
    m = {"seg/n_seeds": 3, "data/n_train_videos": 240.0, "data/n_test_videos": 40.0, "data/frames_per_video": 30.0,
         "tokenizer/params": 1.1e6, "tokenizer/steps": 1000.0, "tokenizer/train_wall_s": 600.0,
         "predict/masked/params": 6.4e5, "predict/ar/params": 6.4e5}
    for i, name in enumerate(names + ["unet"]):
        for pct in (1, 10, 100):
            m[f"seg/fg_iou/{name}/labels{pct}"] = 0.5
            if name != "unet":
                for ref in ("diff_vs_unet", "diff_vs_random"):
                    m.update({f"seg/{ref}/{name}/labels{pct}/{k}": v
                              for k, v in (("mean", -0.05 + 0.01 * i), ("ci_low", -0.1 + 0.01 * i), ("ci_high", 0.02 + 0.01 * i))})
    for ref, method in (("diff_vs_tokenizer", "masked/conv/frozen"), ("diff_vs_tokenizer", "ar/conv/frozen"),
                        ("diff_vs_ar", "masked/conv/frozen")):
        for pct in (1, 10, 100):
            m.update({f"seg/{ref}/{method}/labels{pct}/{k}": v for k, v in (("mean", 0.01), ("ci_low", -0.012), ("ci_high", 0.032))})
    for other in ("random", "tube"):
        for probe in ("probe_fg_iou", "motion_r2"):
            key = f"masking/mgm/x0.33/minus_{other}_x1/{probe}"
            m.update({f"{key}/mean": -0.041, f"{key}/ci_low": -0.103, f"{key}/ci_high": 0.021, f"{key}/n": 3})
    return {"metrics": m, "status": "ok", "wall_time_s": {"total": 1.0},
            "provenance": {"profile": "study", "commit": "0" * 40, "dirty": False, "torch": "2.13.0", "start_time": "t",
                           "hardware": {"cpu_count": 2, "gpu": None}}}


@needs_chromium
def test_the_answers_and_the_forest_plot_fit_the_first_screen_of_a_laptop(tmp_path):
    from vpe_lib.report.browser_check import first_screen
    from vpe_lib.report.index import render_index

    page = tmp_path / "index.html"
    page.write_text(render_index(_study_sized_summary(), []))
    info = first_screen(page, window=(1280, 800))
    assert info["answers"] and info["forest"], info
    assert info["above_fold"], info
    # and the check can fail: on a phone-sized window the forest plot is below the first screen
    assert not first_screen(page, window=(1280, 420))["above_fold"]


@needs_chromium
@pytest.mark.parametrize("report_dir", REPORT_DIRS, ids=[d.relative_to(REPO).as_posix() for d in REPORT_DIRS])
def test_a_reference_index_opens_with_its_answers_and_forest_plot(report_dir):
    from vpe_lib.report.browser_check import first_screen

    info = first_screen(report_dir / "index.html")
    assert info["above_fold"], info
