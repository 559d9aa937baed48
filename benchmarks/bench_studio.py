"""Studio Panel 1 redraw time for each scope preset at 608 x 608 px (median of several redraws).

A redraw shows the preview (the max projection of 20 frames of the centred ~350-cell
window), the readout and the side view; then it counts the window's detectable cells (the
detectability oracle renders 128 frames: seconds), shown as "counting…" until done. The
columns time what a user waits for:

* ``cold``: a Spec whose scene was not seen before (a new seed each time: new cells, new
  footprints), until the preview shows;
* ``warm``: the same Spec drawn again (its World, side view and count kept), until it shows;
* ``knob``: a knob that leaves the scene as it is (the sensor's read noise; also every
  activity knob, see ``minisim/studio/preview.py``): a new World around the kept scene,
  until the preview shows;
* ``count``: the detectable count that follows a cold or knob redraw (median of both);
* ``world``, ``render``, ``side``: the parts of a cold redraw (World with its scene; the 20
  preview frames, footprints built on first use included; the side view's picture).

Every preset runs on a 608 x 608 px sensor (the V4's own; the Generic 1p scope's 256 px
widened to it). Timings depend on what else the machine runs: compare rows of one run only.

Run: ``python benchmarks/bench_studio.py [repeats]``.
"""

from __future__ import annotations

import os
import statistics
import sys

from minisim import presets
from minisim.studio import AnatomyPanel, SpecModel

SIDE_PX = 608


def bench(name: str, repeats: int) -> dict[str, float]:
    model = SpecModel(presets.scope(name).with_updates(
        {"sensor.width_px": SIDE_PX, "sensor.height_px": SIDE_PX}))
    panel = AnatomyPanel(model, debounce_s=1e6)  # redraws only when asked
    cold, warm, knob, count, parts = [], [], [], [], []
    noise = model.spec.sensor.read_noise_e
    for k in range(repeats):
        model.set(model.spec.with_updates({"recording.seed": 1000 + k}))
        panel.redraw_now()
        cold.append(panel.timings["shown_s"])
        count.append(panel.timings["count_s"])
        parts.append(panel.timings)
        panel.redraw_now()
        warm.append(panel.timings["shown_s"])
        model.set(model.spec.with_updates({"sensor.read_noise_e": noise + 0.5 * (k + 1)}))
        panel.redraw_now()
        knob.append(panel.timings["shown_s"])
        count.append(panel.timings["count_s"])
    panel.close()
    y0, y1, x0, x1 = panel.preview_window
    med = statistics.median
    return {"window": f"{y1 - y0}x{x1 - x0}", "cells": panel.readout["cells_window"],
            "detectable": panel.readout["detectable_window"], "cold": med(cold),
            "warm": med(warm), "knob": med(knob), "count": med(count),
            **{key: med(p[key] for p in parts) for key in ("world_s", "render_s", "side_view_s")}}


if __name__ == "__main__":
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"Panel 1 redraw at {SIDE_PX} x {SIDE_PX} px, median of {repeats} (seconds); "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"{'preset':24s} {'window':>8s} {'cells':>5s} {'det':>4s} {'cold':>6s} {'warm':>6s} "
          f"{'knob':>6s} {'count':>6s} {'world':>6s} {'render':>6s} {'side':>6s}")
    for name in presets.names():
        r = bench(name, repeats)
        print(f"{name:24s} {r['window']:>8s} {r['cells']:>5d} {r['detectable']:>4d} "
              f"{r['cold']:6.2f} {r['warm']:6.2f} {r['knob']:6.2f} {r['count']:6.2f} "
              f"{r['world_s']:6.2f} {r['render_s']:6.2f} {r['side_view_s']:6.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
