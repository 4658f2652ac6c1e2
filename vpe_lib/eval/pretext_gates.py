"""Did pretraining succeed at its own task? The pretext gates (DESIGN.md, "Pretraining must succeed
before it is judged"), read from a run's flat metrics, on held-out (test) videos:

- tokenizer: PSNR >= JPEG's at the same bits per pixel on the same frames (margin in dB);
- predictors: bits per future token below the code table's, the strongest non-learned baseline
  (margin = table - model, in bits; positive passes);
- sampled futures: static pixels at least as good as copying the condition's tokens, and moving
  pixels better than copying the condition frame (margin = the smaller of the two dB gaps).

A downstream sentence about a model whose gate failed says so (`failed_clause`), so a reader never
takes a verdict about a model that did not learn its own task for one about video prediction.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from vpe_lib.eval.segmentation import paired_difference

# the segmentation / probe encoders and the pretraining behind them
ENCODER_GATE = {"tokenizer": "tokenizer", "masked": "masked", "ar": "ar"}


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _row(model: str, seed: int, task: str, value, baseline, baseline_name: str, margin, unit: str) -> dict:
    return {"model": model, "seed": seed, "task": task, "value": value, "baseline": baseline,
            "baseline_name": baseline_name, "margin": margin, "unit": unit,
            "passed": None if margin is None else bool(margin >= 0 if unit == "dB" else margin > 0)}


def _seeds(m: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(hit[1]) for k in m if (hit := rx.match(k))})


def tokenizer_gates(m: dict) -> list[dict]:
    jpeg = _num(m.get("tokenizer/jpeg_psnr_db_at_same_rate"))
    rows = []
    main = _num(m.get("tokenizer/psnr_db"))
    if main is not None:
        seed0 = int(m.get("tokenizer/seed", 0) or 0)
        per_seed = [(seed0, main)] + [(s, _num(m.get(f"tokenizer/seed{s}/psnr_db")))
                                      for s in _seeds(m, r"^tokenizer/seed(\d+)/psnr_db$")]
        for seed, v in per_seed:
            margin = None if v is None or jpeg is None else v - jpeg
            rows.append(_row("tokenizer", seed, "PSNR on test frames", v, jpeg, "JPEG at the same bits per pixel",
                             margin, "dB"))
    return rows


def predictor_gates(m: dict) -> list[dict]:
    table = _num(m.get("predict/code_table/nll_bits_per_token"))
    rows = []
    for kind in ("masked", "ar"):
        seeds = _seeds(m, rf"^predict/{kind}/seed(\d+)/nll_bits_per_token$")
        per_seed = ([(s, _num(m.get(f"predict/{kind}/seed{s}/nll_bits_per_token")),
                      _num(m.get(f"predict/code_table/seed{s}/nll_bits_per_token")) or table) for s in seeds]
                    if seeds else [(0, _num(m.get(f"predict/{kind}/nll_bits_per_token")), table)])
        for seed, v, base in per_seed:
            if v is None:
                continue
            rows.append(_row(kind, seed, "bits per future token (test)", v, base, "code table",
                             None if base is None else base - v, "bits"))
        # sampled futures: static pixels vs copying the tokens, moving pixels vs copying the frame
        st, st_ref = _num(m.get(f"predict/{kind}/psnr_db_static")), _num(m.get("predict/copy_tokens/psnr_db_static"))
        mv, mv_ref = _num(m.get(f"predict/{kind}/psnr_db_moving")), _num(m.get("predict/copy_pixels/psnr_db_moving"))
        if None not in (st, st_ref, mv, mv_ref):
            rows.append(_row(f"{kind}_samples", 0, "sampled futures: static / moving PSNR (dB)", f"{st:.2f} / {mv:.2f}",
                             f"{st_ref:.2f} / {mv_ref:.2f}", "copy tokens (static) / copy pixels (moving)",
                             min(st - st_ref, mv - mv_ref), "dB"))
    return rows


def pretext_gates(m: dict) -> list[dict]:
    """Every gate a run's metrics allow, one row per model and seed."""
    return tokenizer_gates(m) + predictor_gates(m)


def margin_intervals(rows: list[dict]) -> dict[str, dict]:
    """{model: paired_difference of its margins over the pretraining seeds} (e.g. code table - model in bits per
    token, each seed against its own tokenizer's table), for models gated at two seeds or more: whether a model
    beats its baseline beyond the seed-to-seed variance of pretraining."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["margin"] is not None:
            by.setdefault(r["model"], []).append(float(r["margin"]))
    return {model: paired_difference(v, [0.0] * len(v)) for model, v in by.items() if len(v) >= 2}


def gate_metrics(rows: list[dict]) -> dict[str, float]:
    """gate/<model>/seed<k>/{passed,margin} (passed 1.0 / 0.0), and over the seeds
    gate/<model>/margin/{mean,ci_low,ci_high,n} (the paired 95% interval of the margins)."""
    out = {}
    for r in rows:
        if r["margin"] is None:
            continue
        out[f"gate/{r['model']}/seed{r['seed']}/passed"] = float(r["passed"])
        out[f"gate/{r['model']}/seed{r['seed']}/margin"] = r["margin"]
    for model, d in margin_intervals(rows).items():
        out.update({f"gate/{model}/margin/{k}": float(d[k]) for k in ("mean", "ci_low", "ci_high", "n")})
    return out


def failed_clause(m: dict, encoder: str) -> str:
    """'' when the pretraining behind `encoder` (tokenizer / masked / ar, any seed) passed its gate or
    has none; else what failed, for the same sentence, e.g. 'the masked model did not beat the code
    table at 1 of 1 seeds, by -1.08 bits'."""
    model = ENCODER_GATE.get(encoder)
    if model is None:
        return ""
    rows = [r for r in pretext_gates(m) if r["model"] == model and r["passed"] is not None]
    failed = [r for r in rows if not r["passed"]]
    if not failed:
        return ""
    worst = min(r["margin"] for r in failed)
    what = {"tokenizer": "the tokenizer stayed below JPEG at its rate",
            "masked": "the masked model did not beat the code table",
            "ar": "the autoregressive model did not beat the code table"}[model]
    return f"{what} at {len(failed)} of {len(rows)} seeds, by {worst:+.2f} {failed[0]['unit']}"


def gate_table_html(m: dict) -> str:
    """The 'did pretraining succeed?' table for the index and the results page."""
    rows = pretext_gates(m)
    if not rows:
        return "<p>No pretraining gate could be computed for this run.</p>"

    def cell(v):
        return "—" if v is None else f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))

    body = "".join(
        f"<tr><td>{r['model']}</td><td>{r['seed']}</td><td>{r['task']}</td><td>{cell(r['value'])}</td>"
        f"<td>{cell(r['baseline'])} ({r['baseline_name']})</td>"
        f"<td>{'—' if r['margin'] is None else format(r['margin'], '+.2f') + ' ' + r['unit']}</td>"
        f"<td><b>{'—' if r['passed'] is None else ('pass' if r['passed'] else 'FAIL')}</b></td></tr>" for r in rows)
    units = {r["model"]: r["unit"] for r in rows}
    over = "".join(
        f"<li>{html.escape(model)}: margin {d['mean']:+.3f} {units[model]}, 95% interval [{d['ci_low']:.3f}, "
        f"{d['ci_high']:.3f}] over {d['n']} pretraining seeds"
        f"{' (excludes 0)' if d['ci_low'] > 0 or d['ci_high'] < 0 else ' (contains 0)'}</li>"
        for model, d in margin_intervals(rows).items())
    return ("<table><tr><th>model</th><th>seed</th><th>its own task</th><th>value</th><th>baseline</th>"
            "<th>margin</th><th>gate</th></tr>" + body + "</table>"
            + (f"<p>Over the seeds (paired Student-t, each seed against its own baseline):</p><ul>{over}</ul>" if over else ""))


__all__ = ["failed_clause", "gate_metrics", "gate_table_html", "pretext_gates"]
