"""Widgets made from the Spec's own field definitions (type, range, description)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from ..spec import Spec, field_bounds, field_info
from ..spec import get_path as get_value  # noqa: F401  (the panels read values by path)


def spec_paths(section: str, skip: tuple[str, ...] = ("extra_bands",)) -> list[str]:
    """Dotted paths of every scalar field under the top-level ``section`` of the Spec."""
    out: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            if name in skip:
                continue
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}.{name}")
            else:
                out.append(f"{prefix}.{name}")

    walk(Spec.model_fields[section].annotation, section)
    return out


def limits(path: str) -> tuple[float | None, float | None]:
    """(lowest, highest) value the Spec allows at ``path`` (None where it sets no bound),
    from :func:`minisim.spec.field_bounds`; whether an end is open does not matter to a slider."""
    b = field_bounds(path)
    return b.get("ge", b.get("gt")), b.get("le", b.get("lt"))


#: Quantities that span decades from (almost) zero: log sliders from ``hi * LOG_FLOOR``.
LOG_FROM_ZERO = frozenset({
    "cells.density_per_mm3", "cells.brightness_photons_per_s",
    "tissue.neuropil.photons_per_um2_s", "activity.rate_median_hz",
    "sensor.dark_current_e_per_s", "sensor.hot_pixel_dark_e_per_s",
    "recording.duration_s", "recording.fps",
})
LOG_FLOOR = 1e-6
#: Identifiers rather than quantities: typed, not slid.
TYPED = frozenset({"recording.seed"})


def slider_range(path: str) -> tuple[float, float, bool]:
    """``(min, max, log)`` of the slider for the numeric field at ``path``, from its bounds.

    A log scale where the range spans decades: ``max / min >= 1000``; or a time or
    concentration (``_ms``, ``_s``, ``_nm``) whose range from 0 runs 100 times past the field's
    default (its slider starts at 1/1000 of the default); or
    one of :data:`LOG_FROM_ZERO` (its slider starts at ``max * LOG_FLOOR``).
    """
    info = field_info(path)
    lo, hi = limits(path)
    if lo is None or hi is None:
        raise ValueError(f"{path} has no finite range for a slider (bounds {lo}, {hi})")
    lo, hi = float(lo), float(hi)
    if path in LOG_FROM_ZERO:
        return max(lo, hi * LOG_FLOOR), hi, True
    if info.annotation is not float:
        return lo, hi, False
    if lo > 0 and hi / lo >= 1000:
        return lo, hi, True
    default = info.default if isinstance(info.default, (int, float)) else 0.0
    if lo == 0 and default > 0 and hi / default >= 100 and path.endswith(("_ms", "_s", "_nm")):
        # a time or concentration (never meaningfully 0) whose range runs decades past its
        # usual value
        return min(hi * LOG_FLOOR, default * 1e-3), hi, True
    return lo, hi, False


def make_widget(path: str, value: Any):
    """A widget for the field at ``path``: Checkbox, Dropdown, or a slider with its number.

    Numbers get an IntSlider, FloatSlider or FloatLogSlider over the field's own range
    (:func:`slider_range`), ``continuous_update=False`` (the Spec changes on release) and an
    editable readout beside it; :data:`TYPED` fields (the seed) and a field without both bounds get a number box.
    """
    import math

    import ipywidgets as W

    info = field_info(path)
    ann = info.annotation
    label = path.split(".")[-1]
    lo, hi = limits(path)
    tip = info.description or ""
    if lo is not None or hi is not None:
        tip = f"{tip} [{lo} .. {hi}]".strip()
    style = {"description_width": "170px"}
    layout = W.Layout(width="400px")
    common = {"description": label, "style": style, "layout": layout}
    if ann is bool:
        w = W.Checkbox(value=value, description=label, indent=False, layout=layout)
    elif typing.get_origin(ann) is typing.Literal:
        w = W.Dropdown(options=list(typing.get_args(ann)), value=value, **common)
    elif path in TYPED or lo is None or hi is None:  # no range to slide over
        w = W.IntText(value=value, **common) if ann is int else W.FloatText(value=value, **common)
    else:
        smin, smax, log = slider_range(path)
        slider = {"continuous_update": False, "readout": True, **common}
        if ann is int:
            w = W.IntSlider(value=value, min=int(smin), max=int(smax), step=1, **slider)
        elif log:
            w = W.FloatLogSlider(value=value, base=10, min=math.log10(smin), max=math.log10(smax),
                                 step=0.01, readout_format=".4g", **slider)
        else:
            w = W.FloatSlider(value=value, min=smin, max=smax, step=(smax - smin) / 1000,
                              readout_format=".4g", **slider)
    w.tooltip = tip or path
    w.add_class("minisim-knob")
    return w
