"""Anatomy and scope: each optical and tissue effect, switched on alone, does what docs/physics.md says.

Every test starts from ``bare()``: a small V4-like field (1.655 um pixels) with every effect
off and the sensor noise off, then switches on one effect and compares.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ALL_EFFECTS_OFF, digest

import minisim
from minisim import Spec, presets
from minisim.render import (
    build_world,
    render_block,
    render_electrons,
    render_electrons_static,
)
from minisim.scene import build_scene, optics
from minisim.scene.cells import expected_count, place_cells
from minisim.truth import cell_metrics

ALL_OFF = ALL_EFFECTS_OFF


def bare(**updates) -> Spec:
    """96 x 80 px of 1.655 um (159 x 132 um), 12-bit, 1 s at 10 fps, every effect off."""
    base = Spec(
        optics={"na": 0.3, "magnification": 2.9},
        sensor={"width_px": 96, "height_px": 80, "pixel_pitch_um": 4.8, "noise_tile_px": 32,
                "hot_pixel_fraction": 0.0},
        recording={"duration_s": 1.0, "fps": 10.0, "seed": 5},
    ).with_updates(ALL_OFF)
    return base.with_updates(updates) if updates else base


def flat(**updates) -> Spec:
    """No cells, a flat neuropil that never fluctuates: a uniform light field."""
    return bare(**{"cells.density_per_mm3": 0.0,
                   "tissue.neuropil": {"enabled": True, "spatial_contrast": 0.0,
                                       "fluctuation_fraction": 0.0, "photons_per_um2_s": 5000.0},
                   **updates})


def electrons(spec: Spec, frames=range(1)) -> np.ndarray:
    w = build_world(spec)
    return render_electrons(w, frames, (0, spec.sensor.height_px, 0, spec.sensor.width_px))


def central_cell(scene) -> int:
    c = scene.cells
    return int(np.argmin(np.hypot(c.y_um, c.x_um)))


def moments(img: np.ndarray, d: float) -> tuple[float, float]:
    """Total and mean squared radius (um^2, per axis) of an image about its centroid."""
    y, x = np.mgrid[: img.shape[0], : img.shape[1]] * d
    tot = img.sum()
    cy, cx = (img * y).sum() / tot, (img * x).sum() / tot
    return float(tot), float((img * ((y - cy) ** 2 + (x - cx) ** 2)).sum() / tot / 2)


# ------------------------------------------------------------------------- optics
def test_in_focus_psf_fwhm_matches_the_gaussian_airy_core():
    # docs/physics.md §8.2: 2.355 * 0.21 lambda / NA; measured on an oversampled grid
    for spec, expect in ((presets.scope("miniscope_v4_ca1"), 0.87), (Spec(), 0.58)):
        spec = spec.with_updates({"optics.aberration_sigma_um": 0.0})
        s0 = optics.sigma0_um(spec)
        d = 0.01
        img = np.zeros((401, 401))
        img[200, 200] = 1.0
        prof = optics.blur_and_bin(img, s0, d, 1)[200]
        half = prof.max() / 2
        above = np.nonzero(prof >= half)[0]
        # linear interpolation of both half-maximum crossings
        lo, hi = above[0], above[-1]
        left = lo - (prof[lo] - half) / (prof[lo] - prof[lo - 1])
        right = hi + (prof[hi] - half) / (prof[hi] - prof[hi + 1])
        fwhm = (right - left) * d
        assert fwhm == pytest.approx(0.495 * 0.525 / spec.optics.na, rel=0.05)
        assert fwhm == pytest.approx(expect, abs=0.015)


def test_field_curvature_sag_is_51_um_at_the_v4_edge():
    spec = presets.scope("miniscope_v4_ca1")
    z0 = optics.focal_depth_um(spec, 0.0)
    assert float(z0 - optics.focal_depth_um(spec, 503.0)) == pytest.approx(51.1, abs=0.05)
    assert float(z0 - optics.focal_depth_um(spec, 700.0)) == pytest.approx(100.0, abs=0.1)


def test_defocus_widens_the_footprint_and_keeps_its_light():
    spec0 = bare(**{"optics.defocus_enabled": True, "cells.dendrites_enabled": False})
    base = build_scene(spec0)
    u = central_cell(base)
    d = spec0.pixel_size_um
    tot0, var0 = moments(base.footprints_e(slice(u, u + 1))[0], d)
    last = var0
    for dz in (10.0, 20.0, 40.0):
        sc = build_scene(spec0.with_updates({"optics.focus_offset_um": -dz}))
        v = int(np.searchsorted(sc.cells.unit_id, base.cells.unit_id[u]))  # the same cell
        assert sc.cells.unit_id[v] == base.cells.unit_id[u]
        tot, var = moments(sc.footprints_e(slice(v, v + 1))[0], d)
        assert var > last
        last = var
        # sigma(dz)^2 adds to the soma's own spread (docs/physics.md §8.3, within 10 %)
        grow = float(optics.psf_sigma_um(spec0, sc.dz_um[v]) ** 2
                     - optics.psf_sigma_um(spec0, base.dz_um[u]) ** 2)
        assert var - var0 == pytest.approx(grow, rel=0.1)
        assert tot == pytest.approx(tot0, rel=0.01)  # defocus spreads light, never removes it


def test_field_curvature_blurs_the_edge_more_than_the_centre():
    upd = {"cells.band_thickness_um": 2.0, "cells.depth_um": 150.0, "cells.min_spacing_um": 0.0,
           "cells.density_per_mm3": 300000.0,
           "optics.defocus_enabled": True, "optics.working_distance_um": 150.0}
    flat_sc = build_scene(bare(**upd))
    curved = build_scene(bare(**upd, **{"optics.field_curvature": {"enabled": True, "radius_um": 300.0}}))
    r = np.hypot(curved.cells.y_um, curved.cells.x_um)
    centre, edge = r < 30, r > 80
    assert centre.any() and edge.any()
    assert np.ptp(flat_sc.sigma_um) < 0.05  # flat field: same depth, same blur everywhere
    assert curved.sigma_um[edge].min() > curved.sigma_um[centre].max()
    sag = 300.0 - np.sqrt(np.maximum(300.0**2 - r**2, 0.0))
    np.testing.assert_allclose(curved.dz_um - flat_sc.dz_um, sag, atol=1e-9)


def test_a_one_hot_trace_renders_the_units_footprint_exactly_in_any_window():
    """tissue_e (sparse sums, the halo interpolated in the assembly kernel) with a one-hot C and
    no neuropil course gives footprints_e (each unit's own box, halo_interp) to the bit."""
    sc = build_scene(bare(**{"tissue.scatter": {"enabled": True}}))
    assert sc.halo_e.nnz > 0
    n = len(sc.cells)
    units = np.linspace(0, n - 1, 5).astype(int)
    C = np.zeros((n, len(units)), np.float32)
    C[units, np.arange(len(units))] = 1.0
    for window in ((0, 80, 0, 96), (7, 40, 13, 59), (33, 34, 0, 96)):
        got = sc.tissue_e(C, np.zeros(len(units), np.float32), window)
        want = np.stack([sc.footprints_e(slice(u, u + 1), window)[0] for u in units])
        np.testing.assert_array_equal(got, want)
    assert want.any()


def test_scatter_adds_a_broad_halo():
    spec0 = bare(**{"cells.dendrites_enabled": False})
    off = build_scene(spec0)
    on = build_scene(spec0.with_updates({"tissue.scatter": {"enabled": True}}))
    u = central_cell(off)
    d = spec0.pixel_size_um
    a_off, a_on = off.footprints_e(slice(u, u + 1))[0], on.footprints_e(slice(u, u + 1))[0]
    y, x = np.mgrid[:80, :96]
    ci, cj = np.unravel_index(np.argmax(a_off), a_off.shape)
    far = np.hypot(y - ci, x - cj) * d > 25.0
    assert a_off[far].sum() < 1e-3 * a_off.sum()
    assert a_on[far].sum() > 0.1 * a_on.sum()
    # the ballistic share at z = l_s is e^-1 of the emitted light (docs/physics.md §8.5)
    ls = on.spec.tissue.scatter.scattering_length_um
    eta = on.spec.tissue.scatter.scattered_collection_fraction
    b = np.exp(-1.0)
    assert float(optics.sharp_share(on.spec, ls)) == pytest.approx(b / (b + (1 - b) * eta), rel=1e-12)


def test_attenuation_dims_deeper_cells_as_exp_minus_z_over_lex_plus_lem():
    spec0 = bare(**{"cells.depth_um": 150.0, "cells.band_thickness_um": 200.0,
                    "cells.density_per_mm3": 8000.0, "cells.min_spacing_um": 10.0})
    off = build_scene(spec0)
    on = build_scene(spec0.with_updates({"tissue.attenuation": {"enabled": True}}))
    s_off = np.asarray(off.sharp_e.sum(axis=0)).ravel()
    s_on = np.asarray(on.sharp_e.sum(axis=0)).ravel()
    seen = s_off > 0
    s_on, s_off, z = s_on[seen], s_off[seen], on.cells.z_um[seen]
    assert np.ptp(z) > 150
    a = on.spec.tissue.attenuation
    np.testing.assert_allclose(s_on / s_off, np.exp(-z / a.excitation_length_um - z / a.emission_length_um),
                               rtol=1e-5)


# ------------------------------------------------------------------------- tissue
def test_vessels_darken_only_where_the_vessel_mask_is():
    def upd():  # fresh dicts: Spec.with_updates keeps (and edits) the dicts it is given
        return {"tissue.neuropil": {"enabled": True, "photons_per_um2_s": 5000.0},
                "vasculature": {"enabled": True, "depth_um": 100.0, "trunk_count": 2}}

    off = bare(**upd(), **{"vasculature.enabled": False})
    on = bare(**upd())
    w_on = build_world(on)
    mask = w_on.scene.vessel_mask
    assert 0.02 < mask.mean() < 0.9
    win = (0, 80, 0, 96)
    m_off = render_block(build_world(off), range(3), win).astype(float)
    m_on = render_block(w_on, range(3), win).astype(float)
    np.testing.assert_array_equal(m_on[:, ~mask], m_off[:, ~mask])
    assert m_on[:, mask].mean() < 0.9 * m_off[:, mask].mean()
    assert (m_on <= m_off).all()
    # a flat neuropil under a vessel keeps exp(-2 mu_a L) of its light (docs/physics.md §2.5)
    e_off = electrons(flat(**{"vasculature": upd()["vasculature"], "vasculature.enabled": False}))[0]
    e_on = electrons(flat(vasculature=upd()["vasculature"]))[0]
    t = np.exp(-2 * 0.02 * w_on.scene.vessel_chord_um[w_on.scene.margin_px :, w_on.scene.margin_px :][:80, :96])
    np.testing.assert_allclose(e_on / e_off, t, rtol=1e-5)


def test_falloff_and_vignette_darken_the_corners_by_their_ratios():
    spec = flat(**{"sensor.gain_adu_per_e": 1.0, "sensor.offset_adu": 0.0, "sensor.dark_current_e_per_s": 0.0,
                   "tissue.neuropil.photons_per_um2_s": 10000.0})
    H, W, d = 80, 96, spec.pixel_size_um
    base = render_block(build_world(spec), range(1), (0, H, 0, W))[0].astype(float)
    assert np.ptp(base) <= 1
    yc, xc = (H - 1) / 2 * d, (W - 1) / 2 * d
    r_edge, r_corner = min(H, W) * d / 2, np.hypot(H, W) * d / 2  # this field's edge and corner, um
    spec = spec.with_updates({"illumination.falloff.edge_radius_um": r_edge,
                              "illumination.vignette.corner_radius_um": r_corner})
    for upd, r_ref, ratio in (
        ({"illumination.falloff": {"enabled": True, "edge_ratio": 0.7, "edge_radius_um": r_edge}}, r_edge, 0.7),
        ({"illumination.vignette": {"enabled": True, "corner_ratio": 0.6, "corner_radius_um": r_corner}},
         r_corner, 0.6),
    ):
        mov = render_block(build_world(spec.with_updates(upd)), range(1), (0, H, 0, W))[0] / base
        for (i, j), (y, x) in (((0, 0), (yc, xc)), ((0, W // 2), (yc, 0.5 * d)), ((H - 1, W - 1), (yc, xc))):
            want = 1 - (1 - ratio) * (y * y + x * x) / r_ref**2
            assert mov[i, j] == pytest.approx(want, abs=2e-3)
        assert mov[0, 0] == pytest.approx(mov.min(), abs=2e-3)
    # at the field edge / corner the ratio is the configured one (pixel centres sit d/2 inside)
    fo = render_block(build_world(spec.with_updates({"illumination.falloff.enabled": True})),
                      range(1), (0, H, 0, W))[0] / base
    assert fo[0, W // 2] == pytest.approx(0.7, abs=0.02)  # the nearest edge (short axis)
    vg = render_block(build_world(spec.with_updates({"illumination.vignette.enabled": True})),
                      range(1), (0, H, 0, W))[0] / base
    assert vg[0, 0] == pytest.approx(0.6, abs=0.02)


def test_glow_adds_a_smooth_positive_term():
    spec = flat()
    e0 = electrons(spec)[0]
    e1 = electrons(spec.with_updates({"illumination.glow": {"enabled": True, "fraction_of_background": 0.1}}))[0]
    g = e1 - e0
    assert (g > 0).all()
    assert g.max() == pytest.approx(0.1 * e0.mean(), rel=0.05)  # peak: 10 % of the centre background
    # smooth: neighbouring pixels differ by far less than the glow itself
    assert np.abs(np.diff(g, axis=1)).max() < 0.03 * g.max()
    assert np.abs(np.diff(g, axis=0)).max() < 0.03 * g.max()
    assert np.abs(np.diff(g, 2, axis=1)).max() < 0.002 * g.max()


def test_neuropil_switch_changes_b():
    on = minisim.simulate(flat()).dataset
    off = minisim.simulate(flat(**{"tissue.neuropil.enabled": False})).dataset
    b_on, b_off = on["b"].sel(bg_component="neuropil").values, off["b"].sel(bg_component="neuropil").values
    assert (b_off == 0).all()
    assert (b_on > 0).all()
    assert on["movie"].values.mean() > off["movie"].values.mean() + 10


def test_bleaching_dims_over_time():
    spec = flat(**{"recording.duration_s": 20.0, "illumination.bleaching": {"enabled": True, "fraction": 0.4,
                                                                             "tau_s": 5.0}})
    e = electrons(spec, range(200)).mean(axis=(1, 2))
    assert e[-1] < 0.9 * e[0]
    assert (np.diff(e) <= 1e-3).all()
    # the neuropil (autofluorescence) bleaches with beta / 2 (docs/physics.md §7.3)
    assert e[-1] / e[0] == pytest.approx(1 - 0.2 * (1 - np.exp(-199 / 10 / 5.0)), rel=0.01)


# ------------------------------------------------------------------------- motion
def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer (dy, dx) that moves image a onto image b (phase correlation)."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    r = np.fft.ifft2(fb * np.conj(fa) / (np.abs(fb * np.conj(fa)) + 1e-12)).real
    peak = np.array(np.unravel_index(np.argmax(r), r.shape), float)
    size = np.array(r.shape)
    return np.where(peak > size / 2, peak - size, peak)


def test_motion_moves_the_frames_by_the_true_displacement():
    spec = bare(**{"tissue.neuropil": {"enabled": True, "spatial_contrast": 0.8, "correlation_length_um": 8.0},
                   "recording.duration_s": 4.0,
                   "motion": {"enabled": True, "rigid_sd_um": 8.0, "rigid_tau_s": 0.2, "drift_um": 0.0,
                              "jerk_rate_hz": 0.0, "oscillation_amplitude_um": 0.0,
                              "nonrigid_amplitude_um": 0.0, "max_displacement_um": 20.0}})
    ds = minisim.simulate(spec).dataset
    truth = ds["motion"].values
    assert np.abs(truth).max() > 2
    mov = ds["movie"].values.astype(float)
    errors = [np.abs(_shift(mov[0], mov[t]) - (truth[t] - truth[0])).max() for t in range(0, 40, 3)]
    assert max(errors) <= 1.0


def test_scope_fields_stay_put_while_the_tissue_moves():
    """Falloff, vignette and glow belong to the scope: over a uniform tissue, strong motion changes
    nothing, so their pattern is not dragged along with the brain."""
    fields = {"illumination.falloff": {"enabled": True, "edge_ratio": 0.6},
              "illumination.vignette": {"enabled": True, "corner_ratio": 0.5},
              "illumination.glow.enabled": True, "recording.duration_s": 2.0}
    move = {"enabled": True, "rigid_sd_um": 10.0, "rigid_tau_s": 0.2, "drift_um": 5.0,
            "nonrigid_amplitude_um": 3.0, "max_displacement_um": 25.0}
    still = minisim.simulate(flat(**fields)).dataset["movie"].values
    moving = minisim.simulate(flat(**fields, motion=move)).dataset
    assert np.abs(moving["motion"].values).max() > 5  # the tissue really moved
    assert np.ptp(still[0].astype(float)) > 50  # and the fields make a strong pattern
    # equal up to the warp's float rounding (1 ADU); a field dragged 3+ px would differ by tens of ADU
    assert np.abs(moving["movie"].values.astype(int) - still.astype(int)).max() <= 1


def test_without_motion_a_static_scene_changes_only_by_sensor_noise():
    spec = flat(**{"sensor.noise": True, "sensor.dsnu_adu": 0.0, "sensor.prnu_fraction": 0.0})
    quiet = minisim.simulate(spec.with_updates({"sensor.noise": False})).dataset["movie"].values
    assert (quiet == quiet[0]).all()
    mov = minisim.simulate(spec).dataset["movie"].values.astype(float)
    diff = np.diff(mov, axis=0)
    s = spec.sensor
    lam = float(electrons(spec)[0].mean()) + s.dark_current_e_per_s / spec.recording.fps
    var = s.gain_adu_per_e**2 * (lam + s.read_noise_e**2) + 1 / 12
    # no drift: the mean step is (last - first) / (T - 1), within 5 of its standard errors of 0
    # (a fixed 0.05 ADU was one standard error here, passed or failed by the draws)
    se = np.sqrt(2 * var / mov[0].size) / diff.shape[0]
    assert abs(diff.mean()) < 5 * se
    assert diff.var() / 2 == pytest.approx(var, rel=0.05)


def test_focus_drift_changes_every_cells_blur_and_leaves_the_lateral_path_alone():
    from minisim.motion import simulate_motion

    still = {"rigid_sd_um": 0.0, "drift_um": 0.0, "jerk_rate_hz": 0.0, "oscillation_amplitude_um": 0.0,
             "nonrigid_amplitude_um": 0.0, "rigid_tau_s": 1.0}
    spec = bare(**{"optics.defocus_enabled": True, "recording.duration_s": 6.0,
                   "motion": {"enabled": True, **still, "axial_sd_um": 4.0}})
    mot = simulate_motion(spec)
    assert np.abs(mot.axial_um).max() > 4.0
    assert np.abs(mot.axial_um).max() <= 12.0  # bounded at 3 sd
    flat_mot = simulate_motion(spec.with_updates({"motion.axial_sd_um": 0.0}))
    np.testing.assert_array_equal(mot.rigid_um, flat_mot.rigid_um)
    assert (flat_mot.axial_um == 0).all()
    # a single in-focus cell: its image is sharpest when the drift is smallest (the central one
    # of the cells within 3 um of focus: the planes dz -/+ 12 um are then both wider than dz)
    w = build_world(spec)
    c = w.scene.cells
    in_focus = np.flatnonzero(np.abs(w.scene.dz_um) < 3.0)
    u = int(in_focus[np.argmin(np.hypot(c.y_um, c.x_um)[in_focus])])
    assert np.hypot(c.y_um[u], c.x_um[u]) < 40.0
    C = np.zeros((len(w.scene.cells), 60), np.float32)
    C[u] = 1.0
    w.traces = lambda frames: (C[:, frames.start : frames.stop], np.zeros(len(frames), np.float32))
    e = render_electrons(w, range(60), (0, 80, 0, 96))
    widths = np.array([moments(e[t], spec.pixel_size_um)[1] for t in range(60)])
    # the blur grows with the drift on either side of focus: footprints are interpolated between
    # the planes dz - b, dz and dz + b, so each side is monotonic (not one curve in |dz|)
    from scipy.stats import spearmanr

    drift = mot.axial_um[:60]
    for side in (drift < 0, drift > 0):
        assert side.sum() >= 5
        assert spearmanr(widths[side], np.abs(drift[side]))[0] > 0.9
    static = build_world(spec.with_updates({"motion.axial_sd_um": 0.0}))
    static.traces = lambda frames: (C[:, frames.start : frames.stop], np.zeros(len(frames), np.float32))
    e0 = render_electrons(static, range(60), (0, 80, 0, 96))
    assert np.ptp([moments(e0[t], spec.pixel_size_um)[1] for t in range(60)]) < 1e-3


# ------------------------------------------------------------------------- cells
def test_cell_count_v4_ca1_matches_density_within_3_sqrt_n():
    spec = presets.scope("miniscope_v4_ca1")
    h, w = spec.fov_um
    n_expected = expected_count(spec)
    assert n_expected == pytest.approx(912, rel=0.01)
    for seed in (0, 1):
        s = spec.with_updates({"recording.seed": seed})
        n = len(place_cells(s, (-h / 2, h / 2), (-w / 2, w / 2)))
        assert abs(n - n_expected) <= 3 * np.sqrt(n_expected)


def test_enlarging_the_field_keeps_the_cells_already_there():
    spec = presets.scope("miniscope_v4_ca1")
    small = place_cells(spec, (-120.0, 80.0), (-60.0, 150.0))
    big = place_cells(spec, (-400.0, 300.0), (-350.0, 420.0))
    idx = np.searchsorted(big.unit_id, small.unit_id)
    assert (big.unit_id[idx] == small.unit_id).all()
    for f in ("z_um", "y_um", "x_um", "radius_um", "gain"):
        np.testing.assert_array_equal(getattr(big, f)[idx], getattr(small, f))
    # and the sensor size does not change a cell's footprint shape or brightness
    a = build_scene(bare(**{"sensor.width_px": 64, "sensor.height_px": 64}))
    b = build_scene(bare(**{"sensor.width_px": 128, "sensor.height_px": 128}))
    common = np.intersect1d(a.cells.unit_id, b.cells.unit_id)
    assert len(common) > 5
    for uid in common[:5]:
        pa = a.planted[int(np.searchsorted(a.cells.unit_id, uid))][2]
        pb = b.planted[int(np.searchsorted(b.cells.unit_id, uid))][2]
        np.testing.assert_array_equal(pa, pb)


def test_a_columns_candidates_are_poisson_uniform_and_do_not_depend_on_the_other_columns():
    from scipy import stats

    from minisim.scene.cells import _candidates, candidate_intensity_per_um3

    spec = presets.scope("miniscope_v4_ca1")
    band = spec.cells.bands[0]
    lam = candidate_intensity_per_um3(band)
    mean = lam * 100.0**2 * band.band_thickness_um
    cy, cx = (a.ravel() for a in np.meshgrid(np.arange(-20, 20), np.arange(-25, 25), indexing="ij"))
    pos, mark, uid, col = _candidates(3, 0, band, lam, cy, cx)
    n = np.bincount(col, minlength=len(cy))
    # counts: Poisson(mean) over 2,000 columns (sd of the mean sqrt(mean / 2000))
    assert abs(n.mean() - mean) < 4 * np.sqrt(mean / len(n))
    assert abs(n.var() / mean - 1) < 4 * np.sqrt(2 / len(n))
    # positions uniform in their column and band, marks uniform
    fy, fx = pos[:, 1] / 100.0 - cy[col], pos[:, 2] / 100.0 - cx[col]
    fz = (pos[:, 0] - band.depth_um) / band.band_thickness_um + 0.5
    for f in (fy, fx, fz, mark):
        assert 0 < f.min() and f.max() < 1
        assert stats.kstest(f, "uniform").pvalue > 1e-3
    assert len(np.unique(uid)) == len(uid)
    # a column's candidates are the same asked alone, or with other columns in another order
    some = np.array([1234, 7, 999, 0])
    p2, m2, u2, c2 = _candidates(3, 0, band, lam, cy[some], cx[some])
    for j, i in enumerate(some):
        np.testing.assert_array_equal(pos[col == i], p2[c2 == j])
        np.testing.assert_array_equal(mark[col == i], m2[c2 == j])
        np.testing.assert_array_equal(uid[col == i], u2[c2 == j])


def test_cell_radius_gain_and_shape_have_their_laws():
    from scipy import stats

    from minisim.scene.cells import cell_draws

    spec = presets.scope("miniscope_v4_ca1")
    band, c = spec.cells.bands[0], spec.cells
    ids = np.arange(20000, dtype=np.int64) * 4099 + 11
    radius, gain = cell_draws(spec, band, ids)
    # radius r0 + sd clip(N, -2.5, 2.5): mean r0, sd 0.986 sd, within 2.5 sd
    assert abs(radius.mean() - band.soma_radius_um) < 4 * band.soma_radius_sd_um / np.sqrt(len(ids))
    assert radius.std() / band.soma_radius_sd_um == pytest.approx(0.986, abs=0.02)
    assert np.abs(radius - band.soma_radius_um).max() <= 2.5 * band.soma_radius_sd_um
    # gain LogNormal(0, brightness_sd_ln)
    assert stats.kstest(np.log(gain) / c.brightness_sd_ln, "norm").pvalue > 1e-3
    ell, phi, angles, lengths = optics.cell_shapes(spec, ids)
    assert stats.kstest(np.log(ell) / c.ellipticity_sd, "norm").pvalue > 1e-3
    assert stats.kstest(phi / np.pi, "uniform").pvalue > 1e-3
    assert angles.shape == lengths.shape == (len(ids), c.dendrite_count)
    assert stats.kstest(angles.ravel() / (2 * np.pi), "uniform").pvalue > 1e-3
    assert stats.kstest((lengths.ravel() / c.dendrite_length_um - 0.6) / 0.8, "uniform").pvalue > 1e-3
    # the first draws do not depend on the dendrite count
    e2, p2, a2, _ = optics.cell_shapes(spec.with_updates({"cells.dendrite_count": 5}), ids[:50])
    np.testing.assert_array_equal(e2, ell[:50])
    np.testing.assert_array_equal(p2, phi[:50])
    np.testing.assert_array_equal(a2[:, :2], angles[:50])


def test_a_cells_draws_do_not_depend_on_the_cells_drawn_with_it():
    from minisim.scene.cells import cell_draws

    spec = presets.scope("miniscope_v4_ca1")
    band = spec.cells.bands[0]
    ids = np.array([5, 2**40 + 5, -3, 123456789, 5 + 2**32, 77], np.int64)
    some = np.array([4, 0, 2])
    full, part = cell_draws(spec, band, ids), cell_draws(spec, band, ids[some])
    for a, b in zip(full, part):
        np.testing.assert_array_equal(a[some], b)
    full, part = optics.cell_shapes(spec, ids), optics.cell_shapes(spec, ids[some])
    for a, b in zip(full, part):
        np.testing.assert_array_equal(a[some], b)
    for i, uid in enumerate(ids):  # one at a time: the same values
        one = optics.cell_shape(spec, uid)
        assert (one[0], one[1]) == (full[0][i], full[1][i])
        np.testing.assert_array_equal(one[2], full[2][i])
        np.testing.assert_array_equal(one[3], full[3][i])
    assert len(np.unique(full[0])) == len(ids)  # ids equal modulo 2**32 are different cells


def test_vessels_walk_in_10_um_steps_with_0_08_rad_turns():
    from minisim.scene import vessels

    spec = presets.scope("miniscope_v4_ca1")
    va = spec.vasculature
    net = vessels.vessel_network(spec)
    assert len(net) == va.trunk_count * (2 ** (va.branch_levels + 1) - 1)
    turns = []
    for v in net:
        step = np.diff(v.points_um, axis=0)
        np.testing.assert_allclose(np.hypot(step[:, 0], step[:, 1]), 10.0, rtol=1e-9)
        turns.append(np.diff(np.unwrap(np.arctan2(step[:, 0], step[:, 1]))))
    turns = np.concatenate(turns)
    assert len(turns) > 500
    assert abs(turns.mean()) < 4 * 0.08 / np.sqrt(len(turns))
    assert turns.std() == pytest.approx(0.08, rel=4 / np.sqrt(2 * len(turns)))
    trunks = net[:: 2 ** (va.branch_levels + 1) - 1]
    assert all(0.8 * va.trunk_radius_um <= t.radius_um <= 1.2 * va.trunk_radius_um for t in trunks)
    # a walk stops at its first point past 1.3 half fields
    half = np.array([max(va.field_um, s) for s in spec.fov_um]) / 2
    for v in net:
        out = np.any(np.abs(v.points_um) > 1.3 * half, axis=1)
        assert not out[:-1].any()


def test_the_chord_through_the_vessels_is_the_geometry_and_a_crop_is_a_crop():
    from minisim.scene import vessels

    net = vessels.vessel_network(presets.scope("miniscope_v4_ca1"))
    y, x = np.linspace(-300, 300, 241), np.linspace(-280, 320, 200)
    got = vessels.chord_length_um(net, y, x)
    # the definition: 2 sqrt(r^2 - d^2), d the distance to each vessel's centre line, summed
    want = np.zeros_like(got)
    Y, X = np.meshgrid(y, x, indexing="ij")
    for v in net:
        a, b = v.points_um[:-1], v.points_um[1:]
        ab = b - a
        t = np.clip(((Y[..., None] - a[:, 0]) * ab[:, 0] + (X[..., None] - a[:, 1]) * ab[:, 1])
                    / np.maximum((ab * ab).sum(axis=1), 1e-12), 0, 1)
        d2 = ((Y[..., None] - a[:, 0] - t * ab[:, 0]) ** 2 + (X[..., None] - a[:, 1] - t * ab[:, 1]) ** 2).min(axis=-1)
        want += 2 * np.sqrt(np.clip(v.radius_um**2 - d2, 0, None))
    assert (got > 0).mean() > 0.05
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(vessels.chord_length_um(net, y[40:100], x[13:150]), got[40:100, 13:150])


# ------------------------------------------------------------------------- invariants
def every_effect(**updates) -> Spec:
    """A small field with every effect on, hot pixels plentiful, strong motion."""
    spec = bare(**{
        "optics.defocus_enabled": True, "optics.aberration_sigma_um": 1.0,
        "optics.field_curvature": {"enabled": True, "radius_um": 400.0},
        "tissue.scatter": {"enabled": True}, "tissue.attenuation": {"enabled": True},
        "tissue.neuropil": {"enabled": True},
        "vasculature": {"enabled": True, "depth_um": 120.0},
        "illumination.falloff": {"enabled": True}, "illumination.vignette": {"enabled": True},
        "illumination.glow": {"enabled": True}, "illumination.bleaching": {"enabled": True, "tau_s": 2.0},
        "motion": {"enabled": True, "rigid_sd_um": 3.0, "jerk_rate_hz": 1.0, "jerk_amplitude_um": 5.0,
                   "nonrigid_amplitude_um": 2.0, "max_displacement_um": 12.0, "axial_sd_um": 3.0},
        "sensor.noise": True, "sensor.hot_pixel_fraction": 0.01, "sensor.bit_depth": 10,
        "sensor.gain_adu_per_e": 0.25, "sensor.offset_adu": 20.0,
        "recording.duration_s": 2.0,
    })
    return spec.with_updates(updates) if updates else spec


@pytest.mark.slow
def test_same_bytes_for_any_chunking_with_every_effect_on():
    rec = minisim.simulate(every_effect())
    movie = rec.dataset["movie"]
    whole = movie.chunk({"frame": -1, "height": -1, "width": -1}).values
    odd = movie.chunk({"frame": 3, "height": 17, "width": 29}).values
    np.testing.assert_array_equal(whole, odd)
    # and block by block straight through render_block, in reverse order
    w = build_world(every_effect())
    out = np.empty_like(whole)
    for t0 in (15, 7, 0):
        for y0, y1, x0, x1 in ((40, 80, 50, 96), (0, 40, 0, 50), (40, 80, 0, 50), (0, 40, 50, 96)):
            out[t0 : t0 + 8, y0:y1, x0:x1] = render_block(w, range(t0, min(t0 + 8, 20)), (y0, y1, x0, x1))
    np.testing.assert_array_equal(whole, out)
    assert (whole > 0).any() and len(np.unique(whole)) > 20


def test_ground_truth_explains_the_movie_with_every_other_effect_on():
    spec = every_effect(**{"motion.enabled": False, "sensor.noise": False})
    ds = minisim.simulate(spec).dataset
    A, C = ds["A"].values.astype(np.float64), ds["C"].values.astype(np.float64)
    b, f = ds["b"].values.astype(np.float64), ds["f"].values.astype(np.float64)
    model = spec.sensor.offset_adu + np.einsum("uhw,ut->thw", A, C) + np.einsum("khw,kt->thw", b, f)
    movie = ds["movie"].values.astype(np.float64)
    assert len(ds.unit_id) > 10
    assert np.abs(movie - np.clip(np.rint(model), 0, 1023)).max() <= 1  # float32 sums may tie-break
    assert (movie == np.clip(np.rint(model), 0, 1023)).mean() > 0.999


@pytest.mark.slow
def test_preview_window_is_the_crop_of_the_full_render():
    spec = every_effect()
    full = render_block(build_world(spec), range(4, 12), (0, 80, 0, 96))
    for win in ((10, 43, 21, 70), (0, 16, 80, 96), (64, 80, 0, 32)):
        y0, y1, x0, x1 = win
        part = render_block(build_world(spec, win), range(4, 12), win)
        np.testing.assert_array_equal(part, full[:, y0:y1, x0:x1])


# ------------------------------------------------------------------------- V4 calibration
@pytest.fixture(scope="module")
def v4_world():
    # 60 s (the default duration): detectability needs the realised activity of a real session
    spec = presets.get("miniscope_v4_ca1", "moderate").with_updates({"recording.duration_s": 60.0})
    return build_world(spec)


@pytest.mark.slow
def test_v4_background_and_saturation_hit_the_8_bit_targets(v4_world):
    spec = v4_world.spec
    frames = render_block(v4_world, range(20), (0, 608, 0, 608))
    top = 2**spec.sensor.bit_depth - 1
    assert (frames == top).mean() < 1e-3  # docs/physics.md §8.13
    centre = frames[:, 254:354, 254:354].mean()
    assert 80 <= centre <= 120, centre


@pytest.mark.slow
def test_v4_cortex_background_and_saturation_hit_the_8_bit_targets():
    spec = presets.get("miniscope_v4_cortex_l23").with_updates({"recording.duration_s": 2.0})
    frames = render_block(build_world(spec), range(10), (0, 608, 0, 608))
    assert (frames == 255).mean() < 1e-3
    assert 80 <= frames[:, 254:354, 254:354].mean() <= 120


@pytest.mark.slow
def test_v4_in_focus_soma_is_10_to_20_percent_of_local_background(v4_world):
    sc = v4_world.scene
    W = 608
    m = sc.margin_px
    Wp = W + 2 * m
    n = len(sc.cells)
    ones = np.ones((n, 2), np.float32)
    total = render_electrons_static(v4_world, ones, np.ones(2, np.float32))[0]
    vi = sc.vignette * sc.illumination
    csc = sc.sharp_e.tocsc()
    c = sc.cells
    ratios = []
    for u in np.nonzero((np.abs(sc.dz_um) < 5) & (np.hypot(c.y_um, c.x_um) < 400))[0]:
        rows, vals = csc.indices[csc.indptr[u] : csc.indptr[u + 1]], csc.data[csc.indptr[u] : csc.indptr[u + 1]]
        k = int(np.argmax(vals))
        i, j = rows[k] // Wp - m, rows[k] % Wp - m
        own = vals[k] * vi[i, j]
        ratios.append(own / (total[i, j] - own))
    assert len(ratios) > 20
    assert 0.10 <= np.median(ratios) <= 0.20, np.median(ratios)


@pytest.mark.slow
def test_v4_ca1_moderate_detectable_fraction_is_30_to_70_percent(v4_world):
    met = cell_metrics(v4_world)
    c = v4_world.scene.cells
    h, w = v4_world.spec.fov_um
    inside = (np.abs(c.y_um) < h / 2) & (np.abs(c.x_um) < w / 2)
    frac = met["detectable"][inside].mean()
    assert 0.30 <= frac <= 0.70, frac


def test_vasomotion_modulates_only_under_the_vessels_and_keeps_the_bytes_per_chunking():
    """Hemodynamics (docs/physics.md §7.4): with vessels and vasomotion on (everything else off,
    noise off), frames differ only under the vessel mask, by exp(-2 mu_a L delta(t)); the
    ground truth's vessel_dilation is delta(t); any chunking gives the same bytes."""
    spec = bare(**{"vasculature.enabled": True, "vasculature.depth_um": 40.0,
                   "vasculature.trunk_radius_um": 12.0,
                   "vasculature.vasomotion": {"enabled": True, "amplitude_fraction": 0.3,
                                              "frequency_hz": 1.0},
                   "tissue.neuropil": {"enabled": True}, "recording.duration_s": 2.0})
    still = spec.with_updates({"vasculature.vasomotion.enabled": False})
    rec, ref = minisim.simulate(spec), minisim.simulate(still)
    ds = rec.dataset
    delta = ds.vessel_dilation.values
    t = np.arange(ds.sizes["frame"]) / spec.recording.fps
    phase = np.angle(np.sum(delta * np.exp(-2j * np.pi * t)))  # a sin(2 pi f t + phi)
    np.testing.assert_allclose(delta, 0.3 * np.sin(2 * np.pi * t + phase + np.pi / 2), atol=1e-5)
    np.testing.assert_array_equal(ref.dataset.vessel_dilation.values, 0)
    mask = ds.vessel_mask.values
    assert mask.any() and (~mask).any()
    movie = ds.movie.values.astype(float)
    base = ref.dataset.movie.values.astype(float)
    np.testing.assert_array_equal(movie[:, ~mask], base[:, ~mask])  # nothing moves outside the vessels
    k = int(np.argmax(delta))
    assert (movie[k][mask] <= base[k][mask]).all() and (movie[k][mask] < base[k][mask]).any()  # dilated: darker
    assert digest(minisim.simulate(spec, chunks={"frame": 3, "height": 17, "width": 41}).dataset.movie) == \
        digest(ds.movie)
    moving = spec.with_updates({"motion.enabled": True})
    assert digest(minisim.simulate(moving, chunks={"frame": 7, "height": 23, "width": 29}).dataset.movie) == \
        digest(minisim.simulate(moving).dataset.movie)


# ------------------------------------------------------------------------- crops are crops
@pytest.mark.slow
@pytest.mark.parametrize("name", ["miniscope_v4_cortex_l23", "generic_1p"])
def test_a_smaller_sensor_window_is_the_centre_crop_of_the_full_sensor(name):
    """Vignette, falloff, glow, field curvature and vessels are placed in um from the optical
    axis, and the halo's node grid is anchored there too, so with motion and noise off a 64 x 64
    sensor records exactly the centre of a 128 x 128 one: movie, b and A (V4 cortex: halo
    nodes 6 px apart, so the crop offset of 32 px is not a multiple of the node spacing;
    generic: vessels in the field)."""
    base = presets.scope(name).with_updates({"motion.enabled": False, "sensor.noise": False,
                                             "recording.duration_s": 0.2})
    big, small = (minisim.simulate(base.with_updates({"sensor.width_px": n, "sensor.height_px": n})).dataset
                  for n in (128, 64))
    c = slice(32, 96)
    full_movie = big.movie.values
    assert np.ptp(full_movie[0].astype(int)) > 20  # a scene with structure, not a flat field
    np.testing.assert_array_equal(small.movie.values, full_movie[:, c, c])
    np.testing.assert_array_equal(small.b.values, big.b.values[:, c, c])
    np.testing.assert_array_equal(small.vessel_mask.values, big.vessel_mask.values[c, c])
    units = small.unit_id.values
    assert set(units) <= set(big.unit_id.values) and 0 < len(units) < big.sizes["unit_id"]
    np.testing.assert_array_equal(small.A.values, big.A.sel(unit_id=units).values[:, c, c])


def test_a_spec_written_with_field_fractions_opens_with_the_same_geometry():
    """Specs stored before the fields were in um (glow width_fraction/center_offset_fraction,
    falloff and vignette at the sensor's edge and corner) still load, with the um values that
    reproduce the old geometry for their sensor."""
    import json

    spec = presets.scope("miniscope_v4_ca1")
    old = json.loads(spec.model_dump_json())
    glow = old["illumination"]["glow"]
    del glow["sigma_um"], glow["center_offset_um"]
    glow.update(width_fraction=0.4, center_offset_fraction=0.15)
    for sec, key in (("falloff", "edge_radius_um"), ("vignette", "corner_radius_um")):
        del old["illumination"][sec][key]
    got = Spec.model_validate_json(json.dumps(old))
    h, w = spec.fov_um
    assert got.illumination.glow.sigma_um == pytest.approx(0.4 * h)
    assert got.illumination.glow.center_offset_um == pytest.approx(0.15 * h / 2)
    assert got.illumination.falloff.edge_radius_um == pytest.approx(h / 2)
    assert got.illumination.vignette.corner_radius_um == pytest.approx(np.hypot(h, w) / 2)


# ------------------------------------------------------------------------- scene build
def test_scene_footprints_are_built_on_one_blas_thread_and_the_count_is_restored():
    import minisim.scene as scene_mod

    setters = scene_mod._openblas_thread_setters()
    if not setters:
        pytest.skip("no OpenBLAS found in this process (not Linux, or another BLAS)")
    before = [get() for get, _ in setters]
    seen = []
    with scene_mod._one_blas_thread():
        seen.append([get() for get, _ in setters])
        with scene_mod._one_blas_thread():  # nested (two scene builds in two threads)
            seen.append([get() for get, _ in setters])
        seen.append([get() for get, _ in setters])
    assert seen == [[1] * len(setters)] * 3
    assert [get() for get, _ in setters] == before


@pytest.mark.slow
def test_scene_bytes_do_not_depend_on_the_blas_thread_setting():
    import subprocess
    import sys

    code = ("import hashlib; from minisim import presets; from minisim.scene import build_scene\n"
            "sc = build_scene(presets.scope('miniscope_v4_ca1').with_updates("
            "{'sensor.width_px': 96, 'sensor.height_px': 96}))\n"
            "h = hashlib.sha256()\n"
            "for m in (sc.sharp_e, sc.halo_e, *sc.axial_e): h.update(m.data.tobytes() + m.indices.tobytes())\n"
            "h.update(sc.neuropil_e.tobytes()); print(h.hexdigest())")
    import os

    got = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads}
        got.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               check=True).stdout.strip())
    assert len(got) == 1
