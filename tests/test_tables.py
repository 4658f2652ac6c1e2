import math

from vpe_lib.figures.tables import interval, markdown_table, mean_std, num, row_mean_std


def test_missing_values_read_the_same_everywhere():
    assert num(None) == num(math.nan) == mean_std(None, 0.1) == interval({"mean": None}) == "—"
    assert num(0.12345) == "0.123" and num(1234.5, 0) == "1234"


def test_spread_and_interval():
    assert mean_std(0.5, 0.0312) == "0.500 ± 0.031" and mean_std(0.5, math.nan) == "0.500"
    assert row_mean_std({"fg_iou": 0.4, "fg_iou_std": 0.02}, "fg_iou") == "0.400 ± 0.020"
    assert interval({"mean": 0.0123, "ci_low": -0.003, "ci_high": 0.0271}) == "+0.012 [-0.003, 0.027]"
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
