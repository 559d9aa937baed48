"""Dataset sweeps: many recordings of one Spec family, rendered on a dask cluster, resumable.

A sweep file (YAML or JSON) names a ``base`` Spec, overrides ``set`` for every recording, a
``grid`` of dotted Spec paths whose Cartesian product makes the recordings, replicate ``seeds``
and an ``output`` folder::

    base: generic_1p                 # a preset name, a spec.json (relative to this file) or a mapping
    set: {recording.duration_s: 30}
    grid: {cells.density_per_mm3: [20000, 45000], motion.enabled: [false, true]}
    seeds: [0, 1, 2]
    output: ca1-sweep                # relative to this file

Every recording is a zarr store ``rec-<hash>.zarr`` named by a stable hash of its Spec JSON, so a
store's name says exactly what is in it and a rerun finds it again. ``run`` validates every grid
point before any work starts, skips complete stores, overwrites incomplete ones, records each
recording (done / failed / skipped) in ``manifest.csv`` as it goes, and keeps going when one
recording fails. Whole recordings and their chunks are both spread over the cluster: a bounded
number of recordings (``max_in_flight``) are in flight at once, each saved as its own dask graph
on the shared client. ``open_sweep`` opens the finished stores lazily as one Dataset along a
``recording`` dim.

The package, one concern per module (each name below is importable from ``minisim.sweep``):

* :mod:`~minisim.sweep.plan` -- the sweep file, its grid and validation: ``load_sweep``,
  ``Sweep``, ``Point``, ``SweepFile``, ``SweepError``, ``spec_hash``;
* :mod:`~minisim.sweep.cluster` -- where it runs: ``connect`` (LocalCluster, an address,
  SLURM/PBS), ``jobqueue_cluster``, ``WORKER_MALLOC_CONFIG``, ``WORKER_PRELOAD`` (the module
  its workers preload, :mod:`~minisim.sweep.worker_setup`: minisim loaded as a worker starts);
* :mod:`~minisim.sweep.runner` -- rendering, resuming, failures: ``run``, ``WHOLE_BELOW_MB``,
  ``movie_mb``;
* :mod:`~minisim.sweep.results` -- what it leaves: ``manifest.csv`` (``write_manifest``,
  ``read_manifest``) and ``open_sweep``.

The sweep sits at the end of the flow (spec <- ... <- recording <- sweep); it never touches
the physics.
"""

from __future__ import annotations

from .cluster import (
    JOBQUEUE_CONFIG_NAME,
    WORKER_MALLOC_CONFIG,
    WORKER_PRELOAD,
    connect,
    jobqueue_cluster,
)
from .plan import PROGRESS_POINTS, Point, Sweep, SweepError, SweepFile, load_sweep, spec_hash
from .results import MANIFEST_NAME, open_sweep, read_manifest, write_manifest
from .runner import WHOLE_BELOW_MB, movie_mb, run

__all__ = [
    "JOBQUEUE_CONFIG_NAME", "MANIFEST_NAME", "PROGRESS_POINTS", "WHOLE_BELOW_MB", "WORKER_MALLOC_CONFIG",
    "WORKER_PRELOAD", "Point", "Sweep", "SweepError", "SweepFile", "connect", "jobqueue_cluster", "load_sweep", "movie_mb",
    "open_sweep", "read_manifest", "run", "spec_hash", "write_manifest",
]
