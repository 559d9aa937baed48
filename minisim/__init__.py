"""minisim: realistic synthetic one-photon miniscope recordings with complete ground truth.

The public API is this page and nothing else.
"""

from . import presets
from .spec import Spec

__version__ = "2.0.0.dev0"

__all__ = ["Spec", "presets", "__version__"]
