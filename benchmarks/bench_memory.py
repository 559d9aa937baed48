"""Flat memory: peak RSS of saving N frames does not grow with N.

Each case runs in a fresh subprocess (peak RSS = ru_maxrss of that process) that saves the
default Spec at PX x PX px to zarr on the threads scheduler.

    python benchmarks/bench_memory.py                  # 600 vs 6,000 frames at 512 x 512
    python benchmarks/bench_memory.py --one 600 --px 512 --out /tmp/x.zarr   # one case
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(frames: int, px: int, out: str) -> float:
    import minisim

    spec = minisim.Spec().with_updates({
        "sensor.width_px": px, "sensor.height_px": px,
        "recording.duration_s": frames / minisim.Spec().recording.fps,
    })
    minisim.simulate(spec).save(out, overwrite=True, scheduler="threads")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MB


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", type=int)
    p.add_argument("--px", type=int, default=512)
    p.add_argument("--out")
    p.add_argument("--frames", type=int, nargs="+", default=[600, 6000])
    a = p.parse_args()
    if a.one:
        print(f"{one(a.one, a.px, a.out):.1f}")
        return
    rows = []
    tmp = Path(tempfile.mkdtemp())
    try:
        for n in a.frames:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, __file__, "--one", str(n), "--px", str(a.px),
                                "--out", str(tmp / f"m{n}.zarr")],
                               capture_output=True, text=True, check=True)
            dt = time.perf_counter() - t0
            rows.append((n, float(r.stdout.split()[-1]), dt))
            shutil.rmtree(tmp / f"m{n}.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"flat memory: default Spec at {a.px}x{a.px} px, threads scheduler, save to zarr")
    print(f"{'frames':>8} {'peak RSS MB':>12} {'wall s':>8} {'ratio to first':>15}")
    for n, rss, dt in rows:
        print(f"{n:>8} {rss:>12.1f} {dt:>8.1f} {rss / rows[0][1]:>15.3f}")


if __name__ == "__main__":
    main()
