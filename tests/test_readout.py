"""The studio's numbers: readout, side view and the preview-window rule."""

from __future__ import annotations

import numpy as np
import pytest

from minisim import Spec, presets
from minisim.readout import depth_of_field_um, detectable_count, preview_window, readout, side_view
from minisim.render import build_world
from minisim.scene.cells import expected_count


def test_readout_geometry_of_the_v4():
    r = readout(presets.scope("miniscope_v4_ca1"))
    assert r["pixel_size_um"] == pytest.approx(4.8 / 2.9)
    assert r["fov_um"][0] == pytest.approx(1006.3, abs=0.1)
    assert r["expected_cells_fov"] == pytest.approx(911.5, abs=0.5)  # docs/physics.md §3: 912
    # the preset focuses 20 um below the CA1 band centre on axis (docs/physics.md §2.4): 150 + 20
    assert r["focal_depth_um"] == 170.0
    lo, hi = r["focal_depth_range_um"]
    assert hi == 170.0 and 170.0 - lo == pytest.approx(100.0, abs=4)  # corner sag ~100 um


def test_flat_field_has_one_focus_depth():
    lo, hi = readout(Spec())["focal_depth_range_um"]
    assert lo == hi == Spec().optics.focal_depth_um


def test_depth_of_field_shrinks_with_na():
    s = Spec()
    assert depth_of_field_um(s.with_updates({"optics.na": 0.6})) < depth_of_field_um(s)
    assert depth_of_field_um(s) == pytest.approx(0.525 * 1.36 / 0.45**2 + 1.36 * 0.375 / 0.45)


def test_readout_counts_detectable_cells_in_a_window():
    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.width_px": 96, "sensor.height_px": 96, "recording.duration_s": 1.0})
    window = preview_window(spec, cell_budget=20)
    r = readout(spec, window, build_world(spec, window))
    assert 0 < r["cells_window"] and 0 <= r["detectable_window"] <= r["cells_window"]
    assert r["expected_cells_window"] == pytest.approx(
        expected_count(spec) * (window[1] - window[0]) * (window[3] - window[2]) / 96**2)


def test_denser_tissue_gives_a_smaller_window_with_as_many_cells():
    spec = presets.scope("miniscope_v4_ca1")
    sides, counts = [], []
    for rho in (20000.0, 45000.0, 90000.0):
        s = spec.with_updates({"cells.density_per_mm3": rho})
        y0, y1, x0, x1 = preview_window(s)
        assert (y1 - y0) % 8 == 0 and (y1 - y0) >= 32 and (y1 - y0, x1 - x0) == (x1 - x0, y1 - y0)
        assert y0 + y1 == s.sensor.height_px  # centred
        sides.append(y1 - y0)
        counts.append(readout(s, (y0, y1, x0, x1))["expected_cells_window"])
    assert sides[0] > sides[1] > sides[2]
    assert np.allclose(counts, 350, rtol=0.1)


def test_preview_window_clips_to_a_small_sensor():
    assert preview_window(Spec()) == (0, 256, 0, 256)
    s = Spec(sensor={"width_px": 20, "height_px": 12})
    assert preview_window(s) == (0, 12, 0, 20)
    with pytest.raises(ValueError, match="cell_budget"):
        preview_window(s, 0)


def test_side_view_focal_surface_bows_up_at_the_edges():
    sv = side_view(presets.scope("miniscope_v4_ca1"))
    z = sv["focal_z_um"]
    assert z[len(z) // 2] == pytest.approx(170.0, abs=0.1)
    assert z[0] < z[len(z) // 2] - 40  # ~51 um sag at the FOV edge (docs/physics.md §2.4)
    flat = side_view(Spec())["focal_z_um"]
    assert np.all(flat == flat[0])


def test_side_view_cells_lie_in_their_band_and_slab():
    spec = presets.scope("miniscope_v4_cortex_l23")
    sv = side_view(spec, n_max=100)
    assert 0 < len(sv["cell_z_um"]) <= 100
    assert np.all(sv["cell_z_um"] >= sv["band_top_um"][0])
    assert np.all(sv["cell_z_um"] <= sv["band_bottom_um"][0])
    assert np.all(np.abs(sv["cell_x_um"]) <= spec.fov_um[1] / 2)
    top, bottom = sv["vessel_depth_extent_um"]
    assert top < spec.vasculature.depth_um < bottom
    # cortex: the thick pial/penetrating vessels sit on top of the L2/3 band and shade it
    assert spec.vasculature.depth_um < sv["band_top_um"][0] < bottom
    assert sv["front_face_um"] == -spec.optics.tissue_gap_um


def test_a_count_stopped_at_a_checkpoint_leaves_the_world_as_it_was():
    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.width_px": 96, "sensor.height_px": 96, "recording.duration_s": 1.0})
    window = preview_window(spec, cell_budget=20)
    world = build_world(spec, window)
    polls = []

    def checkpoint():  # the studio's: a newer redraw was asked for after the third step
        polls.append(1)
        if len(polls) == 3:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        detectable_count(world, window, checkpoint)
    everywhere = []
    got = detectable_count(world, window, lambda: everywhere.append(1))
    assert len(everywhere) > 10  # the count can be stopped all along, not only at its start
    assert got == detectable_count(build_world(spec, window), window)
    assert got == tuple(readout(spec, window, world)[k] for k in ("cells_window", "detectable_window"))
