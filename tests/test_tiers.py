"""Difficulty tiers: each validates on every scope preset and raises the confounds it says it does.

The confounds are measured on what a tier produces (motion paths, the vessel network over the
full field, placed cells, drawn footprints, a small recording), not read back from the Spec.
"""

from __future__ import annotations

import numpy as np
import pytest

import minisim
from minisim import Spec, presets
from minisim.motion import simulate_motion
from minisim.scene import optics, vessels
from minisim.scene.cells import place_cells
from minisim.scene.optics import pixel_center_um

TIERS = presets.tier_names()


def measure(spec: Spec) -> dict[str, float]:
    """The confounds of a Spec, averaged over three seeds."""
    out: dict[str, list[float]] = {}
    for seed in range(3):
        s = spec.with_updates({"recording.seed": seed, "recording.duration_s": 300.0})
        m = simulate_motion(s)
        H, W, d = s.sensor.height_px, s.sensor.width_px, s.pixel_size_um
        ys, xs = pixel_center_um(np.arange(0, H, 2), H, d), pixel_center_um(np.arange(0, W, 2), W, d)
        cells = place_cells(s, (-100.0, 100.0), (-100.0, 100.0))
        # light of a drawn soma beyond 1.3 radii: its dendrites (mean over ten cells)
        tails = []
        for u in range(min(10, len(cells))):
            r, n = cells.radius_um[u], 48
            img = optics.planted_footprint(s, int(cells.unit_id[u]), r, 0.0, 0.0,
                                           -n // 2 + (H - 1) // 2, -n // 2 + (W - 1) // 2, n, n, 1)
            yy = pixel_center_um(np.arange(n) - n // 2 + (H - 1) // 2, H, d)
            xx = pixel_center_um(np.arange(n) - n // 2 + (W - 1) // 2, W, d)
            far = np.hypot(*np.meshgrid(yy, xx, indexing="ij")) > 1.3 * r
            tails.append(img[far].sum())
        for key, value in (
            ("rigid_sd_um", (m.rigid_um - m.rigid_um.mean(0)).std()),
            ("largest_step_um", np.abs(np.diff(m.rigid_um, axis=0)).max()),
            ("nonrigid_sd_um", m.mode_amp_um.std()),
            ("vessel_coverage", (vessels.chord_length_um(vessels.vessel_network(s), ys, xs) > 0).mean()),
            ("vessel_darkening", 1 - vessels.transmission(s, np.array([2 * s.vasculature.trunk_radius_um]))[0]),
            ("cells", len(cells)),
            ("brightness_sd_ln", np.log(cells.gain).std()),
            ("dendrite_light", np.mean(tails)),
        ):
            out.setdefault(key, []).append(float(value))
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def measured():
    return {(name, t): measure(presets.get(name, "moderate", tier=t)) for name in presets.names() for t in TIERS}


@pytest.mark.parametrize("name", presets.names())
@pytest.mark.parametrize("t", TIERS)
def test_every_tier_validates_on_every_scope_and_sets_what_it_lists(name, t):
    base = presets.get(name, "moderate")
    spec = presets.get(name, "moderate", tier=t)
    assert Spec.model_validate_json(spec.model_dump_json()) == spec
    updates = presets.tier(t, base)
    assert set(updates) == set(presets.TIERS[t]["updates"])
    for path, value in updates.items():
        node = spec
        for part in path.split("."):
            node = getattr(node, part)
        assert node == pytest.approx(value), path
    assert presets.TIERS[t]["raises"]
    # the scope itself (optics, sensor, depth of the band) is untouched
    assert spec.optics == base.optics and spec.sensor == base.sensor
    assert spec.cells.depth_um == base.cells.depth_um


@pytest.mark.parametrize("name", presets.names())
def test_each_harder_tier_raises_every_confound_it_names(measured, name):
    for lower, higher in (("easy", "typical"), ("typical", "hard")):
        a, b = measured[(name, lower)], measured[(name, higher)]
        for key in ("rigid_sd_um", "largest_step_um", "vessel_coverage", "vessel_darkening", "cells",
                    "brightness_sd_ln", "dendrite_light"):
            assert b[key] > a[key], (name, lower, higher, key, a[key], b[key])
        assert b["nonrigid_sd_um"] > a["nonrigid_sd_um"] or lower == "easy" and b["nonrigid_sd_um"] > 0
    assert measured[(name, "easy")]["nonrigid_sd_um"] == 0.0  # easy: rigid motion only


@pytest.mark.parametrize("name", ["miniscope_v4_ca1", "miniscope_v4_cortex_l23"])
def test_typical_is_calibrated_to_published_miniscope_recordings(measured, name):
    """docs/anatomy.md, "Presets and tiers": rigid motion of a few um with occasional jumps,
    little non-rigid motion, vessels over ~10-20 % of the full V4 field."""
    m = measured[(name, "typical")]
    assert 0.5 <= m["rigid_sd_um"] <= 3.0
    assert 2.0 <= m["largest_step_um"] <= 8.0  # an occasional jump
    assert m["nonrigid_sd_um"] <= 0.5
    assert 0.10 <= m["vessel_coverage"] <= 0.20


def test_a_small_hard_recording_moves_more_than_a_typical_one():
    """On rendered recordings (64 px of V4 CA1, 20 s): the true motion the Recording reports is
    larger on hard than on typical, and larger on typical than on easy."""
    sd = {}
    for t in TIERS:
        spec = presets.get("miniscope_v4_ca1", "quiet", tier=t).with_updates(
            {"sensor.width_px": 64, "sensor.height_px": 64, "recording.duration_s": 20.0})
        motion = minisim.simulate(spec).dataset["motion"].values  # px
        sd[t] = float(motion.std(axis=0).mean())
    assert sd["easy"] < sd["typical"] < sd["hard"], sd


def test_an_unknown_tier_names_the_known_ones():
    with pytest.raises(ValueError, match="easy.*typical.*hard"):
        presets.get("generic_1p", "moderate", tier="extreme")


@pytest.mark.parametrize("name", ["miniscope_v4_ca1", "miniscope_v4_cortex_l23"])
def test_v4_presets_are_the_typical_tier(name):
    spec = presets.scope(name)
    assert presets.apply_tier(spec, "typical") == spec
    assert presets.apply_tier(spec, "hard") != spec


def _in_field_detectable(tier: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(active, detectable, has spikes) of the cells in the field of a small V4 CA1 recording
    (128 px, 30 s, moderate activity)."""
    spec = presets.get("miniscope_v4_ca1", "moderate", tier=tier).with_updates(
        {"sensor.width_px": 128, "sensor.height_px": 128, "recording.duration_s": 30.0,
         "recording.seed": 0})   # (easy's fraction is ~0.78-0.82 over seeds; 0.71 at the worst seen)
    ds = minisim.simulate(spec).dataset
    pos, half = ds["position"].values, np.asarray(spec.fov_um) / 2
    inside = (np.abs(pos[:, 1]) < half[0]) & (np.abs(pos[:, 2]) < half[1])
    spikes = ds["S"].values.sum(axis=1)
    return (ds["active"].values[inside].astype(bool), ds["detectable"].values[inside].astype(bool),
            spikes[inside] > 0)


def test_easy_makes_every_cell_active_and_most_cells_in_the_field_detectable():
    """docs/anatomy.md, "Presets and tiers": easy lowers the activity confounds too (every cell
    active, a higher and narrower rate), so most cells in view are detectable even in a short
    recording, where on `typical` silent, near-silent and faint cells leave about a third."""
    active, det, fired = _in_field_detectable("easy")
    _, det_typical, _ = _in_field_detectable("typical")
    assert len(det) >= 15 and active.all() and fired.mean() >= 0.9
    assert det.mean() >= 0.75, det.mean()
    assert det.mean() >= det_typical.mean() + 0.3, (det.mean(), det_typical.mean())
