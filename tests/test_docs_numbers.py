"""The intervals the README and docs quote from a committed render are that render's numbers.

A region of a markdown file between `<!-- numbers: <summary.json path> -->` and `<!-- /numbers -->` may only
quote intervals `m [lo, hi]` that the named summary holds (as `<key>/mean|ci_low|ci_high` or `<key>`,
`<key>_ci_low`, `<key>_ci_high`), to the three decimals printed; an interval quoted from the other side of the
comparison (`0.095 [0.015, 0.174]` for `-0.095 [-0.174, -0.015]`) counts. Re-rendering a report without
updating its prose then fails here, not in a reader's hands."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGION = re.compile(r"<!-- numbers: (\S+) -->(.*?)<!-- /numbers -->", re.S)
NUM = r"[+\-−]?\d+\.\d{3}"
INTERVAL = re.compile(rf"({NUM})\s*\[\s*({NUM}),\s*({NUM})\]")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _f(text: str) -> float:
    return float(text.replace("−", "-"))


def summary_intervals(metrics: dict) -> set[tuple[float, float, float]]:
    """Every (mean, low, high) the metrics hold, rounded as printed, with its mirror (b - a for a - b)."""
    out = set()
    for key, value in metrics.items():
        if key.endswith("/ci_low"):
            base = key[:-len("/ci_low")]
            trio = (metrics.get(base + "/mean"), value, metrics.get(base + "/ci_high"))
        elif key.endswith("_ci_low"):
            base = key[:-len("_ci_low")]
            trio = (metrics.get(base), value, metrics.get(base + "_ci_high"))
        else:
            continue
        if any(v is None for v in trio):
            continue
        m, lo, hi = (round(float(v), 3) for v in trio)
        out |= {(m, lo, hi), (-m, -hi, -lo)}
    return out


def quoted(path: Path):
    for summary, text in REGION.findall(path.read_text()):
        for m, lo, hi in INTERVAL.findall(text):
            yield summary, (_f(m), _f(lo), _f(hi)), f"{m} [{lo}, {hi}]"


def test_the_checker_finds_both_key_styles_and_the_mirror():
    held = summary_intervals({"a/mean": 0.1234, "a/ci_low": 0.0514, "a/ci_high": 0.2, "b": -0.0951,
                              "b_ci_low": -0.1744, "b_ci_high": -0.0151})
    assert (0.123, 0.051, 0.2) in held and (0.095, 0.015, 0.174) in held and (0.1, 0.0, 0.2) not in held


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_quoted_intervals_are_the_renders(path):
    wrong = []
    for summary, trio, text in quoted(path):
        file = ROOT / summary
        assert file.exists(), f"{path.name} quotes numbers from {summary}, which does not exist"
        held = summary_intervals(json.loads(file.read_text())["metrics"])
        close = any(all(abs(a - b) <= 0.0011 for a, b in zip(trio, h)) for h in held)  # the last digit's rounding
        if not close:
            wrong.append(text)
    assert not wrong, f"{path.name} quotes intervals its render does not hold: {wrong}"
