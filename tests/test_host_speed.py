"""The host-speed reading that the report's provenance carries."""

from __future__ import annotations

from vpe_lib.report import index as report
from vpe_lib.host_speed import cpu_model, host_speed


def test_host_speed_reads_positive_finite_rates():
    s = host_speed(repeats=2)
    assert set(s) == {"cpu_model", "threads", "fp32_matmul_gflops", "fp32_conv3d_gflops"}
    assert isinstance(s["cpu_model"], str) and s["cpu_model"] == cpu_model() and s["threads"] >= 1
    # any CPU torch runs on does more than 0.1 GFLOP/s and (today) less than 100 TFLOP/s on 2048² fp32
    for k in ("fp32_matmul_gflops", "fp32_conv3d_gflops"):
        assert 0.1 < s[k] < 1e5, (k, s[k])


def test_index_names_the_host_speed_when_it_was_measured():
    hw = {"cpu_count": 2, "gpu": None, "cpu_model": "AMD EPYC", "fp32_matmul_gflops": 72.4, "fp32_conv3d_gflops": 85.2}
    assert report._speed_html(hw) == " (AMD EPYC, fp32 72 GFLOP/s matmul, 85 conv3d)"
    assert report._speed_html({"cpu_count": 2, "gpu": None}) == ""  # a summary from before hosts were timed


def test_index_wall_time_names_the_computed_stages():
    fresh = {"wall_time_s": {"total": 1500.4}, "computed_wall_time_s": {"a": 1000.0, "b": 500.0}}
    assert report._wall_html(fresh) == "total wall time 1,500 s"
    partial = {"wall_time_s": {"total": 200.0}, "computed_wall_time_s": {"a": 1000.0, "b": 190.0},
               "pages_from_earlier_runs": ["a"]}
    assert report._wall_html(partial) == "this invocation 200 s; the stages, each when it was computed: 1,190 s"
    assert report._page_time(partial, "a") == "from an earlier run, computed in 1000 s"
