"""Vasculature: a branching vessel network that absorbs light and shadows what lies below it.

Trunks cross the field as smooth random walks (heading sd 0.08 rad per 10 um step); each
branch level spawns two daughters per vessel at 30-70 degrees with 0.6x the radius
(Murray-like taper, estimate). Blood absorbs both the excitation and the emission leg:
T_v = exp(-2 mu_a L), L the chord through the vessel above a point (docs/physics.md §2.5: a 20 um
vessel with mu_a = 0.02 /um gives T_v ~ 0.45). Vessels are keyed by trunk and branch index:
vessel (trunk k, level l, index i in its level; a trunk is (k, 0, 0), branch b of parent p is
(k, l, 2 p + b)) reads the streams (k, l, i, kind) of the key of (seed, ``"vessels"``)
(minisim.rng, keyed constants): kind 0 its placement uniforms, kind 1 its walk's normals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..rng import keyed_uniform_runs, keyed_uniforms, normal_quantiles, rng
from ..spec import Spec

_STEP_UM = 10.0
_PLACE, _WALK = 0, 1  # the kinds of a vessel's streams


@dataclass(frozen=True)
class Vessel:
    points_um: np.ndarray  # (n, 2) y, x centre line
    radius_um: float


def _walk(turns: np.ndarray, start, heading, half_extent) -> np.ndarray:
    """The centre line from ``start``: a 10 um step per turn, the heading turned by 0.08 rad x
    each standard normal of ``turns`` before its step, stopped at the first point past 1.3 half
    extents (that point kept)."""
    h = heading + np.cumsum(0.08 * turns)
    pts = np.empty((len(turns) + 1, 2))
    pts[0] = start
    pts[1:, 0] = _STEP_UM * np.sin(h)
    pts[1:, 1] = _STEP_UM * np.cos(h)
    pts = np.cumsum(pts, axis=0)
    out = np.flatnonzero(np.any(np.abs(pts[1:]) > half_extent * 1.3, axis=1))
    return pts[: out[0] + 2] if out.size else pts


def vessel_network(spec: Spec) -> list[Vessel]:
    """Centre lines and radii of every vessel over (a margin around) the field of view.

    Every vessel's draws in two calls: the placements of all (trunk, level, index) keys, then
    the turns of all walks (their lengths come from the placements).
    """
    va = spec.vasculature
    if not va.enabled:
        return []
    seed = spec.recording.seed
    # drawn over a tissue field in um (not the sensor's), so a smaller window sees a crop
    h, w = (max(va.field_um, side) for side in spec.fov_um)
    half = np.array([h, w]) / 2
    keys = np.array([(k, level, i) for k in range(va.trunk_count) for level in range(va.branch_levels + 1)
                     for i in range(2**level)], np.int64).reshape(-1, 3)
    if not len(keys):
        return []
    place = keyed_uniforms(seed, "vessels", keys[:, 0], keys[:, 1], keys[:, 2], 4, kind=_PLACE)
    length = np.where(keys[:, 1] == 0, 3.0 * max(h, w), (0.3 + 0.3 * place[:, 3]) * max(h, w))
    steps = (length / _STEP_UM).astype(np.int64)
    turns = np.split(normal_quantiles(keyed_uniform_runs(seed, "vessels", keys[:, 0], keys[:, 1], keys[:, 2],
                                                          steps, kind=_WALK)), np.cumsum(steps)[:-1])
    vessels: list[Vessel] = []
    row = 0
    for _ in range(va.trunk_count):
        u = place[row]
        side = 2 * np.pi * u[0]
        start = -1.2 * half * np.array([np.sin(side), np.cos(side)])
        aim = (u[1:3] - 0.5) * half
        heading = np.arctan2(aim[0] - start[0], aim[1] - start[1])
        radius = va.trunk_radius_um * (0.8 + 0.4 * u[3])
        trunk = _walk(turns[row], start, heading, half)
        vessels.append(Vessel(trunk, radius))
        parents = [(trunk, radius, heading)]
        row += 1
        for _level in range(1, va.branch_levels + 1):
            children = []
            for i in range(2 * len(parents)):  # branch i % 2 of parent i // 2
                pts, r, hd = parents[i // 2]
                ub = place[row]
                at = pts[int((0.15 + 0.7 * ub[0]) * (len(pts) - 1))]
                bh = hd + (-1.0 if ub[1] < 0.5 else 1.0) * np.deg2rad(30.0 + 40.0 * ub[2])
                cr = r * 0.6
                child = _walk(turns[row], at, bh, half)
                vessels.append(Vessel(child, cr))
                children.append((child, cr, bh))
                row += 1
            parents = children
    return vessels


@njit(cache=True, nogil=True, error_model="numpy")
def _chords(pts, offsets, radii, y, x, total, d2):
    """Add each vessel's chord 2 sqrt(r^2 - d^2) to ``total`` (d the distance to its centre
    line), over the pixels of the segments' boxes widened by r; ``d2`` is work space."""
    ny, nx = y.size, x.size
    for v in range(radii.size):
        r = radii[v]
        # the union of the vessel's segment boxes: where it can touch
        by0, by1, bx0, bx1 = ny, 0, nx, 0
        for s in range(offsets[v], offsets[v + 1] - 1):
            iy0 = np.searchsorted(y, min(pts[s, 0], pts[s + 1, 0]) - r)
            iy1 = np.searchsorted(y, max(pts[s, 0], pts[s + 1, 0]) + r)
            ix0 = np.searchsorted(x, min(pts[s, 1], pts[s + 1, 1]) - r)
            ix1 = np.searchsorted(x, max(pts[s, 1], pts[s + 1, 1]) + r)
            if iy0 < iy1 and ix0 < ix1:
                by0, by1, bx0, bx1 = min(by0, iy0), max(by1, iy1), min(bx0, ix0), max(bx1, ix1)
        if by0 >= by1:
            continue
        d2[by0:by1, bx0:bx1] = np.inf
        for s in range(offsets[v], offsets[v + 1] - 1):
            a0, a1, b0, b1 = pts[s, 0], pts[s, 1], pts[s + 1, 0], pts[s + 1, 1]
            ab0, ab1 = b0 - a0, b1 - a1
            iy0 = np.searchsorted(y, min(a0, b0) - r)
            iy1 = np.searchsorted(y, max(a0, b0) + r)
            ix0 = np.searchsorted(x, min(a1, b1) - r)
            ix1 = np.searchsorted(x, max(a1, b1) + r)
            if not (iy0 < iy1 and ix0 < ix1):
                continue
            inv = 1.0 / max(ab0 * ab0 + ab1 * ab1, 1e-12)
            for i in range(iy0, iy1):
                dy = y[i] - a0
                for j in range(ix0, ix1):
                    dx = x[j] - a1
                    t = min(max((dy * ab0 + dx * ab1) * inv, 0.0), 1.0)
                    ey, ex = dy - t * ab0, dx - t * ab1
                    d2[i, j] = min(d2[i, j], ey * ey + ex * ex)
        r2 = r * r
        for i in range(by0, by1):
            for j in range(bx0, bx1):
                if d2[i, j] < r2:
                    total[i, j] += 2.0 * np.sqrt(r2 - d2[i, j])


def chord_length_um(vessels: list[Vessel], y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """Total path length through blood above each point of the (y, x) grid (ascending axes)."""
    y = np.ascontiguousarray(y_um, np.float64)
    x = np.ascontiguousarray(x_um, np.float64)
    total = np.zeros((len(y), len(x)))
    if not vessels:
        return total
    pts = np.ascontiguousarray(np.concatenate([v.points_um for v in vessels]), np.float64)
    offsets = np.concatenate([[0], np.cumsum([len(v.points_um) for v in vessels])]).astype(np.int64)
    radii = np.array([v.radius_um for v in vessels], np.float64)
    _chords(pts, offsets, radii, y, x, total, np.empty_like(total))
    return total


def transmission(spec: Spec, chord_um: np.ndarray) -> np.ndarray:
    """T_v = exp(-2 mu_a L): both the excitation and the emission leg cross the vessel."""
    return np.exp(-2.0 * spec.vasculature.absorption_per_um * chord_um)


def dilation(spec: Spec, frames: np.ndarray) -> np.ndarray:
    """Fractional vessel dilation a sin(2 pi f t + phi) at the given frames, float64 (docs/physics.md §7.4).

    Zero when vessels or vasomotion are off. The phase phi is keyed by the seed only, so any
    frame's value is the same in any block.
    """
    v = spec.vasculature
    frames = np.asarray(frames)
    if not (v.enabled and v.vasomotion.enabled):
        return np.zeros(frames.shape)
    phi = rng(spec.recording.seed, "hemodynamics", 0).uniform(0.0, 2.0 * np.pi)
    t_s = frames / spec.recording.fps
    return v.vasomotion.amplitude_fraction * np.sin(2.0 * np.pi * v.vasomotion.frequency_hz * t_s + phi)


def dilation_factor(spec: Spec, chord_um: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """T_v(x, t) / T_v(x) = exp(-2 mu_a L(x) delta(t)): (frames, *chord.shape) float32."""
    delta = dilation(spec, frames).astype(np.float32)
    k = np.float32(-2.0 * spec.vasculature.absorption_per_um) * chord_um.astype(np.float32)
    return np.exp(delta[:, None, None] * k[None])
