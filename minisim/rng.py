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
keyed by (seed, stream) through that same SeedSequence. The sensor's noise gives every pixel of
every frame one 32-bit word: pixel (y, x) of frame t takes word x % 4 of the counter
(x // 4, y, t) (:func:`lane_words`: one Philox call serves four adjacent pixels); the fixed
pattern takes the four words of the counter (x, y, 0) (:func:`pixel_words`). Words are drawn
by no Generator object and in no order, and a pixel's word depends only on (seed, stream, y,
x, t): a window of a frame is the crop of the whole frame by construction, whatever its start.
A word becomes a normal by the float32 normal quantile :func:`words_to_normals32`.

Per-item draws (many small draws per unit and segment, or a few constants per cell, where a
Generator would cost ~40 us to create) read *word streams* of the same Philox: stream
(c0, c1, c2, kind) is the sequence of words of the counters (c0, c1, c2, kind << 28 | i),
i = 0, 1, 2, ...; a numba
kernel walks it with :func:`open_stream` and :func:`next_word` (and the uniforms, exponentials
and exact Poisson counts built on it), so a draw depends only on the key, the counter and its
place in the stream. The activity puts the unit id's two halves in c0, c1 and the segment in c2
(minisim/activity.py says which kind is which draw). Per-item constants (a tissue column's
candidate somata, a cell's shape and brightness, a unit's rate and kinetics, a vessel's course)
are drawn the same way, for all items of a call at once: uniform j of an item's stream is the
53-bit uniform of its words 2j, 2j + 1 and a normal is the float64 quantile of one uniform
(:func:`keyed_uniforms`, :func:`unit_uniforms`, :func:`keyed_poissons`, :func:`normal_quantile`).
A key is built once per (seed, stream) and process (:func:`philox_key` is cached).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit
from scipy.signal import lfilter

# Fixed stream ids. Never renumber: they are part of the bytes of every recording.
STREAMS: dict[str, int] = {
    # Streams 1-4, 11 and 13 are Philox keys of per-item word streams (keyed constants) since
    # render algorithm 7; up to algorithm 6 each was a Generator per item (the same indices).
    "cells": 1,            # per (band, column_y, column_x): candidate count, then y, x, z, mark each
    "cell_shape": 2,       # per unit: ellipticity, orientation, dendrite angles and lengths
    "cell_brightness": 3,  # per unit: soma radius, expression gain
    "vessels": 4,          # per (trunk, branch level, index): placement, then the walk's turns
    "neuropil_map": 5,     # spatial modes of the neuropil
    "glow": 6,
    "sensor_fixed": 7,     # PRNU / DSNU / hot pixels: Philox key, counter (x, y)
    "sensor_noise": 8,     # shot + read noise: Philox key, counter (x // 4, y, frame), word x % 4
    "motion": 9,           # per motion segment
    "activity_unit": 10,   # retired (render algorithm <= 5: per (unit, segment) Generator)
    "activity_params": 11, # per unit: active coin, rate, kinetics jitter, amplitude
    "ensembles": 12,       # per (ensemble, segment): shared drive
    "ensemble_membership": 13,  # per unit
    "hemodynamics": 14,
    "neuropil_trace": 15,
    "bleaching": 16,
    "activity_gate": 17,   # retired (render algorithm <= 5: per (unit, segment) gate resets)
    "modulation_knots": 18,  # retired (render algorithm <= 5: per (unit, knot block) private OU knots)
    "ensemble_knots": 19,  # per (ensemble, knot block): shared OU at segment boundaries
    "motion_knots": 20,    # per (motion component, knot block)
    "sensor_poisson": 21,  # uniform of the exact-Poisson pixels: counter (x // 4, y, frame), word x % 4
    "activity_births": 22,  # per unit: Philox key, word streams (unit id, segment or knot, kind)
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
@functools.lru_cache(maxsize=1024)
def philox_key(seed: int, stream: str, *indices: int) -> tuple[int, int]:
    """The 64-bit Philox key (two uint32 as ints) of one keyed stream (from its SeedSequence).

    A pure function of its arguments, so it is cached: a key costs one SeedSequence per process.
    """
    k = seed_sequence(int(seed), stream, *(int(i) for i in indices)).generate_state(2, np.uint32)
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


# ------------------------------------------------------------ word streams (per-unit draws)
# A word stream is the sequence of words of the counters (c0, c1, c2, kind << 28 | i),
# i = 0, 1, 2, ...: word n is word n % 4 of counter i = n // 4. Per-unit draws read their
# uniforms from such streams in a fixed order (one stream per unit, segment and kind of draw), so
# a draw depends only on (seed, stream, c0, c1, c2, kind, n): never on other units, on the order
# units are drawn in, or on which process draws them. ``st`` (uint64, STREAM_STATE) holds the
# counter, the position and the current counter's four words.
STREAM_STATE = 9
#: bits of the counter's last word below the kind: at most 2**28 counters (2**30 words) a stream
KIND_SHIFT = np.uint64(28)
_ONE_U64, _THREE_U64 = np.uint64(1), np.uint64(3)
_U53 = 2.0**-53


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def open_stream(st, c0, c1, c2, kind):
    """Point ``st`` at word 0 of the stream (c0, c1, c2, kind) (all uint64, 32 bits each,
    ``kind`` < 16)."""
    st[0] = c0
    st[1] = c1
    st[2] = c2
    st[3] = kind << KIND_SHIFT
    st[4] = np.uint64(0)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def next_word(k0, k1, st):
    """The stream's next uint32 word (as uint64), one Philox call every four words."""
    pos = st[4]
    r = pos & _THREE_U64
    if r == 0:
        a, b, c, d = philox4x32(st[0], st[1], st[2], st[3] | (pos >> np.uint64(2)), k0, k1)
        st[5] = a
        st[6] = b
        st[7] = c
        st[8] = d
    st[4] = pos + _ONE_U64
    return st[5 + np.int64(r)]


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def next_uniform(k0, k1, st):
    """A uniform in (0, 1) from the stream's next word (32 bits: :func:`word_uniform`)."""
    return word_uniform(next_word(k0, k1, st))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def next_uniform53(k0, k1, st):
    """A uniform in (0, 1) with 53 random bits from the stream's next two words."""
    hi = next_word(k0, k1, st) >> np.uint64(5)
    lo = next_word(k0, k1, st) >> np.uint64(6)
    return (np.float64(hi) * 67108864.0 + np.float64(lo) + 0.5) * _U53


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def next_exponential(k0, k1, st):
    """A unit-mean exponential, -log u of the stream's next uniform (at most 22.9)."""
    return -math.log(next_uniform(k0, k1, st))


#: An exact Poisson draw is the sum of draws by inversion whose means are at most this, so
#: exp(-mean) never underflows (it would past ~745) and the search stays short.
POISSON_CHUNK_MEAN = 64.0


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def poisson_inversion(mean, u):
    """The Poisson(``mean``) count whose CDF first reaches the uniform ``u`` (``mean`` <=
    :data:`POISSON_CHUNK_MEAN`). Sequential search from 0; it stops where the pmf underflows
    (u within rounding of 1: a count ~10 sd out, probability < 1e-15)."""
    p = math.exp(-mean)
    cdf = p
    k = 0
    while u > cdf and p > 0.0:
        k += 1
        p = p * mean / k
        cdf += p
    return k


@njit(cache=True, nogil=True, error_model="numpy")
def next_poisson(k0, k1, st, mean):
    """An exact Poisson(``mean``) count from the stream, for any mean: the sum of
    ceil(mean / :data:`POISSON_CHUNK_MEAN`) draws by inversion of equal means (a sum of
    independent Poissons is Poisson), each from a 53-bit uniform (two words)."""
    if not mean > 0.0:
        return 0
    chunks = math.ceil(mean / POISSON_CHUNK_MEAN)
    m = mean / chunks
    total = 0
    for _ in range(chunks):
        total += poisson_inversion(m, next_uniform53(k0, k1, st))
    return total


def stream_poissons(seed: int, stream: str, mean: float, size: int) -> np.ndarray:
    """``size`` Poisson(``mean``) counts (int64), draw i from the word stream (i, 0, kind 0) of
    (seed, stream): :func:`next_poisson` as the per-unit draws use it (for tests)."""
    i = np.arange(int(size), dtype=np.int64)
    return keyed_poissons(seed, stream, *id_halves(i), 0, float(mean))


# ------------------------------------------------------------ keyed constants (per-item draws)
# Per-item constants (a tissue column's candidate somata, a cell's shape and brightness, a unit's
# rate and kinetics, a vessel's course) read word streams too, under one key per (seed, stream):
# item i's stream is (c0, c1, c2, kind), its own key in the counter (a unit id's two halves and
# 0; a tissue column's zigzagged indices and band; a vessel's trunk, level and index), and
# uniform j of a stream is the 53-bit uniform of its words 2j and 2j + 1 (:func:`next_uniform53`),
# a normal the float64 quantile of one such uniform (:func:`normal_quantile`). So an item's values
# depend on (seed, stream, its counter, kind, j) alone: drawn with any other items, in any order,
# in any process, they are the same. No Generator is built per item; the key's SeedSequence is
# built once per process (:func:`philox_key` is cached).
def id_halves(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The low and high 32 bits (uint64) of int64 ids (unit ids): the two counter words that key
    an item's draws."""
    bits = np.ascontiguousarray(ids, np.int64).view(np.uint64)
    return bits & _LO, bits >> _S32


def zigzag(i: np.ndarray) -> np.ndarray:
    """Signed indices as counter words (uint64): 0, -1, 1, -2, ... -> 0, 1, 2, 3, ... (|i| < 2**31)."""
    i = np.asarray(i, np.int64)
    return np.where(i >= 0, 2 * i, -2 * i - 1).astype(np.uint64)


def _counters(c0, c1, c2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three counter-word arrays (uint64, contiguous, one entry per item): 1-d arrays of one
    length, scalars broadcast to it."""
    cs = [np.asarray(c) for c in (c0, c1, c2)]
    sizes = {c.size for c in cs if c.ndim}
    if len(sizes) > 1 or any(c.ndim > 1 for c in cs):
        raise ValueError(f"counter words of shapes {[c.shape for c in cs]}: 1-d of one length, or scalars")
    n = sizes.pop() if sizes else 1
    return tuple(np.ascontiguousarray(c, np.uint64) if c.ndim else np.full(n, c, np.uint64) for c in cs)


@njit(cache=True, nogil=True, error_model="numpy")
def _keyed_uniforms(k0, k1, c0, c1, c2, kind, counts, out):
    """``out`` (flat) = item i's first ``counts[i]`` uniforms of stream (c0[i], c1[i], c2[i],
    ``kind``), item after item."""
    st = np.zeros(STREAM_STATE, np.uint64)
    n = 0
    for i in range(c0.size):
        open_stream(st, c0[i], c1[i], c2[i], kind)
        for _ in range(counts[i]):
            out[n] = next_uniform53(k0, k1, st)
            n += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _keyed_poissons(k0, k1, c0, c1, c2, kind, mean, out):
    st = np.zeros(STREAM_STATE, np.uint64)
    for i in range(c0.size):
        open_stream(st, c0[i], c1[i], c2[i], kind)
        out[i] = next_poisson(k0, k1, st, mean[i])


@functools.lru_cache(maxsize=1024)
def key_words(seed: int, stream: str) -> tuple[np.uint64, np.uint64]:
    """:func:`philox_key` of (seed, stream) as the two uint64 the kernels take (cached)."""
    k0, k1 = philox_key(seed, stream)
    return np.uint64(k0), np.uint64(k1)


def keyed_uniform_runs(seed: int, stream: str, c0, c1, c2, counts, kind: int = 0) -> np.ndarray:
    """Item i's first ``counts[i]`` uniforms (53 bits, in (0, 1)) of the word stream
    (c0[i], c1[i], c2[i], ``kind``) under the key of (seed, stream), items concatenated (float64)."""
    c0, c1, c2 = _counters(c0, c1, c2)
    counts = np.ascontiguousarray(np.broadcast_to(np.asarray(counts, np.int64), c0.shape))
    out = np.empty(int(counts.sum()))
    _keyed_uniforms(*key_words(seed, stream), c0, c1, c2, np.uint64(kind), counts, out)
    return out


def keyed_uniforms(seed: int, stream: str, c0, c1, c2, n: int, kind: int = 0) -> np.ndarray:
    """(items, ``n``) float64: row i the first ``n`` uniforms of item i's stream
    (c0[i], c1[i], c2[i], ``kind``) under the key of (seed, stream)."""
    u = keyed_uniform_runs(seed, stream, c0, c1, c2, int(n), kind)
    return u.reshape(-1, int(n)) if n else np.empty((np.broadcast(c0, c1, c2).size, 0))


def unit_uniforms(seed: int, stream: str, unit_ids: np.ndarray, n: int) -> np.ndarray:
    """(units, ``n``) float64 uniforms: row i from unit i's stream (id low half, id high half,
    0, kind 0) of (seed, stream), whatever other units are drawn with it.

    Examples
    --------
    >>> import numpy as np
    >>> a = unit_uniforms(1, "cell_shape", np.array([3, 7]), 2)
    >>> bool((a[1] == unit_uniforms(1, "cell_shape", np.array([7]), 2)[0]).all())
    True
    """
    return keyed_uniforms(seed, stream, *id_halves(np.asarray(unit_ids).reshape(-1)), 0, n)


def keyed_poissons(seed: int, stream: str, c0, c1, c2, mean, kind: int = 0) -> np.ndarray:
    """(items,) int64: item i an exact Poisson(``mean[i]``) count (:func:`next_poisson`) from the
    start of its stream (c0[i], c1[i], c2[i], ``kind``) under the key of (seed, stream)."""
    c0, c1, c2 = _counters(c0, c1, c2)
    mean = np.ascontiguousarray(np.broadcast_to(np.asarray(mean, np.float64), c0.shape))
    out = np.empty(c0.size, np.int64)
    _keyed_poissons(*key_words(seed, stream), c0, c1, c2, np.uint64(kind), mean, out)
    return out


# float64 normal quantile: AS241 PPND16 (Wichura 1988), relative error ~1e-16: a normal is the
# quantile of one 53-bit uniform, so its law is the normal's to double precision (tails to
# |z| ~ 8.3, the quantile of 2**-54).
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


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def normal_quantile(u):
    """The standard normal quantile of ``u`` in (0, 1), float64 (AS241 PPND16, relative error
    ~1e-16): a rational function in the central 85 % (|u - 1/2| <= 0.425), one log and one sqrt
    in the tails."""
    q = u - 0.5
    if abs(q) <= 0.425:
        return _quantile_central(q)
    return _quantile_tail(u)


@njit(cache=True, nogil=True, error_model="numpy")
def _normal_quantiles(u, z):
    for i in range(u.size):
        z[i] = normal_quantile(u[i])


def normal_quantiles(u: np.ndarray) -> np.ndarray:
    """:func:`normal_quantile` of every element of ``u`` (float64, any shape)."""
    u = np.ascontiguousarray(u, np.float64)
    z = np.empty_like(u)
    _normal_quantiles(u.reshape(-1), z.reshape(-1))
    return z


# ------------------------------------------------------------ float32 normals of whole words
# AS241 PPND7 (Wichura 1988; relative error ~1e-7, float32's own), evaluated in float32 for a
# row of words at a time by loops the compiler vectorises: the tail's log is computed here from
# the float's exponent and mantissa (no C library call), so every pixel takes the same
# arithmetic, branch-free, and the bytes do not depend on the platform's libm.
_f32 = np.float32
_A0, _A1, _A2, _A3 = _f32(3.3871327179), _f32(50.434271938), _f32(159.29113202), _f32(59.109374720)
_B1, _B2, _B3 = _f32(17.895169469), _f32(78.757757664), _f32(67.187563600)
_C0, _C1, _C2, _C3 = _f32(1.4234372777), _f32(2.7568153900), _f32(1.3067284816), _f32(0.17023821103)
_D1, _D2 = _f32(0.73700164250), _f32(0.12021132975)
_CENTRAL_R, _TAIL_R = _f32(0.180625), _f32(1.6)
_ONE, _HALF, _TWO = _f32(1.0), _f32(0.5), _f32(2.0)
_P32, _P33 = _f32(2.0**-32), _f32(2.0**-33)
_LN2, _SQRT2 = _f32(math.log(2.0)), _f32(math.sqrt(2.0))
_L3, _L5, _L7, _L9 = _f32(2.0 / 3.0), _f32(2.0 / 5.0), _f32(2.0 / 7.0), _f32(2.0 / 9.0)
_SIGN = np.uint32(0x80000000)
#: words w with min(w, ~w) below this are in the tails (|u - 1/2| > 0.425): 0.075 * 2**32
TAIL_WORD = np.uint32(322122547)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _central32(w):
    q = _f32(np.int32(w ^ _SIGN)) * _P32 + _P33  # u - 1/2, u = (w + 1/2) 2**-32
    r = _CENTRAL_R - q * q
    return q * (((_A3 * r + _A2) * r + _A1) * r + _A0) / (((_B3 * r + _B2) * r + _B1) * r + _ONE)


@njit(cache=True, nogil=True, error_model="numpy")
def words_to_normals32(words, z, scratch):
    """``z[j]`` (float32) = the standard normal quantile of (words[j] + 1/2) / 2**32, for a row.

    AS241 PPND7 in float32 (absolute error < 2e-6 over every uint32 word, |z| <= 6.34);
    ``scratch`` is (2, n) float32 work space. Branch-free in four vectorisable passes: the tail
    variable t = min(u, 1 - u), its exponent and mantissa (through the bits of a float32 view),
    then log t = e ln 2 + 2 atanh((m - 1) / (m + 1)) (m in [sqrt(1/2), sqrt(2)), five odd terms:
    error < 1e-9), the tail and central rational functions, and the choice between them.
    """
    n = words.shape[0]
    t = scratch[0, :n]
    m = scratch[1, :n]
    for j in range(n):
        w = words[j]
        t[j] = _f32(np.int32(min(w, ~w))) * _P32 + _P33
    tb = t.view(np.int32)
    mb = m.view(np.int32)
    for j in range(n):
        mb[j] = (tb[j] & 0x7FFFFF) | 0x3F800000
    for j in range(n):
        w = words[j]
        e = _f32((tb[j] >> 23) - 127)
        x = m[j]
        big = x > _SQRT2
        x = x * _HALF if big else x
        e = e + _ONE if big else e
        s = (x - _ONE) / (x + _ONE)
        s2 = s * s
        log_t = e * _LN2 + s * (_TWO + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * _L9))))
        r = math.sqrt(-log_t) - _TAIL_R
        tail = (((_C3 * r + _C2) * r + _C1) * r + _C0) / ((_D2 * r + _D1) * r + _ONE)
        tail = -tail if w < _SIGN else tail
        z[j] = tail if min(w, ~w) < TAIL_WORD else _central32(w)


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
    (seed, stream): what the fixed pattern draws from (frame 0), for tests and for anyone
    checking the scheme. The sensor's noise takes one word a pixel (:func:`pixel_lane_words`).
    """
    y0, y1, x0, x1 = window
    frames = np.asarray(frames, np.int64)
    out = np.empty((len(frames), y1 - y0, x1 - x0, 4), np.uint32)
    k0, k1 = philox_key(seed, stream)
    _pixel_words(np.uint64(k0), np.uint64(k1), frames, y0, y1, x0, x1, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def lane_words(k0, k1, x0, n, y, f_lo, f_hi, words):
    """The words of pixels x0 .. x0 + n - 1 of row ``y`` (frame words ``f_lo``, ``f_hi``): pixel x
    takes word x % 4 of the counter (x // 4, y, f_lo, f_hi), so one Philox call serves four
    adjacent pixels and a pixel's word does not depend on the window. Fills
    ``words[: 4 * groups]``; pixel x0 + j's word is ``words[x0 % 4 + j]``. Returns x0 % 4.
    """
    g0 = x0 >> 2
    for g in range(((x0 + n + 3) >> 2) - g0):
        a, b, c, d = philox4x32(np.uint64(g0 + g), y, f_lo, f_hi, k0, k1)
        words[4 * g] = a
        words[4 * g + 1] = b
        words[4 * g + 2] = c
        words[4 * g + 3] = d
    return x0 & 3


@njit(cache=True, nogil=True, error_model="numpy")
def _lane_words(k0, k1, frames, y0, y1, x0, x1, normals, out_w, out_z):
    n = x1 - x0
    words = np.empty(n + 8, np.uint32)
    z = np.empty(n + 8, np.float32)
    scratch = np.empty((2, n + 8), np.float32)
    for t in range(frames.shape[0]):
        f = np.uint64(frames[t])
        for i in range(y1 - y0):
            off = lane_words(k0, k1, x0, n, np.uint64(y0 + i), f & _LO, f >> _S32, words)
            if normals:
                words_to_normals32(words, z, scratch)
            for j in range(n):
                out_w[t, i, j] = words[off + j]
                out_z[t, i, j] = z[off + j]


def pixel_lane_words(seed: int, stream: str, frames, window: tuple[int, int, int, int],
                     normals: bool = False) -> np.ndarray:
    """The word (frames, h, w) uint32 of every pixel of ``window`` under the lane scheme of
    :func:`lane_words` (what the sensor's noise draws from), or with ``normals`` its float32
    normal (:func:`words_to_normals32`)."""
    y0, y1, x0, x1 = window
    frames = np.asarray(frames, np.int64)
    shape = (len(frames), y1 - y0, x1 - x0)
    out_w, out_z = np.empty(shape, np.uint32), np.empty(shape, np.float32)
    k0, k1 = philox_key(seed, stream)
    _lane_words(np.uint64(k0), np.uint64(k1), frames, y0, y1, x0, x1, normals, out_w, out_z)
    return out_z if normals else out_w


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
