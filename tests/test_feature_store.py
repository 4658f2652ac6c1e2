"""Feature maps in float16 on disk: exact round trips, clear errors on damaged stores, and a process
whose memory stays flat when the number of frames grows 4x."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vpe_lib.data.feature_store import FeatureStore, write_feature_store


def _maps(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 5, 4, 4, generator=g)]


def test_rows_come_back_as_written_in_float16(tmp_path):
    maps = _maps(10)
    calls = []

    def compute(a, b):
        calls.append((a, b))
        return [m[a:b] for m in maps]

    store = write_feature_store(tmp_path / "s", 10, compute, chunk=4)
    assert calls == [(0, 4), (4, 8), (8, 10)] and len(store) == 10
    idx = np.array([7, 2, 3, 3, 9])  # any order, repeats allowed
    for got, m in zip(store.rows(idx), maps):
        assert got.dtype == torch.float32 and torch.equal(got, m[idx].half().float())
    chunks = list(store.chunks(3))
    assert [len(c[0]) for c in chunks] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([c[1] for c in chunks]), maps[1].half().float())
    view = store.select([1])
    assert len(view.rows([0])) == 1 and torch.equal(view.rows([0])[0], maps[1][:1].half().float())
    # a standard .npy file: numpy opens it
    assert np.array_equal(np.load(tmp_path / "s" / "level0.npy"), maps[0].half().numpy())
    assert not (tmp_path / "s.tmp").exists()
    # a complete store is reused, not recomputed
    calls.clear()
    write_feature_store(tmp_path / "s", 10, compute, chunk=4)
    assert calls == []
    with pytest.raises(IndexError, match="out of range"):
        store.rows([10])


def test_damaged_or_incomplete_stores_are_refused(tmp_path):
    maps = _maps(6)
    write_feature_store(tmp_path / "s", 6, lambda a, b: [m[a:b] for m in maps], chunk=4)
    path = tmp_path / "s" / "level1.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="level1.npy.*truncated"):
        FeatureStore(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="not a complete feature store"):
        FeatureStore(tmp_path / "nothing")
    with pytest.raises(ValueError, match="the first chunk's were"):
        write_feature_store(tmp_path / "bad", 6, lambda a, b: [torch.zeros(b - a, 3, 8 if a == 0 else 4, 8)], chunk=4)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tmp").exists()  # nothing half-written


_PEAK = """
import resource, sys, numpy as np, torch
from vpe_lib.data.feature_store import write_feature_store
from vpe_lib.stages.head_training import CachedFeatureBatches
n, folder = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
def compute(a, b):  # 16 x 64 x 64 float16 = 131 kB a frame, like a tokenizer's stride-1 map
    return [torch.full((b - a, 16, 64, 64), float(a))]
store = write_feature_store(folder, n, compute, chunk=32)
labels = np.zeros((n, 64, 64), np.uint8)
batches = CachedFeatureBatches(store, labels, np.arange(n), batch_size=16, seed=0)
total = sum(float(batches(step)[0][0].sum()) for step in range(60))
total += sum(float(c[0][:, 0, 0, 0].sum()) for c in store.chunks(64))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_peak_memory_stays_flat_when_the_frames_grow_4x(tmp_path):
    """Features in memory would add 3 x 500 x 131 kB = 197 MB here; on disk the process grows by
    the labels alone (+9 MB). The bound leaves room for allocator noise, not for the features."""
    peaks = {}
    for n in (500, 2000):
        out = subprocess.run([sys.executable, "-c", _PEAK, str(n), str(tmp_path / f"s{n}")], capture_output=True,
                             text=True, check=True)
        peaks[n] = int(out.stdout.split()[-1])
    in_memory_growth = (2000 - 500) * 16 * 64 * 64 * 2
    growth = peaks[2000] - peaks[500]
    assert growth < 40e6 < in_memory_growth / 4, json.dumps(peaks)
