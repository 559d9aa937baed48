"""Ground truth derived from the World: dF/F and spikes, spike tables, vessel dilation, per-cell metrics.

The movie is rendered by :mod:`minisim.render`; everything here is what a recording reports
*about* that movie, beside A and C: the calcium dF/F and spike counts (lazily, a batch of units
at a time), the spike table, the vasomotion course, and per cell its peak SNR, focus, vessel
overlap and whether a good pipeline could detect it. :func:`minisim.recording.build_dataset`
calls these; it computes none of them itself.
"""

from __future__ import annotations

import numpy as np

from . import activity, render
from .scene import vessels
from .scene.optics import patch_overlap
from .spec import Spec


# --------------------------------------------------------------------------- traces
def _activity_block(spec_json: str, unit_ids: np.ndarray, n_frames: int, block_info=None):
    """(2, units, frames) float32: dF/F and spike counts of one batch of units.

    Traces are keyed per unit, so a batch gives the values the whole population would; counts
    (at most 255) are exact in float32.
    """
    (_, _), (u0, u1), (_, _) = block_info[None]["array-location"]
    act = activity.simulate_activity(Spec.model_validate_json(spec_json), unit_ids[u0:u1], n_frames)
    return np.stack([act.dff.astype(np.float32, copy=False), act.spikes.astype(np.float32)])


def lazy_dff_and_spikes(spec: Spec, unit_ids: np.ndarray, n_frames: int, frame_chunk: int):
    """dF/F (float32) and S (uint8), (unit_id, frame), as dask arrays in batches of units.

    Both come from one task per batch, so saving them together simulates each batch once; the
    saving process never holds them for every unit (5 bytes per unit and frame). Their frame
    chunks are ``frame_chunk`` frames (at most the recording's length).
    """
    import dask.array as da

    n = len(unit_ids)
    units = da.core.normalize_chunks((render.TRACE_BATCH_UNITS,), (n,))[0]
    both = da.map_blocks(_activity_block, spec.model_dump_json(), np.asarray(unit_ids), n_frames,
                         chunks=((2,), units, (n_frames,)), dtype=np.float32,
                         meta=np.empty((0, 0, 0), np.float32))
    frames = min(frame_chunk, max(n_frames, 1))
    return (both[0].rechunk({1: frames}), both[1].astype(np.uint8).rechunk({1: frames}))


def spike_table(unit_ids: np.ndarray, spike_times: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every spike as a row: (unit id int64, time in s float64), units in order, times as drawn."""
    spike_unit = np.concatenate(
        [np.full(len(s), u, np.int64) for u, s in zip(unit_ids, spike_times)]
        or [np.empty(0, np.int64)]
    )
    spike_time_s = np.concatenate(list(spike_times) or [np.empty(0)]).astype(np.float64)
    return spike_unit, spike_time_s


def vessel_dilation(spec: Spec, n_frames: int) -> np.ndarray:
    """(frames,) float32 fractional vessel dilation (vasomotion) of each frame."""
    return vessels.dilation(spec, np.arange(n_frames)).astype(np.float32)


# --------------------------------------------------------------------------- per-cell truth
DETECTABLE_PNR = 3.0
DETECTABLE_DEFOCUS_RADII = 3.0


def cell_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per-unit ground truth beyond A and C: peak SNR, focus, vessel overlap, detectability.

    Peak SNR (physics.md §6): w = a / |a| over the pixels where the cell's sharp image exceeds
    20 % of its maximum; SNR = max_t (w . a (C_t - C_0)) / sqrt(sum_p w_p^2 var_p), with var_p
    the per-pixel temporal variance (shot + dark + read + quantisation) at the mean image.
    A cell is *detectable* when its SNR >= 3, |dz| <= 3 soma radii (physics.md §8.10) and its
    centre lies inside the field of view.
    """
    spec, sc = world.spec, world.scene
    H, W, m = spec.sensor.height_px, spec.sensor.width_px, sc.margin_px
    K = spec.sensor.gain_adu_per_e
    n = len(sc.cells)
    mean_c = world.C.mean(axis=1, keepdims=True).astype(np.float32)
    mean_e = render.render_electrons_static(world, mean_c, np.float32([world.f_np.mean()]))[0]
    lam = mean_e + spec.sensor.dark_current_e_per_s / spec.recording.fps
    if spec.sensor.noise:
        var_adu = K * K * (lam + spec.sensor.read_noise_e**2) + 1 / 12
    else:
        var_adu = np.full_like(lam, 1 / 12)
    vi = (sc.vignette * sc.illumination).ravel()
    csc = sc.sharp_e.tocsc()
    Wp = W + 2 * m
    pnr = np.zeros(n, np.float32)
    swing = (world.C.max(axis=1) - world.C[:, 0]) if world.C.shape[1] else np.zeros(n)
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
    c = sc.cells
    in_focus = np.abs(sc.dz_um) <= DETECTABLE_DEFOCUS_RADII * c.radius_um
    half_h, half_w = spec.fov_um[0] / 2, spec.fov_um[1] / 2
    inside_fov = (np.abs(c.y_um) < half_h) & (np.abs(c.x_um) < half_w)
    mask = sc.vessel_chord_um > 0
    overlap = np.zeros(n, np.float32)
    for u, (i0, j0, patch) in enumerate(sc.planted):
        where = patch_overlap(i0, j0, patch.shape, (-m, H + m, -m, W + m))
        if where is not None:
            in_patch, in_grid = where
            overlap[u] = patch[in_patch][mask[in_grid]].sum()
    return {
        "pnr": pnr,
        "in_focus": in_focus,
        "detectable": (pnr >= DETECTABLE_PNR) & in_focus & inside_fov,
        "vessel_overlap_fraction": overlap,
        "defocus_um": sc.dz_um.astype(np.float32),
        "psf_sigma_um": sc.sigma_um.astype(np.float32),
    }
