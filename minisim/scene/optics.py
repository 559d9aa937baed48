"""Optics of a one-photon scope in scattering tissue: what a soma looks like on the sensor.

Each function is one physical effect of docs/physics.md §2, as a pure numpy function, so the
anatomy tutorial can show them one at a time:

* :func:`focal_depth_um` -- field curvature: z_f(r) = z_0 - (R - sqrt(R^2 - r^2))   (§2.4)
* :func:`psf_sigma_um` -- in-focus Gaussian PSF sigma_0 = 0.21 lambda/NA (Zhang et al. 2007),
  aberrations, and geometric defocus: sigma = sqrt(sigma_0^2 + sigma_ab^2 + (|dz| tan(theta)/2)^2),
  theta = asin(NA/n)                                                            (§2.2, §2.3)
* :func:`collected_fraction` -- depth dimming T(z) = exp(-z/L_ex - z/L_em)        (§2.5)
* :func:`sharp_share` -- ballistic share q = b / (b + (1 - b) eta), b = exp(-z/l_s)  (§2.5)
* :func:`halo_sigma_um` -- width of the scattered haze, max(0.3 z, sigma(dz))    (§2.5)
* :func:`planted_footprint` -- the soma in tissue: projected thickness of a cytosolic
  ellipsoid with a dimmer nucleus, plus tapering proximal dendrites.

Defocus spreads light but never removes it; only attenuation, absorption and vignetting do.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import ndtr

from ..rng import STREAM_STATE, id_halves, key_words, next_uniform53, normal_quantile, open_stream
from ..spec import Spec


def focal_depth_um(spec: Spec, r_um: np.ndarray | float) -> np.ndarray:
    """Depth of the focal surface at lateral distance ``r_um`` from the optical axis."""
    z0 = spec.optics.focal_depth_um
    fc = spec.optics.field_curvature
    r = np.asarray(r_um, dtype=float)
    if not fc.enabled:
        return np.full_like(r, z0)
    R = fc.radius_um
    return z0 - (R - np.sqrt(np.maximum(R * R - r * r, 0.0)))


def sigma0_um(spec: Spec) -> float:
    """In-focus PSF sigma: Gaussian fit of the Airy core plus aberrations."""
    s0 = 0.21 * spec.optics.emission_wavelength_um / spec.optics.na
    return float(np.hypot(s0, spec.optics.aberration_sigma_um))


def tan_half_angle(spec: Spec) -> float:
    o = spec.optics
    s = min(o.na / o.tissue_refractive_index, 0.999)
    return float(s / np.sqrt(1 - s * s))


def psf_sigma_um(spec: Spec, dz_um: np.ndarray | float) -> np.ndarray:
    """Lateral PSF sigma at axial distance ``dz_um`` from the focal surface."""
    dz = np.abs(np.asarray(dz_um, dtype=float))
    if not spec.optics.defocus_enabled:
        dz = np.zeros_like(dz)
    return np.sqrt(sigma0_um(spec) ** 2 + (dz * tan_half_angle(spec) / 2.0) ** 2)


def collected_fraction(spec: Spec, z_um: np.ndarray | float) -> np.ndarray:
    """T(z): fraction of a source's light at depth z that is excited and collected."""
    a = spec.tissue.attenuation
    z = np.asarray(z_um, dtype=float)
    if not a.enabled:
        return np.ones_like(z)
    return np.exp(-z / a.excitation_length_um - z / a.emission_length_um)


def sharp_share(spec: Spec, z_um: np.ndarray | float) -> np.ndarray:
    """q(z): share of the collected light that is ballistic (imaged sharply)."""
    sc = spec.tissue.scatter
    z = np.asarray(z_um, dtype=float)
    if not sc.enabled:
        return np.ones_like(z)
    b = np.exp(-z / sc.scattering_length_um)
    return b / (b + (1 - b) * sc.scattered_collection_fraction)


def halo_sigma_um(spec: Spec, z_um: np.ndarray | float, sigma_um: np.ndarray | float) -> np.ndarray:
    """Width of the scattered haze of a source at depth z (estimate: 0.3 z)."""
    k = spec.tissue.scatter.halo_width_per_depth
    return np.maximum(k * np.asarray(z_um, dtype=float), sigma_um)


def oversample(spec: Spec) -> int:
    """Sub-pixels per pixel side for drawing somata (sub-pixel <= 1 um, at most 8)."""
    return int(np.clip(np.ceil(spec.pixel_size_um / 1.0), 1, 8))


def pixel_center_um(index: np.ndarray | int, n_px: int, pixel_um: float) -> np.ndarray:
    """Tissue coordinate (optical axis at 0) of pixel ``index`` of an ``n_px`` axis.

    The one home of pixel -> tissue geometry (its inverse is :func:`pixel_index`): the axis
    is centred on the optical axis, pixel ``i`` covers [i - 1/2, i + 1/2) in index units.

    Examples
    --------
    >>> pixel_center_um(np.arange(4), 4, 2.0)
    array([-3., -1.,  1.,  3.])
    """
    return (np.asarray(index, dtype=float) - (n_px - 1) / 2.0) * pixel_um


def pixel_index(coord_um: np.ndarray | float, n_px: int, pixel_um: float) -> np.ndarray:
    """Fractional pixel index of tissue coordinate ``coord_um`` on an ``n_px`` axis.

    The inverse of :func:`pixel_center_um`: a pixel's centre maps to its integer index, so
    ``floor(pixel_index(c) + 1/2)`` is the pixel that contains ``c``.

    Examples
    --------
    >>> pixel_index(np.array([-3.0, 0.0, 3.0]), 4, 2.0)
    array([0. , 1.5, 3. ])
    """
    return np.asarray(coord_um, dtype=float) / pixel_um + (n_px - 1) / 2


def patch_overlap(
    i0: int, j0: int, shape: tuple[int, int], window: tuple[int, int, int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Where a patch whose first pixel is (i0, j0) meets ``window`` = (y0, y1, x0, x1).

    Returns (slices into the patch, slices into the window) of the overlap, both the same
    shape, or None when they do not meet. The one home of clipping a footprint patch.

    Examples
    --------
    >>> patch_overlap(-2, 5, (4, 4), (0, 10, 0, 7))
    ((slice(2, 4, None), slice(0, 2, None)), (slice(0, 2, None), slice(5, 7, None)))
    >>> patch_overlap(20, 0, (4, 4), (0, 10, 0, 7)) is None
    True
    """
    y0, y1, x0, x1 = window
    ia, ja = max(i0, y0), max(j0, x0)
    ib, jb = min(i0 + shape[0], y1), min(j0 + shape[1], x1)
    if not (ia < ib and ja < jb):
        return None
    return ((slice(ia - i0, ib - i0), slice(ja - j0, jb - j0)),
            (slice(ia - y0, ib - y0), slice(ja - x0, jb - x0)))


@njit(cache=True, nogil=True, error_model="numpy")
def _cell_shapes(k0, k1, lo, hi, ell_sd, length_um, ell, phi, angles, lengths):
    st = np.zeros(STREAM_STATE, np.uint64)
    k = angles.shape[1]
    for i in range(lo.size):
        open_stream(st, lo[i], hi[i], np.uint64(0), np.uint64(0))
        ell[i] = math.exp(ell_sd * normal_quantile(next_uniform53(k0, k1, st)))
        phi[i] = math.pi * next_uniform53(k0, k1, st)
        for j in range(k):
            angles[i, j] = 2.0 * math.pi * next_uniform53(k0, k1, st)
        for j in range(k):
            lengths[i, j] = length_um * (0.6 + 0.8 * next_uniform53(k0, k1, st))


def _shapes_of(spec: Spec, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c, n = spec.cells, lo.size
    k = int(c.dendrite_count)
    ell, phi, angles, lengths = np.empty(n), np.empty(n), np.empty((n, k)), np.empty((n, k))
    _cell_shapes(*key_words(spec.recording.seed, "cell_shape"), lo, hi, float(c.ellipticity_sd),
                 float(c.dendrite_length_um), ell, phi, angles, lengths)
    return ell, phi, angles, lengths


def cell_shapes(spec: Spec, unit_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cells' shape draws, each keyed by (seed, its unit id) only: ellipticity (n,),
    orientation (n,) rad, dendrite angles (n, k) rad and lengths (n, k) um, k =
    ``cells.dendrite_count``.

    Cell i reads its unit id's stream of (seed, ``"cell_shape"``) (minisim.rng, keyed
    constants): uniform 0 the ellipticity's normal (LogNormal(0, ``ellipticity_sd``)), 1 the
    orientation U(0, pi), then k angles U(0, 2 pi) and k length factors U(0.6, 1.4). Drawn
    whether or not dendrites are enabled, so switching them off changes nothing else, and the
    first two do not depend on k.
    """
    return _shapes_of(spec, *id_halves(np.asarray(unit_ids, np.int64).reshape(-1)))


def cell_shape(spec: Spec, unit_id: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """One cell's shape draws (:func:`cell_shapes`, the same values): ellipticity, orientation
    (rad), dendrite angles (rad) and lengths (um), ``cells.dendrite_count`` of each."""
    v = int(unit_id) & 0xFFFFFFFFFFFFFFFF  # the int64 id's bits
    ell, phi, angles, lengths = _shapes_of(spec, np.array([v & 0xFFFFFFFF], np.uint64),
                                           np.array([v >> 32], np.uint64))
    return float(ell[0]), float(phi[0]), angles[0], lengths[0]


def planted_footprint(
    spec: Spec, unit_id: int, radius_um: float, cy_um: float, cx_um: float,
    i0: int, j0: int, ni: int, nj: int, n_sub: int,
) -> np.ndarray:
    """The soma as it is in tissue, on an oversampled patch; sums to 1 (its light budget).

    The patch covers pixels [i0, i0+ni) x [j0, j0+nj) of the sensor grid, ``n_sub`` sub-pixels
    per pixel side (:func:`oversample`). Emission is proportional to the projected thickness of
    cytoplasm: an ellipsoid of radius r (ellipticity and orientation per cell) minus a nucleus
    of radius ``nucleus_radius_fraction`` r that is ``nucleus_brightness`` as bright (GCaMP is
    cytosolic); proximal dendrites are tapering lines of Gaussian cross-section.
    """
    c = spec.cells
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    ell, phi, dend_angles, dend_len = cell_shape(spec, unit_id)

    sub = d / n_sub
    ys = pixel_center_um(i0, H, d) - d / 2 + (np.arange(ni * n_sub) + 0.5) * sub - cy_um
    xs = pixel_center_um(j0, W, d) - d / 2 + (np.arange(nj * n_sub) + 0.5) * sub - cx_um
    img = np.zeros((ni * n_sub, nj * n_sub))

    def box(y_lo, y_hi, x_lo, x_hi):
        """Sub-pixel slices covering [y_lo, y_hi] x [x_lo, x_hi] um (relative to the centre)."""
        a, b = np.searchsorted(ys, [y_lo - sub, y_hi + sub])
        c_, e = np.searchsorted(xs, [x_lo - sub, x_hi + sub])
        return slice(a, b), slice(c_, e)

    # each part is evaluated only on the sub-pixels it can touch (outside, it is exactly 0
    # or below exp(-8) of a dendrite's centre line)
    reach = radius_um * max(np.sqrt(ell), 1 / np.sqrt(ell))
    sy, sx = box(-reach, reach, -reach, reach)
    Y, X = np.meshgrid(ys[sy], xs[sx], indexing="ij")
    u = (X * np.cos(phi) + Y * np.sin(phi)) * np.sqrt(ell)
    v = (-X * np.sin(phi) + Y * np.cos(phi)) / np.sqrt(ell)
    rho2 = (u * u + v * v) / radius_um**2
    soma = np.sqrt(np.clip(1 - rho2, 0, None))
    f = c.nucleus_radius_fraction
    if f > 0:
        soma -= (1 - c.nucleus_brightness) * f * np.sqrt(np.clip(1 - rho2 / (f * f), 0, None))
    img[sy, sx] += soma
    if c.dendrites_enabled and c.dendrite_count and c.dendrite_brightness > 0:
        w = c.dendrite_width_um / 2
        for a, L in zip(dend_angles, dend_len):
            ca, sa = np.cos(a), np.sin(a)
            r0, r1 = radius_um * 0.8, radius_um * 0.8 + L
            ey, ex = (r0 * sa, r1 * sa), (r0 * ca, r1 * ca)
            sy, sx = box(min(ey) - 4 * w, max(ey) + 4 * w, min(ex) - 4 * w, max(ex) + 4 * w)
            Y, X = np.meshgrid(ys[sy], xs[sx], indexing="ij")
            along = X * ca + Y * sa
            across = -X * sa + Y * ca
            s_ = (along - r0) / L
            taper = np.where((s_ >= 0) & (s_ <= 1) & (np.abs(across) <= 4 * w), 1 - s_, 0.0)
            img[sy, sx] += c.dendrite_brightness * taper * np.exp(-0.5 * (across / w) ** 2)
    total = img.sum()
    return img / total if total > 0 else img


def bin_patch(img: np.ndarray, n_sub: int) -> np.ndarray:
    """Sum ``n_sub`` x ``n_sub`` sub-pixels into pixels."""
    if n_sub == 1:
        return img
    out = img[::n_sub, ::n_sub].copy()
    for a in range(n_sub):
        for b in range(n_sub):
            if a or b:
                out += img[a::n_sub, b::n_sub]
    return out


def blur_and_bin(img_os: np.ndarray, sigma_um: float, pixel_um: float, n_sub: int) -> np.ndarray:
    """Gaussian PSF blur of an oversampled patch, integrated exactly over each pixel.

    Each sub-pixel is a point source at its centre; its light falling on pixel i is the
    integral of N(y; y_sub, sigma) over the pixel, so blur and binning are one separable
    product G_y img G_x^T (light that leaves the patch is lost, as in any crop).
    """
    n_i, n_j = img_os.shape[0] // n_sub, img_os.shape[1] // n_sub
    if sigma_um <= 1e-6 * pixel_um:
        return bin_patch(img_os, n_sub)

    n = max(n_i, n_j)
    # the weight of sub-pixel l on pixel k depends on k*n_sub - l only (a Toeplitz matrix):
    # evaluate the normal CDF once per offset, not once per (pixel edge, sub-pixel) pair
    m = np.arange(-n * n_sub, n * n_sub + 1)
    cdf = ndtr((m - 0.5) * (pixel_um / n_sub) / sigma_um)

    def weights(n_px: int) -> np.ndarray:
        k = np.arange(n_px + 1)[:, None] * n_sub - np.arange(n_px * n_sub)[None, :] + n * n_sub
        return np.diff(cdf[k], axis=0)

    wi = weights(n_i)
    wj = wi if n_j == n_i else weights(n_j)
    return wi @ img_os @ wj.T
