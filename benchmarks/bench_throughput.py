"""Throughput of Recording.save: the default Spec at 608 x 608 px, 2,000 frames, to zarr.

Threads scheduler (2 threads) and a 2-worker distributed.LocalCluster; frames/s, Mpx/s, and
peak RSS (this process for threads; this process + the workers' peak for the cluster).

    python benchmarks/bench_throughput.py [--frames 2000] [--px 608] [--preset NAME]
                                          [--set DOTTED.KEY=JSON ...]

``--set motion.enabled=false`` matches the incumbent's published figure (no motion).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _spec(frames: int, px: int, preset: str | None, sets: list[str]):
    import json

    import minisim

    base = minisim.presets.scope(preset) if preset else minisim.Spec()
    updates = {"sensor.width_px": px, "sensor.height_px": px,
               "recording.duration_s": frames / base.recording.fps}
    for item in sets:
        key, _, value = item.partition("=")
        updates[key] = json.loads(value)
    return base.with_updates(updates)


def main() -> None:
    import minisim

    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--px", type=int, default=608)
    p.add_argument("--preset", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="a dotted Spec update, e.g. motion.enabled=false (repeatable)")
    a = p.parse_args()
    spec = _spec(a.frames, a.px, a.preset, a.set)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    try:
        t0 = time.perf_counter()
        minisim.simulate(spec).save(tmp / "threads.zarr", scheduler="threads")
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(("threads (2)", dt, rss))

        import dask
        from distributed import Client, LocalCluster

        from minisim.sweep import WORKER_MALLOC_CONFIG

        with dask.config.set(WORKER_MALLOC_CONFIG), LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            t0 = time.perf_counter()
            minisim.simulate(spec).save(tmp / "cluster.zarr", scheduler=client)
            dt = time.perf_counter() - t0
            import psutil

            worker_rss = client.run(lambda: psutil.Process().memory_info().rss / 2**20)
            rows.append(("LocalCluster 2x1", dt, max(worker_rss.values())))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    name = (a.preset or "default Spec (generic 1p)") + "".join(f", {x}" for x in a.set)
    print(f"save throughput: {name}, {a.px}x{a.px} px, {a.frames} frames, zarr v3")
    print(f"{'scheduler':<18} {'wall s':>8} {'frames/s':>9} {'Mpx/s':>7} {'peak RSS MB':>12}")
    for label, dt, rss in rows:
        fps = a.frames / dt
        print(f"{label:<18} {dt:>8.1f} {fps:>9.1f} {fps * a.px * a.px / 1e6:>7.1f} {rss:>12.0f}")
    print("(cluster RSS: the largest worker's current RSS after the run; client not included)")


if __name__ == "__main__":
    main()
