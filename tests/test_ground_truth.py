"""Cell placement, morphology, per-cell spreads and the per-cell ground truth, each as specified.

These are the build points of the anatomy and activity issues that the effect-by-effect tests
(test_anatomy.py, test_activity.py) do not measure: hard-core spacing, several bands, the
brightness and kinetics spreads, bursts, dendrites, the planted-vs-observed footprints and the
per-cell flags (in_focus, pnr, vessel_overlap_fraction).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import ALL_EFFECTS_OFF
from scipy.spatial import cKDTree

import minisim
from minisim import Spec, presets, truth
from minisim.activity import simulate_activity
from minisim.render import build_world
from minisim.scene.cells import expected_count, place_cells


def _cells(**updates):
    spec = Spec().with_updates(updates) if updates else Spec()
    return spec, place_cells(spec, (-200.0, 200.0), (-200.0, 200.0))


# ------------------------------------------------------------------------- placement
def test_no_two_somata_closer_than_min_spacing():
    spec, c = _cells(**{"cells.density_per_mm3": 60000.0, "cells.min_spacing_um": 11.0})
    pos = np.column_stack([c.z_um, c.y_um, c.x_um])
    assert len(c) > 120
    assert len(cKDTree(pos).query_pairs(11.0)) == 0
    # the spacing is a hard core, not a thinning to nothing: the density is still met
    n_exp = expected_count(spec, area_mm2=0.4 * 0.4)
    assert abs(len(c) - n_exp) < 4 * np.sqrt(n_exp)


def test_two_bands_each_at_its_depth_and_density():
    extra = {"density_per_mm3": 20000.0, "depth_um": 300.0, "band_thickness_um": 40.0,
             "soma_radius_um": 7.0, "soma_radius_sd_um": 0.0, "min_spacing_um": 14.0}
    spec, c = _cells(**{"cells.depth_um": 150.0, "cells.band_thickness_um": 20.0,
                        "cells.extra_bands": [extra]})
    for b, band in enumerate(spec.cells.bands):
        sel = c.band == b
        z = c.z_um[sel]
        assert sel.sum() > 50
        assert np.all(np.abs(z - band.depth_um) <= band.band_thickness_um / 2)
        expect = band.density_per_mm3 * 1e-9 * 400.0 * 400.0 * band.band_thickness_um
        assert abs(sel.sum() - expect) < 4 * np.sqrt(expect)
    assert np.allclose(c.radius_um[c.band == 1], 7.0)
    # the second band's cells have their own identities
    assert len(np.unique(c.unit_id)) == len(c)


def test_expression_gain_is_log_normal_with_the_spec_spread():
    _, c = _cells(**{"cells.brightness_sd_ln": 0.6, "cells.density_per_mm3": 60000.0})
    ln = np.log(c.gain)
    assert abs(ln.std() - 0.6) < 4 * 0.6 / np.sqrt(2 * len(c))
    assert abs(ln.mean()) < 4 * 0.6 / np.sqrt(len(c))


# ------------------------------------------------------------------------- activity spreads
def test_kinetics_and_amplitude_spreads_match_the_spec():
    spec = Spec().with_updates({"activity.tau_jitter_cv": 0.2, "activity.amplitude_sd_ln": 0.5})
    act = simulate_activity(spec, np.arange(3000), n_frames=10)
    n = 3000
    decay = act.tau_decay_ms
    assert abs(np.median(decay) / 500.0 - 1) < 0.03          # median is the Spec value
    assert abs(decay.std() / decay.mean() - 0.2) < 0.02      # CV is tau_jitter_cv
    assert abs(np.log(act.amplitude).std() - 0.5) < 4 * 0.5 / np.sqrt(2 * n)
    assert np.all(act.tau_rise_ms < act.tau_decay_ms)


def test_bursts_have_the_specified_isi_and_size():
    a = {"burst_probability": 1.0, "burst_extra_spikes_mean": 2.0, "burst_isi_min_ms": 5.0,
         "burst_isi_max_ms": 9.0, "refractory_ms": 2.0, "rate_median_hz": 0.1, "rate_sd_ln": 0.0,
         "active_fraction": 1.0, "up_dwell_s": 1e5, "down_dwell_s": 1e-3, "modulation_sd_ln": 0.0}
    spec = Spec().with_updates({f"activity.{k}": v for k, v in a.items()})
    act = simulate_activity(spec, np.arange(200), n_frames=int(600 * spec.recording.fps))
    sizes, inner = [], []
    for t in act.spike_times:
        gaps = np.diff(t)
        inner.append(gaps[gaps < 0.05])
        sizes.append(np.diff(np.flatnonzero(np.r_[True, gaps >= 0.05, True])))
    inner, sizes = np.concatenate(inner) * 1e3, np.concatenate(sizes)
    # ISIs uniform in [5, 9] ms (two events within 50 ms are rare at 0.1 Hz)
    assert np.mean((inner >= 5.0) & (inner <= 9.0)) > 0.99
    assert abs(np.median(inner) - 7.0) < 0.3
    # a burst is the event's spike + 1 + Poisson(2) extra ones: 4 on average
    assert abs(sizes.mean() - 4.0) < 0.15


# ------------------------------------------------------------------------- footprints and flags
def _small(**updates) -> Spec:
    base = Spec(
        optics={"na": 0.3, "magnification": 2.9},
        sensor={"width_px": 96, "height_px": 80, "pixel_pitch_um": 4.8, "noise_tile_px": 32},
        recording={"duration_s": 4.0, "fps": 10.0, "seed": 5},
    )
    return base.with_updates({**updates}) if updates else base


def _support_radius_um(ds, unit) -> float:
    """Largest distance (um) from a unit's centre to a pixel of its planted footprint."""
    cell = ds.sel(unit_id=unit)
    a = cell["A_planted"].values
    yy, xx = np.nonzero(a > 1e-3 * a.max())
    y = ds["y_um"].values[yy] - float(cell["position"][1])
    x = ds["x_um"].values[xx] - float(cell["position"][2])
    return float(np.hypot(y, x).max())


def test_dendrites_extend_the_planted_footprint_beyond_the_soma():
    # dense enough that some cell sits in the small field whatever the draws (~5 expected here)
    base = {**ALL_EFFECTS_OFF, "cells.density_per_mm3": 12000.0, "cells.soma_radius_sd_um": 0.0,
            "cells.dendrite_length_um": 25.0, "cells.ellipticity_sd": 0.0}
    with_d = minisim.simulate(_small(**base, **{"cells.dendrites_enabled": True})).dataset
    without = minisim.simulate(_small(**base, **{"cells.dendrites_enabled": False})).dataset
    # the unit nearest the axis (more outside units reach the field with dendrites on)
    centre = int(without["unit_id"][np.argmin(np.hypot(*without["position"].values[:, 1:].T))])
    assert _support_radius_um(without, centre) < 5.0 + 2.0      # soma radius + a pixel or so
    assert _support_radius_um(with_d, centre) > 5.0 + 10.0      # dendrites reach out


@pytest.mark.slow
def test_observed_footprint_is_the_planted_one_blurred_and_out_of_focus_cells_are_broad():
    spec = _small(**{**ALL_EFFECTS_OFF, "optics.defocus_enabled": True,
                     "cells.density_per_mm3": 20000.0, "cells.band_thickness_um": 120.0})
    ds = minisim.simulate(spec).dataset
    planted = ds["A_planted"].values
    observed = ds["A"].values
    inside = (np.abs(ds["position"].values[:, 1:]) < 20).all(axis=1)
    spread = []
    for i in np.flatnonzero(inside):
        # the planted footprint is the sharp in-tissue shape, normalised to sum 1
        assert abs(planted[i].sum() - 1) < 0.02
        p, o = planted[i] / planted[i].max(), observed[i] / observed[i].max()
        spread.append(((o > 0.5).sum() / max((p > 0.5).sum(), 1), abs(float(ds["defocus_um"][i]))))
    ratio, dz = np.array(spread).T
    assert np.all(ratio >= 0.9)
    # the blur grows with defocus: far-from-focus cells have much wider half-maximum areas
    assert np.median(ratio[dz > 30]) > 2 * np.median(ratio[dz < 5])
    # in_focus is the documented rule |dz| <= 3 soma radii
    assert np.array_equal(ds["in_focus"].values, np.abs(ds["defocus_um"].values) <= 3 * ds["radius_um"].values)


@pytest.mark.slow
def test_pnr_falls_with_defocus_and_detectable_follows_the_rule():
    # the same cells and spikes, in focus and then 40 um out of it (focus knob), over a background
    # (attenuation on, so a cell is as bright against it as in tissue)
    spec = _small(**{**ALL_EFFECTS_OFF, "optics.defocus_enabled": True, "sensor.noise": True,
                     "tissue.neuropil": {"enabled": True}, "tissue.attenuation": {"enabled": True},
                     "cells.density_per_mm3": 80000.0, "sensor.bit_depth": 16,   # no clipping
                     "recording.duration_s": 10.0, "activity.rate_median_hz": 1.0,
                     "recording.seed": 3})   # (render algorithm 7's draws: 24 detectable in focus, 17 out)
    ds = minisim.simulate(spec).dataset
    moved = minisim.simulate(spec.with_updates({"optics.focus_offset_um": 40.0})).dataset
    inside = (np.abs(ds["position"].values[:, 1]) < spec.fov_um[0] / 2) & (
        np.abs(ds["position"].values[:, 2]) < spec.fov_um[1] / 2)
    fired = ds["S"].values.sum(axis=1) > 0
    pnr = ds["pnr"].values
    pnr_moved = moved["pnr"].sel(unit_id=ds["unit_id"]).values
    assert np.all(pnr >= 0) and np.all(pnr[~fired] == 0)
    sel = inside & fired
    assert sel.sum() >= 10
    assert np.all(pnr_moved[sel] < pnr[sel])
    assert np.median(pnr_moved[sel] / pnr[sel]) < 0.8   # 0.65 here: the light spreads over more pixels
    # detectable is the documented rule: oracle trace, compactness, visibility, centre inside
    for d in (ds, moved):
        inside = (np.abs(d["position"].values[:, 1]) < spec.fov_um[0] / 2) & (
            np.abs(d["position"].values[:, 2]) < spec.fov_um[1] / 2)
        rule = (inside & (d["oracle_r"].values >= truth.ORACLE_MIN_R)
                & (d["compactness"].values >= truth.COMPACT_MIN_FRACTION)
                & (d["visibility"].values >= truth.VISIBLE_MIN_DFF))
        assert np.array_equal(d["detectable"].values, rule)
    assert ds["detectable"].sum() > moved["detectable"].sum()


def test_vessel_overlap_fraction_is_the_share_of_the_planted_footprint_under_vessels():
    spec = _small(**{**ALL_EFFECTS_OFF, "vasculature.enabled": True, "cells.density_per_mm3": 20000.0})
    ds = minisim.simulate(spec).dataset
    frac = ds["vessel_overlap_fraction"].values
    mask = ds["vessel_mask"].values
    assert mask.any() and not mask.all()
    assert np.all((frac >= 0) & (frac <= 1))
    planted = ds["A_planted"].values
    centred = (np.abs(ds["position"].values[:, 1:]) < 10).all(axis=1)   # wholly inside the field
    for i in np.flatnonzero(centred):
        a = planted[i]
        assert abs(frac[i] - a[mask].sum() / a.sum()) < 0.05
    assert (frac > 0.5).any() and (frac == 0).any()


def test_footprints_of_any_window_are_crops_of_the_whole_field():
    # the stored A and A_planted are computed tile by tile (blocks of 32 units x movie tiles)
    spec = _small(**{"cells.density_per_mm3": 20000.0})
    sc = minisim.render.build_world(spec, truth=False).scene
    c = int(np.argmin(np.hypot(sc.cells.y_um, sc.cells.x_um)))   # units near the axis
    units = slice(max(c - 20, 0), c + 20)
    whole, planted = sc.footprints_e(units), sc.planted_dense(units)
    assert whole.any() and planted.any()
    for y0, y1, x0, x1 in ((0, 80, 0, 96), (7, 33, 50, 96), (40, 80, 0, 17), (79, 80, 95, 96)):
        assert np.array_equal(sc.footprints_e(units, (y0, y1, x0, x1)), whole[:, y0:y1, x0:x1])
        assert np.array_equal(sc.planted_dense(units, (y0, y1, x0, x1)), planted[:, y0:y1, x0:x1])


def test_footprint_box_holds_all_of_a_units_footprint():
    # A and the metrics read each unit's footprint from its own box: everything outside it is 0
    spec = _small(**{"cells.density_per_mm3": 20000.0})
    sc = minisim.render.build_world(spec).scene
    n = len(sc.cells)
    whole = sc.footprints_e(slice(0, n))
    boxed = np.zeros_like(whole)
    for u in range(n):
        got = sc.footprint_box(u)
        if got is not None:
            (y0, y1, x0, x1), box = got
            boxed[u, y0:y1, x0:x1] = box
            bounds = sc.footprint_bounds()[u]
            assert bounds[0] <= y0 and y1 <= bounds[1] and bounds[2] <= x0 and x1 <= bounds[3]
        else:
            assert not whole[u].any()
    assert whole.any()
    assert np.array_equal(boxed, whole)


def _across_a_segment(**updates):
    # 1,100 frames: two trace segments, the oracle's four runs spread over both
    return presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.width_px": 48, "sensor.height_px": 40, "recording.duration_s": 55.0,
         "recording.seed": 5, **updates})


@pytest.mark.parametrize("motion", [True, False])
def test_lazy_unit_metrics_are_the_eager_cell_metrics_bit_for_bit(motion):
    spec = _across_a_segment(**{"motion.enabled": motion})
    ds = minisim.simulate(spec).dataset
    eager = truth.cell_metrics(build_world(spec))
    for name in (*truth.ACTIVITY_METRICS, "vessel_overlap_fraction", "in_focus", "defocus_um"):
        lazy = ds[name].values
        assert lazy.dtype == eager[name].dtype, name
        assert np.array_equal(lazy, eager[name]), name
    assert ds["pnr"].values.max() > 0 and ds["oracle_r"].values.max() > 0



@pytest.mark.parametrize("chunks", [None, {"frame": 7, "height": 32, "width": 40}])
def test_a_short_recording_computed_whole_renders_each_frame_once(monkeypatch, chunks):
    """Where the oracle reads every frame (<= ORACLE_FRAMES), it takes them from the movie's
    blocks: a whole Recording computed renders each pixel of each frame once (the oracle
    rendered them all a second time before), with the same metrics, bit for bit, whatever
    blocks the movie is cut in (here 7 frames, across the oracle's 16-frame batches)."""
    import dask

    from minisim import render

    spec = _small(**{"recording.duration_s": 4.5})  # 45 frames, motion on
    assert spec.recording.n_frames <= truth.ORACLE_FRAMES and spec.motion.enabled
    eager = truth.cell_metrics(build_world(spec))
    rec = minisim.simulate(spec, chunks=chunks)
    rendered = []
    real = render.render_block

    def counting(world, frames, window):
        rendered.append(len(frames) * (window[1] - window[0]) * (window[3] - window[2]))
        return real(world, frames, window)

    monkeypatch.setattr(render, "render_block", counting)
    with dask.config.set(scheduler="sync"):
        ds = rec.dataset.load()
    assert sum(rendered) == spec.recording.n_frames * spec.sensor.height_px * spec.sensor.width_px
    for name in truth.ACTIVITY_METRICS:
        assert np.array_equal(ds[name].values, eager[name]), name
    assert ds["oracle_r"].values.max() > 0

def test_trace_moments_are_a_reduction_over_segments_equal_to_one_pass():
    spec = _across_a_segment(**{"motion.enabled": False})
    world = build_world(spec)
    C = world.traces(range(world.n_frames))[0].astype(np.float64)
    var_c, top, mean_c = truth._trace_moments(world)
    np.testing.assert_allclose(mean_c, C.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(var_c, C.var(axis=1), rtol=1e-9, atol=1e-15)
    assert np.array_equal(top, C.max(axis=1))
    # in a Recording each segment's part is a task of its own (parallel), not one serial task
    ds = minisim.simulate(spec).dataset
    graph = dict(ds["oracle_r"].data.__dask_graph__())
    parts = [k for k in graph if isinstance(k, tuple) and k[0].startswith("moments-")]
    assert len(parts) == len(ds["C"].data.chunks[1]) == 2


def test_simulate_builds_no_footprint_and_a_process_builds_them_once():
    spec = _small(**{"recording.duration_s": 2.0})
    rec = minisim.simulate(spec)
    scene = minisim.render.get_world(spec.model_dump_json()).scene
    assert scene._footprints is None  # simulate() placed the cells, drew no footprint
    a = rec.dataset["A"].values
    built = scene._footprints
    assert built is not None and a.any()
    assert rec.dataset["oracle_r"].values.max() > 0
    assert rec.dataset["movie"][:2].values.any()
    assert scene._footprints is built  # A, the metrics and the movie share one build


# ------------------------------------------------------------------------- detectable: the rule
#: A 64 x 64 px V4 CA1 window, 10 s, every cell firing ~1 Hz, focus on the band, no motion:
#: each case below changes one thing about the same cells.
_DETECT = {"sensor.width_px": 64, "sensor.height_px": 64, "recording.duration_s": 10.0,
           "recording.seed": 3, "optics.focus_offset_um": 0.0, "optics.field_curvature": {"enabled": False},
           "motion.enabled": False, "activity.rate_median_hz": 1.0, "activity.rate_sd_ln": 0.0,
           "activity.active_fraction": 1.0, "activity.up_dwell_s": 1e5, "activity.down_dwell_s": 1e-3}


def _detect_world(**updates):
    return build_world(presets.scope("miniscope_v4_ca1").with_updates({**_DETECT, **updates}))


def _centred(world):
    c, (h, w) = world.scene.cells, world.spec.fov_um
    return (np.abs(c.y_um) < h / 2) & (np.abs(c.x_um) < w / 2)


def test_detectable_is_the_documented_rule_and_oracle_r_is_in_the_ground_truth():
    spec = presets.get("miniscope_v4_ca1", "moderate").with_updates(
        {"sensor.width_px": 96, "sensor.height_px": 96, "recording.duration_s": 10.0})
    ds = minisim.simulate(spec).dataset
    pos = ds["position"].values
    inside = (np.abs(pos[:, 1]) < spec.fov_um[0] / 2) & (np.abs(pos[:, 2]) < spec.fov_um[1] / 2)
    assert ds["oracle_r"].dtype == np.float32 and ds["oracle_r"].dims == ("unit_id",)
    rule = (inside & (ds["oracle_r"].values >= truth.ORACLE_MIN_R)
            & (ds["compactness"].values >= truth.COMPACT_MIN_FRACTION)
            & (ds["visibility"].values >= truth.VISIBLE_MIN_DFF))
    assert np.array_equal(ds["detectable"].values, rule)
    det, und = ds["detectable"].values, inside & ~ds["detectable"].values
    assert det.sum() >= 3 and und.sum() >= 3
    assert np.median(ds["oracle_r"].values[det]) > np.median(ds["oracle_r"].values[und]) + 0.2


def _oracle_r_of(C_all: np.ndarray, err_all: np.ndarray) -> np.ndarray:
    """``truth.detectability_from`` on a whole-recording C (units, frames) and residual e, read
    only on the frames the oracle samples, as a Recording's oracle reads them."""
    n, T = C_all.shape
    batches = [truth.OracleBatch(err=err_all[:, fr], C=C_all[:, fr], image=np.full(n, float(len(fr))),
                                 n_frames=len(fr)) for fr in truth.oracle_batches(T)]
    cores = truth.FootprintCores(window=(0, 1, 0, 1), core=sp.csr_matrix((n, 1)), a_sum=np.ones(n),
                                 a_sq=np.ones(n), compactness=np.ones(n, np.float32))
    moments = truth.trace_moments(truth.fold_moments(np.stack(truth.trace_moments_part(C_all))[..., None]), T)
    return truth.detectability_from(cores, batches, moments)["oracle_r"]


def test_oracle_r_is_a_correlation_even_when_c_varies_more_in_the_sample_than_overall():
    T = 1000
    sampled = np.zeros(T, bool)
    for run in truth.oracle_frames(T):
        sampled[run] = True
    assert 0 < sampled.sum() < T
    t = np.arange(T)
    wiggle = 0.05 * np.where(t % 2 == 0, 1.0, -1.0)   # zero-mean noise, var 0.0025, not like C
    transient = np.zeros(T)
    for run in truth.oracle_frames(T):                  # one transient at each sampled run's start
        transient[run.start:run.stop] = np.exp(-np.arange(len(run)) / 6.0)
    late = np.where(~sampled & (t > 500), np.exp(-((t - 800) / 20.0) ** 2), 0.0)
    C = np.stack([transient,      # fires only on the sampled frames: var C there >> over all
                  late,           # silent on the sampled frames
                  np.ones(T)])    # constant
    beta = 0.5                    # a residual that follows C (crosstalk of its own light)
    err = np.stack([beta * transient + wiggle, wiggle, wiggle])
    r = _oracle_r_of(C, err)
    assert r.dtype == np.float32 and np.all(np.abs(r) <= 1.0)

    # the case is the one that broke the old estimate: var C of the whole recording mixed with
    # the sample's cov(C, e) and var e gave r > 1
    cs, e = C[0, sampled] - C[0, sampled].mean(), err[0, sampled] - err[0, sampled].mean()
    var_c, cov, var_e = C[0].var(), (cs * e).mean(), (e * e).mean()
    assert (var_c + cov) / np.sqrt(var_c * (var_c + 2 * cov + var_e)) > 1.2
    # now: the correlation of o = C + e with C over the whole recording, e = beta C + noise
    # carried from the sample to every frame
    o = C[0] + beta * C[0] + wiggle
    assert r[0] == pytest.approx(np.corrcoef(C[0], o)[0, 1], abs=0.01)
    # a cell silent in the sample is judged by its noise against its whole trace
    assert r[1] == pytest.approx(np.sqrt(C[1].var() / (C[1].var() + 0.05 ** 2)), abs=1e-4)
    assert r[2] == 0.0


def test_a_bright_cell_under_a_thick_vessel_is_not_detectable_though_its_oracle_trace_is_good():
    # the same cells with and without a thick, strongly absorbing vessel layer above them
    shaded = _detect_world(**{"vasculature.trunk_radius_um": 25.0, "vasculature.absorption_per_um": 0.05})
    clear = _detect_world(**{"vasculature.enabled": False})
    assert np.array_equal(shaded.scene.cells.unit_id, clear.scene.cells.unit_id)
    m, m0 = truth.cell_metrics(shaded), truth.cell_metrics(clear)
    under = _centred(shaded) & (m["vessel_overlap_fraction"] > 0.99) & m0["detectable"]
    assert under.sum() >= 2
    assert not m["detectable"][under].any()
    # its trace alone would pass: the light is there, but it is scattered light around a shadow
    assert np.all(m["oracle_r"][under] >= truth.ORACLE_MIN_R)
    assert np.all(m["compactness"][under] < truth.COMPACT_MIN_FRACTION)
    assert np.all(m0["compactness"][under] >= truth.COMPACT_MIN_FRACTION)


def test_a_far_defocused_cell_is_not_detectable():
    focused = _detect_world(**{"vasculature.enabled": False})
    # 50-70 um from the focal surface: NA 0.3 blurs a 5 um soma ~3x wider and spreads its light
    # (at 35-40 um, with the typical tier's faint dendrites, some still pass: a soft blob)
    deep = _detect_world(**{"vasculature.enabled": False, "optics.focus_offset_um": 60.0})
    m, md = truth.cell_metrics(focused), truth.cell_metrics(deep)
    sel = np.flatnonzero(_centred(focused) & m["detectable"])
    assert len(sel) >= 3
    ids = list(deep.scene.cells.unit_id)
    moved = np.array([ids.index(u) for u in focused.scene.cells.unit_id[sel]])
    assert np.all(np.abs(deep.scene.dz_um[moved]) > 50)
    assert not md["detectable"][moved].any()
    # the blur spreads its light: less of it near the centre, a smaller ripple on the local level
    assert np.all(md["compactness"][moved] < m["compactness"][sel])
    assert np.all((md["compactness"][moved] < truth.COMPACT_MIN_FRACTION)
                  | (md["visibility"][moved] < truth.VISIBLE_MIN_DFF))


def test_a_cell_beside_a_much_brighter_one_is_not_detectable():
    world = _detect_world(**{"vasculature.enabled": False})
    m = truth.cell_metrics(world)
    c = world.scene.cells
    best = None
    for u in np.flatnonzero(_centred(world) & m["detectable"]):
        d = np.hypot(c.y_um - c.y_um[u], c.x_um - c.x_um[u])
        d[u] = np.inf
        k = int(np.argmin(d))
        if d[k] < 2 * 2 * c.radius_um[u] and (best is None or d[k] < best[2]):
            best = (u, k, d[k])
    assert best is not None, "this window should hold a detectable cell with a close neighbour"
    u, k, _ = best
    # the same World with the neighbour's light made 20x brighter (its footprints scaled)
    bright = _detect_world(**{"vasculature.enabled": False})
    sc = bright.scene
    gain = sp.diags(np.where(np.arange(len(c)) == k, 20.0, 1.0).astype(np.float32))
    sc._footprints = dataclasses.replace(
        sc.footprints(), sharp_e=(sc.sharp_e @ gain).tocsr(), halo_e=(sc.halo_e @ gain).tocsr(),
        axial_e=tuple((a @ gain).tocsr() for a in sc.axial_e))
    mb = truth.cell_metrics(bright)
    assert not mb["detectable"][u]
    # its oracle trace now carries the neighbour's shot noise
    assert mb["oracle_r"][u] < truth.ORACLE_MIN_R <= m["oracle_r"][u]


def test_registered_at_reads_what_a_whole_frame_shift_gives_at_those_pixels():
    """The oracle's registration at the core pixels alone is scipy's order-1 shift (edge values
    beyond the frame) of the whole frame, read there: shifts of either sign, past the edge too."""
    from scipy import ndimage

    from minisim import rng
    from minisim.truth import registered_at

    g = rng.rng(3, "glow", 99)
    movie = g.integers(0, 4000, size=(3, 20, 24)).astype(np.uint16)
    shift = np.array([[0.3, -1.7], [-2.25, 4.5], [25.0, -30.0]])
    pixels = np.array([0, 5, 23, 24, 240, 479, 200, 151])
    got = registered_at(movie, shift, pixels)
    for t in range(3):
        whole = ndimage.shift(movie[t].astype(np.float64), -shift[t], order=1, mode="nearest")
        np.testing.assert_allclose(got[t], whole.reshape(-1)[pixels], rtol=1e-6, atol=1e-3)
    assert not np.allclose(got[0], movie[0].reshape(-1)[pixels])  # it did move


def _numpy_core(vi, box, oy, ox, cy, cx, reach):
    """The footprint core and compactness of one unit as numpy expressions (the reference
    :func:`minisim.truth._unit_core` compiles): None where its peak is not > 0."""
    h, w = vi.shape
    fp = vi[oy : oy + box.shape[0], ox : ox + box.shape[1]] * box
    peak = fp.max()
    if not peak > 0:
        return None
    bi, bj = np.nonzero(fp >= np.float32(truth._CORE_FRACTION) * peak)
    cols, vals = (bi + oy) * w + (bj + ox), fp[bi, bj]
    ya, yb = max(int(cy - reach), 0), min(int(cy + reach) + 2, h)
    xa, xb = max(int(cx - reach), 0), min(int(cx + reach) + 2, w)
    if not (ya < yb and xa < xb):
        return cols, vals, np.float32(0.0)
    yy, xx = np.mgrid[ya:yb, xa:xb]
    near = (yy - cy) ** 2 + (xx - cx) ** 2 <= reach**2
    part = np.zeros((yb - ya, xb - xa), np.float32)
    ia, ib, ja, jb = max(ya, oy), min(yb, oy + box.shape[0]), max(xa, ox), min(xb, ox + box.shape[1])
    if ia < ib and ja < jb:
        part[ia - ya : ib - ya, ja - xa : jb - xa] = fp[ia - oy : ib - oy, ja - ox : jb - ox]
    energy = (fp.astype(np.float64) ** 2).sum()
    return cols, vals, np.float32((part.astype(np.float64)[near] ** 2).sum() / energy)


def test_compiled_footprint_cores_are_numpys_expressions_bit_for_bit():
    """The oracle's cores and compactness come from one compiled call per unit, with numpy's
    pairwise order of summation: the very values of the numpy expressions, for boxes of
    every size (past the 8,192 values of a numpy buffer too), discs inside, across and off
    the window, boxes without light and with a NaN."""
    from minisim import rng

    g = rng.rng(5, "glow", 7)
    vi = (1.0 + g.random((300, 280))).astype(np.float32)
    cases = []
    for k in range(300):
        bh, bw = (int(v) for v in g.integers(1, 150, 2))
        oy, ox = int(g.integers(0, 300 - bh + 1)), int(g.integers(0, 280 - bw + 1))
        box = (g.random((bh, bw)) ** 3).astype(np.float32)
        cy, cx = oy + g.uniform(-30, bh + 30), ox + g.uniform(-30, bw + 30)
        cases.append((box, oy, ox, float(cy), float(cx), float(g.uniform(0.5, 25))))
    cases.append((np.zeros((9, 9), np.float32), 3, 4, 7.0, 8.0, 3.0))  # no light
    cases.append((np.full((4, 5), np.nan, np.float32), 0, 0, 1.0, 1.0, 2.0))  # NaN
    cases.append((np.ones((6, 6), np.float32), 0, 0, -50.0, -50.0, 3.0))  # disc off the window
    compact = []
    for box, oy, ox, cy, cx, reach in cases:
        want = _numpy_core(vi, box, oy, ox, cy, cx, reach)
        cols, vals, comp = truth._unit_core(vi, box, oy, ox, cy, cx, reach, np.float32(truth._CORE_FRACTION))
        if want is None:
            assert comp == -1 and len(cols) == 0
            continue
        assert np.array_equal(cols, want[0]) and np.array_equal(vals, want[1])
        assert np.float32(comp).tobytes() == want[2].tobytes()
        compact.append(comp)
    assert 0 < np.mean(compact) < 1 and np.max(compact) > 0.5  # real values, not a constant
    for n in (0, 1, 7, 8, 9, 127, 128, 129, 1000, 8191, 8193, 20000, 65537):
        x = g.random(n).astype(np.float32)
        assert truth._pairwise_sum_sq(x, 0, n) == (x.astype(np.float64) ** 2).sum(), n
