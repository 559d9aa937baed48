"""The compiled footprints are the numpy reference's, cell by cell.

``scene.build_footprints`` computes every cell's planted patch, sharp image, focus-drift planes and
halo in compiled kernels (``scene._kernels``); ``scene.cell_footprints`` is the same model one cell
at a time in the numpy functions of ``scene.optics`` that the anatomy tutorial shows. They sum in
another order, so they agree to rounding: float64 values to 1e-12 of the cell's peak, the same
pixels kept by the far-tail cut, and the float32 planted patches to one unit in the last place
(the compiled patch is the reference's square cropped to the pixels the cell's drawing reaches).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import ALL_EFFECTS_OFF

from minisim import Spec, presets, render, truth
from minisim.scene import (
    PlantedPatches,
    _patches,
    build_scene,
    cell_footprints,
    footprint_arrays,
    optics,
)
from minisim.scene._kernels import masked_patch_sums

REL = 1e-12


def small_v4(**updates) -> Spec:
    """The V4 CA1 preset on 64 x 72 px (shadowed cells, sub-pixels of half a pixel)."""
    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.height_px": 64, "sensor.width_px": 72, "recording.duration_s": 1.0, "recording.fps": 10.0})
    return spec.with_updates(updates) if updates else spec


def assert_same_footprints(spec: Spec, window=None, sigma_um: float | None = None) -> int:
    """Every cell of the scene: compiled parts against cell_footprints. Returns the cells checked."""
    b = build_scene(spec, window)._build
    if sigma_um is not None:  # every cell at one PSF width (0: no blur, binning only)
        b.sigma = np.full_like(b.sigma, sigma_um)
        b.sigma_axial = [np.full_like(s, sigma_um) for s in b.sigma_axial]
    Wp = b.W + 2 * b.margin_px
    planted, (s_ptr, s_rows, s_vals), (h_ptr, h_rows, h_vals) = footprint_arrays(b)
    assert len(planted) == len(b.cells) > 0
    for u in range(len(b.cells)):
        ref = cell_footprints(b, u, Wp)
        (i0, j0, patch), (ri0, rj0, rpatch) = planted[u], ref.planted
        # the crop of the reference's square that holds all its non-zero pixels
        r0, c0 = i0 - ri0, j0 - rj0
        assert patch.dtype == rpatch.dtype and r0 >= 0 and c0 >= 0
        assert r0 + patch.shape[0] <= rpatch.shape[0] and c0 + patch.shape[1] <= rpatch.shape[1]
        placed = np.zeros_like(rpatch)
        placed[r0 : r0 + patch.shape[0], c0 : c0 + patch.shape[1]] = patch
        np.testing.assert_array_max_ulp(placed, rpatch, maxulp=1)
        a, e = s_ptr[u], s_ptr[u + 1]
        if ref.sharp_rows is None:
            assert a == e
        else:
            np.testing.assert_array_equal(s_rows[a:e], ref.sharp_rows)
            peak = np.abs(ref.sharp_vals).max() if len(ref.sharp_vals) else 0.0
            np.testing.assert_allclose(s_vals[0, a:e], ref.sharp_vals, rtol=0, atol=REL * peak)
            assert len(ref.axial_vals) == s_vals.shape[0] - 1
            for k, plane in enumerate(ref.axial_vals):
                np.testing.assert_allclose(s_vals[1 + k, a:e], plane, rtol=0, atol=REL * peak)
        a, e = h_ptr[u], h_ptr[u + 1]
        if ref.halo_rows is None:
            assert a == e
        else:
            np.testing.assert_array_equal(h_rows[a:e], ref.halo_rows)
            np.testing.assert_allclose(h_vals[a:e], ref.halo_vals, rtol=REL, atol=0)
    return len(b.cells)


def test_compiled_footprints_match_the_reference_for_v4_cells():
    # shadowed cells, patches clipped by the padded grid's edges and patches that miss it
    spec = small_v4()
    b = build_scene(spec)._build
    assert b.shadowed.all()
    assert assert_same_footprints(spec) > 10


def test_some_v4_patches_are_clipped_and_some_miss_the_grid():
    # what the test above covers: cells whose patch the padded grid cuts, and cells whose light
    # reaches the sensor only through the halo
    spec = small_v4()
    b = build_scene(spec)._build
    _, (s_ptr, _, _), _ = footprint_arrays(b)
    m = b.margin_px
    clipped = [i0 < -m or j0 < -m or i0 + n > b.H + m or j0 + n > b.W + m for i0, j0, n in zip(*_patches(b))]
    has_sharp = np.diff(s_ptr) > 0
    assert np.any(np.array(clipped) & has_sharp)
    assert np.any(~has_sharp)


def test_compiled_footprints_match_the_reference_with_focus_drift():
    spec = small_v4(**{"motion.enabled": True, "motion.axial_sd_um": 2.0})
    assert len(build_scene(spec)._build.sigma_axial) == 2
    assert_same_footprints(spec)


def test_compiled_footprints_match_the_reference_without_dendrites_or_shadows():
    spec = small_v4(**{"cells.dendrites_enabled": False, "vasculature.depth_um": 400.0})
    assert not build_scene(spec)._build.shadowed.any()
    assert_same_footprints(spec)


def test_compiled_footprints_match_the_reference_in_a_window():
    assert_same_footprints(small_v4(), window=(10, 40, 50, 72))


def test_compiled_footprints_match_the_reference_without_oversampling():
    # the generic scope: one sub-pixel per pixel, every effect off but the PSF
    spec = Spec(recording={"duration_s": 1.0, "fps": 10.0}, sensor={"height_px": 48, "width_px": 40})
    spec = spec.with_updates(ALL_EFFECTS_OFF)
    assert optics.oversample(spec) == 1
    assert_same_footprints(spec)


@pytest.mark.parametrize("sigma_um", [0.0, 30.0])
def test_compiled_footprints_match_the_reference_at_extreme_psf_widths(sigma_um):
    # 0: blur_and_bin only bins; 30 um: the footprint spreads over most of the patch
    assert_same_footprints(small_v4(), sigma_um=sigma_um)


@pytest.mark.parametrize("window", [(0, 64, 0, 72), (5, 41, 13, 60)])
def test_tissue_at_some_pixels_is_the_windows_tissue_there_bit_for_bit(window):
    """Scene.tissue_at (the oracle's model at the core pixels) against tissue_e over the
    window, read at the same pixels: equal arrays, with the halo and neuropil on and a C that
    varies over units and frames."""
    spec = small_v4()
    sc = build_scene(spec)
    n = len(sc.cells)
    t = np.arange(6, dtype=np.float32)
    C = (np.linspace(0.1, 2.0, n, dtype=np.float32)[:, None] * (1 + 0.3 * np.sin(t))[None, :]).astype(np.float32)
    f_np = np.float32(1) + np.float32(0.05) * t
    y0, y1, x0, x1 = window
    whole = sc.tissue_e(C, f_np, window).reshape(len(t), -1)
    assert sc.halo_e.nnz and sc.neuropil_e.any()
    n_px = (y1 - y0) * (x1 - x0)
    # some pixels, then every pixel of the window (its own rows), each asked twice: the second
    # time from the kept selection of the sharp rows, the same values
    for pixels in (np.arange(0, n_px, 7), np.arange(n_px), np.arange(0, n_px, 7)):
        np.testing.assert_array_equal(sc.tissue_at(C, f_np, window, pixels), whole[:, pixels])
    kept = [k for k in sc.footprints().windows if k[0] == "pixels"]
    assert len(kept) == 1 and kept[0][1] == window  # the subset's rows, kept once


@pytest.mark.parametrize("updates", [{}, {"cells.dendrites_enabled": False, "tissue.scatter.enabled": False}])
def test_footprint_boxes_are_footprint_box_unit_by_unit_bit_for_bit(updates):
    """Scene.footprint_boxes (one compiled pass over a block of units, what a save's box tasks
    run) against Scene.footprint_box per unit: the same extents and the same float32 boxes, for
    units cut by the sensor's edge and without light on it, with and without the scatter halo."""
    sc = build_scene(small_v4(**updates))
    n = len(sc.cells)
    got = sc.footprint_boxes(range(n))
    assert len(got) == n
    kinds = set()
    for u in range(n):
        ref = sc.footprint_box(u)
        if ref is None:
            assert got[u] is None
            kinds.add("none")
            continue
        assert got[u][0] == ref[0], u
        np.testing.assert_array_equal(got[u][1], ref[1])
        y0, y1, x0, x1 = ref[0]
        kinds.add("edge" if (y0 == 0 or x0 == 0 or y1 == 64 or x1 == 72) else "inside")
    assert "edge" in kinds  # boxes cut by the sensor's edge (on this small field, every box reaches one)
    # units without sharp pixels on the sensor between units with them (the sharp extents are
    # reduced over each unit's run of pixels at once)
    with_sharp = np.flatnonzero(np.diff(sc.sharp_columns()[0]) > 0)
    assert len(with_sharp) > 2 and np.diff(with_sharp).max() > 1
    for u, part in zip(range(3, n - 2), sc.footprint_boxes(range(3, n - 2))):  # any block: the same
        assert (part is None) == (got[u] is None)
        if part is not None:
            assert part[0] == got[u][0] and np.array_equal(part[1], got[u][1])


_EDGE_ANGLES = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2, 1e-5, np.pi / 2 + 1e-5, 2e-3, np.pi / 4,
                         -1e-5, np.pi - 2e-3])


@pytest.mark.parametrize("scope", ["generic", "v4"])
def test_compiled_footprints_match_the_reference_for_dendrites_along_the_axes(monkeypatch, scope):
    """A dendrite is drawn only in its band's columns of each row (computed from its angle):
    dendrites along, and a hair off, the pixel axes (where one of the band's bounds is not used)
    and on the diagonal still match the reference that tests every sub-pixel of their box."""
    shapes_of = optics._shapes_of

    def edge_angles(spec, lo, hi):
        ell, phi, angles, lengths = shapes_of(spec, lo, hi)
        k = np.arange(angles.shape[1])[None, :] + lo.astype(np.int64)[:, None]  # (cell, dendrite)
        return ell, phi, _EDGE_ANGLES[k % len(_EDGE_ANGLES)], lengths

    monkeypatch.setattr(optics, "_shapes_of", edge_angles)
    if scope == "v4":
        spec = small_v4()
    else:  # one sub-pixel a pixel, 0.375 um pixels: dendrites hundreds of sub-pixels long
        spec = Spec(recording={"duration_s": 1.0, "fps": 10.0}, sensor={"height_px": 48, "width_px": 40})
    assert spec.cells.dendrites_enabled and spec.cells.dendrite_count > 0
    assert assert_same_footprints(spec) > 10


@pytest.mark.parametrize("spec", [small_v4(), Spec().with_updates({"sensor.height_px": 64, "sensor.width_px": 64})],
                         ids=["v4", "default"])
def test_cropped_planted_patches_keep_the_dense_footprints_and_the_vessel_overlap(spec):
    # the planted patches are cropped to what each cell's drawing reaches; placed in their
    # square patches (the frames) they are the uncropped patches, and the vessel overlap sums
    # the frames' masked pixels as np.sum did over the uncropped patches (same rounding)
    world = render.build_world(spec)
    sc = world.scene
    pp = sc.planted_patches()
    m, H, W = sc.margin_px, spec.sensor.height_px, spec.sensor.width_px
    mask = sc.vessel_chord_um > 0
    assert 0 < mask.mean() < 1
    squares, expected = [], np.zeros(len(sc.cells), np.float32)
    for u, (i0, j0, patch) in enumerate(sc.planted):
        y0, y1, x0, x1 = (int(v) for v in pp.frame[u])
        assert y0 <= i0 and i0 + patch.shape[0] <= y1 and x0 <= j0 and j0 + patch.shape[1] <= x1
        square = np.zeros((y1 - y0, x1 - x0), np.float32)
        square[i0 - y0 : i0 - y0 + patch.shape[0], j0 - x0 : j0 - x0 + patch.shape[1]] = patch
        squares.append((y0, x0, square))
        where = optics.patch_overlap(y0, x0, square.shape, (-m, H + m, -m, W + m))
        if where is not None:
            expected[u] = square[where[0]][mask[where[1]]].sum()
    assert sum(p.size for _, _, p in sc.planted) < sum(p.size for _, _, p in squares)
    got = truth.vessel_overlap(world)
    assert got.tobytes() == expected.tobytes()
    assert (got > 0).any()
    # the dense planted footprints: the squares', and the sums over squares given as squares
    n = len(sc.cells)
    dense = sc.planted_dense(slice(0, n))
    for u, (y0, x0, square) in enumerate(squares):
        ref = np.zeros((H, W), np.float32)
        where = optics.patch_overlap(y0, x0, square.shape, (0, H, 0, W))
        if where is not None:
            ref[where[1]] = square[where[0]]
        np.testing.assert_array_equal(dense[u], ref)
    whole = PlantedPatches.of(squares)
    assert np.array_equal(whole.box, whole.frame)
    assert masked_patch_sums(whole.values, whole.start, whole.box, whole.frame, mask, m).tobytes() == expected.tobytes()


@pytest.mark.parametrize("scope", ["generic", "v4_focus_drift"])
def test_the_footprint_kernel_on_threads_gives_the_arrays_of_one_call(monkeypatch, scope):
    """The cells split into ranges run on threads at once (``_in_parts``), joined in cell order,
    give every array of the kernel run over all cells in one call, bit for bit: whatever the
    ranges, an empty or a one-cell range included."""
    import minisim.scene as scene_mod

    base = Spec() if scope == "generic" else presets.scope("miniscope_v4_ca1").with_updates(
        {"motion.enabled": True, "motion.axial_sd_um": 2.0})
    spec = base.with_updates({"sensor.height_px": 64, "sensor.width_px": 72, "recording.duration_s": 1.0,
                              "recording.fps": 10.0, "recording.seed": 4})
    b = build_scene(spec)._build
    n = len(b.cells)
    assert n > 60 and len(b.sigma_axial) == (0 if scope == "generic" else 2)

    def arrays(parts):
        monkeypatch.setattr(scene_mod, "_cell_parts", lambda side: parts)
        planted, sharp, halo = scene_mod._footprint_parts(b)
        return [planted.values, planted.start, planted.box, planted.frame, *sharp, *halo]

    whole = arrays([(0, n)])
    assert whole[4][-1] > 0  # sharp entries to compare
    for parts in ([(0, n // 2), (n // 2, n)], [(0, 0), (0, 1), (1, n - 7), (n - 7, n)]):
        for a, e in zip(arrays(parts), whole):
            assert a.dtype == e.dtype and np.array_equal(a, e)
    # the automatic split: contiguous ranges covering every cell in order
    auto = scene_mod._cell_parts(np.full(n, 30))
    assert auto[0][0] == 0 and auto[-1][1] == n and all(a[1] == b_[0] for a, b_ in itertools.pairwise(auto))
