"""The report's index page (vpe_lib.report.index): the answers first, words and rows for the source it shows."""

from study_metrics import study_metrics

from vpe_lib.report.index import render_index


def test_index_page_states_the_answers():
    summary = {"metrics": study_metrics(), "provenance": {"profile": "cpu", "commit": "abc", "dirty": False,
                                                    "hardware": {"cpu_count": 2, "gpu": None}, "torch": "x",
                                                    "start_time": "t"},
               "wall_time_s": {"total": 1.0}, "status": "ok"}
    page = render_index(summary, [])
    assert "beats the UNet" in page and "no measurable difference" in page and "still rising (33% of seeds)" in page


def test_a_real_data_index_has_no_pushworld_rows_or_words():
    m = {k.replace("seg/", "seg/davis/", 1): v for k, v in study_metrics().items()}
    m["data/frames_per_s"] = 1000.0  # the PushWorld generator still ran (stage 01), but the study is on DAVIS
    summary = {"metrics": m, "provenance": {"profile": "cpu", "commit": "abc", "dirty": False,
                                            "hardware": {"cpu_count": 2, "gpu": None}, "torch": "x", "start_time": "t"},
               "wall_time_s": {"total": 1.0}, "status": "ok"}
    page = render_index(summary, [])
    assert "PushWorld generation" not in page and "objects + arm" not in page and "every labelled object" in page
    assert "UNet − colour baseline" not in page  # no number for it: left out, not blank


def test_a_davis_index_leads_with_the_benchmarks_jf_and_the_ceiling():
    m = {k.replace("seg/", "seg/davis/", 1): v for k, v in study_metrics().items()}
    m.update({"seg/davis/native_jf_mean/unet/labels100": 0.412, "seg/davis/native_jf_mean_std/unet/labels100": 0.01,
              "seg/davis/ceiling/jf_mean": 0.861, "seg/davis/ceiling/j_mean": 0.9, "seg/davis/ceiling/f_mean": 0.822})
    summary = {"metrics": m, "provenance": {"profile": "davis", "commit": "abc", "dirty": False,
                                            "hardware": {"cpu_count": 2, "gpu": None}, "torch": "x", "start_time": "t"},
               "wall_time_s": {"total": 1.0}, "status": "ok"}
    page = render_index(summary, [])
    assert "Scored as the benchmark scores it" in page and "0.412 ± 0.010" in page and "<b>0.861</b>" in page
    assert page.index("Scored as the benchmark") < page.index("Did pretraining succeed")
    assert "Scored as the benchmark" not in render_index({**summary, "metrics": study_metrics()}, [])


def test_each_render_links_the_others_beside_it(tmp_path):
    import json

    from vpe_lib.report.index import other_reports

    def render(d, profile):
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps({"provenance": {"profile": profile}}))
        (d / "index.html").write_text("")
    front = tmp_path / "reports"
    render(front, "cpu")
    render(front / "study", "study")
    render(front / "davis", "davis")
    (front / "figures").mkdir()  # a folder that is not a render
    (front / "still_input").mkdir()  # an experiment's pages and summary, no index: not a render either
    (front / "still_input" / "summary.json").write_text("{}")
    assert other_reports(front) == [("davis", "davis/index.html"), ("study", "study/index.html")]
    assert other_reports(front / "davis") == [("cpu", "../index.html"), ("study", "../study/index.html")]
    summary = {"metrics": study_metrics(), "provenance": {"profile": "cpu", "commit": "abc", "dirty": False,
                                                         "hardware": {"cpu_count": 2, "gpu": None}, "torch": "x",
                                                         "start_time": "t"},
               "wall_time_s": {"total": 1.0}, "status": "ok"}
    page = render_index(summary, [], other_reports(front))
    assert '<a href="davis/index.html">the davis profile</a>' in page
    assert "Other renders" not in render_index(summary, [])
