"""A headless Chromium driven over the Chrome DevTools Protocol, and a Streamlit server, for end-to-end tests.

Nothing is downloaded: the browser is the system's (`apt-get install chromium chromium-driver` on
Debian), driven through its DevTools websocket with `websocket-client`. `Streamlit` starts
`streamlit run app.py` on a free localhost port and waits for its health endpoint. `Browser.open`
navigates, then waits until Streamlit has finished rendering: the app is mounted, its script state
(`data-test-script-state` on the app's root) is `notRunning`, no skeleton or spinner is left, every
chart is drawn, and the page's DOM has stopped changing.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with: sudo apt-get install -y chromium chromium-driver"

# Streamlit's DOM test ids: an uncaught exception, and st.error's alert.
ERROR_SELECTORS = ('[data-testid="stException"]', '[data-testid="stAlertContentError"]')
BUSY_JS = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return 'no app';
  const script = app.getAttribute('data-test-script-state');
  if (script !== 'notRunning') return 'script ' + script;
  if (document.querySelector('[data-testid="stSkeleton"], [data-testid="stSpinner"]')) return 'spinner';
  const main = document.querySelector('[data-testid="stMainBlockContainer"]');
  if (!main || !main.innerText.trim()) return 'empty';
  const plots = document.querySelectorAll('.js-plotly-plot');
  if (Array.from(plots).some(p => !p.querySelector('.main-svg'))) return 'plotting';
  return 'idle:' + document.body.innerHTML.length;
})()"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as r:
        return r.read()


class Streamlit:
    """`streamlit run app.py` on 127.0.0.1:<free port>, stopped (by its own process id) on exit."""

    def __init__(self, repo: Path, runs: Path | None = None, timeout: float = 90.0):
        self.repo, self.runs, self.timeout = repo, runs, timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start_seconds = float("nan")

    def __enter__(self) -> "Streamlit":
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        if self.runs is not None:
            cmd += ["--", "--runs", str(self.runs)]
        self.log = tempfile.TemporaryFile()
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.repo, stdout=self.log, stderr=subprocess.STDOUT)
        while time.perf_counter() - start < self.timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if _get(f"{self.url}/_stcore/health", timeout=2).strip() == b"ok":
                    self.start_seconds = time.perf_counter() - start
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.__exit__()
        raise TimeoutError(f"streamlit not healthy after {self.timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools websocket."""

    def __init__(self, executable: str, width: int = 1400, height: int = 1000):
        self.executable, self.width, self.height = executable, width, height
        self._ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        import websocket  # websocket-client

        self.profile = tempfile.TemporaryDirectory(prefix="lab-chromium-")
        self.proc = subprocess.Popen(
            [self.executable, "--headless=new", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile.name}", f"--window-size={self.width},{self.height}", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--hide-scrollbars", "--mute-audio", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        deadline = time.perf_counter() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                self.__exit__()
                raise RuntimeError(f"{self.executable} did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in json.loads(_get(f"http://127.0.0.1:{port}/json/list")) if t.get("type") == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)
        return self

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are dropped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, timeout: float = 120.0, settle: float = 1.5) -> float:
        """Navigate to `url` and wait until the page has rendered and stayed unchanged for `settle` s.

        Returns the seconds from navigation to the moment the page was finished (the start of the
        unchanged stretch, so the settling time is not counted).
        """
        start = time.perf_counter()
        self.call("Page.navigate", url=url)
        time.sleep(0.5)  # let the old document go
        last_state, stable_since = None, None
        while time.perf_counter() - start < timeout:
            state = self.evaluate(BUSY_JS) or ""
            now = time.perf_counter()
            if state.startswith("idle:"):
                if state != last_state:
                    stable_since = now
                elif now - stable_since >= settle:
                    return stable_since - start
            else:
                stable_since = None
            last_state = state
            time.sleep(0.25)
        raise TimeoutError(f"{url} did not finish rendering in {timeout} s (last state: {last_state})")

    def errors(self) -> list[str]:
        """The text of every error element Streamlit shows on the page."""
        js = ("Array.from(document.querySelectorAll(%s)).map(e => e.innerText.slice(0, 500))"
              % json.dumps(", ".join(ERROR_SELECTORS)))
        return self.evaluate(js) or []

    def text(self) -> str:
        return self.evaluate("document.body.innerText") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.profile.cleanup()
