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

Randomness is counter-based and per pixel (:mod:`minisim.rng`): pixel (y, x) of frame t takes
the four Philox4x32-10 words of the counter (x, y, t) under the key of (seed, "sensor_noise");
the first word makes the normal z (its AS241 normal quantile), the second the uniform of the
exact-Poisson inversion. The fixed pattern takes the words of (x, y, 0) under (seed,
"sensor_fixed"): two normals (PRNU, DSNU) and a uniform (hot pixel or not). No generator objects, no
tiles: any window of any frame is the crop of the full frame by construction. Steps 1-4 run in
one compiled pass per pixel (numba), straight from float32 electrons to uint16 ADU.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import philox4x32, philox_key, word_normal, word_uniform, words_to_normals
from .spec import SensorSpec

#: counted in the rendering-algorithm version: changing any of this changes the bytes
NOISE_ALGORITHM = ("per-pixel Philox4x32-10 keyed by (seed, stream), counter (x, y, frame); one word per "
                   "normal by its AS241 quantile; shot+read as one Cornish-Fisher normal above the threshold, exact Poisson "
                   "inversion of a third word plus the read normal below; one compiled pass to ADU")

#: the exact-Poisson inversion stops here (a mean below the threshold never gets close)
_POISSON_MAX_K = 10_000


@njit(cache=True, nogil=True, error_model="numpy")
def _fixed_pattern(k0, k1, y0, y1, x0, x1, prnu_fraction, dsnu_adu, hot_fraction, hot_e_per_s,
                   prnu, dsnu, hot):
    for i in range(y1 - y0):
        for j in range(x1 - x0):
            w0, w1, w2, _ = philox4x32(np.uint64(x0 + j), np.uint64(y0 + i), np.uint64(0), np.uint64(0),
                                       k0, k1)
            prnu[i, j] = prnu_fraction * word_normal(w0)
            dsnu[i, j] = dsnu_adu * word_normal(w1)
            hot[i, j] = hot_e_per_s if word_uniform(w2) < hot_fraction else 0.0


def fixed_pattern(sensor: SensorSpec, seed: int, window: tuple[int, int, int, int]):
    """PRNU (relative gain), DSNU (ADU) and extra dark current (e-/s) of each pixel (float32).

    Each pixel's values depend only on (seed, y, x): any window is the crop of the whole sensor.
    """
    y0, y1, x0, x1 = window
    prnu, dsnu, hot = (np.empty((y1 - y0, x1 - x0), np.float32) for _ in range(3))
    k0, k1 = philox_key(seed, "sensor_fixed")
    _fixed_pattern(np.uint64(k0), np.uint64(k1), y0, y1, x0, x1, sensor.prnu_fraction, sensor.dsnu_adu,
                   sensor.hot_pixel_fraction, sensor.hot_pixel_dark_e_per_s, prnu, dsnu, hot)
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
    var = lam + read_var_e2
    return min(lam + math.sqrt(var) * z + (lam / max(var, 1e-300)) * (z * z - 1.0) * (1.0 / 6.0), full_well_e)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def shot_and_read(lam, z, u, read_noise_e, exact_below, full_well_e):
    """Electrons read out (float64) for mean ``lam`` from one normal ``z`` and one uniform ``u``.

    lam >= exact_below: Poisson(lam) + N(0, sr^2) as one Cornish-Fisher normal of their sum,
    variance s^2 = lam + sr^2 and third cumulant lam: lam + s z + lam/s^2 (z^2 - 1)/6, at most
    the full well. Below: exact Poisson by inversion of ``u``, at most the full well, plus sr z.
    """
    if lam >= exact_below:
        return _cornish_fisher(lam, z, read_noise_e * read_noise_e, full_well_e)
    return min(poisson_inverse(lam, u), full_well_e) + read_noise_e * z


@njit(cache=True, nogil=True, error_model="numpy")
def _shot_and_read_e(lam, z, u, read_noise_e, exact_below, full_well_e, out):
    for i in range(lam.size):
        out[i] = shot_and_read(max(np.float64(lam[i]), 0.0), np.float64(z[i]), np.float64(u[i]),
                               read_noise_e, exact_below, full_well_e)


def shot_and_read_e(lam: np.ndarray, z: np.ndarray, u: np.ndarray, read_noise_e: float,
                    exact_below: float, full_well_e: float) -> np.ndarray:
    """Electrons read out (float32, lam's shape) for means ``lam``, normals ``z``, uniforms ``u``.

    The same per-pixel function :func:`expose` applies (for tests of the two branches).
    """
    shape = np.broadcast_shapes(np.shape(lam), np.shape(z), np.shape(u))
    lam, z, u = (np.ascontiguousarray(np.broadcast_to(a, shape), np.float64).ravel() for a in (lam, z, u))
    out = np.empty(lam.size, np.float32)
    _shot_and_read_e(lam, z, u, float(read_noise_e), float(exact_below), float(full_well_e), out)
    return out.reshape(shape)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _adu(v, top):
    return np.uint16(min(max(np.rint(v), 0.0), top))


@njit(cache=True, nogil=True, error_model="numpy")
def _expose(signal, frames, y0, x0, k0, k1, prnu, dsnu, hot_e, dark_e, read_noise_e, exact_below,
            full_well_e, gain, offset, top, out):
    T, h, w = signal.shape
    w0 = np.empty(w, np.uint32)
    w1 = np.empty(w, np.uint32)
    z = np.empty(w, np.float64)
    lam = np.empty(w, np.float64)
    sr2 = read_noise_e * read_noise_e
    for t in range(T):
        f = np.uint64(frames[t])
        f_lo, f_hi = f & np.uint64(0xFFFFFFFF), f >> np.uint64(32)
        for i in range(h):
            # a row at a time, in passes the compiler can vectorise: words, normals, the
            # Cornish-Fisher branch for every pixel; then the few pixels below the threshold
            y = np.uint64(y0 + i)
            for j in range(w):
                a, b, _, _ = philox4x32(np.uint64(x0 + j), y, f_lo, f_hi, k0, k1)
                w0[j] = np.uint32(a)
                w1[j] = np.uint32(b)
            words_to_normals(w0, z)
            small = False
            for j in range(w):
                lm = max(np.float64(signal[t, i, j]) * (1.0 + prnu[i, j]) + (dark_e + hot_e[i, j]), 0.0)
                lam[j] = lm
                small |= lm < exact_below
                out[t, i, j] = _adu(offset + dsnu[i, j] + gain * _cornish_fisher(lm, z[j], sr2, full_well_e), top)
            if small:
                for j in range(w):
                    if lam[j] < exact_below:
                        e = shot_and_read(lam[j], z[j], word_uniform(w1[j]), read_noise_e, exact_below,
                                          full_well_e)
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
    out = np.empty(signal_e.shape, np.uint16)
    _expose(np.ascontiguousarray(signal_e, np.float32), np.arange(frames.start, frames.stop, dtype=np.int64),
            y0, x0, np.uint64(k0), np.uint64(k1), prnu, dsnu, hot_e, float(dark_e), float(sensor.read_noise_e),
            float(sensor.exact_poisson_below_e), float(sensor.full_well_e), float(K), float(sensor.offset_adu),
            float(top), out)
    return out
