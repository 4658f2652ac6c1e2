"""The generic training loop: learning, exact resume, atomic checkpoints, non-finite losses,
metrics files, gradient accumulation."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from torch import nn

from vpe_lib.models import TokenizerConfig, VQVAE3D
from vpe_lib.models.discriminator import DiscriminatorConfig
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig, TokenizerTrainer
from vpe_lib.train import NonFiniteLossError, TrainConfig, load_checkpoint, train
from vpe_lib.train import checkpoint as ckpt_mod
from vpe_lib.train.device import cxx_compiler
from vpe_lib.train.optim import lr_lambda

W_TRUE = torch.tensor([[1.5], [-2.0], [0.5], [3.0]])


def regression_batches(batch_size: int = 8, nan_at: set[int] = frozenset()):
    """batches(i): a pure function of i (its own generator), optionally NaN at given indices."""

    def batches(i: int):
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(batch_size, 4, generator=g)
        y = x @ W_TRUE + 0.01 * torch.randn(batch_size, 1, generator=g)
        if i in nan_at:
            x = x * float("nan")
        return x, y

    return batches


def mse_step(model, batch):
    x, y = batch
    err = model(x) - y
    return err.square().mean(), {"mae": err.abs().mean().item()}


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 1)


class DropoutMLP(nn.Module):
    """Uses the global RNG in every step (dropout), so exact resume needs the RNG state."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=6, lr=1e-2, warmup_steps=2, log_every=1, ckpt_every=0, progress=False)
    return TrainConfig(**{**base, **kw})


def test_loss_decreases(tmp_path):
    res = train(linear_model(), mse_step, regression_batches(), cfg(steps=150, lr=5e-2, log_every=10), tmp_path)
    losses = [r["loss"] for r in res.history if "loss" in r]
    assert res.step == 150
    assert losses[-1] < 0.05 * losses[0]
    assert (tmp_path / "final.pt").exists() and res.final_path == tmp_path / "final.pt"


def test_lr_schedule():
    c = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    f = lr_lambda(c)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(109) == pytest.approx(0.1, abs=1e-3)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["mlp-dropout-ema", "tokenizer", "tokenizer-gan"])
def test_exact_resume(tmp_path, kind):
    if kind == "mlp-dropout-ema":
        make, batches, step_fn = DropoutMLP, regression_batches(), mse_step
        c = cfg(ema_decay=0.9, ckpt_every=2)
    elif kind == "tokenizer-gan":
        # the discriminator starts at update 2 and the run is cut at 3: its counter, LeCam EMAs
        # and weights must all come back from the checkpoint
        loss_cfg = TokenizerLossConfig(adversarial=True, adversarial_start_step=2, ssim_weight=0.5,
                                       discriminator=DiscriminatorConfig(base_channels=4, channel_mults=(1, 2)))

        def make():
            return TokenizerTrainer(VQVAE3D(cfg=TokenizerConfig.smoke(quantizer="fsq", codebook_size=27,
                                                                      fsq_levels=(3, 3, 3))), loss_cfg)

        def batches(i):
            g = torch.Generator().manual_seed(i)
            return torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1

        def step_fn(trainer, video):
            return trainer(video)

        c = cfg(ckpt_every=2, ema_decay=0.9)
    else:
        tok_cfg = TokenizerConfig.smoke()

        def make():
            return VQVAE3D(cfg=tok_cfg)

        def batches(i):
            g = torch.Generator().manual_seed(i)
            return torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1

        def step_fn(model, video):
            out = model(video)
            return out.loss, {"recon": out.recon_loss.item()}

        c = cfg(ckpt_every=2)

    torch.manual_seed(0)
    full = train(make(), step_fn, batches, c, tmp_path / "full")

    torch.manual_seed(0)
    part = train(make(), step_fn, batches, c, tmp_path / "split", max_steps_this_run=3)
    assert part.step == 3 and part.final_path is None
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 3
    torch.manual_seed(123)  # a different init and RNG state: all must come from the checkpoint
    resumed = train(make(), step_fn, batches, c, tmp_path / "split")

    assert resumed.step == full.step == 6
    assert _states_equal(full.model.state_dict(), resumed.model.state_dict())
    if c.ema_decay:
        assert _states_equal(full.ema_model.state_dict(), resumed.ema_model.state_dict())
    final_full = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    final_split = torch.load(tmp_path / "split" / "final.pt", weights_only=True)
    assert _states_equal(final_full, final_split)
    # the metrics file holds each step once, with the same losses
    losses = lambda h: [(r["step"], r["loss"]) for r in h if "loss" in r]  # noqa: E731
    assert losses(resumed.history) == losses(full.history)


def test_resume_logs_and_truncates_metrics(tmp_path, caplog):
    b = regression_batches()
    first = train(linear_model(), mse_step, b, cfg(ckpt_every=2), tmp_path, max_steps_this_run=3)
    assert first.trained_steps == 3
    # pretend the process died after logging step 4 but before checkpointing it
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    with caplog.at_level(logging.INFO, logger="vpe_lib.train"):
        res = train(linear_model(), mse_step, b, cfg(ckpt_every=2), tmp_path)
    assert "resuming from step 3" in caplog.text
    steps = [r["step"] for r in res.history]
    assert steps == [1, 2, 3, 4, 5, 6] and all(r["loss"] != 123.0 for r in res.history)
    assert res.trained_steps == 3  # only the updates this call ran (4..6), not the resumed ones
    # a finished run resumes to "done" immediately, training nothing
    again = train(linear_model(), mse_step, b, cfg(ckpt_every=2), tmp_path)
    assert again.step == 6 and _states_equal(again.model.state_dict(), res.model.state_dict())
    assert again.trained_steps == 0 and again.items_per_s == 0


def test_a_checkpoint_of_another_run_is_set_aside_not_resumed(tmp_path):
    """The #11 stale-resume bug: a finished 6-step run must not be "resumed" into a 9-step run
    (another schedule), nor into a run of another model or data; the old files are kept."""
    b = regression_batches()
    first = train(linear_model(), mse_step, b, cfg(), tmp_path, identity={"model": "a"})
    fresh = train(linear_model(), mse_step, b, cfg(steps=9), tmp_path / "fresh", identity={"model": "a"})
    with pytest.warns(UserWarning, match="starting fresh"):
        longer = train(linear_model(), mse_step, b, cfg(steps=9), tmp_path, identity={"model": "a"})
    assert [r["step"] for r in longer.history if "loss" in r][0] == 1  # trained from step 1, not from 6
    assert _states_equal(longer.model.state_dict(), fresh.model.state_dict())
    stale = [p for p in tmp_path.iterdir() if p.name.startswith("stale-")]
    assert len(stale) == 1 and (stale[0] / "final.pt").exists() and (stale[0] / "metrics.jsonl").exists()
    assert _states_equal(torch.load(stale[0] / "final.pt"), first.model.state_dict())
    # the same recipe, another model identity: fresh again; logging fields alone change nothing
    with pytest.warns(UserWarning, match="starting fresh"):
        train(linear_model(), mse_step, b, cfg(steps=9), tmp_path, identity={"model": "b"})
    again = train(linear_model(), mse_step, b, cfg(steps=9, log_every=3), tmp_path, identity={"model": "b"})
    assert again.step == 9 and len([p for p in tmp_path.iterdir() if p.name.startswith("stale-")]) == 2


def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt_mod.atomic_save({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_mod.atomic_save({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_training_leaves_no_temp_files_and_survives_failed_save(tmp_path, monkeypatch):
    b = regression_batches()
    train(linear_model(), mse_step, b, cfg(ckpt_every=2), tmp_path, max_steps_this_run=2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    good = load_checkpoint(tmp_path / "checkpoint.pt")

    real_save = ckpt_mod.torch.save

    def broken_save(obj, f, *a, **k):
        real_save({"garbage": True}, f)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        train(linear_model(), mse_step, b, cfg(ckpt_every=2), tmp_path)
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and _states_equal(state["model"], good["model"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_nonfinite_stop_keeps_checkpoint(tmp_path):
    b = regression_batches(nan_at={4})  # update 5 sees NaN inputs
    with pytest.raises(NonFiniteLossError, match=r"step 5.*loss=nan") as info:
        train(linear_model(), mse_step, b, cfg(ckpt_every=2), tmp_path)
    assert info.value.step == 5 and math.isnan(info.value.metrics["loss"])
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "final.pt").exists()


def test_nonfinite_skip(tmp_path):
    b = regression_batches(nan_at={2})
    res = train(linear_model(), mse_step, b, cfg(nonfinite="skip"), tmp_path)
    assert res.step == 6 and res.skipped == 1
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert res.history[-1]["skipped"] == 1 and res.history[1]["skipped"] == 0


def test_nonfinite_skip_restores_codebook_buffers(tmp_path):
    torch.manual_seed(0)
    model = VQVAE3D(cfg=TokenizerConfig.smoke())

    def batches(i):
        v = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(i)) * 2 - 1
        return v * float("nan") if i == 1 else v

    res = train(model, lambda m, v: (m(v).loss, {}), batches, cfg(steps=3, nonfinite="skip"), tmp_path)
    assert res.skipped == 1
    assert all(torch.isfinite(buf).all() for buf in model.buffers() if buf.is_floating_point())


def test_metrics_jsonl(tmp_path):
    calls = []

    def eval_fn(model):
        calls.append(model.training)
        return {"mse": 0.5, "n": torch.tensor(3)}

    train(linear_model(), mse_step, regression_batches(), cfg(log_every=2, eval_every=3), tmp_path, eval_fn=eval_fn)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in logs] == [2, 4, 6]
    expected = {"step", "lr", "loss", "mae", "grad_norm", "items_per_s", "elapsed_s", "skipped"}
    assert all(set(r) == expected for r in logs)
    assert all(isinstance(r[k], (int, float)) for r in logs for k in expected)
    assert [(r["step"], r["eval/mse"], r["eval/n"]) for r in evals] == [(3, 0.5, 3.0), (6, 0.5, 3.0)]
    assert calls == [False, False]  # eval runs in eval mode
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 6


def test_grad_accumulation_matches_big_batch(tmp_path):
    data = regression_batches(batch_size=32)(0)

    def small(i):  # micro-batches of 4
        return data[0][4 * i: 4 * i + 4], data[1][4 * i: 4 * i + 4]

    def big(i):  # batches of 8
        return data[0][8 * i: 8 * i + 8], data[1][8 * i: 8 * i + 8]

    c = dict(steps=4, grad_clip=0.0)
    accum = train(linear_model(), mse_step, small, cfg(grad_accum=2, batch_size=4, **c), tmp_path / "a")
    single = train(linear_model(), mse_step, big, cfg(batch_size=8, **c), tmp_path / "b")
    for p, q in zip(accum.model.parameters(), single.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert accum.history[-1]["loss"] == pytest.approx(single.history[-1]["loss"], rel=1e-5)


def test_bad_train_config():
    with pytest.raises(ValueError, match="nonfinite"):
        TrainConfig(nonfinite="ignore")
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")


def gelu_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Linear(32, 1))


@pytest.mark.skipif(cxx_compiler() is None, reason="torch.compile's inductor needs a C++ compiler on the CPU")
def test_compiled_training_matches_eager(tmp_path):
    """train.compile: the same updates as eager up to float order (no dropout here: inductor draws
    its own random numbers), the raw weights in final.pt, and compile is not part of the recipe: a
    compiled call on an eager run's folder finds it finished instead of setting it aside."""
    b = regression_batches()
    eager = train(gelu_mlp(), mse_step, b, cfg(steps=8), tmp_path / "eager")
    compiled = train(gelu_mlp(), mse_step, b, cfg(steps=8, compile=True), tmp_path / "compiled")
    le = [r["loss"] for r in eager.history if "loss" in r]
    lc = [r["loss"] for r in compiled.history if "loss" in r]
    assert len(le) == len(lc) == 8
    assert max(abs(a - c) for a, c in zip(le, lc)) < 1e-4 * max(le)
    saved = torch.load(tmp_path / "compiled" / "final.pt")
    assert saved.keys() == eager.model.state_dict().keys()  # no _orig_mod prefix: loads into an eager model
    again = train(gelu_mlp(), mse_step, b, cfg(steps=8, compile=True), tmp_path / "eager")
    assert again.step == 8 and not [p for p in (tmp_path / "eager").iterdir() if p.name.startswith("stale-")]


def test_compile_without_a_cxx_compiler_fails_clearly(tmp_path, monkeypatch):
    import shutil
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="train.compile=true on the CPU needs a C\\+\\+ compiler"):
        train(linear_model(), mse_step, regression_batches(), cfg(compile=True), tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_cosmetic_fields_do_not_change_the_recipe():
    from vpe_lib.train.loop import recipe, run_identity
    base = cfg()
    for change in ({"compile": True}, {"progress": True}, {"log_every": 7}, {"eval_every": 3}):
        other = TrainConfig(**{**base.__dict__, **change})
        assert recipe(other) == recipe(base) and run_identity(other) == run_identity(base)
    assert run_identity(TrainConfig(**{**base.__dict__, "lr": 2e-2})) != run_identity(base)
