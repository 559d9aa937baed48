"""What a Spec means in numbers and in profile: the studio's readout and side view.

Pure numpy functions of a Spec (no widgets), so the studio, the anatomy tutorial and the
tests share one definition:

* :func:`readout` -- field of view, pixel size in tissue, expected somata over the field,
  resolved focus (and its range across the field with field curvature), depth of field, and,
  given a World built for a window, how many cells there are detectable.
* :func:`side_view` -- a thin slab through the field's centre seen from the side: cell depths
  against lateral position, the focal surface z_f(x), vessel cross-sections, band limits.
* :func:`preview_window` -- the centred window the studio previews at true pixel scale, sized
  so it holds about ``cell_budget`` cells (denser tissue, smaller window).

Depth of field (Inoue / Shillaber): d = lambda n / NA^2 + n delta / NA, the wave-optical
term plus the geometric term of one object-side pixel delta = pixel pitch / magnification
(lambda the emission wavelength, n the tissue index). It is the axial range over which a
point stays as sharp as the sampling allows; defocus blur itself follows docs/physics.md §2.3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .scene.cells import expected_count, place_cells
from .scene.optics import focal_depth_um, pixel_index
from .scene.vessels import vessel_network
from .spec import Spec


def depth_of_field_um(spec: Spec) -> float:
    """Depth of field lambda n / NA^2 + n delta / NA in um (see the module docstring)."""
    o = spec.optics
    n = o.tissue_refractive_index
    return float(o.emission_wavelength_um * n / o.na**2 + n * spec.pixel_size_um / o.na)


def _corner_radius_um(spec: Spec) -> float:
    h, w = spec.fov_um
    return float(np.hypot(h / 2, w / 2))


def readout(spec: Spec, window: tuple[int, int, int, int] | None = None,
            world: Any = None) -> dict[str, Any]:
    """The numbers the studio shows for ``spec``.

    Parameters
    ----------
    spec : the Spec.
    window : (y0, y1, x0, x1) sensor pixels of a preview window (its cell count is given).
    world : a :class:`minisim.render.World` built for ``window``; when given, the cells
        centred in the window and the detectable ones among them are counted
        (:func:`detectable_count`).

    Returns
    -------
    dict with ``fov_um`` (height, width), ``pixel_size_um``, ``expected_cells_fov``,
    ``focal_depth_um`` (on axis), ``focal_depth_range_um`` (shallowest at the FOV corner,
    deepest on axis), ``depth_of_field_um``, and with a window ``window``,
    ``expected_cells_window``; with a world ``cells_window`` and ``detectable_window``.

    Examples
    --------
    >>> from minisim import Spec
    >>> r = readout(Spec())
    >>> round(r["pixel_size_um"], 3), round(r["expected_cells_fov"], 1)
    (0.375, 8.3)
    """
    z0 = spec.optics.focal_depth_um
    z_corner = float(focal_depth_um(spec, _corner_radius_um(spec)))
    out: dict[str, Any] = {
        "fov_um": spec.fov_um,
        "pixel_size_um": spec.pixel_size_um,
        "expected_cells_fov": expected_count(spec),
        "focal_depth_um": z0,
        "focal_depth_range_um": (min(z0, z_corner), max(z0, z_corner)),
        "depth_of_field_um": depth_of_field_um(spec),
    }
    if window is not None:
        y0, y1, x0, x1 = window
        d = spec.pixel_size_um
        out["window"] = tuple(int(v) for v in window)
        out["expected_cells_window"] = expected_count(spec, (y1 - y0) * (x1 - x0) * d * d * 1e-6)
    if world is not None:
        out["cells_window"], out["detectable_window"] = detectable_count(world, window)
    return out


def cells_in_window(world: Any, window: tuple[int, int, int, int] | None = None) -> int:
    """How many of ``world``'s cells have their centre over ``window`` (default: the sensor)."""
    return int(_centres_in_window(world.spec, world.scene.cells, _window_of(world.spec, window)).sum())


def detectable_count(world: Any, window: tuple[int, int, int, int] | None = None,
                     checkpoint: Callable[[], None] | None = None) -> tuple[int, int]:
    """(cells centred in ``window``, how many of them are detectable) for a World built for it.

    Detectable is :func:`minisim.truth.activity_metrics`' rule, judged on the frames the
    World serves (the oracle renders up to :data:`minisim.truth.ORACLE_FRAMES` of them: the
    costly part, seconds on a V4 preview window). ``checkpoint``, when given, is called before
    each read of the World's traces, motion or footprints, so a caller can stop the count
    there by raising from it (the studio does when a newer redraw is asked for); the World
    is left as it was.

    Examples
    --------
    >>> from minisim import presets
    >>> from minisim.render import build_world
    >>> spec = presets.scope("miniscope_v4_ca1").with_updates(
    ...     {"sensor.width_px": 64, "sensor.height_px": 64, "recording.duration_s": 1.0})
    >>> cells, detectable = detectable_count(build_world(spec, (16, 48, 16, 48)), (16, 48, 16, 48))
    >>> 0 <= detectable <= cells
    True
    """
    from .truth import activity_metrics

    inside = _centres_in_window(world.spec, world.scene.cells, _window_of(world.spec, window))
    judged = world if checkpoint is None else _Polled(world, checkpoint)
    detectable = activity_metrics(judged)["detectable"]
    return int(inside.sum()), int((detectable & inside).sum())


class _Polled:
    """A World (or its Scene) that calls ``checkpoint`` before each of its costly reads."""

    _POLLED = frozenset({"traces", "motion", "footprints_e", "tissue_e"})

    def __init__(self, inner: Any, checkpoint: Callable[[], None]):
        self._inner, self._checkpoint = inner, checkpoint

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name == "scene":
            return _Polled(value, self._checkpoint)
        if name in self._POLLED:
            def polled(*args, **kwargs):
                self._checkpoint()
                return value(*args, **kwargs)
            return polled
        return value


def _window_of(spec: Spec, window) -> tuple[int, int, int, int]:
    return tuple(window) if window is not None else (0, spec.sensor.height_px, 0, spec.sensor.width_px)


def _centres_in_window(spec: Spec, cells, window) -> np.ndarray:
    """Which cells have their centre over the sensor pixels of ``window``."""
    y0, y1, x0, x1 = window
    d = spec.pixel_size_um
    i = pixel_index(cells.y_um, spec.sensor.height_px, d)
    j = pixel_index(cells.x_um, spec.sensor.width_px, d)
    return (i >= y0 - 0.5) & (i < y1 - 0.5) & (j >= x0 - 0.5) & (j < x1 - 0.5)


def preview_window(spec: Spec, cell_budget: float = 350) -> tuple[int, int, int, int]:
    """A centred window (y0, y1, x0, x1) expected to hold about ``cell_budget`` somata.

    The window keeps the true pixel scale; its side is a multiple of 8 px and at least
    32 px, clipped to the sensor (an axis shorter than the rule asks is taken whole). Denser
    tissue gives a smaller window with about the same number of cells.

    Examples
    --------
    >>> from minisim import presets
    >>> preview_window(presets.scope("miniscope_v4_ca1"))
    (116, 492, 116, 492)
    """
    if cell_budget <= 0:
        raise ValueError(f"cell_budget={cell_budget} must be positive")
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    per_mm2 = expected_count(spec, 1.0)
    if per_mm2 > 0:
        side_px = np.sqrt(cell_budget / per_mm2 * 1e6) / d
        side = max(32, int(side_px // 8) * 8)
    else:
        side = max(H, W)

    def span(n: int) -> tuple[int, int]:
        s = min(side, n)
        a = (n - s) // 2
        return a, a + s

    (y0, y1), (x0, x1) = span(H), span(W)
    return y0, y1, x0, x1


def side_view(spec: Spec, n_max: int = 2000) -> dict[str, np.ndarray]:
    """A slab through the field's centre (|y| < slab/2) seen from the side.

    Returns a dict of arrays: ``cell_x_um``, ``cell_z_um``, ``cell_radius_um`` (at most
    ``n_max`` cells, chosen by unit id), ``slab_um`` (the slab's thickness), ``x_um`` and
    ``focal_z_um`` (the focal surface across the field, shallower at the edges with field
    curvature), ``vessel_x_um``, ``vessel_z_um``, ``vessel_radius_um`` (where vessel centre
    lines cross the slab), ``vessel_depth_extent_um`` ((top, bottom) of the vessel layer),
    ``band_top_um``, ``band_bottom_um`` (one per cell band), ``tissue_surface_um`` (0),
    ``front_face_um`` (-tissue_gap) and ``depth_limits_um`` ((shallow, deep) ends of a depth
    axis that fits what is drawn: from just above the surface, or the top vessel, to below
    the deepest cell).

    Examples
    --------
    >>> from minisim import presets
    >>> sv = side_view(presets.scope("miniscope_v4_ca1"))
    >>> bool(sv["focal_z_um"][0] < sv["focal_z_um"][100])  # shallower at the edge
    True
    """
    h, w = spec.fov_um
    bands = spec.cells.bands
    areal = sum(b.density_per_mm3 * b.band_thickness_um * 1e-3 for b in bands) * 1e-6  # per um^2
    r_max = max(b.soma_radius_um for b in bands)
    slab = 4 * r_max
    if areal > 0:
        slab = max(slab, min(0.25 * h, n_max / max(areal * w, 1e-12)))
    slab = float(min(slab, h))
    cells = place_cells(spec, (-slab / 2, slab / 2), (-w / 2, w / 2))
    idx = np.arange(len(cells))
    if len(idx) > n_max:
        idx = np.sort(np.argsort(cells.unit_id, kind="stable")[:n_max])
    x = np.linspace(-w / 2, w / 2, 201)
    vx, vz, vr = [], [], []
    for v in vessel_network(spec):
        p = v.points_um
        y0, y1 = p[:-1, 0], p[1:, 0]
        cross = np.flatnonzero((y0 <= 0) != (y1 <= 0))
        for k in cross:
            t = y0[k] / (y0[k] - y1[k])
            xc = p[k, 1] + t * (p[k + 1, 1] - p[k, 1])
            if abs(xc) <= w / 2 + v.radius_um:
                vx.append(xc)
                vz.append(spec.vasculature.depth_um)
                vr.append(v.radius_um)
    va = spec.vasculature
    r_top = max(vr) if vr else va.trunk_radius_um
    cz, cr = cells.z_um[idx], cells.radius_um[idx]
    band_top = np.array([b.depth_um - b.band_thickness_um / 2 for b in bands])
    band_bottom = np.array([b.depth_um + b.band_thickness_um / 2 for b in bands])
    focal = focal_depth_um(spec, np.abs(x))
    shallowest = [*band_top, float(focal.min())] + ([va.depth_um - r_top] if vr else [])
    deepest = [*band_bottom, float(focal.max())] + ([float((cz + cr).max())] if len(cz) else [])
    return {
        "cell_x_um": cells.x_um[idx],
        "cell_z_um": cells.z_um[idx],
        "cell_radius_um": cells.radius_um[idx],
        "slab_um": np.float64(slab),
        "x_um": x,
        "focal_z_um": focal,
        "vessel_x_um": np.asarray(vx, float),
        "vessel_z_um": np.asarray(vz, float),
        "vessel_radius_um": np.asarray(vr, float),
        "vessel_depth_extent_um": np.array(
            [va.depth_um - r_top, va.depth_um + r_top] if va.enabled else [np.nan, np.nan]),
        "band_top_um": band_top,
        "band_bottom_um": band_bottom,
        "tissue_surface_um": np.float64(0.0),
        "front_face_um": np.float64(-spec.optics.tissue_gap_um),
        "fov_width_um": np.float64(w),
        "depth_limits_um": _depth_limits(min(shallowest), max(deepest)),
    }


def _depth_limits(top: float, bottom: float) -> np.ndarray:
    """(shallow, deep) ends of a side view's depth axis around what it shows.

    The axis runs from just above the surface to just below the deepest cell, unless the
    surface lies more than one content-height above the shallowest thing drawn (a vessel, a
    band, the focal surface): then it starts just above that thing, so the cells are not
    squeezed into the bottom of the plot.
    """
    span = max(bottom - top, 1.0)
    pad = 0.08 * span + 3.0
    shallow = -pad if top <= span else top - pad
    return np.array([shallow, bottom + pad])
