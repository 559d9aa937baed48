"""Vasculature: a branching vessel network that absorbs light and shadows what lies below it.

Trunks cross the field as smooth random walks (heading sd 0.08 rad per 10 um step); each
branch level spawns two daughters per vessel at 30-70 degrees with 0.6x the radius
(Murray-like taper, estimate). Blood absorbs both the excitation and the emission leg:
T_v = exp(-2 mu_a L), L the chord through the vessel above a point (docs/physics.md §2.5: a 20 um
vessel with mu_a = 0.02 /um gives T_v ~ 0.45). Vessels are keyed by trunk and branch index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rng import rng
from ..spec import Spec

_STEP_UM = 10.0


@dataclass(frozen=True)
class Vessel:
    points_um: np.ndarray  # (n, 2) y, x centre line
    radius_um: float


def _walk(g: np.random.Generator, start, heading, length_um, half_extent) -> np.ndarray:
    pts = [np.asarray(start, float)]
    n = int(length_um / _STEP_UM)
    for _ in range(n):
        heading += 0.08 * g.standard_normal()
        p = pts[-1] + _STEP_UM * np.array([np.sin(heading), np.cos(heading)])
        pts.append(p)
        if np.any(np.abs(p) > half_extent * 1.3):
            break
    return np.array(pts)


def vessel_network(spec: Spec) -> list[Vessel]:
    """Centre lines and radii of every vessel over (a margin around) the field of view."""
    va = spec.vasculature
    if not va.enabled:
        return []
    # drawn over a tissue field in um (not the sensor's), so a smaller window sees a crop
    h, w = (max(va.field_um, side) for side in spec.fov_um)
    half = np.array([h, w]) / 2
    vessels: list[Vessel] = []
    for k in range(va.trunk_count):
        g = rng(spec.recording.seed, "vessels", k)
        side = g.uniform(0, 2 * np.pi)
        start = -1.2 * half * np.array([np.sin(side), np.cos(side)])
        aim = g.uniform(-0.5, 0.5, 2) * half
        heading = np.arctan2(aim[0] - start[0], aim[1] - start[1])
        radius = va.trunk_radius_um * g.uniform(0.8, 1.2)
        trunk = _walk(g, start, heading, 3.0 * max(h, w), half)
        vessels.append(Vessel(trunk, radius))
        parents = [(trunk, radius, heading)]
        for level in range(1, va.branch_levels + 1):
            children = []
            for pi, (pts, r, hd) in enumerate(parents):
                for bi in range(2):
                    gb = rng(spec.recording.seed, "vessels", k, level, pi, bi)
                    at = pts[int(gb.uniform(0.15, 0.85) * (len(pts) - 1))]
                    bh = hd + gb.choice([-1, 1]) * np.deg2rad(gb.uniform(30, 70))
                    cr = r * 0.6
                    child = _walk(gb, at, bh, gb.uniform(0.3, 0.6) * max(h, w), half)
                    vessels.append(Vessel(child, cr))
                    children.append((child, cr, bh))
            parents = children
    return vessels


def chord_length_um(vessels: list[Vessel], y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """Total path length through blood above each point of the (y, x) grid."""
    total = np.zeros((len(y_um), len(x_um)))
    for v in vessels:
        r = v.radius_um
        d2 = np.full(total.shape, np.inf)
        hit = np.zeros(total.shape, bool)
        for a, b in zip(v.points_um[:-1], v.points_um[1:]):
            lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
            iy = np.searchsorted(y_um, [lo[0], hi[0]])
            ix = np.searchsorted(x_um, [lo[1], hi[1]])
            if iy[0] >= iy[1] or ix[0] >= ix[1]:
                continue
            sy, sx = slice(iy[0], iy[1]), slice(ix[0], ix[1])
            py, px = y_um[sy][:, None], x_um[sx][None, :]
            ab = b - a
            t = np.clip(((py - a[0]) * ab[0] + (px - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0, 1)
            d2[sy, sx] = np.minimum(d2[sy, sx], (py - a[0] - t * ab[0]) ** 2 + (px - a[1] - t * ab[1]) ** 2)
            hit[sy, sx] = True
        total[hit] += 2 * np.sqrt(np.clip(r * r - d2[hit], 0, None))
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
