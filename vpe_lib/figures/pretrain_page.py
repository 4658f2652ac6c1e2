"""The figures and tables of the tokenizer page (notebook 02), from the pretrain stage's metrics, training
histories and `rate_distortion.json`."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt



def training_figure(history: Sequence[Mapping[str, float]]):
    """Training loss (total and reconstruction, log scale), held-out PSNR and codebook utilisation against steps."""
    train_h = [h for h in history if "loss" in h]
    eval_h = [h for h in history if "eval/psnr_db" in h]
    fig, ax = plt.subplots(1, 3, figsize=(11, 2.8))
    ax[0].plot([h["step"] for h in train_h], [h["loss"] for h in train_h], label="total")
    if train_h and "recon_loss" in train_h[0]:
        ax[0].plot([h["step"] for h in train_h], [h["recon_loss"] for h in train_h], label="reconstruction")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[0].set_title("training loss")
    ax[1].plot([h["step"] for h in eval_h], [h["eval/psnr_db"] for h in eval_h], "o-")
    ax[1].set_title("held-out PSNR (dB)")
    ax[2].plot([h["step"] for h in eval_h], [h["eval/codebook_utilisation"] for h in eval_h], "o-")
    ax[2].set_ylim(0, 1.05)
    ax[2].set_title("codebook utilisation")
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    return fig


def quantizer_table(metrics: Mapping[str, float], quantizers: Sequence[str], steps: int) -> str:
    """The like-for-like quantizer runs: rate, quality, codebook use and speed after `steps` updates each."""
    rows = ["| quantizer | codes | PSNR (dB) | SSIM | utilisation | perplexity | dead codes | clips/s |",
            "|---|---|---|---|---|---|---|---|"]
    for q in quantizers:
        m = lambda k: metrics[f"tokenizer/compare/{q}/{k}"]  # noqa: E731
        rows.append(f"| {q} | {m('codebook_size'):.0f} | {m('psnr_db'):.2f} | {m('ssim'):.3f} | {m('codebook_utilisation'):.1%} "
                    f"| {m('codebook_perplexity'):.0f} | {m('dead_codes'):.0f} | {m('train_clips_per_s'):.1f} |")
    return f"After {steps} updates each:\n\n" + "\n".join(rows)


def quantizer_figure(histories: Mapping[str, Sequence[Mapping[str, float]]]):
    """Reconstruction loss, held-out PSNR and utilisation of each quantizer's run against steps."""
    fig, ax = plt.subplots(1, 3, figsize=(11, 2.8))
    for q, h in histories.items():
        tr = [r for r in h if "recon_loss" in r]
        ev = [r for r in h if "eval/psnr_db" in r]
        ax[0].plot([r["step"] for r in tr], [r["recon_loss"] for r in tr], label=q)
        ax[1].plot([r["step"] for r in ev], [r["eval/psnr_db"] for r in ev], "o-", label=q)
        ax[2].plot([r["step"] for r in ev], [r["eval/codebook_utilisation"] for r in ev], "o-", label=q)
    ax[0].set_yscale("log")
    ax[0].set_title("reconstruction loss")
    ax[1].set_title("held-out PSNR (dB)")
    ax[2].set_title("codebook utilisation")
    ax[2].set_ylim(0, 1.05)
    for a in ax:
        a.set_xlabel("step")
        a.legend()
    fig.tight_layout()
    return fig


def rate_points(metrics: Mapping[str, float], quantizer: str, quantizers: Sequence[str], compare_steps: int) -> dict:
    """{label: (bits per pixel, entropy bits per pixel, PSNR)} of the tokenizer and the comparison's runs, for
    `plots.rate_distortion`."""
    points = {f"tokenizer ({quantizer}, {metrics['tokenizer/steps']:.0f} steps)":
              (metrics["tokenizer/bits_per_pixel"], metrics["tokenizer/entropy_bits_per_pixel"], metrics["tokenizer/psnr_db"])}
    for q in quantizers:
        m = lambda k: metrics[f"tokenizer/compare/{q}/{k}"]  # noqa: E731
        points[f"{q} ({compare_steps} steps)"] = (m("bits_per_pixel"), m("entropy_bits_per_pixel"), m("psnr_db"))
    return points


def rate_sentence(metrics: Mapping[str, float], reference: Mapping[str, Any]) -> str:
    """The tokenizer's rate and quality against JPEG at the same rate and the resampling ceilings, in words."""
    jpeg_same = metrics.get("tokenizer/jpeg_psnr_db_at_same_rate")
    jpeg30 = reference.get("jpeg_bits_per_pixel_for_30db")
    return (f"On {reference['n_frames']} held-out frames the tokenizer spends **{metrics['tokenizer/bits_per_pixel']:.3f} bits "
            f"per pixel** ({metrics['tokenizer/entropy_bits_per_pixel']:.3f} at its code entropy) for "
            f"**{metrics['tokenizer/psnr_db']:.2f} dB**. "
            + (f"JPEG at the same rate reaches {jpeg_same:.2f} dB. " if jpeg_same is not None
               else "That rate lies outside the measured JPEG curve. ")
            + "Resampling through the latent grid's resolution without quantisation gives "
            + ", ".join(f"{db:.2f} dB ({k})" for k, db in reference["resample_psnr_db"].items())
            + (f"; JPEG needs {jpeg30:.2f} bits per pixel for 30 dB on these frames." if jpeg30 is not None else "."))
