"""Flat memory: peak RSS of saving N frames does not grow with N.

Each case runs in a fresh subprocess (peak RSS = ru_maxrss of that process) that saves the
default Spec at PX x PX px to zarr on the threads scheduler.

    python benchmarks/bench_memory.py                  # 600 vs 6,000 frames at 512 x 512
    python benchmarks/bench_memory.py --minutes 1 10 60 --preset miniscope_v4_ca1   # V4 CA1, 608 px
    python benchmarks/bench_memory.py --one 600 --px 512 --out /tmp/x.zarr   # one case

With ``--minutes`` the cases are durations of the preset at its full field (20 fps: 1,200,
12,000 and 72,000 frames); an hour of V4 CA1 takes about as long as the machine renders it.
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


def one(frames: int, px: int, out: str, preset: str | None = None) -> float:
    import minisim
    from minisim import presets

    if preset:
        base = presets.scope(preset)
        spec = base.with_updates({"recording.duration_s": frames / base.recording.fps})
    else:
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
    p.add_argument("--minutes", type=float, nargs="+", help="durations instead of --frames (20 fps)")
    p.add_argument("--preset", help="a scope preset at its full field instead of the default Spec")
    a = p.parse_args()
    if a.one:
        print(f"{one(a.one, a.px, a.out, a.preset):.1f}")
        return
    if a.minutes:
        a.frames = [round(m * 60 * 20) for m in a.minutes]
    rows = []
    tmp = Path(tempfile.mkdtemp())
    try:
        for n in a.frames:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, __file__, "--one", str(n), "--px", str(a.px),
                                "--out", str(tmp / f"m{n}.zarr"), *(["--preset", a.preset] if a.preset else [])],
                               capture_output=True, text=True, check=True)
            dt = time.perf_counter() - t0
            rows.append((n, float(r.stdout.split()[-1]), dt))
            shutil.rmtree(tmp / f"m{n}.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    what = f"{a.preset} at its full field" if a.preset else f"default Spec at {a.px}x{a.px} px"
    print(f"flat memory: {what}, threads scheduler, save to zarr")
    print(f"{'frames':>8} {'peak RSS MB':>12} {'wall s':>8} {'ratio to first':>15}")
    for n, rss, dt in rows:
        print(f"{n:>8} {rss:>12.1f} {dt:>8.1f} {rss / rows[0][1]:>15.3f}")


if __name__ == "__main__":
    main()
