"""Stage caching in `vpe report`: an unchanged re-run skips every stage, a changed parameter
re-runs exactly the stages it affects, --force re-runs one, a failed stage runs again; and the
progress lines of a kernel reach the terminal."""

import json
import os
import shutil

import pytest

import vpe_lib.report.build as report
from vpe_lib import progress
from vpe_lib.config import ConfigError, get_config
from vpe_lib.report.stage_cache import code_version, resolve_stage_names, stage_keys, why_stale
from vpe_lib.stages.common import STAGES

ALL = list(STAGES.values())


@pytest.fixture
def fake_notebooks(monkeypatch):
    """build_report with notebooks that 'run' by copying themselves (no kernel): records what ran."""
    ran = []

    def fake_run(nb, executed, parameters, *, kernel, timeout):
        if os.environ.get("FAIL_STAGE") == nb.stem:
            raise report.ReportError(f"notebook {nb.name} failed in cell 1")
        progress.note(f"hello from {nb.stem}")
        if nb.stem == "04_latent_analysis":  # as the real one does: it reads the study's seeds
            from vpe_lib.stages.common import start_stage

            cfg, _ = start_stage(parameters["profile"], parameters["run_dir"], "latents", parameters["overrides"])
            assert cfg.seg.seeds
        shutil.copy(nb, executed)
        ran.append(nb.stem)

    monkeypatch.setattr(report, "run_notebook", fake_run)
    monkeypatch.setattr(report, "ensure_kernel", lambda: "k")
    monkeypatch.setattr(report, "_render_html", lambda executed, target: target.write_text("<html></html>"))
    monkeypatch.setattr(report, "collect_metrics", lambda *a, **k: {})
    monkeypatch.setattr(report, "provenance", lambda profile, started: {
        "commit": "c", "dirty": False, "profile": profile, "start_time": "t", "torch": "x",
        "hardware": {"cpu_count": 2, "gpu": None}})
    return ran


def build(tmp_path, lines=None, **kw):
    return report.build_report("smoke", tmp_path / "run", tmp_path / "out",
                               log=(lines.append if lines is not None else lambda s: None), **kw)


def test_unchanged_rerun_skips_every_stage_and_a_changed_head_parameter_reruns_heads_and_results(
        tmp_path, fake_notebooks):
    lines = []
    build(tmp_path, lines)
    assert fake_notebooks == ALL
    assert any("01_data | hello from 01_data" in line for line in lines)  # forwarded from the "kernel"
    fake_notebooks.clear()
    summary = build(tmp_path)
    assert fake_notebooks == [] and summary["cached_stages"] == ALL
    assert set(summary["computed_wall_time_s"]) == set(ALL)
    # a head parameter: the heads stage and what reads it
    build(tmp_path, overrides={"seg.lr_grid": [1e-3]})
    assert fake_notebooks == ["05_heads", "06_results"]
    fake_notebooks.clear()
    # a tokenizer parameter: everything after the data
    build(tmp_path, overrides={"seg.lr_grid": [1e-3], "pretrain.train.steps": 7})
    assert fake_notebooks == ALL[1:]
    fake_notebooks.clear()
    # the analysis section: only the latents stage and the results
    build(tmp_path, overrides={"seg.lr_grid": [1e-3], "pretrain.train.steps": 7, "analysis.n_points": 77})
    assert fake_notebooks == ["04_latent_analysis", "06_results"]


def test_a_field_a_stage_was_seen_reading_reruns_it_when_it_changes(tmp_path, fake_notebooks):
    """The stale cache the hand-kept table had: the latent stage reads seg.seeds but declares only
    the analysis section, so new seeds re-ran the heads and kept serving the old latent page."""
    lines = []
    build(tmp_path)
    stamp = json.loads((tmp_path / "run" / "latents" / "stage_key.json").read_text())
    assert stamp["reads"] == ["seg.seeds"]  # recorded from the run, outside its declared section
    fake_notebooks.clear()
    build(tmp_path, lines, overrides={"seg.seeds": [0, 7]})
    assert fake_notebooks == ["04_latent_analysis", "05_heads", "06_results"]
    assert any("04_latent_analysis: running (changed: config seg.seeds)" in line for line in lines)
    fake_notebooks.clear()
    build(tmp_path, overrides={"seg.seeds": [0, 7], "seg.lr_grid": [1e-3]})  # a field it does not read
    assert fake_notebooks == ["05_heads", "06_results"]


def test_force_reruns_one_stage_and_names_are_checked(tmp_path, fake_notebooks):
    build(tmp_path)
    fake_notebooks.clear()
    build(tmp_path, force=["pretrain"])
    assert fake_notebooks == ["02_pretrain"]
    fake_notebooks.clear()
    build(tmp_path, force=["05_heads"])  # a notebook name works too
    assert fake_notebooks == ["05_heads"]
    with pytest.raises(ConfigError, match="unknown stage 'pretrian'.*pretrain"):
        resolve_stage_names(["pretrian"])


def test_a_failed_stage_runs_again_and_a_deleted_notebook_output_is_recomputed(tmp_path, fake_notebooks, monkeypatch):
    build(tmp_path)
    monkeypatch.setenv("FAIL_STAGE", "03_predict")
    with pytest.raises(report.ReportError):
        build(tmp_path, force=["predict"])
    assert not (tmp_path / "run" / "predict" / "stage_key.json").exists()
    monkeypatch.delenv("FAIL_STAGE")
    fake_notebooks.clear()
    build(tmp_path)
    assert fake_notebooks == ["03_predict"]
    (tmp_path / "run" / "notebooks" / "04_latent_analysis.ipynb").unlink()
    fake_notebooks.clear()
    build(tmp_path)
    assert fake_notebooks == ["04_latent_analysis"]


def test_stage_keys_follow_the_dependency_graph(tmp_path):
    nbs = {s: report.NOTEBOOK_DIR / f"{nb}.ipynb" for s, nb in STAGES.items()}
    base = stage_keys(get_config("smoke"), nbs, code="c")
    assert base == stage_keys(get_config("smoke"), nbs, code="c")  # deterministic
    changed = stage_keys(get_config("smoke", {"predict.dim": 48}), nbs, code="c")
    assert [s for s in STAGES if changed[s]["key"] != base[s]["key"]] == ["predict", "latents", "heads", "results"]
    # the prediction stage reads the study's validation split: that one seg field reaches it
    split = stage_keys(get_config("smoke", {"seg.n_val_videos": 2}), nbs, code="c")
    assert [s for s in STAGES if split[s]["key"] != base[s]["key"]] == ["predict", "latents", "heads", "results"]
    new_code = stage_keys(get_config("smoke"), nbs, code="d")
    assert all(new_code[s]["key"] != base[s]["key"] for s in STAGES)
    assert why_stale(None, base["data"]) == "not computed yet"
    assert why_stale(base["heads"], base["heads"]) == "unchanged"
    assert why_stale(base["heads"], changed["heads"]) == "changed: inputs from predict"
    assert len(code_version()) == 16


def test_progress_lines_are_forwarded_throttled_and_left_alone_outside_a_report(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.note("nobody listens")  # no file, no error
    got = []
    clock = iter(range(0, 10_000, 4))  # each call 4 "seconds" later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress.forward_progress(tmp_path / "p.log", got.append, poll_s=0.01):
        for step in range(1, 11):
            progress.training_step("tok", step, 10, 0, 4.0 * step)
        for step in range(1, 3):  # a short run writes nothing
            progress.training_step("head", step, 2, 0, 0.1 * step)
    assert os.environ.get(progress.ENV) is None
    assert all(line.startswith("tok: step") for line in got) and 2 <= len(got) <= 4
    assert got[-1] == "tok: step 10/10 (100%), 40s" and "ETA" in got[0]
    assert json.dumps(got)  # plain strings


def test_work_eta_paces_each_kind_and_lends_the_mean_pace_to_kinds_not_yet_timed():
    eta = progress.WorkEta()
    assert eta.remaining_s([("frozen", 100)]) is None and eta.remaining_s([]) == 0.0  # nothing timed yet
    eta.record("frozen", 100, 10.0)  # 0.1 s per update
    eta.record("finetuned", 100, 40.0)  # 0.4 s per update
    eta.record("unet", 0, 5.0)  # no work (a row found in the cache): says nothing
    assert eta.pace("frozen") == pytest.approx(0.1) and eta.pace("finetuned") == pytest.approx(0.4)
    assert eta.pace("unet") == pytest.approx(50.0 / 200)  # not timed: the mean pace of the others
    assert eta.remaining_s([("frozen", 50), ("finetuned", 50), ("unet", 20)]) == pytest.approx(5 + 20 + 5)
    eta.record("frozen", 100, 30.0)  # paces accumulate: (10 + 30) s over 200 updates
    assert eta.pace("frozen") == pytest.approx(0.2)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_gpu_fails_before_any_notebook(tmp_path, fake_notebooks):
    from vpe_lib.train.device import DeviceError

    with pytest.raises(DeviceError, match="run.device='cuda'"):
        build(tmp_path, overrides={"run.device": "cuda"})
    assert fake_notebooks == [] and not (tmp_path / "out").exists()


def test_only_reruns_its_notebooks_and_links_the_run_s_other_pages(tmp_path, fake_notebooks):
    build(tmp_path)
    fake_notebooks.clear()
    summary = build(tmp_path, only=["04_latent_analysis"], force=["latents"])
    assert fake_notebooks == ["04_latent_analysis"]
    assert set(summary["pages_from_earlier_runs"]) == set(ALL) - {"04_latent_analysis"}
    index = (tmp_path / "out" / "index.html").read_text()
    assert all(f'href="{n}.html"' in index for n in ALL) and "from an earlier run" in index
