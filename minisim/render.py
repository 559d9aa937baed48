"""The lazy movie: one pure block function, and the dask graph that maps it over blocks.

``render_block(world, frames, window)`` renders frames [t0, t1) of the sensor window
(y0, y1, x0, x1) as uint16 ADU:

    tissue  = A_tissue(z_t) . C[:, t] + neuropil . f[t]       (sparse rows, fixed unit order;
                                                               z_t the focus drift, if any)
    tissue *= exp(-2 mu_a L delta(t))                          (vasomotion, if on)
    moved   = tissue sampled at (p - d(p, t))                  (bilinear, from a halo of rows)
    signal  = V I moved + V glow                               (scope-fixed fields)
    movie   = sensor(signal)                                   (keyed shot/read noise, ADU)

Every pixel depends only on its own coordinates, the frame and the Spec, never on the block
that holds it: any chunking, any scheduler and any window give the same bytes.

The ``World`` (scene + per-unit activity constants) is built once per process from the Spec
and cached, so dask tasks carry only the Spec's JSON: nothing big is embedded in the graph,
and a process or distributed worker builds what it needs on first use. Traces and motion come
a time segment at a time, for the frames a block asks for (docs/segments.md).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from . import sensor as _sensor
from .activity import SEGMENT_FRAMES, Activity, ActivityBatch
from .motion import (
    Motion,
    axial_weights,
    displacement_row,
    displacement_terms,
    mode_patterns,
    motion_frames,
    motion_segment,
)
from .scene import Scene, build_scene
from .scene.optics import pixel_center_um
from .scene.vessels import dilation, dilation_factor
from .spec import Spec

#: Version of the rendering algorithm: bump whenever the bytes for a given Spec change.
RENDER_ALGORITHM = 8


class World:
    """What rendering one Spec needs, built once per process: the scene and the units' activity.

    ``scene`` holds the cells, footprints and fields; ``activity`` the per-unit constants of an
    :class:`~minisim.activity.ActivityBatch`. Traces (C, neuropil course, dF/F, S) and motion
    are computed one time segment at a time when a block asks for frames, from keyed state at
    the segment's start (docs/segments.md); the last :data:`WORLD_SEGMENTS` segments are kept.
    Nothing in a World grows with the recording's length. ``n_frames`` limits the frames it
    serves (a prefix: the studio's preview).

    A World built with ``truth=False`` renders only: its cached segments keep C, the neuropil
    course and the motion, not the Activity's dF/F, S and bleaching (a 1,936-unit V4 segment
    is ~8 MB instead of ~26 MB). A ground-truth reader of such a World (:func:`_segment_of`)
    gets a whole segment built for it, not cached.
    """

    def __init__(self, spec: Spec, scene: Scene, n_frames: int | None = None, *,
                 truth: bool = True) -> None:
        self.spec = spec
        self.scene = scene
        self.n_frames = spec.recording.n_frames if n_frames is None else int(n_frames)
        self.truth = bool(truth)
        self.activity = ActivityBatch(spec, scene.cells.unit_id)
        self._segments: OrderedDict[int, Segment] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[int, threading.Lock] = {}  # one lock per segment being built
        self._patterns: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def mode_patterns(self, motion, window: tuple[int, int, int, int]) -> np.ndarray:
        """The motion's non-rigid mode patterns over sensor ``window``
        (:func:`minisim.motion.mode_patterns`; their wave vectors and phases are the
        recording's, keyed by its seed): kept per window, as every block of frames of a tile
        asks for the same (a sine per mode and pixel in float64 was ~4 % of a V4 render)."""
        key = tuple(int(v) for v in window)
        got = self._patterns.get(key)
        if got is None:
            spec = self.spec
            H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
            y0, y1, x0, x1 = key
            got = mode_patterns(motion, pixel_center_um(np.arange(y0, y1), H, d),
                                pixel_center_um(np.arange(x0, x1), W, d))
            with self._lock:
                _keep(self._patterns, key, got, PATTERN_WINDOWS)
        return got

    def segment(self, seg: int, *, evict: bool = True) -> Segment:
        """Traces and motion of segment ``seg`` (whole: frames [seg·L, (seg+1)·L)), cached.

        Threads asking for the same segment wait for one build; different segments are built
        side by side (a save's two threads start on segments 0 and 1 at once). With
        ``evict=False`` a segment built here is kept as the cache's oldest entry while it has
        room, or as its newest where it lies after every cached segment (a save's ground truth
        for a window whose render has not begun: the render then reads it, not a second build
        of it); a reader behind the render in time (a save's per-segment ground-truth tasks
        run late) then never evicts a segment the render blocks are reading, yet a short
        recording is still built once for both."""
        with self._lock:
            got = self._segments.get(seg)
            if got is not None:
                if evict:
                    self._segments.move_to_end(seg)
                return got
            building = self._building.setdefault(seg, threading.Lock())
        with building:
            with self._lock:
                got = self._segments.get(seg)
                keep = WORLD_SEGMENTS if self.truth else RENDER_WORLD_SEGMENTS
                # room made before the build, not after: a full cache and the segment being
                # built were one segment more than the cache holds (~26 MB for V4, at every
                # segment's start of a long save)
                room = got is None and (evict or seg > max(self._segments, default=seg))
                dropped = room and len(self._segments) >= keep
                while room and len(self._segments) >= keep:
                    self._segments.popitem(last=False)
            if dropped:
                _trim_heap()
            if got is None:
                got = self.build_segment(seg)
                with self._lock:
                    # a reader ahead of every cached segment asks for the one the render,
                    # which moves forward in time, reads next: kept as the newest
                    newest = evict or seg > max(self._segments, default=seg)
                    evicted = newest and len(self._segments) >= keep
                    if newest:
                        _keep(self._segments, seg, got, keep)
                    elif len(self._segments) < keep:
                        self._segments[seg] = got
                        self._segments.move_to_end(seg, last=False)
                    self._building.pop(seg, None)
                if evicted:
                    _trim_heap()
            return got

    def keep_only(self, segments) -> None:
        """Drop every cached segment but ``segments`` (their numbers), handing the heap's free
        pages back if any went: for a reader that knows what is still to be read (a save's last
        step, :func:`release_segments`). The values never depend on it: a dropped segment asked
        for again is built again."""
        with self._lock:
            gone = [s for s in self._segments if s not in segments]
            for s in gone:
                del self._segments[s]
        if gone:
            _trim_heap()

    def build_segment(self, seg: int, *, truth: bool | None = None) -> Segment:
        """Segment ``seg`` built afresh, not cached (:meth:`segment` caches it); with its
        Activity if ``truth`` (default: the World's own ``truth``)."""
        # a segment the recording ends inside is computed to its end only (the same bits)
        frames = min(SEGMENT_FRAMES, max(self.n_frames - seg * SEGMENT_FRAMES, 1))
        act = self.activity.segment(seg, frames)
        keep = self.truth if truth is None else truth
        # (its bleaching course is in C: kept, it was ~7.6 MB of a V4 segment that nothing read)
        return Segment(replace(act, bleach=None) if keep else None, act.C,
                       np.ascontiguousarray(act.neuropil_f, np.float32),
                       motion_segment(self.spec, seg))

    def _segments_of(self, frames: range) -> tuple[list[Segment], int]:
        if frames.stop > self.n_frames:  # the last segment is computed to n_frames only
            raise ValueError(f"frames {frames.start}..{frames.stop} reach past this World's "
                             f"n_frames={self.n_frames}; allowed: frames below it")
        first = frames.start // SEGMENT_FRAMES
        last = -(-max(frames.stop, frames.start) // SEGMENT_FRAMES)
        return [self.segment(s) for s in range(first, last)], frames.start - first * SEGMENT_FRAMES

    def traces(self, frames: range) -> tuple[np.ndarray, np.ndarray]:
        """(C (units, frames) float32, neuropil course (frames,) float32) of ``frames``."""
        segs, lo = self._segments_of(frames)
        n = len(frames)
        if len(segs) == 1:
            s = segs[0]
            return s.C[:, lo : lo + n], s.f_np[lo : lo + n]
        if not segs:
            return np.zeros((len(self.scene.cells), 0), np.float32), np.zeros(0, np.float32)
        C = np.concatenate([s.C for s in segs], axis=1)[:, lo : lo + n]
        return C, np.concatenate([s.f_np for s in segs])[lo : lo + n]

    def motion(self, frames: range) -> Motion:
        """The brain's motion over ``frames`` (row 0 is ``frames.start``)."""
        return motion_frames(self.spec, frames, lambda seg: self.segment(seg).motion)

    def spike_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every spike of the recording: (unit id int64, time s float64), by unit then time.

        Computed a segment at a time in a batch of its own (the World's segment cache is left
        alone); memory is one segment plus the table.
        """
        batch = ActivityBatch(self.spec, self.scene.cells.unit_id)
        per_unit: list[list[np.ndarray]] = [[] for _ in batch.unit_ids]
        for seg in range(-(-self.n_frames // SEGMENT_FRAMES)):
            for i, t in enumerate(batch.segment(seg).spike_times):
                per_unit[i].append(t[np.floor(t * self.spec.recording.fps) < self.n_frames])
        times = [np.concatenate(p) if p else np.empty(0) for p in per_unit]
        unit = np.concatenate([np.full(len(t), u, np.int64) for u, t in zip(batch.unit_ids, times)]
                              or [np.empty(0, np.int64)])
        return unit, np.concatenate(times or [np.empty(0)]).astype(np.float64)


@dataclass(frozen=True)
class Segment:
    """One time segment of a World: its Activity (None in a render-only World), C, the
    neuropil course and the motion."""

    activity: Activity | None
    C: np.ndarray       # (units, SEGMENT_FRAMES) float32
    f_np: np.ndarray    # (SEGMENT_FRAMES,) float32
    motion: tuple       # motion_segment's (rigid, mode amplitudes, axial)


#: Segments a World keeps (a 1,936-unit V4 segment is ~8 MB of C, ~26 MB with its Activity).
WORLD_SEGMENTS = 3
#: Segments a render-only World keeps (``truth=False``: the video writer, which asks for its
#: frames in order, two blocks at a time at most across a segment's edge). With three, an
#: hour's export held one segment more than a minute's (two segments), 8 MB of V4's ~550 MB.
RENDER_WORLD_SEGMENTS = 2
#: Worlds a process keeps (one per Spec, window and prefix).
PROCESS_WORLDS = 3
#: Windows whose motion mode patterns a World keeps (:meth:`World.mode_patterns`; a render's
#: tiles and the oracle's window; ~1 MB a 256 px tile).
PATTERN_WINDOWS = 32
_WORLDS: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def _trim_heap() -> None:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim(0)``; nothing
    elsewhere). Called when a World drops a trace segment: building segment after segment
    (~26 MB each for V4, in whichever thread asks first) leaves free space scattered in the
    heaps that glibc keeps, and a long export's or save's peak RSS crept up with it (docs/video.md,
    "Memory"). A few ms once per 1,024 frames; the values computed never depend on it."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _keep(cache: OrderedDict, key, value, size: int) -> None:
    """Insert ``value`` as the newest entry and drop the oldest beyond ``size``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def build_world(spec: Spec, window: tuple[int, int, int, int] | None = None, *,
                n_frames: int | None = None, truth: bool = True) -> World:
    """The World of ``spec``: its scene (cells reaching ``window`` only, if given) and units.

    No trace or motion is computed here (see :class:`World`); ``n_frames`` limits the frames
    it serves to a prefix. With ``truth=False`` its segments keep only what the render reads
    (the same bytes, less memory: the video writer's and the studio's estimate).
    """
    return World(spec, build_scene(spec, window), n_frames, truth=truth)


def get_world(spec_json: str, window: tuple[int, int, int, int] | None = None,
              n_frames: int | None = None) -> World:
    """The cached World of a Spec's JSON text (built once per process).

    A World that :func:`remember_world` put here (e.g. the one ``simulate`` built) is used as
    it is.
    """
    key = (spec_json, window, n_frames)
    with _LOCK:
        w = _WORLDS.get(key)
        if w is None:
            w = build_world(Spec.model_validate_json(spec_json), window, n_frames=n_frames)
        _keep(_WORLDS, key, w, PROCESS_WORLDS)
        return w


def release_segments(spec_json: str, keep) -> None:
    """:meth:`World.keep_only` ``keep`` on this process's World of the whole ``spec_json``
    recording, where it has one (none is built for it)."""
    with _LOCK:
        world = _WORLDS.get((spec_json, None, None))
    if world is not None:
        world.keep_only(set(keep))


def remember_world(world: World) -> None:
    """Put an already built World into this process's cache."""
    n = None if world.n_frames == world.spec.recording.n_frames else world.n_frames
    with _LOCK:
        _keep(_WORLDS, (world.spec.model_dump_json(), world.scene.window, n), world, PROCESS_WORLDS)


def _hemodynamics_on(spec: Spec) -> bool:
    return spec.vasculature.enabled and spec.vasculature.vasomotion.enabled


def render_electrons(world: World, frames: range, window: tuple[int, int, int, int]) -> np.ndarray:
    """Expected signal electrons (frames, h, w) float32 reaching the sensor window."""
    spec, sc = world.spec, world.scene
    y0, y1, x0, x1 = window
    f = np.arange(frames.start, frames.stop)
    C, fn = world.traces(frames)
    vi = sc.vignette[y0:y1, x0:x1] * sc.illumination[y0:y1, x0:x1]
    vg = sc.vignette[y0:y1, x0:x1] * sc.glow_e[y0:y1, x0:x1]
    if spec.motion.enabled:
        m = sc.margin_px
        motion = world.motion(frames)
        aw = axial_weights(motion, sc.axial_bound_um, frames) if sc.axial_e else None
        # the tissue in this thread's scratch array: the warp below is its only reader
        tissue = sc.tissue_e(C, fn, (y0 - m, y1 + m, x0 - m, x1 + m), aw, reuse=True)
        if _hemodynamics_on(spec):
            tissue = tissue * dilation_factor(spec, sc.vessel_chord_um[y0 : y1 + 2 * m, x0 : x1 + 2 * m], f)
        rigid, amp = displacement_terms(motion, spec.pixel_size_um, frames)
        pat = world.mode_patterns(motion, window)
        out = np.empty((len(f), y1 - y0, x1 - x0), np.float32)
        _warp(np.ascontiguousarray(tissue, np.float32), m, rigid, amp,
              np.ascontiguousarray(motion.mode_dir, np.float64), pat, vi, vg, out)
        return out
    else:
        moved = sc.tissue_e(C, fn, window)
        if _hemodynamics_on(spec):
            m = sc.margin_px
            moved = moved * dilation_factor(spec, sc.vessel_chord_um[y0 + m : y1 + m, x0 + m : x1 + m], f)
    return (vi * moved + vg).astype(np.float32, copy=False)


@njit(cache=True, nogil=True, error_model="numpy")
def _warp(tissue, m, rigid_px, amp_px, mode_dir, patterns, vi, vg, out):
    """out[t] = vi * (tissue[t] pulled from p - d(p, t), bilinear) + vg: the motion warp, one
    gather per pixel, in float32. ``tissue`` covers the window plus a margin of ``m`` px on
    every side (the motion's bound keeps every sample inside it; the cells are clamped all the
    same). A row at a time, in passes the compiler vectorises: the displacements
    (:func:`minisim.motion.displacement_row`, the values ``displacement_px`` returns), each
    sample's cell and fractions, then the gather and blend."""
    T, h, w = out.shape
    hp, wp = tissue.shape[1], tissue.shape[2]
    dy = np.empty(w, np.float32)
    dx = np.empty(w, np.float32)
    fy = np.empty(w, np.float32)
    fx = np.empty(w, np.float32)
    # unsigned cells: numba checks a signed index for wrap-around at every read, which kept
    # the gather below from vectorising (~25 % of this kernel)
    cell = np.empty(w, np.uint32)
    xs = np.empty(w, np.int32)
    for j in range(w):
        xs[j] = j + m
    ylim, xlim = np.int32(hp - 2), np.int32(wp - 2)
    i32, u32 = np.int32, np.uint32
    one, row = u32(1), u32(wp)
    for t in range(T):
        flat = tissue[t].ravel()
        for i in range(h):
            displacement_row(rigid_px, amp_px, mode_dir, patterns, t, i, dy, dx)
            for j in range(w):
                # the sample at (i + m - dy, j + m - dx): its cell from floor(-d), its fraction
                # -d - floor(-d), functions of d alone: a pixel samples the same in any window
                ny, nx = -dy[j], -dx[j]
                ly, lx = np.floor(ny), np.floor(nx)
                iy = i32(i + m) + i32(ly)
                ix = xs[j] + i32(lx)
                fy[j] = ny - ly
                fx[j] = nx - lx
                # the cell kept inside the tissue (never needed within the motion's bound)
                cell[j] = u32(min(max(iy, i32(0)), ylim) * i32(wp) + min(max(ix, i32(0)), xlim))
            for j in range(w):
                k = cell[j]
                a, b = flat[k], flat[k + one]
                c, d = flat[k + row], flat[k + row + one]
                top = a + fx[j] * (b - a)
                bottom = c + fx[j] * (d - c)
                out[t, i, j] = vi[i, j] * (top + fy[j] * (bottom - top)) + vg[i, j]


def render_block(world: World, frames: range, window: tuple[int, int, int, int]) -> np.ndarray:
    """Frames [t0, t1) of sensor window (y0, y1, x0, x1) as uint16 ADU."""
    spec = world.spec
    signal = render_electrons(world, frames, window)
    return _sensor.expose(signal, spec.sensor, spec.recording.seed, frames, window,
                          spec.recording.fps)


# --------------------------------------------------------------------------- dask
#: The default tiles' sides are multiples of this (whole cache lines of float32 rows, whole
#: groups of the sensor noise's four pixels per Philox call).
TILE_ALIGN_PX = 16


def _tile_side(n_px: int, target: int) -> int:
    """The side of the default tiles along an axis of ``n_px`` pixels: the axis cut into the
    whole number of tiles nearest ``n_px / target`` (at least one), as equal as multiples of
    :data:`TILE_ALIGN_PX` allow (only the last may be smaller)."""
    n = max(1, round(n_px / target))
    side = -(-n_px // n)
    return min(n_px, -(-side // TILE_ALIGN_PX) * TILE_ALIGN_PX)


def default_chunks(spec: Spec) -> dict[str, int]:
    """Blocks of 32 frames x tiles of about 256 px, as equal as the field allows: ~4 MB zarr chunks.

    The tiles' target side is the largest multiple of ``sensor.noise_tile_px`` up to 256 px
    (that side itself, if larger); each axis is then cut into the nearest whole number of such
    tiles, of equal sides (multiples of :data:`TILE_ALIGN_PX`). A 608 px V4 field is two tiles
    of 304 px, not 256 + 256 + 96: a thin edge tile costs nearly a whole tile's motion margin
    and its zarr chunk is compressed whole (padded), and a 1,200-frame V4 save ran ~10 % faster
    with equal tiles (docs/performance.md). Measured on 512 x 512 px, 2 threads: 64 frames x
    whole 512 px frames peaked at 2.6 GB RSS and 37 fps; 32 x 256 x 256 peaks at 0.66 GB and
    renders 70 fps (a block's float32 working copies stay in cache). The bytes never depend on
    this.
    """
    H, W = spec.sensor.height_px, spec.sensor.width_px
    tile = spec.sensor.noise_tile_px
    target = max(tile, (256 // tile) * tile)
    return {
        "frame": 32,
        "height": _tile_side(H, target),
        "width": _tile_side(W, target),
    }


def normalize_chunks(spec: Spec, chunks: dict[str, int] | None) -> dict[str, int]:
    out = default_chunks(spec)
    if chunks:
        unknown = set(chunks) - set(out)
        if unknown:
            raise ValueError(f"chunks has unknown dims {sorted(unknown)}; allowed: {sorted(out)}")
        for k, v in chunks.items():
            if v is None or v == -1:
                v = {"frame": spec.recording.n_frames, "height": spec.sensor.height_px,
                     "width": spec.sensor.width_px}[k]
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"chunks[{k!r}]={v!r} must be a positive integer (or -1 for whole)")
            out[k] = int(v)
    return out


def _span(index: int, size: int, total: int) -> tuple[int, int]:
    """[start, stop) of block ``index`` of regular blocks of ``size`` (the last one cut at ``total``)."""
    return index * size, min(total, (index + 1) * size)


def _render_chunk(spec_json: str, window_key, sizes: tuple[int, ...], shape: tuple[int, ...],
                  block_id=None):
    # block_id, not block_info: dask builds block_info for every block when the graph is made
    # (a 24-hour V4 movie has ~500,000 blocks: 90 s and 700 MB), block_id costs nothing
    (t0, t1), (y0, y1), (x0, x1) = (_span(i, c, n) for i, c, n in zip(block_id, sizes, shape))
    world = get_world(spec_json, window_key)
    return render_block(world, range(t0, t1), (y0, y1, x0, x1))


def movie_array(spec: Spec, chunks: dict[str, int] | None = None):
    """The movie as a lazy dask array (frame, height, width) uint16."""
    import dask.array as da
    from dask.base import tokenize

    c = normalize_chunks(spec, chunks)
    shape = (spec.recording.n_frames, spec.sensor.height_px, spec.sensor.width_px)
    sizes = (c["frame"], c["height"], c["width"])
    sj = spec.model_dump_json()
    # named here: dask hashed the chunks it was given, 54,000 of them for a 24-hour V4 movie
    return da.map_blocks(
        _render_chunk, sj, None, sizes, shape,
        chunks=da.core.normalize_chunks(sizes, shape),
        dtype=np.uint16, meta=np.empty((0, 0, 0), np.uint16),
        name=f"movie-{tokenize(sj, sizes, shape)}",
    )


#: Per-frame ground truth served a segment at a time: name -> (dtype, unit rows?, trailing shape)
SEGMENT_VARIABLES = {
    "C": (np.float32, True, ()),
    "dff": (np.float32, True, ()),
    "S": (np.uint8, True, ()),
    "neuropil": (np.float32, False, ()),
    "motion": (np.float32, False, (2,)),
    "vessel_dilation": (np.float32, False, ()),
}


def _segment_of(spec_json: str, seg: int) -> np.ndarray:
    """(1,) object array: the World's Segment ``seg``, built here once for every
    per-frame variable of that segment. It never evicts a cached segment
    (:meth:`World.segment` with ``evict=False``): dask may run these tasks far from the render
    blocks of the same frames, and they would evict the segments the render is reading (a
    12,000-frame V4 save rebuilt them again and again); while the cache has room (a recording of
    up to WORLD_SEGMENTS segments) the render reads the segment built here."""
    out = np.empty(1, object)
    world = get_world(spec_json)
    got = world.segment(seg, evict=False)
    out[0] = got if got.activity is not None else world.build_segment(seg, truth=True)
    return out


def segment_blocks(spec: Spec):
    """The recording's Segments as a lazy (segments,) object array, one block per segment: the
    one task per segment that :func:`segment_array`'s variables read, so a save builds each
    segment once for C, dF/F, S, the neuropil course, the motion and the moments of C, in
    whatever order it computes them (one task per variable each fetching the segment from a
    3-segment cache rebuilt a segment 7-8 times in an 8,192-frame save)."""
    from dask.base import tokenize

    # one plain task per segment (a 24-hour recording: 1,700), not a blockwise layer: dask
    # would fuse a blockwise one into each reader and build the segment once per reader
    sj = spec.model_dump_json()
    n_seg = -(-spec.recording.n_frames // SEGMENT_FRAMES)
    name = f"segment-{tokenize(sj)}"
    return plain_array(name, BlockTasks(name, (n_seg,), _segment_of_task, sj), ((1,) * n_seg,), object)


def _segment_of_task(index: tuple, spec_json: str) -> tuple:
    return (_segment_of, spec_json, index[0])


def _segment_chunk(block: np.ndarray | None, spec_json: str, name: str, n_frames: int, block_id=None):
    per_unit = SEGMENT_VARIABLES[name][1]
    k = block_id[1] if per_unit else block_id[0]
    t0, t1 = _span(k, SEGMENT_FRAMES, n_frames)
    if name == "vessel_dilation":
        return dilation(Spec.model_validate_json(spec_json), np.arange(t0, t1)).astype(np.float32)
    seg = block[0]
    lo, hi = t0 % SEGMENT_FRAMES, t0 % SEGMENT_FRAMES + (t1 - t0)
    if name == "motion":
        world = get_world(spec_json)
        motion = motion_frames(world.spec, range(t0, t1),
                               lambda j: seg.motion if j == k else world.segment(j).motion)
        return (motion.rigid_um / world.spec.pixel_size_um).astype(np.float32)
    if name == "neuropil":
        return seg.f_np[lo:hi]
    act = seg.activity
    values = {"C": seg.C, "dff": act.dff, "S": act.spikes}[name]
    return np.ascontiguousarray(values[:, lo:hi])


class BlockTasks(Mapping):
    """The tasks of a block-per-task dask layer, made when asked for: ``{(name, *index):
    make(index, *args)}`` over the block ``grid`` (blocks per axis). Holds no task until dask
    reads one, so a 24-hour recording's per-segment layers (1,700 blocks each) cost nothing up
    front; ``make`` and ``args`` are pickled with the layer where a graph is shipped."""

    def __init__(self, name: str, grid: tuple[int, ...], make, *args) -> None:
        self.name, self.grid, self.make, self.args = name, tuple(int(n) for n in grid), make, args

    def __getitem__(self, key):
        if (isinstance(key, tuple) and len(key) == len(self.grid) + 1 and key[0] == self.name
                and all(isinstance(i, int) and 0 <= i < n for i, n in zip(key[1:], self.grid))):
            return self.make(key[1:], *self.args)
        raise KeyError(key)

    def __iter__(self):
        return ((self.name, *index) for index in itertools.product(*map(range, self.grid)))

    def __len__(self) -> int:
        return math.prod(self.grid)


def plain_array(name: str, layer: Mapping, chunks: tuple, dtype, below: tuple = ()):
    """A dask array over ``chunks`` whose blocks are the tasks of ``layer`` ({(name, *block
    index): task}, a dict or :class:`BlockTasks`), reading the graphs of the dask collections
    ``below``.

    A plain graph, for per-segment and per-unit arrays: ``da.map_blocks`` inspected, pickled and
    hashed its function and arguments for each array, ~1 ms apiece and ~40 % of ``simulate()``
    of a 40-frame recording.
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    layers, deps = {}, {}
    for d in below:
        g = d.__dask_graph__()
        layers.update(g.layers)
        deps.update(g.dependencies)
    layers[name], deps[name] = layer, set(layers)
    return da.Array(HighLevelGraph(layers, deps), name, chunks,
                    meta=np.empty((0,) * len(chunks), dtype))


def plain_delayed(key: str, task: tuple, layers: dict, dependencies: list):
    """A Delayed of ``task`` at ``key``, over plain ``layers`` (name -> {key: task}) that read
    the dask collections ``dependencies`` and each other: one high-level graph, no tokenising of
    arguments (:func:`plain_array`'s twin for one task)."""
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    all_layers, deps = {}, {}
    for d in dependencies:
        all_layers.update(d.dask.layers)
        deps.update(d.dask.dependencies)
    below = set(all_layers)
    for name, layer in layers.items():
        all_layers[name] = layer
        deps[name] = set(below)
    all_layers[key] = {key: task}
    deps[key] = set(all_layers) - {key}
    return Delayed(key, HighLevelGraph(all_layers, deps), layer=key)


def _segment_task(index: tuple, segments: str | None, spec_json: str, name: str, n_frames: int,
                  per_unit: bool) -> tuple:
    """The task of block ``index`` of :func:`segment_array`'s ``name``: it reads segment
    ``index[1]`` (per-unit variables) or ``index[0]`` of the ``segments`` layer."""
    k = index[1] if per_unit else index[0]
    return (_segment_chunk, None if segments is None else (segments, k), spec_json, name, n_frames,
            index)


def segment_array(spec: Spec, name: str, n_units: int = 0, segments=None):
    """A per-frame ground-truth variable as a lazy dask array, one chunk per time segment.

    ``name`` is one of :data:`SEGMENT_VARIABLES`: ``C``, ``dff``, ``S`` are (units, frames);
    ``neuropil`` and ``vessel_dilation`` (frames,); ``motion`` (frames, 2) rigid displacement in
    px. Each chunk is computed from the segment's keyed state alone (docs/segments.md): it reads
    the block of ``segments`` (:func:`segment_blocks`, made here if not given; pass the same one
    to every variable), so C, dF/F, S, the neuropil and the motion of a segment are simulated once
    for all of them.
    """
    import dask.array as da
    from dask.base import tokenize

    if name not in SEGMENT_VARIABLES:
        raise ValueError(f"name={name!r} is not a segment variable; allowed: {sorted(SEGMENT_VARIABLES)}")
    dtype, per_unit, trailing = SEGMENT_VARIABLES[name]
    T = spec.recording.n_frames
    sj = spec.model_dump_json()
    frames = da.core.normalize_chunks((SEGMENT_FRAMES,), (T,))[0]
    chunks = ((n_units,), frames) if per_unit else (frames, *((k,) for k in trailing))
    grid = tuple(len(c) for c in chunks)
    if name == "vessel_dilation":  # a function of the Spec and the frames alone
        key = f"{name}-{tokenize(sj, T)}"
        return plain_array(key, BlockTasks(key, grid, _segment_task, None, sj, name, T, per_unit),
                           chunks, dtype)
    segments = segment_blocks(spec) if segments is None else segments
    key = f"{name}-{tokenize(sj, T, n_units, segments.name)}"
    return plain_array(key, BlockTasks(key, grid, _segment_task, segments.name, sj, name, T, per_unit),
                       chunks, dtype, (segments,))


def render_electrons_static(world: World, C: np.ndarray, f_np: np.ndarray) -> np.ndarray:
    """Expected electrons of the whole field for given traces, without motion (1 frame)."""
    sc = world.scene
    H, W = world.spec.sensor.height_px, world.spec.sensor.width_px
    tissue = sc.tissue_e(C, f_np, (0, H, 0, W))
    return sc.vignette * sc.illumination * tissue + sc.vignette * sc.glow_e
