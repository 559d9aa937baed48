"""Recording: the lazy movie and its ground truth as one xarray Dataset, plus its Spec.

``simulate(spec)`` returns at once; nothing of the movie is computed until it is saved,
sliced or exported. ``Recording.save`` computes chunk by chunk straight into a zarr v3 store on
whatever dask scheduler is active; ``Recording.load`` opens it again lazily.

A store is complete only when its root attrs say ``complete: true``; that is written last, after
every chunk. An interrupted save therefore leaves a store that ``load`` refuses as incomplete
(pass ``allow_incomplete=True`` to look at it anyway), never a silently short movie.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import activity, render
from .scene import vessels
from .spec import Spec

#: Layout version of the zarr store; ``load`` refuses newer ones.
FORMAT_VERSION = 1
BG_COMPONENTS = ("neuropil", "glow", "dark")
_UNIT_CHUNK = 32


class IncompleteRecordingError(RuntimeError):
    """The store was not finished (an interrupted save): re-run the save with overwrite=True."""


class RecordingFormatError(RuntimeError):
    """The store was written by a newer minisim (or is not a minisim store)."""


def _versions() -> dict[str, Any]:
    from . import __version__

    return {
        "minisim_version": __version__,
        "format_version": FORMAT_VERSION,
        "render_algorithm": render.RENDER_ALGORITHM,
        "numpy_version": np.__version__,
    }


def _unit_block(spec_json: str, kind: str, block_info=None):
    (u0, u1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    world = render.get_world(spec_json)
    sc = world.scene
    if kind == "planted":
        return sc.planted_dense(slice(u0, u1), (y0, y1, x0, x1))
    fp = sc.footprints_e(slice(u0, u1), (y0, y1, x0, x1))
    if not fp.any():
        return fp  # most blocks: these units' light does not reach this tile
    K = np.float32(world.spec.sensor.gain_adu_per_e)
    return (K * (sc.vignette[y0:y1, x0:x1] * sc.illumination[y0:y1, x0:x1]))[None] * fp


def _unit_array(spec: Spec, n_units: int, kind: str):
    """(unit_id, height, width) footprints, lazily, in blocks of 32 units x the movie's tiles.

    Units are numbered by tissue column, so a block's footprints cover a few tiles and the
    other tiles' chunks are all zero: zarr does not write them, and nothing computes them
    beyond a sparse-column scan.
    """
    import dask.array as da

    H, W = spec.sensor.height_px, spec.sensor.width_px
    tile = render.default_chunks(spec)
    chunks = da.core.normalize_chunks((_UNIT_CHUNK, tile["height"], tile["width"]), (n_units, H, W))
    return da.map_blocks(_unit_block, spec.model_dump_json(), kind, chunks=chunks,
                         dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


def _activity_block(spec_json: str, unit_ids: np.ndarray, n_frames: int, block_info=None):
    """(2, units, frames) float32: dF/F and spike counts of one batch of units.

    Traces are keyed per unit, so a batch gives the values the whole population would; counts
    (at most 255) are exact in float32.
    """
    (_, _), (u0, u1), (_, _) = block_info[None]["array-location"]
    act = activity.simulate_activity(Spec.model_validate_json(spec_json), unit_ids[u0:u1], n_frames)
    return np.stack([act.dff.astype(np.float32, copy=False), act.spikes.astype(np.float32)])


def _lazy_dff_and_spikes(spec: Spec, unit_ids: np.ndarray, n_frames: int):
    """dF/F (float32) and S (uint8), (unit_id, frame), as dask arrays in batches of units.

    Both come from one task per batch, so saving them together simulates each batch once; the
    saving process never holds them for every unit (5 bytes per unit and frame).
    """
    import dask.array as da

    n = len(unit_ids)
    units = da.core.normalize_chunks((render.TRACE_BATCH_UNITS,), (n,))[0]
    both = da.map_blocks(_activity_block, spec.model_dump_json(), np.asarray(unit_ids), n_frames,
                         chunks=((2,), units, (n_frames,)), dtype=np.float32,
                         meta=np.empty((0, 0, 0), np.float32))
    frames = min(_TRACE_CHUNK_FRAMES, max(n_frames, 1))
    return (both[0].rechunk({1: frames}), both[1].astype(np.uint8).rechunk({1: frames}))


def build_dataset(world: render.World, chunks: dict[str, int] | None = None) -> xr.Dataset:
    """The Recording's Dataset: lazy movie, footprints, dF/F and S; C and the small ground truth eager."""
    spec, sc, act = world.spec, world.scene, world.activity
    H, W, T = spec.sensor.height_px, spec.sensor.width_px, world.n_frames
    d, K, fps = spec.pixel_size_um, spec.sensor.gain_adu_per_e, spec.recording.fps
    cells = sc.cells
    n = len(cells)
    m = sc.margin_px
    vi = sc.vignette * sc.illumination
    b = np.stack([
        K * vi * sc.neuropil_e[m : m + H, m : m + W],
        K * sc.vignette * sc.glow_e,
        np.full((H, W), K * spec.sensor.dark_current_e_per_s / fps),
    ]).astype(np.float32)
    f = np.stack([world.f_np, np.ones(T, np.float32), np.ones(T, np.float32)])
    metrics = render.cell_metrics(world)
    spike_unit = np.concatenate(
        [np.full(len(s), u, np.int64) for u, s in zip(cells.unit_id, act.spike_times)]
        or [np.empty(0, np.int64)]
    )
    spike_time = np.concatenate(list(act.spike_times) or [np.empty(0)]).astype(np.float64)
    dff, spikes = _lazy_dff_and_spikes(spec, cells.unit_id, T)
    ys = ((np.arange(H) - (H - 1) / 2) * d).astype(np.float32)
    xs = ((np.arange(W) - (W - 1) / 2) * d).astype(np.float32)
    unit = ("unit_id",)
    ds = xr.Dataset(
        data_vars={
            "movie": (("frame", "height", "width"), render.movie_array(spec, chunks),
                      {"units": "ADU", "long_name": "camera frames"}),
            "A": (("unit_id", "height", "width"), _unit_array(spec, n, "observed"),
                  {"units": "ADU per unit of C", "long_name": "footprint as imaged"}),
            "A_planted": (("unit_id", "height", "width"), _unit_array(spec, n, "planted"),
                          {"units": "fraction of the cell's light", "long_name": "sharp footprint in tissue"}),
            "C": (("unit_id", "frame"), world.C, {"units": "1 (1 = resting, t=0)",
                                                  "long_name": "fluorescence trace incl. bleaching"}),
            "dff": (("unit_id", "frame"), dff, {"units": "dF/F", "long_name": "calcium dF/F before bleaching"}),
            "S": (("unit_id", "frame"), spikes, {"units": "spikes per frame"}),
            "b": (("bg_component", "height", "width"), b, {"units": "ADU per unit of f"}),
            "f": (("bg_component", "frame"), f.astype(np.float32), {"units": "1"}),
            "position": (("unit_id", "axis"),
                         np.column_stack([cells.z_um, cells.y_um, cells.x_um]).astype(np.float32),
                         {"units": "um", "long_name": "cell centre (z below surface, y, x)"}),
            "radius_um": (unit, cells.radius_um.astype(np.float32)),
            "band": (unit, cells.band.astype(np.int16)),
            "detectable": (unit, metrics["detectable"]),
            "in_focus": (unit, metrics["in_focus"]),
            "pnr": (unit, metrics["pnr"], {"long_name": "peak SNR of the realised activity"}),
            "vessel_overlap_fraction": (unit, metrics["vessel_overlap_fraction"]),
            "defocus_um": (unit, metrics["defocus_um"]),
            "psf_sigma_um": (unit, metrics["psf_sigma_um"]),
            "active": (unit, np.asarray(act.active, bool)),
            "rate_hz": (unit, np.asarray(act.rate_hz, np.float32)),
            "spike_unit_id": (("spike",), spike_unit),
            "spike_time_s": (("spike",), spike_time, {"units": "s"}),
            "vessel_mask": (("height", "width"), sc.vessel_mask),
            "vessel_dilation": (("frame",), vessels.dilation(spec, np.arange(T)).astype(np.float32),
                                {"units": "1", "long_name": "fractional vessel dilation (vasomotion); "
                                 "transmission under vessels is scaled by exp(-2 mu_a L dilation)"}),
            "motion": (("frame", "motion_axis"), (world.motion.rigid_um / d).astype(np.float32),
                       {"units": "px", "long_name": "rigid brain displacement (y, x)"}),
        },
        coords={
            "frame": np.arange(T, dtype=np.int64),
            "time_s": ("frame", (np.arange(T) / fps).astype(np.float64)),
            "height": np.arange(H, dtype=np.int64),
            "width": np.arange(W, dtype=np.int64),
            "y_um": ("height", ys),
            "x_um": ("width", xs),
            "unit_id": cells.unit_id.astype(np.int64),
            "axis": np.array(["z", "y", "x"], dtype="<U1"),
            "motion_axis": np.array(["y", "x"], dtype="<U1"),
            "bg_component": np.array(BG_COMPONENTS, dtype="<U8"),
        },
        attrs={
            "spec": spec.model_dump_json(),
            **_versions(),
            "pixel_size_um": d,
            "fps": fps,
            "offset_adu": spec.sensor.offset_adu,
            "complete": False,
        },
    )
    return ds


def simulate(spec: Spec | None = None, chunks: dict[str, int] | None = None) -> Recording:
    """A lazy Recording of ``spec`` (default: ``Spec()``); the movie is not computed.

    ``chunks`` (e.g. ``{"frame": 64, "height": 256, "width": 256}``) sets the dask blocks of
    the movie; it never changes the bytes.

    Examples
    --------
    >>> import minisim
    >>> spec = minisim.Spec(sensor={"width_px": 32, "height_px": 32},
    ...                     recording={"duration_s": 0.5, "seed": 1})
    >>> rec = minisim.simulate(spec)
    >>> rec.dataset.movie.shape
    (10, 32, 32)
    >>> rec.dataset.movie.dtype
    dtype('uint16')
    """
    spec = Spec() if spec is None else spec
    if not isinstance(spec, Spec):
        raise TypeError(f"simulate() needs a minisim.Spec, got {type(spec).__name__}")
    world = render.build_world(spec)
    render.remember_world(world)
    return Recording(build_dataset(world, chunks), spec)


# --------------------------------------------------------------------------- compute helpers
def _client_for(scheduler):
    if scheduler is None:
        try:
            from distributed import default_client

            return default_client()
        except (ImportError, ValueError):
            return None
    if isinstance(scheduler, str) and scheduler in ("threads", "processes", "sync", "synchronous",
                                                    "single-threaded"):
        return None
    if isinstance(scheduler, str):
        from distributed import Client

        return Client(scheduler)
    return scheduler  # a distributed.Client


def compute(*objs, scheduler=None, progress: bool = False):
    """dask.compute on the chosen (or active) scheduler, with an optional progress bar."""
    import dask

    client = _client_for(scheduler)
    if client is not None:
        futures = client.compute(list(objs))
        if progress:
            from distributed import progress as dprogress

            dprogress(futures)
        return tuple(client.gather(futures))
    kw = {"scheduler": scheduler} if scheduler else {}
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return dask.compute(*objs, **kw)
    return dask.compute(*objs, **kw)


class Recording:
    """A (lazy) recording: ``dataset`` (xarray) and the ``spec`` it is a pure function of."""

    def __init__(self, dataset: xr.Dataset, spec: Spec, path: Path | None = None):
        self.dataset = dataset
        self.spec = spec
        self.path = path

    def __repr__(self) -> str:
        ds = self.dataset
        where = f", path={str(self.path)!r}" if self.path else ""
        return (f"<minisim.Recording {ds.sizes['frame']} frames x {ds.sizes['height']} x "
                f"{ds.sizes['width']} px, {ds.sizes['unit_id']} units{where}>")

    @property
    def movie(self) -> xr.DataArray:
        return self.dataset["movie"]

    def summary(self) -> str:
        """A few lines on what this recording holds."""
        ds, s = self.dataset, self.spec
        det = int(ds["detectable"].sum())
        yx = np.abs(ds["position"].values[:, 1:])
        inside = int(((yx[:, 0] <= s.fov_um[0] / 2) & (yx[:, 1] <= s.fov_um[1] / 2)).sum())
        lines = [
            repr(self),
            (f"  field of view {s.fov_um[0]:.0f} x {s.fov_um[1]:.0f} um, "
            f"{s.pixel_size_um:.3f} um/px, {s.recording.fps:g} fps, "
            f"{s.recording.duration_s:g} s, seed {s.recording.seed}"),
            (f"  units: {ds.sizes['unit_id']} ({inside} centred in the field, {det} detectable; "
             f"the rest lie outside and shed light into it), spikes: {ds.sizes['spike']}"),
        ]
        if self.path is not None:
            size = sum(p.stat().st_size for p in Path(self.path).rglob("*") if p.is_file())
            lines.append(f"  store: {self.path} ({size / 1e6:.1f} MB on disk)")
        sat = self.dataset.attrs.get("saturated_pixels")
        if sat is not None:
            lines.append(f"  saturated pixels: {sat}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path, chunks: dict[str, int] | None = None, overwrite: bool = False,
             scheduler=None, progress: bool = False) -> Recording:
        """Compute the recording chunk by chunk into a zarr v3 store at ``path``.

        ``chunks`` re-blocks the movie (dims frame/height/width); the zarr chunks follow the
        dask blocks. Refuses an existing path unless ``overwrite=True``. The store is marked
        complete only after every chunk is written. Returns the saved Recording (lazy).
        """
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        ds = self.dataset
        if chunks:
            c = render.normalize_chunks(self.spec, chunks)
            ds = ds.assign(movie=ds["movie"].chunk({k: c[k] for k in ("frame", "height", "width")}))
        encoding = {
            name: {"chunks": tuple(c[0] for c in var.chunks)}
            for name, var in ds.data_vars.items() if var.chunks is not None
        }
        t0 = time.perf_counter()
        footprints = [n for n in _FOOTPRINTS if n in encoding]
        traces = [n for n in _TRACES if n in ds.data_vars and ds[n].chunks is None]
        write = _encode_labels(ds.drop_vars(footprints + traces)).to_zarr(
            path, mode="w-", compute=False, consolidated=False, zarr_format=3,
            encoding={n: e for n, e in encoding.items() if n not in footprints})
        for n in traces:
            _write_traces(ds[n], path, ds.attrs)
        writes = [_nonzero_chunk_writes(ds[n], path, encoding[n]["chunks"], ds.attrs) for n in footprints]
        compute(write, *writes, scheduler=scheduler, progress=progress)
        # Counted from the written chunks, not alongside the write: computing both from the lazy
        # movie rendered every block twice (400 frames at 608 px: 17.0 s vs 10.7 s).
        import dask.array as da

        top = 2**self.spec.sensor.bit_depth - 1
        (n_sat,) = compute((da.from_zarr(str(path), component="movie") == top).sum(), scheduler=scheduler)
        _mark_complete(path, {"saturated_pixels": int(n_sat),
                              "saturated_fraction": float(n_sat) / max(ds["movie"].size, 1),
                              "write_seconds": round(time.perf_counter() - t0, 3)})
        return Recording.load(path)

    @classmethod
    def load(cls, path: str | Path, allow_incomplete: bool = False) -> Recording:
        """Open a saved recording lazily (dask-backed) with its Spec restored."""
        import zarr

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no recording at {path}")
        try:
            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        except Exception as e:
            raise RecordingFormatError(f"{path} is not a zarr store written by minisim: {e}") from e
        if "format_version" not in attrs or "spec" not in attrs:
            raise RecordingFormatError(f"{path} is not a minisim recording (no format_version/spec)")
        if int(attrs["format_version"]) > FORMAT_VERSION:
            raise RecordingFormatError(
                f"{path} has format_version {attrs['format_version']}, newer than this minisim "
                f"reads ({FORMAT_VERSION}); upgrade minisim to open it"
            )
        if not attrs.get("complete") and not allow_incomplete:
            raise IncompleteRecordingError(
                f"{path} is incomplete: its save was interrupted before every chunk was "
                "written. Re-run the save with overwrite=True (or load(..., allow_incomplete=True) "
                "to inspect what is there)."
            )
        ds = _decode_labels(xr.open_zarr(path, consolidated=False, zarr_format=3))
        return cls(ds, Spec.model_validate_json(attrs["spec"]), path)

    def to_video(self, path: str | Path, **kwargs) -> Path:
        """Export the movie as an AVI (see :func:`minisim.simulate_video` for options)."""
        from .video import recording_to_video

        return recording_to_video(self, path, **kwargs)


_LABEL_COORDS = ("axis", "motion_axis", "bg_component")


#: Footprint arrays: mostly zeros (a block of units lights a few tiles), written sparsely.
_FOOTPRINTS = ("A", "A_planted")


def _store_if_nonzero(block: np.ndarray, target, block_info=None) -> np.ndarray:
    if block.any():
        target[tuple(slice(a, b) for a, b in block_info[0]["array-location"])] = block
    return np.zeros((1,) * block.ndim, np.int8)


def _new_array_like(var: xr.DataArray, path: Path, chunks: tuple[int, ...], attrs: dict,
                    fill_value=None):
    """A zarr array for ``var`` in the store, with the metadata xarray gives it, no data yet."""
    import zarr

    # a dask-backed template, so xarray writes metadata only (its delayed writes are dropped);
    # an append rewrites the root attrs, so they go along unchanged
    meta = xr.Dataset({var.name: var.drop_vars(list(var.coords)).chunk(dict(zip(var.dims, chunks)))},
                      attrs=attrs)
    enc = {"chunks": chunks} if fill_value is None else {"chunks": chunks, "fill_value": fill_value}
    meta.to_zarr(path, mode="a", compute=False, consolidated=False, zarr_format=3,
                 encoding={var.name: enc})
    return zarr.open_array(store=str(path), path=var.name, mode="r+")


def _nonzero_chunk_writes(var: xr.DataArray, path: Path, chunks: tuple[int, ...], attrs: dict):
    """Lazy writes of ``var``'s non-zero chunks into a new zarr array whose fill value is 0.

    Two thirds of a V4 CA1 store's footprint chunks are all zero. zarr's own skipping of
    empty chunks (``write_empty_chunks=False``) costs about as much per chunk as compressing
    it (8 MB); here an all-zero block is neither compressed nor written, and reads as 0.
    The values are those of ``var``, whatever computes its blocks (rendered or loaded).
    """
    target = _new_array_like(var, path, chunks, attrs, fill_value=0.0)
    data = var.data.rechunk(chunks)
    return data.map_blocks(_store_if_nonzero, target, dtype=np.int8,
                           chunks=tuple((1,) * len(c) for c in data.chunks),
                           meta=np.empty((0,) * data.ndim, np.int8))


#: Per-unit traces that may be held in memory (unit_id, frame), e.g. C of a simulated
#: Recording: written here a block of frames at a time.
_TRACES = ("C", "dff", "S")
_TRACE_CHUNK_FRAMES = 1024


def _write_traces(var: xr.DataArray, path: Path, attrs: dict) -> None:
    """Write an in-memory (unit_id, frame) array in blocks of frames.

    Handing the whole array to zarr at once made a transient copy of it, which grew with
    the recording's length; a block at a time keeps the save's memory flat.
    """
    n, T = var.shape
    step = min(_TRACE_CHUNK_FRAMES, max(T, 1))
    target = _new_array_like(var, path, (max(n, 1), step), attrs)
    values = var.values
    for t0 in range(0, T, step):
        target[:, t0 : t0 + step] = values[:, t0 : t0 + step]


def _encode_labels(ds: xr.Dataset) -> xr.Dataset:
    """Store string coordinates as integers plus a ``labels`` attr.

    zarr v3 has no specified string dtype (zarr warns on every write and read of one), so the
    few label coordinates travel as int8 and are restored by :func:`_decode_labels`.
    """
    return ds.assign_coords({
        name: (name, np.arange(ds.sizes[name], dtype=np.int8),
               {"labels": ",".join(str(v) for v in ds[name].values)})
        for name in _LABEL_COORDS if name in ds.coords
    })


def _decode_labels(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_coords({
        name: np.array(ds[name].attrs["labels"].split(","))
        for name in _LABEL_COORDS if name in ds.coords and "labels" in ds[name].attrs
    })


def _mark_complete(path: Path, extra: dict[str, Any]) -> None:
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    g.attrs.update({**extra, "complete": True})


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished minisim store."""
    import zarr

    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete"))
    except Exception:  # noqa: BLE001
        return False


def spec_from_store(path: str | Path) -> Spec:
    """The Spec embedded in a store's root attrs (complete or not)."""
    import zarr

    return Spec.model_validate_json(json.loads(json.dumps(zarr.open_group(str(path), mode="r").attrs["spec"])))
