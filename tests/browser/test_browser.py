"""The studio served by Voila and driven in headless Chromium, as a user would.

One browser session (module fixture) runs the whole walk; each test checks one thing it saw.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import studio_smoke

pytestmark = [
    pytest.mark.slow,  # a Voila server and a headless browser: minutes
    pytest.mark.skipif(not (os.path.exists(studio_smoke.CHROMIUM) or shutil.which("chromium")),
                       reason=f"no Chromium at {studio_smoke.CHROMIUM}"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright"),
    pytest.mark.skipif(importlib.util.find_spec("voila") is None, reason="no voila"),
]


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    return studio_smoke.run(tmp_path_factory.mktemp("browser"), timeout_s=240)


def test_studio_renders_its_three_panels_and_a_preview_image(walk):
    assert walk["preview_ok"]
    assert walk["panels"] == ["Anatomy", "Activity", "Generate"]


def test_dragging_a_panel_1_slider_changes_the_preview(walk):
    before, after = walk["magnification"]
    assert before != after
    assert walk["preview_changed"]


def test_quiet_to_active_shows_more_spike_ticks(walk):
    assert 0 < walk["ticks"]["quiet"] < walk["ticks"]["active"]


def test_generate_writes_a_zarr_and_reports_its_size(walk):
    assert walk["reported_bytes"] == walk["disk_bytes"] > 0
    assert all(p.stat().st_size > 0 for p in walk["screenshots"])
