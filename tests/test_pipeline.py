"""The whole pipeline at the smoke profile, as `vpe report` runs it, plus its failure modes."""

import json

import pytest

from vpe_lib.report.build import ReportError, build_report, notebooks
from vpe_lib.report.index import quantizer_rows
from vpe_lib.stages.common import MissingArtifactError, require, start_stage
from vpe_lib.stages.pretrain_stage import run_pretrain_stage


@pytest.mark.slow
def test_smoke_report_end_to_end(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "report"
    summary = build_report("smoke", run_dir, out, timeout=600)
    names = [nb.stem for nb in notebooks()]
    assert len(names) == 6
    for name in names:
        page = out / f"{name}.html"
        assert page.exists() and page.stat().st_size > 10_000, name
        assert "Traceback" not in page.read_text(), name
    index = (out / "index.html").read_text()
    assert all(f'href="{n}.html"' in index for n in names)
    assert "Tokenizer quantizers" in index  # the smoke profile compares vq / lfq / fsq
    assert "Every verdict, per label budget" in index and "At 50% labels" in index
    assert "The answers" in index and "(a) Does a video-pretrained encoder beat a UNet" in index and "What ran: PushWorld" in index
    assert "data:image/png;base64" in index  # the forest plot on the first screen
    disk = json.loads((out / "summary.json").read_text())
    assert disk["status"] == "ok" and disk["provenance"]["profile"] == "smoke"
    assert set(names) <= set(disk["wall_time_s"]) and disk["wall_time_s"]["total"] > 0
    m = disk["metrics"]
    for key in ("data/frames_per_s", "tokenizer/psnr_db", "tokenizer/codebook_utilisation", "tokenizer/bits_per_pixel",
                "tokenizer/jpeg_psnr_db_at_same_rate", "tokenizer/compare/fsq/entropy_bits_per_pixel",
                "seg/fg_iou/unet", "seg/fg_iou/tokenizer/conv", "seg/fg_iou/colour_baseline/labels100",
                "seg/fg_iou/tokenizer/conv/finetuned/labels50", "seg/fg_iou_objects/unet/labels100",
                "seg/diff_vs_unet/tokenizer/conv/frozen/labels50/ci_low", "seg/coco_ap/unet/labels100/ap",
                "seg/boundary_f/random_tokenizer/conv/frozen/labels100", "seg/convergence/unet/gain",
                "predict/masked/nll_bits_per_token", "predict/ar/nll_bits_per_token",
                "predict/copy_tokens/nll_bits_per_token", "predict/unigram/nll_bits_per_token",
                "predict/masked/psnr_db_moving", "predict/ceiling/psnr_db_moving", "predict/copy_pixels/psnr_db_moving",
                "masking/mgm/x1/probe_fg_iou", "masking/random/x0.5/motion_r2", "masking/mgm/moving_overlap",
                "mv/extract_ms_per_frame", "mv/block_matching_ms_per_frame",
                *(f"tokenizer/compare/{q}/psnr_db" for q in ("vq", "lfq", "fsq"))):
        assert isinstance(m[key], (int, float)), key
    assert 0 <= m["seg/fg_iou/unet"] <= 1
    assert "Video prediction (test videos)" in index
    # the smoke predictors train 10 updates without the table prior: too short to beat the code table, and
    # the page says so before any verdict about their features
    assert "Did pretraining succeed at its own task?" in index and "FAIL" in index
    assert m["gate/masked/seed0/passed"] == 0.0 and m["gate/masked/seed0/margin"] < 0
    assert "Did pretraining succeed" in (out / "06_results.html").read_text()
    assert "No convergence check" not in (out / "05_heads.html").read_text()  # the smoke profile runs it
    for stage in ("data", "pretrain", "predict", "latents", "heads", "results"):
        assert (run_dir / stage / "config.json").exists() and (run_dir / stage / "metrics.json").exists()
    # the fields each stage was seen reading are in its cache key: the latent stage's seeds and still-image
    # settings, which its declared section (analysis) does not cover
    reads = json.loads((run_dir / "latents" / "stage_key.json").read_text())["reads"]
    assert {"seg.seeds", "seg.still"} <= set(reads), reads
    config_walk(run_dir)
    assert summary["metrics"] == m


def test_stage_without_earlier_artifacts_names_what_is_missing(tmp_path):
    cfg, out = start_stage("smoke", tmp_path, "pretrain")
    with pytest.raises(MissingArtifactError, match=r"manifest\.json.*01_data"):
        run_pretrain_stage(cfg, tmp_path, out, progress=False)
    with pytest.raises(MissingArtifactError, match="stage 'heads'"):
        require(tmp_path, "heads")


def test_failing_notebook_is_named_and_its_page_kept(tmp_path):
    # notebook 02 runs without 01's artifacts: it must fail, named, with its partial page kept
    with pytest.raises(ReportError, match=r"02_pretrain\.ipynb failed in cell"):
        build_report("smoke", tmp_path / "run", tmp_path / "report", only=["02_pretrain"], timeout=120)
    assert (tmp_path / "report" / "02_pretrain.html").exists()
    assert (tmp_path / "run" / "notebooks" / "02_pretrain.ipynb").exists()
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["status"] == "failed"


def test_bad_profile_fails_before_any_notebook(tmp_path):
    from vpe_lib.config import ConfigError

    with pytest.raises(ConfigError):
        build_report("tiny", tmp_path / "run", tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_quantizer_rows_from_flat_metrics():
    m = {"tokenizer/compare/vq/psnr_db": 20.0, "tokenizer/compare/vq/codebook_size": 1024,
         "tokenizer/compare/fsq/psnr_db": 21.0, "tokenizer/psnr_db": 25.0}
    rows = quantizer_rows(m)
    assert [r["quantizer"] for r in rows] == ["fsq", "vq"]
    assert rows[1]["psnr_db"] == 20.0 and rows[1]["codebook_size"] == 1024 and rows[0]["codebook_size"] is None
    assert quantizer_rows({"tokenizer/psnr_db": 1.0}) == []


def test_provenance_is_taken_before_the_notebooks_run(tmp_path, monkeypatch):
    """The report records the commit and dirty flag of the code that ran, not of the tree as it
    is minutes later when the run ends."""
    import vpe_lib.report.build as report

    calls = []
    monkeypatch.setattr(report, "ensure_kernel", lambda: "k")
    monkeypatch.setattr(report, "provenance", lambda profile, started: calls.append("provenance") or
                        {"commit": "c", "dirty": False, "profile": profile, "start_time": "t", "torch": "x",
                         "hardware": {"cpu_count": 2, "gpu": None}})
    monkeypatch.setattr(report, "run_notebook", lambda nb, *a, **k: calls.append(nb.stem))
    summary = build_report("smoke", tmp_path / "run", tmp_path / "out", only=["01_data", "02_pretrain"])
    assert calls == ["provenance", "01_data", "02_pretrain"]
    assert summary["provenance"]["commit"] == "c"


def test_report_pages_fetch_nothing_from_the_network():
    from vpe_lib.report.build import offline_html

    page = ('<head><script src="https://cdnjs.cloudflare.com/x/require.min.js"></script>'
            '<script type="text/javascript" src="https://cdn/mathjax.js?config=TeX"> </script>'
            '<link rel="stylesheet" href="https://cdn/x.css"/><script>var a = 1;</script></head>'
            '<body><a href="https://example.org">a link stays</a></body>')
    out = offline_html(page)
    assert "cdn" not in out and "var a = 1" in out and 'href="https://example.org"' in out


def test_provenance_is_dirty_for_code_changes_not_for_rendered_reports(tmp_path, monkeypatch):
    import datetime as dt
    import subprocess

    from vpe_lib.report import build as report

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "reports").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "index.html").write_text("<p>old</p>\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    assert report.provenance("smoke", now)["dirty"] is False
    (tmp_path / "reports" / "index.html").write_text("<p>an uncommitted render</p>\n")
    assert report.provenance("smoke", now)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert report.provenance("smoke", now)["dirty"] is True


def config_walk(run_dir):
    """Every leaf of the resolved config, changed alone, changes the keys of exactly the stages that read it
    (their declared sections, or the fields the run recorded them reading) and of the stages after them."""
    import copy
    from dataclasses import asdict

    from vpe_lib.config import get_config
    from vpe_lib.report.build import NOTEBOOK_DIR
    from vpe_lib.report.stage_cache import STAGE_INPUTS, UPSTREAM, stage_keys
    from vpe_lib.stages.common import STAGES

    reads = {s: json.loads((run_dir / s / "stage_key.json").read_text())["reads"] for s in STAGES}
    notebooks = {s: NOTEBOOK_DIR / f"{nb}.ipynb" for s, nb in STAGES.items()}
    tree = json.loads(json.dumps(asdict(get_config("smoke")), default=str))
    base = stage_keys(tree, notebooks, code="c", reads=reads)

    def leaves(node, path=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, path + (k,))
        else:
            yield path

    def covered(leaf: str, items) -> bool:
        return any(leaf == i or leaf.startswith(i + ".") for i in items)

    walked = 0
    for path in leaves(tree):
        leaf = ".".join(path)
        changed_tree = copy.deepcopy(tree)
        node = changed_tree
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = ["<changed>", node[path[-1]]]
        keys = stage_keys(changed_tree, notebooks, code="c", reads=reads)
        expected = set()
        for s in STAGES:  # pipeline order: a stage's upstream is decided before it
            if (len(path) == 1 or covered(leaf, (*STAGE_INPUTS[s], *reads[s]))
                    or any(u in expected for u in UPSTREAM[s])):
                expected.add(s)
        assert {s for s in STAGES if keys[s]["key"] != base[s]["key"]} == expected, leaf
        walked += 1
    assert walked > 100


def test_the_index_is_written_again_from_the_summary_without_running_a_notebook(tmp_path):
    from vpe_lib.report.build import rewrite_index

    with pytest.raises(ReportError, match="summary.json does not exist"):
        rewrite_index(tmp_path)
    summary = {"metrics": {"tokenizer/psnr_db": 23.5}, "status": "ok", "wall_time_s": {"total": 10.0},
               "provenance": {"profile": "cpu", "commit": "0" * 40, "dirty": False, "torch": "x", "start_time": "t",
                              "hardware": {"cpu_count": 2, "gpu": None}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "01_data.html").write_text("<p>page</p>")
    (tmp_path / "index.html").write_text("old")
    page = rewrite_index(tmp_path).read_text()
    assert 'href="01_data.html"' in page and "02_pretrain.html" not in page  # only the pages that exist
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["metrics"] == summary["metrics"] and written["index_commit"] != "0" * 40
    assert "this index written at commit" in page
