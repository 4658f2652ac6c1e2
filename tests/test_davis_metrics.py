"""DAVIS J and F by the benchmark's definitions (vpe_lib.eval.davis): hand-computable masks, and a saved case
whose per-frame J and F and per-sequence statistics were computed once by the davis2017-evaluation code
(tests/data/davis_case.json, masks bit-packed: random blobs at 60x90, an empty prediction, an empty frame, three sequences)."""

import json
from pathlib import Path

import numpy as np
import pytest

from vpe_lib.eval.davis import (boundary_f, boundary_map, davis_scores, disk, region_j, statistics,
                                tolerance_px)

DATA = Path(__file__).parent / "data"


def square(h, w, top, left, side):
    m = np.zeros((h, w), bool)
    m[top:top + side, left:left + side] = True
    return m


def test_a_square_shifted_by_k_pixels():
    h = w = 100  # diagonal 141.4: tolerance ceil(1.13) = 2 pixels
    assert tolerance_px((h, w)) == 2
    a = square(h, w, 30, 30, 20)
    for k in (1, 2, 3, 5):
        b = square(h, w, 30, 30 + k, 20)
        assert region_j(b, a) == pytest.approx((20 - k) / (20 + k))  # overlap 20(20-k), union 20(20+k)
        f = boundary_f(b, a)
        assert (f == 1.0) if k <= 2 else (f < 1.0)  # within the tolerance every boundary pixel matches
    assert boundary_f(square(h, w, 30, 35, 20), a, bound_th=5) == 1.0  # bound_th >= 1 is pixels


def test_empty_masks_follow_the_benchmark_conventions():
    empty, a = np.zeros((20, 20), bool), square(20, 20, 5, 5, 6)
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert region_j(empty, a) == 0.0 and boundary_f(empty, a) == 0.0 and boundary_f(a, empty) == 0.0
    assert boundary_map(a).sum() > 0 and not boundary_map(empty).any()
    assert disk(1).sum() == 5 and disk(2).sum() == 13


def test_statistics_mean_recall_decay():
    s = statistics([1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0])
    assert s["mean"] == pytest.approx(0.5) and s["recall"] == pytest.approx(4 / 8)
    assert s["decay"] > 0.5  # it gets worse over the sequence


def test_the_saved_case_matches_the_reference_code_to_1e_6():
    ref = json.loads((DATA / "davis_case.json").read_text())
    masks = ref["masks"]  # bit-packed as hex: text, not a binary file
    n = int(np.prod(masks["shape"]))

    def unpack(hexed):
        return np.unpackbits(np.frombuffer(bytes.fromhex(hexed), np.uint8))[:n].reshape(masks["shape"]).astype(bool)

    pred, truth, seqs = unpack(masks["pred"]), unpack(masks["truth"]), np.array(masks["seqs"])
    assert [region_j(p, t) for p, t in zip(pred, truth)] == pytest.approx(ref["J"], abs=1e-6)
    assert [boundary_f(p, t) for p, t in zip(pred, truth)] == pytest.approx(ref["F"], abs=1e-6)
    scores = davis_scores(pred, truth, seqs)
    per_seq = ref["stats"].values()
    for i, k in enumerate(("mean", "recall", "decay")):
        assert scores[f"j_{k}"] == pytest.approx(np.mean([s["j"][i] for s in per_seq]), abs=1e-6)
        assert scores[f"f_{k}"] == pytest.approx(np.mean([s["f"][i] for s in per_seq]), abs=1e-6)
    assert scores["jf_mean"] == pytest.approx((scores["j_mean"] + scores["f_mean"]) / 2)
    assert scores["n_sequences"] == 3 and scores["n_frames"] == 14 - 6  # first and last frame of each left out


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="same n h w"):
        davis_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), [0, 0])
    with pytest.raises(ValueError, match="3 sequence ids for 2 frames"):
        davis_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), [0, 0, 1])
