"""Ground truth derived from the World: dF/F and spikes, spike tables, vessel dilation, per-cell metrics.

The movie is rendered by :mod:`minisim.render`; everything here is what a recording reports
*about* that movie, beside A and C: the calcium dF/F and spike counts (lazily, a batch of units
at a time), the spike table, the vasomotion course, and per cell its peak SNR, focus, vessel
overlap and whether a good pipeline could detect it. :func:`minisim.recording.build_dataset`
calls these; it computes none of them itself.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import activity, render
from .scene.optics import patch_overlap, pixel_index
from .spec import Spec

# --------------------------------------------------------------------------- traces
#: The Dataset's per-frame ground truth, lazy, one chunk per time segment (docs/segments.md).
TRACE_VARIABLES = ("C", "dff", "S", "neuropil", "motion", "vessel_dilation")


def lazy_traces(spec: Spec, n_units: int) -> dict:
    """C, dF/F, S (unit_id, frame), the neuropil course, rigid motion (px) and vessel dilation
    (frame, ...) as dask arrays chunked by time segment: nothing of them is computed here, and
    no process ever holds one of them whole (:func:`minisim.render.segment_array`)."""
    return {name: render.segment_array(spec, name, n_units) for name in TRACE_VARIABLES}


def spike_table(source: Spec | render.World) -> tuple[np.ndarray, np.ndarray]:
    """Every spike as a row: (unit id int64, time in s float64), units in order, times as drawn.

    The table's length depends on the data, so it is not a lazy Dataset variable; it is a pure
    function of the Spec (or of a World already built from it), computed here a segment at a
    time (docs/segments.md).
    """
    world = source if isinstance(source, render.World) else render.build_world(source)
    return world.spike_table()


# --------------------------------------------------------------------------- per-cell truth
DETECTABLE_DEFOCUS_RADII = 3.0


def cell_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per-unit ground truth beyond A and C: peak SNR, focus, vessel overlap, detectability.

    The union of :func:`static_metrics` (cheap: from the scene alone) and
    :func:`activity_metrics` (``pnr``, ``oracle_r``, ``compactness``, ``visibility`` and
    ``detectable``: they read realised activity and rendered frames). A cell is *detectable*
    when its centre lies inside the field of view and its oracle trace, compactness and
    visibility pass :data:`ORACLE_MIN_R`, :data:`COMPACT_MIN_FRACTION` and
    :data:`VISIBLE_MIN_DFF` (docs/anatomy.md, "Detectability").
    """
    return {**static_metrics(world), **activity_metrics(world)}


#: The per-unit variables of :func:`activity_metrics`, with their dtypes: the Dataset holds
#: them lazily (:func:`lazy_activity_metrics`), so ``simulate()`` renders nothing for them.
ACTIVITY_METRICS = {"pnr": np.float32, "detectable": bool, "oracle_r": np.float32,
                    "compactness": np.float32, "visibility": np.float32}


def static_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per unit, from the scene alone: ``in_focus`` (|dz| <= 3 soma radii, docs/physics.md §8.10),
    ``vessel_overlap_fraction``, ``defocus_um`` and ``psf_sigma_um``."""
    spec, sc = world.spec, world.scene
    H, W, m = spec.sensor.height_px, spec.sensor.width_px, sc.margin_px
    n = len(sc.cells)
    in_focus = np.abs(sc.dz_um) <= DETECTABLE_DEFOCUS_RADII * sc.cells.radius_um
    mask = sc.vessel_chord_um > 0
    overlap = np.zeros(n, np.float32)
    for u, (i0, j0, patch) in enumerate(sc.planted):
        where = patch_overlap(i0, j0, patch.shape, (-m, H + m, -m, W + m))
        if where is not None:
            in_patch, in_grid = where
            overlap[u] = patch[in_patch][mask[in_grid]].sum()
    return {
        "in_focus": in_focus,
        "vessel_overlap_fraction": overlap,
        "defocus_um": sc.dz_um.astype(np.float32),
        "psf_sigma_um": sc.sigma_um.astype(np.float32),
    }


def peak_snr(world: render.World) -> np.ndarray:
    """Per unit, the peak SNR of its realised activity (docs/physics.md §6), float32.

    w = a / |a| over the pixels where the cell's sharp image exceeds 20 % of its maximum;
    SNR = max_t (w . a (C_t - C_0)) / sqrt(sum_p w_p^2 var_p), with var_p the per-pixel temporal
    variance (shot + dark + read + quantisation) at the mean image. The activity is the first
    segment's: a bounded keyed sample (docs/segments.md).
    """
    spec, sc = world.spec, world.scene
    H, W, m = spec.sensor.height_px, spec.sensor.width_px, sc.margin_px
    K = spec.sensor.gain_adu_per_e
    n = len(sc.cells)
    C, f_np = world.traces(range(min(world.n_frames, activity.SEGMENT_FRAMES)))
    mean_c = C.mean(axis=1, keepdims=True).astype(np.float32)
    mean_e = render.render_electrons_static(world, mean_c, np.float32([f_np.mean()]))[0]
    lam = mean_e + spec.sensor.dark_current_e_per_s / spec.recording.fps
    if spec.sensor.noise:
        var_adu = K * K * (lam + spec.sensor.read_noise_e**2) + 1 / 12
    else:
        var_adu = np.full_like(lam, 1 / 12)
    vi = (sc.vignette * sc.illumination).ravel()
    csc = sc.sharp_e.tocsc()
    Wp = W + 2 * m
    pnr = np.zeros(n, np.float32)
    swing = (C.max(axis=1) - C[:, 0]) if C.shape[1] else np.zeros(n)
    for u in range(n):
        rows = csc.indices[csc.indptr[u] : csc.indptr[u + 1]]
        vals = csc.data[csc.indptr[u] : csc.indptr[u + 1]]
        i, j = rows // Wp - m, rows % Wp - m
        inside = (i >= 0) & (i < H) & (j >= 0) & (j < W)
        if not inside.any():
            continue
        p = i[inside] * W + j[inside]
        a = K * vals[inside].astype(np.float64) * vi[p]
        if not a.max() > 0:
            continue
        core = a > 0.2 * a.max()
        a, p = a[core], p[core]
        wgt = a / np.sqrt((a * a).sum())
        noise = np.sqrt((wgt * wgt * var_adu.ravel()[p]).sum())
        pnr[u] = float((wgt * a).sum() * max(swing[u], 0) / noise)
    return pnr


def activity_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per unit: ``pnr`` (:func:`peak_snr`), :func:`detectability`'s three measures and the
    ``detectable`` rule over them (centre inside the field of view as well)."""
    spec, c = world.spec, world.scene.cells
    half_h, half_w = spec.fov_um[0] / 2, spec.fov_um[1] / 2
    inside_fov = (np.abs(c.y_um) < half_h) & (np.abs(c.x_um) < half_w)
    det = detectability(world)
    detectable = (inside_fov & (det["oracle_r"] >= ORACLE_MIN_R)
                  & (det["compactness"] >= COMPACT_MIN_FRACTION)
                  & (det["visibility"] >= VISIBLE_MIN_DFF))
    return {"pnr": peak_snr(world), "detectable": detectable, **det}


def _activity_metrics_task(spec_json: str) -> np.ndarray:
    """All of :func:`activity_metrics` as one float64 (variables, units) array (one dask task)."""
    met = activity_metrics(render.get_world(spec_json))
    return np.stack([np.asarray(met[name], np.float64) for name in ACTIVITY_METRICS])


def lazy_activity_metrics(spec: Spec, n_units: int) -> dict:
    """:func:`activity_metrics` as dask arrays over ``unit_id``, all from one task.

    They read realised activity and render the oracle's frames, which takes seconds on a full
    V4 field, so the Dataset holds them lazily: ``simulate()`` computes none of them, and a save
    (or ``.values``) computes the one task that gives them all.
    """
    import dask
    import dask.array as da

    both = da.from_delayed(dask.delayed(_activity_metrics_task, pure=True)(spec.model_dump_json()),
                           shape=(len(ACTIVITY_METRICS), n_units), dtype=np.float64)
    return {name: both[i].astype(dtype) for i, (name, dtype) in enumerate(ACTIVITY_METRICS.items())}


# --------------------------------------------------------------------------- detectability
#: The oracle reads this many frames at most: ORACLE_SEGMENTS runs of contiguous frames spread
#: evenly over the recording (all frames of a shorter one). Fixed by the Spec and the length.
ORACLE_FRAMES = 128
ORACLE_SEGMENTS = 4
#: A cell is detectable when, with its centre inside the field, its oracle trace correlates
#: >= ORACLE_MIN_R with C, its footprint keeps >= COMPACT_MIN_FRACTION of its energy within
#: COMPACT_RADII soma radii of its centre, and its peak dF/F over the local image at its core is
#: >= VISIBLE_MIN_DFF (docs/anatomy.md, "Detectable cells").
ORACLE_MIN_R = 0.8
COMPACT_RADII = 1.5
COMPACT_MIN_FRACTION = 0.5
VISIBLE_MIN_DFF = 0.05
_CORE_FRACTION = 0.2


def oracle_frames(n_frames: int) -> list[range]:
    """The frames the oracle reads: up to ORACLE_SEGMENTS contiguous runs, ORACLE_FRAMES in all.

    >>> oracle_frames(100)
    [range(0, 100)]
    >>> oracle_frames(1000)
    [range(0, 32), range(323, 355), range(645, 677), range(968, 1000)]
    """
    if n_frames <= ORACLE_FRAMES:
        return [range(n_frames)]
    seg = ORACLE_FRAMES // ORACLE_SEGMENTS
    starts = np.linspace(0, n_frames - seg, ORACLE_SEGMENTS).round().astype(int)
    return [range(int(s), int(s) + seg) for s in starts]


def _trace_moments(world: render.World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit over every frame: variance, maximum and mean of C (running, 1024 frames at a time)."""
    n, T = len(world.scene.cells), world.n_frames
    s1, s2 = np.zeros(n), np.zeros(n)
    top = np.full(n, -np.inf)
    for t0 in range(0, T, 1024):
        C = world.traces(range(t0, min(t0 + 1024, T)))[0].astype(np.float64)
        s1 += C.sum(axis=1)
        s2 += (C * C).sum(axis=1)
        top = np.maximum(top, C.max(axis=1))
    mean = s1 / max(T, 1)
    return np.maximum(s2 / max(T, 1) - mean * mean, 0.0), np.where(T > 0, top, 0.0), mean


def detectability(world: render.World) -> dict[str, np.ndarray]:
    """Per unit: ``oracle_r``, ``compactness`` and ``visibility`` (float32), from the movie as rendered.

    - *oracle trace*: the best trace any pipeline could extract. On the frames of
      :func:`oracle_frames`, rendered with motion and noise (:func:`render.render_block`), each
      frame is shifted back by the true rigid displacement (a perfect rigid registration); from
      it the true model (offset, background b.f and every unit's A.C, unmoved) is subtracted,
      and the residual is read through the cell's footprint core (pixels >= 20 % of its peak,
      weighted by A): o_t = C_t + e_t. What registration cannot undo (non-rigid warp, focus
      drift, vasomotion), noise and crosstalk stay in e_t. ``oracle_r`` is the correlation of
      o with C over the whole recording, (var C + cov(C, e)) / sqrt(var C (var C + 2 cov + var e)),
      with var C from every frame and the moments of e from the sampled ones (so a cell silent
      in the sample is judged by its noise against its whole trace); 0 for a constant C.
    - *compactness*: the share of the footprint's energy (sum of A^2 in the field) within 1.5
      soma radii of the cell's centre: low when scattered or defocused light dominates.
    - *visibility*: the cell's peak dF/F at its core, (max C - mean C) times its mean A there,
      over the mean (registered) image there, offset removed: low beside a much brighter
      neighbour or in a bright background.

    A World built for a window is judged on that window alone.
    """
    from scipy import ndimage

    spec, sc = world.spec, world.scene
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    y0, y1, x0, x1 = sc.window if sc.window is not None else (0, H, 0, W)
    h, w = y1 - y0, x1 - x0
    K = np.float32(spec.sensor.gain_adu_per_e)
    n = len(sc.cells)
    c = sc.cells
    vi = (K * sc.vignette * sc.illumination)[y0:y1, x0:x1]
    cy = pixel_index(c.y_um, H, d) - y0  # in window pixels
    cx = pixel_index(c.x_um, W, d) - x0
    reach = COMPACT_RADII * c.radius_um / d
    compactness = np.zeros(n, np.float32)
    rows, cols, vals = [], [], []
    for u0 in range(0, n, 32):
        fp = vi[None] * sc.footprints_e(slice(u0, min(u0 + 32, n)), (y0, y1, x0, x1))
        flat = fp.reshape(len(fp), -1)
        peak = flat.max(axis=1)
        energy = (flat.astype(np.float64) ** 2).sum(axis=1)
        k, p = np.nonzero(flat >= (_CORE_FRACTION * peak)[:, None])
        lit = peak[k] > 0
        rows.append(u0 + k[lit])
        cols.append(p[lit])
        vals.append(flat[k[lit], p[lit]])
        for k in np.flatnonzero(peak > 0):  # energy within COMPACT_RADII soma radii: a small box
            u = u0 + k
            ya, yb = max(int(cy[u] - reach[u]), 0), min(int(cy[u] + reach[u]) + 2, h)
            xa, xb = max(int(cx[u] - reach[u]), 0), min(int(cx[u] + reach[u]) + 2, w)
            if ya < yb and xa < xb:
                yy, xx = np.mgrid[ya:yb, xa:xb]
                near = (yy - cy[u]) ** 2 + (xx - cx[u]) ** 2 <= reach[u] ** 2
                box = fp[k, ya:yb, xa:xb].astype(np.float64)
                compactness[u] = (box[near] ** 2).sum() / energy[k]
    cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt))
    core = sp.csr_matrix((cat(vals, np.float32), (cat(rows, int), cat(cols, int))), shape=(n, h * w))
    a_sum = np.asarray(core.sum(axis=1), np.float64).ravel()
    a_sq = np.asarray(core.multiply(core).sum(axis=1), np.float64).ravel()

    level = np.float32(spec.sensor.offset_adu) + K * np.float32(spec.sensor.dark_current_e_per_s / spec.recording.fps)
    err_parts, c_parts = [], []
    image = np.zeros(n)
    n_read = 0
    for seg in oracle_frames(world.n_frames):
        for t0 in range(seg.start, seg.stop, 16):
            frames = range(t0, min(t0 + 16, seg.stop))
            C, f_np = world.traces(frames)
            Y = render.render_block(world, frames, (y0, y1, x0, x1)).astype(np.float32) - level
            if spec.motion.enabled:
                rigid_px = world.motion(frames).rigid_um / d
                for i, shift in enumerate(rigid_px):  # a perfect rigid registration
                    Y[i] = ndimage.shift(Y[i], -shift, order=1, mode="nearest")
            tissue = sc.tissue_e(C, f_np, (y0, y1, x0, x1))
            model = vi * tissue + (K * sc.vignette * sc.glow_e)[y0:y1, x0:x1]
            resid = (Y - model).reshape(len(frames), -1).T.astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                err_parts.append(np.asarray(core @ resid) / a_sq[:, None])
            c_parts.append(C.astype(np.float64))
            image += np.asarray(core @ Y.reshape(len(frames), -1).T.astype(np.float64)).sum(axis=1)
            n_read += len(frames)
    e = np.concatenate(err_parts, axis=1)
    cs = np.concatenate(c_parts, axis=1)
    e -= e.mean(axis=1, keepdims=True)
    cs -= cs.mean(axis=1, keepdims=True)
    var_e, cov = (e * e).mean(axis=1), (e * cs).mean(axis=1)
    var_c, top, mean_c = _trace_moments(world)
    swing = top - mean_c
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (var_c + cov) / np.sqrt(var_c * (var_c + 2 * cov + var_e))
        vis = (a_sq / a_sum) * swing / (image / max(n_read, 1) / a_sum)
    ok = (a_sq > 0) & (var_c > 0)
    return {
        "oracle_r": np.where(ok & np.isfinite(r), r, 0.0).astype(np.float32),
        "compactness": compactness,
        "visibility": np.where((a_sq > 0) & np.isfinite(vis) & (vis > 0), vis, 0.0).astype(np.float32),
    }
