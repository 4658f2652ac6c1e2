"""The tokenizer page's figures and tables (vpe_lib.figures.pretrain_page)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vpe_lib.figures import pretrain_page as page  # noqa: E402


def _metrics():
    m = {"tokenizer/steps": 1000.0, "tokenizer/bits_per_pixel": 0.312, "tokenizer/entropy_bits_per_pixel": 0.29,
         "tokenizer/psnr_db": 23.54, "tokenizer/jpeg_psnr_db_at_same_rate": 22.77}
    for k, v in (("codebook_size", 1024), ("psnr_db", 20.1), ("ssim", 0.7), ("codebook_utilisation", 0.5),
                 ("codebook_perplexity", 300), ("dead_codes", 10), ("train_clips_per_s", 12.0), ("bits_per_pixel", 0.3),
                 ("entropy_bits_per_pixel", 0.25)):
        m[f"tokenizer/compare/fsq/{k}"] = float(v)
    return m


def test_the_rate_sentence_and_the_quantizer_table():
    m = _metrics()
    ref = {"n_frames": 64, "resample_psnr_db": {"bilinear": 25.0}, "jpeg_bits_per_pixel_for_30db": 1.2}
    s = page.rate_sentence(m, ref)
    assert "**0.312 bits per pixel**" in s and "JPEG at the same rate reaches 22.77 dB" in s and "1.20 bits per pixel for 30 dB" in s
    no_jpeg = page.rate_sentence({**m, "tokenizer/jpeg_psnr_db_at_same_rate": None}, {**ref, "jpeg_bits_per_pixel_for_30db": None})
    assert "outside the measured JPEG curve" in no_jpeg and no_jpeg.endswith("(bilinear).")
    assert "| fsq | 1024 | 20.10 | 0.700 | 50.0% | 300 | 10 | 12.0 |" in page.quantizer_table(m, ["fsq"], 120)
    pts = page.rate_points(m, "vq", ["fsq"], 120)
    assert pts == {"tokenizer (vq, 1000 steps)": (0.312, 0.29, 23.54), "fsq (120 steps)": (0.3, 0.25, 20.1)}


def test_the_training_figures():
    hist = [{"step": 20, "loss": 0.5, "recon_loss": 0.4}, {"step": 100, "eval/psnr_db": 20.0, "eval/codebook_utilisation": 0.4}]
    fig = page.training_figure(hist)
    assert [a.get_title() for a in fig.axes] == ["training loss", "held-out PSNR (dB)", "codebook utilisation"]
    assert len(fig.axes[0].lines) == 2
    plt.close(fig)
    fig = page.quantizer_figure({"vq": hist, "fsq": hist})
    assert len(fig.axes[1].lines) == 2
    plt.close(fig)
