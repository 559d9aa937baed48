"""simulate() is lazy in time: its wall time and allocations do not grow with the duration.

Run: ``python benchmarks/bench_simulate.py [--preset miniscope_v4_ca1] [--hours 0.0167 1 24]``.

Each duration runs in a fresh process: wall time of ``minisim.simulate(spec)`` and the
tracemalloc peak of the call (Python allocations, numpy included). What remains is per cell and
per pixel (the scene, the per-unit constants, the first trace segment for ``pnr``), never per
frame (docs/segments.md).
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
tracemalloc.start()
t0 = time.perf_counter()
rec = minisim.simulate(spec)
wall = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"wall_s": wall, "peak_mb": peak / 1e6, "frames": rec.dataset.sizes["frame"],
                  "units": rec.dataset.sizes["unit_id"]}))
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
        print(f"{label:>10} {res['frames']:>10} {res['units']:>6} {res['wall_s']:>7.1f} {res['peak_mb']:>20.1f}")


if __name__ == "__main__":
    main()
