"""Drive a notebook in a real JupyterLab, in headless Chromium, as a reader would: open it, run
every cell, check that the ipywidgets render as live views (not as text reprs), move a slider
with the keyboard and check that the figure it drives changes, and keep a screenshot.

The explorers' logic is tested through their Python API (tests/test_explorers.py); this checks the
part those tests cannot reach: the widget views in the browser, talking to a live kernel.

    python -m vpe_lib.report.lab_check --notebook notebooks/explore_latents.ipynb --screenshot lab.png

Needs Chromium (see `vpe_lib.report.browser_check`), the `vpe` kernel (`make lab` installs it) and a run
folder the notebook reads (its default `runs/cpu`).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vpe_lib.report.browser_check import _devtools_url, _DevTools, find_chromium
from vpe_lib.report.build import KERNEL_NAME, ensure_kernel

REPO = Path(__file__).resolve().parents[2]

_STATE_JS = """
(() => {
  const app = window.jupyterapp;
  const nb = app && app.shell.currentWidget;
  const kernel = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
  const prompts = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
                       .map(p => p.textContent.trim());
  const outputs = document.querySelectorAll('.jp-Notebook .jp-OutputArea-output');
  const text = Array.from(outputs).map(o => o.textContent).join('\\n');
  return JSON.stringify({
    ready: !!(kernel && nb.content),
    kernel: kernel ? kernel.status : null,
    prompts: prompts,
    widget_views: document.querySelectorAll('.jp-Notebook .jp-OutputArea-output .widget-vbox').length,
    sliders: document.querySelectorAll('.jp-Notebook .widget-slider').length,
    images: document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img').length,
    errors: Array.from(document.querySelectorAll('.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]'))
                 .map(e => e.textContent.slice(0, 300)).filter(t => /Error|Traceback/.test(t)),
    widget_failures: (text.match(/Error displaying widget|Failed to load model|model not found/gi) || []),
    text_reprs: (text.match(/VBox\\(children=/g) || []).length,
  });
})()
"""

_FIRST_FIGURE_JS = """
(() => {
  const box = document.querySelector('.jp-Notebook .jp-OutputArea-output .widget-vbox');
  const img = box && box.querySelector('img');
  return img ? img.src.length + ':' + img.src.slice(-64) : '';
})()
"""

_FOCUS_FIRST_HANDLE_JS = """
(() => {
  const h = document.querySelector('.jp-Notebook .widget-vbox .widget-slider .noUi-handle');
  if (!h) return false;
  h.scrollIntoView(); h.focus(); return document.activeElement === h;
})()
"""


@dataclass
class LabCheck:
    notebook: str
    cells_run: int = 0
    cells_total: int = 0
    widget_views: int = 0
    sliders: int = 0
    images: int = 0
    figure_changed_on_slider: bool = False
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (not self.errors and self.cells_run == self.cells_total > 0 and self.widget_views > 0
                and self.figure_changed_on_slider)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s:.0f} s")


def _state(dev: _DevTools, session: str) -> dict:
    res = dev.call("Runtime.evaluate", session, expression=_STATE_JS, returnByValue=True)
    return json.loads(res["result"]["value"])


def _js(dev: _DevTools, session: str, expression: str, *, await_promise: bool = False):
    res = dev.call("Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=await_promise)
    return res.get("result", {}).get("value")


def _wait(dev: _DevTools, session: str, done, timeout_s: float, what: str) -> dict:
    end = time.monotonic() + timeout_s
    while True:
        state = _state(dev, session)
        if done(state):
            return state
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not happen in {timeout_s:.0f} s (last state: {state})")
        dev.drain(1.0)


def check_lab_notebook(notebook: str | Path, *, screenshot: str | Path | None = None, chromium: str | None = None,
                       timeout_s: float = 600.0) -> LabCheck:
    start = time.monotonic()
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    check = LabCheck(notebook=str(notebook))
    kernel = json.loads(notebook.read_text()).get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel == KERNEL_NAME:  # the project's notebooks: the kernel `make lab` and `vpe report` register
        ensure_kernel()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    # JupyterLab autosaves (with outputs) and writes .ipynb_checkpoints beside a notebook: serve a
    # copy, so the committed notebook stays output-free (the project's notebooks find their run
    # folder from the repository root, wherever they are opened)
    workdir = tempfile.TemporaryDirectory(prefix="vpe-lab-")
    shutil.copy2(notebook, Path(workdir.name) / notebook.name)
    notebook = Path(workdir.name) / notebook.name
    port = _free_port()
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         "--LabApp.expose_app_in_browser=True", "--allow-root", f"--ServerApp.root_dir={notebook.parent}"],
        cwd=notebook.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/lab", 120)
        # Chromium's helper processes can still write to the scratch profile after the browser is killed:
        # a file left in /tmp must not fail the check (it failed one `make test` in a fresh clone)
        with tempfile.TemporaryDirectory(prefix="vpe-lab-chromium-", ignore_cleanup_errors=True) as profile:
            browser = subprocess.Popen(
                [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--window-size=1400,2400", "--remote-debugging-port=0",
                 f"--user-data-dir={profile}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                dev = _DevTools(_devtools_url(browser))
                try:
                    _drive(dev, f"http://127.0.0.1:{port}/lab/tree/{notebook.name}", check, screenshot, timeout_s)
                finally:
                    dev.close()
            finally:
                browser.kill()
                browser.wait(timeout=10)
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
        workdir.cleanup()
    check.wall_s = round(time.monotonic() - start, 1)
    return check


def _drive(dev: _DevTools, url: str, check: LabCheck, screenshot, timeout_s: float) -> None:
    target = dev.call("Target.createTarget", url="about:blank")["targetId"]
    session = dev.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Runtime", "Page"):
        dev.call(f"{domain}.enable", session)
    dev.call("Page.navigate", session, url=url)
    _wait(dev, session, lambda s: s["ready"] and s["kernel"] == "idle", 180, "the notebook opening with an idle kernel")
    _js(dev, session, "window.jupyterapp.commands.execute('notebook:run-all-cells')", await_promise=True)
    # done when the kernel is idle with nothing queued and every cell ran, or a cell failed (run-all
    # stops there, leaving the cells after it unrun)
    state = _wait(dev, session, lambda s: s["kernel"] == "idle" and s["prompts"] and "[*]:" not in s["prompts"]
                  and (s["errors"] or all(p not in ("[ ]:", "[]:") for p in s["prompts"])),
                  timeout_s, "every cell running")
    check.cells_total = len(state["prompts"])
    check.cells_run = sum(p[1:-2].strip().isdigit() for p in state["prompts"])
    check.widget_views, check.sliders, check.images = state["widget_views"], state["sliders"], state["images"]
    check.errors += state["errors"] + state["widget_failures"]
    if state["text_reprs"]:
        check.errors.append(f"{state['text_reprs']} widget(s) shown as text, not as a live view")
    before = _js(dev, session, _FIRST_FIGURE_JS)
    if _js(dev, session, _FOCUS_FIRST_HANDLE_JS):
        for kind in ("keyDown", "keyUp"):
            dev.call("Input.dispatchKeyEvent", session, type=kind, key="ArrowRight", code="ArrowRight",
                     windowsVirtualKeyCode=39)
        end = time.monotonic() + 60
        while time.monotonic() < end and not check.figure_changed_on_slider:
            dev.drain(1.0)
            after = _js(dev, session, _FIRST_FIGURE_JS)
            check.figure_changed_on_slider = bool(before) and bool(after) and after != before
    else:
        check.errors.append("no slider handle to move in the first widget")
    if screenshot:
        _js(dev, session, "document.querySelector('.jp-Notebook .widget-vbox')?.scrollIntoView()")
        png = dev.call("Page.captureScreenshot", session, format="png")["data"]
        Path(screenshot).write_bytes(base64.b64decode(png))
    dev.call("Target.closeTarget", targetId=target)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notebook", default=str(REPO / "notebooks" / "explore_latents.ipynb"))
    ap.add_argument("--screenshot", default=None, help="write a PNG of the first explorer here")
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    check = check_lab_notebook(args.notebook, screenshot=args.screenshot, timeout_s=args.timeout)
    print(json.dumps({**asdict(check), "ok": check.ok}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**asdict(check), "ok": check.ok}, indent=2) + "\n")
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
