"""Exports in the formats cell-extraction pipelines read: multi-page TIFF, minian's zarr, NWB.

This sits at the end of the flow, beside ``video``: each function takes a Recording (or its
xarray Dataset, whose attrs carry the Spec) and writes what the movie and the ground truth are,
computed one block of frames at a time from the (lazy or loaded) arrays.

* :func:`to_tiff` -- a multi-page uint16 TIFF, one page per frame, streamed a block of frames
  at a time (ImageJ hyperstack metadata below 4 GB, BigTIFF above), ``<name>.spec.json``
  beside it.
* :func:`to_minian` -- a folder of one zarr (format 2) per variable, as minian's
  ``open_minian`` opens it: ``varr`` (the movie) and the ground truth ``A``, ``C``, ``S``,
  ``b``, ``f`` and ``b0`` with minian's dim names.
* :func:`to_nwb` -- an NWB file through pynwb (optional extra ``minisim[nwb]``): the movie as a
  ``OnePhotonSeries`` written in chunks, footprints as image masks of a
  ``PlaneSegmentation``, C and S as ``RoiResponseSeries``, the Spec in the file's notes.

Every export is written to a temporary sibling ``<path>.partial-<id>`` and moved into place
when complete, so a file (or folder) at ``path`` is always whole; a TIFF or NWB export also
holds ``<path>.lock`` while it writes (:func:`minisim._safe_io.locked_aside`), so a second
export to the same path is refused naming the first. ``overwrite=True`` replaces only what
minisim wrote: a TIFF or NWB file with its ``<name>.spec.json`` beside it, a minian folder with
its ``spec.json`` inside.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import _safe_io
from .spec import Spec

#: Frames per block read from the movie while streaming an export.
EXPORT_FRAME_BLOCK = 64
#: Above this many bytes of pixel data a TIFF is written as BigTIFF (no ImageJ metadata).
BIGTIFF_BYTES = 2**32 - 2**25
#: The variables :func:`to_minian` writes, each as ``<name>.zarr``.
MINIAN_VARIABLES = ("varr", "A", "C", "S", "b", "f", "b0")


# --------------------------------------------------------------------------- helpers
def _dataset_and_spec(ds_or_rec: Any) -> tuple[xr.Dataset, Spec]:
    """(Dataset, Spec) of a Recording or of a minisim Dataset (Spec in its attrs)."""
    if isinstance(ds_or_rec, xr.Dataset):
        text = ds_or_rec.attrs.get("spec")
        if text is None:
            raise ValueError("the Dataset has no 'spec' attr: pass a minisim Recording or its dataset")
        return ds_or_rec, Spec.model_validate_json(text)
    ds, spec = getattr(ds_or_rec, "dataset", None), getattr(ds_or_rec, "spec", None)
    if not isinstance(ds, xr.Dataset) or not isinstance(spec, Spec):
        raise TypeError(f"export needs a minisim Recording or its Dataset, got {type(ds_or_rec).__name__}")
    return ds, spec


def _frame_blocks(n_frames: int, block: int = EXPORT_FRAME_BLOCK) -> Iterator[tuple[int, int]]:
    for t0 in range(0, n_frames, block):
        yield t0, min(t0 + block, n_frames)


def _movie_frames(movie: xr.DataArray, block: int = EXPORT_FRAME_BLOCK) -> Iterator[np.ndarray]:
    """The movie's frames in order, computing one block of frames at a time."""
    for t0, t1 in _frame_blocks(movie.sizes["frame"], block):
        frames = np.asarray(movie[t0:t1].values, dtype=np.uint16)
        yield from frames
        del frames


def spec_path(path: str | Path) -> Path:
    """The ``<name>.spec.json`` beside an exported file (``out.tif`` -> ``out.spec.json``)."""
    path = Path(path)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".spec.json")


def _is_minisims(path: Path, marker: Path) -> bool:
    try:
        Spec.model_validate_json(marker.read_text())
        return True
    except Exception:  # noqa: BLE001 - no marker, or not a Spec
        return False


def _check_target(path: Path, marker: Path, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite`` and minisim wrote it (``marker``)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist; create it first")
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not _is_minisims(path, marker):
        raise FileExistsError(
            f"{path} exists and was not written by minisim (no Spec at {marker}); "
            "refusing to overwrite it: remove it yourself or choose another path"
        )


def _partial(path: Path) -> Path:
    return path.with_name(f"{path.name}.partial-{uuid.uuid4().hex}")


def _replace(partial: Path, path: Path) -> None:
    """Move a finished ``partial`` onto ``path`` (a folder: the old one is removed after)."""
    if partial.is_dir() and path.exists():
        old = path.with_name(f"{path.name}.old-{uuid.uuid4().hex}")
        os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(partial, path)


def _discard(partial: Path) -> None:
    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.unlink(missing_ok=True)


# --------------------------------------------------------------------------- TIFF
def to_tiff(ds_or_rec: Any, path: str | Path, *, overwrite: bool = False,
            block_frames: int = EXPORT_FRAME_BLOCK) -> Path:
    """Write the movie as a multi-page uint16 TIFF (one page per frame), with flat memory.

    Frames are computed ``block_frames`` at a time and streamed into one contiguous series, so
    memory does not grow with the movie's length. Below 4 GB the file carries ImageJ hyperstack
    metadata (axes TYX, frame interval, pixel size in um) and opens in ImageJ/Fiji; above, it is
    a BigTIFF with the Spec JSON as its description. ``<name>.spec.json`` beside it holds the
    Spec (re-simulate with ``Spec.from_json``) and marks the file as minisim's.

    Examples
    --------
    >>> import tempfile, pathlib, minisim, tifffile
    >>> from minisim.export import to_tiff
    >>> tmp_path = pathlib.Path(tempfile.mkdtemp())
    >>> spec = minisim.Spec(sensor={"width_px": 32, "height_px": 24},
    ...                     recording={"duration_s": 0.5, "seed": 1})
    >>> rec = minisim.simulate(spec)
    >>> out = to_tiff(rec, tmp_path / "movie.tif")
    >>> tifffile.imread(out).shape
    (10, 24, 32)
    >>> sorted(p.name for p in tmp_path.iterdir())
    ['movie.spec.json', 'movie.tif']
    """
    import tifffile

    ds, spec = _dataset_and_spec(ds_or_rec)
    path = Path(path)
    marker = spec_path(path)
    _check_target(path, marker, overwrite)
    movie = ds["movie"]
    T, H, W = (int(n) for n in movie.shape)
    big = T * H * W * 2 > BIGTIFF_BYTES
    d = spec.pixel_size_um
    kwargs: dict[str, Any] = {"shape": (T, H, W), "dtype": np.uint16, "contiguous": True,
                              "photometric": "minisblack", "software": "minisim"}
    if big:
        kwargs["description"] = spec.model_dump_json()
        kwargs["metadata"] = None
    else:
        kwargs["resolution"] = (1.0 / d, 1.0 / d)
        kwargs["metadata"] = {"axes": "TYX", "finterval": 1.0 / spec.recording.fps, "unit": "um",
                              "spacing": d}
    with _safe_io.locked_aside(path, beside={marker: spec.model_dump_json(indent=2) + "\n"}) as partial:
        _check_target(path, marker, overwrite)  # again, holding the lock
        with tifffile.TiffWriter(partial, bigtiff=big, imagej=not big) as tif:
            tif.write(_movie_frames(movie, block_frames), **kwargs)
    return path


# --------------------------------------------------------------------------- minian
def _minian_arrays(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """The variables of a minian folder, as DataArrays with minian's dims and integer coords.

    ``b``/``f`` are the time-varying background (the neuropil and its course, the one minian's
    model b f has); ``b0`` (height, width) is the static rest in ADU: glow + dark + offset, so
    that with motion and noise off ``varr ~ A C + b f + b0`` (before rounding).
    """
    def bare(da: xr.DataArray) -> xr.DataArray:
        """Only the dims' own coords, and no encoding left from a (zarr 3) source store."""
        da = da.drop_vars([c for c in da.coords if c not in da.dims])
        da.encoding = {}
        for c in da.coords.values():
            c.encoding = {}
        return da

    bg = list(ds["bg_component"].values)
    k = bg.index("neuropil")
    static = [i for i in range(len(bg)) if i != k]
    b_static = (ds["b"].isel(bg_component=static) * ds["f"].isel(bg_component=static).mean("frame"))
    b0 = b_static.sum("bg_component") + np.float32(ds.attrs.get("offset_adu", 0.0))
    out = {
        "varr": ds["movie"],
        "A": ds["A"],
        "C": ds["C"],
        "S": ds["S"],
        "b": ds["b"].isel(bg_component=k, drop=True),
        "f": ds["f"].isel(bg_component=k, drop=True),
        "b0": b0.astype(np.float32),
    }
    return {name: bare(da).rename(name) for name, da in out.items()}


def to_minian(ds_or_rec: Any, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write the movie and ground truth as minian's intermediate folder: one zarr per variable.

    minian's ``open_minian(folder)`` opens every sub-folder with ``xarray.open_zarr`` and
    merges them; its releases use zarr 2, so each ``<name>.zarr`` is zarr format 2 (consolidated
    metadata, Blosc-compressed). Variables (minian's dim names): ``varr`` (frame, height, width)
    uint16 ADU, ``A`` (unit_id, height, width), ``C`` and ``S`` (unit_id, frame), ``b``
    (height, width) and ``f`` (frame) the neuropil background, ``b0`` (height, width) the
    static background incl. the sensor offset. ``spec.json`` inside the folder holds the Spec
    (minian skips files) and marks the folder as minisim's.

    Examples
    --------
    >>> import tempfile, pathlib, minisim, xarray as xr
    >>> from minisim.export import to_minian
    >>> tmp_path = pathlib.Path(tempfile.mkdtemp())
    >>> spec = minisim.Spec(sensor={"width_px": 32, "height_px": 24},
    ...                     recording={"duration_s": 0.5, "seed": 1})
    >>> out = to_minian(minisim.simulate(spec), tmp_path / "minian")
    >>> sorted(p.name for p in out.iterdir())
    ['A.zarr', 'C.zarr', 'S.zarr', 'b.zarr', 'b0.zarr', 'f.zarr', 'spec.json', 'varr.zarr']
    >>> xr.open_zarr(out / "varr.zarr")["varr"].dims
    ('frame', 'height', 'width')
    """
    from numcodecs import Blosc

    ds, spec = _dataset_and_spec(ds_or_rec)
    folder = Path(folder)
    _check_target(folder, folder / "spec.json", overwrite)
    partial = _partial(folder)
    compressor = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)  # zarr 2's own default
    try:
        partial.mkdir()
        for name, da in _minian_arrays(ds).items():
            enc: dict[str, Any] = {"compressors": (compressor,)}
            if da.chunks is not None:
                enc["chunks"] = tuple(c[0] for c in da.chunks)
            var = da.to_dataset()
            if name == "varr":  # on the variable: open_minian's merge keeps no Dataset attrs
                var["varr"].attrs = {**var["varr"].attrs, "spec": spec.model_dump_json(),
                                     "source": "minisim"}
            var.to_zarr(partial / f"{name}.zarr", mode="w-", zarr_format=2, consolidated=True,
                        encoding={name: enc})
        (partial / "spec.json").write_text(spec.model_dump_json(indent=2) + "\n")
        _replace(partial, folder)
    except BaseException:
        _discard(partial)
        raise
    return folder


# --------------------------------------------------------------------------- NWB
def _footprint_blocks(A: xr.DataArray, block: int = 32) -> Iterator[np.ndarray]:
    """Footprints one unit at a time, computed ``block`` units at a time."""
    n = A.sizes["unit_id"]
    for u0 in range(0, n, block):
        yield from np.asarray(A[u0 : u0 + block].values, dtype=np.float32)


def to_nwb(ds_or_rec: Any, path: str | Path, *, overwrite: bool = False,
           block_frames: int = EXPORT_FRAME_BLOCK) -> Path:
    """Write the movie and ground truth as an NWB 2 file (needs ``pip install minisim[nwb]``).

    * ``acquisition/OnePhotonSeries``: the movie (frame, height, width) uint16 ADU, written in
      chunks of ``block_frames`` frames from an iterator (flat memory), gzip-compressed;
    * ``processing/ophys/ImageSegmentation/PlaneSegmentation``: one ROI per unit, its
      ``image_mask`` the footprint A as imaged (ADU per unit of C, streamed a block of units at
      a time) and a ``unit_id`` column;
    * ``processing/ophys/Fluorescence/C`` and ``processing/ophys/Deconvolved/S``:
      ``RoiResponseSeries`` (frame, unit) of the calcium trace and the spike counts per frame;
    * the Spec JSON in the file's ``notes`` and in ``<name>.spec.json`` beside it.

    Examples
    --------
    >>> import tempfile, pathlib, minisim
    >>> from minisim.export import to_nwb
    >>> spec = minisim.Spec(sensor={"width_px": 32, "height_px": 24},
    ...                     recording={"duration_s": 0.5, "seed": 1})
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "rec.nwb"
    >>> to_nwb(minisim.simulate(spec), out).name  # doctest: +SKIP
    'rec.nwb'
    """
    try:
        from hdmf.backends.hdf5.h5_utils import H5DataIO
        from hdmf.common import ElementIdentifiers, VectorData
        from hdmf.data_utils import DataChunkIterator
        from pynwb import NWBHDF5IO, NWBFile
        from pynwb.ophys import (
            Fluorescence,
            ImageSegmentation,
            OnePhotonSeries,
            OpticalChannel,
            PlaneSegmentation,
            RoiResponseSeries,
        )
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_nwb needs pynwb: pip install 'minisim[nwb]'") from e
    import datetime

    from ._version import __version__

    ds, spec = _dataset_and_spec(ds_or_rec)
    path = Path(path)
    marker = spec_path(path)
    _check_target(path, marker, overwrite)
    T, H, W = (int(n) for n in ds["movie"].shape)
    n = int(ds.sizes["unit_id"])
    fps, d = float(spec.recording.fps), spec.pixel_size_um

    nwb = NWBFile(
        session_description="minisim synthetic one-photon recording with ground truth",
        identifier=str(uuid.uuid4()),
        # a simulated session has no date: a fixed placeholder, so the file says nothing false
        session_start_time=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
        notes=spec.model_dump_json(),
        source_script=f"minisim {__version__}", source_script_file_name="minisim/export.py",
        experiment_description="minisim Spec (JSON) in notes; re-simulate with minisim.Spec.model_validate_json",
    )
    device = nwb.create_device(name="minisim", description="simulated miniscope (minisim)")
    channel = OpticalChannel(name="green", description=spec.activity.indicator,
                             emission_lambda=spec.optics.emission_wavelength_um * 1000.0)
    plane = nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, description="simulated focal plane",
        device=device, excitation_lambda=470.0, imaging_rate=fps, indicator=spec.activity.indicator,
        location="simulated", grid_spacing=[d, d], grid_spacing_unit="micrometers",
    )
    movie = H5DataIO(
        DataChunkIterator(data=_movie_frames(ds["movie"], block_frames), maxshape=(T, H, W),
                          dtype=np.dtype(np.uint16), buffer_size=block_frames),
        compression="gzip", chunks=(min(block_frames, T), H, W),
    )
    nwb.add_acquisition(OnePhotonSeries(
        name="OnePhotonSeries", data=movie, imaging_plane=plane, rate=fps, unit="ADU",
        description="camera frames (ADU); offset_adu = " + str(spec.sensor.offset_adu),
    ))

    ophys = nwb.create_processing_module(name="ophys", description="minisim ground truth")
    seg = ImageSegmentation()
    ophys.add(seg)
    # the masks stream into the file a block of units at a time (n x H x W floats in all)
    masks = VectorData(
        name="image_mask", description="true footprint A as imaged (ADU per unit of C)",
        data=H5DataIO(DataChunkIterator(data=_footprint_blocks(ds["A"]), maxshape=(n, H, W),
                                        dtype=np.dtype(np.float32), buffer_size=32),
                      compression="gzip", chunks=(1, H, W)),
    )
    unit_ids = VectorData(name="unit_id", description="minisim unit_id",
                          data=np.asarray(ds["unit_id"].values, np.int64))
    ps = PlaneSegmentation(
        name="PlaneSegmentation", imaging_plane=plane,
        description="true footprints A as imaged (ADU per unit of C), one ROI per unit",
        id=ElementIdentifiers(name="id", data=np.arange(n)), columns=[masks, unit_ids],
        colnames=["image_mask", "unit_id"],
    )
    seg.add_plane_segmentation(ps)
    rois = ps.create_roi_table_region(region=list(range(n)), description="every unit")
    C = np.ascontiguousarray(np.asarray(ds["C"].values, np.float32).T)
    S = np.ascontiguousarray(np.asarray(ds["S"].values).T)
    for container, name, data, unit, what in (
        ("Fluorescence", "C", C, "1 (resting fluorescence at t=0)", "true calcium trace incl. bleaching"),
        ("Deconvolved", "S", S, "spikes per frame", "true spike counts per frame"),
    ):
        fl = Fluorescence(name=container)
        ophys.add(fl)  # before its series, so the series and the ROI table share an ancestor
        fl.add_roi_response_series(RoiResponseSeries(
            name=name, data=data, rois=rois, rate=fps, unit=unit, description=f"{what} (minisim {name})"))

    with _safe_io.locked_aside(path, beside={marker: spec.model_dump_json(indent=2) + "\n"}) as partial:
        _check_target(path, marker, overwrite)  # again, holding the lock
        with warnings.catch_warnings():
            # the temporary name ends in .partial-<id>, not .nwb, until it is swapped in
            warnings.filterwarnings("ignore", message="The file path provided", category=UserWarning)
            with NWBHDF5IO(str(partial), "w") as io:
                io.write(nwb)
    return path
