"""The saved index of BAIR TFRecords: a second process (or construction) reads no record to index
them, skips what the scan skipped, and scans again when the file or the settings change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpe_lib.data import bair
from vpe_lib.data.bair import BairTFRecordSource, encode_example, write_tfrecord
from vpe_lib.data.clips import SkippedVideosWarning
from vpe_lib.data.open_clips import open_clip_source
from vpe_lib.data.tfrecord_index import cached_path, sidecar_path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Indexes of read-only folders go to a cache: this test's own, never ~/.cache."""
    monkeypatch.setenv("VPE_CACHE_DIR", str(tmp_path / "cache"))


def example(frames: np.ndarray) -> bytes:
    return encode_example({f"{t}/image_aux1/encoded": f.tobytes() for t, f in enumerate(frames)})


def clips(n: int, t: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8) for _ in range(n)]


def no_scan(monkeypatch) -> None:
    """Reading records to index them fails the test from here on."""
    def refuse(*a, **k):
        raise AssertionError("the records were read again: the saved index was not used")
    monkeypatch.setattr(bair, "records", refuse)  # the scan reads through vpe_lib.data.tfrecord.records


def dataset(folder: Path) -> tuple[Path, list[np.ndarray]]:
    """Two good files, one with a corrupt record, one not a TFRecord at all."""
    vids = clips(5)
    folder.mkdir(parents=True, exist_ok=True)
    write_tfrecord(folder / "a.tfrecords", [example(v) for v in vids[:2]])
    good = write_tfrecord(folder / "b.tfrecords", [example(v) for v in vids[2:]])
    blob = bytearray(good.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # inside record 1's data: a CRC mismatch
    (folder / "c.tfrecords").write_bytes(bytes(blob))
    (folder / "d.tfrecords").write_bytes(b"not a tfrecord")
    return folder, vids


def test_second_construction_reads_no_record(tmp_path, monkeypatch):
    folder, vids = dataset(tmp_path / "bair")
    with pytest.warns(SkippedVideosWarning, match="skipped 2 of"):
        first = BairTFRecordSource(folder)
    assert len(first.scanned) == 4 and all(sidecar_path(f).exists() for f in first.scanned)
    no_scan(monkeypatch)
    with pytest.warns(SkippedVideosWarning, match="skipped 2 of"):
        second = open_clip_source(folder)  # the index files are not mistaken for TFRecords
    assert second.scanned == [] and len(second) == len(first) == 7
    assert second.skipped == first.skipped and second._where == first._where
    for i in range(len(second)):
        np.testing.assert_array_equal(second.read_clip(i, 0, 6), first.read_clip(i, 0, 6))
    np.testing.assert_array_equal(second.read_clip(3, 1, 4), vids[3][1:5])
    # what a scan raises, the index raises too (replayed in the same order)
    with pytest.raises(bair.DataError, match=r"c.tfrecords#1: data CRC mismatch"):
        BairTFRecordSource(folder, on_error="raise")
    with pytest.warns(SkippedVideosWarning), pytest.raises(bair.DataError, match="no usable video"):
        BairTFRecordSource(folder, min_frames=7)  # min_frames applies to a saved index as to a scan
    assert len(list(folder.glob(".*.tmp"))) == 0


def test_changed_file_or_settings_are_scanned_again(tmp_path):
    vids = clips(3)
    path = write_tfrecord(tmp_path / "x.tfrecords", [example(v) for v in vids[:2]])
    assert BairTFRecordSource(path).scanned == [path]
    assert BairTFRecordSource(path).scanned == []
    assert BairTFRecordSource(path, verify_crc=False).scanned == [path]  # another reading: its own scan
    write_tfrecord(path, [example(v) for v in vids])  # replaced by a longer file
    src = BairTFRecordSource(path)
    assert src.scanned == [path] and len(src) == 3
    np.testing.assert_array_equal(src.read_clip(2, 0, 6), vids[2])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, touched
    assert BairTFRecordSource(path).scanned == [path]
    sidecar_path(path).write_text("{torn")  # an unreadable index is scanned over, not trusted
    assert BairTFRecordSource(path).scanned == [path]
    assert json.loads(sidecar_path(path).read_text())["records"][2]["frames"] == 6


def test_read_only_folder_keeps_its_index_in_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_tfrecord(folder / "x.tfrecords", [example(v) for v in clips(2)])
    folder.chmod(0o555)
    try:
        assert BairTFRecordSource(path).scanned == [path]
        assert not sidecar_path(path).exists() and cached_path(path).exists()
        assert str(cached_path(path)).startswith(str(tmp_path / "cache"))
        no_scan(monkeypatch)
        assert len(BairTFRecordSource(path)) == 2
    finally:
        folder.chmod(0o755)


def test_another_process_reuses_the_index(tmp_path):
    """The point of it all: a second process (a torchrun rank, the next notebook) does not rescan."""
    folder, _ = dataset(tmp_path / "bair")
    code = ("import sys, warnings; warnings.simplefilter('ignore')\n"
            "from vpe_lib.data.bair import BairTFRecordSource\n"
            "s = BairTFRecordSource(sys.argv[1]); print(len(s), len(s.scanned))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert [r.stdout.split() for r in runs] == [["7", "4"], ["7", "0"]]


def test_real_bair_frames_as_tfrecords(tmp_path, monkeypatch):
    """The real BAIR sample sequences (../shared/data, read-only: skipped when absent), written as
    BAIR TFRecords: the index of a real file reads back the real frames."""
    root = SHARED / "bair_samples" / "frames"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    seqs = sorted(p for p in root.iterdir() if p.is_dir())
    vids = [np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(s.glob("*.png"))]) for s in seqs]
    path = write_tfrecord(tmp_path / "bair_samples.tfrecords", [example(v) for v in vids])
    first = BairTFRecordSource(path)
    assert first.scanned == [path] and len(first) == len(seqs)
    no_scan(monkeypatch)
    second = BairTFRecordSource(path)
    assert [second.num_frames(i) for i in range(len(second))] == [len(v) for v in vids]
    for i, v in enumerate(vids):
        np.testing.assert_array_equal(second.read_clip(i, 0, len(v)), v)
