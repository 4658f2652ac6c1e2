"""When may `vpe report` skip a stage? When nothing that determines its result has changed.

A stage's key is a digest of:
- the config it reads: the sections it declares (STAGE_INPUTS, a floor), the top-level fields, and
  every field it was seen reading the last time it ran (vpe_lib.config_reads records them as the
  notebook runs, so a field a stage starts reading re-runs it when it changes, with no table to update);
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
from vpe_lib.config_reads import read_reads, value_at
from vpe_lib.stages.common import STAGES

# what each stage declares it reads of the config: sections, or "section.field" for a single field. A floor:
# the fields it is seen reading (READS_FILE, recorded by start_stage) are added to its key
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
READS_FILE = "config_reads.json"  # the fields a stage read, written as its notebook runs
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # vpe_lib/


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


# the orchestration around the stages (the command line, progress lines, the report/ package: running the
# notebooks, this cache, the index, the browser checks) and the experiments beside them: what a stage
# computes does not depend on these files, so editing them re-runs nothing
NOT_STAGE_CODE = ("cli.py", "progress.py", "report/", "experiments/")


def code_version(root: Path = PACKAGE_ROOT) -> str:
    """A digest of the package's Python files (but the orchestration, NOT_STAGE_CODE): a change
    in the code re-runs the stages."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py")
                       if not any(p.relative_to(root).as_posix().startswith(name) for name in NOT_STAGE_CODE)):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_inputs(cfg: RunConfig | dict[str, Any], stage: str, reads: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The part of the resolved config (a RunConfig or its dict form) a stage reads: the top-level fields,
    its declared sections, and the fields it was seen reading (`reads`, dotted names)."""
    full = cfg if isinstance(cfg, dict) else asdict(cfg)
    out = {k: v for k, v in full.items() if not isinstance(v, dict)}
    for item in (*STAGE_INPUTS[stage], *reads):
        out[item] = value_at(full, item)
    return out


def _covered(path: str, declared: tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d + ".") for d in declared)


def stage_key(cfg: RunConfig | dict[str, Any], stage: str, notebook: Path | None, upstream: dict[str, str], code: str,
              reads: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """One stage's {"key", "config", "reads", "upstream", "notebook", "code"} (the key digests the rest;
    "reads" lists the recorded fields outside the declared sections)."""
    extra = sorted(r for r in set(reads) if not _covered(r, STAGE_INPUTS[stage]))
    inputs = stage_inputs(cfg, stage, extra)
    parts = {
        "config": _digest(inputs),
        "inputs": {name: _digest(value) for name, value in inputs.items()},  # to name what changed
        "reads": extra,
        "upstream": upstream,
        "notebook": hashlib.sha256(notebook.read_bytes()).hexdigest()[:16] if notebook and notebook.exists() else None,
        "code": code,
    }
    return {"key": _digest(parts), **parts}


def stage_keys(cfg: RunConfig | dict[str, Any], notebooks: dict[str, Path], code: str | None = None,
               reads: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """stage_key of every stage in pipeline order, each with the recorded `reads` of that stage."""
    code = code or code_version()
    keys: dict[str, dict[str, Any]] = {}
    for stage in STAGES:  # in pipeline order: upstream keys exist when needed
        keys[stage] = stage_key(cfg, stage, notebooks.get(stage), {u: keys[u]["key"] for u in UPSTREAM[stage]},
                                code, (reads or {}).get(stage, ()))
    return keys


def recorded_reads(run_dir: Path, stage: str) -> list[str]:
    """The fields the stage's last run was seen reading (vpe_lib.config_reads)."""
    return read_reads(Path(run_dir) / stage / READS_FILE)


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
    """Before a stage runs: its key record and the reads of its last run both go."""
    (Path(run_dir) / stage / STAMP).unlink(missing_ok=True)
    (Path(run_dir) / stage / READS_FILE).unlink(missing_ok=True)


def why_stale(stamp: dict[str, Any] | None, key: dict[str, Any]) -> str:
    """In words: why a stage runs (for the terminal), naming the config sections and fields that changed."""
    if stamp is None:
        return "not computed yet"
    changed = [name for name in ("config", "upstream", "notebook", "code") if stamp.get(name) != key[name]]
    if not changed:
        return "unchanged"
    if "upstream" in changed:
        ups = [u for u, k in key["upstream"].items() if stamp.get("upstream", {}).get(u) != k]
        changed[changed.index("upstream")] = "inputs from " + ", ".join(ups)
    if "config" in changed and isinstance(stamp.get("inputs"), dict):
        now, then = key.get("inputs", {}), stamp["inputs"]
        names = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        if names:
            changed[changed.index("config")] = "config " + ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
    return "changed: " + ", ".join(changed)
