"""Run configuration: nested dataclasses, named profiles, strict overrides.

One `RunConfig` describes a whole run (data → pretrain → latents → heads →
results). Profiles are plain functions returning a `RunConfig`; a user changes
anything with dotted overrides (`{"pretrain.train.steps": 100}`). Unknown
profile names and unknown keys fail at once and list the valid ones, because a
typo that silently falls back to a default wastes a GPU-day.

The schema is `vpe_lib.config.schema`, the profiles `vpe_lib.config.profiles`; this module builds
a profile with overrides, and saves and loads it. Every stage writes the resolved config next to its
results (`save_config`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from vpe_lib.config.profiles import DAVIS_SAMPLES, PROFILES
from vpe_lib.config.schema import (AnalysisConfig, ConfigError, DataConfig, PredictConfig, PretrainConfig, RunConfig,
                                   RuntimeConfig, SegConfig)

__all__ = ["AnalysisConfig", "ConfigError", "DAVIS_SAMPLES", "DataConfig", "PROFILES", "PredictConfig",
           "PretrainConfig", "RunConfig", "RuntimeConfig", "SegConfig", "config_from_dict", "config_to_dict",
           "get_config", "load_config", "save_config"]


def get_config(profile: str = "cpu", overrides: dict[str, Any] | None = None) -> RunConfig:
    """The named profile with dotted-key overrides applied, e.g. {"seg.train.steps": 50}."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    # Overrides go into the profile's plain-dict form and the config is built once at
    # the end, so fields that must agree (e.g. quantizer and codebook_size) can be
    # changed together, and every check runs on the final combination.
    data = config_to_dict(PROFILES[profile]())
    for key, value in (overrides or {}).items():
        _set_dotted(data, RunConfig, key.split("."), value, key)
    return _from_dict(RunConfig, data)


def _set_dotted(data: dict[str, Any], cls: type, path: list[str], value: Any, full_key: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    head = path[0]
    if head not in names:
        raise ConfigError(
            f"unknown config key {full_key!r}: {cls.__name__} has no field {head!r}; valid: {', '.join(names)}"
        )
    tp = _field_type(cls, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"config key {full_key!r}: {head!r} is a value, not a section")
        _set_dotted(data[head], tp, path[1:], value, full_key)
    elif dataclasses.is_dataclass(tp) and isinstance(value, dict):
        data[head] = {**data[head], **value}
    else:
        data[head] = value


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """JSON and papermill give lists and ints; the dataclasses want tuples and floats."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"config key {key!r} expects {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], key: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = key or cls.__name__
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; valid: {', '.join(names)}")
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = _from_dict(tp, value, sub)
        else:
            kwargs[name] = _coerce(value, tp, sub)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{key or cls.__name__}: {err}") from err


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _from_dict(RunConfig, data)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    return path


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    return config_from_dict(data)
