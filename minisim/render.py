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

The ``World`` (scene + traces + motion) is built once per process from the Spec and cached,
so dask tasks carry only the Spec's JSON: nothing big is embedded in the graph, and a process
or distributed worker builds what it needs on first use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields

import numpy as np

from . import sensor as _sensor
from .activity import Activity, simulate_activity
from .motion import Motion, axial_weights, displacement_px, simulate_motion
from .scene import Scene, build_scene
from .scene.optics import pixel_center_um
from .scene.vessels import dilation_factor
from .spec import Spec

#: Version of the rendering algorithm: bump whenever the bytes for a given Spec change.
RENDER_ALGORITHM = 2


@dataclass
class World:
    spec: Spec
    scene: Scene
    activity: Activity | None  # None in a render-only World (see build_world's ``truth``);
    #                            per-unit fields only: spikes, dff, bleach are None
    motion: Motion
    C: np.ndarray           # (units, frames) float32, = activity.C
    f_np: np.ndarray        # (frames,) float32 neuropil course
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return self.C.shape[1]


_WORLDS: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
#: Units per batch when a World computes its traces (64: the temporaries of a 6,000-frame
#: batch stay ~10 MB; measured no slower than 256).
TRACE_BATCH_UNITS = 64


def _traces(spec: Spec, unit_ids: np.ndarray, n_frames: int | None,
            truth: bool = False) -> tuple[Activity | None, np.ndarray, np.ndarray]:
    """(Activity or None, C (units, frames) float32, neuropil course), a batch of units at a time.

    Traces are keyed per unit, so batching gives the same bytes as one call, and the
    simulation's temporaries are those of one batch. Of the (units, frames) arrays only C
    (4 bytes per unit-frame) is kept; ``truth=True`` adds an Activity with the per-unit
    parameters and spike times, whose ``spikes``, ``dff`` and ``bleach`` are None (bleaching
    is in C; a Recording computes dF/F and S lazily, a batch of units at a time).
    """
    T = spec.recording.n_frames if n_frames is None else int(n_frames)
    n = len(unit_ids)
    C = np.empty((n, T), np.float32)
    # every per-unit (not per-frame) field of Activity, gathered batch by batch
    per_unit: dict[str, list] = {f.name: [] for f in fields(Activity)
                                 if f.name not in {"spikes", "dff", "bleach", "neuropil_f"}}
    f_np = None
    for i in range(0, max(n, 1), TRACE_BATCH_UNITS):
        act = simulate_activity(spec, unit_ids[i : i + TRACE_BATCH_UNITS], T)
        C[i : i + TRACE_BATCH_UNITS] = act.C
        if truth:
            for k, parts in per_unit.items():
                parts.append(getattr(act, k))
        f_np = act.neuropil_f if f_np is None else f_np
    f_np = np.ascontiguousarray(f_np, np.float32)
    if not truth:
        return None, C, f_np
    spike_times = [t for part in per_unit.pop("spike_times") for t in part]  # a list per unit
    activity = Activity(spikes=None, dff=None, bleach=None, spike_times=spike_times, neuropil_f=f_np,
                        **{k: np.concatenate(v) for k, v in per_unit.items()})
    return activity, C, f_np


def build_world(spec: Spec, window: tuple[int, int, int, int] | None = None, *,
                n_frames: int | None = None, truth: bool = True) -> World:
    """Scene, traces and motion of ``spec``.

    ``window`` keeps only the cells that reach that sensor window; ``n_frames`` computes the
    first frames only (traces and motion are prefix-stable, so a preview of frames [0, n) is
    bit-identical to the full render's). Of the per-frame traces a World keeps C alone (4 bytes
    per unit and frame); ``truth=False`` also skips ``activity`` (the per-unit parameters and
    spike times the ground truth needs), for workers and the video writer.
    """
    scene = build_scene(spec, window)
    motion = simulate_motion(spec, n_frames)
    activity, C, f_np = _traces(spec, scene.cells.unit_id, n_frames, truth)
    return World(spec, scene, activity, motion, C, f_np)


def get_world(spec_json: str, window: tuple[int, int, int, int] | None = None,
              n_frames: int | None = None) -> World:
    """The cached render-only World of a Spec's JSON text (built once per process).

    A World that :func:`remember_world` put here (e.g. the one ``simulate`` built, with its
    ground truth) is used as it is.
    """
    key = (spec_json, window, n_frames)
    with _LOCK:
        w = _WORLDS.get(key)
        if w is None:
            w = build_world(Spec.model_validate_json(spec_json), window, n_frames=n_frames, truth=False)
            _WORLDS[key] = w
            while len(_WORLDS) > 3:
                _WORLDS.popitem(last=False)
        else:
            _WORLDS.move_to_end(key)
        return w


def remember_world(world: World) -> None:
    """Put an already built World into this process's cache."""
    with _LOCK:
        n = None if world.n_frames == world.spec.recording.n_frames else world.n_frames
        _WORLDS[(world.spec.model_dump_json(), world.scene.window, n)] = world
        while len(_WORLDS) > 3:
            _WORLDS.popitem(last=False)


def _hemodynamics_on(spec: Spec) -> bool:
    return spec.vasculature.enabled and spec.vasculature.vasomotion.enabled


def render_electrons(world: World, frames: range, window: tuple[int, int, int, int]) -> np.ndarray:
    """Expected signal electrons (frames, h, w) float32 reaching the sensor window."""
    spec, sc = world.spec, world.scene
    y0, y1, x0, x1 = window
    f = np.arange(frames.start, frames.stop)
    C = world.C[:, f]
    fn = world.f_np[f]
    if spec.motion.enabled:
        m = sc.margin_px
        aw = axial_weights(world.motion, sc.axial_bound_um, frames) if sc.axial_e else None
        tissue = sc.tissue_e(C, fn, (y0 - m, y1 + m, x0 - m, x1 + m), aw)
        if _hemodynamics_on(spec):
            tissue = tissue * dilation_factor(spec, sc.vessel_chord_um[y0 : y1 + 2 * m, x0 : x1 + 2 * m], f)
        H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
        ys, xs = np.arange(y0, y1), np.arange(x0, x1)
        dy, dx = displacement_px(world.motion, d, frames, pixel_center_um(ys, H, d),
                                 pixel_center_um(xs, W, d))
        # bilinear pull from the tissue, frame by frame (cache-sized working set); one flat
        # index per output pixel and four 1-D takes (3-index fancy indexing was ~2x slower)
        yf, xf = ys.astype(np.float32)[:, None], xs.astype(np.float32)[None, :]
        Ww = tissue.shape[2]
        moved = np.empty((len(f), y1 - y0, x1 - x0), np.float32)
        for t in range(len(f)):
            sy, sx = yf - dy[t], xf - dx[t]
            iy, ix = np.floor(sy), np.floor(sx)
            fy, fx = sy - iy, sx - ix
            at = (iy.astype(np.int64) - (y0 - m)) * Ww + (ix.astype(np.int64) - (x0 - m))
            flat = tissue[t].reshape(-1)
            moved[t] = (
                ((1 - fy) * (1 - fx)) * flat.take(at)
                + ((1 - fy) * fx) * flat.take(at + 1)
                + (fy * (1 - fx)) * flat.take(at + Ww)
                + (fy * fx) * flat.take(at + (Ww + 1))
            )
    else:
        moved = sc.tissue_e(C, fn, window)
        if _hemodynamics_on(spec):
            m = sc.margin_px
            moved = moved * dilation_factor(spec, sc.vessel_chord_um[y0 + m : y1 + m, x0 + m : x1 + m], f)
    vi = sc.vignette[y0:y1, x0:x1] * sc.illumination[y0:y1, x0:x1]
    vg = sc.vignette[y0:y1, x0:x1] * sc.glow_e[y0:y1, x0:x1]
    return (vi * moved + vg).astype(np.float32, copy=False)


def render_block(world: World, frames: range, window: tuple[int, int, int, int]) -> np.ndarray:
    """Frames [t0, t1) of sensor window (y0, y1, x0, x1) as uint16 ADU."""
    spec = world.spec
    signal = render_electrons(world, frames, window)
    return _sensor.expose(signal, spec.sensor, spec.recording.seed, frames, window,
                          spec.recording.fps)


# --------------------------------------------------------------------------- dask
def default_chunks(spec: Spec) -> dict[str, int]:
    """Blocks of 32 frames x tiles of ~256 px (whole noise tiles): 4 MB zarr chunks.

    Measured on 512 x 512 px, 2 threads (see docs/performance.md): 64 frames x whole 512 px
    frames peaked at 2.6 GB RSS and 37 fps; 32 x 256 x 256 peaks at 0.66 GB and renders 70 fps
    (a block's float32 working copies stay in cache). The bytes never depend on this.
    """
    H, W = spec.sensor.height_px, spec.sensor.width_px
    tile = spec.sensor.noise_tile_px
    side = max(tile, (256 // tile) * tile)
    return {
        "frame": 32,
        "height": min(H, side),
        "width": min(W, side),
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


def _render_chunk(spec_json: str, window_key, block_info=None):
    loc = block_info[None]["array-location"]
    (t0, t1), (y0, y1), (x0, x1) = loc
    world = get_world(spec_json, window_key)
    return render_block(world, range(t0, t1), (y0, y1, x0, x1))


def movie_array(spec: Spec, chunks: dict[str, int] | None = None):
    """The movie as a lazy dask array (frame, height, width) uint16."""
    import dask.array as da

    c = normalize_chunks(spec, chunks)
    shape = (spec.recording.n_frames, spec.sensor.height_px, spec.sensor.width_px)
    spec_json = spec.model_dump_json()
    return da.map_blocks(
        _render_chunk, spec_json, None,
        chunks=da.core.normalize_chunks((c["frame"], c["height"], c["width"]), shape),
        dtype=np.uint16, meta=np.empty((0, 0, 0), np.uint16),
    )


def render_electrons_static(world: World, C: np.ndarray, f_np: np.ndarray) -> np.ndarray:
    """Expected electrons of the whole field for given traces, without motion (1 frame)."""
    sc = world.scene
    H, W = world.spec.sensor.height_px, world.spec.sensor.width_px
    tissue = sc.tissue_e(C, f_np, (0, H, 0, W))
    return sc.vignette * sc.illumination * tissue + sc.vignette * sc.glow_e
