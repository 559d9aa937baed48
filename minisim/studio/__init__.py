"""The studio: build a recording's Spec with widgets, see it, generate it.

Three panels share one :class:`SpecModel`: :class:`AnatomyPanel` (scope, tissue, cells,
vessels, fields, motion; a live preview that is a crop of the very render Generate writes),
:class:`ActivityPanel` (the calcium model, with ground-truth traces) and
:class:`GeneratePanel` (duration, fps, seed, output). :class:`Studio` puts them in tabs with
Spec load/save. Everything is plain Python around ipywidgets, so pytest drives it without a
browser; the packaged notebook ``build_recording`` only shows a :class:`Studio`.
"""

from .app import Studio
from .estimate import measure_estimate
from .model import Debouncer, SpecModel
from .panels import ActivityPanel, AnatomyPanel, GeneratePanel

__all__ = [
           "ActivityPanel",
           "AnatomyPanel",
           "Debouncer",
           "GeneratePanel",
           "SpecModel",
           "Studio",
           "measure_estimate",
]
