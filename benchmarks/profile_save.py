"""Where a save's time goes: V4 CA1, 608 x 608 px, every effect on, ground truth to zarr.

Run: ``python benchmarks/profile_save.py [--frames 1200] [--scheduler sync|threads] [--no-motion]
[--timeline 0.5]``.

Saves ``simulate`` of the ``miniscope_v4_ca1`` preset (``--frames`` at 20 fps) into a
temporary zarr store, timing every task (a callback like dask's ``Profiler`` that, unlike it,
follows the save's steps computing at the same time), and prints the wall time, the frames/s, the peak
RSS and one row per kind of task (its key's name): how many ran and the seconds they took in
all. On the ``sync`` scheduler the rows add up to the save's time (less dask's own overhead);
on ``threads`` they are the time tasks spent, counted on every thread.
"""

from __future__ import annotations

import argparse
import collections
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--scheduler", default="sync", choices=["sync", "threads"])
    ap.add_argument("--no-motion", action="store_true")
    ap.add_argument("--timeline", type=float, default=0.0, metavar="SECONDS",
                    help="also print, per bucket of this many seconds of the save, the threads busy "
                         "and the kinds of task they ran (and the time before the first task and "
                         "after the last)")
    args = ap.parse_args()

    import minisim
    from minisim import presets

    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"recording.duration_s": args.frames / 20.0, "recording.fps": 20.0,
         "motion.enabled": not args.no_motion})
    out = Path(tempfile.mkdtemp(prefix="profile_save-")) / "r.zarr"
    try:
        t0 = time.perf_counter()
        rec = minisim.simulate(spec)
        t1 = time.perf_counter()
        with TaskTimes() as prof:
            rec.save(out, scheduler=args.scheduler)
        t2 = time.perf_counter()
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    spent: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    for r in prof.results:
        key = r.key[0] if isinstance(r.key, tuple) else r.key
        name = str(key).rsplit("-", 1)[0]
        spent[name] += r.end_time - r.start_time
        count[name] += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"profile_save: miniscope_v4_ca1 608 x 608 px, {args.frames} frames, motion "
          f"{'off' if args.no_motion else 'on'}, {args.scheduler} scheduler")
    print(f"simulate {t1 - t0:.2f} s, save {t2 - t1:.2f} s: {args.frames / (t2 - t0):.1f} frames/s, "
          f"peak RSS {rss:.0f} MB\n")
    print(f"{'task':50s} {'count':>6s} {'s':>8s}")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1])[:16]:
        print(f"{name[:50]:50s} {count[name]:6d} {s:8.2f}")
    if args.timeline > 0 and prof.results:
        timeline(prof.results, t1, t2, args.timeline)


class _Task(NamedTuple):
    key: object
    start_time: float
    end_time: float


def TaskTimes():
    """A dask callback recording each task's key, start and end (time.perf_counter) as
    ``results``, like dask's Profiler, but safe for the steps a save computes at the same time
    (``concurrency_safe``; Profiler restarts its record at each computation's start). A task is
    handed to the pool when dask calls ``_pretask`` and may wait there behind the other
    computation's tasks: its start is the later of that and the end of the task before it on
    the same worker thread."""
    import threading

    from dask.callbacks import Callback

    class Times(Callback):
        concurrency_safe = True

        def __init__(self):
            super().__init__()
            self.results, self._started, self._free, self._lock = [], {}, {}, threading.Lock()

        def _pretask(self, key, dsk, state):
            with self._lock:
                self._started[key] = time.perf_counter()

        def _posttask(self, key, result, dsk, state, worker_id):
            end = time.perf_counter()
            with self._lock:
                start = max(self._started.pop(key), self._free.get(worker_id, 0.0))
                self._free[worker_id] = end
                self.results.append(_Task(key, start, end))

    return Times()


def timeline(results, t_save: float, t_end: float, bucket: float) -> None:
    """Threads busy per bucket of the save and the task kinds that kept them busy (the
    Profiler's clock is dask's default timer, time.perf_counter, as the save's here)."""
    first = min(r.start_time for r in results) - t_save
    last = t_end - max(r.end_time for r in results)
    print(f"\ntimeline: {first:.2f} s from save() to its first task, {last:.2f} s from its last "
          f"task to save()'s return")
    n = int((t_end - t_save) / bucket) + 1
    busy = [collections.defaultdict(float) for _ in range(n)]
    for r in results:
        key = r.key[0] if isinstance(r.key, tuple) else r.key
        name = str(key).rsplit("-", 1)[0]
        a, b = r.start_time - t_save, r.end_time - t_save
        for k in range(max(int(a / bucket), 0), min(int(b / bucket), n - 1) + 1):
            lo, hi = max(a, k * bucket), min(b, (k + 1) * bucket)
            if hi > lo:
                busy[k][name] += hi - lo
    print(f"{'from s':>7s} {'threads':>8s}  tasks (thread-s)")
    for k, kinds in enumerate(busy):
        total = sum(kinds.values()) / bucket
        top = ", ".join(f"{nm[:24]} {v:.2f}" for nm, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:3])
        print(f"{k * bucket:7.1f} {total:8.2f}  {top}")


if __name__ == "__main__":
    main()
