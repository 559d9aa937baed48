"""Keyed randomness: every random draw in minisim comes from here.

A stream is keyed by *what it describes* -- (seed, stream, *indices), e.g. a cell, a time segment, or
a pixel of a frame (the sensor's counter-based words) -- never by a dask block, a call order, Python's salted string hashing or
numpy's global state. Any piece of a recording can therefore be drawn on its own, on any
worker, in any order, and comes out bit for bit the same.

The entropy handed to ``numpy.random.SeedSequence`` is
``(seed, stream_id, len(indices), *zigzag(indices))``: the stream ids are fixed integers
(stable across processes and releases), the length stops ``(..., 1)`` and ``(..., 1, 0)``
from colliding (SeedSequence pads its entropy with zeros), and the zigzag map lets indices be
negative (tissue columns left of the optical axis).

Per-pixel randomness (the sensor) is counter-based instead: Philox4x32-10 (Salmon et al. 2011)
keyed by (seed, stream) through that same SeedSequence, with the counter (x, y, frame) of the
pixel, so every pixel of every frame has its own four 32-bit words, drawn by no Generator
object and in no order: a window of a frame is the crop of the whole frame by construction.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.signal import lfilter

# Fixed stream ids. Never renumber: they are part of the bytes of every recording.
STREAMS: dict[str, int] = {
    "cells": 1,            # candidate somata per (band, column_y, column_x)
    "cell_shape": 2,       # per unit: radius, ellipticity, orientation, dendrites
    "cell_brightness": 3,  # per unit: expression gain
    "vessels": 4,          # per trunk
    "neuropil_map": 5,     # spatial modes of the neuropil
    "glow": 6,
    "sensor_fixed": 7,     # PRNU / DSNU / hot pixels: Philox key, counter (x, y)
    "sensor_noise": 8,     # shot + read noise: Philox key, counter (x, y, frame)
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


# ----------------------------------------------------------------------------- counter-based
def philox_key(seed: int, stream: str, *indices: int) -> tuple[int, int]:
    """The 64-bit Philox key (two uint32 as ints) of one keyed stream (from its SeedSequence)."""
    k = seed_sequence(seed, stream, *indices).generate_state(2, np.uint32)
    return int(k[0]), int(k[1])


_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counter (c0..c3) under the key (k0, k1): four uint32 (as uint64).

    Every argument is a uint64 holding 32 bits. The Random123 known-answer vectors hold
    (tests/test_sensor.py).
    """
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _S32) ^ c1 ^ k0, p1 & _LO, (p0 >> _S32) ^ c3 ^ k1, p0 & _LO)
        k0 = (k0 + _W0) & _LO
        k1 = (k1 + _W1) & _LO
    return c0, c1, c2, c3


#: 2**-32: a uint32 word w gives the uniform (w + 0.5) 2**-32 in (0, 1), never 0 or 1
_U32 = 2.0**-32


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def word_uniform(w):
    """A uint32 word as a uniform in (0, 1): (w + 1/2) / 2**32 (float64, never 0 or 1)."""
    return (np.float64(w) + 0.5) * _U32


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _quantile_central(q):
    r = 0.180625 - q * q
    return q * (((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r
                     + 6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r
                   + 1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r
                 + 1.3314166789178437745e2) * r + 3.3871328727963666080e0) / (
        ((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r
             + 3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r
           + 5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r
         + 4.2313330701600911252e1) * r + 1.0)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _quantile_tail(u):
    q = u - 0.5
    r = math.sqrt(-math.log(u if q < 0 else 1.0 - u))
    if r <= 5.0:
        r -= 1.6
        z = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                  + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
                + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
              + 4.63033784615654529590e0) * r + 1.42343711074968357734e0) / (
            ((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                 + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
               + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
             + 2.05319162663775882187e0) * r + 1.0)
    else:
        r -= 5.0
        z = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                  + 1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r
                + 2.96560571828504891230e-1) * r + 1.78482653991729133580e0) * r
              + 5.46378491116411436990e0) * r + 6.65790464350110377720e0) / (
            ((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
                 + 1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r
               + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r
             + 5.99832206555887937690e-1) * r + 1.0)
    return -z if q < 0 else z


#: |u - 1/2| up to which the normal quantile is the central rational function alone
QUANTILE_CENTRAL = 0.425


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def normal_quantile(u):
    """The standard normal quantile of ``u`` in (0, 1) (float64; Wichura 1988, AS241 PPND16,
    relative error ~1e-16).

    Only arithmetic in the central 85 % (|u - 1/2| <= 0.425); one log and one sqrt in the tails.
    """
    q = u - 0.5
    if abs(q) <= QUANTILE_CENTRAL:
        return _quantile_central(q)
    return _quantile_tail(u)


@njit(cache=True, nogil=True, error_model="numpy")
def words_to_normals(words, z):
    """``z[j]`` = the normal of uint32 word ``words[j]`` (as :func:`word_normal`), for a row.

    Two passes, the same values: the central rational function for every element (a loop the
    compiler vectorises), then the tails where they apply.
    """
    for j in range(words.shape[0]):
        z[j] = _quantile_central(word_uniform(words[j]) - 0.5)
    for j in range(words.shape[0]):
        u = word_uniform(words[j])
        if abs(u - 0.5) > QUANTILE_CENTRAL:
            z[j] = _quantile_tail(u)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def word_normal(w):
    """A uint32 word as a standard normal: the quantile of (w + 1/2) / 2**32 (float64).

    Fixed consumption (one word, no rejection), so a pixel's normal depends only on its
    counter; the tails end at |z| = 6.34 (the quantile of 2**-33).
    """
    return normal_quantile(word_uniform(w))


@njit(cache=True, nogil=True, error_model="numpy")
def _pixel_words(k0, k1, frames, y0, y1, x0, x1, out):
    for t in range(frames.shape[0]):
        f = np.uint64(frames[t])
        for i in range(y1 - y0):
            for j in range(x1 - x0):
                w = philox4x32(np.uint64(x0 + j), np.uint64(y0 + i), f & _LO, f >> _S32, k0, k1)
                for q in range(4):
                    out[t, i, j, q] = w[q]


def pixel_words(seed: int, stream: str, frames, window: tuple[int, int, int, int]) -> np.ndarray:
    """The four Philox words (frames, h, w, 4) uint32 of every pixel of ``window`` = (y0, y1, x0, x1).

    Pixel (y, x) of frame t uses the counter (x, y, t mod 2**32, t div 2**32) under the key of
    (seed, stream): what the sensor draws from, for tests and for anyone checking the scheme.
    """
    y0, y1, x0, x1 = window
    frames = np.asarray(frames, np.int64)
    out = np.empty((len(frames), y1 - y0, x1 - x0, 4), np.uint32)
    k0, k1 = philox_key(seed, stream)
    _pixel_words(np.uint64(k0), np.uint64(k1), frames, y0, y1, x0, x1, out)
    return out


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
