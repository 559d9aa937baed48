"""Widgets made from the Spec's own field definitions (type, range, description)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from ..spec import Spec, field_info
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


def _bounds(info) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in info.metadata:
        for attr in ("ge", "gt"):
            if getattr(m, attr, None) is not None:
                lo = getattr(m, attr)
        for attr in ("le", "lt"):
            if getattr(m, attr, None) is not None:
                hi = getattr(m, attr)
    return lo, hi


def make_widget(path: str, value: Any):
    """A widget for the field at ``path``: Checkbox, Dropdown, IntText or FloatText."""
    import ipywidgets as W

    info = field_info(path)
    ann = info.annotation
    label = path.split(".")[-1]
    lo, hi = _bounds(info)
    tip = info.description or ""
    if lo is not None or hi is not None:
        tip = f"{tip} [{lo} .. {hi}]".strip()
    style = {"description_width": "190px"}
    layout = W.Layout(width="330px")
    if ann is bool:
        w = W.Checkbox(value=value, description=label, indent=False, layout=layout)
    elif typing.get_origin(ann) is typing.Literal:
        w = W.Dropdown(options=list(typing.get_args(ann)), value=value, description=label,
                       style=style, layout=layout)
    elif ann is int:
        w = W.IntText(value=value, description=label, style=style, layout=layout)
    else:
        w = W.FloatText(value=value, description=label, style=style, layout=layout)
    w.tooltip = tip or path
    return w
