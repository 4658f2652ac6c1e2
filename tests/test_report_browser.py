"""Every page of the committed reference reports opens in a real browser (headless Chromium),
offline, with no console error, no failed request and every image and animation present.
Skips where Chromium is missing (Debian: `apt-get install chromium`; `make test` tries)."""

from pathlib import Path

import pytest

from vpe_lib.browser_check import check_pages, find_chromium

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
