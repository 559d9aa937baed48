"""Video export: flat memory (peak RSS for 1 vs 10 minutes, 1,200 vs 12,000 frames) and frames/s per codec.

Each case runs in a fresh subprocess (peak RSS = ru_maxrss of that process) that renders the
``miniscope_v4_ca1`` preset (608 x 608 px, 8-bit, 20 fps) for N frames into an AVI on the
threads scheduler, with ``simulate_video``: *scene s* is building the scene (timed apart),
*stream s* and *frames/s* the rest (render + map + encode, streamed).

    python benchmarks/bench_video.py                               # the full table
    python benchmarks/bench_video.py --rss-frames 1200 12000 72000 --rss-codecs ffv1 \
        --speed-frames 1200 --speed-codecs ffv1                    # 1 / 10 / 60 minutes
    python benchmarks/bench_video.py --one 600 --codec ffv1 --out /tmp/x.avi   # one case
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = "miniscope_v4_ca1"


def one(frames: int, codec: str, out: str, preset: str = PRESET) -> dict:
    import minisim
    from minisim import render

    spec = minisim.presets.scope(preset)
    spec = spec.with_updates({"recording.duration_s": frames / spec.recording.fps})
    build_world, scene_s = render.build_world, []

    def timed_build_world(*args, **kwargs):  # time the scene apart from the streaming
        t = time.perf_counter()
        world = build_world(*args, **kwargs)
        scene_s.append(time.perf_counter() - t)
        return world

    render.build_world = timed_build_world
    t0 = time.perf_counter()
    minisim.simulate_video(spec, out, codec=codec, scheduler="threads", progress=False,
                           overwrite=True)
    wall = time.perf_counter() - t0
    stream_s = wall - sum(scene_s)
    return {
        "frames": frames, "codec": codec, "scene_s": sum(scene_s), "stream_s": stream_s,
        "fps": frames / stream_s, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "size_mb": os.path.getsize(out) / 1e6, "px": spec.sensor.width_px,
    }


def run_case(frames: int, codec: str, folder: Path) -> dict:
    out = folder / f"{codec}_{frames}.avi"
    r = subprocess.run([sys.executable, __file__, "--one", str(frames), "--codec", codec,
                        "--out", str(out)], capture_output=True, text=True, check=True)
    for p in folder.glob(f"{codec}_{frames}*"):
        p.unlink()
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", type=int)
    p.add_argument("--codec", default="ffv1")
    p.add_argument("--out")
    p.add_argument("--rss-frames", type=int, nargs="+", default=[1200, 12000])
    p.add_argument("--rss-codecs", nargs="+", default=["ffv1"])
    p.add_argument("--speed-frames", type=int, default=1200)
    p.add_argument("--speed-codecs", nargs="+", default=["ffv1", "rawvideo", "mjpeg", "h264"])
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.codec, a.out)))
        return

    folder = Path(tempfile.mkdtemp())
    rows: dict[tuple[int, str], dict] = {}
    try:
        for codec in a.rss_codecs:
            for n in a.rss_frames:
                rows[(n, codec)] = run_case(n, codec, folder)
        for codec in a.speed_codecs:
            if (a.speed_frames, codec) not in rows:
                rows[(a.speed_frames, codec)] = run_case(a.speed_frames, codec, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"video export: preset {PRESET} (608 x 608 px, 8-bit, 20 fps), threads scheduler, "
          f"{os.cpu_count()} CPUs")
    print(f"{'codec':>9} {'frames':>7} {'scene s':>8} {'stream s':>9} {'frames/s':>9} "
          f"{'MB/frame':>9} {'peak RSS MB':>12}")
    for (n, codec), r in sorted(rows.items(), key=lambda kv: (kv[0][1] != "ffv1", kv[0][1], kv[0][0])):
        print(f"{codec:>9} {n:>7} {r['scene_s']:>8.1f} {r['stream_s']:>9.1f} {r['fps']:>9.1f} "
              f"{r['size_mb'] / n:>9.3f} {r['rss_mb']:>12.1f}")
    for codec in a.rss_codecs:
        base = rows.get((a.rss_frames[0], codec))
        for n in a.rss_frames[1:]:
            r = rows.get((n, codec))
            if base and r:
                print(f"peak RSS {codec}: {n} / {a.rss_frames[0]} frames = "
                      f"{r['rss_mb'] / base['rss_mb']:.3f} (goal <= 1.05, and <= 1000 MB)")


if __name__ == "__main__":
    main()
