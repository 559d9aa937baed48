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

This module sits at the end of the flow (spec <- ... <- recording <- sweep); it never touches
the physics.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .spec import Spec, field_bounds, field_info

MANIFEST_NAME = "manifest.csv"
#: Name of the dask-jobqueue configuration picked up beside a sweep file.
JOBQUEUE_CONFIG_NAME = "jobqueue.yaml"
_FIXED_COLUMNS = ("hash", "store", "seed", "status", "mode", "size_bytes", "seconds", "error")


class SweepError(ValueError):
    """The sweep file is invalid (unknown key or Spec path, value out of range, clashing points)."""


# --------------------------------------------------------------------------- the sweep file
class SweepFile(BaseModel):
    """The sweep file's model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    base: str | dict[str, Any] = Field(
        "generic_1p", description="preset name, path to a spec.json (relative to the sweep file) "
                                  "or an inline Spec mapping")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides for every recording")
    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="dotted Spec path -> values (Cartesian product)")
    seeds: list[int] | None = Field(None, description="replicate recording.seed values")
    output: str = Field("sweep", description="folder of stores, relative to the sweep file")
    chunks: dict[str, int] | None = Field(
        None, description="movie blocks, e.g. {frame: 64, height: 256, width: 256}; never changes bytes")


@dataclass
class Point:
    """One recording of a sweep: its swept values, seed, Spec and store name."""

    params: dict[str, Any]
    seed: int
    spec: Spec
    hash: str = field(init=False)

    def __post_init__(self):
        self.hash = spec_hash(self.spec)

    @property
    def store_name(self) -> str:
        return f"rec-{self.hash}.zarr"


@dataclass
class Sweep:
    """A validated sweep: every recording's Spec, and where the stores go."""

    points: list[Point]
    output: Path
    grid_paths: list[str]
    chunks: dict[str, int] | None = None
    root: Path = Path(".")

    def __len__(self) -> int:
        return len(self.points)


def spec_hash(spec: Spec) -> str:
    """Stable name of a Spec: the first 16 hex digits of sha256 of its JSON text."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SweepError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, "
                             f"column {e.colno}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SweepError(f"{path} is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file must be a mapping with keys {list(SweepFile.model_fields)}")
    return data


def _base_spec(base: str | dict[str, Any], root: Path) -> Spec:
    from . import presets

    if isinstance(base, dict):
        try:
            return Spec.model_validate(base)
        except ValidationError as e:
            raise SweepError(f"sweep base (inline Spec) is invalid: {e}") from None
    if base in presets.names():
        return presets.scope(base)
    path = (root / base) if not Path(base).is_absolute() else Path(base)
    if not path.is_file():
        raise SweepError(f"sweep base {base!r} is neither a preset ({presets.names()}) nor a spec file "
                         f"(looked for {path})")
    try:
        return Spec.model_validate_json(path.read_bytes())
    except ValidationError as e:
        # name the fields and what is wrong, never the file's text (it may be any file)
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
                             for err in e.errors(include_input=False, include_url=False)[:5])
        raise SweepError(f"sweep base {base!r} ({path}) is not a valid Spec JSON file: {problems}") from None


def _allowed_range(dotted: str) -> str:
    """What the field at ``dotted`` accepts, e.g. ``float > 0.0 and <= 1000.0``."""
    try:
        info, bounds = field_info(dotted), field_bounds(dotted)
    except KeyError:  # an error's location inside a list or a section-wide check
        return "see minisim.Spec"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    text = " and ".join(f"{symbols[k]} {v}" for k, v in bounds.items())
    kind = getattr(info.annotation, "__name__", str(info.annotation))
    return f"{kind} {text}" if text else kind


def _spec_for(base: Spec, updates: dict[str, Any], where: str) -> Spec:
    try:
        return base.with_updates(updates)
    except KeyError as e:
        raise SweepError(f"{where}: {e.args[0]}") from None
    except ValidationError as e:
        lines = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"])
            value = updates.get(path, err.get("input"))
            lines.append(f"{path}={value!r}: {err['msg']} (allowed: {_allowed_range(path)})")
        raise SweepError(f"{where}: " + "; ".join(lines)) from None


#: Grids with at least this many points show a progress bar while they are validated.
PROGRESS_POINTS = 500


def load_sweep(sweep: str | Path | dict[str, Any] | SweepFile, root: str | Path | None = None,
               progress: bool = True) -> Sweep:
    """Read and validate a sweep file (or mapping): every grid point's Spec is built here.

    Raises :class:`SweepError` naming the path, the value and the allowed range for the first
    invalid point, before any work starts. A grid of :data:`PROGRESS_POINTS` points or more shows
    a progress bar (on stderr) while it is validated, unless ``progress=False``.
    """
    if isinstance(sweep, (str, Path)):
        path = Path(sweep)
        if not path.is_file():
            raise FileNotFoundError(f"no sweep file at {path}")
        data, root = _read_mapping(path), path.resolve().parent if root is None else Path(root)
    else:
        data = sweep.model_dump() if isinstance(sweep, SweepFile) else dict(sweep)
        root = Path(root) if root is not None else Path.cwd()
    try:
        sf = SweepFile.model_validate(data)
    except ValidationError as e:
        raise SweepError(f"invalid sweep file: {e}") from None
    for p, values in sf.grid.items():
        if not values:
            raise SweepError(f"grid[{p!r}] has no values")
    if sf.seeds is not None and "recording.seed" in {**sf.grid, **sf.set}:
        raise SweepError("give replicate seeds either as `seeds` or as recording.seed in grid/set, not both")
    base = _spec_for(_base_spec(sf.base, root), sf.set, "sweep `set`")
    grid_paths = list(sf.grid)
    points, seen = [], {}
    n_points = math.prod(len(v) for v in sf.grid.values()) * (len(sf.seeds) if sf.seeds else 1)
    bar = None
    if progress and n_points >= PROGRESS_POINTS:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_points, unit="point", desc="validating sweep grid", file=sys.stderr)
    for values in itertools.product(*sf.grid.values()):
        params = dict(zip(grid_paths, values))
        for seed in sf.seeds if sf.seeds is not None else [None]:
            updates = dict(params) if seed is None else {**params, "recording.seed": seed}
            where = "sweep grid point " + (", ".join(f"{k}={v!r}" for k, v in updates.items()) or "(base)")
            spec = _spec_for(base, updates, where)
            pt = Point(params, spec.recording.seed, spec)
            if pt.hash in seen:
                raise SweepError(f"{where} gives the same Spec as {seen[pt.hash]}; remove the duplicate")
            seen[pt.hash] = where
            points.append(pt)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if sf.chunks is not None:
        from .render import normalize_chunks

        try:
            normalize_chunks(base, sf.chunks)
        except ValueError as e:
            raise SweepError(f"sweep `chunks`: {e}") from None
    output = Path(sf.output) if Path(sf.output).is_absolute() else root / sf.output
    if output.exists() and not output.is_dir():
        raise SweepError(f"sweep output {output} exists and is not a folder")
    return Sweep(points, output, grid_paths, sf.chunks, root)


# --------------------------------------------------------------------------- manifest
def _cell(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def write_manifest(folder: Path, rows: list[dict[str, Any]], params: list[str]) -> Path:
    """Atomically (re)write ``manifest.csv``: one row per recording."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    tmp = folder / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    columns = ["hash", "store", *params, *_FIXED_COLUMNS[2:]]
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k, "")) for k in columns})
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | Path):
    """The manifest of a sweep folder as a pandas DataFrame (swept values as JSON text)."""
    import pandas as pd

    return pd.read_csv(Path(folder) / MANIFEST_NAME, dtype=str, keep_default_na=False)


def _store_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


# --------------------------------------------------------------------------- cluster
def jobqueue_cluster(kind: str, config: str | Path | None = None, **kwargs):
    """A dask-jobqueue ``SLURMCluster``/``PBSCluster`` from dask config (plus ``config``, a
    jobqueue.yaml such as ``cluster/jobqueue.yaml``); ``kwargs`` override single settings."""
    import yaml

    if kind not in ("slurm", "pbs"):
        raise ValueError(f"jobqueue kind must be 'slurm' or 'pbs', got {kind!r}")
    from dask_jobqueue import PBSCluster, SLURMCluster

    cls = SLURMCluster if kind == "slurm" else PBSCluster
    if config is not None:
        # as keyword arguments: dask-jobqueue reads its config again long after construction
        section = ((yaml.safe_load(Path(config).read_text()) or {}).get("jobqueue") or {}).get(kind) or {}
        renamed = {"name": "job_name"}
        kwargs = {renamed.get(k, k.replace("-", "_")): v for k, v in section.items() if v is not None} | kwargs
    return cls(**kwargs)


#: dask config that keeps glibc's adaptive malloc thresholds in distributed's worker processes.
#: The nanny otherwise sets ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's adaptive
#: mmap threshold: each large temporary of a render block is then a fresh, page-faulted mmap.
#: Measured here (608 x 608 px, 400 frames, 2 workers x 1 thread): 15.3 s with it, 9.2 s without.
#: ``with dask.config.set(WORKER_MALLOC_CONFIG): LocalCluster(...)``; ``connect`` uses it for the
#: LocalCluster it starts. Workers of a jobqueue cluster read their own dask config on the compute
#: nodes (see cluster/README.md). A value of None unsets the variable (distributed >= 2023.1).
WORKER_MALLOC_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextlib.contextmanager
def connect(scheduler: str = "local", workers: int | None = None, client=None,
            root: Path | None = None) -> Iterator[tuple[Any, int]]:
    """A distributed Client for ``scheduler`` and the number of workers it is meant to have."""
    from distributed import Client

    if client is not None:
        yield client, max(1, len(client.scheduler_info()["workers"]))
        return
    if scheduler == "local":
        import dask
        from distributed import LocalCluster

        n = workers or 2
        with dask.config.set(WORKER_MALLOC_CONFIG), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                             dashboard_address=":0") as cluster, Client(cluster) as c:
            yield c, n
        return
    if scheduler in ("slurm", "pbs"):
        n = workers or 2
        config = root / JOBQUEUE_CONFIG_NAME if root is not None else None
        config = config if config is not None and config.is_file() else None
        with jobqueue_cluster(scheduler, config) as cluster, Client(cluster) as c:
            cluster.scale(jobs=n)
            yield c, n
        return
    if "://" in scheduler or ":" in scheduler:
        with Client(scheduler) as c:
            yield c, max(1, len(c.scheduler_info()["workers"]), workers or 0)
        return
    raise ValueError(f"scheduler must be 'local', 'slurm', 'pbs' or a scheduler address, got {scheduler!r}")


# --------------------------------------------------------------------------- run
def _make_one(point: Point, store: Path, client, chunks) -> None:
    """Spread one recording's chunks over the cluster (its scene is built here and by each worker)."""
    from .recording import simulate

    if store.exists() and not store.is_dir():
        raise FileExistsError(f"{store} exists and is not a zarr store; move it away and rerun")
    rec = simulate(point.spec, chunks=chunks)
    rec.save(store, overwrite=store.exists(), scheduler=client)


def _save_whole(spec_json: str, store: str, chunks) -> int:
    """Worker task: render one whole recording here, chunk by chunk (flat memory), into ``store``.

    Runs on the synchronous scheduler inside the worker, so it holds one block at a time and uses
    one of the worker's threads. A rerun (e.g. after the worker running it died) starts the
    store again from scratch; the bytes never depend on where or how often it ran.
    """
    from .recording import simulate

    path = Path(store)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a zarr store; move it away and rerun")
    simulate(Spec.model_validate_json(spec_json), chunks=chunks).save(
        path, overwrite=path.exists(), scheduler="sync")
    return _store_size(path)


def movie_mb(spec: Spec) -> float:
    """Size of a Spec's uint16 movie in MB (10^6 bytes)."""
    return spec.recording.n_frames * spec.sensor.height_px * spec.sensor.width_px * 2 / 1e6


#: Recordings whose movie is at most this many MB run whole on one worker (see ``run``).
WHOLE_BELOW_MB = 256.0


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
    from .recording import is_complete

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
            _render_all(todo, out, c, sw.chunks, in_flight, min(in_flight, n_workers), whole_below_mb,
                        lambda: write_manifest(out, rows, sw.grid_paths), say)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    say(f"minisim sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"({out / MANIFEST_NAME})")
    return read_manifest(out)


def _render_all(todo, out: Path, client, chunks, in_flight: int, spread_in_flight: int,
                whole_below_mb: float, save_manifest, say) -> None:
    lock = threading.Lock()
    # a spread recording's scene and ground truth live in this process: at most one per worker
    spread_slots = threading.Semaphore(max(1, spread_in_flight))

    def job(pt: Point, row: dict) -> None:
        store = out / pt.store_name
        t0 = time.perf_counter()
        try:
            if movie_mb(pt.spec) <= whole_below_mb:
                row["mode"] = "whole"
                fut = client.submit(_save_whole, pt.spec.model_dump_json(), str(store.resolve()), chunks,
                                    key=f"minisim-sweep-{pt.hash}-{time.time_ns()}", pure=False)
                fut.result()
            else:
                row["mode"] = "spread"
                with spread_slots:
                    _make_one(pt, store, client, chunks)
            status, error = "done", ""
        except Exception as e:  # noqa: BLE001 - one failing recording must not stop the rest
            status, error = "failed", f"{type(e).__name__}: {e}"
        with lock:
            row.update(status=status, error=error, seconds=round(time.perf_counter() - t0, 3),
                       size_bytes=_store_size(store) if status == "done" else "")

    n, done = len(todo), 0
    with ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="minisim-sweep") as pool:
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


# --------------------------------------------------------------------------- open
def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _fill_for(dtype) -> Any:
    import numpy as np

    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind == "i":
        return -1
    if dtype.kind == "u":
        return 0
    return None


def open_sweep(folder: str | Path, *, include_spec: bool = True):
    """Every complete store of a sweep folder, lazily, as one Dataset along ``recording``.

    Each recording's ``unit_id`` dim becomes a positional ``unit`` dim (its keyed ids stay in the
    ``unit_id`` coordinate on (recording, unit)); recordings are outer-joined on ``unit``,
    ``frame``, ``spike``, ``height`` and ``width``, padding the shorter ones: float -> NaN,
    bool -> False, signed int -> -1, unsigned int (``movie``, ``S``) -> 0. Coordinates on
    ``recording``: ``hash``, ``seed``, every swept path (from ``manifest.csv``; without one, every
    Spec field that differs), ``n_frames``, ``n_units``, ``store`` and (``include_spec``) ``spec``.
    Nothing of the movies is read: variables stay dask-backed. Incomplete stores are skipped
    with a warning.

    Examples
    --------
    ```python
    import minisim
    ds = minisim.open_sweep("cluster/ca1-sweep")
    mean_frame = ds.movie.mean("frame")                      # lazy, one per recording
    ds.detectable.sum("unit").groupby("cells.density_per_mm3").mean().compute()
    ```
    """
    import numpy as np
    import xarray as xr

    from .recording import Recording, is_complete

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no sweep folder at {folder}")
    params: list[str] | None = None
    order: dict[str, int] = {}
    if (folder / MANIFEST_NAME).is_file():
        manifest = read_manifest(folder)
        params = [c for c in manifest.columns if c not in _FIXED_COLUMNS]
        order = {name: i for i, name in enumerate(manifest["store"])}
    # in the manifest's (grid) order; stores it does not list come last, by name
    stores = sorted(folder.glob("rec-*.zarr"), key=lambda p: (order.get(p.name, len(order)), p.name))
    complete = [p for p in stores if is_complete(p)]
    if len(complete) < len(stores):
        warnings.warn(f"open_sweep: skipping {len(stores) - len(complete)} incomplete store(s) in {folder}; "
                      "rerun the sweep to finish them", stacklevel=2)
    if not complete:
        raise FileNotFoundError(f"no complete recording stores (rec-*.zarr) in {folder}")
    recs = [Recording.load(p) for p in complete]
    flat = [_leaves(json.loads(r.spec.model_dump_json())) for r in recs]
    if params is None:
        params = sorted(k for k in flat[0] if k != "recording.seed"
                        and len({json.dumps(f.get(k)) for f in flat}) > 1)
    datasets = []
    for r, p in zip(recs, complete):
        ds = r.dataset
        ds = ds.assign_coords(unit=("unit_id", np.arange(ds.sizes["unit_id"]))).swap_dims({"unit_id": "unit"})
        if "spike" in ds.sizes:  # stores may carry a spike table (docs/segments.md)
            ds = ds.assign_coords(spike=np.arange(ds.sizes["spike"]))
        if "frame" not in ds.indexes:  # stores keep no frame index (it grows with the length):
            ds = ds.assign_coords(frame=np.arange(ds.sizes["frame"]))  # outer-join needs one
        ds.attrs = {}
        datasets.append(ds)
    fill = {name: _fill_for(v.dtype) for ds in datasets for name, v in ds.variables.items()
            if _fill_for(v.dtype) is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = xr.concat(datasets, dim="recording", data_vars="all", coords="different", compat="equals",
                        join="outer", fill_value=fill, combine_attrs="drop")
    rec_coords: dict[str, Any] = {
        "hash": ("recording", np.array([p.name[4:-5] for p in complete])),
        "seed": ("recording", np.array([r.spec.recording.seed for r in recs], np.int64)),
    }
    for name in params:
        vals = [f.get(name) for f in flat]
        arr = np.array(vals) if all(isinstance(v, (int, float, bool, str)) for v in vals) \
            else np.array([json.dumps(v) for v in vals])
        rec_coords[name] = ("recording", arr)
    rec_coords["n_frames"] = ("recording", np.array([d.sizes["frame"] for d in datasets], np.int64))
    rec_coords["n_units"] = ("recording", np.array([d.sizes["unit"] for d in datasets], np.int64))
    rec_coords["store"] = ("recording", np.array([str(p) for p in complete]))
    if include_spec:
        rec_coords["spec"] = ("recording", np.array([r.spec.model_dump_json() for r in recs]))
    out = out.assign_coords(recording=np.arange(len(recs)), **rec_coords)
    out.attrs = {"sweep_folder": str(folder), "padding": "outer join; float NaN, bool False, "
                 "signed int -1, unsigned int 0 (see n_frames, n_units)"}
    return out
