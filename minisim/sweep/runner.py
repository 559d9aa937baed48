"""Running a sweep: render every recording still to do on the cluster, resumably.

:func:`run` skips complete stores, writes the manifest before any work and after each recording,
and keeps going when one recording fails. Each recording goes to the cluster *whole* (one task:
a worker renders it chunk by chunk into its store) or *spread* (its chunk graph goes to every
worker), by the size of its movie; the bytes are the same either way.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..spec import Spec
from .cluster import connect
from .plan import Point, Sweep, load_sweep
from .results import MANIFEST_NAME, read_manifest, write_manifest

#: Recordings whose movie is at most this many MB run whole on one worker (see ``run``).
WHOLE_BELOW_MB = 256.0


#: How long a recording of a sweep waits for its store's lock held by another process (a
#: worker killed a moment ago, still exiting) before it is reported failed.
LOCK_WAIT_S = 30.0


def _saving(save: Callable[[], Any], *, wait_s: float | None = None) -> Any:
    """``save()``, tried again while its target is locked, for ``wait_s`` (:data:`LOCK_WAIT_S`).

    A rerun of a sweep killed a moment ago, or the retry of a task whose worker was killed, can
    find the store's lock still held by a writer that is exiting (a lock is taken over only
    once its holder no longer runs); a live writer of the same store still fails it, after the
    wait, with the holder named.
    """
    from .._safe_io import TargetLockedError

    deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            return save()
        except TargetLockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def movie_mb(spec: Spec) -> float:
    """Size of a Spec's uint16 movie in MB (10^6 bytes)."""
    return spec.recording.n_frames * spec.sensor.height_px * spec.sensor.width_px * 2 / 1e6


def _store_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _make_one(point: Point, store: Path, client, chunks) -> None:
    """Spread one recording's chunks over the cluster (its scene is built here and by each worker)."""
    from ..recording import simulate

    if store.exists() and not store.is_dir():
        raise FileExistsError(f"{store} exists and is not a zarr store; move it away and rerun")
    rec = simulate(point.spec, chunks=chunks)
    _saving(lambda: rec._write(store, overwrite=store.exists(), scheduler=client))


def _save_whole(spec_json: str, store: str, chunks) -> int:
    """Worker task: render one whole recording here, chunk by chunk (flat memory), into ``store``.

    Runs on the synchronous scheduler inside the worker, so it holds one block at a time and uses
    one of the worker's threads. A rerun (e.g. after the worker running it died) starts the
    store again from scratch; the bytes never depend on where or how often it ran.
    """
    from ..recording import simulate

    path = Path(store)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a zarr store; move it away and rerun")
    rec = simulate(Spec.model_validate_json(spec_json), chunks=chunks)
    _saving(lambda: rec._write(path, overwrite=path.exists(), scheduler="sync"))
    return _store_size(path)


def run(sweep: str | Path | dict[str, Any] | Sweep, *, scheduler: str = "local",
        workers: int | None = None, progress: bool = True, max_in_flight: int | None = None,
        whole_below_mb: float = WHOLE_BELOW_MB, client=None):
    """Render every recording of ``sweep`` into its output folder; return the manifest.

    Parameters
    ----------
    sweep
        A sweep file path (YAML/JSON), a mapping with the same keys, or a :class:`Sweep`.
    scheduler
        ``"local"`` (a LocalCluster of ``workers`` processes, 1 thread each), a scheduler
        address, ``"slurm"`` or ``"pbs"`` (dask-jobqueue, ``workers`` jobs, configured from dask
        config and a ``jobqueue.yaml`` beside the sweep file). Ignored when ``client`` is given.
    workers
        Number of workers (jobs on SLURM/PBS); default 2.
    max_in_flight
        Recordings rendered at once (default: the cluster's worker threads). Bounds memory:
        a whole recording holds one scene on the worker thread that renders it; of these, at
        most one spread recording per worker is in flight, since each holds its scene and
        ground truth in this process.
    whole_below_mb
        A recording whose movie is at most this many MB is one task: a worker renders it whole,
        chunk by chunk, into its store (no scene built in this process, no chunks shipped). A
        larger one is spread: its chunks go to every worker. The rule only decides where work
        runs; the bytes are the same either way. ``0`` spreads every recording.
    client
        An existing ``distributed.Client`` to use (not closed).

    Returns
    -------
    pandas.DataFrame
        The manifest: one row per recording (hash, store, swept values, seed, status
        done/failed/skipped, size_bytes, seconds, error), also in ``output/manifest.csv``.

    Examples
    --------
    ```python
    import minisim.sweep
    manifest = minisim.sweep.run("cluster/sweep-ca1.yaml", workers=2)
    ds = minisim.open_sweep("cluster/ca1-sweep")
    ```
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r} must be a whole number >= 1 (or None: 2 on a "
                         "local cluster)")
    sw = sweep if isinstance(sweep, Sweep) else load_sweep(sweep, progress=progress)
    out = sw.output
    out.mkdir(parents=True, exist_ok=True)
    old = {}
    if (out / MANIFEST_NAME).is_file():
        with contextlib.suppress(Exception):
            old = {r["hash"]: r for r in read_manifest(out).to_dict("records")}
    from ..recording import is_complete

    rows, todo = [], []
    for pt in sw.points:
        store = out / pt.store_name
        row = {"hash": pt.hash, "store": pt.store_name, **pt.params, "seed": pt.seed,
               "status": "pending", "mode": "", "size_bytes": "", "seconds": "", "error": ""}
        if is_complete(store):
            prev = old.get(pt.hash, {})
            row.update(status="skipped", size_bytes=_store_size(store), seconds=prev.get("seconds", ""))
        else:
            todo.append((pt, row))
        rows.append(row)
    write_manifest(out, rows, sw.grid_paths)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"minisim sweep: {len(sw)} recordings, {len(sw) - len(todo)} already complete, "
        f"{len(todo)} to render into {out}")
    if todo:
        with connect(scheduler, workers, client, sw.root) as (c, n_workers):
            if progress and client is None and getattr(c, "dashboard_link", None):
                say(f"  dask dashboard: {c.dashboard_link}")
            threads = sum(w.get("nthreads", 1) for w in c.scheduler_info()["workers"].values())
            in_flight = max_in_flight or max(n_workers, threads)
            how = _Rendering(out=out, client=c, chunks=sw.chunks, in_flight=in_flight,
                             spread_in_flight=min(in_flight, n_workers), whole_below_mb=whole_below_mb)
            _render_all(todo, how, save_manifest=lambda: write_manifest(out, rows, sw.grid_paths),
                        say=say)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    say(f"minisim sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"({out / MANIFEST_NAME})")
    return read_manifest(out)


@dataclass(frozen=True)
class _Rendering:
    """How :func:`_render_all` puts a sweep's recordings on the cluster (set by :func:`run`)."""

    #: the sweep's output folder: recording ``pt`` goes to ``out / pt.store_name``
    out: Path
    #: the distributed Client every recording is rendered through
    client: Any
    #: movie blocks for ``simulate`` (None: its default); never changes the bytes
    chunks: dict[str, int] | None
    #: recordings in flight at once (threads of this process waiting on the cluster)
    in_flight: int
    #: of these, spread recordings at once: each holds its scene and ground truth here
    spread_in_flight: int
    #: a movie of at most this many MB is one whole task on one worker; a larger one is spread
    whole_below_mb: float


def _render_all(todo: list[tuple[Point, dict[str, Any]]], how: _Rendering, *,
                save_manifest: Callable[[], Any], say: Callable[[str], None]) -> None:
    """Render every ``(point, row)`` of ``todo`` on the cluster, ``how.in_flight`` at a time.

    Each recording is rendered from its own thread of this process: *whole* (a worker task,
    :func:`_save_whole`) when its movie is at most ``how.whole_below_mb`` MB, else *spread*
    (:func:`_make_one`, at most ``how.spread_in_flight`` at once). Its manifest ``row`` is
    updated in place (mode, status done/failed, error, seconds, size_bytes); a failure is
    recorded, never raised, so the others go on. ``save_manifest()`` runs (under a lock) after
    each recording finishes and ``say`` reports it.
    """
    lock = threading.Lock()
    # a spread recording's scene and ground truth live in this process: at most one per worker
    spread_slots = threading.Semaphore(max(1, how.spread_in_flight))

    def job(pt: Point, row: dict) -> None:
        store = how.out / pt.store_name
        t0 = time.perf_counter()
        try:
            if movie_mb(pt.spec) <= how.whole_below_mb:
                row["mode"] = "whole"
                fut = how.client.submit(_save_whole, pt.spec.model_dump_json(), str(store.resolve()),
                                        how.chunks, key=f"minisim-sweep-{pt.hash}-{time.time_ns()}",
                                        pure=False)
                fut.result()
            else:
                row["mode"] = "spread"
                with spread_slots:
                    _make_one(pt, store, how.client, how.chunks)
            status, error = "done", ""
        except Exception as e:  # noqa: BLE001 - one failing recording must not stop the rest
            status, error = "failed", f"{type(e).__name__}: {e}"
        with lock:
            row.update(status=status, error=error, seconds=round(time.perf_counter() - t0, 3),
                       size_bytes=_store_size(store) if status == "done" else "")

    n, done = len(todo), 0
    with ThreadPoolExecutor(max(1, how.in_flight), thread_name_prefix="minisim-sweep") as pool:
        pending = {pool.submit(job, pt, row): (pt, row) for pt, row in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                pt, row = pending.pop(fut)
                fut.result()
                done += 1
                with lock:
                    save_manifest()
                extra = f": {row['error']}" if row["status"] == "failed" else ""
                say(f"  [{done}/{n}] {pt.store_name} {row['status']} in {row['seconds']} s{extra}")
