"""Config profiles, overrides and their errors."""

import json

import pytest

from vpe_lib.config import PROFILES, ConfigError, config_from_dict, config_to_dict, get_config, load_config, save_config
from vpe_lib.cli import main


@pytest.mark.parametrize("profile", list(PROFILES))
def test_profiles_build_and_round_trip(profile, tmp_path):
    cfg = get_config(profile)
    assert cfg.profile == profile
    path = save_config(cfg, tmp_path / "config.json")
    assert load_config(path) == cfg
    assert config_from_dict(json.loads(path.read_text())) == cfg


def test_profile_clip_fits_video():
    for profile in PROFILES:
        cfg = get_config(profile)
        assert cfg.pretrain.tokenizer.clip_frames <= cfg.data.world.n_frames


def test_overrides_apply_and_coerce():
    cfg = get_config("smoke", {"seg.train.steps": 7, "seg.seeds": [3, 4], "pretrain.train.lr": 1})
    assert cfg.seg.train.steps == 7
    assert cfg.seg.seeds == (3, 4)
    assert cfg.pretrain.train.lr == 1.0 and isinstance(cfg.pretrain.train.lr, float)


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ConfigError, match="smoke, cpu, study, gpu"):
        get_config("laptop")


def test_unknown_key_names_it_and_lists_valid_fields():
    with pytest.raises(ConfigError, match=r"'seg\.trian\.steps'.*valid: .*train"):
        get_config("smoke", {"seg.trian.steps": 3})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="seg.train.steps"):
        get_config("smoke", {"seg.train.steps": "many"})


def test_unknown_key_in_saved_config(tmp_path):
    data = config_to_dict(get_config("smoke"))
    data["data"]["n_videos"] = 3
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="n_videos"):
        load_config(path)


def test_cli_config_and_error(capsys):
    assert main(["config", "--profile", "smoke", "--set", "seg.train.steps=5"]) == 0
    assert json.loads(capsys.readouterr().out)["seg"]["train"]["steps"] == 5
    assert main(["config", "--profile", "nope"]) == 2
    assert "valid profiles" in capsys.readouterr().err


def test_interdependent_overrides_are_checked_together():
    cfg = get_config("smoke", {"pretrain.tokenizer.quantizer": "fsq", "pretrain.tokenizer.codebook_size": 1000,
                               "pretrain.tokenizer.fsq_levels": [8, 5, 5, 5]})
    assert cfg.pretrain.tokenizer.quantizer == "fsq" and cfg.pretrain.tokenizer.fsq_levels == (8, 5, 5, 5)
    with pytest.raises(ConfigError, match="pretrain.tokenizer.*codebook_size"):
        get_config("smoke", {"pretrain.tokenizer.quantizer": "fsq"})


def test_section_override_with_a_dict():
    cfg = get_config("smoke", {"data.world": {"height": 48, "width": 48}})
    assert (cfg.data.world.height, cfg.data.world.width, cfg.data.world.n_frames) == (48, 48, 8)
    with pytest.raises(ConfigError, match="hieght"):
        get_config("smoke", {"data.world": {"hieght": 48}})


def test_environment_yml_follows_pyproject():
    """Conda users get the same pins and Python bounds as pip users (the file says: keep them in step)."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = (root / "environment.yml").read_text()
    listed = set(re.findall(r"^\s+- ([A-Za-z0-9_.-]+==[^\s#]+)", env, flags=re.M))
    assert listed == pins
    python = re.search(r"^\s+- python([^\s#]+)", env, flags=re.M).group(1)
    assert python == project["requires-python"], (python, project["requires-python"])
