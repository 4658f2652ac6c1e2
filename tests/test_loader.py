"""The DataLoader path (vpe_lib.data.loader): worker processes serve exactly the in-thread batches, in
order, also after a resume; training through it gives the same weights."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from vpe_lib.config import ConfigError, get_config
from vpe_lib.data.loader import LoaderBatches, batch_source
from vpe_lib.data.pushworld import PushWorldConfig
from vpe_lib.data.samplers import ClipBatches
from vpe_lib.data.store import PushWorldStore, build_dataset
from vpe_lib.models import TokenizerConfig, VQVAE3D
from vpe_lib.models.tokenizer_loss import TokenizerLossConfig, TokenizerTrainer
from vpe_lib.stages.pretrain_stage import tokenizer_step
from vpe_lib.train import TrainConfig, train


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> PushWorldStore:
    root = tmp_path_factory.mktemp("pushworld")
    build_dataset(root, PushWorldConfig(height=32, width=32, n_frames=8), n_train=6, n_test=1,
                  videos_per_shard=3, seed=0, workers=1)
    return PushWorldStore(root, "train")


def clip_batches(store: PushWorldStore) -> ClipBatches:
    return ClipBatches(store, clip_frames=4, batch_size=4, seed=3)


def test_workers_serve_the_in_thread_batches_in_order(store):
    batches = clip_batches(store)
    n, k = 8, 5
    expected = [batches(i) for i in range(n)]
    with LoaderBatches(batches, workers=2, prefetch_factor=2, stop=n) as served:
        got = [served(i) for i in range(n)]
        again = [served(i) for i in range(k, n)]  # a resume at step k in the same process: restarted there
        back = served(1)  # any index, any time
    for i in range(n):
        assert torch.equal(got[i], expected[i]), i
    for i, b in zip(range(k, n), again):
        assert torch.equal(b, expected[i]), i
    assert torch.equal(back, expected[1])
    # a resume in a new process: a new loader asked first for batch k
    with LoaderBatches(batches, workers=2, stop=n) as resumed:
        for i in range(k, n):
            assert torch.equal(resumed(i), expected[i]), i


def test_loader_bounds_and_settings(store):
    batches = clip_batches(store)
    with batch_source(batches, workers=0) as same:
        assert same is batches  # the in-thread path, untouched: what every profile uses by default
    with batch_source(batches, workers=1, device="cpu", stop=2) as served:
        assert isinstance(served, LoaderBatches) and served._loader.pin_memory is False
        with pytest.raises(IndexError, match="outside the 2 batches"):
            served(2)
        assert torch.equal(served(0), batches(0))  # no workers without pinned memory on a CPU run
    with pytest.raises(RuntimeError, match="closed"):
        served(0)
    with pytest.raises(ValueError, match="loader_workers must be an int >= 0"):
        LoaderBatches(batches, workers=-1)
    with pytest.raises(ConfigError, match=r"run.loader_workers must be an int >= 0, got -2"):
        get_config("smoke", {"run.loader_workers": -2})
    with pytest.raises(ConfigError, match=r"run.loader_prefetch must be an int >= 1, got 0"):
        get_config("smoke", {"run.loader_prefetch": 0})


def test_store_pickles_as_its_folder(store):
    """A worker started by spawn / forkserver gets the store's path, not a copy of its memmaps."""
    blob = pickle.dumps(store)
    assert len(blob) < 2000
    copy = pickle.loads(blob)
    assert len(copy) == len(store) and np.array_equal(copy.get("frames", 5), store.get("frames", 5))


def _tokenizer_run(batches, out, steps: int, max_steps: int | None = None):
    torch.manual_seed(0)
    trainer = TokenizerTrainer(VQVAE3D(cfg=TokenizerConfig.smoke(quantizer="fsq", codebook_size=27,
                                                                 fsq_levels=(3, 3, 3))), TokenizerLossConfig())
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, ckpt_every=0, progress=False)
    return train(trainer, tokenizer_step, batches, cfg, out, max_steps_this_run=max_steps)


def test_training_through_workers_is_training_in_thread(store, tmp_path):
    """The tokenizer's training step on the same clips: bit-identical weights and losses, also when
    the loader run is interrupted and resumed by a new loader."""
    n = 4
    reference = _tokenizer_run(clip_batches(store), tmp_path / "thread", n)
    with LoaderBatches(clip_batches(store), workers=2, stop=n) as served:
        _tokenizer_run(served, tmp_path / "loader", n, max_steps=2)
    with LoaderBatches(clip_batches(store), workers=2, stop=n) as served:
        resumed = _tokenizer_run(served, tmp_path / "loader", n)
    assert resumed.step == n
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda r: [(h["step"], h["loss"]) for h in r.history if "loss" in h]  # noqa: E731
    assert losses(resumed) == losses(reference)
