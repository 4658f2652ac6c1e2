"""run.device and TrainConfig.amp: resolution, fail-fast errors, fp16 loss scaling with exact resume,
and CPU runs that give the same numbers whatever run.device says (the GPU tests skip without CUDA)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from torch import nn

from vpe_lib.cli import main
from vpe_lib.config import ConfigError, get_config
from vpe_lib.models import TokenizerConfig, VQVAE3D
from vpe_lib.train import TrainConfig, load_checkpoint, train
from vpe_lib.train import device as device_mod
from vpe_lib.train.device import (DeviceError, enable_tf32, module_device, resolve_amp, resolve_device,
                                  saved_in_channels_last)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
without_cuda = pytest.mark.skipif(CUDA, reason="checks the error of a machine without CUDA")

W_TRUE = torch.tensor([[1.5], [-2.0], [0.5], [3.0]])


def regression_batches(i: int):
    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(8, 4, generator=g)
    return x, x @ W_TRUE + 0.01 * torch.randn(8, 1, generator=g)


def mse_step(model, batch):
    x, y = batch
    err = model(x).float() - y
    return err.square().mean(), {}


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 1)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=8, lr=5e-2, warmup_steps=2, log_every=1, ckpt_every=0, progress=False), **kw})


# -- resolving run.device


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = torch.device("cuda", torch.cuda.current_device()) if CUDA else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device() == resolve_device("auto")


@without_cuda
def test_cuda_without_a_gpu_says_what_is_available():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=rf"run\.device='{spec}'.*available: cpu\. Set run\.device=auto"):
            resolve_device(spec)
    assert issubclass(DeviceError, ValueError)


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # GPU LOCAL_RANK under torchrun
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"run\.device='cuda:2'.*2 CUDA device\(s\); available: cpu, cuda:0, cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", "", 0, None])
def test_malformed_device_names_the_setting(bad):
    with pytest.raises(ValueError, match=r"run\.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(bad)
    with pytest.raises(ConfigError, match=r"run\.device"):
        get_config("smoke", {"run.device": bad})


def test_device_in_config_and_cli(capsys):
    assert get_config("smoke").run.device == "auto"
    for spec in ("auto", "cpu", "cuda", "cuda:3"):  # the machine is not consulted when a config is built
        assert get_config("smoke", {"run.device": spec}).run.device == spec
    assert main(["config", "--profile", "smoke", "--set", "run.device=cuda:1"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["device"] == "cuda:1"
    assert main(["config", "--profile", "smoke", "--set", "run.device=gpu"]) == 2
    assert "run.device must be" in capsys.readouterr().err


@without_cuda
def test_stage_start_fails_fast_on_a_missing_gpu(tmp_path):
    from vpe_lib.stages.common import start_stage

    with pytest.raises(DeviceError, match="run.device='cuda'"):
        start_stage("smoke", tmp_path, "pretrain", {"run.device": "cuda"})
    assert not (tmp_path / "pretrain").exists()  # nothing written


def test_tf32_is_for_cuda_only():
    before = torch.backends.cuda.matmul.fp32_precision
    assert enable_tf32(torch.device("cpu")) is False
    assert torch.backends.cuda.matmul.fp32_precision == before


def test_module_device():
    assert module_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(nn.Identity()) == torch.device("cpu")  # no parameters at all


# -- precision


def test_amp_validation():
    for amp in ("auto", "bf16", "fp16", "off"):
        assert TrainConfig(amp=amp).amp == amp
    with pytest.raises(ValueError, match=r"amp must be one of 'auto', 'bf16', 'fp16', 'off', got 'fp32'"):
        TrainConfig(amp="fp32")
    with pytest.raises(ConfigError, match=r"seg\.train.*amp"):
        get_config("smoke", {"seg.train.amp": "half"})
    assert get_config("smoke", {"pretrain.train.amp": "fp16"}).pretrain.train.amp == "fp16"


def test_amp_resolution(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_amp("auto", cpu) == "off"  # bf16 on this CPU is ~20x slower than fp32
    assert [resolve_amp(a, cpu) for a in ("bf16", "fp16", "off")] == ["bf16", "fp16", "off"]
    monkeypatch.setattr(device_mod, "_has_native_bf16", lambda d: d.type == "cuda")
    assert resolve_amp("auto", gpu) == "bf16"
    monkeypatch.setattr(device_mod, "_has_native_bf16", lambda d: False)  # a pre-Ampere GPU
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    assert resolve_amp("auto", gpu) == "off"
    with pytest.raises(ValueError, match="V100 has no bf16 support; use amp='fp16'"):
        resolve_amp("bf16", gpu)


@pytest.mark.filterwarnings("ignore:fp16 autocast on CPU")
def test_fp16_trains_through_the_grad_scaler_and_resumes_exactly(tmp_path):
    c = cfg(amp="fp16", ckpt_every=2)
    full = train(linear_model(), mse_step, regression_batches, c, tmp_path / "full")
    records = [r for r in full.history if "loss" in r]
    assert all("grad_scale" in r and "fp16_overflows" in r for r in records)
    # the first updates overflow at the initial scale 2**16: skipped and the scale halved, never a stop
    assert records[-1]["fp16_overflows"] >= 1 and records[-1]["grad_scale"] < 2.0**16
    assert records[-1]["skipped"] == 0 and full.step == 8
    losses = [r["loss"] for r in records if r["loss"] is not None]
    assert losses[-1] < losses[0]
    saved = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert saved["scaler"]["scale"] == records[-1]["grad_scale"]

    part = train(linear_model(), mse_step, regression_batches, c, tmp_path / "split", max_steps_this_run=3)
    assert part.step == 3
    resumed = train(linear_model(seed=5), mse_step, regression_batches, c, tmp_path / "split")
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["scaler"] == saved["scaler"]
    assert [r for r in resumed.history if "loss" in r][-1]["fp16_overflows"] == records[-1]["fp16_overflows"]


def test_without_fp16_there_is_no_scaler(tmp_path):
    res = train(linear_model(), mse_step, regression_batches, cfg(steps=2), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["scaler"] is None
    assert "grad_scale" not in res.history[-1]


# -- layouts and stages


def _fake_pretrain_run(run_dir, *, channels_last: bool):
    tok_cfg = TokenizerConfig.smoke()
    torch.manual_seed(0)
    model = VQVAE3D(cfg=tok_cfg)
    if channels_last:
        model.channels_last_()
    pre = run_dir / "pretrain"
    pre.mkdir(parents=True)
    (pre / "config.json").write_text(json.dumps({"pretrain": {"tokenizer": dataclasses.asdict(tok_cfg)}}))
    torch.save(model.state_dict(), pre / "final.pt")
    return model


def test_load_tokenizer_keeps_the_cpu_layout_and_detects_channels_last(tmp_path):
    from vpe_lib.stages.pretrain_stage import load_tokenizer

    trained = _fake_pretrain_run(tmp_path, channels_last=True)
    assert saved_in_channels_last(torch.load(tmp_path / "pretrain" / "final.pt", weights_only=True))
    assert not saved_in_channels_last(VQVAE3D(cfg=TokenizerConfig.smoke()).state_dict())
    loaded = load_tokenizer(tmp_path, device="cpu")
    assert not loaded.channels_last  # the CPU numbers the stages always gave (channels_last rounds differently)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.slow
def test_stages_give_the_same_numbers_with_device_cpu_as_by_default(tmp_path):
    """The pretrain and latents stages with run.device=cpu set explicitly against the default ('auto',
    which is the CPU here): the same metrics and the same weights."""
    if CUDA:
        pytest.skip("'auto' is the GPU on this machine")
    from vpe_lib.stages.common import start_stage
    from vpe_lib.stages.data_stage import run_data_stage
    from vpe_lib.stages.latents_stage import run_latents_stage
    from vpe_lib.stages.pretrain_stage import run_pretrain_stage

    over = {"pretrain.compare_quantizers": [], "pretrain.compare_steps": 0, "pretrain.train.steps": 3,
            "analysis.probe_train_videos": 2, "analysis.n_boot": 50}
    default, explicit = tmp_path / "default", tmp_path / "cpu"
    cfg, out = start_stage("smoke", default, "data", over)
    run_data_stage(cfg, out, progress=False)
    shutil.copytree(default / "data", explicit / "data")
    results = {}
    for run_dir, extra in ((default, {}), (explicit, {"run.device": "cpu"})):
        cfg, out = start_stage("smoke", run_dir, "pretrain", {**over, **extra})
        m = run_pretrain_stage(cfg, run_dir, out, progress=False)
        cfg, out = start_stage("smoke", run_dir, "latents", {**over, **extra})
        m.update(run_latents_stage(cfg, run_dir, out))
        results[run_dir] = {k: v for k, v in m.items() if not k.endswith(("_per_s", "wall_s"))}
    assert results[default] == results[explicit]
    a, b = (torch.load(d / "pretrain" / "final.pt", weights_only=True) for d in (default, explicit))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- on a GPU (skipped without CUDA)


@needs_cuda
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_tiny_train_on_cuda(tmp_path, amp):
    device = resolve_device("cuda")
    enable_tf32(device)
    c = cfg(amp=amp, ckpt_every=50, steps=150, log_every=10)  # on CPU: window loss 13 -> 2e-4 in every precision
    res = train(linear_model().to(device), mse_step, regression_batches, c, tmp_path / "full")
    assert module_device(res.model).type == "cuda"
    losses = [r["loss"] for r in res.history if r.get("loss") is not None]
    assert losses[-1] < 0.01 * losses[0]
    assert (load_checkpoint(tmp_path / "full" / "checkpoint.pt")["scaler"] is not None) == (amp == "fp16")
    train(linear_model().to(device), mse_step, regression_batches, c, tmp_path / "split", max_steps_this_run=5)
    resumed = train(linear_model(seed=3).to(device), mse_step, regression_batches, c, tmp_path / "split")
    assert resumed.step == 150 and all(torch.isfinite(p).all() for p in resumed.model.parameters())


@needs_cuda
def test_stage_helpers_on_cuda(tmp_path):
    """Models on the GPU, inputs and outputs on the CPU: the tokenizer evaluation, the predictor's
    likelihood and sampling, and load_tokenizer's channels_last on CUDA."""
    import numpy as np

    from vpe_lib.config import get_config as config
    from vpe_lib.models.transformer import TransformerConfig, build_predictor
    from vpe_lib.stages.frame_prediction import sample_futures
    from vpe_lib.stages.predictor_training import future_bits
    from vpe_lib.stages.pretrain_stage import evaluate_tokenizer, load_tokenizer

    _fake_pretrain_run(tmp_path, channels_last=True)
    tok = load_tokenizer(tmp_path, device="cuda")
    assert tok.channels_last and module_device(tok).type == "cuda"
    m = evaluate_tokenizer(tok, torch.rand(2, 3, 4, 16, 16) * 2 - 1)
    assert np.isfinite(m["psnr_db"])
    tcfg = TransformerConfig(codebook_size=8, grid=(2, 2, 2), dim=16, depth=1, heads=2)
    tokens = {"codes": np.random.default_rng(0).integers(0, 8, (5, 2, 2, 2)),
              "cond": np.random.default_rng(1).integers(0, 8, (5, 1, 2, 2))}
    p = config("smoke").predict
    for kind in ("masked", "ar"):
        torch.manual_seed(0)
        cpu_model = build_predictor(kind, tcfg)
        gpu_model = build_predictor(kind, tcfg).cuda()
        gpu_model.load_state_dict(cpu_model.state_dict())
        assert np.allclose(future_bits(gpu_model, tokens), future_bits(cpu_model, tokens), atol=2e-2)  # TF32
        futures = sample_futures(gpu_model, torch.from_numpy(tokens["cond"]), p, seed=0)
        assert futures.device.type == "cpu" and futures.shape == (5, 2, 2, 2)


@needs_cuda
@pytest.mark.slow
def test_smoke_pipeline_on_cuda(tmp_path):
    """The whole smoke report with run.device=cuda: every notebook runs on the GPU and the numbers
    come out finite (on a machine without CUDA this skips; the CPU run is test_pipeline's)."""
    import json
    import math

    from vpe_lib.report.build import build_report

    out = tmp_path / "report"
    summary = build_report("smoke", tmp_path / "run", out, overrides={"run.device": "cuda"}, timeout=900)
    assert summary["status"] == "ok" and summary["provenance"]["hardware"]["gpu"]
    m = json.loads((out / "summary.json").read_text())["metrics"]
    for key in ("tokenizer/psnr_db", "predict/masked/nll_bits_per_token", "predict/ar/nll_bits_per_token",
                "seg/fg_iou/unet", "seg/fg_iou/tokenizer/conv", "latents/speed_r2/tokenizer"):
        assert isinstance(m[key], (int, float)) and math.isfinite(m[key]), key
    config = json.loads((tmp_path / "run" / "heads" / "config.json").read_text())
    assert config["run"]["device"] == "cuda"
