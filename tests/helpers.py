"""Shared test helpers: small, fast Specs and byte digests.

Importable as ``helpers`` because ``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on
the path (``from helpers import small_spec``); fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from minisim import Spec

#: Every optical confound, motion and sensor noise switched off (dotted Spec updates).
ALL_EFFECTS_OFF = {
    "optics.defocus_enabled": False,
    "optics.field_curvature": {"enabled": False},
    "tissue.scatter": {"enabled": False},
    "tissue.attenuation": {"enabled": False},
    "tissue.neuropil": {"enabled": False},
    "vasculature.enabled": False,
    "illumination.falloff": {"enabled": False},
    "illumination.vignette": {"enabled": False},
    "illumination.glow": {"enabled": False},
    "illumination.bleaching": {"enabled": False},
    "motion.enabled": False,
    "sensor.noise": False,
}


def small_spec(**updates) -> Spec:
    """A 40 x 48 px, 1 s, 10 fps recording with every effect of the defaults on."""
    base = Spec(
        sensor={"width_px": 48, "height_px": 40, "noise_tile_px": 16},
        recording={"duration_s": 1.0, "fps": 10.0, "seed": 11},
    )
    return base.with_updates(updates) if updates else base


def digest(a) -> str:
    """sha256 of an array's bytes, dtype and shape."""
    a = np.ascontiguousarray(np.asarray(a))
    return hashlib.sha256(a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()).hexdigest()


def dataset_digests(ds) -> dict[str, str]:
    """A hash of every data variable of a Dataset (computing the lazy ones)."""
    return {name: digest(ds[name].values) for name in sorted(ds.data_vars)}
