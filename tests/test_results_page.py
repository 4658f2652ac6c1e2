"""The results page's tables (vpe_lib.figures.results_page)."""

from vpe_lib.figures import results_page as page
from vpe_lib.stages.results_stage import MIN_DIFFICULTY_GAP, SEED_PAPER


def test_the_seed_paper_table_puts_its_configuration_beside_ours():
    row = {"method": "masked/conv/finetuned", "labels": "1%", "fg_iou": 0.41, "fg_iou_std": 0.02, "fg_iou_objects": 0.1,
           "pretext": "passed its gate"}
    table = page.seed_paper_table(SEED_PAPER, [row], 3, "PushWorld (synthetic), 64x64")
    assert "| seed paper |" in table and "| 0.83 |" in table
    assert "| ours | masked/conv/finetuned (1% labels) | PushWorld (synthetic), 64x64 | 3 seeds | 0.410 ± 0.020 | 0.100 |" in table
    assert "does not fine-tune the prediction transformers" not in table
    tok = {**row, "method": "tokenizer/conv/finetuned", "fg_iou_std": float("nan"), "fg_iou_objects": None}
    only_tok = page.seed_paper_table(SEED_PAPER, [tok], 1, "x")
    assert "| 0.410 | — |" in only_tok and "does not fine-tune the prediction transformers" in only_tok


def test_the_sanity_lines_judge_the_worlds_difficulty():
    hard = page.sanity_lines({"results/unet_minus_colour_baseline": 0.25}, MIN_DIFFICULTY_GAP)
    assert "25.0 IoU points (at least the required 10" in hard[0]
    easy = page.sanity_lines({"results/unet_minus_colour_baseline": 0.05}, MIN_DIFFICULTY_GAP)
    assert "**less than the required 10**" in easy[0]
    tok = page.sanity_lines({"tokenizer/psnr_db": 23.5, "tokenizer/bits_per_pixel": 0.312, "tokenizer/codebook_utilisation": 0.9,
                             "tokenizer/jpeg_psnr_db_at_same_rate": 22.77}, MIN_DIFFICULTY_GAP)
    assert tok == ["- Tokenizer: 23.50 dB PSNR on held-out clips at 0.312 bits per pixel (JPEG on the same frames at that "
                   "rate: 22.77 dB), 90% of codes used."]
