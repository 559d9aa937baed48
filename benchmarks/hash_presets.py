"""Print a SHA-256 of every array of three presets (small windows), to prove "same bytes".

Run before and after a change that must not alter the data:

    python benchmarks/hash_presets.py > before.txt   # on the old tree
    python benchmarks/hash_presets.py | diff before.txt -

tests/test_bytes.py pins the same digests, so a change of bytes is a conscious one (bump
``RENDER_ALGORITHM`` and update the pinned digests there).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

import minisim
from minisim import presets

#: Three scope presets, cut to 64 x 64 px and 1.5 s (every effect of the preset stays on).
SMALL = {"sensor.width_px": 64, "sensor.height_px": 64, "recording.duration_s": 1.5}
PRESETS = ("generic_1p", "miniscope_v4_ca1", "miniscope_v4_cortex_l23")


def digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return hashlib.sha256(a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()).hexdigest()[:16]


def preset_digests(name: str) -> dict[str, str]:
    spec = presets.scope(name).with_updates(SMALL)
    ds = minisim.simulate(spec).dataset
    return {var: digest(ds[var].values) for var in sorted(ds.data_vars)}


if __name__ == "__main__":
    for name in PRESETS:
        for var, h in preset_digests(name).items():
            sys.stdout.write(f"{name} {var} {h}\n")
