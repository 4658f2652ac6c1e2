"""The report's index page: the answers and the forest plot on the first screen, the pretext gates, every
verdict per label budget, the headline numbers and the study table, all from `summary.json`'s metrics."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from vpe_lib.eval.pretext_gates import gate_table_html
from vpe_lib.eval.segmentation import fmt_bound, holm, paired_p_value
from vpe_lib.stages.results_stage import (answers, convergence_notes, question_answers, question_sentences,
                                         seg_prefix, segmentation_rows, what_was_run, benchmark_rows, study_rows)
from vpe_lib.figures.study_plots import forest_by_budget, is_main_method


def _speed_html(hw: dict) -> str:
    """' (AMD EPYC, fp32 72 GFLOP/s matmul, 85 conv3d)'; empty for a summary written before hosts were timed."""
    if "fp32_matmul_gflops" not in hw:
        return ""
    return (f" ({html.escape(str(hw.get('cpu_model', '')))}, fp32 {hw['fp32_matmul_gflops']:.0f} GFLOP/s matmul, "
            f"{hw['fp32_conv3d_gflops']:.0f} conv3d)")


def _wall_html(summary: dict[str, Any]) -> str:
    """'total wall time 1,234 s', and where stages were cached or rendered from an earlier run, the
    sum of every stage's time when it was computed beside this invocation's."""
    now = summary["wall_time_s"].get("total", 0)
    computed = summary.get("computed_wall_time_s", {})
    if not (summary.get("cached_stages") or summary.get("pages_from_earlier_runs")) or not computed:
        return f"total wall time {now:,.0f} s"
    return (f"this invocation {now:,.0f} s; the stages, each when it was computed: "
            f"{sum(computed.values()):,.0f} s")


def _index_commit_html(summary: dict[str, Any]) -> str:
    commit = summary.get("index_commit")
    return "" if not commit else (f" · this index written at commit <code>{html.escape(commit[:12])}</code> from the pages' "
                                  "summary (the pages and every number are the commit's above)")


def _page_time(summary: dict[str, Any], name: str) -> str:
    """'412 s', or for a stage skipped as unchanged '412 s, cached' (its time when it was computed)."""
    computed = summary.get("computed_wall_time_s", {}).get(name, summary["wall_time_s"].get(name, 0))
    if name in summary.get("pages_from_earlier_runs", ()):
        return f"from an earlier run, computed in {computed:.0f} s" if name in summary.get(
            "computed_wall_time_s", {}) else "from an earlier run"
    return f"{computed:.0f} s" + (", cached" if name in summary.get("cached_stages", ()) else "")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def quantizer_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per quantizer of the pretrain stage's comparison runs (tokenizer/compare/<q>/<metric>)."""
    prefix = "tokenizer/compare/"
    names = sorted({k[len(prefix):].split("/")[0] for k in m if k.startswith(prefix)})
    keys = ("codebook_size", "psnr_db", "codebook_utilisation", "codebook_perplexity")
    return [{"quantizer": q, **{k: m.get(f"{prefix}{q}/{k}") for k in keys}} for q in names]


def _answers(summary: dict[str, Any]) -> list[str]:
    """The study's answer per label budget, one sentence each, from the paired intervals."""
    m = summary["metrics"]
    prefix = seg_prefix(m)
    n = int(m.get(f"{prefix}/n_seeds") or 0)
    if not any(k.startswith(f"{prefix}/fg_iou/tokenizer/") for k in m):
        return ["The segmentation stage has not produced results in this run."]
    return ((answers(m, n_seeds=n, prefix=prefix) or ["The segmentation stage ran no pretrained-encoder rows."])
            + convergence_notes(m, prefix))


def _study_table(m: dict[str, Any]) -> str:
    """The study's rows with their paired differences, each interval beside its Holm-adjusted p-value over
    every comparison in the table (the family a reader scans); bounds printed so none off zero reads 0.000."""
    prefix = seg_prefix(m)
    rows = [r for r in study_rows(m, prefix) if is_main_method(r["method"])]
    n = int(m.get(f"{prefix}/n_seeds") or 0)
    refs = ("diff_vs_unet", "diff_vs_random")
    raw = {(i, ref): paired_p_value(r[ref]["mean"], r[ref]["ci_low"], r[ref]["ci_high"], n)
           for i, r in enumerate(rows) for ref in refs if r[ref]["mean"] is not None}
    adjusted = holm(raw)
    family = sum(p == p for p in raw.values())

    def ci(i: int, ref: str) -> str:
        d = rows[i][ref]
        if d["mean"] is None:
            return "—"
        if d["ci_low"] is None or d["ci_low"] != d["ci_low"]:
            return f"{d['mean']:+.3f}"
        p = adjusted.get((i, ref), float("nan"))
        return (f"{'+' if d['mean'] >= 0 else ''}{fmt_bound(d['mean'])} [{fmt_bound(d['ci_low'])}, "
                f"{fmt_bound(d['ci_high'])}]" + ("" if p != p else f"; Holm p {p:.2g}"))

    body = "".join(
        f"<tr><td>{r['pct']:g}%</td><td>{html.escape(r['method'])}</td><td>{_fmt(r['fg_iou'])}"
        f"{'' if r['fg_iou_std'] is None else ' ± ' + _fmt(r['fg_iou_std'])}</td><td>{_fmt(r['fg_iou_objects'])}</td>"
        f"<td>{ci(i, 'diff_vs_unet')}</td><td>{ci(i, 'diff_vs_random')}</td><td>{html.escape(r['curve'])}</td></tr>"
        for i, r in enumerate(rows))
    note = ("" if not family else
            f"<p>{family} paired comparisons in this table. The verdict rule, everywhere in the report: a 95% interval "
            "wholly above 0 beats, wholly below is behind, one that contains or touches 0 is no measurable difference "
            "(on the unrounded bounds). The intervals are per comparison; the Holm-adjusted p-value beside each "
            "accounts for the whole table.</p>")
    fg = "fg IoU (objects + arm)" if prefix == "seg" else "fg IoU (every labelled object)"
    return (note + f"<table><tr><th>labels</th><th>method</th><th>{fg}</th><th>objects only</th>"
            "<th>Δ UNet [95% CI]</th><th>Δ random weights [95% CI]</th><th>learning curve</th></tr>"
            f"{body}</table>")


def _prediction_html(m: dict[str, Any]) -> str:
    """Stage 03 in two small tables: bits per future token against the baselines, and PSNR of the
    sampled futures against the references; then the masking study's probes."""
    if m.get("predict/unigram/nll_bits_per_token") is None:
        return ""
    kinds = [k for k in ("masked", "ar") if m.get(f"predict/{k}/nll_bits_per_token") is not None]
    bits = "".join(f"<tr><td>{n}</td><td>{_fmt(m.get(f'predict/{n}/nll_bits_per_token'))}</td>"
                   f"<td>{_fmt(m.get(f'predict/{n}/psnr_db'), 2)}</td><td>{_fmt(m.get(f'predict/{n}/psnr_db_moving'), 2)}</td></tr>"
                   for n in ["unigram", "copy_tokens", "code_table", "copy_pixels", "ceiling"] + kinds)
    study = sorted({k.split("/")[1] + "/" + k.split("/")[2] for k in m
                    if k.startswith("masking/") and k.endswith("/probe_fg_iou") and k.count("/") == 3})
    study += [n for n in ("random_init", "tokenizer_latent") if m.get(f"masking/{n}/probe_fg_iou") is not None]
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{_fmt(m.get(f'masking/{n}/probe_fg_iou'))}</td>"
                   f"<td>{_fmt(m.get(f'masking/{n}/motion_r2'))}</td></tr>" for n in study)
    masking = "" if not rows else (
        "<h3>Masking study (probes on frozen features of still frames)</h3>"
        "<table><tr><th>pretraining masks / budget</th><th>probe fg IoU</th><th>motion R²</th></tr>" + rows + "</table>")
    return ("<h2>Video prediction (test videos)</h2><p>Bits per future token (lower is better; the masked model's are "
            "one-pass marginals, the autoregressive model's teacher-forced) and PSNR of one sampled future per clip, "
            "whole frame and moving pixels. Details on the prediction page.</p>"
            "<table><tr><th>model / reference</th><th>bits per token</th><th>PSNR (dB)</th><th>PSNR moving (dB)</th></tr>"
            + bits + "</table>" + masking)


def _answers_html(m: dict[str, Any]) -> str:
    """The first screen: what ran and the four questions, each answered in one sentence from its intervals, beside
    the forest plot of paired differences against the UNet; the per-budget sentences folded below."""
    prefix = seg_prefix(m)
    short = question_sentences(m, prefix)
    if not short:
        return ""
    items = "".join(f"<li><b>{html.escape(q)}.</b> {html.escape(s)}</li>" for q, s in short)  # "(a)".. number them
    detail = "".join(f"<li><b>{html.escape(q)}</b><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in lines)
                     + "</ul></li>" for q, lines in question_answers(m, prefix))
    return (f'<h2 id="answers">The answers</h2><div class="first">'
            f'<div class="answers"><p>{html.escape(what_was_run(m, prefix))}</p><ul>{items}</ul>'
            "<p class=\"rule\">The rule for every verdict: a paired 95% interval wholly above 0 is ahead, wholly below "
            "is behind, one that contains or touches 0 is no measurable difference (unrounded bounds).</p></div>"
            f'<div class="forest">{_forest_html(m)}</div></div>'
            f"<details><summary>Each answer per label budget, in full sentences</summary><ol>{detail}</ol></details>")


def _forest_html(m: dict[str, Any]) -> str:
    """Every method's paired difference against the UNet from scratch, one panel per label budget (the results
    page has the same against the random-weight twins), as an inline PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = seg_prefix(m)
    if not any(k.startswith(f"{prefix}/diff_vs_unet/") for k in m):
        return ""
    fig = forest_by_budget(m, prefix=prefix, against="unet", figsize_w=6.6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img id="forest" alt="paired differences in test foreground IoU against the UNet, 95% intervals" '
            f'style="width:100%" src="data:image/png;base64,{data}">')


def _benchmark_html(m: dict[str, Any]) -> str:
    """For a DAVIS or COCO study, its headline as the benchmark scores it (from the written files, native
    resolution, the largest label budget): J&F with the ceiling, or mask AP with predicting all-foreground."""
    prefix = seg_prefix(m)
    rows, ceiling = benchmark_rows(m, prefix)
    if not rows:
        return ""
    davis = any(r["jf_mean"] is not None for r in rows)
    key, label = ("jf_mean", "J&amp;F") if davis else ("ap", "mask AP")
    body = "".join(f"<tr><td>{html.escape(r['method'])}</td><td>{_fmt(r[key])}"
                   f"{' ± ' + _fmt(r[key + '_std']) if r.get(key + '_std') is not None else ''}</td>"
                   f"<td>{_fmt(r['pooled_iou'])}</td></tr>" for r in rows)
    if davis and ceiling:
        body += f"<tr><td><b>ceiling</b>: the ground truth at the study's size and back</td><td><b>{_fmt(ceiling['jf_mean'])}</b></td><td>1.000</td></tr>"
    if not davis and m.get(f"{prefix}/fg_iou/all_foreground") is not None:
        body += (f"<tr><td>predicting all-foreground</td><td>—</td>"
                 f"<td>{_fmt(m[f'{prefix}/fg_iou/all_foreground'])}</td></tr>")
    return (f"<h2>Scored as the benchmark scores it</h2><p>Every method's test predictions at {rows[0]['labels'].removeprefix('labels')}% "
            f"labels, every seed, written in the benchmark's format at the annotations' resolution and scored from "
            f"those files ({'the benchmark' + chr(39) + 's J and F' if davis else 'pycocotools COCOeval'}); the pooled "
            f"foreground IoU is the study's own number at its resolution.</p>"
            f"<table><tr><th>method</th><th>{label} (native)</th><th>pooled IoU</th></tr>{body}</table>")


def other_reports(out_dir: Path) -> list[tuple[str, str]]:
    """The other renders beside this one, as (profile, href): reports/ holds the cpu profile's render and each other
    profile's under reports/<profile>/ (`make report PROFILE=...`), so the front page links down and the others link
    up and across. A render is a folder with an index.html and a summary.json (an experiment's folder, e.g.
    reports/still_input, has pages but no index: not a render)."""
    def profile(d: Path) -> str:
        try:
            return json.loads((d / "summary.json").read_text())["provenance"]["profile"]
        except (OSError, ValueError, KeyError):
            return d.name
    def is_render(d: Path) -> bool:
        return d.is_dir() and (d / "summary.json").exists() and (d / "index.html").exists()
    found = [(profile(d), f"{d.name}/index.html") for d in sorted(out_dir.iterdir()) if is_render(d)]
    parent = out_dir.resolve().parent
    if is_render(parent):
        found.append((profile(parent), "../index.html"))
        found += [(profile(d), f"../{d.name}/index.html") for d in sorted(parent.iterdir())
                  if is_render(d) and d.resolve() != out_dir.resolve()]
    return found


def _others_html(others: list[tuple[str, str]]) -> str:
    if not others:
        return ""
    return ("<p>Other renders of the study: " + " · ".join(
        f'<a href="{html.escape(href)}">the {html.escape(name)} profile</a>' for name, href in others) + ".</p>")


def render_index(summary: dict[str, Any], pages: list[tuple[str, str]], others: list[tuple[str, str]] = ()) -> str:
    m, prov = summary["metrics"], summary["provenance"]
    seg = segmentation_rows(m, seg_prefix(m))
    seg_html = "".join(
        f"<tr><td>{html.escape(r['model'])}</td><td>{_fmt(r['fg_iou'])}"
        f"{' ± ' + _fmt(r['fg_iou_std']) if r['fg_iou_std'] is not None else ''}</td><td>{_fmt(r['miou'])}</td></tr>"
        for r in seg
    )
    real = seg_prefix(m) != "seg"  # a real-data source (seg/davis/..., seg/coco/...): no PushWorld rows or words
    headline = [
        ("PushWorld generation (frames/s, one process)", None if real else m.get("data/frames_per_s"), 0),
        ("Tokenizer PSNR on held-out clips (dB)", m.get("tokenizer/psnr_db"), 2),
        ("Tokenizer codebook utilisation", m.get("tokenizer/codebook_utilisation"), 3),
        ("Tokenizer rate (bits per pixel, log2 codebook per token)", m.get("tokenizer/bits_per_pixel"), 3),
        ("JPEG PSNR at that rate, same frames (dB)", m.get("tokenizer/jpeg_psnr_db_at_same_rate"), 2),
        ("UNet − colour baseline (fg IoU)", m.get("results/unet_minus_colour_baseline"), 3),
    ]
    quant = quantizer_rows(m)
    quant_html = "" if not quant else (
        "<h2>Tokenizer quantizers (short like-for-like runs)</h2>"
        "<p>Same architecture, data and schedule; only the quantizer differs. See the pretraining page.</p>"
        "<table><tr><th>quantizer</th><th>codes</th><th>PSNR (dB)</th><th>utilisation</th><th>perplexity</th></tr>"
        + "".join(f"<tr><td>{html.escape(r['quantizer'])}</td><td>{_fmt(r['codebook_size'], 0)}</td>"
                  f"<td>{_fmt(r['psnr_db'], 2)}</td><td>{_fmt(r['codebook_utilisation'])}</td>"
                  f"<td>{_fmt(r['codebook_perplexity'], 0)}</td></tr>" for r in quant)
        + "</table>")
    verdict = "".join(f"<li>{html.escape(a)}</li>" for a in _answers(summary))
    head_html = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v, d)}</td></tr>" for k, v, d in headline
                        if v is not None)  # a row this run has no number for is left out, not shown blank
    links = "".join(f'<li><a href="{href}">{html.escape(name)}</a> '
                    f"({_page_time(summary, name)})</li>" for name, href in pages)
    hw = prov["hardware"]
    status = ("" if summary["status"] == "ok" else
              f'<p class="err"><b>This run failed:</b> <pre>{html.escape(summary.get("error", ""))}</pre></p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vpe report ({html.escape(prov['profile'])})</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1220px;margin:1em auto;padding:0 1em;color:#222}}
h1{{font-size:1.6em;margin:.3em 0}}.first{{display:flex;gap:1.2em;align-items:flex-start}}.answers{{flex:1 1 52%;font-size:.92em}}
.answers ul{{padding-left:0;list-style:none}}.answers li{{margin:.35em 0}}.forest{{flex:1 1 48%}}.rule{{color:#555;font-size:.9em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:left}}
th{{background:#f3f3f3}}.err{{color:#a00}}code{{background:#f3f3f3;padding:0 .2em}}</style></head><body>
<h1>Do video prediction models make general visual encoders?</h1>
<p>Profile <code>{html.escape(prov['profile'])}</code> · commit <code>{html.escape(prov['commit'][:12])}</code>{' (dirty)' if prov['dirty'] else ''}
· {html.escape(str(hw['cpu_count']))} CPU cores{_speed_html(hw)}{', GPU ' + html.escape(hw['gpu']) if hw['gpu'] else ', no GPU'}
· torch {html.escape(prov['torch'])} · started {html.escape(prov['start_time'])} · {_wall_html(summary)}{_index_commit_html(summary)}</p>
{status}
{_answers_html(m)}
{_benchmark_html(m)}
<h2>Did pretraining succeed at its own task?</h2>
<p>Each pretrained model is judged on its own task on test videos before anything is built on it: the tokenizer
against JPEG at the same bits per pixel, the predictors against the code table (condition code &rarr; future code at
the same place, counted on training clips), their sampled futures against copying. A verdict below about a model
that failed its gate says so in the same sentence.</p>
{gate_table_html(m)}
<h2>Every verdict, per label budget</h2><ul>{verdict}</ul>
<h2>Headline</h2><table><tr><th>quantity</th><th>value</th></tr>{head_html}</table>
{quant_html}
{_prediction_html(m)}
<h2>Single-frame segmentation study (held-out videos)</h2>
<p>Foreground IoU summed over the test split, mean ± std over paired seeds; differences are paired per seed with
95% Student-t intervals. Learning rates were chosen on validation videos from the same grid for every method.
Ablations, mIoU, Dice, boundary F and COCO AP are on the heads page.</p>
{_study_table(m)}
<h3>Largest budget and trivial baselines</h3>
<table><tr><th>model</th><th>foreground IoU</th><th>mIoU</th></tr>{seg_html}</table>
<h2>Pages</h2><ol>{links}</ol>
<p>Numbers: <a href="summary.json">summary.json</a>.</p>
{_others_html(others)}
</body></html>
"""
