"""Saving and loading: real zarr v3 stores on disk, never overwritten, never silently short."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import dataset_digests, small_spec

import minisim
from minisim import IncompleteRecordingError, Recording, Spec, simulate
from minisim.recording import FORMAT_VERSION, RecordingFormatError


def test_save_and_load_round_trip(tmp_path):
    spec = small_spec()
    rec = simulate(spec)
    saved = rec.save(tmp_path / "r.zarr")
    loaded = Recording.load(tmp_path / "r.zarr")
    assert loaded.spec == spec
    assert loaded.dataset.movie.chunks is not None  # lazy, dask-backed
    assert dataset_digests(loaded.dataset) == dataset_digests(rec.dataset)
    assert dataset_digests(saved.dataset) == dataset_digests(simulate(loaded.spec).dataset)
    assert list(loaded.dataset.axis.values) == ["z", "y", "x"]
    assert list(loaded.dataset.bg_component.values) == ["neuropil", "glow", "dark"]


@pytest.mark.slow
def test_footprints_are_stored_sparsely_and_a_loaded_recording_saves_the_same(tmp_path):
    # a field wider than one footprint tile: most (32 units x tile) chunks of A are all zero
    spec = small_spec(**{"sensor.width_px": 160, "sensor.height_px": 144, "sensor.noise_tile_px": 32,
                         "cells.density_per_mm3": 80000.0})
    rec = simulate(spec)
    rec.save(tmp_path / "r.zarr", chunks={"height": 64, "width": 64})
    for name in ("A", "A_planted"):
        arr = zarr.open_array(str(tmp_path / "r.zarr"), path=name, mode="r")
        assert arr.fill_value == 0
        files = [f for f in (tmp_path / "r.zarr" / name / "c").rglob("*") if f.is_file()]
        assert 0 < len(files) < arr.nchunks    # the all-zero chunks are not written
    loaded = Recording.load(tmp_path / "r.zarr")
    assert dataset_digests(loaded.dataset) == dataset_digests(rec.dataset)
    loaded.save(tmp_path / "again.zarr")
    assert dataset_digests(Recording.load(tmp_path / "again.zarr").dataset) == dataset_digests(rec.dataset)
    # the simulated save writes A from the units' boxes, the loaded one from A's blocks: the
    # same chunk files, byte for byte
    for name in ("A", "A_planted"):
        files = [{str(f.relative_to(root)): f.read_bytes() for f in (root / name / "c").rglob("*") if f.is_file()}
                 for root in (tmp_path / "r.zarr", tmp_path / "again.zarr")]
        assert files[0] == files[1], name


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_save_builds_each_footprint_box_once(tmp_path, monkeypatch, scheduler):
    """A and the footprint cores of the metrics share one box per unit; the saturation count is
    that of the written movie."""
    from minisim import scene

    spec = small_spec()
    boxes = []
    footprint_boxes = scene.Scene.footprint_boxes  # the box tasks' call (a block of units at a time)
    monkeypatch.setattr(scene.Scene, "footprint_boxes",
                        lambda self, units: (boxes.extend(units), footprint_boxes(self, units))[1])
    rec = simulate(spec)
    n = len(rec.dataset.unit_id)
    rec.save(tmp_path / "r.zarr", scheduler=scheduler)
    assert sorted(boxes) == list(range(n))
    saved = Recording.load(tmp_path / "r.zarr").dataset
    top = 2**spec.sensor.bit_depth - 1
    assert saved.attrs["saturated_pixels"] == int((saved.movie.values == top).sum())


def test_the_trace_variables_share_one_build_of_each_segment(monkeypatch):
    """C, dF/F, S, the neuropil course and the motion read one task per segment: computed
    together, each segment is built once, with a World cache too small to help."""
    import dask

    from minisim import render

    spec = small_spec(**{"recording.duration_s": 250.0})  # 2,500 frames: 3 segments
    built = []
    build_segment = render.World.build_segment
    monkeypatch.setattr(render.World, "build_segment",
                        lambda self, seg: (built.append(seg), build_segment(self, seg))[1])
    monkeypatch.setattr(render, "WORLD_SEGMENTS", 1)
    ds = simulate(spec).dataset
    dask.compute(ds.C, ds.dff, ds.S, ds.f, ds.motion, scheduler="threads")
    assert sorted(built) == [0, 1, 2]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_save_of_a_short_recording_builds_each_segment_once(tmp_path, monkeypatch, scheduler):
    """The render blocks and the ground truth's per-segment tasks share one build of each
    segment while the World's cache has room (here 2 segments, a cache of 3)."""
    from minisim import render

    spec = small_spec(**{"recording.duration_s": 150.0})  # 1,500 frames: 2 segments
    built = []
    build_segment = render.World.build_segment
    monkeypatch.setattr(render.World, "build_segment",
                        lambda self, seg: (built.append(seg), build_segment(self, seg))[1])
    rec = simulate(spec)
    rec.save(tmp_path / "r.zarr", scheduler=scheduler)
    assert sorted(built) == [0, 1]


def test_a_ground_truth_read_ahead_of_the_render_leaves_its_segment_for_the_render(monkeypatch):
    """A save's ground truth of a window may run before that window's render blocks: the
    segment it builds (``evict=False``) past every cached one is kept for the render, which
    then builds nothing; a read behind the cached segments still evicts none of them."""
    from minisim import render

    spec = small_spec(**{"recording.duration_s": 600.0})  # 6,000 frames: 6 segments
    world = render.build_world(spec)
    built = []
    build_segment = render.World.build_segment
    monkeypatch.setattr(render.World, "build_segment",
                        lambda self, seg: (built.append(seg), build_segment(self, seg))[1])
    L = render.SEGMENT_FRAMES
    for seg in range(render.WORLD_SEGMENTS):  # the render fills the cache: segments 0-2
        world.traces(range(seg * L, seg * L + 8))
    world.segment(3, evict=False)  # the next window's ground truth, before its render
    world.traces(range(3 * L, 3 * L + 8))  # that window's render
    assert built == [0, 1, 2, 3]
    cached = list(world._segments)
    world.segment(0, evict=False)  # a late reader behind the render: built, not kept
    assert list(world._segments) == cached and built == [0, 1, 2, 3, 0]


@pytest.mark.parametrize("truth", [True, False])
def test_a_world_makes_room_before_it_builds_a_segment(monkeypatch, truth):
    """A World whose cache is full drops its oldest segment before it builds the next one, not
    after: the segments cached while a build runs are one fewer than the cache holds, so a long
    save never holds a full cache and a segment in the making (one segment more than a short
    recording can hold; the hour's peak above the minute's, docs/performance.md). The segments
    kept afterwards are the newest, as before."""
    from minisim import render

    spec = small_spec(**{"recording.duration_s": 600.0})  # 6,000 frames: 6 segments
    world = render.build_world(spec, truth=truth)
    keep = render.WORLD_SEGMENTS if truth else render.RENDER_WORLD_SEGMENTS
    held_at_build = []
    build_segment = render.World.build_segment
    monkeypatch.setattr(render.World, "build_segment",
                        lambda self, seg: (held_at_build.append(len(self._segments)), build_segment(self, seg))[1])
    L = render.SEGMENT_FRAMES
    for seg in range(6):  # a render moving forward in time
        world.traces(range(seg * L, seg * L + 8))
    assert held_at_build == [min(seg, keep - 1) for seg in range(6)]
    assert list(world._segments) == list(range(6 - keep, 6))


def test_a_worlds_segment_keeps_c_without_the_bleaching_course_it_holds():
    """A ground-truth World's cached segment keeps its Activity's dF/F and S (read by the per-
    frame ground truth), not the bleaching course: that is in C, which is bleach x (1 + dF/F) of
    the same segment computed afresh, bit for bit."""
    from minisim import render
    from minisim.activity import ActivityBatch

    spec = small_spec(**{"recording.duration_s": 250.0})
    world = render.build_world(spec)
    seg = world.segment(1)
    whole = ActivityBatch(spec, world.scene.cells.unit_id).segment(1)
    assert seg.activity.bleach is None and whole.bleach is not None
    np.testing.assert_array_equal(seg.C, whole.C)
    np.testing.assert_array_equal(seg.activity.dff, whole.dff)
    np.testing.assert_array_equal(seg.activity.spikes, whole.spikes)


def test_the_time_coordinate_is_a_block_per_time_chunk_of_exact_frame_times(tmp_path, monkeypatch):
    """``time_s`` of a 3-segment recording is one block (and one zarr chunk, written by one
    task), not one per segment; cut into smaller blocks its values are the same frame times."""
    from minisim import recording

    spec = small_spec(**{"recording.duration_s": 250.0})  # 2,500 frames: 3 segments
    expected = np.arange(spec.recording.n_frames, dtype=np.float64) / spec.recording.fps
    rec = simulate(spec)
    assert rec.dataset.time_s.data.chunks == ((2500,),)
    rec.save(tmp_path / "r.zarr")
    saved = zarr.open_array(str(tmp_path / "r.zarr" / "time_s"), mode="r")
    assert saved.chunks == (2500,) and np.array_equal(saved[:], expected)
    monkeypatch.setattr(recording, "TIME_CHUNK_FRAMES", 1000)
    cut = simulate(spec).dataset.time_s
    assert cut.data.chunks == ((1000, 1000, 500),) and np.array_equal(cut.values, expected)


def test_store_records_versions_and_the_spec(tmp_path):
    simulate(small_spec()).save(tmp_path / "r.zarr")
    attrs = zarr.open_group(str(tmp_path / "r.zarr"), mode="r").attrs
    assert attrs["minisim_version"] == minisim.__version__
    assert attrs["format_version"] == FORMAT_VERSION
    assert attrs["render_algorithm"] >= 1
    assert attrs["numpy_version"] == np.__version__
    assert attrs["numba_version"] == importlib.metadata.version("numba")
    assert attrs["complete"] is True and attrs["saturated_pixels"] >= 0
    assert Spec.model_validate_json(attrs["spec"]) == small_spec()


@pytest.mark.slow
def test_save_refuses_an_existing_store_unless_overwrite(tmp_path):
    path = tmp_path / "r.zarr"
    simulate(small_spec()).save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate(small_spec(**{"recording.seed": 2})).save(path)
    assert Recording.load(path).spec.recording.seed == 11  # untouched
    simulate(small_spec(**{"recording.seed": 2})).save(path, overwrite=True)
    assert Recording.load(path).spec.recording.seed == 2


def test_load_refuses_a_newer_format(tmp_path):
    path = tmp_path / "r.zarr"
    simulate(small_spec()).save(path)
    zarr.open_group(str(path), mode="r+").attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(RecordingFormatError, match="newer than this minisim"):
        Recording.load(path)


def test_load_of_a_missing_or_foreign_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        Recording.load(tmp_path / "nope.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(RecordingFormatError, match="not a minisim recording"):
        Recording.load(tmp_path / "other.zarr")


_SLOW_SAVE = """
import sys
sys.path.insert(0, {tests!r})
from helpers import small_spec
import minisim
spec = small_spec(**{{"recording.duration_s": 400.0, "sensor.width_px": 64, "sensor.height_px": 64}})
minisim.simulate(spec).save({path!r}, chunks={{"frame": 8}}, scheduler="synchronous")
"""


@pytest.mark.slow
def test_interrupted_save_leaves_nothing_under_the_name_and_an_incomplete_partial(tmp_path):
    """A killed save never leaves a store under its name: the chunks went to a partial beside
    it, which load reports as incomplete and the next save of the path removes."""
    path = tmp_path / "killed.zarr"
    code = _SLOW_SAVE.format(tests=os.path.dirname(__file__), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code])
    partials = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            partials = list(tmp_path.glob("killed.zarr.partial-*"))
            movie = partials[0] / "movie" / "c" if partials else None
            if movie is not None and movie.exists() and sum(1 for f in movie.rglob("*") if f.is_file()) >= 10:
                break
            if proc.poll() is not None:
                pytest.fail("the save finished before it could be interrupted")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        Recording.load(path)
    (partial,) = partials
    with pytest.raises(IncompleteRecordingError, match="incomplete"):
        Recording.load(partial)
    assert Recording.load(partial, allow_incomplete=True).dataset.attrs["complete"] is False
    # the killed save's lock names a process that is gone: the next save says so and takes it over
    with pytest.warns(UserWarning, match="taking over the stale lock .*killed.zarr.lock"):
        simulate(Recording.load(partial, allow_incomplete=True).spec).save(path, chunks={"frame": 400})
    assert Recording.load(path).dataset.attrs["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.zarr"]  # the leftover and lock are gone


def test_saturation_is_counted_in_attrs(tmp_path):
    spec = small_spec(**{"sensor.gain_adu_per_e": 100.0})
    saved = simulate(spec).save(tmp_path / "bright.zarr")
    n = int((saved.dataset.movie.values == 4095).sum())
    assert n > 0 and saved.dataset.attrs["saturated_pixels"] == n


def test_cli_simulate_spec_and_spec_from_store(tmp_path, capsys):
    from minisim.cli import main

    spec_file = tmp_path / "s.json"
    small_spec().to_json(spec_file)
    out = tmp_path / "cli.zarr"
    assert main(["simulate", str(spec_file), "-o", str(out), "--seed", "5", "-q"]) == 0
    assert Recording.load(out).spec.recording.seed == 5
    assert main(["simulate", str(spec_file), "-o", str(out), "-q"]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["spec", "--from", str(out)]) == 0
    assert Spec.model_validate_json(capsys.readouterr().out) == Recording.load(out).spec
    assert main(["spec", "--preset", "miniscope_v4_ca1"]) == 0
    assert Spec.model_validate_json(capsys.readouterr().out).sensor.width_px == 608
    bad = tmp_path / "bad.json"
    bad.write_text('{"optics": {"na": 3}}')
    assert main(["spec", str(bad)]) == 2
    assert "optics.na" in capsys.readouterr().err


@pytest.mark.slow
def test_flat_memory_small_case(tmp_path):
    """Peak RSS of writing 10x more frames stays within 1.1x (the full case is a benchmark)."""
    script = Path(__file__).parents[1] / "benchmarks" / "bench_memory.py"
    peaks = {}
    for frames in (300, 3000):
        r = subprocess.run(
            [sys.executable, str(script), "--one", str(frames), "--px", "128",
             "--out", str(tmp_path / f"m{frames}.zarr")],
            capture_output=True, text=True, check=True,
        )
        peaks[frames] = float(r.stdout.strip().splitlines()[-1])
    assert peaks[3000] <= 1.1 * peaks[300], peaks


def test_dff_and_spikes_are_lazy_time_segments_equal_to_the_whole_population(tmp_path):
    """C, dF/F and S are computed a time segment (1,024 frames) at a time while saving (never
    held for the whole recording), and equal what simulating every unit at once gives."""
    from minisim.activity import simulate_activity

    spec = small_spec(**{"cells.density_per_mm3": 60000.0, "recording.duration_s": 105.0})
    ds = simulate(spec).dataset
    assert ds.sizes["unit_id"] > 64
    for name in ("C", "dff", "S"):
        assert ds[name].chunks[1] == (1024, 26), name  # two segments, the last one cut
    assert ds["S"].dtype == np.uint8
    whole = simulate_activity(spec, ds["unit_id"].values)
    np.testing.assert_array_equal(ds["dff"].values, whole.dff)
    np.testing.assert_array_equal(ds["S"].values, whole.spikes)
    np.testing.assert_array_equal(ds["C"].values, whole.C)
    saved = simulate(spec).save(tmp_path / "r.zarr").dataset
    np.testing.assert_array_equal(saved["S"].values, whole.spikes)
    np.testing.assert_array_equal(saved["dff"].values, whole.dff)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_save_renders_each_frame_once(tmp_path, monkeypatch, scheduler):
    """The oracle reads its frames from the movie the save has just written instead of
    rendering them again: every frame of every tile is rendered exactly once, and the stored
    metrics are those of the Recording computed in memory."""
    import collections

    from minisim import render

    spec = small_spec(**{"recording.duration_s": 60.0})
    rendered = collections.Counter()
    render_block = render.render_block
    monkeypatch.setattr(render, "render_block", lambda world, frames, window: (
        rendered.update({t: (window[1] - window[0]) * (window[3] - window[2]) for t in frames}),
        render_block(world, frames, window))[1])
    rec = simulate(spec)
    rec.save(tmp_path / "r.zarr", scheduler=scheduler)
    T, H, W = (rec.dataset.sizes[d] for d in ("frame", "height", "width"))
    assert sorted(rendered) == list(range(T))
    assert set(rendered.values()) == {H * W}  # pixels rendered per frame: each once
    monkeypatch.setattr(render, "render_block", render_block)
    saved = Recording.load(tmp_path / "r.zarr").dataset
    for name in ("oracle_r", "detectable", "visibility", "compactness", "pnr"):
        np.testing.assert_array_equal(saved[name].values, rec.dataset[name].values)
