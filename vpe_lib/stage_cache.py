"""When may `vpe report` skip a stage? When nothing that determines its result has changed.

A stage's key is a digest of:
- the config it reads (its sections of the resolved config, plus the top-level fields);
- the keys of the stages it reads from (so a changed tokenizer re-runs everything after it);
- its notebook and the code version (the source files of vpe_lib but the orchestration).

After a notebook succeeds, `<run_dir>/<stage>/stage_key.json` records the key (and what went into
it, for a reader asking why a stage re-ran). A stage whose recorded key matches, and whose
executed notebook is still there, is skipped; a failed stage has no record, so it runs again.
Inside a stage the expensive runs have keyed caches of their own (tokenizer checkpoints by
identity, predictor runs and head runs by key), so a re-run stage redoes only what changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vpe_lib.atomic import atomic_write_text
from vpe_lib.config import ConfigError, RunConfig
from vpe_lib.stages.common import STAGES

# what each stage reads of the config: sections, or "section.field" for a single field
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "pretrain": ("pretrain",),
    "predict": ("predict", "seg.n_val_videos"),  # its validation videos are the study's
    "latents": ("analysis",),
    "heads": ("seg",),
    "results": (),
}
# the stages whose outputs each stage reads
UPSTREAM: dict[str, tuple[str, ...]] = {
    "data": (),
    "pretrain": ("data",),
    "predict": ("data", "pretrain"),
    "latents": ("data", "pretrain", "predict"),
    "heads": ("data", "pretrain", "predict"),
    "results": ("data", "pretrain", "predict", "latents", "heads"),
}
STAMP = "stage_key.json"
PACKAGE_ROOT = Path(__file__).resolve().parent


def stage_of_notebook(stem: str) -> str:
    """'03_predict' -> 'predict'."""
    for stage, nb in STAGES.items():
        if nb == stem:
            return stage
    raise ValueError(f"notebook {stem!r} belongs to no stage; known: {', '.join(STAGES.values())}")


def resolve_stage_names(names: list[str] | None) -> list[str]:
    """Stage names or notebook stems (`pretrain` or `02_pretrain`) -> stage names, with a clear error."""
    out = []
    for name in names or []:
        if name in STAGES:
            out.append(name)
        elif name in STAGES.values():
            out.append(stage_of_notebook(name))
        else:
            raise ConfigError(f"unknown stage {name!r}; valid: {', '.join(STAGES)} (or the notebook names "
                             f"{', '.join(STAGES.values())})")
    return out


# the orchestration around the stages: what they compute does not depend on these files
NOT_STAGE_CODE = ("cli.py", "progress.py", "report.py", "stage_cache.py")


def code_version(root: Path = PACKAGE_ROOT) -> str:
    """A digest of the package's Python files (but the orchestration, NOT_STAGE_CODE): a change
    in the code re-runs the stages."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if str(p.relative_to(root)) not in NOT_STAGE_CODE):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_inputs(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The part of the resolved config a stage reads (plus the top-level fields, e.g. the profile)."""
    full = asdict(cfg)
    out = {k: v for k, v in full.items() if not isinstance(v, dict)}
    for item in STAGE_INPUTS[stage]:
        section, _, field = item.partition(".")
        out[item] = full[section][field] if field else full[section]
    return out


def stage_keys(cfg: RunConfig, notebooks: dict[str, Path], code: str | None = None) -> dict[str, dict[str, Any]]:
    """For each stage: {"key", "config", "upstream", "notebook", "code"} (the key digests the rest)."""
    code = code or code_version()
    keys: dict[str, dict[str, Any]] = {}
    for stage in STAGES:  # in pipeline order: upstream keys exist when needed
        nb = notebooks.get(stage)
        parts = {
            "config": _digest(stage_inputs(cfg, stage)),
            "upstream": {u: keys[u]["key"] for u in UPSTREAM[stage]},
            "notebook": hashlib.sha256(nb.read_bytes()).hexdigest()[:16] if nb and nb.exists() else None,
            "code": code,
        }
        keys[stage] = {"key": _digest(parts), **parts}
    return keys


def read_stamp(run_dir: Path, stage: str) -> dict[str, Any] | None:
    path = Path(run_dir) / stage / STAMP
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # never computed, or a torn file: run the stage


def write_stamp(run_dir: Path, stage: str, key: dict[str, Any], wall_s: float) -> None:
    path = Path(run_dir) / stage / STAMP
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**key, "wall_s": round(wall_s, 2)}, indent=2, sort_keys=True) + "\n", path)


def clear_stamp(run_dir: Path, stage: str) -> None:
    (Path(run_dir) / stage / STAMP).unlink(missing_ok=True)


def why_stale(stamp: dict[str, Any] | None, key: dict[str, Any]) -> str:
    """In words: why a stage runs (for the terminal)."""
    if stamp is None:
        return "not computed yet"
    changed = [name for name in ("config", "upstream", "notebook", "code") if stamp.get(name) != key[name]]
    if not changed:
        return "unchanged"
    if "upstream" in changed:
        ups = [u for u, k in key["upstream"].items() if stamp.get("upstream", {}).get(u) != k]
        changed[changed.index("upstream")] = "inputs from " + ", ".join(ups)
    return "changed: " + ", ".join(changed)
