"""Dataset sweeps: same bytes as single saves on a real cluster, resumable, failure-tolerant."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed.diagnostics.plugin import SchedulerPlugin
from helpers import dataset_digests, small_spec

import minisim
from minisim import sweep as msweep
from minisim.recording import Recording, is_complete, simulate

REPO = Path(__file__).resolve().parents[1]
TINY = {"sensor": {"width_px": 48, "height_px": 40}, "recording": {"duration_s": 1.0, "fps": 10}}
#: 4 recordings that differ in frame count (fps) and unit count (seed).
SWEEP = {"base": TINY, "grid": {"recording.fps": [10, 20]}, "seeds": [0, 1], "output": "out"}


def assert_same_store(path: Path, ref: Path) -> None:
    """Movie, every ground-truth array and the spec attr are identical."""
    a, b = Recording.load(path).dataset, Recording.load(ref).dataset
    assert sorted(a.variables) == sorted(b.variables)
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert zarr.open_group(str(path), mode="r").attrs["spec"] == zarr.open_group(str(ref), mode="r").attrs["spec"]


def _two_workers():
    """A client of a new 2-worker LocalCluster (processes, one thread each)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def client():
    yield from _two_workers()


@pytest.fixture(scope="module")
def swept(client, tmp_path_factory):
    """The 4-recording sweep rendered on the cluster, and each recording saved alone (threads)."""
    root = tmp_path_factory.mktemp("sweep")
    sw = msweep.load_sweep(SWEEP, root=root)
    manifest = msweep.run(sw, client=client, progress=False)
    refs = root / "refs"
    for pt in sw.points:
        simulate(pt.spec).save(refs / pt.store_name, scheduler="threads")
    return sw, manifest, refs


@pytest.mark.slow
def test_sweep_gives_the_same_bytes_as_single_saves(swept):
    sw, manifest, refs = swept
    assert len(sw) == 4 and list(manifest["status"]) == ["done"] * 4
    for pt in sw.points:
        assert pt.store_name == f"rec-{msweep.spec_hash(pt.spec)}.zarr"
        assert_same_store(sw.output / pt.store_name, refs / pt.store_name)


@pytest.mark.slow
def test_manifest_has_one_row_per_recording(swept):
    sw, _, _ = swept
    m = msweep.read_manifest(sw.output)
    assert list(m.columns) == ["hash", "store", "recording.fps", "seed", "status", "mode", "size_bytes",
                               "seconds", "error"]
    assert list(m["mode"]) == ["whole"] * 4  # tiny recordings run whole on one worker each
    assert sorted(m["hash"]) == sorted(pt.hash for pt in sw.points)
    assert sorted(m["recording.fps"]) == ["10", "10", "20", "20"] and sorted(m["seed"]) == ["0", "0", "1", "1"]
    assert all(int(s) > 0 for s in m["size_bytes"]) and all(float(s) > 0 for s in m["seconds"])


@pytest.mark.slow
def test_spread_recordings_give_the_same_bytes(client, swept, tmp_path):
    """whole_below_mb=0 spreads every recording's chunks over the workers: same stores."""
    _, _, refs = swept
    sw = msweep.load_sweep({**SWEEP, "chunks": {"frame": 3, "height": 17, "width": 48}}, root=tmp_path)
    m = msweep.run(sw, client=client, progress=False, whole_below_mb=0)
    assert list(m["mode"]) == ["spread"] * 4 and list(m["status"]) == ["done"] * 4
    for pt in sw.points:
        assert_same_store(sw.output / pt.store_name, refs / pt.store_name)


@pytest.fixture
def own_client():
    """A 2-worker LocalCluster of the test's own: a test that kills a worker leaves the
    module's cluster alone (its nanny's restart of the killed worker once took over 60 s on a
    busy machine, and every later test waited for it)."""
    yield from _two_workers()


@pytest.mark.slow
@pytest.mark.parametrize("whole_below_mb", [msweep.WHOLE_BELOW_MB, 0.0], ids=["whole", "spread"])
def test_killed_worker_still_completes_every_store(own_client, swept, tmp_path, whole_below_mb):
    client = own_client
    _, _, refs = swept
    sw = msweep.load_sweep(SWEEP, root=tmp_path)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        m=msweep.run(sw, client=client, progress=False, whole_below_mb=whole_below_mb)))
    t.start()
    killed = False
    deadline = time.monotonic() + 60
    while not killed and t.is_alive() and time.monotonic() < deadline:
        busy = [addr for addr, keys in client.processing().items() if keys]
        if busy:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    assert killed, "no worker was busy while the sweep ran"
    t.join(120)
    assert not t.is_alive()
    assert list(result["m"]["status"]) == ["done"] * 4
    for pt in sw.points:
        assert_same_store(sw.output / pt.store_name, refs / pt.store_name)


def _mtimes(store: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_rerun_skips_finished_stores_and_redoes_incomplete_ones(client, swept, tmp_path):
    sw0, _, refs = swept
    shutil.copytree(sw0.output, tmp_path / "out")
    sw = msweep.load_sweep(SWEEP, root=tmp_path)
    broken, *finished = [sw.output / pt.store_name for pt in sw.points]
    zarr.open_group(str(broken), mode="r+").attrs["complete"] = False   # as if the save was killed
    assert not is_complete(broken)
    before = {p: _mtimes(p) for p in finished}
    m = msweep.run(sw, client=client, progress=False)
    status = dict(zip(m["store"], m["status"]))
    assert status[broken.name] == "done" and all(status[p.name] == "skipped" for p in finished)
    assert {p: _mtimes(p) for p in finished} == before
    assert is_complete(broken)
    assert_same_store(broken, refs / broken.name)
    assert sorted(p.name for p in sw.output.glob("rec-*")) == sorted(pt.store_name for pt in sw.points)


@pytest.mark.slow
def test_a_recording_waits_for_a_lock_whose_writer_is_exiting(tmp_path, monkeypatch):
    """A store still locked by a writer that lets go a moment later (a killed worker exiting)
    is written once the lock is free; a lock held past the wait fails it, naming the holder."""
    from minisim import _safe_io
    from minisim.sweep import runner

    spec_json = minisim.Spec.model_validate(TINY).model_dump_json()
    store = tmp_path / "rec.zarr"
    held, release = threading.Event(), threading.Event()

    def holder():
        with _safe_io.exclusive_lock(store):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    with monkeypatch.context() as m:
        m.setattr(runner, "LOCK_WAIT_S", 0.5)
        with pytest.raises(_safe_io.TargetLockedError, match="being written by process"):
            runner._save_whole(spec_json, str(store), None)
    assert not store.exists()
    threading.Timer(1.0, release.set).start()
    size = runner._save_whole(spec_json, str(store), None)  # waits (LOCK_WAIT_S) for the lock
    t.join()
    assert size > 0 and is_complete(store)


def test_failing_recording_is_recorded_and_the_rest_complete(client, tmp_path):
    sw = msweep.load_sweep({"base": TINY, "seeds": [3, 4, 5], "output": "out"}, root=tmp_path)
    sw.output.mkdir()
    blocked = sw.output / sw.points[1].store_name
    blocked.write_text("not a store")
    m = msweep.run(sw, client=client, progress=False)
    row = m.set_index("store").loc[blocked.name]
    assert row["status"] == "failed" and "FileExistsError" in row["error"] and "not a zarr store" in row["error"]
    assert blocked.read_text() == "not a store"
    others = [pt for pt in sw.points if pt.store_name != blocked.name]
    assert all(is_complete(sw.output / pt.store_name) for pt in others)
    assert sorted(m["status"]) == ["done", "done", "failed"]


@pytest.mark.parametrize("grid, words", [
    ({"optics.na": [0.3, 1.5]}, ["optics.na=1.5", "<= 1.0"]),
    ({"optics.numerical_aperture": [0.3]}, ["optics.numerical_aperture"]),
    ({"recording.fps": [10, -1]}, ["recording.fps=-1", "> 0.0"]),
])
def test_invalid_grid_point_fails_before_any_work(tmp_path, grid, words):
    with pytest.raises(msweep.SweepError) as e:
        msweep.load_sweep({"base": TINY, "grid": grid, "output": "out"}, root=tmp_path)
    for w in words:
        assert w in str(e.value)
    assert not (tmp_path / "out").exists()


def test_sweep_file_rejects_unknown_keys_and_bases(tmp_path):
    with pytest.raises(msweep.SweepError, match="grids"):
        msweep.load_sweep({"base": TINY, "grids": {}}, root=tmp_path)
    with pytest.raises(msweep.SweepError, match="neither a preset"):
        msweep.load_sweep({"base": "no_such_preset"}, root=tmp_path)


def test_base_from_spec_file_and_yaml(tmp_path):
    minisim.Spec.model_validate(TINY).to_json(tmp_path / "spec.json")
    (tmp_path / "s.yaml").write_text("base: spec.json\nset: {cells.density_per_mm3: 1000}\n"
                                     "grid: {motion.enabled: [false, true]}\nseeds: [1, 2]\noutput: o\n")
    sw = msweep.load_sweep(tmp_path / "s.yaml")
    assert len(sw) == 4 and sw.output == tmp_path / "o"
    assert {pt.spec.cells.density_per_mm3 for pt in sw.points} == {1000.0}
    assert {(pt.params["motion.enabled"], pt.seed) for pt in sw.points} == {(False, 1), (False, 2), (True, 1),
                                                                              (True, 2)}


def test_example_sweep_in_cluster_folder_is_valid():
    sw = msweep.load_sweep(REPO / "cluster" / "sweep-ca1.yaml")
    assert len(sw) == 12 and sw.output == REPO / "cluster" / "ca1-sweep"
    assert {pt.spec.sensor.width_px for pt in sw.points} == {608}


@pytest.mark.slow
def test_open_sweep_is_lazy_and_labels_recordings(swept):
    import dask.array as da

    sw, _, refs = swept
    ds = minisim.open_sweep(sw.output)
    assert ds.sizes["recording"] == 4
    assert isinstance(ds["movie"].data, da.Array)
    assert ds.sizes["frame"] == 20 and sorted(ds["n_frames"].values) == [10, 10, 20, 20]
    for pt in sw.points:
        one = ds.sel(recording=ds["hash"] == pt.hash).squeeze("recording")
        ref = Recording.load(refs / pt.store_name).dataset
        T, n = ref.sizes["frame"], ref.sizes["unit_id"]
        assert float(one["recording.fps"]) == pt.spec.recording.fps and int(one["seed"]) == pt.seed
        np.testing.assert_array_equal(one["movie"].values[:T], ref["movie"].values)
        assert (one["movie"].values[T:] == 0).all()
        np.testing.assert_array_equal(one["C"].values[:n, :T], ref["C"].values)
        np.testing.assert_array_equal(one["unit_id"].values[:n], ref["unit_id"].values)
        assert (one["unit_id"].values[n:] == -1).all()


def test_job_scripts_from_cluster_configs():
    cfg = REPO / "cluster" / "jobqueue.yaml"
    with msweep.jobqueue_cluster("slurm", config=cfg) as cluster:
        script = cluster.job_script()
    for line in ["#SBATCH -J minisim-worker", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=6G",
                 "#SBATCH -t 04:00:00", "export OMP_NUM_THREADS=1", "-m distributed.cli.dask_worker",
                 "--nthreads 2", "--memory-limit 6.00GiB", "--death-timeout 120", "--local-directory /tmp",
                 "--preload minisim.sweep.worker_setup"]:
        assert line in script, (line, script)
    with msweep.jobqueue_cluster("pbs", config=cfg, queue="workq") as cluster:
        script = cluster.job_script()
    for line in ["#PBS -N minisim-worker", "#PBS -q workq", "#PBS -l select=1:ncpus=2:mem=6144MB",
                 "#PBS -l walltime=04:00:00", "-m distributed.cli.dask_worker", "--nthreads 2",
                 "--preload minisim.sweep.worker_setup"]:
        assert line in script, (line, script)


def _slurm_ready() -> str | None:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return "SLURM is not installed (no sbatch/sinfo)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed: {e}"
    if out.returncode != 0 or not {"idle", "mix", "alloc"} & set(out.stdout.split()):
        return f"no SLURM node up (slurmctld/slurmd not running?): {out.stderr.strip() or out.stdout.strip()}"
    return None


@pytest.mark.slow
def test_sweep_through_a_real_slurm(tmp_path, swept):
    why = _slurm_ready()
    if why:
        pytest.skip(why)
    _, _, refs = swept
    (tmp_path / "jobqueue.yaml").write_text(
        "jobqueue:\n  slurm:\n    name: minisim-test\n    cores: 1\n    processes: 1\n    memory: 2GiB\n"
        f"    walltime: '00:10:00'\n    local-directory: {tmp_path}\n    log-directory: {tmp_path / 'logs'}\n")
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SWEEP, "grid": {"recording.fps": [10]}}))
    m = msweep.run(tmp_path / "s.yaml", scheduler="slurm", workers=1, progress=False)
    assert list(m["status"]) == ["done", "done"]
    for store in m["store"]:
        assert_same_store(tmp_path / "out" / store, refs / store)


@pytest.mark.slow
def test_cli_sweep_runs_and_resumes(tmp_path):
    """`minisim sweep FILE` in a fresh process (its own LocalCluster), then again: all skipped."""
    import sys

    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": TINY, "seeds": [7], "output": "out"}))
    cmd = [sys.executable, "-m", "minisim.cli", "sweep", str(tmp_path / "s.yaml"), "--workers", "1"]
    first = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "1 done, 0 skipped, 0 failed" in first.stderr
    again = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 done, 1 skipped, 0 failed" in again.stderr
    (store,) = (tmp_path / "out").glob("rec-*.zarr")
    assert is_complete(store)


def _group_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` that still run (zombies left out), read from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _, group = text[text.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _wait_until_group_is_gone(pgid: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_members(pgid), f"processes of the killed group {pgid} still run"


@pytest.mark.slow
def test_killed_sweep_process_resumes_without_redoing_finished_stores(client, swept, tmp_path):
    """SIGKILL the whole `minisim sweep` process group after its first store; a rerun skips the
    finished stores untouched, redoes the rest, and every store is the single-save one."""
    import sys

    import yaml

    _, _, refs = swept
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    cmd = [sys.executable, "-m", "minisim.cli", "sweep", str(tmp_path / "s.yaml"), "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "manifest.csv").is_file() and "done" in set(msweep.read_manifest(out)["status"]):
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _wait_until_group_is_gone(proc.pid)  # its dask worker may die a moment after the CLI
    first = msweep.read_manifest(out)
    finished = [out / s for s, st in zip(first["store"], first["status"]) if st == "done"]
    assert 1 <= len(finished) < 4, list(first["status"])
    before = {p: _mtimes(p) for p in finished}
    m = msweep.run(tmp_path / "s.yaml", client=client, progress=False)
    status = dict(zip(m["store"], m["status"]))
    assert all(status[p.name] == "skipped" for p in finished)
    assert sorted(status.values()) == sorted(["skipped"] * len(finished) + ["done"] * (4 - len(finished)))
    assert {p: _mtimes(p) for p in finished} == before
    for store in m["store"]:
        assert_same_store(out / store, refs / store)


class _InFlight(SchedulerPlugin):
    """A scheduler plugin that counts the sweep's whole-recording tasks processing at once."""

    name = "minisim-in-flight"

    def __init__(self):
        self.now = self.most = 0

    def transition(self, key, start, finish, *args, **kwargs):
        if not str(key).startswith("minisim-sweep-"):
            return
        if finish == "processing":
            self.now += 1
            self.most = max(self.most, self.now)
        elif start == "processing":
            self.now -= 1


@pytest.mark.slow
@pytest.mark.parametrize("bound", [1, 2])
def test_recordings_in_flight_are_bounded(client, bound, tmp_path):
    """max_in_flight caps how many recordings the cluster holds at once (seen by the scheduler)."""
    plugin = _InFlight()
    scheduler = client.cluster.scheduler
    scheduler.add_plugin(plugin)
    try:
        sw = msweep.load_sweep(SWEEP, root=tmp_path)
        m = msweep.run(sw, client=client, progress=False, max_in_flight=bound)
    finally:
        scheduler.remove_plugin(name=plugin.name)
    assert list(m["status"]) == ["done"] * 4
    assert plugin.most == bound  # 4 recordings, 2 workers: the bound is reached and never passed
    assert plugin.now == 0


def _worker_state() -> dict:
    import sys
    import tempfile
    from pathlib import Path

    from minisim.scene import _kernels

    # a kernel numba has loaded or compiled holds its signatures
    return {"minisim": "minisim.recording" in sys.modules,
            "kernels": len(_kernels._assemble_tissue.signatures),
            "zarr": "zarr.codecs" in sys.modules,
            "left": sorted(p.name for p in Path(tempfile.gettempdir()).glob("minisim-warm-*"))}


def test_a_sweeps_local_workers_start_with_minisim_its_kernels_and_zarr_loaded():
    """The LocalCluster a sweep starts preloads minisim.sweep.worker_setup: before any task,
    each worker has imported minisim, loaded the tissue kernel (which only a render loads) and
    saved a tiny recording once (zarr and its codecs imported: a fresh worker's first save task
    waited ~0.4 s for them), and has left no folder of that save behind."""
    from minisim.sweep.cluster import connect

    with connect("local", 2) as (client, n):
        states = client.run(_worker_state)
    assert n == 2 and len(states) == 2
    assert all(s["minisim"] and s["kernels"] >= 1 and s["zarr"] and not s["left"]
               for s in states.values()), states


def _periodic_settings(dask_worker) -> tuple:
    import dask

    return (dask_worker.memory_manager.memory_monitor_interval, dask_worker._tick_interval,
            dask.config.get("distributed.worker.profile.interval"))


def test_a_sweeps_local_cluster_checks_itself_less_often_unless_the_user_said_otherwise():
    """The LocalCluster a sweep starts runs its periodic checks (event-loop health, memory,
    system monitor, profiler) at LOCAL_CLUSTER_CONFIG's slower intervals, which leave the
    workers the CPU of a small machine; a setting in the user's own dask config stays theirs."""
    import dask

    from minisim.sweep.cluster import LOCAL_CLUSTER_CONFIG, connect

    assert LOCAL_CLUSTER_CONFIG["distributed.admin.tick.interval"] == "200ms"
    with dask.config.set({"distributed.admin.tick.interval": "50ms"}), connect("local", 1) as (client, _):
        (worker,) = client.run(_periodic_settings).values()
        scheduler = client.cluster.scheduler
        monitor_ms = scheduler.periodic_callbacks["monitor"].callback_time
    memory_s, tick_s, profile = worker
    assert profile == "100ms"  # distributed's default: 10 ms
    assert memory_s == 0.5  # distributed's default: 0.1 s
    assert tick_s == 0.05 and scheduler._tick_interval == 0.05  # the user's, not 0.2 s
    assert monitor_ms == 2000  # distributed's default: 500 ms


def _wait_for(name: str, ended: str | None = None) -> bool:
    """Task: wait (at most 20 s) for the distributed Event ``name``; set ``ended`` after."""
    from distributed import Event

    seen = Event(name).wait(20)
    if ended:
        Event(ended).set()
    return seen


def _set(name: str) -> bool:
    from distributed import Event

    Event(name).set()
    return True


def _fail() -> None:
    raise ValueError("step failed")


def test_on_a_cluster_a_step_that_ends_first_lets_the_next_one_begin(client):
    """Steps on a distributed cluster (``ahead`` 1): at most two compute at once, counted by
    the steps still computing, not from the oldest one not yet done: when the second step
    ends while the first still computes, the third begins at once (here the first waits for
    the third to start, which would never come if the third waited for the first), and the
    results still come in order."""
    import uuid

    import dask

    from minisim._compute import compute_in_steps

    go = f"third-began-{uuid.uuid4().hex}"
    steps = [(dask.delayed(_wait_for)(go),), (dask.delayed(len)("ab"),), (dask.delayed(_set)(go),)]
    assert compute_in_steps(steps, scheduler=client, ahead=1) == [(True,), (2,), (True,)]


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_a_step_after_some_steps_is_built_while_the_others_still_compute(client, where):
    """compute_in_steps' After: a step that reads only the first step's result is built and
    runs while the second still computes (here the second waits for the third, which would
    never begin if it waited for every earlier step), and the results come in order."""
    import threading
    import uuid

    import dask

    from minisim._compute import After, compute_in_steps

    if where == "cluster":
        go = f"after-began-{uuid.uuid4().hex}"
        wait, go_on = dask.delayed(_wait_for)(go), lambda: dask.delayed(_set)(go)
    else:
        event = threading.Event()
        wait, go_on = dask.delayed(event.wait)(20), lambda: dask.delayed(_set_event)(event)
    steps = [(dask.delayed(len)("abc"),), (wait,),
             After([0], lambda results: (dask.delayed(len)("x" * results[0][0]), go_on()))]
    results = compute_in_steps(steps, scheduler=client if where == "cluster" else "threads", ahead=2)
    assert results == [(3,), (True,), (3, True)]


def _set_event(event) -> bool:
    event.set()
    return True


def test_on_a_cluster_a_failing_step_is_raised_while_an_earlier_one_computes(client):
    """A step that fails while an earlier one still computes is raised at once (the earlier one
    cancelled), not after the earlier one ends."""
    import uuid

    import dask
    from distributed import Event

    from minisim._compute import compute_in_steps

    release, ended = f"release-{uuid.uuid4().hex}", f"ended-{uuid.uuid4().hex}"
    steps = [(dask.delayed(_wait_for)(release, ended),), (dask.delayed(_fail)(),), (dask.delayed(len)("a"),)]
    try:
        with pytest.raises(ValueError, match="step failed"):
            compute_in_steps(steps, scheduler=client, ahead=1)
        assert not Event(ended, client=client).is_set()  # the first step was still waiting
    finally:
        Event(release, client=client).set()


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_a_kept_result_is_a_future_on_a_cluster_and_a_value_elsewhere(client, where):
    """compute_in_steps' Kept: on a cluster the step's result is the Future (its value left on
    the worker that made it) and a later step's task reads it there; on threads the value."""
    import dask
    from distributed import Future

    from minisim._compute import Kept, compute_in_steps

    big = dask.delayed(np.arange)(100_000)
    steps = [(Kept(big), dask.delayed(len)("abc")),
             lambda results: (dask.delayed(np.sum)(results[0][0]),)]
    results = compute_in_steps(steps, scheduler=client if where == "cluster" else "threads", ahead=1)
    assert results[0][1] == 3 and results[1][0] == np.arange(100_000).sum()
    if where == "cluster":
        assert isinstance(results[0][0], Future) and results[0][0].status == "finished"
    else:
        np.testing.assert_array_equal(results[0][0], np.arange(100_000))


class _Dependencies(SchedulerPlugin):
    """A scheduler plugin that records, for each task that starts processing, the names of the
    tasks it reads."""

    name = "minisim-dependencies"

    def __init__(self, scheduler):
        self.scheduler, self.seen = scheduler, {}

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            self.seen[key] = {_task_name(d.key) for d in self.scheduler.tasks[key].dependencies}


def _task_name(key) -> str:
    import re

    return re.sub(r"-[0-9a-f]{8,}.*", "", str(key[0] if isinstance(key, tuple) else key))


def test_on_a_cluster_the_oracle_reads_the_footprint_cores_where_they_were_made(client, tmp_path):
    """The last step of a save on a cluster reads the footprint cores (megabytes for V4) from
    the worker that made them: each oracle task and the metrics read the task that joins them,
    not a copy fetched to the client and sent back inside every task; the activity metrics are
    those of a save on threads."""
    plugin = _Dependencies(client.cluster.scheduler)
    client.cluster.scheduler.add_plugin(plugin)
    try:
        spec = small_spec(**{"recording.duration_s": 4.0})
        spread = simulate(spec).save(tmp_path / "cluster.zarr", scheduler=client)
    finally:
        client.cluster.scheduler.remove_plugin(name=plugin.name)
    ref = simulate(spec).save(tmp_path / "threads.zarr", scheduler="threads")
    for name in ("oracle_r", "pnr", "compactness", "visibility", "detectable"):
        np.testing.assert_array_equal(spread.dataset[name].values, ref.dataset[name].values, err_msg=name)
    readers = [(_task_name(k), deps) for k, deps in plugin.seen.items()
               if _task_name(k) in ("oracle-batch", "activity-metrics")]
    assert {name for name, _ in readers} == {"oracle-batch", "activity-metrics"}
    assert all("cores" in deps for _, deps in readers), readers


def test_a_long_saves_oracle_reads_its_early_runs_beside_later_windows(client, tmp_path):
    """On a cluster, the oracle's runs that early windows wrote are computed in the steps of
    windows three later (store: ``oracle_at``), and the peak-to-noise ratios beside the first
    of them; the last step computes the other runs. The activity metrics are those of the
    Recording computed without a save (its oracle renders its own frames)."""
    from collections import Counter

    from distributed import get_task_stream

    import minisim.store as mstore

    assert mstore.MOVIE_WINDOW_FRAMES == 1024
    # 5,200 frames, windows of 1,024: the oracle's runs of 32 frames begin at 0, 1723, 3445 and
    # 5168; the first two end in windows 0 and 1, whose steps are done before windows 3 and 4's
    spec = small_spec(**{"recording.fps": 200.0, "recording.duration_s": 26.0,
                         "sensor.width_px": 16, "sensor.height_px": 16})
    chunks = {"frame": 64, "height": 16, "width": 16}
    with get_task_stream(client) as ts:
        saved = simulate(spec, chunks=chunks).save(tmp_path / "cluster.zarr", scheduler=client)
    names = Counter(_task_name(x["key"]) for x in ts.data)
    assert (names["oracle-task"], names["oracle-batch"], names["pnr-early"], names["pnr"]) == (4, 4, 1, 0)
    # each early one ran before the last window's render began (frames 4,096 on: block 64 on)
    last_window = min(x["startstops"][0]["start"] for x in ts.data
                      if _task_name(x["key"]) == "render-store" and x["key"][1] >= 64)
    assert all(x["startstops"][-1]["stop"] <= last_window for x in ts.data
               if _task_name(x["key"]) == "oracle-task")
    lazy = simulate(spec, chunks=chunks).dataset
    for name in ("oracle_r", "pnr", "compactness", "visibility", "detectable"):
        np.testing.assert_array_equal(saved.dataset[name].values, lazy[name].values, err_msg=name)


def test_a_long_recording_on_two_workers_renders_a_middle_window_in_one_task(client, tmp_path):
    """A save on a 2-worker cluster renders each window between the first and the last two of a
    one-tile movie in one task that also writes the window's per-frame ground truth
    (store.window_task_blocks, window_delayed's ``join``: its World builds the window's trace
    segment once, and no second task waits on that worker), and gives the bytes of a save on
    threads."""
    import re
    from collections import Counter

    from distributed import get_task_stream

    import minisim.store as mstore
    from minisim.recording import RENDER_TASK_BLOCKS

    assert mstore.MOVIE_WINDOW_FRAMES == 1024
    # 5,200 frames: windows of 1,024 frames (the last 1,104), each beginning a trace segment
    spec = small_spec(**{"recording.fps": 200.0, "recording.duration_s": 26.0,
                         "sensor.width_px": 16, "sensor.height_px": 16})
    chunks = {"frame": 64, "height": 16, "width": 16}  # one tile; 16 blocks a window
    with get_task_stream(client) as ts:
        spread = simulate(spec, chunks=chunks).save(tmp_path / "cluster.zarr", scheduler=client)
    ref = simulate(spec, chunks=chunks).save(tmp_path / "threads.zarr", scheduler="threads")
    assert dataset_digests(spread.dataset) == dataset_digests(ref.dataset)

    def name(key):
        return re.sub(r"-[0-9a-f]{8,}.*", "", str(key[0] if isinstance(key, tuple) else key))

    names = Counter(name(x["key"]) for x in ts.data)
    renders = Counter(min(x["key"][1] * 64 // 1024, 4) for x in ts.data if name(x["key"]) == "render-store")
    # windows 0, 3 and 4 (the last two) in tasks of RENDER_TASK_BLOCKS blocks and a task that
    # sums their counts; 1 and 2 in their ground truth's one task
    fine = -(-16 // RENDER_TASK_BLOCKS)
    assert renders == {0: fine, 3: fine, 4: -(-18 // RENDER_TASK_BLOCKS)}
    assert names["sum-render-store"] == 3
    assert {k: names[f"window-truth-{k}"] for k in range(5)} == {k: 1 for k in range(5)}
