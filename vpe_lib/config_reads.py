"""Which config fields does a stage read? Recorded as it runs, so its cache key cannot drift from its code.

`record_reads(cfg, path)` watches the config objects of one resolved RunConfig (the root and every
section below it) and writes the dotted names of the fields read to `path` (JSON), each time one is
read for the first time. `vpe report` then keys the stage by the values of those fields as well as
the sections it declares (vpe_lib.report.stage_cache): a stage that starts reading `seg.seeds` is re-run
when the seeds change, without anyone updating a hand-kept table.

What counts as a read:
- a leaf field (`cfg.seg.seeds`, `cfg.seg.train.lr`), by attribute access, `getattr`,
  `dataclasses.asdict` or `dataclasses.replace` (which copy every field they do not change);
- a whole section, when the object leaves by pickling (a worker process), copying or `__dict__`:
  what happens to it there is not watched, so all of it counts.
Reaching a section (`cfg.seg`) reads nothing by itself. Reads in other processes are not watched
(their objects arrive pickled, which already counted the whole object).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from vpe_lib.atomic import atomic_write_text

# attribute names through which an object's whole state leaves our sight
_WHOLE = frozenset({"__dict__", "__reduce_ex__", "__reduce__", "__getstate__", "__deepcopy__", "__copy__"})
_patched: dict[type, Any] = {}  # class -> its original __getattribute__ (None: object's)
_active: "ReadRecorder | None" = None


class ReadRecorder:
    """The dotted names read from one config tree (`reads`), kept in `path` when given."""

    def __init__(self, cfg: Any, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.pid = os.getpid()
        self.reads: set[str] = set()
        self._prefix: dict[int, str] = {}
        self._objects: list[Any] = []  # held, so no watched object's id is ever reused by another
        self._fields: dict[type, frozenset[str]] = {}
        self._walk(cfg, "")

    def _walk(self, obj: Any, prefix: str) -> None:
        self._prefix[id(obj)] = prefix
        self._objects.append(obj)
        self._fields[type(obj)] = frozenset(f.name for f in dataclasses.fields(obj))
        for f in dataclasses.fields(obj):
            value = object.__getattribute__(obj, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                self._walk(value, f"{prefix}{f.name}.")

    def watches(self, obj: Any) -> bool:
        return id(obj) in self._prefix

    def saw(self, obj: Any, name: str, value: Any) -> None:
        prefix = self._prefix.get(id(obj))
        if prefix is None or os.getpid() != self.pid:  # not ours, or a forked worker's copy
            return
        if name in self._fields[type(obj)]:
            if id(value) in self._prefix:  # a section: only the leaves read below it count
                return
            path = prefix + name
        elif name in _WHOLE:
            path = prefix.rstrip(".") or "*"  # "*": the whole config
        else:
            return
        if path not in self.reads:
            self.reads.add(path)
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            atomic_write_text(json.dumps(sorted(self.reads), indent=0) + "\n", self.path)


def _hook(self: Any, name: str) -> Any:
    original = _patched.get(type(self))  # a subclass of a watched class: object's lookup
    value = original(self, name) if original is not None else object.__getattribute__(self, name)
    rec = _active
    if rec is not None:
        rec.saw(self, name, value)
    return value


def record_reads(cfg: Any, path: str | Path | None = None) -> ReadRecorder:
    """Start recording the fields of `cfg` read from now on (replacing any earlier recorder of this
    process); the reads go to `path` as they happen (a JSON list), and to the returned recorder."""
    global _active
    rec = ReadRecorder(cfg, Path(path) if path is not None else None)
    for cls in rec._fields:
        if cls not in _patched:
            own = cls.__dict__.get("__getattribute__")
            _patched[cls] = own
            cls.__getattribute__ = _hook
    if rec.path is not None:
        rec._save()  # an empty list: the stage has started and read nothing yet
    _active = rec
    return rec


def stop_recording() -> None:
    global _active
    _active = None


def read_reads(path: str | Path) -> list[str]:
    """The names a recorder wrote to `path` ([] when there is no such file or it is torn)."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return sorted(str(x) for x in data) if isinstance(data, list) else []


def value_at(tree: dict[str, Any], path: str) -> Any:
    """The value of a dotted name in a config's dict form ("*": all of it); a name the config no
    longer has gives a marker, so a renamed field re-runs the stage rather than failing."""
    if path == "*":
        return tree
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<not in this config>"
        node = node[part]
    return node
