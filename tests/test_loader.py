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


def test_rank_slices_read_only_their_clips(store, monkeypatch):
    """`shard(i, rank, world)` == shard_batch(batches(i)), reading 1/world of the clips; under
    torchrun the loader's workers serve that slice and say so (`rank_local`)."""
    from vpe_lib.train.distributed import shard_batch
    from vpe_lib.train.batches import read_batch

    batches = clip_batches(store)
    reads = []
    get = store.get
    monkeypatch.setattr(store, "get", lambda *a, **k: reads.append(a[1]) or get(*a, **k))
    for i in range(3):
        whole = batches(i)
        for rank in range(2):
            reads.clear()
            assert torch.equal(batches.shard(i, rank, 2), shard_batch(whole, rank, 2)), (i, rank)
            assert len(reads) == 2  # 2 of the batch's 4 clips
    with pytest.raises(ValueError, match="does not split evenly over 3 ranks"):
        batches.shard(0, 0, 3)
    # the training loop's reader: the slice on several ranks, the whole batch on one
    part, local = read_batch(batches, 1, 1, 2)
    assert local and torch.equal(part, shard_batch(batches(1), 1, 2))
    whole, local = read_batch(batches, 1, 0, 1)
    assert not local and torch.equal(whole, batches(1))
    monkeypatch.undo()
    with LoaderBatches(batches, workers=1, stop=3, rank=1, world=2) as served:
        assert served.rank_local == (1, 2)
        assert torch.equal(served(2), shard_batch(batches(2), 1, 2))
        with pytest.raises(RuntimeError, match="serves rank 1 of 2, but this is rank 0 of 2"):
            read_batch(served, 0, 0, 2)
    with LoaderBatches(lambda i: batches(i), workers=1, stop=1, rank=1, world=2) as plain:
        assert plain.rank_local is None  # no shard method: the whole batch, cut by the loop


def test_real_clip_batches_read_rank_slices(tmp_path):
    from vpe_lib.data.clip_batches import RealClipBatches
    from vpe_lib.data.clips import FrameFolderSource
    from vpe_lib.train.distributed import shard_batch
    from PIL import Image

    rng = np.random.default_rng(0)
    for v in range(3):
        d = tmp_path / f"video{v}"
        d.mkdir()
        for t in range(6):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{t:03d}.png")
    batches = RealClipBatches(FrameFolderSource(tmp_path), clip_frames=3, batch_size=4, seed=1)
    for rank in range(2):
        assert torch.equal(batches.shard(5, rank, 2), shard_batch(batches(5), rank, 2))
