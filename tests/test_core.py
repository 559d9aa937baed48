"""The one property: a recording is a pure function of its Spec.

Same bytes for any chunking and any scheduler, prefix-stable, independent of hash seeds, and
the ground truth explains the movie exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import dask
import numpy as np
import pytest
from helpers import dataset_digests, digest, small_spec

import minisim
from minisim import presets, simulate

CHUNKINGS = [
    None,                                        # the default
    {"frame": 7, "height": 13, "width": 17},     # odd tiles across noise tiles
    {"frame": 3, "height": 40, "width": 48},     # whole frames, short blocks
    {"frame": -1, "height": -1, "width": -1},    # one block
]


def _everything_on(**updates):
    """Every effect on, hot pixels frequent enough to land in a 40 x 48 frame."""
    return small_spec(**{
        "illumination.falloff.enabled": True, "illumination.vignette.enabled": True,
        "optics.field_curvature.enabled": True, "optics.aberration_sigma_um": 1.0,
        "sensor.hot_pixel_fraction": 0.01, "motion.rigid_sd_um": 2.0,
        "motion.nonrigid_amplitude_um": 1.0, **updates,
    })


def _simulate_peak_bytes(duration_s: float) -> int:
    """tracemalloc peak of simulate() for a small field over ``duration_s``."""
    spec = small_spec(**{"recording.duration_s": duration_s, "recording.fps": 20.0})
    tracemalloc.start()
    try:
        # 1,024-frame movie blocks: dask's per-block bookkeeping (sizes, offsets) of the default
        # 32-frame blocks is ~3 MB a day by itself, now that simulate() builds no footprints
        simulate(spec, chunks={"frame": 1024})
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_simulate_is_lazy():
    ran = []

    class Count(dask.callbacks.Callback):
        def _start(self, dsk):
            ran.append(len(dsk))

    with Count():
        rec = simulate(small_spec(**{"recording.duration_s": 600.0}))
    assert ran == []  # no dask graph was computed
    for name in ("movie", "C", "dff", "S", "f", "motion", "vessel_dilation"):
        assert isinstance(rec.dataset[name].data, dask.array.Array), name
    assert rec.dataset.movie.dims == ("frame", "height", "width")
    assert rec.dataset.movie.dtype == np.uint16 and rec.dataset.sizes["frame"] == 6000


def test_simulate_allocates_nothing_proportional_to_the_duration():
    _simulate_peak_bytes(60.0)  # warm imports and caches
    minute, hour, day = (_simulate_peak_bytes(s) for s in (60.0, 3600.0, 86400.0))
    # an hour holds 60x the frames of a minute (72,000 vs 1,200), a day 1,440x (1.7 M): a
    # per-frame array of 4 bytes would add 0.3 MB (hour) and 7 MB (day), of 8 bytes 14 MB. What
    # grows is dask's tuples of block sizes (1,700 blocks a day of each lazy variable) and the
    # moments' fold task's list of keys: ~0.7 MB (the per-segment tasks are made when read)
    assert hour - minute < 1e6
    assert day - minute < 2e6


def test_a_days_per_segment_layers_hold_no_task_until_read():
    """A 24-hour recording's per-segment ground truth is ~1,700 blocks per variable: the layers
    make each task when dask asks for it, and a task made so is the one a graph ships (pickled)."""
    import pickle

    from minisim import render

    spec = small_spec(**{"recording.duration_s": 86400.0, "recording.fps": 20.0})
    C = simulate(spec).dataset["C"].data
    layer = C.dask.layers[C.name].mapping
    assert isinstance(layer, render.BlockTasks)
    n_seg = len(C.chunks[1])
    assert n_seg == 1688 and len(layer) == n_seg
    assert (C.name, 0, n_seg - 1) in layer and (C.name, 0, n_seg) not in layer
    assert (C.name, 1, 0) not in layer and ("other", 0, 0) not in layer
    task = layer[(C.name, 0, 1687)]
    assert task[1] == (C.dask.layers[task[1][0]].mapping.name, 1687)  # it reads segment 1687
    again = pickle.loads(pickle.dumps(layer))
    assert again[(C.name, 0, 1687)] == task and list(again)[-1] == (C.name, 0, 1687)


def test_same_bytes_for_time_chunks_that_cut_segments_anywhere():
    # 1,300 frames at 20 fps cross the 1,024-frame segment boundary; blocks of 1,000 and 77 frames
    # cut it elsewhere, and the traces' own chunks are the segments
    spec = _everything_on(**{"recording.duration_s": 65.0, "recording.fps": 20.0,
                             "motion.jerk_rate_hz": 0.2, "illumination.bleaching.activity_dependence": 1.0})
    digests = set()
    for chunks, scheduler in (({"frame": 1000}, "threads"), ({"frame": 77, "height": 13}, "sync"),
                              (None, "processes")):
        ds = simulate(spec, chunks=chunks).dataset
        with dask.config.set(scheduler=scheduler):
            digests.add(tuple(digest(ds[n].values) for n in ("movie", "C", "dff", "S", "f", "motion")))
    assert len(digests) == 1
    boundary = simulate(spec).dataset.movie[1020:1028].values
    assert boundary.std() > 0


def test_prefix_stable_across_a_segment_boundary():
    kw = {"recording.fps": 20.0, "motion.jerk_rate_hz": 0.2}
    short = simulate(_everything_on(**{"recording.duration_s": 52.0, **kw})).dataset  # 1,040 frames
    long = simulate(_everything_on(**{"recording.duration_s": 70.0, **kw})).dataset
    n = short.sizes["frame"]
    assert np.array_equal(short.movie[1000:].values, long.movie[1000:n].values)
    for name in ("C", "S", "dff", "motion", "f"):
        assert np.array_equal(short[name].values, long[name].isel(frame=slice(0, n)).values), name


@pytest.mark.slow
def test_same_bytes_for_any_chunking():
    spec = _everything_on()
    digests = set()
    for chunks in CHUNKINGS:
        rec = simulate(spec, chunks=chunks)
        digests.add(digest(rec.dataset.movie.data.compute(scheduler="threads")))
    assert len(digests) == 1


@pytest.mark.slow
def test_same_bytes_for_any_chunking_of_the_saved_store(tmp_path):
    spec = _everything_on()
    stores = [simulate(spec).save(tmp_path / f"r{i}.zarr", chunks=c)
              for i, c in enumerate(CHUNKINGS[1:])]
    first = dataset_digests(stores[0].dataset)
    assert all(dataset_digests(s.dataset) == first for s in stores[1:])


@pytest.mark.slow
def test_same_bytes_for_threads_processes_and_local_cluster(tmp_path):
    from distributed import Client, LocalCluster

    spec = _everything_on()
    chunks = {"frame": 4, "height": 21, "width": 48}
    ref = dataset_digests(simulate(spec).save(tmp_path / "threads.zarr", chunks=chunks,
                                              scheduler="threads").dataset)
    procs = simulate(spec).save(tmp_path / "processes.zarr", chunks=chunks, scheduler="processes")
    assert dataset_digests(procs.dataset) == ref
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dist = simulate(spec).save(tmp_path / "cluster.zarr", chunks=chunks, scheduler=client)
        assert dataset_digests(dist.dataset) == ref


@pytest.mark.slow
def test_ground_truth_explains_the_movie_without_motion_and_noise():
    spec = _everything_on(**{"motion.enabled": False, "sensor.noise": False,
                             "cells.density_per_mm3": 200000.0})
    ds = simulate(spec).dataset
    movie = ds.movie.values.astype(np.float64)
    model = (spec.sensor.offset_adu
             + np.einsum("uhw,ut->thw", ds.A.values.astype(np.float64), ds.C.values)
             + np.einsum("khw,kt->thw", ds.b.values.astype(np.float64), ds.f.values))
    top = 2**spec.sensor.bit_depth - 1
    assert model.max() < top  # the identity holds before saturation
    assert np.abs(movie - np.rint(model)).max() <= 1
    assert ds.sizes["unit_id"] > 0 and float(ds.A.sum()) > 0


@pytest.mark.slow
def test_prefix_stable_when_the_duration_grows():
    short = simulate(_everything_on()).dataset
    long = simulate(_everything_on(**{"recording.duration_s": 2.5})).dataset
    n = short.sizes["frame"]
    assert np.array_equal(short.movie.values, long.movie[:n].values)
    for name in ("C", "S", "dff", "motion"):
        assert np.array_equal(short[name].values, long[name].isel(frame=slice(0, n)).values), name
    assert np.array_equal(short.unit_id.values, long.unit_id.values)


_HASH_SCRIPT = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from helpers import small_spec
import minisim
rec = minisim.simulate(small_spec(**{{"sensor.hot_pixel_fraction": 0.01}}))
print(hashlib.sha256(rec.dataset.movie.values.tobytes() + rec.dataset.C.values.tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_bytes_do_not_depend_on_pythonhashseed():
    code = _HASH_SCRIPT.format(tests=os.path.dirname(__file__))
    outs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True)
        outs.append(r.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1] and len(outs[0]) == 64


@pytest.mark.slow
def test_seed_changes_the_recording():
    """Another seed redraws every random ingredient (cells, motion, noise), so nearly every
    pixel changes; the same seed again gives the same bytes."""
    a = simulate(small_spec()).dataset
    b = simulate(small_spec(**{"recording.seed": 12})).dataset
    assert digest(simulate(small_spec()).dataset.movie.values) == digest(a.movie.values)
    cells_a = {tuple(p) for p in a.position.values}
    cells_b = {tuple(p) for p in b.position.values}
    assert cells_a and cells_b and not cells_a & cells_b          # other cells
    assert not np.array_equal(a.motion.values, b.motion.values)  # another motion path
    assert a.movie.shape == b.movie.shape
    assert (a.movie.values != b.movie.values).mean() > 0.9        # other noise everywhere


@pytest.mark.slow
def test_presets_simulate_lazily_over_their_full_field():
    rec = minisim.simulate(presets.scope("miniscope_v4_ca1").with_updates(
        {"recording.duration_s": 0.1}))
    assert rec.dataset.movie.shape == (2, 608, 608)
    frame = rec.dataset.movie[0, 250:330, 250:330].values
    assert frame.dtype == np.uint16 and frame.max() <= 255


@pytest.mark.parametrize("height, width, noise_tile, want", [
    (608, 608, 128, (304, 304)),    # the V4 field: two equal tiles, not 256 + 256 + 96
    (480, 752, 128, (240, 256)),    # 2 x 240 and 256 + 256 + 240
    (1024, 1024, 128, (256, 256)),  # multiples of 256 as before
    (300, 400, 128, (300, 208)),    # one tile where two would be small; 208 + 192
    (64, 96, 16, (64, 96)),         # a small field is one tile
    (600, 600, 512, (600, 600)),    # a larger target side from sensor.noise_tile_px
])
def test_default_tiles_cut_the_field_into_near_equal_tiles(height, width, noise_tile, want):
    """render.default_chunks: each axis in the whole number of ~256 px tiles nearest its
    length, of equal sides rounded up to 16 px (the last tile the rest), 32 frames a block."""
    from minisim import render
    from minisim.spec import Spec

    spec = Spec(sensor={"height_px": height, "width_px": width, "noise_tile_px": noise_tile})
    chunks = render.default_chunks(spec)
    assert (chunks["frame"], chunks["height"], chunks["width"]) == (32, *want)
    rec = simulate(spec.with_updates({"recording.duration_s": 0.1}))
    for side, n in zip((chunks["height"], chunks["width"]), (height, width)):
        last = n - (-(-n // side) - 1) * side
        assert 0 < last <= side and (side == n or side % 16 == 0)
    assert rec.dataset.movie.data.chunksize == (2, *want)


@pytest.mark.parametrize("bad", [{"frame": 0}, {"time": 4}, {"height": 2.5}])
def test_bad_chunks_are_a_clear_error(bad):
    with pytest.raises(ValueError, match="chunks"):
        simulate(small_spec(), chunks=bad)


def test_spike_table_is_derivable_from_the_spec_and_bins_to_S():
    from minisim.truth import spike_table

    spec = small_spec(**{"activity.rate_median_hz": 3.0, "recording.duration_s": 4.0})
    ds = simulate(spec).dataset
    unit, time_s = spike_table(spec)
    assert unit.dtype == np.int64 and time_s.dtype == np.float64 and unit.size > 20
    row = np.searchsorted(ds.unit_id.values, unit)
    frame = np.floor(time_s * spec.recording.fps).astype(int)
    counts = np.zeros(ds.S.shape, np.int64)
    np.add.at(counts, (row, frame), 1)
    np.testing.assert_array_equal(counts, ds.S.values)
