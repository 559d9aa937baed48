"""Sweep scaling: recordings per minute with 1 and 2 LocalCluster workers.

A sweep of 8 small recordings (128 x 128 px, 10 s at 20 fps, 4 densities x 2 seeds) is rendered
from scratch with ``minisim.sweep.run`` on a LocalCluster of 1 and then 2 single-threaded worker
processes; the table gives the wall time, recordings per minute and the scaling efficiency
rate2 / (2 x rate1). Mode ``long`` spreads one long recording (V4 CA1, 256 x 256 px, 10 min, or
``--long-minutes``) over the workers instead: each worker builds the World and computes only the
trace segments its blocks need (docs/segments.md). Its fixed costs (each worker's World and
footprints, ~0.3 s, and the metrics after the movie, ~0.5 s) weigh more on a shorter recording
(``--long-minutes 2``). The client is warmed first (its first simulate and save), so that no row
carries its one-off imports. Each mode runs ``--repeats`` times, its worker counts alternating
(1, 2, 1, 2, ...): this machine's speed drifts by 10-20 % from one minute to the next, and a
single pair of runs gave any speed-up from 1.5x to 2.0x for the same code. The table gives
each row's median, and the speed-up is the median of the repeats' own speed-ups (each over the
first row's run of the same repeat); each repeat's speed-up is printed below it. Run:
``python benchmarks/bench_sweep.py [--workers 1 2 4] [--long-minutes 2] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SWEEP = {
    "base": {"sensor": {"width_px": 128, "height_px": 128}, "recording": {"duration_s": 10.0, "fps": 20}},
    "grid": {"cells.density_per_mm3": [20000, 30000, 45000, 60000]},
    "seeds": [0, 1],
    "output": "out",
}


#: One long recording spread over the workers ("long" mode): V4 CA1 at 256 x 256 px (its
#: duration: ``--long-minutes``, 10 by default).
LONG = {
    "base": {"sensor": {"width_px": 256, "height_px": 256}, "recording": {"duration_s": 600.0, "fps": 20}},
    "grid": {"recording.seed": [0]},
    "output": "out",
}


def bench(n_workers: int, root: Path, mode: str, long_s: float = 600.0) -> tuple[int, float]:
    from minisim import presets, sweep

    out = root / f"{mode}-w{n_workers}"
    shutil.rmtree(out, ignore_errors=True)
    if mode == "long":
        v4 = json.loads(presets.scope("miniscope_v4_ca1").model_dump_json())
        base = {**v4, "sensor": {**v4["sensor"], **LONG["base"]["sensor"]},
                "recording": {**v4["recording"], **LONG["base"]["recording"], "duration_s": long_s}}
        sw = sweep.load_sweep({**LONG, "base": base}, root=out)
    else:
        sw = sweep.load_sweep(SWEEP, root=out)
    t0 = time.perf_counter()
    m = sweep.run(sw, scheduler="local", workers=n_workers, progress=False,
                  whole_below_mb=sweep.WHOLE_BELOW_MB if mode == "whole" else 0.0)
    seconds = time.perf_counter() - t0
    assert (m["status"] == "done").all(), m
    # the manifest's seconds: each recording's own time on the running cluster (its start not in it)
    return len(sw), seconds, float(m["seconds"].astype(float).max())


def _warm_client(root: Path) -> None:
    """This process's first simulate() and save, before any timed run: the first row (one
    worker) would otherwise carry the client's one-off imports and compiled-kernel loads
    (~0.3-0.5 s), which flattered the speed-up of the rows after it."""
    import minisim
    from minisim import presets

    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.height_px": 32, "sensor.width_px": 32, "recording.duration_s": 1.0, "recording.fps": 20.0})
    minisim.simulate(spec).save(root / "warm.zarr", scheduler="threads")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--modes", nargs="+", choices=["whole", "spread", "long"], default=["whole", "spread", "long"],
                   help="whole: each recording one task (the default for small ones); spread: chunks; "
                        "long: one V4 CA1 256 px recording (--long-minutes) spread over the workers")
    p.add_argument("--long-minutes", type=float, default=10.0, help="the long recording's duration")
    p.add_argument("--repeats", type=int, default=5, help="runs of each mode, the worker counts alternating")
    args = p.parse_args()
    rows, pairs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        _warm_client(Path(tmp))
        for mode in args.modes:
            runs = {n: [] for n in args.workers}
            for _ in range(args.repeats):
                for n in args.workers:
                    runs[n].append(bench(n, Path(tmp), mode, 60.0 * args.long_minutes))
            first = args.workers[0]
            for n in args.workers:
                count = runs[n][0][0]
                seconds = statistics.median(r[1] for r in runs[n])
                longest = statistics.median(r[2] for r in runs[n])
                ups = [a[2] / b[2] for a, b in zip(runs[first], runs[n])]
                rows.append((mode, n, count, seconds, count / seconds * 60, longest, statistics.median(ups)))
                pairs.append((mode, n, ups))
    print(f"sweeps: whole/spread 8 recordings 128 x 128 px 10 s; long 1 recording V4 CA1 256 x 256 px "
          f"{60 * args.long_minutes:g} s; 20 fps; {os.cpu_count()} CPU cores; LocalCluster, 1 thread per worker; "
          f"medians of {args.repeats} runs, the worker counts alternating; wall time "
          "includes the cluster's start, 'longest s' is the slowest recording's own time on the "
          "started cluster (the manifest's seconds), 'speed-up' the median of each repeat's "
          "longest s of the first row over this row's")
    print(f"{'mode':>6} | {'workers':>7} | {'recordings':>10} | {'wall s':>7} | {'rec/min':>7} | "
          f"{'efficiency':>10} | {'longest s':>9} | {'speed-up':>8}")
    print("-" * 89)
    for mode, n, count, seconds, rate, longest, up in rows:
        first = next(r for r in rows if r[0] == mode)
        rate1 = first[4] / first[1]
        print(f"{mode:>6} | {n:>7} | {count:>10} | {seconds:>7.1f} | {rate:>7.1f} | {rate / (n * rate1):>10.2f} | "
              f"{longest:>9.1f} | {up:>8.2f}")
    for mode, n, ups in pairs:
        if n != args.workers[0]:
            print(f"{mode} {n} workers, each repeat's speed-up: " + ", ".join(f"{u:.2f}" for u in ups))


if __name__ == "__main__":
    main()
