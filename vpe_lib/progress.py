"""Progress of long loops, from inside a notebook's kernel to the terminal that runs `vpe report`.

A papermill kernel's output goes into the notebook, not to the terminal, and a progress bar
there would clutter the rendered page. So `vpe report` names a file in the environment
(VPE_PROGRESS_FILE) before it starts the kernels; code in the kernel appends one line per
milestone to it (`note`, `training_step`), and the report's `forward_progress` thread prints
the new lines as they come. Outside `vpe report` (a notebook in JupyterLab, a test) nothing is
written.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

ENV = "VPE_PROGRESS_FILE"
# a training loop writes at most one line per this many seconds
MIN_INTERVAL_S = 10.0
_runs: dict[str, dict] = {}  # desc -> {"last": time of the last line (or the start), "wrote": any line yet}


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def note(message: str) -> None:
    """Append one line for the terminal (a no-op outside `vpe report`)."""
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(message.replace("\n", " ") + "\n")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def training_step(desc: str, step: int, total: int, start_step: int, elapsed_s: float) -> None:
    """'tokenizer: step 120/500 (24%), 41s, ETA 2m10s': a line once a run has gone on for
    MIN_INTERVAL_S, then at most one per MIN_INTERVAL_S, and its last step if it wrote any (a
    run shorter than that, e.g. one of the hundreds of head runs, writes nothing). The ETA
    extrapolates this process's pace (a resumed run's earlier steps are not counted)."""
    if not enabled():
        return
    now = time.monotonic()
    if step <= start_step + 1 or desc not in _runs:  # a new run under this name
        _runs[desc] = {"last": now, "wrote": False}
    run = _runs[desc]
    if step >= total:
        if run["wrote"]:
            note(f"{desc}: step {step}/{total} (100%), {format_duration(elapsed_s)}")
        return
    if now - run["last"] < MIN_INTERVAL_S:
        return
    run.update(last=now, wrote=True)
    done = step - start_step
    eta = f", ETA {format_duration(elapsed_s / done * (total - step))}" if done > 0 else ""
    note(f"{desc}: step {step}/{total} ({100 * step / max(total, 1):.0f}%), {format_duration(elapsed_s)}{eta}")


class WorkEta:
    """Time left in a plan of unequal items, e.g. the heads stage's rows, where an update of a
    fine-tuned encoder costs several of a frozen head's. Each item has a kind and an amount of work
    (updates); the pace, seconds per unit of work, is measured per kind on work this process did. Work
    found finished in a cache is not recorded: it says nothing about the pace. A kind not timed yet
    borrows the mean pace of those that are."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._work: dict[str, float] = {}

    def record(self, kind: str, work: float, seconds: float) -> None:
        if work > 0 and seconds > 0:
            self._seconds[kind] = self._seconds.get(kind, 0.0) + seconds
            self._work[kind] = self._work.get(kind, 0.0) + work

    def pace(self, kind: str) -> float | None:
        """Seconds per unit of work of `kind` (None before anything was timed)."""
        if kind in self._work:
            return self._seconds[kind] / self._work[kind]
        if not self._work:
            return None
        return sum(self._seconds.values()) / sum(self._work.values())

    def remaining_s(self, items: Iterable[tuple[str, float]]) -> float | None:
        """The estimated seconds of `items` ((kind, work) pairs), or None before anything was timed."""
        total = 0.0
        for kind, work in items:
            pace = self.pace(kind)
            if pace is None:
                return None
            total += pace * work
        return total


@contextmanager
def forward_progress(path: Path, emit: Callable[[str], None] = print, *, poll_s: float = 0.5) -> Iterator[None]:
    """While the block runs, set VPE_PROGRESS_FILE=path for child processes and pass each new line
    of that file to `emit`. The file is emptied first; the lines left at the end are flushed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    stop = threading.Event()
    offset = 0

    def pump() -> None:
        nonlocal offset
        with open(path, encoding="utf-8") as f:
            f.seek(offset)
            while True:
                line = f.readline()
                if not line.endswith("\n"):  # nothing more, or half a line being written: read it next time
                    break
                offset = f.tell()
                emit(line.rstrip("\n"))

    def loop() -> None:
        while not stop.wait(poll_s):
            pump()

    previous = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    thread = threading.Thread(target=loop, daemon=True, name="vpe-progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        pump()
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
