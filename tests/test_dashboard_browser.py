"""The dashboard end to end in a real browser: `streamlit run app.py` on localhost, every page opened in
headless Chromium, rendered, photographed, and checked for any error Streamlit shows.

Needs Debian's `chromium` (`.ci/run` installs it); without it the test is skipped with the command that
installs it. Screenshots go to a temporary folder; `LAB_SCREENSHOTS=DIR` keeps them in DIR (one PNG per
page, plus `dashboard.png`, the README's picture) and shows the shipped reference runs (`data/runs`)
when there are any, as `make lab` does:

    LAB_SCREENSHOTS=/tmp/shots .venv/bin/python -m pytest -s tests/test_dashboard_browser.py
    cp /tmp/shots/dashboard.png docs/dashboard.png
 The seconds each page took to render are printed (`pytest -s`)
and written next to the screenshots as `render_seconds.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from browser import INSTALL_HINT, Browser, Streamlit, find_browser
from dashboard_fixtures import runs_root
from lab.dashboard.sources import DEFAULT_RUNS_DIR
from lab.runs import find_runs

REPO = Path(__file__).resolve().parent.parent
# url path -> (screenshot name, the page's title): every page of app.py's navigation.
PAGES = {"": ("overview", "EfficientScale Lab"), "loss": ("loss_curves", "Loss curves"),
         "experts": ("expert_load", "Expert load"), "savings": ("compute_savings", "Compute savings"),
         "details": ("run_details", "Run details"), "growth": ("growth_explorer", "Growth explorer"),
         "live": ("live_run", "Live run")}
# The README's picture: the reference runs' loss curves, or (without them) the paper's Table 6.
README_PAGES = ("loss_curves", "compute_savings")


@pytest.mark.slow
def test_every_page_renders_in_a_real_browser(tmp_path):
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium on this machine; {INSTALL_HINT}")
    pytest.importorskip("websocket", reason="needs websocket-client (pip install websocket-client)")
    keep = os.environ.get("LAB_SCREENSHOTS")
    shots = Path(keep).resolve() if keep else tmp_path / "screenshots"
    # The shipped reference runs when keeping screenshots for the README, else runs made here.
    runs = None if keep and find_runs(DEFAULT_RUNS_DIR) else runs_root(tmp_path / "runs")
    seconds: dict[str, float] = {}
    with Streamlit(REPO, runs=runs) as server, Browser(executable) as browser:
        seconds["server healthy"] = server.start_seconds
        for path, (name, title) in PAGES.items():
            seconds[name] = browser.open(f"{server.url}/{path}")
            browser.screenshot(shots / f"{name}.png")
            text = browser.text()
            assert "Page not found" not in text, f"/{path}: Streamlit does not know this page"
            assert title in text, f"/{path}: no {title!r} on the page:\n{text[:1000]}"
            errors = browser.errors()
            assert not errors, f"/{path} shows errors (screenshot {shots / name}.png):\n" + "\n".join(errors)
        logged = server.output()
    assert "Traceback" not in logged, logged[-3000:]
    if keep:
        shutil.copyfile(shots / f"{README_PAGES[runs is not None]}.png", shots / "dashboard.png")
    (shots / "render_seconds.json").write_text(json.dumps(seconds, indent=2))
    print("seconds to first render:", json.dumps({k: round(v, 2) for k, v in seconds.items()}))
