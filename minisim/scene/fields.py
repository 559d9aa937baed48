"""Smooth fields: the scope's illumination, vignette and glow, and the tissue's neuropil.

Scope-fixed (they do not move with the brain), docs/physics.md §2.6:
* illumination falloff I(r) = 1 - (1 - e)(r / r_edge)^2, e the edge/centre ratio of the LED
  profile at r_edge = ``edge_radius_um``; multiplies fluorescence generation;
* vignette V(r) = 1 - (1 - c)(r / r_corner)^2, c the corner/centre ratio at
  r_corner = ``corner_radius_um``; multiplies all light that reaches the sensor;
* stray-light glow: an additive Gaussian of ``sigma_um``, centred ``center_offset_um`` from the
  axis, a fraction of the centre background.

Every one is a function of the position in um from the optical axis, never of the sensor's
pixel count: a smaller sensor window sees the centre crop of the same fields (a crop is a crop).

Tissue (moves with the brain), docs/physics.md §7.2: the neuropil is a smooth random field
1 + contrast g(y, x), g a unit-variance Gaussian field with correlation length l drawn as 64
random Fourier features (keyed by the seed), so it can be evaluated at any point, for any
window, without depending on the field of view.
"""

from __future__ import annotations

import numpy as np

from ..rng import rng
from ..spec import Spec

_N_FEATURES = 64


def _radius_um(y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    Y, X = np.meshgrid(y_um, x_um, indexing="ij")
    return np.hypot(Y, X)


def _quadratic_profile(enabled: bool, ratio: float, radius_um: float, y_um: np.ndarray,
                       x_um: np.ndarray) -> np.ndarray:
    """1 on the axis, ``ratio`` at ``radius_um``, quadratic in r, floored at 0.05 (§2.6); 1 if off."""
    r = _radius_um(y_um, x_um)
    if not enabled:
        return np.ones_like(r)
    return np.clip(1 - (1 - ratio) * (r / radius_um) ** 2, 0.05, None)


def illumination(spec: Spec, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """Relative excitation I(y, x), 1 at the centre."""
    f = spec.illumination.falloff
    return _quadratic_profile(f.enabled, f.edge_ratio, f.edge_radius_um, y_um, x_um)


def vignette(spec: Spec, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """Relative collection V(y, x), 1 at the centre, ``corner_ratio`` at ``corner_radius_um``."""
    v = spec.illumination.vignette
    return _quadratic_profile(v.enabled, v.corner_ratio, v.corner_radius_um, y_um, x_um)


def glow(spec: Spec, y_um: np.ndarray, x_um: np.ndarray, level: float) -> np.ndarray:
    """Additive stray light with peak ``fraction_of_background * level``."""
    gl = spec.illumination.glow
    if not gl.enabled:
        return np.zeros((len(y_um), len(x_um)))
    g = rng(spec.recording.seed, "glow")
    ang = g.uniform(0, 2 * np.pi)
    cy = gl.center_offset_um * np.sin(ang)
    cx = gl.center_offset_um * np.cos(ang)
    s = gl.sigma_um
    Y, X = np.meshgrid(y_um - cy, x_um - cx, indexing="ij")
    return gl.fraction_of_background * level * np.exp(-0.5 * (Y * Y + X * X) / s**2)


def neuropil_map(spec: Spec, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """Relative neuropil brightness 1 + contrast g(y, x) (mean 1, floored at 0.05)."""
    npl = spec.tissue.neuropil
    g = rng(spec.recording.seed, "neuropil_map")
    k = g.standard_normal((_N_FEATURES, 2)) / npl.correlation_length_um
    phase = g.uniform(0, 2 * np.pi, _N_FEATURES)
    # sum_k cos(ky y + kx x + p) = Re(sum_k e^{i(ky y + p)} e^{i kx x}): one complex matmul
    a = np.exp(1j * (np.asarray(y_um, float)[:, None] * k[None, :, 0] + phase[None, :]))
    b = np.exp(1j * (k[:, 1][:, None] * np.asarray(x_um, float)[None, :]))
    field = (a @ b).real * np.sqrt(2.0 / _N_FEATURES)
    return np.clip(1 + npl.spatial_contrast * field, 0.05, None)
