"""The race: minisim 1.0.3's streaming writer against this minisim, side by side, alternating.

Run: ``python benchmarks/bench_race.py [--frames 1200] [--repeats 3]``.

minisim 1.0.3 (PyPI; an unrelated package of the same name) is installed into its own virtual
environment under ``.bench-venv/`` (ignored by git), never into this one; where pip cannot
reach it the race is skipped with a message. Each run is a fresh process:

* **1.0.3**: ``simulate_video`` (its streaming writer) of ``build_spec(miniscope_v4(), ca1())``,
  608 x 608 px, without and with its ``BrainMotion`` step; it writes 8-bit frames and no
  ground truth.
* **this minisim**: ``simulate`` of the ``miniscope_v4_ca1`` preset (608 x 608 px) saved to
  zarr with its complete ground truth on the threads scheduler, without and with motion.

Each writer's clock starts after its libraries are imported: 1.0.3 imports its own at
``import minisim``; this minisim imports xarray, dask.array and zarr (and distributed, which dask
imports when it builds a graph) on first use, so the race imports them before its clock
(~1.7 s on this machine, once per process, not per frame).

The cases alternate (1.0.3, ours, 1.0.3, ours, ...) so a change in the machine's load hits
both; the table gives the median frames/s and the largest peak RSS of each case, and the
ratio of ours to 1.0.3 measured in the same run. Absolute numbers depend on the machine's
other load: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench-venv"
INCUMBENT = "minisim==1.0.3"

_INCUMBENT_CODE = """
import json, resource, sys, time
from minisim import BrainMotion, build_spec, simulate_video
from minisim.presets import ca1, miniscope_v4
frames, motion, out = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
spec = build_spec(miniscope_v4(), ca1(), duration_s=frames / 20.0, fps=20.0, seed=0,
                  extra_steps=[BrainMotion()] if motion else ())
t0 = time.perf_counter()
simulate_video(spec, out, progress=False)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_OURS_CODE = """
import importlib.util, json, resource, sys, time
import dask.array, xarray, zarr  # the libraries' imports, before the clock (as 1.0.3's)
if importlib.util.find_spec("distributed"):
    import distributed
import minisim
from minisim import presets
frames, motion, out = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
spec = presets.scope("miniscope_v4_ca1").with_updates(
    {"recording.duration_s": frames / 20.0, "recording.fps": 20.0, "motion.enabled": motion})
if __name__ == "__main__":
    t0 = time.perf_counter()
    minisim.simulate(spec).save(out, scheduler="threads")
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_incumbent() -> Path | None:
    """The venv's python with minisim 1.0.3 installed, or None (with a message) if pip cannot."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('minisim'))"]
    if python.exists():
        r = subprocess.run(check, check=False, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == "1.0.3":
            return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", INCUMBENT], check=True,
                       capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        print(f"bench_race: skipped, cannot install {INCUMBENT} into {VENV}: {detail.strip()[-300:]}")
        return None
    return python


def run(python: str, code: str, frames: int, motion: bool, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if Path(python).parent.parent == VENV:  # the incumbent: never this repo's minisim
        env.pop("PYTHONPATH", None)
    r = subprocess.run([python, "-c", code, str(frames), "1" if motion else "0", str(out)],
                       check=False, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    incumbent = ensure_incumbent()
    if incumbent is None:
        return
    cases = [("1.0.3 simulate_video", str(incumbent), _INCUMBENT_CODE),
             ("ours save to zarr", sys.executable, _OURS_CODE)]
    results: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_race_") as tmp:
        for rep in range(args.repeats):
            for motion in (False, True):
                for name, python, code in cases:
                    out = Path(tmp) / (f"r{rep}_{motion}.avi" if "1.0.3" in name else f"r{rep}_{motion}.zarr")
                    load = os.getloadavg()[0]
                    res = run(python, code, args.frames, motion, out)
                    results.setdefault((name, motion), []).append(res)
                    print(f"  run {rep + 1}/{args.repeats} {name:22s} motion={motion!s:5s} "
                          f"{args.frames / res['wall_s']:6.1f} frames/s  {res['rss_mb']:7.0f} MB  "
                          f"load {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\nrace: V4 x CA1 608x608 px, {args.frames} frames at 20 fps, median of {args.repeats} "
          f"alternating runs; {platform.machine()}, {os.cpu_count()} cores")
    print(f"{'writer':24s} {'motion':>6s} {'frames/s':>9s} {'peak RSS MB':>12s} {'ratio (fps)':>12s}")
    for motion in (False, True):
        fps = {}
        for name, _, _ in cases:
            runs = results[(name, motion)]
            fps[name] = statistics.median(args.frames / r["wall_s"] for r in runs)
            rss = max(r["rss_mb"] for r in runs)
            ratio = fps[name] / fps[cases[0][0]]
            print(f"{name:24s} {'on' if motion else 'off':>6s} {fps[name]:9.1f} {rss:12.0f} {ratio:12.2f}")


if __name__ == "__main__":
    main()
