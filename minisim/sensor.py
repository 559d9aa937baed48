"""The image sensor: how expected photoelectrons become an integer in ADU (docs/physics.md §6).

Read top to bottom, the way light becomes a number:

1. expected signal electrons S_e (QE already applied by the scene) and fixed-pattern gain
   (PRNU) -> lambda = S_e (1 + PRNU_px) + (D + D_hot,px) t_e
2. shot and read noise, N_e ~ Poisson(lambda) plus N(0, sigma_r^2), clipped at the full well.
   Where lambda >= ``exact_poisson_below_e`` both are one Cornish-Fisher normal draw of their
   sum (variance lambda + sigma_r^2, third cumulant lambda): lambda + s z + lambda/s^2 (z^2-1)/6,
   s^2 = lambda + sigma_r^2, at most ``full_well_e`` (one draw per pixel instead of two: the
   draws are the render's largest cost). Below it, exact Poisson (inversion of the CDF at a
   keyed uniform u) clipped at the full well, plus sigma_r z.
3. offsets and gain: V = o + DSNU_px + K N
4. quantise and saturate: ADU = clip(rint(V), 0, 2^bits - 1)

With ``sensor.noise`` off, steps 1-4 keep only the means: V = o + K (S_e + D t_e).

Randomness is counter-based and per pixel (:mod:`minisim.rng`): pixel (y, x) of frame t
takes word x % 4 of the four Philox4x32-10 words of the counter (x // 4, y, t) under the key of
(seed, "sensor_noise") (one Philox call serves four adjacent pixels); that word makes the normal z
(AS241 PPND7 normal quantile in float32, :func:`minisim.rng.words_to_normals32`). Only the
pixels below ``exact_poisson_below_e`` draw a uniform for the exact-Poisson inversion: word
x % 4 of the same counter under (seed, "sensor_poisson"). The fixed pattern takes the words of
(x, y, 0) under (seed, "sensor_fixed"): two normals (PRNU, DSNU) and a uniform (hot pixel or
not). No generator objects, no tiles: a pixel's draws depend only on (seed, y, x, t), so any
window of any frame (at any start, aligned to 4 or not) is the crop of the full frame by
construction. Steps 1-4 run in one compiled pass per pixel (numba), straight from float32
electrons to uint16 ADU, in float32 arithmetic (the Poisson inversion in float64).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import lane_words, philox4x32, philox_key, word_uniform, words_to_normals32
from .spec import SensorSpec

#: counted in the rendering-algorithm version: changing any of this changes the bytes
NOISE_ALGORITHM = ("per-pixel Philox4x32-10 keyed by (seed, stream), pixel (y, x) of frame t takes word x % 4 of "
                   "counter (x // 4, y, t); its float32 AS241 PPND7 normal quantile (log from exponent and "
                   "mantissa); shot+read as one float32 Cornish-Fisher normal above the threshold, exact Poisson "
                   "inversion of a uniform from (seed, sensor_poisson), same counter and lane, plus the read "
                   "normal below; one compiled float32 pass to ADU")

#: the exact-Poisson inversion stops here (a mean below the threshold never gets close)
_POISSON_MAX_K = 10_000

_f32 = np.float32
_ZERO, _ONE, _SIXTH, _TINY = _f32(0.0), _f32(1.0), _f32(1.0 / 6.0), _f32(1e-30)


@njit(cache=True, nogil=True, error_model="numpy")
def _fixed_pattern(k0, k1, y0, y1, x0, x1, prnu_fraction, dsnu_adu, hot_fraction, hot_e_per_s,
                   prnu, dsnu, hot):
    w = x1 - x0
    words = np.empty((3, w), np.uint32)
    z = np.empty((2, w), np.float32)
    scratch = np.empty((2, w), np.float32)
    for i in range(y1 - y0):
        for j in range(w):
            a, b, c, _ = philox4x32(np.uint64(x0 + j), np.uint64(y0 + i), np.uint64(0), np.uint64(0), k0, k1)
            words[0, j] = a
            words[1, j] = b
            words[2, j] = c
        words_to_normals32(words[0], z[0], scratch)
        words_to_normals32(words[1], z[1], scratch)
        for j in range(w):
            prnu[i, j] = prnu_fraction * z[0, j]
            dsnu[i, j] = dsnu_adu * z[1, j]
            hot[i, j] = hot_e_per_s if word_uniform(words[2, j]) < hot_fraction else _ZERO


def fixed_pattern(sensor: SensorSpec, seed: int, window: tuple[int, int, int, int]):
    """PRNU (relative gain), DSNU (ADU) and extra dark current (e-/s) of each pixel (float32).

    Each pixel's values depend only on (seed, y, x): any window is the crop of the whole sensor.
    """
    y0, y1, x0, x1 = window
    prnu, dsnu, hot = (np.empty((y1 - y0, x1 - x0), np.float32) for _ in range(3))
    k0, k1 = philox_key(seed, "sensor_fixed")
    _fixed_pattern(np.uint64(k0), np.uint64(k1), y0, y1, x0, x1, np.float32(sensor.prnu_fraction),
                   np.float32(sensor.dsnu_adu), sensor.hot_pixel_fraction, np.float32(sensor.hot_pixel_dark_e_per_s),
                   prnu, dsnu, hot)
    return prnu, dsnu, hot


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def poisson_inverse(lam, u):
    """The Poisson(lam) count whose CDF first exceeds the uniform ``u`` (exact; float64)."""
    p = math.exp(-lam)
    cdf = p
    n = 0
    while u > cdf and n < _POISSON_MAX_K:
        n += 1
        p = p * lam / n
        cdf += p
    return np.float64(n)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _cornish_fisher(lam, z, read_var_e2, full_well_e):
    """float32 throughout (every argument float32)."""
    var = lam + read_var_e2
    return min(lam + math.sqrt(var) * z + (lam / max(var, _TINY)) * (z * z - _ONE) * _SIXTH, full_well_e)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _exact(lam, z, u, read_noise_e, full_well_e):
    """Exact Poisson(lam) by inversion of ``u`` (float64), at most the full well, plus sr z (float32)."""
    return _f32(min(poisson_inverse(np.float64(lam), u), np.float64(full_well_e))) + read_noise_e * z


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def shot_and_read(lam, z, u, read_noise_e, exact_below, full_well_e):
    """Electrons read out (float32) for mean ``lam`` from one normal ``z`` and one uniform ``u``.

    ``lam``, ``z``, ``read_noise_e``, ``exact_below``, ``full_well_e`` float32, ``u`` float64.
    lam >= exact_below: Poisson(lam) + N(0, sr^2) as one Cornish-Fisher normal of their sum,
    variance s^2 = lam + sr^2 and third cumulant lam: lam + s z + lam/s^2 (z^2 - 1)/6, at most
    the full well. Below: exact Poisson by inversion of ``u``, at most the full well, plus sr z.
    """
    if lam >= exact_below:
        return _cornish_fisher(lam, z, read_noise_e * read_noise_e, full_well_e)
    return _exact(lam, z, u, read_noise_e, full_well_e)


@njit(cache=True, nogil=True, error_model="numpy")
def _shot_and_read_e(lam, z, u, read_noise_e, exact_below, full_well_e, out):
    for i in range(lam.size):
        out[i] = shot_and_read(max(lam[i], _ZERO), z[i], u[i], read_noise_e, exact_below, full_well_e)


def shot_and_read_e(lam: np.ndarray, z: np.ndarray, u: np.ndarray, read_noise_e: float,
                    exact_below: float, full_well_e: float) -> np.ndarray:
    """Electrons read out (float32, lam's shape) for means ``lam``, normals ``z``, uniforms ``u``.

    The same per-pixel function :func:`expose` applies (for tests of the two branches): lam and
    z in float32, u in float64.
    """
    shape = np.broadcast_shapes(np.shape(lam), np.shape(z), np.shape(u))
    lam, z = (np.ascontiguousarray(np.broadcast_to(a, shape), np.float32).ravel() for a in (lam, z))
    u = np.ascontiguousarray(np.broadcast_to(u, shape), np.float64).ravel()
    out = np.empty(lam.size, np.float32)
    _shot_and_read_e(lam, z, u, _f32(read_noise_e), _f32(exact_below), _f32(full_well_e), out)
    return out.reshape(shape)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _adu(v, top):
    return np.uint16(min(max(np.rint(v), _ZERO), top))


@njit(cache=True, nogil=True, error_model="numpy")
def _expose(signal, frames, y0, x0, k0, k1, ku0, ku1, prnu, dsnu, hot_e, dark_e, read_noise_e, exact_below,
            full_well_e, gain, offset, top, out):
    """Every scalar float argument float32: the pixel arithmetic is float32 (the exact-Poisson
    inversion float64)."""
    T, h, w = signal.shape
    words = np.empty(w + 8, np.uint32)
    z = np.empty(w + 8, np.float32)
    scratch = np.empty((2, w + 8), np.float32)
    lam = np.empty(w, np.float32)
    sr2 = read_noise_e * read_noise_e
    for t in range(T):
        f = np.uint64(frames[t])
        f_lo, f_hi = f & np.uint64(0xFFFFFFFF), f >> np.uint64(32)
        for i in range(h):
            # a row at a time, in passes the compiler can vectorise: the words (one Philox call
            # per four pixels), their normals, the Cornish-Fisher branch for every pixel; then
            # the few pixels below the threshold, each with its uniform from its own counter
            y = np.uint64(y0 + i)
            off = lane_words(k0, k1, x0, w, y, f_lo, f_hi, words)
            n = ((x0 + w + 3) >> 2 << 2) - (x0 >> 2 << 2)
            words_to_normals32(words[:n], z, scratch)
            small = False
            zr = z[off:]  # (read by the loop's own index: no wrap-around test per pixel)
            for j in range(w):
                lm = max(signal[t, i, j] * (_ONE + prnu[i, j]) + (dark_e + hot_e[i, j]), _ZERO)
                lam[j] = lm
                small |= lm < exact_below
                out[t, i, j] = _adu(offset + dsnu[i, j] + gain * _cornish_fisher(lm, zr[j], sr2, full_well_e),
                                    top)
            if small:
                for j in range(w):
                    if lam[j] < exact_below:
                        x = x0 + j
                        u = philox4x32(np.uint64(x >> 2), y, f_lo, f_hi, ku0, ku1)[x & 3]
                        e = _exact(lam[j], zr[j], word_uniform(u), read_noise_e, full_well_e)
                        out[t, i, j] = _adu(offset + dsnu[i, j] + gain * e, top)


def expose(
    signal_e: np.ndarray, sensor: SensorSpec, seed: int, frames: range, window, fps: float
) -> np.ndarray:
    """Expected signal electrons (frames, h, w) -> ADU (uint16) for that window of the sensor."""
    K = np.float32(sensor.gain_adu_per_e)
    top = np.float32(2**sensor.bit_depth - 1)
    dark_e = np.float32(sensor.dark_current_e_per_s / fps)
    if not sensor.noise:
        v = np.float32(sensor.offset_adu) + K * (signal_e + dark_e)
        return np.clip(np.rint(v), 0, top).astype(np.uint16)
    y0, _, x0, _ = window
    prnu, dsnu, hot = fixed_pattern(sensor, seed, window)
    hot_e = hot / np.float32(fps)
    k0, k1 = philox_key(seed, "sensor_noise")
    ku0, ku1 = philox_key(seed, "sensor_poisson")
    out = np.empty(signal_e.shape, np.uint16)
    f32 = np.float32
    _expose(np.ascontiguousarray(signal_e, np.float32), np.arange(frames.start, frames.stop, dtype=np.int64),
            y0, x0, np.uint64(k0), np.uint64(k1), np.uint64(ku0), np.uint64(ku1), prnu, dsnu,
            np.ascontiguousarray(hot_e, np.float32), dark_e, f32(sensor.read_noise_e),
            f32(sensor.exact_poisson_below_e), f32(sensor.full_well_e), K, f32(sensor.offset_adu), top, out)
    return out
