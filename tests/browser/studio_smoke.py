"""The studio in a real browser: serve the notebook with Voila, drive it in Chromium.

Run ``python tests/browser/studio_smoke.py [OUT_DIR]``: it copies the packaged
``build_recording`` notebook to a temporary folder, serves it with Voila on 127.0.0.1 and
opens it in headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright). Then,
as a user would: it drags a slider on Panel 1 (magnification) and waits for the preview
image to change; switches Panel 2 from Quiet to Active and reads the spike-tick counts;
runs Generate for a short zarr and reads the size it reports. A screenshot of each panel
goes to OUT_DIR (default ``tests/browser/out``). Needs ``voila``, ``playwright`` (the Python
package; no ``playwright install``) and ``chromium``.
"""

from __future__ import annotations

import os
import re
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
DEFAULT_OUT = Path(__file__).parent / "out"


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


def _ticks(page) -> int:
    text = page.locator(".minisim-activity .minisim-spike-count").first.inner_text()
    return int(re.search(r"(\d+) spike ticks", text).group(1))


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(out: Path = DEFAULT_OUT, timeout_s: float = 180.0) -> dict:
    """Serve the studio, drive it in Chromium and screenshot each panel.

    Returns what it saw: ``preview_ok`` (the preview image has pixels), ``panels`` (the tab
    titles), ``preview_changed`` (after the slider drag), ``magnification`` (before, after),
    ``ticks`` ({"quiet": n, "active": n}), ``reported_bytes`` (Generate's own figure),
    ``disk_bytes`` (the store on disk) and ``screenshots`` (paths). On a failure it leaves
    ``failure.png`` and ``voila.log`` in ``out``.
    """
    from playwright.sync_api import sync_playwright

    from minisim.notebooks import copy_notebook

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    seen: dict = {"screenshots": []}
    ms = timeout_s * 1000
    try:
        _wait_http(url, 60, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            try:
                page.goto(url, timeout=ms)
                _walk(page, out, nb_dir, ms, seen)
            except Exception:
                page.screenshot(path=str(out / "failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        (out / "voila.log").write_text((work / "voila.log").read_text())
        shutil.rmtree(work, ignore_errors=True)
    return seen


def _walk(page, out: Path, nb_dir: Path, ms: float, seen: dict) -> None:
    """The user's walk through the three panels (see the module docstring)."""
    page.wait_for_selector(".minisim-studio", timeout=ms)
    for cls in ("minisim-anatomy", "minisim-activity", "minisim-generate"):
        page.wait_for_selector(f".{cls}", state="attached", timeout=ms)
    page.wait_for_function(
        "() => { const i = document.querySelector('img.minisim-preview');"
        " return i && i.naturalWidth > 0 && i.naturalHeight > 0; }", timeout=ms)
    seen["preview_ok"] = True
    seen["panels"] = [t for t in ("Anatomy", "Activity", "Generate")
                      if page.get_by_text(re.compile(t)).count() > 0]

    # -- Panel 1: drag the magnification slider; the preview must change
    page.locator(".minisim-anatomy").get_by_text("Optics", exact=True).first.click()
    knob = page.locator(".minisim-anatomy .minisim-knob", has_text="magnification").first
    knob.wait_for(state="visible", timeout=ms)
    readout = knob.locator(".widget-readout")
    seen["magnification"] = [readout.inner_text()]
    src0 = page.locator("img.minisim-preview").get_attribute("src")
    handle = knob.locator(".noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 10, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "s => { const i = document.querySelector('img.minisim-preview');"
        " return i && i.getAttribute('src') !== s; }", arg=src0, timeout=ms)
    page.wait_for_function(
        "() => !document.querySelector('.minisim-anatomy .minisim-busy')", timeout=ms)
    seen["magnification"].append(readout.inner_text())
    seen["preview_changed"] = True
    _screenshot(page, out / "studio-anatomy.png", seen)

    # -- Panel 2: Quiet, then Active; count the spike ticks
    page.get_by_text("2 · Activity").first.click()
    acts = page.locator(".minisim-activity")
    ticks = {}
    for name in ("Quiet", "Active"):
        before = acts.locator(".minisim-spike-count").first.inner_text()
        acts.locator("button", has_text=name).first.click()
        page.wait_for_function(
            "s => { const e = document.querySelector('.minisim-activity "
            ".minisim-spike-count'); return e && e.innerText !== s && /spike ticks/"
            ".test(e.innerText); }", arg=before, timeout=ms)
        ticks[name.lower()] = _ticks(page)
    seen["ticks"] = ticks
    _screenshot(page, out / "studio-activity.png", seen)

    # -- Panel 3: Generate a short zarr, read the size it reports
    page.get_by_text("3 · Generate").first.click()
    gen = page.locator(".minisim-generate")
    gen.get_by_text(re.compile("on disk \\(movie and ground truth\\)")).first.wait_for(
        timeout=ms)
    gen.locator("button", has_text="Generate").first.click()
    written = gen.locator(".minisim-written").get_by_text(re.compile(r"\(\d+ bytes\)"))
    written.first.wait_for(timeout=ms)
    text = written.first.inner_text()
    seen["reported_bytes"] = int(re.search(r"\((\d+) bytes\)", text).group(1))
    seen["disk_bytes"] = _dir_bytes(nb_dir / "recording.zarr")
    _screenshot(page, out / "studio-generate.png", seen)


def _screenshot(page, path: Path, seen: dict) -> None:
    """A full-page screenshot of the studio as it is now, listed in ``seen["screenshots"]``."""
    page.screenshot(path=str(path), full_page=True)
    seen["screenshots"].append(path)


if __name__ == "__main__":
    res = run(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
    print(res)
