"""The image sensor: how expected photoelectrons become an integer in ADU (docs/physics.md §6).

Read top to bottom, the way light becomes a number:

1. expected signal electrons S_e (QE already applied by the scene) and fixed-pattern gain
   (PRNU) -> lambda = S_e (1 + PRNU_px) + (D + D_hot,px) t_e
2. shot and read noise, N_e ~ Poisson(lambda) plus N(0, sigma_r^2), clipped at the full well.
   Where lambda >= ``exact_poisson_below_e`` both are one Cornish-Fisher normal draw of their
   sum (variance lambda + sigma_r^2, third cumulant lambda): lambda + s z + lambda/s^2 (z^2-1)/6,
   s^2 = lambda + sigma_r^2, at most ``full_well_e`` (one draw per pixel instead of two: the
   draws are the render's largest cost). Below it, exact Poisson (inversion of the CDF at z)
   clipped at the full well, plus sigma_r z' from a second keyed draw.
3. offsets and gain: V = o + DSNU_px + K N
4. quantise and saturate: ADU = clip(rint(V), 0, 2^bits - 1)

With ``sensor.noise`` off, steps 1-4 keep only the means: V = o + K (S_e + D t_e).

Randomness is keyed by (frame, noise tile) over a fixed grid of ``noise_tile_px`` tiles (the
second draw by (frame, 1, tile)), and each pixel uses only its own draws, so any window of any
frame is the same crop of the full frame. The fixed pattern (PRNU, DSNU, hot pixels) is keyed by tile alone.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .rng import rng
from .spec import SensorSpec

#: counted in the rendering-algorithm version: changing any of this changes the bytes
NOISE_ALGORITHM = ("keyed-tile normals; shot+read as one Cornish-Fisher normal above the threshold, "
                   "exact Poisson inversion plus a second normal below")


def _tiles(lo: int, hi: int, tile: int) -> range:
    return range(lo // tile, (hi - 1) // tile + 1)


def _tile_draws(seed, stream, tile, window, key_prefix, draw):
    """Assemble per-tile keyed draws into the window (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = window
    out = None
    for ty in _tiles(y0, y1, tile):
        for tx in _tiles(x0, x1, tile):
            block = draw(rng(seed, stream, *key_prefix, ty, tx))
            if out is None:
                out = np.empty((block.shape[0], y1 - y0, x1 - x0), block.dtype)
            ya, yb = max(y0, ty * tile), min(y1, (ty + 1) * tile)
            xa, xb = max(x0, tx * tile), min(x1, (tx + 1) * tile)
            out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = block[
                :, ya - ty * tile : yb - ty * tile, xa - tx * tile : xb - tx * tile
            ]
    return out


def fixed_pattern(sensor: SensorSpec, seed: int, window: tuple[int, int, int, int]):
    """PRNU (relative gain), DSNU (ADU) and extra dark current (e-/s) of each pixel."""
    tile = sensor.noise_tile_px

    def draw(g):
        z = g.standard_normal((2, tile, tile), dtype=np.float32)
        hot = (g.random((1, tile, tile)) < sensor.hot_pixel_fraction).astype(np.float32)
        return np.concatenate([z, hot])

    d = _tile_draws(seed, "sensor_fixed", tile, window, (), draw)
    prnu = sensor.prnu_fraction * d[0]
    dsnu = sensor.dsnu_adu * d[1]
    hot = sensor.hot_pixel_dark_e_per_s * d[2]
    return prnu.astype(np.float32), dsnu.astype(np.float32), hot.astype(np.float32)


def poisson_from_normal(lam: np.ndarray, z: np.ndarray, exact_below: float) -> np.ndarray:
    """Poisson(lam) counts from one standard-normal draw per pixel (float32)."""
    lam = np.maximum(lam, 0, dtype=np.float32)
    out = np.floor(lam + np.sqrt(lam) * z + (z * z - 1) / 6 + 0.5)
    np.maximum(out, 0, out=out)
    small = lam < exact_below
    if small.any():
        u = ndtr(z[small].astype(np.float64))
        ls = lam[small].astype(np.float64)
        p = np.exp(-ls)
        cdf = p.copy()
        n = np.zeros_like(ls)
        k = 0
        active = u > cdf
        while active.any() and k < 10_000:
            k += 1
            p = p * ls / k
            n = n + active
            cdf = cdf + p
            active = active & (u > cdf)
        out[small] = n
    return out.astype(np.float32)


def shot_and_read_e(lam: np.ndarray, z: np.ndarray, read_noise_e: float, exact_below: float,
                    full_well_e: float, second_normal) -> np.ndarray:
    """Electrons read out, shot and read noise included, from one normal draw per pixel (float32).

    Where the mean is large (``lam >= exact_below``) the sum of Poisson(lam) shot noise and
    N(0, sigma_r^2) read noise is drawn at once: its Cornish-Fisher normal with variance
    s^2 = lam + sigma_r^2 and third cumulant lam, ``lam + s z + lam/s^2 (z^2 - 1)/6``, clipped at the
    full well. Where it is small the shot noise is exact Poisson (inversion of ``z``) and the read
    noise a second normal, ``second_normal()`` (drawn only then, from its own key).
    """
    sr2 = np.float32(read_noise_e) ** 2
    var = lam + sr2
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(var > 0, lam / var, np.float32(0)).astype(np.float32)
    e = lam + np.sqrt(var) * z + skew * (z * z - np.float32(1)) * np.float32(1 / 6)
    np.minimum(e, np.float32(full_well_e), out=e)
    small = lam < exact_below
    if small.any():
        n = poisson_from_normal(lam[small], z[small], exact_below)
        np.minimum(n, np.float32(full_well_e), out=n)
        e[small] = n + np.float32(read_noise_e) * second_normal()[small]
    return e


def expose(
    signal_e: np.ndarray, sensor: SensorSpec, seed: int, frames: range, window, fps: float
) -> np.ndarray:
    """Expected signal electrons (frames, h, w) -> ADU (uint16) for that window of the sensor."""
    K = np.float32(sensor.gain_adu_per_e)
    top = np.float32(2**sensor.bit_depth - 1)
    dark_e = np.float32(sensor.dark_current_e_per_s / fps)
    if not sensor.noise:
        v = np.float32(sensor.offset_adu) + K * (signal_e + dark_e)
    else:
        prnu, dsnu, hot = fixed_pattern(sensor, seed, window)
        lam = signal_e * (1 + prnu) + (dark_e + hot / np.float32(fps))
        np.maximum(lam, 0, out=lam)
        v = np.empty_like(signal_e)
        tile = sensor.noise_tile_px

        def normals(*key):
            return _tile_draws(seed, "sensor_noise", tile, window, key,
                               lambda g: g.standard_normal((1, tile, tile), dtype=np.float32))[0]

        for i, t in enumerate(frames):
            e = shot_and_read_e(lam[i], normals(t), sensor.read_noise_e, sensor.exact_poisson_below_e,
                                sensor.full_well_e, lambda t=t: normals(t, 1))
            v[i] = np.float32(sensor.offset_adu) + dsnu + K * e
    return np.clip(np.rint(v), 0, top).astype(np.uint16)
