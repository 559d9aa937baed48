"""minisim: realistic synthetic one-photon miniscope recordings with complete ground truth.

A recording is a pure function of its :class:`Spec`: ``simulate(spec)`` returns a lazy
:class:`Recording` (dask-backed movie, labelled xarray ground truth), ``Recording.save``
computes it chunk by chunk into zarr, ``Recording.load`` opens it again lazily, and
``score(truth, estimate)`` scores a cell-extraction pipeline's output against the ground truth.
The public API is this page and nothing else.
"""

from . import presets
from ._version import __version__
from .recording import IncompleteRecordingError, Recording, simulate
from .score import score
from .spec import Spec


def simulate_video(spec, path, **kwargs):
    """Render ``spec`` straight into an AVI at ``path`` (see :mod:`minisim.video`)."""
    from .video import simulate_video as _simulate_video

    return _simulate_video(spec, path, **kwargs)


def open_sweep(folder, **kwargs):
    """Open a finished (or partial) sweep lazily as one xarray (see :mod:`minisim.sweep`)."""
    from .sweep import open_sweep as _open_sweep

    return _open_sweep(folder, **kwargs)


__all__ = [
    "IncompleteRecordingError",
    "Recording",
    "Spec",
    "__version__",
    "open_sweep",
    "presets",
    "score",
    "simulate",
    "simulate_video",
]
