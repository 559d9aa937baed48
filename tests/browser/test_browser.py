"""One browser smoke test: the studio served by Voila renders in headless Chromium."""

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
    pytest.mark.skipif(not (os.path.exists(studio_smoke.CHROMIUM) or shutil.which("chromium")),
                       reason=f"no Chromium at {studio_smoke.CHROMIUM}"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright"),
    pytest.mark.skipif(importlib.util.find_spec("voila") is None, reason="no voila"),
]


def test_studio_renders_in_chromium():
    png = studio_smoke.run(timeout_s=80)
    assert png.exists() and png.stat().st_size > 10_000
