"""Cell placement: where the somata are, how big, how bright, and their stable identities.

Somata of each band are a Matern type-II hard-core process in 3-D: candidates are drawn per
tissue column of ``COLUMN_UM`` x ``COLUMN_UM`` um (keyed by band and column index, with the
optical axis at the origin), each gets a random mark, and a candidate survives when no
candidate with a smaller mark lies closer than ``min_spacing_um``. Whether a candidate
survives depends only on candidates in its own and the neighbouring columns, so a cell exists
(with the same position, shape, brightness and id) whatever field of view, window or duration
is asked for: enlarging the field only adds cells.

The candidate intensity is solved so that the surviving density equals ``density_per_mm3``
(Matern II retains (1 - exp(-lambda v)) / v per volume, v the exclusion-sphere volume);
the expected count is N = area x thickness x density (docs/physics.md §3).

Keys (counter-based, minisim.rng "keyed constants"): a column's candidates come from the key of
(seed, ``"cells"``) with the counter (zigzag(cy), zigzag(cx), band, kind): kind 0 the candidate
count (an exact Poisson draw), kind 1 four uniforms per candidate in order (y, x, z, mark). A
cell's radius and gain are the two normals of its unit id's stream of (seed,
``"cell_brightness"``). Every column and cell is drawn by the same vectorised calls, and its
values depend on its own counter alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..rng import keyed_poissons, keyed_uniform_runs, normal_quantiles, unit_uniforms, zigzag
from ..spec import CellBand, Spec

COLUMN_UM = 100.0
_K_BITS = 12  # candidates per column < 4096
_C_BITS = 16  # column index offset range


@dataclass(frozen=True)
class Cells:
    """Per-cell parameters, sorted by ``unit_id`` (the fixed summation order)."""

    unit_id: np.ndarray    # int64, stable identity
    band: np.ndarray       # int16
    z_um: np.ndarray       # float64 depth below tissue surface
    y_um: np.ndarray       # float64, optical axis at 0
    x_um: np.ndarray
    radius_um: np.ndarray  # float64 soma radius
    gain: np.ndarray       # float64 expression gain, LogNormal(0, brightness_sd_ln)

    def __len__(self) -> int:
        return len(self.unit_id)

    def take(self, keep: np.ndarray) -> Cells:
        return Cells(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def _exclusion_volume_um3(radius: float, h: np.ndarray, thickness: float) -> np.ndarray:
    """Volume of the exclusion sphere at height h in the band that lies inside the band."""

    def cap(d):
        d = np.clip(d, 0.0, radius)
        return np.pi * (radius - d) ** 2 * (2 * radius + d) / 3.0

    return 4.0 / 3.0 * np.pi * radius**3 - cap(h) - cap(thickness - h)


def candidate_intensity_per_um3(band: CellBand) -> float:
    """Candidate intensity lambda that leaves ``density_per_mm3`` after hard-core thinning.

    Matern II keeps a candidate with probability (1 - exp(-lambda v)) / (lambda v); near the
    faces of a thin band part of the exclusion sphere lies outside it, so v depends on the
    height h in the band, and lambda is solved (bisection) on the band-averaged density.
    """
    return _intensity(float(band.density_per_mm3), float(band.min_spacing_um), float(band.band_thickness_um))


@functools.lru_cache(maxsize=256)
def _intensity(density_per_mm3: float, min_spacing_um: float, band_thickness_um: float) -> float:
    """:func:`candidate_intensity_per_um3` of a band's three numbers (a pure function: cached,
    its bisection runs once per band and process)."""
    rho = density_per_mm3 * 1e-9
    if rho == 0 or min_spacing_um == 0:
        return rho
    h = (np.arange(256) + 0.5) / 256 * band_thickness_um
    v = _exclusion_volume_um3(min_spacing_um, h, band_thickness_um)

    def density(lam: float) -> float:
        return float(np.mean(-np.expm1(-lam * v) / v))

    if rho >= 0.99 * float(np.mean(1.0 / v)):
        raise ValueError(
            f"cells.density_per_mm3={density_per_mm3} is too dense for "
            f"min_spacing_um={min_spacing_um} in a {band_thickness_um} um band: "
            f"a hard-core packing allows at most {0.99 * np.mean(1 / v) * 1e9:.0f} per mm^3; "
            "lower the density or the spacing"
        )
    lo, hi = rho, rho
    while density(hi) < rho:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if density(mid) < rho else (lo, mid)
    return 0.5 * (lo + hi)


def unit_ids(band: int, cy: np.ndarray | int, cx: np.ndarray | int, k: np.ndarray) -> np.ndarray:
    """Stable ids of candidates ``k`` of tissue columns (cy, cx) of ``band`` (bit fields)."""
    off = 1 << (_C_BITS - 1)
    return (
        (((np.int64(band) << _C_BITS) | (cy + off)) << _C_BITS | (cx + off)) << _K_BITS
    ) | k.astype(np.int64)


def _candidates(seed: int, b: int, band: CellBand, lam: float, cy: np.ndarray, cx: np.ndarray):
    """(positions (n, 3) z, y, x um; marks (n,); unit ids (n,); column index (n,)) of the
    candidates of the tissue columns (cy[i], cx[i]) of band ``b``, column after column, each
    column from its own counter."""
    c0, c1 = zigzag(cy), zigzag(cx)
    n = keyed_poissons(seed, "cells", c0, c1, b, lam * COLUMN_UM**2 * band.band_thickness_um, kind=0)
    n = np.minimum(n, (1 << _K_BITS) - 1)
    u = keyed_uniform_runs(seed, "cells", c0, c1, b, 4 * n, kind=1).reshape(-1, 4)
    col = np.repeat(np.arange(len(n)), n)
    k = np.arange(len(col)) - np.repeat(np.cumsum(n) - n, n)  # index within its column
    y = (cy[col] + u[:, 0]) * COLUMN_UM
    x = (cx[col] + u[:, 1]) * COLUMN_UM
    z = band.depth_um + (u[:, 2] - 0.5) * band.band_thickness_um
    return np.column_stack([z, y, x]), u[:, 3], unit_ids(b, cy[col], cx[col], k), col


def cell_draws(spec: Spec, band: CellBand, uid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(soma radius um, expression gain) of the cells ``uid`` of ``band``, each from its own key:
    radius r0 + sd clip(N, -2.5, 2.5), gain LogNormal(0, ``brightness_sd_ln``)."""
    z = normal_quantiles(unit_uniforms(spec.recording.seed, "cell_brightness", uid, 2))
    radius = band.soma_radius_um + band.soma_radius_sd_um * np.clip(z[:, 0], -2.5, 2.5)
    gain = np.exp(spec.cells.brightness_sd_ln * z[:, 1])
    return radius, gain


def place_cells(spec: Spec, y_range_um: tuple[float, float], x_range_um: tuple[float, float]) -> Cells:
    """All somata whose centre lies in the given lateral ranges (um, optical axis at 0)."""
    from scipy.spatial import cKDTree

    seed = spec.recording.seed
    out = []
    for b, band in enumerate(spec.cells.bands):
        lam = candidate_intensity_per_um3(band)
        if lam == 0:
            continue
        cy0, cy1 = int(np.floor(y_range_um[0] / COLUMN_UM)), int(np.floor(y_range_um[1] / COLUMN_UM))
        cx0, cx1 = int(np.floor(x_range_um[0] / COLUMN_UM)), int(np.floor(x_range_um[1] / COLUMN_UM))
        ring = 1 + int(band.min_spacing_um // COLUMN_UM)  # neighbours that can thin a cell
        cy, cx = np.meshgrid(np.arange(cy0 - ring, cy1 + ring + 1), np.arange(cx0 - ring, cx1 + ring + 1),
                             indexing="ij")
        cy, cx = cy.ravel(), cx.ravel()
        pos, mark, uid, col = _candidates(seed, b, band, lam, cy, cx)
        keep = ((cy0 <= cy) & (cy <= cy1) & (cx0 <= cx) & (cx <= cx1))[col]  # inner columns
        if band.min_spacing_um > 0 and len(pos):
            pairs = cKDTree(pos).query_pairs(band.min_spacing_um, output_type="ndarray")
            # the candidate with the larger mark loses (Matern II)
            i, j = pairs[:, 0], pairs[:, 1]
            keep[np.where(mark[i] < mark[j], j, i)] = False
        keep &= (pos[:, 1] >= y_range_um[0]) & (pos[:, 1] < y_range_um[1])
        keep &= (pos[:, 2] >= x_range_um[0]) & (pos[:, 2] < x_range_um[1])
        pos, uid = pos[keep], uid[keep]
        radius, gain = cell_draws(spec, band, uid)
        out.append(Cells(uid, np.full(len(uid), b, np.int16), pos[:, 0], pos[:, 1], pos[:, 2],
                         radius, gain))
    if not out:
        e = np.empty(0)
        return Cells(np.empty(0, np.int64), np.empty(0, np.int16), e, e, e, e, e)
    cells = Cells(*(np.concatenate([getattr(c, f) for c in out]) for f in Cells.__dataclass_fields__))
    return cells.take(np.argsort(cells.unit_id, kind="stable"))


def expected_count(spec: Spec, area_mm2: float | None = None) -> float:
    """Expected number of somata over ``area_mm2`` (default: the full field of view)."""
    if area_mm2 is None:
        h, w = spec.fov_um
        area_mm2 = h * w * 1e-6
    return float(sum(area_mm2 * b.band_thickness_um * 1e-3 * b.density_per_mm3 for b in spec.cells.bands))
