"""Numbers as the report's tables print them: one formatter for every page, so a missing value, a NaN,
a spread and an interval read the same everywhere ("—" for none)."""

from __future__ import annotations

import math
from typing import Any, Mapping

MISSING = "—"


def num(v: Any, digits: int = 3) -> str:
    """A number to `digits` decimals; "—" for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{v:.{digits}f}"


def mean_std(mean: Any, std: Any = None, digits: int = 3) -> str:
    """"0.512 ± 0.031"; the mean alone when there is no spread (one seed: std NaN)."""
    text = num(mean, digits)
    return text if text == MISSING or num(std) == MISSING else f"{text} ± {std:.{digits}f}"


def row_mean_std(row: Mapping, key: str, digits: int = 3) -> str:
    """`mean_std` of row[key] and row[key + "_std"]."""
    return mean_std(row.get(key), row.get(key + "_std"), digits)


def interval(d: Mapping | None, digits: int = 3) -> str:
    """A paired difference {"mean", "ci_low", "ci_high"} as "+0.012 [-0.003, 0.027]"; "—" for none."""
    if not d or d.get("mean") is None or num(d["mean"]) == MISSING:
        return MISSING
    return f"{d['mean']:+.{digits}f} [{num(d.get('ci_low'), digits)}, {num(d.get('ci_high'), digits)}]"


def bullets(lines) -> str:
    """A markdown list, one line per item."""
    return "\n".join(f"- {s}" for s in lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; cells are str()-ed as given (format them with the functions above)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Any], *, sort: bool = False) -> str:
    """Every metric of a stage as a two-column markdown table: numbers to 4 significant digits, "—" for a
    missing value, anything else as written."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return MISSING
        return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)
    items = sorted(metrics.items()) if sort else metrics.items()
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| `{k}` | {cell(v)} |" for k, v in items)
