"""bench/bench_tokenizer_mfu.py at the smallest scale on CPU (the real run is on a GPU)."""

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("bench_tokenizer_mfu")


def test_counts_flops_and_reports_mfu(bench, tmp_path):
    out = tmp_path / "mfu.json"
    args = ["--preset", "smoke", "--device", "cpu", "--steps", "2", "--warmup", "1", "--peak-tflops", "1.0"]
    r = bench.main([*args, "--batch", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == r
    assert r["latent_shape"] == [2, 32, 32] and r["amp"] == "off" and r["peak_mem_gib"] is None
    assert r["train_gflop_per_clip"] > 0.1 and r["clips_per_s"] > 0
    assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 1.0)
    assert r["achieved_tflops"] == pytest.approx(r["train_gflop_per_clip"] * r["clips_per_s"] / 1e3)
    # FLOPs are counted per clip: independent of the batch size of the timed steps
    r4 = bench.main([*args, "--batch", "4", "--out", str(tmp_path / "b4.json")])
    assert r4["train_gflop_per_clip"] == r["train_gflop_per_clip"]


def test_unknown_device_peak_gives_no_mfu(bench, tmp_path):
    r = bench.main(["--preset", "smoke", "--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "1",
                    "--out", str(tmp_path / "x.json")])
    assert r["peak_tflops"] is None and r["mfu"] is None
    with pytest.raises(SystemExit):
        bench.main(["--preset", "huge"])
