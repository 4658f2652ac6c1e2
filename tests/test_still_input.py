import math

import pytest

from vpe_lib.experiments.still_input import compare, table


def _runs(values, seeds=(0, 1, 2)):
    return [{"seed": s, "fg_iou": v} for s, v in zip(seeds, values)]


def test_compare_pairs_by_seed_and_states_the_interval():
    per_seed = {
        "repeat": {"tokenizer/conv/frozen": {"labels10": _runs([0.40, 0.50, 0.45])},
                   "unet": {"labels10": _runs([0.6, 0.6, 0.6])}},
        # listed in another order: pairing is by seed, not by position
        "single": {"tokenizer/conv/frozen": {"labels10": list(reversed(_runs([0.45, 0.55, 0.50])))},
                   "unet": {"labels10": _runs([0.6, 0.6, 0.6])}},
    }
    out = compare(per_seed)
    tok = out["tokenizer/conv/frozen/labels10"]
    assert tok["seeds"] == [0, 1, 2] and tok["single"] == [0.45, 0.55, 0.50]
    d = tok["diff_single_minus_repeat"]
    assert math.isclose(d["mean"], 0.05) and d["std"] < 1e-12 and d["ci_low"] > 0
    assert tok["verdict"].startswith("single beats repeat")
    assert "no measurable difference" in out["unet/labels10"]["verdict"]
    md = table(out)
    assert "| tokenizer/conv/frozen/labels10 | 0.450 | 0.500 | +0.050" in md


def test_compare_refuses_unpaired_seeds():
    per_seed = {"repeat": {"m": {"labels10": _runs([0.4, 0.5], seeds=(0, 1))}},
                "single": {"m": {"labels10": _runs([0.4, 0.5], seeds=(0, 2))}}}
    with pytest.raises(ValueError, match="different seeds"):
        compare(per_seed)


def test_a_static_clip_is_a_fixed_point_of_the_causal_tokenizer_used_here():
    """Why the experiment finds no difference: with past-side replicate padding, per-frame
    GroupNorm and pooled time resampling (the cpu profile's causal recipe), a still repeated to a
    clip gives the same maps as the still alone, up to float rounding."""
    import torch

    from vpe_lib.models.encoders import TokenizerEncoder
    from vpe_lib.models.tokenizer import TokenizerConfig, VQVAE3D

    cfg = TokenizerConfig(base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=1, temporal_down=(True, False),
                          spatial_down=(True, True), full_res_blocks=False, embed_dim=8, codebook_size=16,
                          clip_frames=5, causal=True)
    torch.manual_seed(0)
    tok = VQVAE3D(cfg=cfg).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        single = TokenizerEncoder(tok, still="single").forward_intermediates(x)
        for frames in (3, 5):
            rep = TokenizerEncoder(tok, still="repeat", clip_frames=frames).forward_intermediates(x)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(single, rep))
