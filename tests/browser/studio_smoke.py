"""Browser smoke check of the studio: serve the notebook with Voila, load it in Chromium.

Run ``python tests/browser/studio_smoke.py [OUT.png]``: it copies the packaged
``build_recording`` notebook to a temporary folder, serves it with Voila on 127.0.0.1,
opens it in headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright), waits
for the three panels and the preview image, and saves a screenshot (default
``tests/browser/out/studio.png``). Needs ``voila``, ``playwright`` (the Python package; no
``playwright install``) and ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("MINISIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEFAULT_OUT = Path(__file__).parent / "out" / "studio.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with {proc.returncode}")
        try:  # any HTTP answer (a redirect, a 404) means the server is up
            urllib.request.urlopen(url + "voila/static/", timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"voila did not answer at {url} within {timeout_s} s")


def run(out: Path = DEFAULT_OUT, timeout_s: float = 80.0) -> Path:
    """Serve, load, check and screenshot the studio; returns the screenshot's path."""
    from playwright.sync_api import sync_playwright

    from minisim.notebooks import copy_notebook

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="minisim-browser-"))
    nb_dir = copy_notebook("build_recording", work / "build_recording")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "voila.log", "w")  # noqa: SIM115 -- closed after voila stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "build_recording.ipynb", "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
        cwd=nb_dir, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(url, 30, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, timeout=timeout_s * 1000)
            ms = timeout_s * 1000
            page.wait_for_selector(".minisim-studio", timeout=ms)
            for cls in ("minisim-anatomy", "minisim-activity", "minisim-generate"):
                page.wait_for_selector(f".{cls}", state="attached", timeout=ms)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.minisim-anatomy img')]"
                ".some(i => i.naturalWidth > 0)", timeout=ms)
            for title in ("Anatomy", "Activity", "Generate"):
                page.wait_for_selector(f"text={title}", timeout=ms)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(run(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
