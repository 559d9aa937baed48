"""The studio's three panels: anatomy (with a live preview), activity, generate.

Each panel is a plain class around ipywidgets that reads and writes a shared
:class:`~minisim.studio.model.SpecModel`. The physics is never re-implemented here: the
preview is :func:`minisim.render.render_block` on a window of the same Spec, the traces are
:func:`minisim.activity.simulate_activity`, the numbers are :mod:`minisim.readout`.

Redraws are debounced (``debounce_s``, default 0.3 s, at most one in flight); with
``debounce_s=0`` every change redraws synchronously, and :meth:`redraw_now` always does.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from .. import presets, readout
from ..activity import simulate_activity
from ..spec import INDICATORS, Spec
from ._fields import get_value, make_widget, spec_paths
from .model import Cancelled, Debouncer, SpecModel
from .preview import PreviewCache, count_key

PREVIEW_FRAMES = 20
TRACE_UNITS = 10
TRACE_MAX_S = 30.0
#: Seconds of activity Panel 2 simulates, whatever the recording's duration: enough for
#: events to show at quiet rates.
ACTIVITY_PREVIEW_S = 60.0
SPINNER = ("<style>@keyframes minisim-spin{to{transform:rotate(360deg)}}</style>"
           "<span class='minisim-busy' style='display:inline-flex;align-items:center;gap:6px'>"
           "<span style='width:12px;height:12px;border:2px solid #bbb;border-top-color:#1976d2;"
           "border-radius:50%;display:inline-block;animation:minisim-spin .8s linear infinite'>"
           "</span>drawing…</span>")
ANATOMY_SECTIONS = ("optics", "sensor", "tissue", "cells", "vasculature", "illumination", "motion")
SECTION_TITLES = {
    "optics": "Optics", "sensor": "Sensor", "tissue": "Tissue (scatter, attenuation, neuropil)",
    "cells": "Cell placement", "vasculature": "Vasculature",
    "illumination": "Illumination (falloff, vignette, glow, bleaching)", "motion": "Motion",
}


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=TRACES_DPI)
    return buf.getvalue()


def image_png(img: np.ndarray) -> bytes:
    """An 8-bit grey PNG of a 2-D image, stretched between its 0.5 and 99.9 percentiles.

    One channel, light compression: a 608 x 608 preview encodes in a few milliseconds (an RGBA
    PNG through matplotlib took ~0.5 s on a loaded machine, a quarter of a redraw).
    """
    from PIL import Image  # matplotlib's own image dependency

    img = np.asarray(img, float)
    lo, hi = np.percentile(img, [0.5, 99.9]) if img.size else (0.0, 1.0)
    grey = np.round(np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG", compress_level=1)  # uint8 2-D: mode "L"
    return buf.getvalue()


class SpecPanel:
    """Widgets bound to dotted Spec paths, kept in sync with a shared :class:`SpecModel`."""

    title = "panel"

    def __init__(self, model: SpecModel | None = None, debounce_s: float = 0.3):
        import ipywidgets as W

        self.model = model if model is not None else SpecModel()
        self.widgets: dict[str, Any] = {}
        self.status = W.HTML("")
        self.spinner = W.HTML("", layout=W.Layout(min_height="20px"))
        self._syncing = False
        self._debouncer = Debouncer(self._redraw_safe, debounce_s,
                                    hold=lambda: self.model.generating, on_busy=self._show_busy)
        self.model.observe(self._on_model)
        self.model.on_generate(self._debouncer.pause, self._debouncer.resume,
                               lambda: self._debouncer.running)

    # -- binding
    def _bind(self, path: str):
        w = make_widget(path, get_value(self.model.spec, path))
        w.observe(lambda ch, p=path: self._on_widget(p, ch), names="value")
        self.widgets[path] = w
        return w

    def _updates_for(self, path: str, value: Any) -> dict[str, Any]:
        return {path: value}

    def _on_widget(self, path: str, change) -> None:
        if self._syncing:
            return
        try:
            self.model.update(self._updates_for(path, change["new"]))
            self.status.value = ""
        except (ValidationError, ValueError) as e:
            msg = str(e).splitlines()
            self.status.value = (f"<span style='color:#b00'>{path} = {change['new']!r} refused: "
                                 f"{' '.join(msg[1:3]) if len(msg) > 2 else msg[0]}</span>")
            self.sync_widgets()

    def _on_model(self, old: Spec, new: Spec) -> None:
        self.sync_widgets()
        self.schedule_redraw()

    def sync_widgets(self) -> None:
        """Set every widget to the model's current value."""
        self._syncing = True
        try:
            for path, w in self.widgets.items():
                v = get_value(self.model.spec, path)
                if w.value != v:
                    w.value = v
        finally:
            self._syncing = False

    def set_spec(self, spec: Spec) -> None:
        self.model.set(spec)

    # -- redraw
    def schedule_redraw(self) -> None:
        self._debouncer.schedule()

    def _show_busy(self, busy: bool) -> None:
        self.spinner.value = SPINNER if busy else ""

    @property
    def redraw_starts(self) -> int:
        """Redraws begun so far (one a newer request cancelled included)."""
        return self._debouncer.starts

    def checkpoint(self) -> None:
        """Stop this redraw here if a newer request came (or a Generate started)."""
        self._debouncer.checkpoint()

    def redraw_now(self) -> None:
        """Redraw synchronously (tests and notebooks use this)."""
        self._debouncer.run_now()

    def _redraw_safe(self) -> None:
        try:
            self.redraw()
        except Cancelled:
            raise
        except Exception as e:  # shown in the panel; a bad Spec must not kill the kernel's thread
            self.status.value = f"<span style='color:#b00'>redraw failed: {type(e).__name__}: {e}</span>"
            if self._debouncer.delay_s <= 0:
                raise

    def redraw(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop observing the model and drop any scheduled redraw."""
        self._debouncer.cancel()
        if self._on_model in self.model._observers:
            self.model.unobserve(self._on_model)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _accordion(groups: dict[str, list], titles: dict[str, str]):
    import ipywidgets as W

    boxes = [W.VBox(ws) for ws in groups.values()]
    acc = W.Accordion(children=boxes)
    for i, key in enumerate(groups):
        acc.set_title(i, titles.get(key, key))
    return acc


def _grouped(paths: list[str], bind) -> list:
    """Widgets of a section, with a small header before each nested sub-section."""
    import ipywidgets as W

    out, last = [], None
    for p in paths:
        parts = p.split(".")
        sub = ".".join(parts[1:-1])
        if sub and sub != last:
            out.append(W.HTML(f"<b>{sub.replace('.', ' / ')}</b>"))
        last = sub
        out.append(bind(p))
    return out


class AnatomyPanel(SpecPanel):
    """Every non-activity knob, scope presets, a live preview, a readout and a side view."""

    title = "1 · Anatomy & optics"

    def __init__(self, model: SpecModel | None = None, debounce_s: float = 0.3,
                 cell_budget: float = 350, preview_frames: int = PREVIEW_FRAMES):
        import ipywidgets as W

        super().__init__(model, debounce_s)
        self.cell_budget = cell_budget
        self.preview_frames = preview_frames
        groups = {s: _grouped(spec_paths(s), self._bind) for s in ANATOMY_SECTIONS}
        self.preset_buttons = {}
        for name in presets.names():
            b = W.Button(description=presets.SCOPE_LABELS[name], layout=W.Layout(width="auto"))
            b.on_click(lambda _b, n=name: self.apply_preset(n))
            self.preset_buttons[name] = b
        self.preview = W.Image(format="png", layout=W.Layout(width="400px", height="400px",
                                                              object_fit="contain"))
        self.preview.add_class("minisim-preview")
        self.readout_html = W.HTML("")
        self.side_image = W.Image(format="png", layout=W.Layout(width="480px"))
        self.preview_frames_data: np.ndarray | None = None
        self.preview_window: tuple[int, int, int, int] | None = None
        self.readout: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        #: scenes, worlds, side views and counts of recent redraws (see .preview)
        self.cache = PreviewCache()
        #: in a Studio, changes of fps or seed (Generate's knobs), and any change while another
        #: tab is shown (``hidden``), only mark the preview out of date; it redraws when its tab
        #: is shown again (:meth:`refresh`), so it never competes with the tab in view
        self.defer_recording_changes = False
        self.hidden = False
        self.out_of_date = False
        self._drawn_key: str | None = None
        knobs = _accordion(groups, SECTION_TITLES)
        right = W.VBox([W.HTML("<b>Preview</b> (max projection, true pixel scale)"), self.preview,
                        self.readout_html, self.side_image])
        self.widget = W.VBox([W.HBox(list(self.preset_buttons.values())), self.spinner,
                              self.status, W.HBox([knobs, right])])
        self.widget.add_class("minisim-anatomy")
        self.schedule_redraw()

    def preview_key(self, spec: Spec) -> str:
        """What the preview depends on: the Spec less its duration, and the frame counts."""
        n = min(self.preview_frames, spec.recording.n_frames)
        n_world = min(spec.recording.n_frames, max(n, round(TRACE_MAX_S * spec.recording.fps)))
        rest = spec.model_dump(exclude={"recording": {"duration_s"}})
        return f"{rest}|{n}|{n_world}|{self.cell_budget}"

    def _on_model(self, old: Spec, new: Spec) -> None:
        self.sync_widgets()
        if self.preview_key(new) == self._drawn_key:
            return  # e.g. a new duration: the preview's frames are the same (prefix-stable)
        only_recording = old.model_dump(exclude={"recording"}) == new.model_dump(exclude={"recording"})
        if self.defer_recording_changes and (only_recording or self.hidden):
            self.out_of_date = True
            why = "fps or seed changed in Generate" if only_recording else "changed in another tab"
            self.status.value = (f"<span style='color:#666'>the preview is out of date ({why}); "
                                 "it redraws when this tab is shown</span>")
            return
        self.schedule_redraw()

    def refresh(self) -> None:
        """Redraw if a deferred change left the preview out of date."""
        if self.out_of_date or (self._drawn_key is not None
                                and self._drawn_key != self.preview_key(self.model.spec)):
            self.out_of_date = False
            self.status.value = ""
            self.schedule_redraw()

    def apply_preset(self, name: str) -> None:
        """Set every anatomy knob from a scope preset (activity and recording are kept)."""
        p = presets.scope(name)
        spec = self.model.spec.model_copy(update={s: getattr(p, s) for s in ANATOMY_SECTIONS})
        self.model.set(Spec.model_validate(spec.model_dump()))

    def redraw(self) -> None:
        """Draw the preview, readout and side view of the current Spec, then count its
        detectable cells (the slow part, shown as "counting…" until done; a newer request
        stops it at its next step)."""
        from ..render import render_block

        spec = self.model.spec
        window = readout.preview_window(spec, self.cell_budget)
        n = min(self.preview_frames, spec.recording.n_frames)
        t0 = time.perf_counter()
        # traces of the first TRACE_MAX_S only (prefix-stable, so the preview frames are those of
        # the full render); the readout's detectable count is judged on that stretch of activity
        n_world = min(spec.recording.n_frames, max(n, round(TRACE_MAX_S * spec.recording.fps)))
        self.checkpoint()
        world = self.cache.world(spec, window, n_world)
        self.checkpoint()
        t1 = time.perf_counter()
        frames = render_block(world, range(n), window)
        t2 = time.perf_counter()
        y0, y1, x0, x1 = window
        self.model.render_speed_px_per_s = n * (y1 - y0) * (x1 - x0) / max(t2 - t1, 1e-6)
        self.checkpoint()
        r = readout.readout(spec, window)
        r["cells_window"] = readout.cells_in_window(world, window)
        ckey = count_key(spec, window, n_world)
        counted = self.cache.count(ckey)
        if counted is not None:
            r["cells_window"], r["detectable_window"] = counted
        side_png = self.cache.side_view(spec, lambda s: _png(side_view_figure(s)))
        t3 = time.perf_counter()
        if self.model.spec != spec:  # changed meanwhile: the next redraw shows it
            return
        self.preview_frames_data = frames
        self.preview_window = window
        self.preview_spec = spec
        self._drawn_key = self.preview_key(spec)
        self.readout = r
        self.preview.value = image_png(frames.max(axis=0))
        self.side_image.value = side_png
        self.readout_html.value = readout_html(r)
        t4 = time.perf_counter()
        self.timings = {"world_s": t1 - t0, "render_s": t2 - t1, "side_view_s": t3 - t2,
                        "shown_s": t4 - t0, "count_s": 0.0}
        if counted is not None:
            return
        self.checkpoint()
        self.spinner.value = SPINNER.replace("drawing…", "counting detectable cells…")
        counted = readout.detectable_count(world, window, self.checkpoint)
        self.cache.keep_count(ckey, counted)
        self.timings["count_s"] = time.perf_counter() - t4
        self._show_busy(self._debouncer.stale)  # "drawing…" again only if a newer request waits
        if self.model.spec != spec:
            return
        self.readout = {**r, "cells_window": counted[0], "detectable_window": counted[1]}
        self.readout_html.value = readout_html(self.readout)


def readout_html(r: dict[str, Any]) -> str:
    """The readout as a small HTML table."""
    h, w = r["fov_um"]
    zlo, zhi = r["focal_depth_range_um"]
    rows = [
        ("Cells", f"~{r['expected_cells_fov']:.0f} cells over full FOV"),
        ("Field of view", f"{h:.0f} × {w:.0f} µm"),
        ("Pixel size in tissue", f"{r['pixel_size_um']:.3f} µm"),
        ("Resolved focus", f"{r['focal_depth_um']:.0f} µm below the surface"
         + (f" (edge {zlo:.0f}–{zhi:.0f} µm)" if zhi - zlo > 0.5 else "")),
        ("Depth of field", f"{r['depth_of_field_um']:.1f} µm"),
    ]
    if "window" in r:
        y0, y1, x0, x1 = r["window"]
        rows.append(("Preview window", (f"{y1 - y0} × {x1 - x0} px, "
                                         f"~{r['expected_cells_window']:.0f} cells expected")))
    if "detectable_window" in r:
        rows.append(("Detectable in window",
                     f"{r['detectable_window']} of {r['cells_window']} cells"))
    elif "cells_window" in r:
        rows.append(("Detectable in window",
                     f"<i>counting…</i> of {r['cells_window']} cells"))
    body = "".join(f"<tr><td style='padding-right:1em'>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='minisim-readout'>{body}</table>"


def side_view_figure(spec: Spec, sv: dict | None = None):
    """A matplotlib Figure of :func:`minisim.readout.side_view` (depth grows downwards).

    The depth axis fits what is drawn (``sv["depth_limits_um"]``); the legend sits outside
    the data, to the right of the axes.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, Patch

    sv = readout.side_view(spec) if sv is None else sv
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    half = float(sv["fov_width_um"]) / 2
    for top, bot in zip(sv["band_top_um"], sv["band_bottom_um"]):
        ax.axhspan(top, bot, color="tab:green", alpha=0.15, lw=0)
    ax.scatter(sv["cell_x_um"], sv["cell_z_um"], s=6, color="tab:green", label="cells")
    for x, z, r in zip(sv["vessel_x_um"], sv["vessel_z_um"], sv["vessel_radius_um"]):
        ax.add_patch(Circle((x, z), r, color="tab:red", alpha=0.6))
    if len(sv["vessel_x_um"]):
        ax.plot([], [], "o", color="tab:red", alpha=0.6, label="vessels")
    dof = readout.depth_of_field_um(spec) / 2
    ax.fill_between(sv["x_um"], sv["focal_z_um"] - dof, sv["focal_z_um"] + dof, color="tab:blue",
                    alpha=0.15, lw=0, label=f"depth of field ({2 * dof:.0f} µm)")
    ax.plot(sv["x_um"], sv["focal_z_um"], color="tab:blue", lw=2, label="focal surface")
    shallow, deep = (float(v) for v in sv["depth_limits_um"])
    if shallow < 0:
        ax.axhline(0, color="0.3", lw=1, label="tissue surface")
    else:
        ax.annotate("tissue surface: 0 µm (above)", (0.01, 0.97), xycoords="axes fraction",
                    va="top", fontsize=7, color="0.3")
    ax.set_xlim(-half, half)
    ax.set_ylim(deep, shallow)
    ax.set_aspect("auto")
    ax.set_xlabel("lateral position x (µm)")
    ax.set_ylabel("depth below the surface (µm)")
    ax.set_title(f"side view: slab of {float(sv['slab_um']):.0f} µm through the centre",
                 fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="tab:green", alpha=0.15))
    labels.append("cell band")
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0, frameon=False)
    fig.tight_layout()
    return fig


class ActivityPanel(SpecPanel):
    """The calcium model's knobs, Quiet/Moderate/Active presets and a trace preview."""

    title = "2 · Activity"

    def __init__(self, model: SpecModel | None = None, debounce_s: float = 0.3,
                 n_units: int = TRACE_UNITS):
        import ipywidgets as W

        super().__init__(model, debounce_s)
        self.n_units = n_units
        paths = spec_paths("activity")
        knobs = [self._bind(p) for p in paths]
        self.preset_buttons = {}
        for name in presets.activity_names():
            b = W.Button(description=presets.ACTIVITY_LABELS[name])
            b.on_click(lambda _b, n=name: self.apply_preset(n))
            self.preset_buttons[name] = b
        w_px, h_px = (round(v * TRACES_DPI) for v in TRACES_FIGSIZE)
        # the image at its own pixel size, never stretched
        self.traces_image = W.Image(format="png", layout=W.Layout(
            width=f"{w_px}px", height=f"{h_px}px", object_fit="contain", flex="0 0 auto"))
        self.traces_image.add_class("minisim-traces")
        self.spike_html = W.HTML("")
        self.spike_html.add_class("minisim-spike-count")
        self.traces = None
        self.spike_ticks = 0
        self.widget = W.VBox([W.HBox(list(self.preset_buttons.values())), self.spinner,
                              self.status,
                              W.HBox([W.VBox(knobs), W.VBox([self.traces_image, self.spike_html])])])
        self.widget.add_class("minisim-activity")
        self.schedule_redraw()

    def _updates_for(self, path: str, value: Any) -> dict[str, Any]:
        if path == "activity.indicator":  # a new indicator brings its own kinetics
            return {path: value, **{f"activity.{k}": v for k, v in INDICATORS[value].items()}}
        return {path: value}

    def apply_preset(self, name: str) -> None:
        """Set the firing statistics of an activity preset (the indicator is kept)."""
        p = presets.activity(name)
        self.model.update({f"activity.{k}": getattr(p, k) for k in sorted(p.model_fields_set)})

    def redraw(self) -> None:
        spec = self.model.spec
        fps = spec.recording.fps
        # ACTIVITY_PREVIEW_S whatever the duration: traces are prefix-stable, so the first
        # frames are the recording's own
        n = max(1, round(ACTIVITY_PREVIEW_S * fps))
        act = simulate_activity(spec, np.arange(self.n_units), n)
        self.checkpoint()
        png = _png(traces_figure(act, fps))
        if self.model.spec != spec:
            return
        self.traces = act
        self.spike_ticks = int(np.count_nonzero(act.spikes))
        self.traces_image.value = png
        self.spike_html.value = (f"<span class='minisim-spike-count' data-ticks='{self.spike_ticks}'>"
                                 f"{self.spike_ticks} spike ticks in {n / fps:.0f} s of "
                                 f"{act.C.shape[0]} cells</span>")


TRACES_FIGSIZE = (7.0, 4.2)  # inches, at TRACES_DPI in the studio
TRACES_DPI = 80


def traces_figure(act, fps: float):
    """Stacked calcium traces C with spike ticks S below each one."""
    from matplotlib.figure import Figure

    C, S = act.C, act.spikes
    t = np.arange(C.shape[1]) / fps
    fig = Figure(figsize=TRACES_FIGSIZE)
    ax = fig.add_subplot()
    step = max(float(np.ptp(C, axis=1).max()) if C.size else 1.0, 0.5) * 1.1
    for u in range(C.shape[0]):
        base = -u * step
        ax.plot(t, C[u] - C[u].min() + base, lw=0.8, color=f"C{u % 10}")
        st = t[S[u] > 0]
        ax.vlines(st, base - 0.15 * step, base - 0.02 * step, color="k", lw=0.6)
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    ax.set_title(f"ground truth C (lines) and spikes S (ticks) of {C.shape[0]} cells", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- generate
def written_bytes(path: str | Path) -> int:
    """Bytes on disk of what Generate wrote: a zarr store, or an AVI with its companions."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return sum(p.stat().st_size for p in path.parent.glob(f"{stem}.*") if p.is_file()
               and (p == path or p.name in (f"{stem}.spec.json", f"{stem}.video.json")))


def _human_seconds(s: float) -> str:
    if not np.isfinite(s):
        return "? s"
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


class GeneratePanel(SpecPanel):
    """Duration, fps, seed, output and format; a size estimate; Generate with progress."""

    title = "3 · Generate"

    def __init__(self, model: SpecModel | None = None, debounce_s: float = 0.3,
                 path: str = "recording.zarr", auto_measure: bool = True):
        import ipywidgets as W

        super().__init__(model, debounce_s)
        #: measure the estimate with a short probe save (a Studio turns this on only while
        #: the Generate tab is shown, so the probe never competes with Panel 1's preview)
        self.auto_measure = auto_measure
        knobs = [self._bind(p) for p in spec_paths("recording")]
        self.path = W.Text(value=path, description="output", layout=W.Layout(width="330px"))
        self.format = W.Dropdown(options=["zarr", "avi"], value="zarr", description="format",
                                 layout=W.Layout(width="330px"))
        self.overwrite = W.Checkbox(value=False, description="overwrite", indent=False)
        self.estimate_html = W.HTML("")
        self.button = W.Button(description="Generate", button_style="primary")
        self.button.on_click(lambda _b: self.generate())
        self.progress = W.IntProgress(value=0, min=0, max=100, description="progress")
        self.format.observe(lambda _c: self.schedule_redraw(), names="value")
        self._thread: threading.Thread | None = None
        self.last_path: Path | None = None
        self.last_error: BaseException | None = None
        self.last_size_bytes: int | None = None
        self.size_html = W.HTML("")
        self.size_html.add_class("minisim-written")
        self.measured: dict[str, Any] | None = None
        self._measured: dict[str, dict[str, Any]] = {}
        self.widget = W.VBox(knobs + [self.path, self.format, self.overwrite, self.estimate_html,
                                      self.spinner, self.button, self.progress, self.status,
                                      self.size_html])
        self.widget.add_class("minisim-generate")
        self.schedule_redraw()

    def _estimate_key(self, spec: Spec) -> str:
        return f"{self.format.value}|{spec.model_dump_json(exclude={'recording': {'duration_s'}})}"

    def redraw(self) -> None:
        """Show the estimate: measured (a short probe save, cached per Spec less duration)."""
        from .estimate import measure_estimate, scale_estimate

        spec, fmt = self.model.spec, self.format.value
        head = (f"{spec.recording.n_frames} frames of {spec.sensor.height_px} × "
                f"{spec.sensor.width_px} px")
        key = self._estimate_key(spec)
        m = self._measured.get(key)
        if m is None and self.auto_measure:
            self.estimate_html.value = f"{head}: measuring a short save on this machine…"
            self.checkpoint()
            m = measure_estimate(spec, fmt)
            self._measured[key] = m
        if self.model.spec != spec or self.format.value != fmt:
            return
        if m is None:
            self.measured = None
            self.estimate_html.value = f"{head}: the estimate is measured when this tab is shown"
            return
        e = self.measured = scale_estimate(m, spec.recording.n_frames)
        self.estimate_html.value = (
            f"{head} → ~{_human_bytes(e['bytes'])} on disk (movie and ground truth), "
            f"~{_human_seconds(e['seconds'])} on this machine; memory: this kernel "
            f"{_human_bytes(e['rss_bytes'])}, {_human_bytes(e['available_bytes'])} free "
            f"<span style='color:#666'>(measured: a {e['probe_frames']}-frame save of this Spec "
            f"took {e['probe_seconds']:.1f} s)</span>")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def generate(self, wait: bool = False) -> Path | None:
        """Write the full field of view of the current Spec (in a background thread).

        ``wait=True`` blocks until done and returns the path (re-raising a failure).
        """
        if self.running:
            self.status.value = "already generating"
            return None
        spec, path, fmt = self.model.spec, Path(self.path.value).expanduser(), self.format.value
        try:
            self._check_output(path, fmt)
        except (OSError, ValueError) as e:
            self.last_error = e
            self.status.value = f"<span style='color:#b00'>{type(e).__name__}: {e}</span>"
            if wait:
                raise
            return None
        self.progress.value, self.progress.bar_style = 0, ""
        self.last_error = None
        self.last_size_bytes = None
        self.size_html.value = ""
        self.button.disabled = True
        self.model.begin_generate()  # previews wait; one in flight stops at its next step
        self._thread = threading.Thread(target=self._run, args=(spec, path, fmt), daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
            if self.last_error is not None:
                raise self.last_error
            return self.last_path
        return None

    def _check_output(self, path: Path, fmt: str) -> None:
        """Refuse, before anything runs, an output Generate could not write."""
        want = ".zarr" if fmt == "zarr" else ".avi"
        if path.suffix.lower() != want:
            raise ValueError(f"output {str(path)!r}: a {fmt} output must end in {want}")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output {path}: the folder {path.parent} does not exist")
        if path.exists() and not self.overwrite.value:
            raise FileExistsError(f"{path} exists; tick overwrite to replace it")

    def _run(self, spec: Spec, path: Path, fmt: str) -> None:
        t0 = time.perf_counter()
        try:
            # alone: a preview in flight stops at its next step (its estimate probe finishes)
            while self.model.previews_running():
                self.status.value = "waiting for a preview to stop …"
                time.sleep(0.05)
            self.status.value = f"writing {path} …"
            if fmt == "zarr":
                self._write_zarr(spec, path)
            else:
                self._write_avi(spec, path)
            self.last_path = path
            self.progress.value, self.progress.bar_style = self.progress.max, "success"
            self.last_size_bytes = written_bytes(path)
            self.status.value = f"wrote {path} in {time.perf_counter() - t0:.1f} s"
            self.size_html.value = (f"<span class='minisim-written' data-bytes='{self.last_size_bytes}'>"
                                    f"{path.name}: {_human_bytes(self.last_size_bytes)} on disk "
                                    f"({self.last_size_bytes} bytes)</span>")
        except BaseException as e:  # noqa: BLE001 -- reported in the panel, re-raised by generate(wait=True)
            self.last_error = e
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00'>{type(e).__name__}: {e}</span>"
        finally:
            self.button.disabled = False
            self.model.end_generate()

    def _write_zarr(self, spec: Spec, path: Path) -> None:
        from dask.callbacks import Callback

        from ..recording import simulate

        bar = self.progress

        class _Progress(Callback):
            def _start_state(self, dsk, state):
                self.total = max(1, sum(len(state[k]) for k in ("ready", "waiting", "running",
                                                                 "finished")))

            def _posttask(self, key, result, dsk, state, worker_id):
                bar.value = int(100 * len(state["finished"]) / self.total)

        with _Progress():
            simulate(spec).save(path, overwrite=self.overwrite.value, scheduler="threads")

    def _write_avi(self, spec: Spec, path: Path) -> None:
        try:
            from ..video import simulate_video
        except ImportError as e:
            raise RuntimeError("AVI export needs minisim.video, which this install lacks") from e
        if path.exists() and not self.overwrite.value:
            raise FileExistsError(f"{path} exists; tick overwrite to replace it")
        self.progress.bar_style = "info"
        simulate_video(spec, path, progress=False, overwrite=self.overwrite.value)
