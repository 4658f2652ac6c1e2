"""bench/tokenizer_rate_sweep.py: token grids, and a run at the smoke profile on a tiny dataset."""

import json
import math

import pytest

from vpe_lib.config import get_config
from vpe_lib.data.store import build_dataset
from vpe_lib.models import TokenizerConfig, VQVAE3D
from vpe_lib.stages.common import MissingArtifactError, write_json


@pytest.fixture(scope="module")
def sweep(load_bench):
    return load_bench("tokenizer_rate_sweep")


@pytest.mark.parametrize("grid, t_flags, s_flags, latent", [
    ("2x4", (True, False), (True, True), (2, 16, 16)),
    ("2x2", (True, False), (True, False), (2, 32, 32)),
    ("1x2", (False, False), (True, False), (4, 32, 32)),
    ("4x4", (True, True), (True, True), (1, 16, 16)),
])
def test_grid_config_sets_the_downsampling_flags(sweep, grid, t_flags, s_flags, latent):
    base = TokenizerConfig.cpu(clip_frames=4)
    cfg = sweep.grid_config(base, grid)
    assert (cfg.temporal_down, cfg.spatial_down) == (t_flags, s_flags)
    assert cfg.channel_mults == base.channel_mults and cfg.codebook_size == base.codebook_size
    assert VQVAE3D(cfg=cfg).latent_shape(4, 64, 64) == latent


@pytest.mark.parametrize("grid, match", [("2y4", "expected TxS"), ("3x4", "powers of two"), ("2x8", "up to 4")])
def test_bad_grids_are_named(sweep, grid, match):
    with pytest.raises(ValueError, match=match):
        sweep.grid_config(TokenizerConfig.cpu(), grid)


def test_missing_data_stage_names_it(sweep, tmp_path):
    with pytest.raises(MissingArtifactError, match="data"):
        sweep.main(["--profile", "smoke", "--run-dir", str(tmp_path), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):  # a bad grid stops at argument parsing, before anything runs
        sweep.main(["--grids", "2x3"])
    with pytest.raises(SystemExit):  # and so does an empty list
        sweep.main(["--grids", " , "])


def test_sweep_at_smoke_scale(sweep, tmp_path):
    world = get_config("smoke").data.world
    build_dataset(tmp_path / "data" / "pushworld", world, n_train=4, n_test=2, videos_per_shard=2,
                  workers=1, progress=False)
    out = tmp_path / "sweep.json"
    args = ["--profile", "smoke", "--run-dir", str(tmp_path), "--grids", "2x2,1x2", "--steps", "3",
            "--set", "pretrain.n_eval_clips=2", "--no-progress", "--out", str(out)]
    r = sweep.main(args)
    on_disk = json.loads(out.read_text())
    assert [g["grid"] for g in on_disk["grids"]] == ["2x2", "1x2"] and on_disk["steps"] == 3
    coarse, fine = r["grids"]
    assert coarse["latent_shape"] == [2, 16, 16] and fine["latent_shape"] == [4, 16, 16]
    # twice the tokens for the same pixels: twice the nominal rate
    assert fine["bits_per_pixel"] == pytest.approx(2 * coarse["bits_per_pixel"])
    for g in r["grids"]:
        assert g["steps"] == 3 and math.isfinite(g["psnr_db"]) and 0 < g["codebook_utilisation"] <= 1
        jpeg = g["jpeg_psnr_db_at_same_rate"]  # NaN (null on disk) when the rate is beyond JPEG's curve
        assert math.isnan(jpeg) or g["psnr_minus_jpeg_db"] == pytest.approx(g["psnr_db"] - jpeg)
    assert len(on_disk["jpeg"]) >= 2 and set(on_disk["resample_psnr_db"]) == {"2x", "4x"}
    # each grid trained into its own folder, with the training loop's checkpoints: a rerun resumes
    assert (tmp_path / "rate_sweep" / "2x2_3" / "final.pt").exists()
    again = sweep.main(args)
    assert [g["psnr_db"] for g in again["grids"]] == [g["psnr_db"] for g in r["grids"]]


def test_write_json_turns_nan_into_null_at_any_depth(tmp_path):
    path = write_json(tmp_path / "x.json", {"a": float("nan"), "b": [{"c": float("inf"), "d": 1.5}], "e": (2, 3)})
    assert json.loads(path.read_text()) == {"a": None, "b": [{"c": None, "d": 1.5}], "e": [2, 3]}
