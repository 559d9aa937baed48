"""Verified stores: crc32c on every chunk, a record of the chunks written, verify, format versions."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest
import zarr
from helpers import dataset_digests, small_spec

from minisim import Recording, simulate
from minisim.cli import main
from minisim.store import (
    FORMAT_VERSION,
    DamagedRecordingError,
    NewerStoreWarning,
    RecordingFormatError,
    verify,
)

VARIABLES = ("movie", "A", "C")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One store with several chunks in movie and A, and its digests."""
    folder = tmp_path_factory.mktemp("store")
    spec = small_spec(**{"cells.density_per_mm3": 60000.0})
    rec = simulate(spec)
    rec.save(folder / "r.zarr", chunks={"frame": 4, "height": 16, "width": 16})
    return folder / "r.zarr", dataset_digests(rec.dataset)


def _copy(saved, tmp_path):
    path = tmp_path / "copy.zarr"
    shutil.copytree(saved[0], path)
    return path


def _first_chunk(path, name):
    files = sorted(f for f in (path / name / "c").rglob("*") if f.is_file())
    assert files, name
    return files[0]


def _keys_run(dsk) -> list:
    """The keys a graph's tasks compute, those run inside one task (dask's fused subgraphs,
    :func:`minisim.store.window_delayed`) included."""
    from dask._task_spec import Task, _execute_subgraph

    out = []
    for key, task in dsk.items():
        out.append(key)
        if isinstance(task, Task) and task.func is _execute_subgraph:
            out.extend(_keys_run(task.args[0]))
    return out


def test_every_array_carries_a_crc32c_after_its_compressor(saved):
    path, _ = saved
    for meta in path.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        if doc.get("node_type") == "array":
            assert [c["name"] for c in doc["codecs"]][-1] == "crc32c", meta


def test_the_movie_is_byte_shuffled_and_the_other_integers_bit_shuffled(saved):
    """store._compressors: the movie's counts through Blosc's byte shuffle (its fastest codec
    here), the spikes and the other integers through the bit shuffle, the floats the byte one."""
    path, _ = saved
    shuffles = {}
    for name in ("movie", "S", "A", "C"):
        doc = json.loads((path / name / "zarr.json").read_text())
        (blosc,) = [c for c in doc["codecs"] if c["name"] == "blosc"]
        shuffles[name] = (doc["data_type"], blosc["configuration"]["cname"], blosc["configuration"]["shuffle"])
    assert shuffles == {"movie": ("uint16", "lz4", "shuffle"), "S": ("uint8", "lz4", "bitshuffle"),
                        "A": ("float32", "lz4", "shuffle"), "C": ("float32", "lz4", "shuffle")}


def test_store_records_format_2_and_the_chunks_written(saved):
    path, _ = saved
    attrs = zarr.open_group(str(path), mode="r").attrs
    assert attrs["format_version"] == FORMAT_VERSION == 2
    record = attrs["chunks_written"]
    assert set(VARIABLES) <= set(record)
    assert record["movie"]["written"] == "all"
    assert record["A"]["written"] != "all"   # all-zero footprint chunks are skipped by design


def test_the_chunk_record_walks_nested_folders_and_follows_no_link(tmp_path):
    """The files below an array's folder, as chunk keys with "/" (nested to any depth), every
    file and no folder; a link to a folder is not followed, as os.walk does not."""
    from minisim.store import _files_under

    root = tmp_path / "movie"
    for rel in ("zarr.json", "c/0/0/0", "c/0/0/1", "c/12/0/0", "c/12/1/0"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "0").write_bytes(b"x")
    (root / "c" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert _files_under(root) == {"zarr.json", "c/0/0/0", "c/0/0/1", "c/12/0/0", "c/12/1/0"}
    assert _files_under(tmp_path / "absent") == set()


def test_an_intact_store_verifies(saved):
    path, digests = saved
    report = Recording.load(path).verify()
    assert report.ok and report.chunks_checked > 0, str(report)
    assert dataset_digests(Recording.load(path).dataset) == digests


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_verify_finds_a_damaged_chunk_in_movie_A_and_C(saved, tmp_path, damage):
    path = _copy(saved, tmp_path)
    hit = {}
    for name in VARIABLES:
        f = _first_chunk(path, name)
        hit[name] = f.relative_to(path / name).as_posix()
        if damage == "delete":
            f.unlink()
        elif damage == "truncate":
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        else:
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0x01
            f.write_bytes(bytes(data))
    report = verify(path)
    assert not report.ok
    found = {(p.variable, p.chunk) for p in report.problems}
    assert found == {(name, key) for name, key in hit.items()}, str(report)
    kind = "missing" if damage == "delete" else "damaged"
    assert {p.kind for p in report.problems} == {kind}
    for name, key in hit.items():
        assert f"{name}/{key}" in str(report)


def test_a_flipped_byte_is_an_error_when_read(saved, tmp_path):
    path = _copy(saved, tmp_path)
    f = _first_chunk(path, "movie")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(DamagedRecordingError, match="chunk 0/0/0 of 'movie' is damaged") as e:
        Recording.load(path).movie.values  # noqa: B018
    assert "checksum" in str(e.value).lower()


def test_load_notices_a_missing_variable_at_once(saved, tmp_path):
    path = _copy(saved, tmp_path)
    shutil.rmtree(path / "movie")
    with pytest.raises(DamagedRecordingError, match="movie"):
        Recording.load(path)
    report = verify(path)
    assert any(p.variable == "movie" and p.kind == "missing array" for p in report.problems)


def test_cli_verify_exits_0_only_for_an_intact_store(saved, tmp_path, capsys):
    path, _ = saved
    assert main(["verify", str(path), "-q"]) == 0
    assert "intact" in capsys.readouterr().out
    broken = _copy(saved, tmp_path)
    _first_chunk(broken, "A").unlink()
    assert main(["verify", str(broken), "-q"]) == 1
    out = capsys.readouterr().out
    assert "A/c/" in out and "missing" in out


def test_a_format_1_store_still_loads_and_verifies_what_it_can(saved, tmp_path):
    path = _copy(saved, tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["format_version"] = 1
    del g.attrs["chunks_written"]
    rec = Recording.load(path)
    assert dataset_digests(rec.dataset) == saved[1]
    report = rec.verify()
    assert report.ok and any("format 1" in n for n in report.notes)


@pytest.mark.parametrize("value", ["abc", None, 1.9, True, 0])
def test_a_format_version_that_is_not_a_whole_known_number_is_refused(saved, tmp_path, value):
    path = _copy(saved, tmp_path)
    zarr.open_group(str(path), mode="r+").attrs["format_version"] = value
    with pytest.raises(RecordingFormatError, match="format_version") as e:
        Recording.load(path)
    assert repr(value) in str(e.value)


def test_a_newer_format_version_is_refused(saved, tmp_path):
    path = _copy(saved, tmp_path)
    zarr.open_group(str(path), mode="r+").attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(RecordingFormatError, match="newer than this minisim"):
        Recording.load(path)


@pytest.mark.parametrize("key,value", [("render_algorithm", 999), ("minisim_version", "99.0")])
def test_a_newer_render_algorithm_or_minisim_warns_and_loads(saved, tmp_path, key, value):
    path = _copy(saved, tmp_path)
    zarr.open_group(str(path), mode="r+").attrs[key] = value
    with pytest.warns(NewerStoreWarning, match=str(value)):
        rec = Recording.load(path)
    assert dataset_digests(rec.dataset) == saved[1]


def test_the_current_store_loads_without_a_version_warning(saved):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewerStoreWarning)
        Recording.load(saved[0])


def test_checksums_do_not_change_the_data(saved):
    """The crc32c is extra bytes per chunk: the decoded arrays are those simulated."""
    path, digests = saved
    rec = Recording.load(path)
    assert dataset_digests(rec.dataset) == digests
    assert np.asarray(rec.movie[0]).dtype == np.uint16


@pytest.mark.parametrize("dtype, name", [(np.uint16, "movie"), (np.uint16, None), (np.float32, None)])
def test_minisims_chunk_files_are_byte_for_byte_zarrs(tmp_path, dtype, name):
    """The save writes chunks itself (Blosc + crc32c, store._write_chunk): each file, edge chunks
    padded with the fill value included, is the file zarr writes for the same values, and zarr
    reads it back to the same values (the movie's byte shuffle and the other integers' bit
    shuffle alike)."""
    from minisim import rng, store

    values = (rng.rng(5, "glow", 7).random((3, 50, 70)) * 3000).astype(dtype)
    values[:, :10, :20] = 0
    paths = {}
    for how in ("zarr", "minisim"):
        path = tmp_path / f"{how}.zarr"
        zarr.create_array(store=str(path), name="x", shape=values.shape, chunks=(2, 32, 32), dtype=dtype,
                          fill_value=0, compressors=store._compressors(dtype, name))
        target = zarr.open_array(store=str(path), path="x", mode="r+")
        if how == "zarr":
            target[:] = values
        else:
            assert store._direct_encoder(target) is not None
            store._write_block(values, target, [0, 0, 0], nonzero_only=False)
        paths[how] = path / "x"
        np.testing.assert_array_equal(zarr.open_array(store=str(path), path="x", mode="r")[:], values)
    files = sorted(p.relative_to(paths["zarr"]) for p in paths["zarr"].rglob("*") if p.is_file())
    assert [f for f in files if f.parts[0] == "c"]
    assert files == sorted(p.relative_to(paths["minisim"]) for p in paths["minisim"].rglob("*") if p.is_file())
    for f in files:
        assert (paths["zarr"] / f).read_bytes() == (paths["minisim"] / f).read_bytes(), f


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_minisims_chunk_reads_are_zarrs_for_any_region(tmp_path, dtype):
    """store.read_region reads the chunk files itself (crc32c, then Blosc): any region, across
    chunk and array edges, equals zarr's read, chunks never written included (the fill value)."""
    from minisim import rng, store

    values = (rng.rng(6, "glow", 8).random((5, 50, 70)) * 3000).astype(dtype)
    values[:, 32:, :32] = 0
    path = tmp_path / "x.zarr"
    zarr.create_array(store=str(path), name="x", shape=values.shape, chunks=(2, 32, 32), dtype=dtype,
                      fill_value=0, compressors=store._compressors(dtype))
    target = zarr.open_array(store=str(path), path="x", mode="r+")
    store._write_block(values, target, [0, 0, 0], nonzero_only=True)  # one chunk never written
    assert not (path / "x" / "c" / "0" / "1" / "0").exists()
    assert store._direct_decoder(target) is not None
    g = rng.rng(7, "glow", 9)
    regions = [(slice(0, 5), slice(0, 50), slice(0, 70)), (slice(1, 4), slice(31, 50), slice(0, 33))]
    regions += [tuple(slice(a, a + int(g.integers(1, n - a + 1))) for a, n in
                      ((int(g.integers(0, n)), n) for n in values.shape)) for _ in range(20)]
    for region in regions:
        got = store.read_region(target, region)
        np.testing.assert_array_equal(got, target[region])
        np.testing.assert_array_equal(got, values[region])
        assert got.dtype == values.dtype and got.flags.writeable


def test_a_save_hands_the_scheduler_the_movie_one_window_at_a_time(tmp_path):
    """A save is one computation per window of MOVIE_WINDOW_FRAMES frames, one for the ground
    truth (beside the first window), then one for A_planted and the activity metrics (their
    oracle reads the written movie; its runs that an early window wrote are computed beside a
    later window, with the peak-to-noise ratios):
    a recording twice as long has twice the windows, each full window's graph is the size of
    any other's but for those oracle tasks, the metrics' graph does not grow (it holds the
    tasks a longer recording's windows took), the movie written is the movie, window edges
    or not, and each trace segment is a task of one step alone: the step of the window it
    begins in (its per-frame ground truth and moments written beside that window's render),
    never every segment in one step."""
    from dask.callbacks import Callback

    from minisim.store import MOVIE_WINDOW_FRAMES

    class Graphs(Callback):
        def __init__(self):
            super().__init__()
            self.sizes, self.segments, self.oracle = [], [], []

        def _start(self, dsk):
            self.sizes.append(len(dsk))
            self.oracle.append(sum(str(k).startswith(("oracle-task-", "pnr-early-")) for k in dsk))
            self.segments.append(sorted(k[1] for k in _keys_run(dsk)
                                        if isinstance(k, tuple) and str(k[0]).startswith("segment-")))

    fps = 200.0
    sizes, segments, oracle = {}, {}, {}
    for windows in (2, 4):
        # a last window cut short, so window edges fall mid-segment and mid-chunk of the truth
        n_frames = (windows - 1) * MOVIE_WINDOW_FRAMES + 600  # (a rest under half a window joins the last)
        spec = small_spec(**{"recording.fps": fps, "recording.duration_s": n_frames / fps,
                             "sensor.width_px": 16, "sensor.height_px": 16,
                             "sensor.bit_depth": 8, "sensor.offset_adu": 240.0})
        rec = simulate(spec, chunks={"frame": 24})
        with Graphs() as g:
            rec.save(tmp_path / f"w{windows}.zarr", scheduler="sync")
        assert len(g.sizes) == windows + 2
        sizes[windows] = g.sizes
        segments[windows] = g.segments
        oracle[windows] = g.oracle
        saved = Recording.load(tmp_path / f"w{windows}.zarr")
        np.testing.assert_array_equal(saved.movie.values, rec.movie.values)
        top = 2**spec.sensor.bit_depth - 1
        assert saved.dataset.attrs["saturated_pixels"] == int((rec.movie.values == top).sum()) > 0
    # every full window's graph is the same size, however long the recording (the ground truth
    # is a computation of its own, beside the first window)
    # (the oracle's runs begin at frames 0, 1213, 2427 and 3640: the first two are computed
    # beside windows 2 and 3, STEPS_AHEAD + 1 after the windows that wrote them, the first
    # with the peak-to-noise ratios; 2 tasks of 16 frames a run)
    assert oracle[4] == [0, 0, 0, 3, 2, 0] and oracle[2] == [0, 0, 0, 0]
    first, _, *full, short, metrics = (n - k for n, k in zip(sizes[4], oracle[4]))
    assert len(set(full)) == 1 and full[0] > short
    # (and where they do, A_planted's writes go beside A, in the ground truth's step)
    planted = sizes[4][1] - sizes[2][1]
    assert planted > 0 and metrics + sum(oracle[4]) + planted == sizes[2][-1] and sizes[2][0] == first
    # 3,672 frames, windows [0, 1032), [1032, 2064), [2064, 3096), [3096, 3672) of 24-frame
    # blocks: segments 0 and 1 go with the first window's ground truth, 2 and 3 with windows
    # 1 and 2, none with the last
    assert segments[4] == [[], [0, 1], [2], [3], [], []]
    assert segments[2] == [[], [0, 1], [], []]


def test_a_saves_last_step_writes_the_activity_metrics_in_one_task(tmp_path):
    """The five activity metrics are written by one task at the end of a save (not a write task
    and a finalize task apiece: round trips to a distributed worker), with their values."""
    from dask.callbacks import Callback

    class Last(Callback):
        def _start(self, dsk):
            self.keys = [str(k[0] if isinstance(k, tuple) else k) for k in _keys_run(dsk)]

    spec = small_spec()
    with Last() as last:
        saved = simulate(spec).save(tmp_path / "a.zarr", scheduler="sync")
    assert sum(k.startswith("metric-writes-") for k in last.keys) == 1
    assert not any(k.startswith(("_store_chunks-", "finalize-")) for k in last.keys), last.keys
    lazy = simulate(spec).dataset
    for name in ("oracle_r", "pnr", "compactness", "visibility", "detectable"):
        np.testing.assert_array_equal(saved.dataset[name].values, lazy[name].values, err_msg=name)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_save_hands_the_heap_back_once_its_ground_truth_is_written(tmp_path, monkeypatch, scheduler):
    """The ground truth's one-off work (the footprints' chunks, boxes and cores) leaves free
    pages scattered in the heaps: a save trims them once, when that step is done (its every
    chunk of A on disk), and not again (a short recording evicts no trace segment)."""
    import os

    from minisim import render

    def chunks_of_a() -> int:  # (the save writes beside its path, then renames)
        return sum(len(files) for top, _, files in os.walk(tmp_path)
                   if "A" in os.path.relpath(top, tmp_path).split(os.sep) and "c" in top.split(os.sep))

    seen = []
    trim = render._trim_heap
    monkeypatch.setattr(render, "_trim_heap", lambda: (seen.append(chunks_of_a()), trim())[1])
    simulate(small_spec()).save(tmp_path / "a.zarr", scheduler=scheduler)
    written = chunks_of_a()
    assert written > 1 and seen == [written]


def test_a_saves_last_step_keeps_only_the_trace_segments_it_reads(tmp_path, monkeypatch):
    """Once every window is written, the World keeps only the segments the last step reads (the
    oracle's last run, and the first segment where the peak-to-noise ratios are still to come):
    a long save held three there (one more than a one-minute save holds, ~35 MB of V4 CA1's
    peak). The dropped segments are not built again, and the metrics are the unsaved
    Recording's."""
    from minisim import render, truth

    # 5,200 frames: 6 segments, 5 windows; the oracle's runs begin at 0, 1723, 3445 and 5168:
    # on threads the first two are computed beside later windows, the last two in the last step
    # (segments 3 and 5)
    spec = small_spec(**{"recording.fps": 200.0, "recording.duration_s": 26.0,
                         "sensor.width_px": 16, "sensor.height_px": 16})
    chunks = {"frame": 64, "height": 16, "width": 16}
    rec = simulate(spec, chunks=chunks)
    world = render.get_world(spec.model_dump_json())
    kept, built = [], []
    keep_only, build_segment = render.World.keep_only, render.World.build_segment
    monkeypatch.setattr(render.World, "keep_only", lambda self, segs: kept.append(
        (sorted(segs), sorted(self._segments), keep_only(self, segs), sorted(self._segments), len(built))))
    monkeypatch.setattr(render.World, "build_segment", lambda self, seg, **kw: (
        built.append(seg), build_segment(self, seg, **kw))[1])
    saved = rec.save(tmp_path / "a.zarr", scheduler="threads")
    assert truth.segments_still_read(spec, {0, 1, 2, 3, "pnr"}) == {3, 5}  # (2 tasks a run)
    # the last step asked to keep 3 and 5, while the cache held three segments, 4 among them
    assert [k[:4] for k in kept] == [([3, 5], [3, 4, 5], None, [3, 5])]
    assert sorted(world._segments) == [3, 5] and built[kept[0][4]:] == []  # nothing built after
    lazy = simulate(spec, chunks=chunks).dataset
    for name in ("oracle_r", "pnr", "compactness", "visibility", "detectable"):
        np.testing.assert_array_equal(saved.dataset[name].values, lazy[name].values, err_msg=name)


def test_steps_in_flight_overlap_on_one_pool_of_threads():
    """With ``ahead``, the next step computes while one ends: here a task of the first step waits
    for a task of the second to start, which one step at a time could never give (the wait
    would run out). The steps share one pool (the configured one: every task runs on its
    threads), and a Deferred step is built while the first computes."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import dask

    from minisim._compute import Deferred, compute_in_steps

    second_started, ran_on = threading.Event(), set()

    def first_task():
        ran_on.add(threading.current_thread().name)
        return second_started.wait(30)

    def second_task():
        ran_on.add(threading.current_thread().name)
        second_started.set()
        return True

    built = []
    steps = [(dask.delayed(first_task)(),),
             Deferred(lambda: built.append(second_started.is_set()) or (dask.delayed(second_task)(),)),
             lambda results: (dask.delayed(len)(results),)]
    with ThreadPoolExecutor(2, thread_name_prefix="shared") as pool, dask.config.set(pool=pool):
        got = compute_in_steps(steps, scheduler="threads", ahead=1)
    assert got == [(True,), (True,), (2,)]  # the last step saw both results
    assert built == [False] and ran_on and all(name.startswith("shared") for name in ran_on)


def test_a_save_under_dasks_profiler_computes_one_step_at_a_time(tmp_path):
    """dask's Profiler empties its record of the tasks in progress at each computation's end:
    with it active, a save on threads computes its steps one after the other, and the Profiler
    records every task the save ran (steps in flight lost some, or crashed it with a KeyError)."""
    import threading

    from dask.callbacks import Callback
    from dask.diagnostics import Profiler

    class Count(Callback):
        concurrency_safe = True

        def __init__(self):
            super().__init__()
            self.n, self.lock = 0, threading.Lock()

        def _posttask(self, key, result, dsk, state, worker_id):
            with self.lock:
                self.n += 1

    spec = small_spec(**{"sensor.width_px": 64, "sensor.height_px": 64, "recording.duration_s": 300.0})
    rec = simulate(spec, chunks={"frame": 16})
    with Profiler() as prof, Count() as count:
        rec.save(tmp_path / "p.zarr", scheduler="threads")
    saved = Recording.load(tmp_path / "p.zarr")
    np.testing.assert_array_equal(saved.movie.values, rec.movie.values)
    assert len(prof.results) == count.n > 0


def test_a_failing_step_stops_the_steps_in_flight_before_it_raises():
    """An error in one step in flight: the others start no further task (the first step's
    chain of 20 stops), every task that started has ended when compute_in_steps raises (so
    nothing writes into a store its caller then removes), and the error raised is the step's
    own."""
    import threading

    import dask

    from minisim._compute import compute_in_steps

    failed, lock, log = threading.Event(), threading.Lock(), {"started": 0, "ended": 0}

    def slow(previous):
        with lock:
            log["started"] += 1
        failed.wait(30)
        with lock:
            log["ended"] += 1
        return previous + 1

    def boom():
        failed.set()
        raise ValueError("boom")

    chain = 0
    for _ in range(20):  # a chain: one of its tasks runs at a time
        chain = dask.delayed(slow)(chain)
    steps = [(chain,), (dask.delayed(boom)(),)]
    with dask.config.set(num_workers=2), pytest.raises(ValueError, match="boom"):
        compute_in_steps(steps, scheduler="threads", ahead=1)
    # (the chain's next task may start between boom's start and its error, never all 20)
    assert log["started"] == log["ended"] < 20


def test_steps_waited_for_one_at_a_time_submit_the_next_before_fetching_a_done_ones_results():
    """Where compute_in_steps waits for any step in flight to end (a distributed cluster), a
    step that ends lets the next be submitted before its own results are fetched (a round trip
    to a worker, ~5 ms, that the workers otherwise waited through at each window's end); the
    results still come in order."""
    from minisim._compute import _in_flight

    events = []

    class Handle:
        def __init__(self, i):
            self.i, self.ended = i, False
            events.append(("submit", i))

        def done(self):
            return self.ended

        def failed(self):
            return False

        def result(self):
            events.append(("fetch", self.i))
            return (self.i,)

        def cancel(self):
            pass

    def wait_any(running):  # the oldest step computing ends
        running[0].ended = True

    out = _in_flight([(0,), (1,), (2,), (3,)], 1, lambda objs: Handle(objs[0]), wait_any)
    assert out == [(0,), (1,), (2,), (3,)]
    assert events.index(("submit", 2)) < events.index(("fetch", 0))
    assert events.index(("submit", 3)) < events.index(("fetch", 1))


def test_a_saves_progress_is_one_bar_over_all_its_windows(tmp_path, capsys):
    """Several windows, one bar: its percentages only grow, it reaches 100 % once, at the end."""
    import re

    from minisim.store import MOVIE_WINDOW_FRAMES

    fps = 200.0
    n_frames = 2 * MOVIE_WINDOW_FRAMES + 50
    spec = small_spec(**{"recording.fps": fps, "recording.duration_s": n_frames / fps,
                         "sensor.width_px": 16, "sensor.height_px": 16})
    simulate(spec, chunks={"frame": 64}).save(tmp_path / "r.zarr", scheduler="threads", progress=True)
    out = capsys.readouterr().out
    percents = [int(p) for p in re.findall(r"\| (\d+)% Completed", out)]
    assert percents == sorted(percents) and percents[-1] == 100 and percents.count(100) == 1
    assert out.count("\n") == 1 and out.endswith("\n")


def test_a_small_fields_footprints_are_few_blocks_but_16_unit_chunks_on_disk(tmp_path):
    """A small field's lazy footprints come in blocks of hundreds of units (few tasks, no
    concatenation of a 25 MB A), while the store keeps chunks of FOOTPRINT_CHUNK_UNITS units
    (reading one unit decodes 16, not all): each chunk written holds what the lazy A and
    A_planted hold there, whether the save wrote it from the units' boxes or from blocks."""
    from minisim import truth
    from minisim.store import FOOTPRINT_CHUNK_UNITS

    spec = small_spec(**{"sensor.width_px": 64, "sensor.height_px": 64, "cells.density_per_mm3": 200000.0})
    rec = simulate(spec)
    n = rec.dataset.sizes["unit_id"]
    assert truth.footprint_block_units(spec) > n > 2 * FOOTPRINT_CHUNK_UNITS
    assert rec.dataset["A"].data.numblocks[0] == 1
    lazy = {name: rec.dataset[name].values for name in ("A", "A_planted")}
    plain = rec.dataset.copy()  # the arrays as blocks (no writer from the boxes)
    plain["A"] = plain["A"] * 1.0
    for path, ds in ((tmp_path / "boxes.zarr", None), (tmp_path / "blocks.zarr", plain)):
        if ds is None:
            rec.save(path)
        else:
            Recording(ds, spec).save(path)
        for name, want in lazy.items():
            arr = zarr.open_array(path / name, mode="r")
            assert arr.chunks[0] == FOOTPRINT_CHUNK_UNITS
            assert np.array_equal(arr[...], want), (path.name, name)


def test_a_render_task_writes_consecutive_blocks_of_one_tile(tmp_path):
    """The movie's render-and-write tasks take RENDER_TASK_BLOCKS consecutive blocks of frames of
    one tile each (fewer tasks for a distributed scheduler to drive), a short last run where
    the blocks do not divide; the chunks written are the movie's, and the pixels at the top
    level are counted once each."""
    from minisim.recording import RENDER_TASK_BLOCKS, movie_chunk_writer

    assert RENDER_TASK_BLOCKS > 1
    spec = small_spec(**{"recording.duration_s": 2.3, "sensor.gain_adu_per_e": 60.0})  # 23 frames
    rec = simulate(spec, chunks={"frame": 4, "height": 16, "width": 32})
    movie = rec.movie.data
    assert movie.numblocks == (6, 3, 2)
    target = zarr.create_array(store=tmp_path / "m.zarr", shape=movie.shape, dtype=movie.dtype,
                               chunks=(4, 16, 32))
    top = 2**spec.sensor.bit_depth - 1
    _, of = movie_chunk_writer(spec, movie)
    d = of(target, 0, 23, top)
    layer = dict(d.dask)
    runs = [v[4] for k, v in layer.items() if not str(k[0]).startswith("sum-")]
    # 6 blocks of frames per tile in runs of RENDER_TASK_BLOCKS, for each of the 6 tiles
    per_tile = -(-6 // RENDER_TASK_BLOCKS)
    assert len(runs) == 6 * per_tile
    for run in runs:
        frames = [b[0] for b in run]
        assert frames == list(range(frames[0], frames[0] + len(frames)))  # consecutive
        assert len({b[1:] for b in run}) == 1  # one tile
    assert sorted(b for run in runs for b in run) == sorted(np.ndindex(*movie.numblocks))
    assert d.compute(scheduler="sync") == int((rec.movie.values == top).sum()) > 0
    np.testing.assert_array_equal(target[...], rec.movie.values)


#: Five windows of a 5,136-frame movie in blocks of 32 frames (a short last one), on one tile
#: and on two (:func:`minisim.store.window_task_blocks`).
_WINDOWS = [(0, 1024), (1024, 2048), (2048, 3072), (3072, 4096), (4096, 5136)]
_ONE_TILE = ((32,) * 160 + (16,), (256,), (256,))
_TWO_TILES = ((32,) * 160 + (16,), (128, 128), (256,))


def test_a_small_cluster_renders_each_middle_window_in_one_task_per_tile():
    """On a distributed cluster whose threads one task per tile of each window in flight keeps
    busy (e.g. 2 single-threaded workers), a window between the first and the last two is one
    task per tile (each task costs the cluster CPU, and each worker that renders part of a
    window builds its trace segment); the first and last windows, and every window off a
    cluster or on a larger one, keep RENDER_TASK_BLOCKS blocks per task (None)."""
    from minisim.store import window_task_blocks

    bounds, chunks, two_tiles = _WINDOWS, _ONE_TILE, _TWO_TILES
    assert window_task_blocks(bounds, chunks, None) == [None] * 5
    assert window_task_blocks(bounds, chunks, 2) == [None, 32, 32, None, None]
    assert window_task_blocks(bounds, chunks, 1) == [None, 32, 32, None, None]
    assert window_task_blocks(bounds, chunks, 3) == [None] * 5  # 2 tasks in flight: one idle
    # two tiles: 2 windows in flight give 4 tasks, enough for 4 threads
    assert window_task_blocks(bounds, two_tiles, 4) == [None, 32, 32, None, None]
    assert window_task_blocks(bounds, two_tiles, 8) == [None] * 5
    # too few windows for a middle one
    assert window_task_blocks(bounds[:3], chunks, 2) == [None, None, None]
    assert window_task_blocks(bounds[:1], chunks, 2) == [None]


def test_one_more_step_is_in_flight_where_a_middle_window_is_one_task():
    """Where a small cluster renders each middle window of a one-tile movie in one task (its
    whole step), one more step is in flight, so each worker already holds its next window when
    one ends; with several tiles (a window is then several tasks) or fine tasks everywhere
    (threads, a larger cluster), STEPS_AHEAD."""
    from minisim.store import STEPS_AHEAD, steps_ahead, window_task_blocks

    bounds, one_tile, two_tiles = _WINDOWS, _ONE_TILE, _TWO_TILES
    assert steps_ahead(window_task_blocks(bounds, one_tile, 2), 1) == STEPS_AHEAD + 1
    assert steps_ahead(window_task_blocks(bounds, one_tile, None), 1) == STEPS_AHEAD
    assert steps_ahead(window_task_blocks(bounds, one_tile, 3), 1) == STEPS_AHEAD
    assert steps_ahead(window_task_blocks(bounds, two_tiles, 4), 2) == STEPS_AHEAD


def test_a_windows_per_frame_ground_truth_is_one_task(tmp_path):
    """Each window's step hands the scheduler its per-frame ground truth (its segments, the
    variables' blocks, their chunks written, the moments) as one task, not ~10 tasks a segment
    (each a round trip to a distributed scheduler); the store holds the same values."""
    from dask.callbacks import Callback

    class Graphs(Callback):
        def __init__(self):
            super().__init__()
            self.graphs = []

        def _start(self, dsk):
            self.graphs.append(dict(dsk))

    def name(k):
        return re.sub(r"-[0-9a-f]{8,}.*", "", str(k[0] if isinstance(k, tuple) else k))

    spec = small_spec(**{"recording.fps": 200.0, "recording.duration_s": 6.0,
                         "sensor.width_px": 16, "sensor.height_px": 16})  # 1,200 frames: 2 segments
    rec = simulate(spec, chunks={"frame": 100})
    with Graphs() as g:
        rec.save(tmp_path / "f.zarr", scheduler="sync")
    per_frame = ("C", "dff", "S", "f", "motion", "vessel_dilation")
    before_last = [name(k) for dsk in g.graphs[:-1] for k in dsk]
    for var in (*per_frame, "getitem", "segment"):
        assert var not in before_last  # run inside the window's one task, never on its own
    assert before_last.count("window-truth-0") == 1  # 1,200 frames: one window
    assert not any(n.startswith("write-") for n in before_last)
    # inside it: one write per chunk of each per-frame variable, and the two trace segments
    inside = [name(k) for dsk in g.graphs[:-1] for k in _keys_run(dsk) if k not in dsk]
    writes = sum(int(np.prod(rec.dataset[v].data.numblocks)) for v in per_frame)
    assert sum(n.startswith("write-window-truth-0") for n in inside) == writes == 16
    assert inside.count("segment") == 2
    saved = Recording.load(tmp_path / "f.zarr")
    for var in ("C", "dff", "S", "f", "motion", "vessel_dilation"):
        np.testing.assert_array_equal(saved.dataset[var].values, rec.dataset[var].values)
