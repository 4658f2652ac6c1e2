"""bench/study_budget.py: the per-component sums of a study's training runs, and the idle-host estimate."""

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("study_budget", Path(__file__).resolve().parents[1] / "bench" / "study_budget.py")
study_budget = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study_budget)


def _run(folder: Path, steps: int, batch: int, rates: list[float], elapsed: float) -> None:
    folder.mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps({"batch_size": batch}))
    rows = [{"step": steps * (i + 1) // len(rates), "items_per_s": r, "elapsed_s": elapsed * (i + 1) / len(rates)}
            for i, r in enumerate(rates)] + [{"step": steps, "eval/psnr_db": 20.0}]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_components_sum_measured_walls_and_estimate_the_idle_host_from_the_sustained_rate(tmp_path):
    _run(tmp_path / "pretrain", 100, 8, [16.0, 16.0, 4.0], 120.0)  # a contended stretch: measured > idle
    _run(tmp_path / "pretrain" / "seeds" / "seed1", 100, 8, [16.0], 50.0)
    _run(tmp_path / "predict" / "masking" / "mgm" / "x0.33" / "seed0" / "abc", 33, 8, [20.0], 14.0)
    _run(tmp_path / "heads" / "runs" / "tokenizer__conv__frozen" / "labels1_seed0", 120, 16, [100.0], 20.0)
    (tmp_path / "heads" / "runs" / "unet" / "empty").mkdir(parents=True)  # a run that logged nothing: left out
    table = study_budget.summarise(study_budget.components(tmp_path))
    assert set(table) == {"pretrain/tokenizer", "pretrain/masking/mgm/x0.33", "heads/tokenizer/conv/frozen"}
    tok = table["pretrain/tokenizer"]
    assert tok["runs"] == 2 and tok["updates"] == 200 and tok["measured_s"] == 170.0
    assert tok["sustained_items_per_s"] == 16.0 and tok["idle_estimate_s"] == pytest.approx(200 * 8 / 16.0)
    assert table["heads/tokenizer/conv/frozen"]["idle_estimate_s"] == pytest.approx(120 * 16 / 100.0)


def test_a_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    assert study_budget.main(["--run-dir", str(tmp_path / "nope")]) == 1
    assert "no run folder" in capsys.readouterr().err
