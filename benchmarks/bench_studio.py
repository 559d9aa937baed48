"""Studio Panel 1 redraw time for each scope preset at 608 x 608 px (median of several redraws).

A *cold* redraw builds the World of a Spec not seen before (a new seed each time): what a
user waits for after changing a knob. A *warm* redraw re-renders a Spec whose World is
cached. Each redraw renders the preview (20 frames of the centred ~350-cell window), the
readout (with detectable cells) and the side view. Every preset runs on a 608 x 608 px sensor
(the V4's own; the Generic 1p scope's 256 px widened to it). Timings depend on what else the
machine runs: compare rows of one run only.

Run: ``python benchmarks/bench_studio.py [repeats]``.
"""

from __future__ import annotations

import statistics
import sys
import time

from minisim import presets
from minisim.studio import AnatomyPanel, SpecModel

SIDE_PX = 608


def bench(name: str, repeats: int) -> dict[str, float]:
    model = SpecModel(presets.scope(name).with_updates(
        {"sensor.width_px": SIDE_PX, "sensor.height_px": SIDE_PX}))
    panel = AnatomyPanel(model, debounce_s=1e6)  # redraws only when asked
    cold, warm, parts = [], [], []
    for k in range(repeats):
        model.set(model.spec.with_updates({"recording.seed": 1000 + k}))
        t = time.perf_counter()
        panel.redraw_now()
        cold.append(time.perf_counter() - t)
        parts.append(panel.timings)
        t = time.perf_counter()
        panel.redraw_now()
        warm.append(time.perf_counter() - t)
    panel.close()
    y0, y1, x0, x1 = panel.preview_window
    return {"window": f"{y1 - y0}x{x1 - x0}", "cells": panel.readout["cells_window"], "cold": statistics.median(cold),
            "warm": statistics.median(warm),
            **{k: statistics.median(p[k] for p in parts) for k in parts[0]}}


if __name__ == "__main__":
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"Panel 1 redraw at {SIDE_PX} x {SIDE_PX} px, median of {repeats} (seconds)")
    print(f"{'preset':26s} {'window':>8s} {'cells':>6s} {'cold':>6s} {'warm':>6s} "
          f"{'world':>6s} {'render':>6s} {'readout':>7s} {'side':>6s}")
    for name in presets.names():
        r = bench(name, repeats)
        print(f"{name:26s} {r['window']:>8s} {r['cells']:>6d} {r['cold']:6.2f} {r['warm']:6.2f} "
              f"{r['world_s']:6.2f} {r['render_s']:6.2f} {r['readout_s']:7.2f} "
              f"{r['side_view_s']:6.2f}")
