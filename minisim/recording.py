"""Recording: the lazy movie and its ground truth as one xarray Dataset, plus its Spec.

``simulate(spec)`` returns at once; nothing of the movie is computed until it is saved,
sliced or exported. ``Recording.save`` computes chunk by chunk straight into a zarr v3 store on
whatever dask scheduler is active; ``Recording.load`` opens it again lazily. The store itself
(layout, completeness, format versions) is :mod:`minisim.store`; the ground truth beyond A and
C is derived in :mod:`minisim.truth`.

A store is complete only when its root attrs say ``complete: true``; that is written last, after
every chunk. An interrupted save therefore leaves a store that ``load`` refuses as incomplete
(pass ``allow_incomplete=True`` to look at it anyway), never a silently short movie.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from . import _safe_io, render, store, truth
from ._compute import compute
from .resources import (  # noqa: F401  (re-exported: the CLI and tests import them from here)
    MAX_UNITS,
    MEMORY_SHARE,
    MIN_STORE_SHARE,
    ResourceError,
    check_disk,
    check_resources,
    resource_plan,
)
from .scene.optics import pixel_center_um
from .spec import Spec
from .store import (
    FORMAT_VERSION,
    IncompleteRecordingError,
    RecordingFormatError,
    is_complete,
    spec_from_store,
)

__all__ = [
    "FORMAT_VERSION",
    "IncompleteRecordingError",
    "Recording",
    "RecordingFormatError",
    "ResourceError",
    "build_dataset",
    "check_disk",
    "check_resources",
    "compute",
    "is_complete",
    "resource_plan",
    "simulate",
    "spec_from_store",
]

BG_COMPONENTS = ("neuropil", "glow", "dark")


#: Frames per block (and zarr chunk) of the ``time_s`` coordinate: 8 MB of float64, so a
#: recording of up to 14.5 hours at 20 fps has one, which a save writes in one task (one per
#: trace segment was 25 of the ~200 tasks of a 10-minute recording spread over a cluster, and
#: 3,400 tasks and 1,700 files for 24 hours); no block grows with the duration.
TIME_CHUNK_FRAMES = 2**20


def _time_chunk(n_frames: int, fps: float, block_id=None) -> np.ndarray:
    """Frame times in s of block ``block_id[0]`` (a plain graph whose tasks are made when dask
    reads them: ``da.arange`` made every task up front)."""
    t0 = block_id[0] * TIME_CHUNK_FRAMES
    return np.arange(t0, min(t0 + TIME_CHUNK_FRAMES, n_frames), dtype=np.float64) / fps


def _frame_times(n_frames: int, fps: float):
    """Frame times in s as a lazy array, one block per :data:`TIME_CHUNK_FRAMES` frames
    (:func:`_time_chunk`)."""
    import dask.array as da
    from dask.base import tokenize

    frames = da.core.normalize_chunks(TIME_CHUNK_FRAMES, (n_frames,))
    key = f"time_s-{tokenize(n_frames, fps, TIME_CHUNK_FRAMES)}"
    layer = render.BlockTasks(key, (len(frames[0]),), _time_task, n_frames, fps)
    return render.plain_array(key, layer, frames, np.float64)


def _time_task(index: tuple, n_frames: int, fps: float) -> tuple:
    return (_time_chunk, n_frames, fps, index)


def _as_row(x: np.ndarray) -> np.ndarray:
    return x[None]


def _ones_row(n: int) -> np.ndarray:
    return np.ones((1, n), np.float32)


def _background_task(index: tuple, neuropil: str, frames: tuple[int, ...]) -> tuple:
    component, k = index
    return (_as_row, (neuropil, k)) if component == 0 else (_ones_row, frames[k])


def _background_courses(neuropil):
    """``f`` (bg_component, frame): the neuropil course, then ones for the glow and the dark
    current, a block per component and segment (the blocks ``da.stack`` gave)."""
    from dask.base import tokenize

    key = f"f-{tokenize(neuropil.name)}"
    frames = neuropil.chunks[0]
    layer = render.BlockTasks(key, (3, len(frames)), _background_task, neuropil.name, frames)
    return render.plain_array(key, layer, ((1, 1, 1), frames), np.float32, (neuropil,))


def build_dataset(world: render.World, chunks: dict[str, int] | None = None) -> xr.Dataset:
    """The Recording's Dataset: lazy movie, footprints, per-frame truth and the per-unit truth that
    reads footprints or activity (vessel overlap, pnr, detectability); the rest of the scene's
    per-unit truth eager (nothing here builds a footprint)."""
    return _dataset_and_footprints(world, chunks)[0]


def _dataset_and_footprints(world: render.World, chunks: dict[str, int] | None = None) -> tuple:
    """:func:`build_dataset` and the chunk writers of its ground truth for a save
    (:func:`minisim.truth.footprint_chunk_writers` of the :func:`minisim.truth.lazy_footprints`
    it holds, and :func:`minisim.truth.metrics_writer`)."""
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
    traces = truth.lazy_traces(spec, n)
    f = _background_courses(traces["neuropil"])
    # the scene's per-unit truth at once; what needs footprints or activity lazily
    footprints = truth.lazy_footprints(spec, n)
    movie = render.movie_array(spec, chunks)
    parts = truth.metric_parts(spec, n, footprints["boxes"], traces["segments"])
    metrics = {**truth.scene_metrics(world), **truth.lazy_unit_metrics(spec, n, parts=parts, movie=movie)}
    ys = pixel_center_um(np.arange(H), H, d).astype(np.float32)
    xs = pixel_center_um(np.arange(W), W, d).astype(np.float32)
    unit = ("unit_id",)
    ds = xr.Dataset(
        data_vars={
            "movie": (("frame", "height", "width"), movie,
                      {"units": "ADU", "long_name": "camera frames"}),
            "A": (("unit_id", "height", "width"), footprints["A"],
                  {"units": "ADU per unit of C", "long_name": "footprint as imaged"}),
            "A_planted": (("unit_id", "height", "width"), footprints["A_planted"],
                          {"units": "fraction of the cell's light", "long_name": "sharp footprint in tissue"}),
            "C": (("unit_id", "frame"), traces["C"], {"units": "1 (1 = resting, t=0)",
                                                  "long_name": "fluorescence trace incl. bleaching"}),
            "dff": (("unit_id", "frame"), traces["dff"], {"units": "dF/F", "long_name": "calcium dF/F before bleaching"}),
            "S": (("unit_id", "frame"), traces["S"], {"units": "spikes per frame"}),
            "b": (("bg_component", "height", "width"), b, {"units": "ADU per unit of f"}),
            "f": (("bg_component", "frame"), f, {"units": "1"}),
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
            "oracle_r": (unit, metrics["oracle_r"], {"long_name": "correlation of the oracle trace with C"}),
            "compactness": (unit, metrics["compactness"], {"long_name": "footprint energy within 1.5 soma radii"}),
            "visibility": (unit, metrics["visibility"], {"units": "dF/F", "long_name": "peak dF/F over the local image"}),
            "active": (unit, np.asarray(act.params["active"], bool)),
            "rate_hz": (unit, np.asarray(act.params["rate_hz"], np.float32)),
            "vessel_mask": (("height", "width"), sc.vessel_mask),
            "vessel_dilation": (("frame",), traces["vessel_dilation"],
                                {"units": "1", "long_name": "fractional vessel dilation (vasomotion); "
                                 "transmission under vessels is scaled by exp(-2 mu_a L dilation)"}),
            "motion": (("frame", "motion_axis"), traces["motion"],
                       {"units": "px", "long_name": "rigid brain displacement (y, x)"}),
        },
        coords={
            # no index over frames (it would grow with the recording): select with isel
            "time_s": ("frame", _frame_times(T, fps)),
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
            **store.versions(),
            "pixel_size_um": d,
            "fps": fps,
            "offset_adu": spec.sensor.offset_adu,
            "complete": False,
        },
    )
    writers = {**truth.footprint_chunk_writers(spec, footprints),
               "movie": movie_chunk_writer(spec, movie),
               "metrics": truth.metrics_writer(spec, n, parts, metrics)}
    return ds, writers


def movie_chunk_writer(spec: Spec, movie) -> tuple:
    """For :func:`minisim.store.write_dataset`: (the dask name of ``movie``, the array
    :func:`minisim.render.movie_array` gave for ``spec``; ``of(target, t0, t1, top)``: tasks that
    render the blocks of frames [t0, t1) (on block edges) and write them into the zarr array
    ``target``, whose chunks are the blocks, ``blocks_per_task`` (default
    :data:`RENDER_TASK_BLOCKS`) consecutive blocks of a tile per task, and a last task that sums
    the blocks' pixels at ``top``: a Delayed int64).

    The same blocks as ``movie``'s, in a plain graph: dask's blockwise layers of the render,
    the write and the sum took ~0.5 s of the main thread to build and optimise for a 1,200-frame
    V4 save before its first task ran."""
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    sj = spec.model_dump_json()
    shape = tuple(int(n) for n in movie.shape)
    sizes = tuple(int(c[0]) for c in movie.chunks)

    def of(target, t0: int, t1: int, top: int, blocks_per_task: int | None = None):
        per_task = blocks_per_task or RENDER_TASK_BLOCKS
        key = f"render-store-{tokenize(sj, t0, t1, top, str(target.store_path), per_task)}"
        frames = range(t0 // sizes[0], -(-t1 // sizes[0]))
        runs = [frames[i : i + per_task] for i in range(0, len(frames), per_task)]
        tiles = itertools.product(*(range(-(-n // c)) for n, c in zip(shape[1:], sizes[1:])))
        layer = {(key, run[0], *tile): (_render_store, sj, sizes, shape, [(f, *tile) for f in run], target, top)
                 for tile in tiles for run in runs}
        layer[(f"sum-{key}",)] = (_sum_counts, list(layer))
        hlg = HighLevelGraph({key: layer}, {key: set()})
        return Delayed((f"sum-{key}",), hlg, layer=key)

    return movie.name, of


#: Consecutive blocks of frames (of one tile) that one render-and-write task of a save takes in
#: turn. Each task costs a distributed scheduler and the client that drives it ~2 ms of CPU,
#: which on a 2-core machine they take from the workers (a 10-minute V4 CA1 256 px recording
#: is 375 blocks of ~25 ms); a task still holds one block at a time.
RENDER_TASK_BLOCKS = 4


def _render_store(spec_json: str, sizes: tuple[int, ...], shape: tuple[int, ...], block_ids: list,
                  target, top: int) -> int:
    """Render each block of ``block_ids`` of the movie in turn, write it into ``target`` (its
    chunk), and return their pixels at ``top``."""
    n = 0
    for block_id in block_ids:
        block = render._render_chunk(spec_json, None, sizes, shape, block_id=block_id)
        n += store.write_counting(block, target, [i * c for i, c in zip(block_id, sizes)], top)
        del block
    return n


def _sum_counts(counts: list) -> np.int64:
    return np.int64(sum(counts))


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
    if chunks is not None:
        render.normalize_chunks(spec, chunks)  # a bad chunking fails before the scene is built
    check_resources(spec)
    world = render.build_world(spec)
    render.remember_world(world)
    ds, writers = _dataset_and_footprints(world, chunks)
    return Recording(ds, spec, chunk_writers=writers)


class Recording:
    """A (lazy) recording: ``dataset`` (xarray) and the ``spec`` it is a pure function of."""

    def __init__(self, dataset: xr.Dataset, spec: Spec, path: Path | None = None,
                 chunk_writers: dict | None = None):
        self.dataset = dataset
        self.spec = spec
        self.path = path
        # how a save writes the ground truth of a simulated Recording: the footprints without
        # building their dense blocks (minisim.truth.footprint_chunk_writers), the activity
        # metrics after the movie, their oracle reading it (minisim.truth.metrics_writer); used
        # only while ``dataset`` still holds those very arrays
        self._chunk_writers = chunk_writers or {}

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
             f"the rest lie outside and shed light into it), spikes: {ds.sizes.get('spike', 'see minisim.truth.spike_table')}"),
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
        dask blocks. The store is written aside (``<path>.partial-<id>``), marked complete only
        after every chunk is written, and then swapped into place: an existing store is removed
        only after the new one stands, so a save that fails or is killed leaves the old store as
        it was. Saving a loaded Recording onto the store it was loaded from therefore works.

        Refuses an existing path unless ``overwrite=True``, and even then replaces only a
        minisim store (never another folder or file, never the current folder or one above it).
        One process writes a path at a time (a ``<path>.lock`` file; a second writer gets
        :class:`minisim._safe_io.TargetLockedError` naming the first). A Recording loaded from an
        incomplete store (``allow_incomplete=True``) is refused: it would be saved as complete.
        Returns the saved Recording (lazy).
        """
        self._write(path, chunks, overwrite, scheduler, progress)
        return Recording.load(path)

    def _write(self, path: str | Path, chunks: dict[str, int] | None = None, overwrite: bool = False,
               scheduler=None, progress: bool = False) -> None:
        """:meth:`save` without opening the saved store again (a sweep's workers write many
        recordings and read none of them back: the open took ~0.07 s of each)."""
        path = Path(path)
        self._check_complete_to_save()
        ds = self.dataset
        if chunks:
            c = render.normalize_chunks(self.spec, chunks)
            ds = ds.assign(movie=ds["movie"].chunk({k: c[k] for k in ("frame", "height", "width")}))
        _check_target(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_disk(self.spec, path.parent, float(ds["movie"].nbytes))
        with _safe_io.exclusive_lock(path):
            _check_target(path, overwrite)
            partial = _safe_io.write_aside(path)
            try:
                store.write_dataset(ds, partial, bit_depth=self.spec.sensor.bit_depth,
                                    scheduler=scheduler, progress=progress,
                                    chunk_writers=self._chunk_writers)
                _safe_io.swap_into_place(partial, path)
            finally:
                if partial.exists():
                    shutil.rmtree(partial, ignore_errors=True)

    def _check_complete_to_save(self) -> None:
        if self.path is not None and not self.dataset.attrs.get("complete", False):
            raise IncompleteRecordingError(
                f"this Recording was loaded from the incomplete store {self.path} "
                "(allow_incomplete=True): saving it would mark frames that were never written as "
                "recorded. Re-simulate it from its Spec instead: "
                "minisim.simulate(rec.spec).save(path)"
            )

    @classmethod
    def load(cls, path: str | Path, allow_incomplete: bool = False) -> Recording:
        """Open a saved recording lazily (dask-backed) with its Spec restored.

        If a save that was replacing ``path`` was killed between moving the old store aside and
        the new one in (only where the system cannot swap the two in one step), the old store is
        moved back first.
        """
        path = Path(path)
        if not path.exists() and _safe_io.has_leftovers(path):
            with _safe_io.exclusive_lock(path):  # recovers the old store
                pass
        ds, spec = store.open_dataset(path, allow_incomplete)
        return cls(ds, spec, path)

    def verify(self, progress: bool = False) -> store.VerifyReport:
        """Read every chunk of this Recording's store back: missing, truncated or damaged chunks.

        Returns a :class:`minisim.store.VerifyReport` (``ok`` only for an intact store; its text
        names each problem's variable and chunk). Only a loaded (saved) Recording has a store.
        """
        if self.path is None:
            raise ValueError("verify() checks a saved store; this Recording was not loaded from one "
                             "(save it first)")
        return store.verify(self.path, progress=progress)

    def to_video(self, path: str | Path, **kwargs) -> Path:
        """Export the movie as an AVI (see :func:`minisim.simulate_video` for options)."""
        from .video import write_avi

        return write_avi(self.dataset["movie"].data, self.spec, path, rendered=self.path is None,
                         **kwargs)

    def to_tiff(self, path: str | Path, **kwargs) -> Path:
        """Export the movie as a multi-page TIFF (see :func:`minisim.export.to_tiff`)."""
        from .export import to_tiff

        return to_tiff(self, path, **kwargs)

    def to_minian(self, folder: str | Path, **kwargs) -> Path:
        """Export movie and ground truth as minian's zarr folder (see :func:`minisim.export.to_minian`)."""
        from .export import to_minian

        return to_minian(self, folder, **kwargs)

    def to_nwb(self, path: str | Path, **kwargs) -> Path:
        """Export movie and ground truth as NWB, needs pynwb (see :func:`minisim.export.to_nwb`)."""
        from .export import to_nwb

        return to_nwb(self, path, **kwargs)


def _check_target(path: Path, overwrite: bool) -> None:
    """Everything about the output path that can be checked before any work."""
    _safe_io.refuse_cwd_or_parent(path, "store path")
    base = path.absolute().parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is a file, so the folder {str(path.parent)!r} for the "
                                 "store cannot be made; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in {base}, so not the store {str(path)!r}; choose "
                              "a folder you can write to")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        _safe_io.check_overwritable(path, "store")
