"""Scene build time and footprint memory per preset; render throughput per effect.

Run: ``python benchmarks/bench_scene.py [--frames 200] [--side 608]``. Prints two tables:

1. for each scope preset over its full field: cells, scene build time, sharp/halo nnz and
   the memory of the sparse footprints;
2. render throughput (frames/s, Mpx/s) of ``render_block`` on one thread, whole frames of
   ``side`` x ``side`` px in blocks of 16 frames: every effect on (the V4 CA1 preset), every
   effect off, and each effect alone on top of "all off", so the cost of each one is visible.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from minisim import presets
from minisim.render import build_world, render_block
from minisim.scene import build_scene

ALL_OFF = {
    "optics.defocus_enabled": False,
    "optics.field_curvature.enabled": False,
    "tissue.scatter.enabled": False,
    "tissue.attenuation.enabled": False,
    "tissue.neuropil.enabled": False,
    "vasculature.enabled": False,
    "illumination.falloff.enabled": False,
    "illumination.vignette.enabled": False,
    "illumination.glow.enabled": False,
    "illumination.bleaching.enabled": False,
    "motion.enabled": False,
    "motion.axial_sd_um": 0.0,
    "sensor.noise": False,
}

ALONE = {
    "defocus": {"optics.defocus_enabled": True},
    "field curvature": {"optics.defocus_enabled": True, "optics.field_curvature.enabled": True},
    "scatter (halo)": {"tissue.scatter.enabled": True},
    "attenuation": {"tissue.attenuation.enabled": True},
    "neuropil": {"tissue.neuropil.enabled": True},
    "vessels": {"vasculature.enabled": True},
    "vessels + vasomotion": {"vasculature.enabled": True, "vasculature.vasomotion.enabled": True},
    "falloff+vignette": {"illumination.falloff.enabled": True, "illumination.vignette.enabled": True},
    "glow": {"illumination.glow.enabled": True},
    "bleaching": {"illumination.bleaching.enabled": True},
    "motion (lateral)": {"motion.enabled": True},
    "motion + focus drift": {"motion.enabled": True, "motion.axial_sd_um": 2.0,
                             "optics.defocus_enabled": True},
    "sensor noise": {"sensor.noise": True},
}


def sparse_mb(m) -> float:
    return (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 1e6


def scene_table() -> None:
    print("## Scene build per preset (full field, one process)\n")
    print("| preset | cells | build s | sharp nnz | halo nnz | axial nnz | footprints MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in presets.names():
        spec = presets.get(name)
        build_scene(spec)  # warm imports and caches
        t0 = time.perf_counter()
        sc = build_scene(spec)
        dt = time.perf_counter() - t0
        ax = sum(m.nnz for m in sc.axial_e)
        mb = sparse_mb(sc.sharp_e) + sparse_mb(sc.halo_e) + sum(sparse_mb(m) for m in sc.axial_e)
        print(f"| {name} | {len(sc.cells)} | {dt:.2f} | {sc.sharp_e.nnz:,} | {sc.halo_e.nnz:,} | "
              f"{ax:,} | {mb:.1f} |")
    print()


def throughput(spec, frames: int, block: int = 16) -> tuple[float, float]:
    w = build_world(spec)
    H, W = spec.sensor.height_px, spec.sensor.width_px
    render_block(w, range(min(block, frames)), (0, H, 0, W))  # warm-up
    t0 = time.perf_counter()
    for f0 in range(0, frames, block):
        render_block(w, range(f0, min(f0 + block, frames)), (0, H, 0, W))
    dt = time.perf_counter() - t0
    return frames / dt, frames * H * W / dt / 1e6


def render_table(frames: int, side: int) -> None:
    base = presets.get("miniscope_v4_ca1").with_updates({
        "sensor.width_px": side, "sensor.height_px": side,
        "recording.duration_s": frames / 20.0 + 1.0, "recording.fps": 20.0,
    })
    off = base.with_updates(ALL_OFF)
    print(f"## Render throughput, V4 CA1 geometry, {side} x {side} px, {frames} frames, "
          "render_block on one thread, 16-frame blocks\n")
    print("| case | frames/s | Mpx/s | cost vs all off |")
    print("|---|---:|---:|---:|")
    ref, _ = throughput(off, frames)
    rows = [("all off", off), ("all on (V4 CA1 preset)", base),
            ("all on + focus drift 2 um", base.with_updates({"motion.axial_sd_um": 2.0}))]
    rows += [(f"alone: {k}", off.with_updates(v)) for k, v in ALONE.items()]
    for label, spec in rows:
        fps, mpx = (ref, ref * side * side / 1e6) if label == "all off" else throughput(spec, frames)
        print(f"| {label} | {fps:.1f} | {mpx:.1f} | {ref / fps:.2f}x |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--side", type=int, default=608)
    args = ap.parse_args()
    np.seterr(all="ignore")
    scene_table()
    render_table(args.frames, args.side)


if __name__ == "__main__":
    main()
