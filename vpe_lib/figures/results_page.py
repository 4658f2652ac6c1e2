"""The tables of the results page (notebook 06), from the results stage's metrics and rows."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def seed_paper_table(seed_paper: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], n_seeds: int, data: str) -> str:
    """The seed paper's reported configuration beside our rows of the same kind (with their pretext gates), and a
    line when this profile did not fine-tune the prediction transformers."""
    table = ["| | configuration | data | runs | fg IoU | objects only | pretraining |", "|---|---|---|---|---|---|---|",
             f"| seed paper | {seed_paper['setup']} | {seed_paper['data']} | {seed_paper['runs']} | {seed_paper['fg_iou']:.2f} | — | "
             f"{seed_paper['pretext']} |"]
    for r in rows:
        sd = "" if r["fg_iou_std"] is None or r["fg_iou_std"] != r["fg_iou_std"] else f" ± {r['fg_iou_std']:.3f}"
        objects = "—" if r["fg_iou_objects"] is None else f"{r['fg_iou_objects']:.3f}"
        table.append(f"| ours | {r['method']} ({r['labels']} labels) | {data} | {n_seeds} seeds | "
                     f"{r['fg_iou']:.3f}{sd} | {objects} | {r['pretext']} |")
    if not any(r["method"].endswith("finetuned") and r["method"].split("/")[0] in ("masked", "ar") for r in rows):
        table.append("\n*This profile does not fine-tune the prediction transformers (`seg.finetune_predictors`); "
                     "the study profile does.*")
    return "\n".join(table)


def sanity_lines(m: Mapping[str, float], min_gap: float) -> list[str]:
    """Is the world hard enough (the UNet against the per-pixel colour baseline), and the tokenizer's rate and quality."""
    lines = []
    gap = m.get("results/unet_minus_colour_baseline")
    if gap is not None:
        lines.append(f"- **Is the world hard enough?** The UNet beats the per-pixel colour baseline by {gap * 100:.1f} IoU points "
                     + ("(at least the required 10: colour alone does not solve it)." if gap >= min_gap else
                        f"— **less than the required {min_gap * 100:.0f}**: the world is too easy (or the UNet "
                        "undertrained) to separate encoders."))
    if "tokenizer/psnr_db" in m:
        jpeg = m.get("tokenizer/jpeg_psnr_db_at_same_rate")
        lines.append(f"- Tokenizer: {m['tokenizer/psnr_db']:.2f} dB PSNR on held-out clips at {m['tokenizer/bits_per_pixel']:.3f} "
                     "bits per pixel " + (f"(JPEG on the same frames at that rate: {jpeg:.2f} dB), " if jpeg is not None else "")
                     + f"{m['tokenizer/codebook_utilisation'] * 100:.0f}% of codes used.")
    return lines
