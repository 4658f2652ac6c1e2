"""bench/tokenizer_lr_validation.py: the tokenizer's learning rate re-checked on validation videos."""

import json

import pytest

from vpe_lib.config import get_config
from vpe_lib.data.store import PushWorldStore, build_dataset


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("tokenizer_lr_validation")


def test_split_holds_out_the_studys_validation_videos(bench, tmp_path):
    build_dataset(tmp_path / "pw", get_config("smoke").data.world, n_train=5, n_test=1, videos_per_shard=2,
                  workers=1, progress=False)
    store = PushWorldStore(tmp_path / "pw", "train")
    train, val = bench.split_train_val(store, 2)
    assert len(train) == 3 and len(val) == 2
    # the subset reads the underlying videos: validation video 0 is training-split video 3
    assert (val.get("frames", 0) == store.get("frames", 3)).all()
    with pytest.raises(IndexError):
        val.get("frames", 2)
    with pytest.raises(ValueError, match="n_val"):
        bench.split_train_val(store, 5)


def test_bad_lrs_stop_at_argument_parsing(bench):
    with pytest.raises(SystemExit):
        bench.main(["--lrs", "fast"])
    with pytest.raises(SystemExit):
        bench.main(["--lrs", "0,1e-3"])


def test_lr_check_at_smoke_scale(bench, tmp_path):
    build_dataset(tmp_path / "data" / "pushworld", get_config("smoke").data.world, n_train=5, n_test=1,
                  videos_per_shard=3, workers=1, progress=False)
    out = tmp_path / "lr.json"
    r = bench.main(["--profile", "smoke", "--run-dir", str(tmp_path), "--lrs", "1e-3,3e-3", "--steps", "2",
                    "--set", "pretrain.n_eval_clips=2", "--set", "seg.n_val_videos=2", "--no-progress",
                    "--out", str(out)])
    on_disk = json.loads(out.read_text())
    assert [row["lr"] for row in on_disk["rows"]] == [1e-3, 3e-3] and on_disk["n_val_videos"] == 2
    assert r["chosen_lr"] == max(r["rows"], key=lambda row: row["val_psnr_db"])["lr"]
    assert (tmp_path / "lr_validation" / "lr0.001_2" / "final.pt").exists()
