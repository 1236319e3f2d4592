"""A headless Chromium for the report tests: render a page, report what loaded, screenshot it.

``find_browser()`` looks for ``$TRANSFERKIT_BROWSER``, then chromium / chromium-browser /
google-chrome on the PATH; tests skip with that reason when there is none.  Screenshots go to
``$TRANSFERKIT_TEST_ARTIFACTS`` (default ``build/test-artifacts/`` in the repository, ignored
by git), where they stay after the test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-extensions",
         # nothing may be fetched: every host resolves to nowhere
         "--host-resolver-rules=MAP * ~NOTFOUND"]

#: appended to a copy of the page: on load, the title reports every image and every fetch
PROBE = """<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var res = performance.getEntriesByType("resource").map(function (r) { return r.name; });
  document.title = "PROBE" + JSON.stringify({images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt; }),
    fetched: res, height: document.documentElement.scrollHeight,
    headings: Array.prototype.map.call(document.querySelectorAll("h2"),
                                       function (h) { return h.textContent; })});
});</script>"""


def find_browser() -> str:
    exe = os.environ.get("TRANSFERKIT_BROWSER")
    if exe and Path(exe).exists():
        return exe
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless browser: install chromium (Debian: apt-get install chromium) or "
                "set TRANSFERKIT_BROWSER to a Chromium binary")


def artifacts_dir() -> Path:
    d = Path(os.environ.get("TRANSFERKIT_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _run(browser: str, args: list[str], page: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="transferkit-browser-") as profile:
        run = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args,
                              page.resolve().as_uri()], capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def render(page: Path) -> dict:
    """Load a copy of ``page`` alone in an empty folder (so that nothing beside it can be
    read) and return what the probe saw: images, broken ones, fetched resources, headings."""
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="transferkit-page-") as tmp:
        alone = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        alone.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = _run(browser, ["--virtual-time-budget=10000", "--dump-dom"], alone)
    m = re.search(r"<title>PROBE(.*?)</title>", dom, re.S)
    assert m, f"the page did not finish loading:\n{dom[:500]}"
    import html

    return json.loads(html.unescape(m.group(1)))


def screenshot(page: Path, name: str, height: int = 2400) -> Path:
    """A PNG of ``page`` (1100 px wide) kept under :func:`artifacts_dir`."""
    browser = find_browser()
    out = artifacts_dir() / name
    _run(browser, [f"--screenshot={out}", f"--window-size=1100,{height}"], page)
    assert out.exists() and out.stat().st_size > 10_000
    return out
