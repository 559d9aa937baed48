"""The studio's panels driven as plain Python: widgets in, Spec, readout and preview out."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import small_spec

from minisim import Spec, presets
from minisim.recording import Recording, simulate
from minisim.studio import (
    ActivityPanel,
    AnatomyPanel,
    Debouncer,
    GeneratePanel,
    SpecModel,
    Studio,
    size_estimate,
)
from minisim.studio._fields import get_value

# a scaled-down V4 over CA1: dense enough that a small cell budget gives a real window
V4_SMALL = presets.scope("miniscope_v4_ca1").with_updates({
    "sensor.width_px": 96, "sensor.height_px": 96, "sensor.noise_tile_px": 32,
    "recording.duration_s": 1.0, "recording.fps": 10.0, "motion.max_displacement_um": 5.0,
})


def test_widget_change_reaches_spec_readout_and_preview():
    model = SpecModel(V4_SMALL)
    panel = AnatomyPanel(model, debounce_s=0, preview_frames=3)
    before_px, before_img = panel.readout["pixel_size_um"], panel.preview_frames_data.copy()
    panel.widgets["optics.magnification"].value = 5.8
    assert model.spec.optics.magnification == 5.8
    assert panel.readout["pixel_size_um"] == pytest.approx(before_px / 2)
    assert "0.828 µm" in panel.readout_html.value
    assert not np.array_equal(panel.preview_frames_data, before_img)
    bright = panel.preview_frames_data.astype(float).mean()
    panel.widgets["tissue.neuropil.photons_per_um2_s"].value = 3 * 14600.0
    assert panel.preview_frames_data.astype(float).mean() > bright
    panel.close()


def test_a_refused_value_names_the_field_and_changes_nothing():
    model = SpecModel(small_spec())
    panel = AnatomyPanel(model, debounce_s=1000)
    panel.widgets["optics.na"].value = 5.0
    assert model.spec.optics.na == 0.45 and panel.widgets["optics.na"].value == 0.45
    assert "optics.na" in panel.status.value and "refused" in panel.status.value
    panel.close()


@pytest.mark.parametrize("name", presets.names())
def test_scope_preset_button_sets_every_anatomy_widget(name):
    model = SpecModel(small_spec(**{"activity.rate_median_hz": 2.0}))
    panel = AnatomyPanel(model, debounce_s=1000)  # no preview render: only the widgets matter
    panel.preset_buttons[name].click()
    want = presets.scope(name)
    for path, w in panel.widgets.items():
        assert w.value == get_value(want, path), path
    assert model.spec.activity.rate_median_hz == 2.0  # activity is not the anatomy panel's
    assert panel.preset_buttons[name].description == presets.SCOPE_LABELS[name]
    panel.close()


def test_denser_tissue_shrinks_the_preview_window():
    model = SpecModel(V4_SMALL)
    panel = AnatomyPanel(model, debounce_s=0, cell_budget=20, preview_frames=2)
    sides = []
    for rho in (45000.0, 90000.0):
        panel.widgets["cells.density_per_mm3"].value = rho
        y0, y1, x0, x1 = panel.preview_window
        sides.append(y1 - y0)
        assert panel.preview_frames_data.shape == (2, y1 - y0, x1 - x0)
        assert panel.readout["expected_cells_window"] == pytest.approx(20, rel=0.35)
    assert sides[1] < sides[0] < 96
    panel.close()


def test_generated_file_is_what_was_previewed(tmp_path):
    studio = Studio(V4_SMALL, debounce_s=0, path=str(tmp_path / "rec.zarr"))
    studio.anatomy.cell_budget = 20
    studio.anatomy.redraw_now()
    y0, y1, x0, x1 = studio.anatomy.preview_window
    assert (y1 - y0, x1 - x0) != (96, 96)
    preview = studio.anatomy.preview_frames_data
    full = simulate(studio.spec).movie.values
    np.testing.assert_array_equal(preview, full[: len(preview), y0:y1, x0:x1])
    path = studio.generate.generate(wait=True)
    assert studio.generate.progress.value == studio.generate.progress.max
    rec = Recording.load(path)
    assert rec.spec == studio.spec
    np.testing.assert_array_equal(rec.movie.values, full)
    with pytest.raises(FileExistsError, match="overwrite"):
        studio.generate.generate(wait=True)
    studio.close()


def test_generate_runs_in_the_background(tmp_path):
    model = SpecModel(small_spec())
    panel = GeneratePanel(model, debounce_s=0, path=str(tmp_path / "bg.zarr"))
    panel.button.click()
    assert panel.button.disabled or not panel.running
    panel._thread.join(60)
    assert panel.last_error is None and (tmp_path / "bg.zarr").exists()
    assert "wrote" in panel.status.value


def test_generate_writes_avi_when_video_exists(tmp_path):
    pytest.importorskip("minisim.video")
    model = SpecModel(small_spec())
    panel = GeneratePanel(model, debounce_s=0, path=str(tmp_path / "rec.avi"))
    panel.format.value = "avi"
    assert panel.generate(wait=True).exists()


def test_size_estimate_follows_duration_and_format():
    model = SpecModel(small_spec())
    panel = GeneratePanel(model, debounce_s=0)
    panel.widgets["recording.duration_s"].value = 2.0
    assert model.spec.recording.n_frames == 20
    assert "20 frames of 40 × 48 px" in panel.estimate_html.value
    z = size_estimate(model.spec, "zarr")
    assert z["bytes"] == pytest.approx(20 * 40 * 48 * 2 / 2.5)
    assert size_estimate(model.spec, "avi")["bytes"] == 20 * 40 * 48
    assert size_estimate(model.spec, "zarr", px_per_s=38400)["seconds"] == pytest.approx(1.0)


def test_activity_panel_presets_indicator_and_traces():
    model = SpecModel(small_spec(**{"recording.duration_s": 5.0}))
    panel = ActivityPanel(model, debounce_s=0)
    assert panel.traces.C.shape == (10, 50)
    panel.widgets["activity.indicator"].value = "GCaMP6s"
    assert model.spec.activity.tau_decay_ms == 1500.0
    assert panel.widgets["activity.tau_decay_ms"].value == 1500.0
    panel.preset_buttons["active"].click()
    want = presets.activity("active")
    for k in want.model_fields_set:
        assert panel.widgets[f"activity.{k}"].value == getattr(want, k)
    assert model.spec.activity.indicator == "GCaMP6s"
    quiet_spikes = None
    for name in ("quiet", "active"):
        panel.preset_buttons[name].click()
        n = int(panel.traces.spikes.sum())
        quiet_spikes = n if name == "quiet" else quiet_spikes
    assert n > quiet_spikes
    assert panel.preset_buttons["quiet"].description == "Quiet"


def test_spec_json_round_trip_and_panels_follow(tmp_path):
    studio = Studio(small_spec(), debounce_s=1000)
    studio.activity.widgets["activity.rate_median_hz"].value = 0.7
    studio.anatomy.widgets["vasculature.trunk_count"].value = 5
    path = studio.save_spec(tmp_path / "spec.json")
    saved = studio.spec
    studio.model.set(Spec())
    assert studio.anatomy.widgets["vasculature.trunk_count"].value == 3
    studio.spec_path.value = str(path)
    studio.load_button.click()
    assert studio.spec == saved == Spec.from_json(path)
    assert studio.anatomy.widgets["vasculature.trunk_count"].value == 5
    assert studio.activity.widgets["activity.rate_median_hz"].value == 0.7
    studio.close()


def test_debouncer_runs_a_burst_once_and_never_twice_at_once():
    calls, active, overlap = [], [0], []
    lock = threading.Lock()

    def work():
        with lock:
            active[0] += 1
            overlap.append(active[0])
        time.sleep(0.1)
        calls.append(1)
        with lock:
            active[0] -= 1

    d = Debouncer(work, delay_s=0.05)
    for _ in range(10):
        d.schedule()
    time.sleep(0.5)
    assert len(calls) == 1
    d.schedule()
    time.sleep(0.08)  # now in flight
    d.schedule()
    time.sleep(0.6)
    assert len(calls) == 3 and max(overlap) == 1


def test_preview_of_a_long_recording_is_the_crop_of_its_full_render():
    """The preview builds traces and motion for the first 30 s only; a 40 s recording's
    preview is still bit-identical to the first frames of the full render."""
    spec = V4_SMALL.with_updates({"recording.duration_s": 40.0})
    panel = AnatomyPanel(SpecModel(spec), debounce_s=0)
    panel.cell_budget = 20
    panel.redraw_now()
    y0, y1, x0, x1 = panel.preview_window
    preview = panel.preview_frames_data
    full = simulate(spec).movie[: len(preview), y0:y1, x0:x1].values
    np.testing.assert_array_equal(preview, full)
    panel.close()
