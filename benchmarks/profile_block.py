"""Where a render block's time goes: V4 CA1, 608 x 608 px, every effect on.

Run: ``python benchmarks/profile_block.py [--frames 32] [--tile 256] [--blocks 4] [--set k=v ...]``.

Builds the World of the ``miniscope_v4_ca1`` preset once (scene time printed apart), renders
``--blocks`` blocks of ``--frames`` frames x one ``--tile`` px tile at the centre of the field on
one thread, and prints two tables: the stages of a block (traces, tissue sum, vasomotion,
motion warp, fields, sensor) timed by wrapping the functions the renderer calls, and the top
functions of a cProfile run of the same blocks.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from minisim import presets, render, sensor

SPENT: dict[str, float] = defaultdict(float)


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - t0
    return wrapper


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
        try:
            out[key] = float(value) if "." in value else int(value)
        except ValueError:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--set", nargs="*", default=[], help="Spec updates, e.g. motion.enabled=false")
    args = ap.parse_args()
    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"recording.duration_s": 120.0, **parse_set(args.set)})
    t0 = time.perf_counter()
    world = render.build_world(spec)
    scene_s = time.perf_counter() - t0
    H, W = spec.sensor.height_px, spec.sensor.width_px
    y0, x0 = (H - args.tile) // 2, (W - args.tile) // 2
    window = (y0, y0 + args.tile, x0, x0 + args.tile)
    t0 = time.perf_counter()
    world.segment(0)  # the first segment's traces, timed apart (kept: the blocks below use it)
    segment_s = time.perf_counter() - t0
    # the first call builds what is built on first use (footprints, where the Scene defers
    # them; compiled kernels: numba compiles them in a fresh cache, later processes load them)
    t0 = time.perf_counter()
    render.render_block(world, range(1), (0, 8, 0, 8))
    first_call_s = time.perf_counter() - t0

    # stages: wrap what render_electrons / render_block call (those this tree has: the script
    # also profiles older trees, e.g. with PYTHONPATH pointing at a checkout of render algorithm 2)
    stages = [
        (render.Scene, "tissue_e", "tissue sum (A . C + neuropil)"),
        (render, "displacement_px", "motion field (displacement_px)"),
        (render, "_warp", "motion warp (displacement + gather, one pass)"),
        (render, "dilation_factor", "vasomotion factor"),
        (render.World, "traces", "traces of the block (from segment cache)"),
        (render.World, "motion", "motion of the block"),
        (sensor, "fixed_pattern", "sensor: fixed pattern"),
        (sensor, "_tile_draws", "sensor: keyed normal draws"),
        (sensor, "shot_and_read_e", "sensor: shot + read noise"),
        (sensor, "_expose", "sensor: keyed draws, shot + read, ADU (one pass)"),
    ]
    for owner, name, label in stages:
        if hasattr(owner, name):
            setattr(owner, name, timed(label, getattr(owner, name)))
    render_electrons = render.render_electrons
    render.render_electrons = timed("render_electrons (all of the light)", render_electrons)
    render._sensor.expose = timed("expose (all of the sensor)", sensor.expose)

    blocks = [range(b * args.frames, (b + 1) * args.frames) for b in range(args.blocks)]
    t0 = time.perf_counter()
    for frames in blocks:
        render.render_block(world, frames, window)
    total = time.perf_counter() - t0
    n_frames = args.blocks * args.frames
    px = n_frames * args.tile * args.tile
    print(f"profile_block: miniscope_v4_ca1 {H}x{W} px, {len(world.scene.cells)} cells, "
          f"{args.blocks} blocks of {args.frames} frames x {args.tile}^2 px, one thread")
    print(f"scene build {scene_s:.1f} s (once per process); one trace segment "
          f"({len(world.scene.cells)} units x 1024 frames, with motion) {segment_s:.2f} s; "
          f"first render call (footprints, kernels) {first_call_s:.2f} s")
    print(f"render {total:.2f} s: {n_frames / total * (args.tile * args.tile) / (H * W):.1f} full "
          f"frames/s per thread ({px / total / 1e6:.1f} Mpx/s)\n")
    print(f"{'stage':44s} {'s':>7s} {'% of render':>12s}")
    for name, s in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"{name:44s} {s:7.2f} {100 * s / total:11.1f}%")

    prof = cProfile.Profile()
    prof.enable()
    for frames in blocks:
        render.render_block(world, frames, window)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    print("\ncProfile, top functions by own time:")
    print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[-1600:])


if __name__ == "__main__":
    main()
