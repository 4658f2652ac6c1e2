"""Build the report: run the notebooks in order with papermill, render HTML, write the index.

`build_report` executes `notebooks/0*_*.ipynb` with the same parameters
(profile, run_dir, overrides), keeps each executed notebook under
`<run_dir>/notebooks/`, renders it to `<out>/<name>.html` (inputs hidden) and
writes `<out>/index.html` and `<out>/summary.json` with the headline numbers
and the provenance. A failing notebook stops the run with a `ReportError`
naming the notebook and cell; its partial notebook and HTML are kept.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from vpe_lib.config import get_config
from vpe_lib.host_speed import host_speed
from vpe_lib.figures.hover_umap import PLOTLY_JS, write_plotly_js
from vpe_lib.progress import forward_progress
from vpe_lib.train.device import resolve_device
from vpe_lib.report.stage_cache import UPSTREAM, clear_stamp, code_version, read_stamp, recorded_reads, \
    resolve_stage_names, stage_key, stage_of_notebook, why_stale, write_stamp
from vpe_lib.stages.results_stage import collect_metrics
from vpe_lib.report.index import other_reports, render_index

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "vpe"


class ReportError(RuntimeError):
    """A notebook failed; the message names it and the cell."""


def notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    found = sorted(directory.glob("0*_*.ipynb"))
    if not found:
        raise ReportError(f"no notebooks found in {directory}")
    return found


# The kernel's own log (e.g. ipykernel's "running over TCP without encryption" warning at every
# start, normal for a local kernel) would reach the terminal of `vpe report` as a scary WARNING;
# errors still show. What the cells print goes into the notebook, not this log.
QUIET_KERNEL_FLAG = "--IPKernelApp.log_level=ERROR"


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Register a Jupyter kernel for this interpreter (inside its prefix) unless one exists."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if Path(spec.argv[0]).exists() and QUIET_KERNEL_FLAG in spec.argv:
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    path = Path(install(kernel_name=name, display_name=f"Python (vpe, {Path(sys.prefix).name})", prefix=sys.prefix))
    spec_file = path / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["argv"] = [*spec["argv"], QUIET_KERNEL_FLAG]
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return name


def git(*args: str) -> str:
    """A git command's output in the repository ('' where git or the repository is missing)."""
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(profile: str, started: dt.datetime) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        # the rendered reference reports are this command's output, not its code: a render over an
        # earlier uncommitted render is not "dirty"
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports")),
        "profile": profile,
        "start_time": started.isoformat(timespec="seconds"),
        "hardware": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "gpu": gpu,
            # a few seconds of fp32 work, so wall times of different hosts can be compared
            **host_speed(),
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _render_html(executed: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    target.write_text(offline_html(body))
    if f'src="{PLOTLY_JS}"' in body:  # an interactive figure (vpe_lib.figures.hover_umap): its library, beside the page
        write_plotly_js(target.parent)


# nbconvert's template loads MathJax and require.js from a CDN; the pages use neither (figures are
# embedded PNGs and GIFs, tables are HTML), and a report must open offline.
_NETWORK_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', re.IGNORECASE)
_NETWORK_LINK = re.compile(r'<link[^>]*\shref="https?://[^"]*"[^>]*/?>', re.IGNORECASE)


def offline_html(body: str) -> str:
    """The page without scripts or stylesheets fetched from the network."""
    return _NETWORK_LINK.sub("", _NETWORK_SCRIPT.sub("", body))


def run_notebook(nb: Path, executed: Path, parameters: dict, *, kernel: str, timeout: int) -> None:
    import papermill as pm

    try:
        pm.execute_notebook(str(nb), str(executed), parameters=parameters, kernel_name=kernel,
                            execution_timeout=timeout, progress_bar=False, cwd=str(nb.parent))
    except pm.PapermillExecutionError as err:
        raise ReportError(
            f"notebook {nb.name} failed in cell {err.exec_count} (cell index {err.cell_index}): "
            f"{err.ename}: {err.evalue}\n  partial executed notebook: {executed}"
        ) from err


def build_report(profile: str = "cpu", run_dir: str | Path = "runs/cpu", out_dir: str | Path = "reports", *,
                 overrides: dict[str, Any] | None = None, kernel: str | None = None, timeout: int = 4 * 3600,
                 only: list[str] | None = None, force: list[str] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the notebooks in order (those of `only`, if given), skipping a stage whose inputs are
    unchanged since it last succeeded (vpe_lib.report.stage_cache); `force` names stages to run anyway."""
    cfg = get_config(profile, overrides)  # fail now on a bad profile or key, not inside the first notebook
    resolve_device(cfg.run.device)  # and on a device this machine does not have (run.device=cuda on a laptop)
    forced = set(resolve_stage_names(force))
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    all_notebooks = notebooks()
    code = code_version()
    # each stage's key, once known in pipeline order: from its last run's recorded reads, or (a stage
    # that runs now) from the reads of this run, so the stages after it key on what it really read
    keys: dict[str, dict[str, Any]] = {}

    def key_of(stage: str, nb: Path, reads: list[str]) -> dict[str, Any]:
        return stage_key(cfg, stage, nb, {u: keys[u]["key"] for u in UPSTREAM[stage] if u in keys}, code, reads)
    started = dt.datetime.now(dt.timezone.utc)
    # The commit and tree state of the code that runs, taken now: edits made while the report
    # runs (it takes minutes) must not mark it dirty, nor a commit made meanwhile claim it.
    prov = provenance(profile, started)
    params = {"profile": profile, "run_dir": str(run_dir), "overrides": dict(overrides or {}), "progress": False}
    wall: dict[str, float] = {}
    computed_wall: dict[str, float] = {}
    cached: list[str] = []
    earlier: list[str] = []  # pages rendered from an earlier run's executed notebook (outside `only`)
    pages: list[tuple[str, str]] = []
    error: ReportError | None = None
    kernel_name = kernel
    total_start = time.perf_counter()
    for nb in all_notebooks:
        stage = stage_of_notebook(nb.stem)
        executed = run_dir / "notebooks" / nb.name
        stamp = read_stamp(run_dir, stage)
        keys[stage] = key_of(stage, nb, stamp.get("reads", []) if stamp else [])
        if only and nb.stem not in only:
            if executed.exists():  # not run now, but the run has it: the index links every page there is
                _render_html(executed, out_dir / f"{nb.stem}.html")
                pages.append((nb.stem, f"{nb.stem}.html"))
                earlier.append(nb.stem)
                stamp = read_stamp(run_dir, stage)
                if stamp and "wall_s" in stamp:  # its time when it was computed, as for a cached stage
                    computed_wall[nb.stem] = stamp["wall_s"]
            continue
        start = time.perf_counter()
        reason = why_stale(stamp, keys[stage])
        if stage not in forced and reason == "unchanged" and executed.exists():
            log(f"[vpe report] {nb.stem}: unchanged since it last ran (in {stamp.get('wall_s', float('nan')):.0f} s); "
                f"skipped (--force {stage} re-runs it)")
            cached.append(nb.stem)
            computed_wall[nb.stem] = stamp.get("wall_s", float("nan"))
        else:
            why = "forced" if stage in forced else reason
            log(f"[vpe report] {nb.stem}: running ({why}) ...")
            clear_stamp(run_dir, stage)  # until it succeeds, this stage's outputs are not to be trusted
            kernel_name = kernel_name or ensure_kernel()
            try:
                with forward_progress(run_dir / "notebooks" / "progress.log",
                                      lambda line, stem=nb.stem: log(f"[vpe report]   {stem} | {line}")):
                    run_notebook(nb, executed, params, kernel=kernel_name, timeout=timeout)
            except ReportError as err:
                error = err
            computed_wall[nb.stem] = time.perf_counter() - start
            if not error:
                keys[stage] = key_of(stage, nb, recorded_reads(run_dir, stage))
                write_stamp(run_dir, stage, keys[stage], computed_wall[nb.stem])
        if executed.exists():
            _render_html(executed, out_dir / f"{nb.stem}.html")
            pages.append((nb.stem, f"{nb.stem}.html"))
        wall[nb.stem] = time.perf_counter() - start
        if nb.stem not in cached:
            log(f"[vpe report] {nb.stem}: {'FAILED' if error else 'ok'} in {wall[nb.stem]:.1f} s "
                f"({time.perf_counter() - total_start:.0f} s so far)")
        if error:
            break
    wall["total"] = time.perf_counter() - total_start

    try:
        metrics = collect_metrics(run_dir, include_results=True)
    except FileNotFoundError:
        metrics = {}  # a failed run: the index still links the pages that exist
    summary = {
        "provenance": prov,
        "wall_time_s": {k: round(v, 2) for k, v in wall.items()},  # this invocation's
        # each stage's time when it was computed (a cached stage's from its earlier run)
        "computed_wall_time_s": {k: round(v, 2) for k, v in computed_wall.items()},
        "cached_stages": cached,
        "pages_from_earlier_runs": earlier,
        "metrics": metrics,
        "status": "failed" if error else "ok",
        "overrides": dict(overrides or {}),
    }
    if error:
        summary["error"] = str(error)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out_dir / "index.html").write_text(render_index(summary, pages, other_reports(out_dir)))
    if error:
        raise error
    return summary


def rewrite_index(out_dir: str | Path) -> Path:
    """Write `<out>/index.html` again from the report's own `summary.json` with this code's index, without
    running a notebook: the index is a view of the summary (report/ is not part of any stage's code), so a
    change to it need not re-run hours of stages. The summary records the commit the index was written at
    (`index_commit`), and the page says so beside the commit of the pages."""
    out_dir = Path(out_dir)
    path = out_dir / "summary.json"
    if not path.exists():
        raise ReportError(f"{path} does not exist: render the report first (vpe report --profile ... --out {out_dir})")
    summary = json.loads(path.read_text())
    names = [nb.stem for nb in notebooks()]
    pages = [(name, f"{name}.html") for name in names if (out_dir / f"{name}.html").exists()]
    commit = git("rev-parse", "HEAD")
    if commit and commit != summary["provenance"].get("commit"):
        summary["index_commit"] = commit
    else:
        summary.pop("index_commit", None)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out_dir / "index.html").write_text(render_index(summary, pages, other_reports(out_dir)))
    return out_dir / "index.html"
