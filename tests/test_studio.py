"""The studio's panels driven as plain Python: widgets in, Spec, readout and preview out."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import small_spec

from minisim import Spec, presets
from minisim.recording import Recording, simulate
from minisim.spec import field_info
from minisim.studio import (
    ActivityPanel,
    AnatomyPanel,
    Debouncer,
    GeneratePanel,
    SpecModel,
    Studio,
)
from minisim.studio._fields import (
    get_value,
    limits,
    make_widget,
    slider_range,
    spec_paths,
)
from minisim.studio.panels import side_view_figure, written_bytes

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
    panel.widgets["optics.na"].value = 5.0  # a slider stops at the field's own bound
    assert model.spec.optics.na == 1.0 == panel.widgets["optics.na"].value
    panel.widgets["sensor.offset_adu"].value = 5000.0  # in range, but over 12 bits' 4095
    assert model.spec.sensor.offset_adu == 100.0 and panel.widgets["sensor.offset_adu"].value == 100.0
    assert "sensor.offset_adu" in panel.status.value and "refused" in panel.status.value
    assert "4095" in panel.status.value
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


@pytest.mark.slow
def test_generate_writes_an_avi_of_every_frame(tmp_path):
    import imageio.v3 as iio

    model = SpecModel(small_spec())
    panel = GeneratePanel(model, debounce_s=0, path=str(tmp_path / "rec.avi"))
    panel.format.value = "avi"
    path = panel.generate(wait=True)
    frames = iio.imread(path, plugin="pyav")
    assert frames.shape[:3] == (10, 40, 48)
    assert Spec.from_json(tmp_path / "rec.spec.json") == model.spec
    assert panel.last_size_bytes == written_bytes(path) > path.stat().st_size


@pytest.mark.parametrize("fmt", ["zarr", "avi"])
def test_estimate_is_within_30_percent_of_the_written_size(tmp_path, fmt):
    """The estimate (a 40-frame probe save scaled) against a 300-frame Generate."""
    spec = V4_SMALL.with_updates({"recording.duration_s": 30.0})
    model = SpecModel(spec)
    panel = GeneratePanel(model, debounce_s=0, path=str(tmp_path / f"rec.{fmt}"))
    panel.format.value = fmt
    est = panel.measured
    assert est is not None and est["probe_frames"] == 40 and spec.recording.n_frames == 300
    assert "on disk (movie and ground truth)" in panel.estimate_html.value
    panel.generate(wait=True)
    assert est["bytes"] == pytest.approx(panel.last_size_bytes, rel=0.30)
    assert est["fixed_bytes"] > 0 and est["rss_bytes"] > 0


def test_estimate_follows_the_duration_without_a_new_probe():
    model = SpecModel(small_spec())
    panel = GeneratePanel(model, debounce_s=0)
    first = panel.measured
    panel.widgets["recording.duration_s"].value = 2.0
    assert model.spec.recording.n_frames == 20
    assert "20 frames of 40 × 48 px" in panel.estimate_html.value
    assert panel.measured["bytes"] == pytest.approx(
        first["fixed_bytes"] + 20 * first["bytes_per_frame"])
    assert panel.measured["probe_seconds"] == first["probe_seconds"]  # the cached probe


def test_activity_panel_presets_indicator_and_traces():
    model = SpecModel(small_spec(**{"recording.duration_s": 5.0}))
    panel = ActivityPanel(model, debounce_s=0)
    assert panel.traces.C.shape == (10, 600)  # 60 s at 10 fps, whatever the duration
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


def test_every_numeric_knob_is_a_slider_over_its_field_range():
    import ipywidgets as W

    spec = Spec()
    sliders = (W.IntSlider, W.FloatSlider, W.FloatLogSlider)
    for section in ("optics", "sensor", "tissue", "cells", "vasculature", "illumination", "motion",
                    "activity", "recording"):
        for path in spec_paths(section):
            w = make_widget(path, get_value(spec, path))
            if isinstance(w, (W.Checkbox, W.Dropdown)) or path == "recording.seed":
                continue
            if None in limits(path):
                assert isinstance(w, (W.IntText, W.FloatText)), path
                continue
            assert isinstance(w, sliders), path
            assert w.continuous_update is False and w.readout, path
            lo, hi, log = slider_range(path)
            assert isinstance(w, W.FloatLogSlider) == log, path
            if log:
                assert (10 ** w.min, 10 ** w.max) == pytest.approx((lo, hi)), path
            else:
                assert (w.min, w.max) == pytest.approx((lo, hi)), path
    for path in ("cells.density_per_mm3", "activity.rate_median_hz", "optics.magnification"):
        assert slider_range(path)[2], path  # spans decades: log scale
    assert not slider_range("optics.na")[2]


def test_a_burst_of_five_slider_changes_renders_at_most_twice_and_the_last_wins():
    model = SpecModel(V4_SMALL)
    panel = AnatomyPanel(model, debounce_s=0, cell_budget=20, preview_frames=2)
    panel._debouncer.delay_s = 0.15  # from now on, redraws run in the background
    starts = panel.redraw_starts
    slider = panel.widgets["cells.density_per_mm3"]
    values = [50000.0, 55000.0, 60000.0, 65000.0, 70000.0]
    slider.value = values[0]
    time.sleep(0.3)  # the first redraw is (likely) under way when the rest arrive
    for v in values[1:]:
        slider.value = v
        time.sleep(0.02)
    t_end = time.monotonic() + 120
    while panel._debouncer.busy and time.monotonic() < t_end:
        time.sleep(0.05)
    assert not panel._debouncer.busy
    assert 1 <= panel.redraw_starts - starts <= 2
    assert panel.preview_spec.cells.density_per_mm3 == values[-1] == model.spec.cells.density_per_mm3
    assert panel.spinner.value == ""
    panel.close()


@pytest.mark.slow
def test_generate_holds_previews_and_its_knobs_never_rebuild_panel_1(tmp_path):
    studio = Studio(small_spec(), debounce_s=0, path=str(tmp_path / "rec.zarr"))
    anatomy, gen = studio.anatomy, studio.generate
    starts = anatomy.redraw_starts
    gen.widgets["recording.duration_s"].value = 2.0
    gen.widgets["recording.seed"].value = 5
    gen.widgets["recording.fps"].value = 12.0
    assert anatomy.redraw_starts == starts and anatomy.out_of_date
    assert gen.measured is None  # the estimate's probe save waits for its tab
    studio.tabs.selected_index = 2
    assert gen.measured is not None and gen.measured["probe_frames"] == 24  # 2 s at 12 fps
    studio.tabs.selected_index = 0  # back on Panel 1: now it redraws, once
    assert anatomy.redraw_starts == starts + 1 and anatomy.preview_spec == studio.spec
    studio.model.begin_generate()  # what Generate does first
    anatomy.widgets["cells.density_per_mm3"].value = 60000.0
    studio.activity.widgets["activity.rate_median_hz"].value = 1.0
    assert anatomy.redraw_starts == starts + 1 and studio.activity.traces.C.shape[1] == 720
    studio.model.end_generate()
    assert anatomy.redraw_starts == starts + 2
    assert anatomy.preview_spec.cells.density_per_mm3 == 60000.0
    studio.close()


def test_activity_preview_spans_60_s_and_quiet_moderate_active_differ():
    model = SpecModel(small_spec())  # a 1 s recording
    panel = ActivityPanel(model, debounce_s=0)
    ticks = {}
    for name in ("quiet", "moderate", "active"):
        panel.preset_buttons[name].click()
        assert panel.traces.C.shape == (10, 600)
        ticks[name] = panel.spike_ticks
        assert f"{ticks[name]} spike ticks in 60 s" in panel.spike_html.value
    assert 0 < ticks["quiet"] < ticks["moderate"] < ticks["active"]
    import io

    from PIL import Image
    w, h = Image.open(io.BytesIO(panel.traces_image.value)).size
    assert (panel.traces_image.layout.width, panel.traces_image.layout.height) == (f"{w}px", f"{h}px")
    panel.close()


@pytest.mark.parametrize("name", presets.names())
def test_side_view_axis_fits_the_cells_with_the_legend_outside(name):
    from minisim import readout

    spec = presets.scope(name)
    sv = readout.side_view(spec)
    fig = side_view_figure(spec, sv)
    ax = fig.axes[0]
    deep, shallow = ax.get_ylim()
    cz = sv["cell_z_um"]
    assert shallow < min(cz.min(), np.min(sv["vessel_z_um"], initial=np.inf)) and deep > cz.max()
    band = float(np.max(sv["band_bottom_um"]) - np.min(sv["band_top_um"]))
    assert band / (deep - shallow) > 0.2  # the cells are not squeezed into a corner
    fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    r = fig.canvas.get_renderer()
    leg, box = ax.get_legend().get_window_extent(r), ax.get_window_extent(r)
    assert leg.x0 >= box.x1  # right of the data, never over it


def test_file_actions_fail_with_clear_errors(tmp_path):
    studio = Studio(small_spec(), debounce_s=1000, path=str(tmp_path / "nope" / "rec.zarr"))
    studio.spec_path.value = str(tmp_path / "missing.json")
    studio.load_button.click()
    assert "FileNotFoundError" in studio.io_status.value and "missing.json" in studio.io_status.value
    studio.spec_path.value = str(tmp_path / "no-folder" / "spec.json")
    studio.save_button.click()
    assert "no-folder" in studio.io_status.value and "does not exist" in studio.io_status.value
    (tmp_path / "bad.json").write_text('{"optics": {"na": 7}}')
    studio.spec_path.value = str(tmp_path / "bad.json")
    studio.load_button.click()
    assert "not a valid Spec" in studio.io_status.value and "na" in studio.io_status.value
    with pytest.raises(FileNotFoundError, match="nope"):
        studio.generate.generate(wait=True)
    studio.generate.path.value = str(tmp_path / "rec.avi")
    with pytest.raises(ValueError, match="must end in .zarr"):
        studio.generate.generate(wait=True)
    assert "must end in .zarr" in studio.generate.status.value
    studio.close()


def _another_value(spec: Spec, path: str):
    """A valid value for ``path`` other than the current one (the Spec's validation decides)."""
    import typing

    info = field_info(path)
    v = get_value(spec, path)
    if info.annotation is bool:
        candidates = [not v]
    elif typing.get_origin(info.annotation) is typing.Literal:
        candidates = [o for o in typing.get_args(info.annotation) if o != v]
    else:
        lo, hi = limits(path)
        step = 1 if info.annotation is int else max(abs(v) * 0.4, 0.01)
        candidates = [v + step, v - step, (lo + v) / 2 if lo is not None else v / 2]
        candidates = [info.annotation(c) for c in candidates
                      if (lo is None or c >= lo) and (hi is None or c <= hi) and c != v]
    for c in candidates:
        try:
            return spec.with_updates({path: c})
        except ValueError:
            continue
    raise AssertionError(f"no other valid value for {path} = {v!r}")


def _leaf_paths(prefix: str) -> list[str]:
    section = prefix.split(".")[0]
    return [p for p in spec_paths(section) if p == prefix or p.startswith(prefix + ".")]


def test_a_scene_free_knob_keeps_the_scene_and_the_preview_is_a_fresh_render():
    from minisim.render import build_world, render_block

    model = SpecModel(V4_SMALL)
    panel = AnatomyPanel(model, debounce_s=0, cell_budget=20, preview_frames=3)
    built = panel.cache.scenes_built
    for path, value in (("sensor.read_noise_e", 9.0), ("activity.rate_median_hz", 3.0)):
        model.update({path: value})  # a Panel 1 knob, then a Panel 2 one: Panel 1 redraws
        assert panel.cache.scenes_built == built, path  # the scene was kept
        window = panel.preview_window
        fresh = build_world(model.spec, window, n_frames=10)
        np.testing.assert_array_equal(panel.preview_frames_data,
                                      render_block(fresh, range(3), window))
    panel.widgets["cells.density_per_mm3"].value = 60000.0  # anatomy: a new scene
    assert panel.cache.scenes_built == built + 1
    panel.close()


@pytest.mark.slow
def test_scene_free_fields_keep_the_scene_and_the_preview_bytes():
    """Every field of SCENE_FREE, changed alone: the preview on the kept scene is byte for byte
    the render of a freshly built World (so keeping the scene never shows a wrong image)."""
    from minisim.render import build_world, render_block
    from minisim.studio.preview import SCENE_FREE, PreviewCache

    window = (8, 88, 8, 88)
    base = V4_SMALL.with_updates({"illumination.bleaching.enabled": True,
                                  "vasculature.vasomotion.enabled": True})
    cache = PreviewCache()
    cache.world(base, window, 10)
    paths = [p for prefix in SCENE_FREE for p in _leaf_paths(prefix)
             if p != "recording.duration_s"]
    assert len(paths) > 40
    for path in paths:
        spec = _another_value(base, path)
        kept = cache.world(spec, window, 10)
        assert cache.scenes_built == 1, path
        fresh = build_world(spec, window, n_frames=10)
        np.testing.assert_array_equal(render_block(kept, range(4), window),
                                      render_block(fresh, range(4), window), err_msg=path)
        assert cache.side_view(spec, side_view_figure) is cache.side_view(base, side_view_figure)


def test_a_warm_redraw_renders_again_without_a_new_scene_or_count():
    model = SpecModel(V4_SMALL)
    panel = AnatomyPanel(model, debounce_s=0, cell_budget=20, preview_frames=2)
    first, counts = dict(panel.readout), panel.cache.counts_made
    assert "detectable_window" in first and counts == 1
    panel.redraw_now()
    assert panel.readout == first and panel.cache.counts_made == counts
    assert panel.cache.scenes_built == 1
    panel.close()


def test_the_image_shows_before_the_count_and_a_newer_request_stops_the_count():
    """The preview and readout show first ("counting…"); a slider change while the detectable
    cells are counted stops that count, and the count shown is the newest Spec's."""
    from minisim.readout import detectable_count
    from minisim.render import build_world

    model = SpecModel(V4_SMALL)
    panel = AnatomyPanel(model, debounce_s=0, cell_budget=20, preview_frames=2)
    panel._debouncer.delay_s = 0.05  # from now on, redraws run in the background
    shown, changed = [], []

    def on_spinner(change):
        if "counting" in change["new"]:
            shown.append(panel.readout_html.value)
            if not changed:  # the first count has begun: a newer request arrives now
                changed.append(True)
                panel.widgets["sensor.read_noise_e"].value = 7.0

    panel.spinner.observe(on_spinner, names="value")
    starts, runs, made = panel._debouncer.starts, panel._debouncer.runs, panel.cache.counts_made
    panel.widgets["sensor.read_noise_e"].value = 5.0
    t_end = time.monotonic() + 120
    while (panel._debouncer.busy or panel._debouncer.runs == runs) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert changed and all("counting…" in html for html in shown)
    assert panel._debouncer.starts - starts == 2 and panel._debouncer.runs - runs == 1
    assert panel.cache.counts_made == made + 1  # the stopped count never finished
    spec = model.spec
    assert spec.sensor.read_noise_e == 7.0 == panel.preview_spec.sensor.read_noise_e
    window = panel.preview_window
    want = detectable_count(build_world(spec, window, n_frames=10), window)
    assert (panel.readout["cells_window"], panel.readout["detectable_window"]) == want
    assert f"{want[1]} of {want[0]} cells" in panel.readout_html.value
    assert panel.spinner.value == ""
    panel.close()


def test_panel_1_waits_while_another_tab_is_shown():
    """An activity change made on Panel 2 does not rebuild Panel 1 behind it (it would compete
    with Panel 2's own preview); Panel 1 redraws once when its tab is shown again."""
    studio = Studio(small_spec(), debounce_s=0)
    anatomy = studio.anatomy
    starts = anatomy.redraw_starts
    studio.tabs.selected_index = 1
    studio.activity.widgets["activity.rate_median_hz"].value = 2.0
    studio.activity.preset_buttons["active"].click()
    assert anatomy.redraw_starts == starts and anatomy.out_of_date
    assert "changed in another tab" in anatomy.status.value
    assert studio.activity.traces is not None and studio.activity.spike_ticks > 0
    studio.tabs.selected_index = 0
    assert anatomy.redraw_starts == starts + 1 and anatomy.preview_spec == studio.spec
    studio.close()
