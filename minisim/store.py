"""The zarr v3 store of a Recording: layout, completeness, format versions, reading and writing.

A store is one zarr v3 group. Its root attrs hold the Spec (JSON text), the versions
(:func:`versions`) and ``complete``, which is written last, after every chunk: an interrupted
save leaves a store that :func:`open_dataset` refuses as incomplete (unless asked to open it
anyway), never a silently short movie.

Layout: every data variable of the Recording's Dataset is an array of the group. The lazy ones
(movie, dF/F, S) go through xarray/dask chunk by chunk; the footprints ``A``/``A_planted`` are
written sparsely (all-zero chunks are neither compressed nor written and read as the fill value
0); in-memory traces (``C``) a block of frames at a time. String label coordinates travel as
int8 plus a ``labels`` attr (zarr v3 has no specified string dtype).

This module sits after ``recording`` in the flow: it knows Datasets, zarr and the Spec, not how
a recording is simulated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._compute import compute
from ._version import __version__
from .spec import Spec

#: Layout version of the zarr store; :func:`open_dataset` refuses newer ones.
FORMAT_VERSION = 1
#: Footprint arrays: mostly zeros (a block of units lights a few tiles), written sparsely.
FOOTPRINTS = ("A", "A_planted")
#: Per-unit traces that may be held in memory (unit_id, frame), e.g. C of a simulated
#: Recording: written a block of frames at a time.
TRACES = ("C", "dff", "S")
#: Frames per zarr chunk of the (unit_id, frame) traces.
TRACE_CHUNK_FRAMES = 1024
#: Coordinates of strings, stored as int8 plus a ``labels`` attr.
LABEL_COORDS = ("axis", "motion_axis", "bg_component")


class IncompleteRecordingError(RuntimeError):
    """The store was not finished (an interrupted save): re-run the save with overwrite=True."""


class RecordingFormatError(RuntimeError):
    """The store was written by a newer minisim (or is not a minisim store)."""


def versions() -> dict[str, Any]:
    """What a store records about the code that wrote it."""
    from . import render

    return {
        "minisim_version": __version__,
        "format_version": FORMAT_VERSION,
        "render_algorithm": render.RENDER_ALGORITHM,
        "numpy_version": np.__version__,
    }


# --------------------------------------------------------------------------- labels
def encode_labels(ds: xr.Dataset) -> xr.Dataset:
    """Store string coordinates as integers plus a ``labels`` attr.

    zarr v3 has no specified string dtype (zarr warns on every write and read of one), so the
    few label coordinates travel as int8 and are restored by :func:`decode_labels`.
    """
    return ds.assign_coords({
        name: (name, np.arange(ds.sizes[name], dtype=np.int8),
               {"labels": ",".join(str(v) for v in ds[name].values)})
        for name in LABEL_COORDS if name in ds.coords
    })


def decode_labels(ds: xr.Dataset) -> xr.Dataset:
    """The inverse of :func:`encode_labels`."""
    return ds.assign_coords({
        name: np.array(ds[name].attrs["labels"].split(","))
        for name in LABEL_COORDS if name in ds.coords and "labels" in ds[name].attrs
    })


# --------------------------------------------------------------------------- sparse and trace writes
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


def nonzero_chunk_writes(var: xr.DataArray, path: Path, chunks: tuple[int, ...], attrs: dict):
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


def write_traces(var: xr.DataArray, path: Path, attrs: dict) -> None:
    """Write an in-memory (unit_id, frame) array in blocks of frames.

    Handing the whole array to zarr at once made a transient copy of it, which grew with
    the recording's length; a block at a time keeps the save's memory flat.
    """
    n, T = var.shape
    step = min(TRACE_CHUNK_FRAMES, max(T, 1))
    target = _new_array_like(var, path, (max(n, 1), step), attrs)
    values = var.values
    for t0 in range(0, T, step):
        target[:, t0 : t0 + step] = values[:, t0 : t0 + step]


# --------------------------------------------------------------------------- whole stores
def write_dataset(ds: xr.Dataset, path: Path, *, bit_depth: int, scheduler=None,
                  progress: bool = False) -> None:
    """Compute ``ds`` chunk by chunk into a new zarr v3 store at ``path`` and mark it complete.

    The zarr chunks follow the dask blocks. ``path`` must not exist. The saturated pixels
    (value ``2**bit_depth - 1``) are counted from the written movie and recorded in the root
    attrs together with ``complete: true``, last.
    """
    encoding = {
        name: {"chunks": tuple(c[0] for c in var.chunks)}
        for name, var in ds.data_vars.items() if var.chunks is not None
    }
    t0 = time.perf_counter()
    footprints = [n for n in FOOTPRINTS if n in encoding]
    traces = [n for n in TRACES if n in ds.data_vars and ds[n].chunks is None]
    write = encode_labels(ds.drop_vars(footprints + traces)).to_zarr(
        path, mode="w-", compute=False, consolidated=False, zarr_format=3,
        encoding={n: e for n, e in encoding.items() if n not in footprints})
    for n in traces:
        write_traces(ds[n], path, ds.attrs)
    writes = [nonzero_chunk_writes(ds[n], path, encoding[n]["chunks"], ds.attrs) for n in footprints]
    compute(write, *writes, scheduler=scheduler, progress=progress)
    # Counted from the written chunks, not alongside the write: computing both from the lazy
    # movie rendered every block twice (400 frames at 608 px: 17.0 s vs 10.7 s).
    import dask.array as da

    top = 2**bit_depth - 1
    (n_sat,) = compute((da.from_zarr(str(path), component="movie") == top).sum(), scheduler=scheduler)
    mark_complete(path, {"saturated_pixels": int(n_sat),
                         "saturated_fraction": float(n_sat) / max(ds["movie"].size, 1),
                         "write_seconds": round(time.perf_counter() - t0, 3)})


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attrs of a minisim store, checked: format version known, Spec present."""
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
    return attrs


def open_dataset(path: str | Path, allow_incomplete: bool = False) -> tuple[xr.Dataset, Spec]:
    """A store's Dataset (lazy, dask-backed) and its Spec; refuses an incomplete store unless asked."""
    path = Path(path)
    attrs = read_attrs(path)
    if not attrs.get("complete") and not allow_incomplete:
        raise IncompleteRecordingError(
            f"{path} is incomplete: its save was interrupted before every chunk was "
            "written. Re-run the save with overwrite=True (or load(..., allow_incomplete=True) "
            "to inspect what is there)."
        )
    ds = decode_labels(xr.open_zarr(path, consolidated=False, zarr_format=3))
    return ds, Spec.model_validate_json(attrs["spec"])


def mark_complete(path: Path, extra: dict[str, Any]) -> None:
    """Write ``complete: true`` (and ``extra``) into the root attrs: the last write of a save."""
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
