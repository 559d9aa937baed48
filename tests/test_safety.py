"""Nothing lost, nothing silently wrong: write aside and swap, overwrite only our own, one writer,
completeness travels, kills mid-overwrite, fail fast, and a clear error for every rough edge."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from helpers import dataset_digests, small_spec

import minisim
from minisim import IncompleteRecordingError, Recording, _safe_io, simulate
from minisim.cli import main, notebooks_main
from minisim.notebooks import copy_notebook

TESTS = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A saved store (seed 11) and the digests of its recording."""
    path = tmp_path_factory.mktemp("safety") / "t.zarr"
    rec = simulate(small_spec())
    rec.save(path)
    return path, dataset_digests(rec.dataset)


def _copy(store, tmp_path, name="t.zarr"):
    import shutil

    dst = tmp_path / name
    shutil.copytree(store[0], dst)
    return dst


# --------------------------------------------------------------------------- 1. onto itself
def test_saving_a_loaded_recording_onto_its_own_path_keeps_its_data(store, tmp_path):
    path = _copy(store, tmp_path)
    rec = Recording.load(path)
    again = rec.save(path, overwrite=True)
    assert int(again.movie.max()) > 0
    assert dataset_digests(Recording.load(path).dataset) == store[1]
    assert Recording.load(path).dataset.attrs["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.zarr"]  # no partial, old or lock left


# --------------------------------------------------------------------------- 2. only our own
def test_overwrite_refuses_a_folder_minisim_did_not_write(tmp_path):
    target = tmp_path / "v"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match=r"thesis\.tex") as e:
        simulate(small_spec()).save(target, overwrite=True)
    assert str(target) in str(e.value) and "not a minisim store" in str(e.value)
    assert (target / "thesis.tex").read_text() == "years of work"


def test_cli_overwrite_refuses_a_folder_minisim_did_not_write(tmp_path, capsys):
    spec_file = tmp_path / "tiny.json"
    small_spec().to_json(spec_file)
    target = tmp_path / "v"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    assert main(["simulate", str(spec_file), "-o", str(target), "--overwrite", "-q"]) == 2
    err = capsys.readouterr().err
    assert "thesis.tex" in err and "simulating" not in err
    assert (target / "thesis.tex").read_text() == "years of work"


@pytest.mark.slow
def test_overwrite_never_replaces_the_current_folder_or_a_parent(store, tmp_path, monkeypatch):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (inner / "keep.txt").write_text("x")
    monkeypatch.chdir(inner)
    for target in (".", "..", str(tmp_path)):
        with pytest.raises(ValueError, match="current folder"):
            simulate(small_spec()).save(target, overwrite=True)
    assert (inner / "keep.txt").read_text() == "x"


def test_notebook_copy_force_refuses_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    assert notebooks_main(["copy", "build_recording", ".", "--force"]) == 2
    assert "current folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_notebook_copy_force_replaces_only_a_copy_it_made(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.md"):
        copy_notebook("build_recording", other, force=True)
    assert (other / "notes.md").read_text() == "mine"
    dest = copy_notebook("build_recording", tmp_path / "nb")
    (dest / "build_recording.ipynb").write_text("changed")
    copy_notebook("build_recording", dest, force=True)
    assert (dest / "build_recording.ipynb").read_text() != "changed"
    assert (dest / _safe_io.NOTEBOOK_MARKER).is_file()


def test_video_overwrite_refuses_an_avi_minisim_did_not_write(tmp_path):
    spec = small_spec()
    out = tmp_path / "v.avi"
    out.write_bytes(b"someone's video")
    with pytest.raises(FileExistsError, match="not a minisim video"):
        minisim.simulate_video(spec, out, overwrite=True, progress=False)
    assert out.read_bytes() == b"someone's video"


# --------------------------------------------------------------------------- 3. completeness
def test_a_recording_loaded_incomplete_cannot_be_saved_as_complete(store, tmp_path):
    path = _copy(store, tmp_path)
    zarr.open_group(str(path), mode="r+").attrs["complete"] = False  # as an interrupted save leaves it
    partial = Recording.load(path, allow_incomplete=True)
    with pytest.raises(IncompleteRecordingError, match="incomplete"):
        partial.save(tmp_path / "n.zarr")
    assert not (tmp_path / "n.zarr").exists()
    simulate(partial.spec).save(tmp_path / "n.zarr")  # the way out the message names
    assert Recording.load(tmp_path / "n.zarr").dataset.attrs["complete"] is True


# --------------------------------------------------------------------------- 5. one writer
@pytest.mark.slow
def test_a_second_writer_is_told_who_holds_the_path(tmp_path):
    path = tmp_path / "t.zarr"
    with _safe_io.exclusive_lock(path), pytest.raises(_safe_io.TargetLockedError) as e:
        simulate(small_spec()).save(path)
    msg = str(e.value)
    assert f"process {os.getpid()}" in msg and socket.gethostname() in msg
    assert not path.exists()
    simulate(small_spec()).save(path)  # the lock went with its holder
    assert not _safe_io.lock_path(path).exists()


def test_a_second_video_writer_is_told_who_holds_the_path(tmp_path):
    out = tmp_path / "v.avi"
    with _safe_io.exclusive_lock(out), pytest.raises(_safe_io.TargetLockedError, match=str(os.getpid())):
        minisim.simulate_video(small_spec(), out, progress=False)
    assert not out.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "t.zarr"
    _safe_io.lock_path(path).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "then", "token": "x"}))
    with pytest.warns(UserWarning, match="stale lock"):
        simulate(small_spec()).save(path)
    assert Recording.load(path).dataset.attrs["complete"] is True


def _lock_held_by(path, pid, **more):
    _safe_io.lock_path(path).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "started": "then", "token": "x", **more}))


def test_a_lock_caught_before_its_record_names_its_holder_once_written(tmp_path):
    """Two writers racing for a path: the loser can find the lock created but its record not yet
    written. It reads it again for a moment, so the error names the holder; a lock that stays
    empty is reported as unreadable."""
    import threading

    path = tmp_path / "r.zarr"
    lock = _safe_io.lock_path(path)
    lock.write_text("")  # created, record to come
    writer = threading.Timer(0.2, _lock_held_by, (path, os.getpid()))
    writer.start()
    try:
        with pytest.raises(_safe_io.TargetLockedError, match=f"being written by process {os.getpid()}"), \
                _safe_io.exclusive_lock(path):
            pass
    finally:
        writer.join()
    lock.write_text("")  # and one whose record never comes
    with pytest.raises(_safe_io.TargetLockedError, match="unreadable"), _safe_io.exclusive_lock(path):
        pass
    assert lock.read_text() == ""  # never removed: not minisim's to judge


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_a_lock_of_a_killed_process_not_yet_reaped_is_taken_over(tmp_path):
    """A SIGKILLed writer whose parent has not reaped it yet is a zombie: it holds its pid but
    writes nothing more, so its lock is stale (a sweep rerun right after killing the last one)."""
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        zombie.kill()
        for _ in range(200):  # not waited for: it stays a zombie until we reap it
            if _safe_io._proc_stat(zombie.pid)[0] == "Z":
                break
            time.sleep(0.01)
        assert _safe_io._proc_stat(zombie.pid)[0] == "Z"
        path = tmp_path / "t.zarr"
        _lock_held_by(path, zombie.pid)
        stale = pytest.warns(UserWarning, match=f"stale lock .* of process {zombie.pid}")
        with stale, _safe_io.exclusive_lock(path):
            assert json.loads(_safe_io.lock_path(path).read_text())["pid"] == os.getpid()
    finally:
        zombie.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_a_lock_whose_pid_now_names_another_process_is_taken_over(tmp_path):
    """The lock records its holder's start time: the same pid started at another time is another
    process (the pid was reused), so the lock is stale; the same pid and start time is live."""
    path = tmp_path / "t.zarr"
    ticks = _safe_io._start_ticks(os.getpid())
    _lock_held_by(path, os.getpid(), start_ticks=ticks)
    live = pytest.raises(_safe_io.TargetLockedError, match=f"process {os.getpid()}")
    with live, _safe_io.exclusive_lock(path):
        pass
    _lock_held_by(path, os.getpid(), start_ticks=ticks - 1)
    with pytest.warns(UserWarning, match="stale lock"), _safe_io.exclusive_lock(path):
        assert json.loads(_safe_io.lock_path(path).read_text())["start_ticks"] == ticks
    assert not _safe_io.lock_path(path).exists()


_SAVE = """
import sys, time
sys.path.insert(0, {tests!r})
from helpers import small_spec
import minisim
from minisim import _safe_io
_safe_io.USE_RENAME_EXCHANGE = {exchange!r}
spec = small_spec(**{{"recording.seed": {seed}, "recording.duration_s": {duration}}})
rec = minisim.simulate(spec)
print("ready", flush=True)
try:
    rec.save({path!r}, overwrite=True, chunks={{"frame": 2}}, scheduler="synchronous")
except _safe_io.TargetLockedError as e:
    print("LOCKED", e, flush=True)
    sys.exit(3)
print("saved", flush=True)
"""


def _writer(path, seed, duration=4.0, exchange=True):
    code = _SAVE.format(tests=TESTS, path=str(path), seed=seed, duration=duration, exchange=exchange)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_two_writers_on_one_path_leave_one_complete_store(store, tmp_path):
    path = _copy(store, tmp_path)
    procs = [_writer(path, seed) for seed in (21, 22)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert set(codes) <= {0, 3} and 0 in codes, outs
    for code, out in zip(codes, outs):
        if code == 3:
            assert "being written by process" in out
    rec = Recording.load(path)  # a root zarr.json, complete, one writer's seed
    assert rec.dataset.attrs["complete"] is True
    winners = {seed for seed, code in zip((21, 22), codes) if code == 0}
    assert rec.spec.recording.seed in winners
    assert rec.verify().ok


# --------------------------------------------------------------------------- kill -9 mid-overwrite
def _wait_ready(proc):
    line = proc.stdout.readline()
    assert line.startswith("ready"), line


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False])
def test_a_kill_during_an_overwrite_leaves_the_old_store_or_the_new_one(store, tmp_path, exchange):
    """kill -9 at several moments of an overwrite: the path always loads, complete, old or new."""
    new_digests = dataset_digests(simulate(small_spec(**{"recording.seed": 21,
                                                         "recording.duration_s": 4.0})).dataset)
    rnd = random.Random(1234)
    outcomes = set()
    for k, delay_s in enumerate([0.0, *sorted(rnd.uniform(0.0, 6.0) for _ in range(3)), 60.0]):
        path = _copy(store, tmp_path, f"k{k}.zarr")
        proc = _writer(path, 21, exchange=exchange)
        _wait_ready(proc)
        try:
            proc.wait(delay_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        rec = Recording.load(path)
        assert rec.dataset.attrs["complete"] is True
        got = dataset_digests(rec.dataset)
        if rec.spec.recording.seed == 11:
            assert got == store[1]
            outcomes.add("old")
        else:
            assert got == new_digests
            outcomes.add("new")
        assert rec.verify().ok
    assert "old" in outcomes and "new" in outcomes


def test_a_swap_interrupted_between_its_renames_is_undone_on_load(store, tmp_path):
    """Where two renames are needed, a kill between them leaves <path>.old-<id>: load restores it."""
    path = _copy(store, tmp_path)
    os.rename(path, path.with_name(path.name + ".old-abc"))
    partial = _copy(store, tmp_path, "t.zarr.partial-def")
    rec = Recording.load(path)
    assert dataset_digests(rec.dataset) == store[1]
    assert not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.zarr"]


# --------------------------------------------------------------------------- 6. fail fast
def test_a_recording_too_long_for_the_disk_is_refused_before_any_work(tmp_path, capsys):
    from minisim import render

    spec_file = tmp_path / "long.json"
    small_spec(**{"recording.duration_s": 86400.0, "recording.fps": 1000.0,
                  "sensor.width_px": 600, "sensor.height_px": 600}).to_json(spec_file)
    before = list(render._WORLDS)
    assert main(["simulate", str(spec_file), "-o", str(tmp_path / "o.zarr"), "-q"]) == 2
    captured = capsys.readouterr()
    assert "recording.duration_s=86400 x recording.fps=1000 = 86,400,000 frames" in captured.err
    assert "GB free" in captured.err and "simulating" not in captured.out
    assert list(render._WORLDS) == before  # no scene was built
    assert not (tmp_path / "o.zarr").exists()


def test_a_recording_that_cannot_fit_in_memory_is_refused_naming_its_arrays():
    from minisim.recording import check_resources, resource_plan

    spec = minisim.presets.scope("miniscope_v4_ca1")
    need = resource_plan(spec)["total_bytes"]
    check_resources(spec, available_bytes=10 * need)  # fits
    with pytest.raises(ValueError, match=r"recording\.duration_s=.*recording\.fps=") as e:
        check_resources(spec, available_bytes=need)   # 80 % of it does not
    assert "GB of memory available" in str(e.value)
    assert "spike table" in str(e.value) or "traces" in str(e.value) or "C (" in str(e.value)


def test_an_absurd_cell_count_is_refused_before_placement():
    from minisim.recording import check_resources

    spec = small_spec(**{"cells.density_per_mm3": 5e5, "cells.band_thickness_um": 3000.0,
                         "sensor.width_px": 600, "sensor.height_px": 600})
    with pytest.raises(ValueError, match="density_per_mm3=500000") as e:
        check_resources(spec)
    assert "cells would be placed" in str(e.value)


@pytest.mark.slow
def test_resource_plan_estimates_the_cells_a_scene_places():
    from minisim.recording import resource_plan

    spec = minisim.presets.scope("miniscope_v4_ca1").with_updates({"recording.duration_s": 2.0})
    placed = simulate(spec).dataset.sizes["unit_id"]
    plan = resource_plan(spec)
    assert 0.8 * placed <= plan["units"] <= 1.25 * placed
    assert plan["movie_bytes"] == 2 * plan["frames"] * 608 * 608


# --------------------------------------------------------------------------- 7. rough edges (CLI)
@pytest.fixture
def spec_file(tmp_path):
    f = tmp_path / "tiny.json"
    small_spec().to_json(f)
    return f


@pytest.mark.parametrize("workers", ["-1", "0"])
def test_sweep_workers_below_one_is_a_clear_error(tmp_path, capsys, workers):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("base: generic_1p\noutput: out\n")
    assert main(["sweep", str(sweep), "--workers", workers, "-q"]) == 2
    assert f"--workers {workers} must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_malformed_sweep_yaml_is_a_clear_error(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("base: generic_1p\ngrid: {cells.density_per_mm3: [1, 2\n")
    assert main(["sweep", str(sweep), "-q"]) == 2
    err = capsys.readouterr().err
    assert "is not valid YAML" in err and "line" in err and "Traceback" not in err


def test_a_sweep_base_pointing_at_another_file_never_echoes_it(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:TOPSECRET\n")
    (tmp_path / "d").mkdir()
    sweep = tmp_path / "d" / "s.yaml"
    sweep.write_text("base: ../secret.txt\noutput: out\n")
    assert main(["sweep", str(sweep), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not a valid Spec JSON file" in err and "TOPSECRET" not in err and "root:x" not in err


def test_chunk_frames_zero_is_a_clear_error(spec_file, tmp_path, capsys):
    assert main(["simulate", str(spec_file), "-o", str(tmp_path / "o.zarr"), "--chunk-frames", "0",
                 "-q"]) == 2
    assert "--chunk-frames 0 must be a whole number >= 1" in capsys.readouterr().err


def test_a_bad_scheduler_is_reported_before_the_scene_is_built(spec_file, tmp_path, capsys):
    assert main(["simulate", str(spec_file), "-o", str(tmp_path / "o.zarr"), "--scheduler", "fast",
                 "-q"]) == 2
    captured = capsys.readouterr()
    assert "--scheduler 'fast'" in captured.err and "simulating" not in captured.out
    assert not (tmp_path / "o.zarr").exists()


def test_a_bad_output_folder_is_reported_before_the_scene_is_built(spec_file, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "sub" / "o.zarr"
    assert main(["simulate", str(spec_file), "-o", str(out), "-q"]) == 2
    captured = capsys.readouterr()
    assert "is a file" in captured.err and "simulating" not in captured.out
    fresh = tmp_path / "new" / "deeper" / "o.zarr"   # a folder that does not exist yet is made
    simulate(small_spec()).save(fresh)
    assert Recording.load(fresh).dataset.attrs["complete"] is True


def test_a_long_sweep_grid_shows_progress_while_it_is_validated(tmp_path, capsys):
    from minisim.sweep import PROGRESS_POINTS, load_sweep

    n = PROGRESS_POINTS
    sw = load_sweep({"base": "generic_1p", "grid": {"recording.seed": list(range(n))}}, root=tmp_path)
    assert len(sw) == n
    assert "validating sweep grid" in capsys.readouterr().err
    load_sweep({"base": "generic_1p", "grid": {"recording.seed": list(range(n))}}, root=tmp_path,
               progress=False)
    assert "validating" not in capsys.readouterr().err


def test_studio_load_spec_of_a_missing_file_is_a_clear_message(tmp_path):
    from minisim.studio import Studio

    studio = Studio()
    try:
        studio.spec_path.value = str(tmp_path / "missing.json")
        studio.load_button.click()
        status = studio.io_status.value
        assert "no file" in status and "missing.json" in status
    finally:
        studio.close()


def test_lock_and_partial_names_never_match_a_sweep_store_glob(tmp_path):
    target = tmp_path / "rec-0123.zarr"
    names = [_safe_io.lock_path(target).name, _safe_io.write_aside(target).name]
    assert not [n for n in names if Path(n).match("rec-*.zarr")]


def test_simulate_and_simulate_video_refuse_an_absurd_cell_count_before_building_the_scene(
        tmp_path, monkeypatch):
    from minisim import render

    built = []
    real = render.build_world
    monkeypatch.setattr(render, "build_world", lambda *a, **k: built.append(1) or real(*a, **k))
    spec = small_spec(**{"cells.density_per_mm3": 5e5, "cells.band_thickness_um": 3000.0,
                         "sensor.width_px": 600, "sensor.height_px": 600})
    with pytest.raises(ValueError, match="cells would be placed"):
        simulate(spec)
    with pytest.raises(ValueError, match="cells would be placed"):
        minisim.simulate_video(spec, tmp_path / "big.avi", progress=False)
    assert built == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # the same spec, a sane density, does build its scene: the counter counts
    minisim.simulate_video(small_spec(), tmp_path / "ok.avi", progress=False)
    assert built == [1]
