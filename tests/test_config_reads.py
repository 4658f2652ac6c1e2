"""Recording the config fields a stage reads (vpe_lib.config_reads): leaves by dotted name, sections
only through their leaves, whole objects when they leave by pickling or copying, and nothing from
another process or another config."""

import copy
import dataclasses
import json
import pickle

from vpe_lib.config import get_config
from vpe_lib.config_reads import read_reads, record_reads, stop_recording, value_at


def test_leaves_are_recorded_by_dotted_name_and_reaching_a_section_reads_nothing(tmp_path):
    cfg = get_config("smoke")
    rec = record_reads(cfg, tmp_path / "reads.json")
    try:
        assert read_reads(tmp_path / "reads.json") == []  # started, nothing read yet
        seg = cfg.seg
        assert rec.reads == set()
        _ = seg.seeds, cfg.seg.train.lr, cfg.profile
        assert rec.reads == {"seg.seeds", "seg.train.lr", "profile"}
        cfg.seg.steps_at(max(cfg.seg.label_pcts))  # a method's reads count as the caller's
        assert {"seg.label_pcts", "seg.budget_steps"} <= rec.reads
        assert read_reads(tmp_path / "reads.json") == sorted(rec.reads)  # written as they happen
    finally:
        stop_recording()


def test_replace_and_asdict_read_what_they_copy_and_pickling_reads_the_whole_object():
    cfg = get_config("smoke")
    rec = record_reads(cfg)
    try:
        dataclasses.replace(cfg.predict.train, seed=5)
        names = {f.name for f in dataclasses.fields(cfg.predict.train)}
        assert rec.reads == {f"predict.train.{n}" for n in names - {"seed"}}
        dataclasses.asdict(cfg.analysis)
        assert {f"analysis.{f.name}" for f in dataclasses.fields(cfg.analysis)} <= rec.reads
        pickle.dumps(cfg.data.world)  # off to a worker process: all of it counts
        assert "data.world" in rec.reads
        copy.deepcopy(cfg)
        assert "*" in rec.reads
    finally:
        stop_recording()


def test_other_configs_and_a_forked_copy_are_not_recorded(monkeypatch):
    cfg, other = get_config("smoke"), get_config("smoke")
    rec = record_reads(cfg)
    try:
        _ = other.seg.seeds, other.pretrain.train.lr
        assert rec.reads == set()
        monkeypatch.setattr("vpe_lib.config_reads.os.getpid", lambda: rec.pid + 1)  # as in a forked worker
        _ = cfg.seg.seeds
        assert rec.reads == set()
    finally:
        stop_recording()
    _ = cfg.seg.heads  # stopped
    assert rec.reads == set()


def test_value_at_follows_dotted_names_and_marks_a_name_the_config_lacks():
    tree = json.loads(json.dumps(dataclasses.asdict(get_config("smoke")), default=str))
    assert value_at(tree, "seg.train.lr") == tree["seg"]["train"]["lr"]
    assert value_at(tree, "*") is tree
    assert value_at(tree, "seg.no_such_field") == value_at(tree, "nope") == "<not in this config>"
