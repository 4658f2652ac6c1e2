"""Open report pages in headless Chromium and report what a reader would hit: console errors,
uncaught exceptions, failed requests (any request to the network fails here: the pages must
work offline), and images or animations that did not load.

Talks to Chromium over the DevTools protocol (websocket-client). Chromium is Debian's
`chromium` package (`apt-get install chromium`); `find_chromium()` returns None where it is
missing, and the tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass
class PageCheck:
    page: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    n_images: int = 0
    n_animations: int = 0  # GIF / APNG images and <video> elements
    title: str = ""
    probe: object = None  # what `probe_js` returned on this page, if given

    @property
    def ok(self) -> bool:
        return not (self.console_errors or self.failed_requests or self.broken_images)

    def problems(self) -> str:
        out = [f"console: {e}" for e in self.console_errors] + [f"request failed: {r}" for r in self.failed_requests]
        return "; ".join(out + [f"image did not load: {i}" for i in self.broken_images])


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


CALL_TIMEOUT_S = 180.0


class _DevTools:
    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        # a reply can take over 30 s on a loaded 2-core host (JupyterLab's page busy while a kernel
        # runs): with 30 s, `make check-lab` failed 2 of 4 runs beside a training job; never a hang,
        # the checks have their own deadlines
        self.ws = websocket.create_connection(ws_url, timeout=CALL_TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def drain(self, seconds: float) -> None:
        """Collect events for `seconds` (late console errors, late requests)."""
        end = time.monotonic() + seconds
        self.ws.settimeout(0.1)
        try:
            while time.monotonic() < end:
                try:
                    self.events.append(json.loads(self.ws.recv()))
                except Exception:  # a timeout: nothing arrived in this slice
                    pass
        finally:
            self.ws.settimeout(CALL_TIMEOUT_S)

    def close(self) -> None:
        self.ws.close()


_IMAGES_JS = """
(() => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.src || '').startsWith('data:') ? i.src.slice(0, 40) : i.src);
  const anim = imgs.filter(i => /^data:image\\/(gif|apng)|\\.(gif|apng)$/i.test(i.src)).length
               + document.querySelectorAll('video').length;
  return JSON.stringify({n: imgs.length, broken: broken, anim: anim, title: document.title});
})()
"""


def check_pages(pages: list[Path], *, chromium: str | None = None, settle_s: float = 1.0,
                load_timeout_s: float = 60.0, probe_js: str | None = None,
                window: tuple[int, int] = (1280, 800)) -> list[PageCheck]:
    """Open each page (a local HTML file) in one headless Chromium; one PageCheck per page.
    `probe_js`: an expression evaluated after the page settled (its JSON-able value lands in
    PageCheck.probe), for tests that act on a page (hover a point) and read what changed. `window`: the
    browser window's size in CSS pixels (a laptop screen by default: what "above the fold" means)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    # Chromium's helper processes can still write to the scratch profile after the browser is killed:
    # a file left in /tmp must not fail the check (it failed one `make test` in a fresh clone)
    with tempfile.TemporaryDirectory(prefix="vpe-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
             f"--window-size={window[0]},{window[1]}", "--hide-scrollbars",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ws_url = _devtools_url(proc)
            dev = _DevTools(ws_url)
            try:
                return [_check_one(dev, Path(p), settle_s, load_timeout_s, probe_js) for p in pages]
            finally:
                dev.close()
        finally:
            proc.kill()
            proc.wait(timeout=10)


def _devtools_url(proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    end = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line.strip())
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return m.group(1)
    raise RuntimeError("Chromium did not start its DevTools endpoint: " + " | ".join(seen[-5:]))


def _check_one(dev: _DevTools, page: Path, settle_s: float, load_timeout_s: float,
               probe_js: str | None = None) -> PageCheck:
    target = dev.call("Target.createTarget", url="about:blank")["targetId"]
    session = dev.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        dev.call(f"{domain}.enable", session)
    dev.events.clear()
    dev.call("Page.navigate", session, url=page.resolve().as_uri())
    end = time.monotonic() + load_timeout_s
    while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session for e in dev.events):
        if time.monotonic() > end:
            raise TimeoutError(f"{page} did not finish loading in {load_timeout_s:.0f} s")
        dev.drain(0.2)
    dev.drain(settle_s)
    res = dev.call("Runtime.evaluate", session, expression=_IMAGES_JS, returnByValue=True)
    info = json.loads(res["result"]["value"])
    check = PageCheck(page=page.name, n_images=info["n"], broken_images=info["broken"],
                      n_animations=info["anim"], title=info["title"])
    if probe_js is not None:
        check.probe = dev.call("Runtime.evaluate", session, expression=probe_js, returnByValue=True,
                               awaitPromise=True)["result"].get("value")
        dev.drain(0.2)  # errors the probe caused are collected below
    urls: dict[str, str] = {}
    for e in dev.events:
        if e.get("sessionId") != session:
            continue
        method, p = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[p["requestId"]] = p["request"]["url"][:120]
        elif method == "Network.loadingFailed":
            check.failed_requests.append(f"{urls.get(p['requestId'], '?')} ({p.get('errorText')})")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            check.console_errors.append(d.get("exception", {}).get("description", d.get("text", "exception")))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            check.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            check.console_errors.append(p["entry"]["text"][:200])
    dev.call("Target.closeTarget", targetId=target)
    return check


FIRST_SCREEN_JS = """
(() => {
  const at = id => { const e = document.getElementById(id); if (!e) return null;
                     const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, height: r.height}; };
  return {viewport: [window.innerWidth, window.innerHeight], answers: at('answers'), forest: at('forest')};
})()
"""


def first_screen(page: Path, *, window: tuple[int, int] = (1280, 800), chromium: str | None = None) -> dict:
    """Where an index page's answers heading and forest plot land in a `window`-sized browser: {"viewport",
    "answers", "forest"} with each element's top / bottom in CSS pixels (None if the page has none), and
    "above_fold": both present and wholly inside the first screen."""
    (check,) = check_pages([page], chromium=chromium, probe_js=FIRST_SCREEN_JS, window=window)
    out = dict(check.probe or {})
    h = (out.get("viewport") or [0, 0])[1]
    out["above_fold"] = all(out.get(k) and out[k]["top"] >= 0 and out[k]["bottom"] <= h and out[k]["height"] > 0
                            for k in ("answers", "forest"))
    return out


def screenshot(page: Path, out: Path, *, window: tuple[int, int] = (1280, 800), chromium: str | None = None,
               timeout_s: float = 120.0) -> Path:
    """The first screen of a local page as a PNG (Chromium's own --screenshot), for the README and notes."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vpe-chromium-", ignore_cleanup_errors=True) as profile:
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                        f"--screenshot={out}", Path(page).resolve().as_uri()],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s, check=False)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot of {page}")
    return out


def main(argv: list[str] | None = None) -> int:
    """python -m vpe_lib.report.browser_check --screenshot OUT.png PAGE.html: the first screen of a page, and
    whether its answers and forest plot are in it."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("page", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--size", default="1280x800")
    a = ap.parse_args(argv)
    window = tuple(int(v) for v in a.size.split("x"))
    info = first_screen(a.page, window=window)
    print(json.dumps(info))
    if a.screenshot:
        print(screenshot(a.page, a.screenshot, window=window))
    return 0 if info["above_fold"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
