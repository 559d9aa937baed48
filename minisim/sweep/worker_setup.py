"""Worker preload: a sweep's workers get minisim ready before the first recording arrives.

``LocalCluster(preload=["minisim.sweep.worker_setup"])`` (what ``minisim.sweep.run`` starts) and,
on SLURM/PBS, ``--preload minisim.sweep.worker_setup`` in the workers' extra arguments (see
docs/sweeps.md) run :func:`dask_setup` in every worker as it starts: it imports minisim and the
libraries it renders with, and renders a tiny recording once on the synchronous scheduler, so
that numba's compiled kernels are loaded from its cache (or compiled) then, and saves it once
into a temporary folder (zarr and its codecs imported). A fresh worker process took ~2-3 s for
this on its first task (the zarr part ~0.4 s of it); without the preload a recording spread over
the cluster waited for it on every worker, inside its own time. Nothing here changes any bytes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def warm() -> float:
    """Import minisim, render a 16 x 16 px, 4-frame recording with every effect and its ground
    truth, and save it into a temporary folder that is removed after (synchronous scheduler);
    returns the seconds it took."""
    t0 = time.perf_counter()
    import dask

    from .. import presets
    from ..recording import simulate

    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.height_px": 16, "sensor.width_px": 16, "recording.fps": 20.0, "recording.duration_s": 0.2})
    with dask.config.set(scheduler="sync"):
        simulate(spec).dataset.load()
    # saved once, into a folder of its own: the first task of a save on this worker then finds
    # zarr, its codecs and the store's code loaded
    with tempfile.TemporaryDirectory(prefix="minisim-warm-") as tmp:
        simulate(spec).save(Path(tmp) / "warm.zarr", scheduler="sync")
    return time.perf_counter() - t0


def dask_setup(worker) -> None:
    """distributed calls this in each worker that preloads this module."""
    warm()
