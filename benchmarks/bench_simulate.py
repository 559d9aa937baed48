"""simulate() is lazy in time: its wall time and allocations do not grow with the duration.

Run: ``python benchmarks/bench_simulate.py [--preset miniscope_v4_ca1] [--hours 0.0167 1 24]``.

Each duration runs in a fresh process, imports warmed by a 32 x 32 px call: wall time of
``minisim.simulate(spec)`` and the tracemalloc peak of a second call (Python allocations, numpy
included). What remains is per cell
(placement, per-cell optics and activity constants) and per pixel (the fields), never per frame
(docs/segments.md); footprints and every metric are built on first use.

The last rows are the test fixture of issue 15: a 128 x 128 px, 40-frame recording (20 fps,
2 s) of the default Spec and of the preset, simulated and then computed (the movie alone; the
movie and every ground-truth variable) on the synchronous scheduler (one thread: the work
itself) and on dask's default for arrays, its threads (what ``rec.dataset.load()`` uses), in a
warm process (imports and compiled kernels once before): medians over seeds 1-30 (the unit
count varies with the seed), and the best whole compute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CODE = """
import json, sys, time, tracemalloc
import minisim
from minisim import presets
spec = presets.scope(sys.argv[1]).with_updates({"recording.duration_s": float(sys.argv[2])})
minisim.simulate(spec.with_updates({"sensor.height_px": 32, "sensor.width_px": 32}))  # imports
t0 = time.perf_counter()
rec = minisim.simulate(spec)
wall = time.perf_counter() - t0
tracemalloc.start()  # a second call, traced (tracing slows it down)
minisim.simulate(spec.with_updates({"recording.seed": spec.recording.seed + 1}))
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"wall_s": wall, "peak_mb": peak / 1e6, "frames": rec.dataset.sizes["frame"],
                  "units": rec.dataset.sizes["unit_id"]}))
"""


_FIXTURE = """
import json, statistics, sys, time
import dask
import minisim
from minisim import Spec, presets
def run(seed, what, scheduler="sync"):
    base = Spec() if sys.argv[1] == "default" else presets.scope(sys.argv[1])
    spec = base.with_updates(
        {"sensor.height_px": 128, "sensor.width_px": 128, "recording.fps": 20.0,
         "recording.duration_s": 2.0, "recording.seed": seed})
    t0 = time.perf_counter()
    rec = minisim.simulate(spec)
    t1 = time.perf_counter()
    with dask.config.set(scheduler=scheduler):
        rec.movie.compute() if what == "movie" else rec.dataset.load()
    return t1 - t0, time.perf_counter() - t0, rec.dataset.sizes["unit_id"]
run(0, "all"); run(0, "all", "threads")  # imports, compiled kernels, the thread pool
seeds = range(1, 31)
movie = [run(seed, "movie") for seed in seeds]
every = [run(seed, "all") for seed in seeds]
threads = [run(seed, "all", "threads") for seed in seeds]
med = statistics.median
print(json.dumps({"simulate_s": med(r[0] for r in movie + every), "movie_s": med(r[1] for r in movie),
                  "total_s": med(r[1] for r in every), "total_best_s": min(r[1] for r in every),
                  "threads_s": med(r[1] for r in threads), "threads_best_s": min(r[1] for r in threads),
                  "units": med(r[2] for r in every)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="miniscope_v4_ca1")
    ap.add_argument("--hours", type=float, nargs="+", default=[1 / 60, 1.0, 24.0])
    args = ap.parse_args()
    print(f"simulate(): {args.preset} at its full field, fresh process per duration")
    print(f"{'duration':>10} {'frames':>10} {'units':>6} {'wall s':>7} {'tracemalloc peak MB':>20}")
    for hours in args.hours:
        r = subprocess.run([sys.executable, "-c", _CODE, args.preset, str(hours * 3600)],
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        label = f"{hours * 60:.0f} min" if hours < 1 else f"{hours:g} h"
        print(f"{label:>10} {res['frames']:>10} {res['units']:>6} {res['wall_s']:>7.2f} {res['peak_mb']:>20.1f}")
    print("\nfixture 128 x 128 px, 40 frames, medians of seeds 1-30, warm process; sync scheduler, "
          "and the everything compute on dask's threads")
    print(f"{'spec':>24} {'units':>6} {'simulate s':>11} {'+ movie s':>10} {'+ everything s':>15} {'(best)':>7}"
          f" {'threads s':>10} {'(best)':>7}")
    for preset in ("default", args.preset):
        r = subprocess.run([sys.executable, "-c", _FIXTURE, preset], capture_output=True, text=True,
                           check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{preset:>24} {res['units']:>6.0f} {res['simulate_s']:>11.3f} {res['movie_s']:>10.3f} "
              f"{res['total_s']:>15.3f} {res['total_best_s']:>7.3f} {res['threads_s']:>10.3f} "
              f"{res['threads_best_s']:>7.3f}")


if __name__ == "__main__":
    main()
