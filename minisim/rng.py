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

Per-unit draws of the activity (many small draws per unit and segment, where a Generator would
cost ~40 us to create) read *word streams* of the same Philox: stream (c0, c1, c2, kind) is the
sequence of words of the counters (c0, c1, c2, kind << 28 | i), i = 0, 1, 2, ...; a numba
kernel walks it with :func:`open_stream` and :func:`next_word` (and the uniforms, exponentials
and exact Poisson counts built on it), so a draw depends only on the key, the counter and its
place in the stream. The activity puts the unit id's two halves in c0, c1 and the segment in c2
(minisim/activity.py says which kind is which draw).
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
    "sensor_noise": 8,     # shot + read noise: Philox key, counter (x // 4, y, frame), word x % 4
    "motion": 9,           # per motion segment
    "activity_unit": 10,   # retired (render algorithm <= 5: per (unit, segment) Generator)
    "activity_params": 11, # per unit: rate, kinetics jitter, amplitude
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


@njit(cache=True, nogil=True, error_model="numpy")
def _stream_poissons(k0, k1, mean, out):
    st = np.zeros(STREAM_STATE, np.uint64)
    for i in range(out.size):
        open_stream(st, np.uint64(i) & _LO, np.uint64(i) >> _S32, np.uint64(0), np.uint64(0))
        out[i] = next_poisson(k0, k1, st, mean)


def stream_poissons(seed: int, stream: str, mean: float, size: int) -> np.ndarray:
    """``size`` Poisson(``mean``) counts (int64), draw i from the word stream (i, 0, kind 0) of
    (seed, stream): :func:`next_poisson` as the per-unit draws use it (for tests)."""
    k0, k1 = philox_key(seed, stream)
    out = np.empty(int(size), np.int64)
    _stream_poissons(np.uint64(k0), np.uint64(k1), float(mean), out)
    return out


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
