"""minisim.score: a perfect estimate scores perfectly, and each kind of error lowers exactly the
metrics it should, by the expected amount. Real recordings from ``minisim.simulate``, real zarr.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import ndimage

import minisim
from minisim import presets
from minisim.score import CONVENTIONS, event_f1, from_arrays, from_caiman, from_minian, score

#: A 64 x 64 px (106 um) window of the V4 CA1 scope, 5 s at 20 fps, focus on the band.
_BASE = {"sensor.width_px": 64, "sensor.height_px": 64, "sensor.noise_tile_px": 16,
         "recording.duration_s": 5.0, "recording.seed": 4,  # (a seed whose 64 px field holds detectable cells)
         "optics.focus_offset_um": 0.0, "optics.field_curvature": {"enabled": False}}


def _spec(**updates):
    return presets.scope("miniscope_v4_ca1").with_updates({**_BASE, **updates})


@pytest.fixture(scope="module")
def rec():
    """Every effect of the preset on: scattered halos, vessels, motion, noise."""
    return minisim.simulate(_spec())


@pytest.fixture(scope="module")
def compact():
    """No scattered halo and no vessels: footprints are the cells' own, so errors are clean."""
    return minisim.simulate(_spec(**{"tissue.scatter": {"enabled": False}, "vasculature.enabled": False}))


def _truth_arrays(r):
    ds = r.dataset
    return ds["A"].values, ds["C"].values, ds["S"].values.astype(np.float32)


def _inside(r):
    ds = r.dataset
    s = r.spec
    pos = ds["position"].values
    return (np.abs(pos[:, 1]) < s.fov_um[0] / 2) & (np.abs(pos[:, 2]) < s.fov_um[1] / 2)


def _blob(shape, cy, cx, sigma_px=2.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma_px**2)).astype(np.float32)


# ------------------------------------------------------------------------ a perfect estimate
def test_the_ground_truth_itself_scores_f1_one_and_trace_r_one(rec):
    s = score(rec, from_minian(rec), registration="none")
    assert s.n_true == int(_inside(rec).sum()) >= 8
    assert (s.f1, s.precision, s.recall) == (1.0, 1.0, 1.0)
    assert s.f1_detectable == 1.0 and s.recall_detectable == 1.0
    assert s.trace_r == pytest.approx(1.0, abs=1e-6)
    assert 0.999 < s.trace_r_dff < 1.0     # C includes the bleaching that dF/F leaves out
    assert s.footprint_r == pytest.approx(1.0, abs=1e-6)
    assert s.spike_f1 == 1.0
    assert sum(s.false_positives.values()) == 0
    # units centred outside the field whose light reaches it are matched, and neither TP nor FP
    assert s.n_matched_outside == s.n_estimates - s.n_true > 0


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_every_convention_scores_the_truth_perfectly(rec, convention):
    s = score(rec, from_minian(rec), convention=convention, registration="none")
    assert (s.f1, s.precision, s.recall) == (1.0, 1.0, 1.0)
    assert s.summary().startswith(f"{convention}: F1 1.000")


def test_the_truth_read_back_from_zarr_and_through_caimans_layout_scores_perfectly(rec, tmp_path):
    saved = rec.save(tmp_path / "rec.zarr")
    s = score(saved, from_minian(tmp_path / "rec.zarr"), registration="none")
    assert (s.f1, s.trace_r) == (1.0, pytest.approx(1.0, abs=1e-6))
    A, C, S = _truth_arrays(rec)
    H, W = A.shape[1:]
    # CaImAn's Estimates: A is pixels x K, each column flattened in Fortran order
    a_f = sp.csc_matrix(np.stack([a.ravel(order="F") for a in A], axis=1))
    est = from_caiman(SimpleNamespace(A=a_f, C=C, S=S, dims=(H, W)))
    s = score(rec, est, registration="none")
    assert (s.f1, s.trace_r, s.spike_f1) == (1.0, pytest.approx(1.0, abs=1e-6), 1.0)
    # read in C order instead, the footprints are transposed and the score says so
    wrong = from_caiman(None, (H, W), A=np.stack([a.ravel(order="C") for a in A], axis=1), C=C)
    transposed = score(rec, wrong, registration="none")
    assert transposed.footprint_r < 0.5 and transposed.f1 < 0.75


def test_the_minian_export_read_back_scores_perfectly(rec, tmp_path):
    from minisim.export import to_minian

    folder = to_minian(rec, tmp_path / "minian")
    s = score(rec, from_minian(folder), registration="none")
    assert (s.f1, s.precision, s.recall, s.spike_f1) == (1.0, 1.0, 1.0, 1.0)
    assert s.trace_r == pytest.approx(1.0, abs=1e-6) and s.footprint_r == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------ each error, its metric
def test_dropping_k_units_lowers_recall_by_k_over_n_and_keeps_precision(compact):
    A, C, S = _truth_arrays(compact)
    inside = np.flatnonzero(_inside(compact))
    n = len(inside)
    for k in (1, 3):
        keep = np.setdiff1d(np.arange(len(A)), inside[:k])
        s = score(compact, from_arrays(A[keep], C[keep], S[keep]), registration="none")
        assert s.recall == pytest.approx((n - k) / n, abs=1e-12)
        assert s.precision == 1.0 and sum(s.false_positives.values()) == 0
        assert s.trace_r == pytest.approx(1.0, abs=1e-6)
        missed = s.table().query("kind == 'true' and inside and not matched")
        assert sorted(missed["unit_id"]) == sorted(compact.dataset["unit_id"].values[inside[:k]])


def _brightest_inside(r):
    ds = r.dataset
    inside = np.flatnonzero(_inside(r))
    return int(inside[np.argmax(ds["A"].values[inside].max(axis=(1, 2)))])


def test_splitting_a_unit_in_two_gives_one_duplicate_false_positive(compact):
    A, C, _ = _truth_arrays(compact)
    u = _brightest_inside(compact)
    a = A[u]
    cx = int(np.searchsorted(np.cumsum((a * a).sum(axis=0)), (a * a).sum() / 2))  # halves its energy
    left, right = a.copy(), a.copy()
    left[:, cx:] = 0
    right[:, :cx] = 0
    est_A = np.concatenate([np.delete(A, u, axis=0), left[None], right[None]])
    est_C = np.concatenate([np.delete(C, u, axis=0), C[[u, u]]])
    base = score(compact, from_arrays(A, C), registration="none")
    s = score(compact, from_arrays(est_A, est_C), registration="none")
    assert s.false_positives == {"duplicate": 1, "vessel": 0, "edge": 0, "near_cell": 0, "background": 0}
    assert s.recall == 1.0 and s.n_matched == base.n_matched
    assert s.precision == pytest.approx(base.n_matched / (base.n_matched + 1), abs=1e-12)
    dup = s.table().query("fp_class == 'duplicate'")
    assert len(dup) == 1 and dup["estimate_index"].iloc[0] >= len(A) - 1   # one of the halves


def test_merging_two_cells_loses_one(compact):
    A, C, _ = _truth_arrays(compact)
    ds = compact.dataset
    inside = np.flatnonzero(_inside(compact))
    yx = ds["position"].values[inside, 1:]
    d = np.hypot(*(yx[:, None] - yx[None]).transpose(2, 0, 1)) + np.eye(len(inside)) * 1e9
    i, j = np.unravel_index(np.argmin(d), d.shape)
    a, b = inside[i], inside[j]
    assert d[i, j] < 2 * 2 * ds["radius_um"].values[[a, b]].min()   # neighbours within a gate of the midpoint
    others = np.setdiff1d(np.arange(len(A)), [a, b])
    est_A = np.concatenate([A[others], (A[a] + A[b])[None]])
    est_C = np.concatenate([C[others], (C[a] + C[b])[None]])
    s = score(compact, from_arrays(est_A, est_C), registration="none")
    n = len(inside)
    assert s.recall == pytest.approx((n - 1) / n, abs=1e-12)
    assert s.precision == 1.0
    lost = s.table().query("kind == 'true' and inside and not matched")["unit_id"].tolist()
    assert len(lost) == 1 and lost[0] in ds["unit_id"].values[[a, b]]


def test_shifting_footprints_beyond_the_gate_loses_their_matches(compact):
    A, C, _ = _truth_arrays(compact)
    gate_px = 2 * compact.dataset["radius_um"].values.max() / compact.spec.pixel_size_um
    within = score(compact, from_arrays(ndimage.shift(A, (0, 1.0, 0), order=1), C), registration="none")
    assert within.recall == 1.0                       # a 1 px shift stays within the gate
    shifted = ndimage.shift(A, (0, 2 * gate_px, 0), order=1)
    s = score(compact, from_arrays(shifted, C), registration="none")
    own = s.table().query("kind == 'true' and matched")
    # no cell keeps its own (shifted) footprint; at most a chance neighbour lands in a gate
    assert not (own["estimate_index"].values == np.flatnonzero(
        np.isin(compact.dataset["unit_id"].values, own["unit_id"].values))).any()
    assert s.recall <= 0.2 and s.n_matched <= 0.2 * s.n_true


def test_registration_from_the_estimates_shifts_puts_the_truth_in_the_estimates_frame(compact):
    # the pipeline registered every frame onto a template 7 px down and 5 px left of the truth's
    # frame (motion is on: the applied shifts are the template position minus each frame's motion)
    A, C, _ = _truth_arrays(compact)
    motion = compact.dataset["motion"].values
    template = np.array([7.0, -5.0])
    est_A = ndimage.shift(A, (0, *template), order=1)
    est = from_arrays(est_A, C, shifts=template[None] - motion)
    s = score(compact, est)
    assert s.registration_shift_px == pytest.approx(tuple(template), abs=1e-6)
    assert s.recall >= 0.9 and s.precision == 1.0
    assert score(compact, est, registration="none").recall <= 0.3


def test_spurious_units_in_background_are_classed_background():
    # sparse cells, no vessels: room for blobs far from every cell and from the edges
    r = minisim.simulate(_spec(**{"tissue.scatter": {"enabled": False}, "vasculature.enabled": False,
                                  "cells.density_per_mm3": 20000.0}))
    A, C, _ = _truth_arrays(r)
    H, W = A.shape[1:]
    base = score(r, from_arrays(A, C), registration="none")
    assert base.n_true >= 3
    cells = base.table().query("kind == 'true'")[["centroid_y_px", "centroid_x_px"]].values
    diam = 2 * r.dataset["radius_um"].values.max() / r.spec.pixel_size_um
    spots = []
    for y in range(8, H - 8, 2):
        for x in range(8, W - 8, 2):
            far = np.hypot(cells[:, 0] - y, cells[:, 1] - x).min() > 2 * diam + 2
            if far and all(np.hypot(y - a, x - b) > 8 for a, b in spots):
                spots.append((y, x))
    assert len(spots) >= 2
    spots = spots[:3]
    blobs = np.stack([_blob((H, W), y, x) for y, x in spots])
    est = from_arrays(np.concatenate([A, blobs]), np.concatenate([C, C[: len(spots)]]))
    s = score(r, est, registration="none")
    assert s.false_positives["background"] == len(spots) and sum(s.false_positives.values()) == len(spots)
    assert s.recall == 1.0
    assert s.precision == pytest.approx(base.n_matched / (base.n_matched + len(spots)), abs=1e-12)


def test_spurious_units_on_vessels_are_classed_vessel():
    r = minisim.simulate(_spec(**{"tissue.scatter": {"enabled": False}}))
    A, C, _ = _truth_arrays(r)
    vm = r.dataset["vessel_mask"].values
    H, W = vm.shape
    depth = ndimage.distance_transform_edt(vm)
    depth[:8], depth[-8:], depth[:, :8], depth[:, -8:] = 0, 0, 0, 0   # not at the edge
    spots = []
    for y, x in zip(*np.unravel_index(np.argsort(depth, axis=None)[::-1], depth.shape)):
        if depth[y, x] < 4:
            break
        if all(np.hypot(y - a, x - b) > 8 for a, b in spots):
            spots.append((int(y), int(x)))
        if len(spots) == 2:
            break
    assert spots, "this Spec's vessels should leave room for a blob"
    blobs = np.stack([_blob((H, W), y, x, 1.5) for y, x in spots])
    est = from_arrays(np.concatenate([A, blobs]), np.concatenate([C, C[: len(spots)]]))
    s = score(r, est, registration="none")
    assert s.false_positives["vessel"] == len(spots)
    assert s.recall == 1.0


# ------------------------------------------------------------------------ table, strata, events
def test_table_has_a_row_per_true_cell_and_per_unmatched_estimate(compact):
    A, C, _ = _truth_arrays(compact)
    blob = _blob(A.shape[1:], 1, 1)[None]              # a corner blob: an edge false positive
    s = score(compact, from_arrays(np.concatenate([A, blob]), np.concatenate([C, C[:1]])),
              registration="none")
    t = s.table()
    assert (t["kind"] == "true").sum() == s.n_true + s.n_matched_outside
    assert t.query("kind == 'estimate'")["fp_class"].tolist() == ["edge"]
    for col in ("unit_id", "matched", "cosine", "iou", "footprint_r", "trace_r", "trace_r_dff",
                "defocus_um", "pnr", "vessel_overlap_fraction", "local_density", "detectable"):
        assert col in t.columns
    strata = s.strata
    assert set(strata["stratum"]) == {"abs_defocus_um", "depth_um", "pnr", "vessel_overlap_fraction",
                                      "local_density"}
    for _, g in strata.groupby("stratum"):
        assert g["n_true"].sum() == s.n_true


def test_detectable_recall_and_undetectable_recall_are_counted_apart(rec):
    A, C, _ = _truth_arrays(rec)
    ds = rec.dataset
    inside = _inside(rec)
    det = ds["detectable"].values & inside
    und = inside & ~ds["detectable"].values
    assert det.any() and und.any()
    keep = ~und                                        # a pipeline that finds only detectable cells
    s = score(rec, from_arrays(A[keep], C[keep]), registration="none")
    assert s.recall_detectable == 1.0 and s.recall_undetectable == 0.0
    assert s.f1_detectable == 1.0
    assert s.recall == pytest.approx(det.sum() / inside.sum(), abs=1e-12)


def test_spike_f1_counts_events_within_the_tolerance(compact):
    A, C, S = _truth_arrays(compact)
    late = np.roll(S, 3, axis=1)                       # every event three frames late
    s3 = score(compact, from_arrays(A, C, late), registration="none", tolerance_frames=3)
    s0 = score(compact, from_arrays(A, C, late), registration="none", tolerance_frames=0)
    assert s3.spike_f1 > 0.95 and s0.spike_f1 < 0.3
    assert event_f1(np.array([5, 9]), np.array([5, 9, 30]), 0) == pytest.approx(0.8)


def test_bad_input_is_refused_with_a_clear_message(compact):
    A, C, _ = _truth_arrays(compact)
    with pytest.raises(ValueError, match="convention='cellpose'.*allowed"):
        score(compact, from_arrays(A, C), convention="cellpose")
    with pytest.raises(ValueError, match="estimate footprints are 32 x 32 px.*64 x 64"):
        score(compact, from_arrays(A[:, :32, :32], C))
    with pytest.raises(ValueError, match="estimate C has 5 frames; the truth has 100"):
        score(compact, from_arrays(A, C[:, :5]))
    with pytest.raises(ValueError, match="registration='best'"):
        score(compact, from_arrays(A, C), registration="best")
    with pytest.raises(ValueError, match="estimate C must be"):
        from_arrays(A, C[:3])


def test_a_minian_style_folder_of_one_zarr_per_variable_is_read_with_its_shifts(compact, tmp_path):
    import xarray as xr

    ds = compact.dataset
    A, C, _ = _truth_arrays(compact)
    template = np.array([7.0, -5.0])
    T = ds.sizes["frame"]
    folder = tmp_path / "minian"    # minian saves one zarr (format 2) per variable
    folder.mkdir()
    units = {"unit_id": np.arange(len(A))}
    xr.DataArray(ndimage.shift(A, (0, *template), order=1), dims=("unit_id", "height", "width"),
                 coords=units, name="A").to_dataset().to_zarr(folder / "A.zarr", zarr_format=2)
    xr.DataArray(C, dims=("unit_id", "frame"), coords=units, name="C").to_dataset().to_zarr(
        folder / "C.zarr", consolidated=False)
    xr.DataArray(template[None] - ds["motion"].values, dims=("frame", "shift_dim"),
                 coords={"frame": np.arange(T), "shift_dim": ["height", "width"]},
                 name="motion").to_dataset().to_zarr(folder / "motion.zarr", zarr_format=2)
    est = from_minian(folder)
    assert est.shifts is not None and est.S is None
    s = score(compact, est)
    assert s.registration_shift_px == pytest.approx(tuple(template), abs=1e-6)
    assert s.recall >= 0.9 and s.precision == 1.0 and s.trace_r == pytest.approx(1.0, abs=1e-6)
