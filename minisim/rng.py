"""Keyed randomness: every random draw in minisim comes from here.

A stream is keyed by *what it describes* -- (seed, stream, *indices), e.g. a cell, a frame and
a fixed noise tile -- never by a dask block, a call order, Python's salted string hashing or
numpy's global state. Any piece of a recording can therefore be drawn on its own, on any
worker, in any order, and comes out bit for bit the same.

The entropy handed to ``numpy.random.SeedSequence`` is
``(seed, stream_id, len(indices), *zigzag(indices))``: the stream ids are fixed integers
(stable across processes and releases), the length stops ``(..., 1)`` and ``(..., 1, 0)``
from colliding (SeedSequence pads its entropy with zeros), and the zigzag map lets indices be
negative (tissue columns left of the optical axis).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# Fixed stream ids. Never renumber: they are part of the bytes of every recording.
STREAMS: dict[str, int] = {
    "cells": 1,            # candidate somata per (band, column_y, column_x)
    "cell_shape": 2,       # per unit: radius, ellipticity, orientation, dendrites
    "cell_brightness": 3,  # per unit: expression gain
    "vessels": 4,          # per trunk
    "neuropil_map": 5,     # spatial modes of the neuropil
    "glow": 6,
    "sensor_fixed": 7,     # PRNU / DSNU / hot pixels per noise tile
    "sensor_noise": 8,     # per (frame, noise tile)
    "motion": 9,           # per motion segment
    "activity_unit": 10,   # per (unit, segment): gate, rate, spikes
    "activity_params": 11, # per unit: rate, kinetics jitter, amplitude
    "ensembles": 12,       # per (ensemble, segment): shared drive
    "ensemble_membership": 13,  # per unit
    "hemodynamics": 14,
    "neuropil_trace": 15,
    "bleaching": 16,
    "activity_gate": 17,   # per (unit, segment): resets of the up/down gate
    "modulation_knots": 18,  # per (unit, knot block): private OU at segment boundaries
    "ensemble_knots": 19,  # per (ensemble, knot block): shared OU at segment boundaries
    "motion_knots": 20,    # per (motion component, knot block)
}


def _zigzag(i: int) -> int:
    i = int(i)
    return 2 * i if i >= 0 else -2 * i - 1


def seed_sequence(seed: int, stream: str, *indices: int) -> np.random.SeedSequence:
    """The SeedSequence of one keyed stream."""
    try:
        sid = STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown RNG stream {stream!r}; known: {sorted(STREAMS)}") from None
    return np.random.SeedSequence([int(seed), sid, len(indices), *(_zigzag(i) for i in indices)])


def rng(seed: int, stream: str, *indices: int) -> np.random.Generator:
    """A numpy Generator for (seed, stream name, *indices).

    Examples
    --------
    >>> from minisim.rng import rng
    >>> a = rng(1, "cells", 0, -3, 4).standard_normal(3)
    >>> b = rng(1, "cells", 0, -3, 4).standard_normal(3)
    >>> bool((a == b).all())
    True
    """
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, stream, *indices)))


# ----------------------------------------------------------------------------- keyed processes
#: Knot innovations are drawn in blocks of this many knots (one Generator per block).
KNOT_BLOCK = 256
#: A knot chain forgets its start after this much decay (e^-21 ~ 8e-10): far below float32.
FORGET = 8e-10


def lookback_knots(rho: float) -> int:
    """Knots an AR(1) chain with coefficient ``rho`` needs to forget its start (at least 1)."""
    if rho <= FORGET:
        return 1
    return max(1, int(np.ceil(np.log(FORGET) / np.log(rho))))


def ou_knots(seed: int, stream: str, key: tuple[int, ...], knots: list[int], rho: float) -> np.ndarray:
    """Values at segment boundaries ``knots`` of a unit-variance OU sampled once per segment.

    Knot values form the AR(1) chain ``K_j = rho K_{j-1} + sqrt(1 - rho^2) eta_j``, rebuilt
    from the last :func:`lookback_knots` innovations and a stationary draw where that window
    starts (knot 0, or the window's first knot): any process gets the same value for any knot
    without the chain before it, and every value is exactly stationary.
    """
    n = lookback_knots(rho)
    starts = [max(0, k - n) for k in knots]
    blocks = range(min(starts) // KNOT_BLOCK, max(knots) // KNOT_BLOCK + 1)
    draws = np.concatenate([rng(seed, stream, *key, b).standard_normal((2, KNOT_BLOCK)) for b in blocks],
                           axis=1)
    base = blocks[0] * KNOT_BLOCK
    c = np.sqrt(1.0 - rho * rho)
    out = np.empty(len(knots))
    for i, (k, m0) in enumerate(zip(knots, starts)):
        eta = draws[0, m0 - base + 1 : k - base + 1]
        powers = rho ** np.arange(k - m0 - 1, -1, -1, dtype=np.float64)
        out[i] = rho ** (k - m0) * draws[1, m0 - base] + c * (powers * eta).sum()
    return out


def ou_bridge(z: np.ndarray, log_a: float, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """A unit-variance OU path over one segment, pinned at both of its knots.

    ``z`` (rows, L) are the segment's standard normals, ``log_a = -dt / tau``; ``x0`` is the
    value at the segment's first frame, ``x1`` at the next segment's first frame. The free
    path ``y_i = a y_{i-1} + sqrt(1 - a^2) z_i`` from ``x0`` is corrected by the conditional
    mean of the pinned end: ``x_i = y_i + (x1 - y_L) a^(L-i) (1 - a^2i) / (1 - a^2L)``. This
    is the exact OU bridge, so paths join at the knots with no seam. Returns (rows, L) float64.
    """
    z = np.atleast_2d(np.asarray(z, np.float64))
    rows, L = z.shape
    a = np.exp(log_a)
    c = np.sqrt(-np.expm1(2.0 * log_a))
    x0 = np.broadcast_to(np.asarray(x0, np.float64), (rows,))
    x1 = np.broadcast_to(np.asarray(x1, np.float64), (rows,))
    y = lfilter([c], [1.0, -a], z, axis=-1, zi=(a * x0)[:, None])[0]  # y_1 .. y_L
    i = np.arange(L, dtype=np.float64)
    w = np.exp((L - i) * log_a) * -np.expm1(2.0 * i * log_a) / -np.expm1(2.0 * L * log_a)
    path = np.concatenate([x0[:, None], y[:, :-1]], axis=1)
    return path + (x1 - y[:, -1])[:, None] * w[None, :]


def ou_segment(seed: int, knot_stream: str, key: tuple[int, ...], seg: int, z: np.ndarray,
               dt_s: float, tau_s: float) -> np.ndarray:
    """(L,) unit-variance OU of one segment: keyed knots at both ends, bridged by ``z`` (L,)."""
    L = z.shape[-1]
    log_a = -dt_s / tau_s
    rho = float(np.exp(L * log_a))
    x0, x1 = ou_knots(seed, knot_stream, key, [seg, seg + 1], rho)
    return ou_bridge(z[None], log_a, x0, x1)[0]


def reset_gate_state(draw_resets, seg: int, initial: bool) -> bool:
    """State of a two-state gate at the start of segment ``seg``, from its keyed resets.

    A two-state Markov gate (rates 1/up_dwell, 1/down_dwell) is the same process as resets at
    rate 1/up + 1/down, each setting the gate up with probability p_up: so the state at a
    segment's start is the mark of the last reset before it. ``draw_resets(j)`` gives segment
    ``j``'s (times, marks); segments are searched backwards, ``initial`` is the state at t = 0.
    """
    for j in range(seg - 1, -1, -1):
        _, marks = draw_resets(j)
        if marks.size:
            return bool(marks[-1])
    return initial
