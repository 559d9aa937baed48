"""The sensor: photon transfer, the exact-Poisson branch, fixed pattern and saturation (docs/physics.md §6)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ALL_EFFECTS_OFF
from scipy.special import ndtri
from scipy.stats import poisson

import minisim
from minisim import Spec, presets
from minisim.render import build_world, render_block
from minisim.rng import philox4x32, pixel_lane_words, pixel_words, rng, words_to_normals32
from minisim.sensor import expose, fixed_pattern, shot_and_read_e

#: a flat, static scene: the confounds off except the neuropil (the light source) and the noise
QUIET_SCOPE = {
    **{k: v for k, v in ALL_EFFECTS_OFF.items()
       if k not in ("optics.field_curvature", "tissue.neuropil", "sensor.noise")},
    "cells.density_per_mm3": 0.0,
    "sensor.prnu_fraction": 0.0,
    "sensor.dsnu_adu": 0.0,
    "sensor.hot_pixel_fraction": 0.0,
}


def flat_field(sensor: dict, photons_per_um2_s: float, frames: int = 40) -> tuple[Spec, np.ndarray]:
    """A uniform field (neuropil only, no contrast, no fluctuation): spec and its movie (float)."""
    spec = Spec(
        sensor={"width_px": 64, "height_px": 64, "noise_tile_px": 32, **sensor},
        recording={"duration_s": frames / 10.0, "fps": 10.0, "seed": 3},
    ).with_updates({
        **QUIET_SCOPE,
        "tissue.neuropil": {"enabled": True, "spatial_contrast": 0.0, "fluctuation_fraction": 0.0,
                            "photons_per_um2_s": photons_per_um2_s},
    })
    w = build_world(spec)
    return spec, render_block(w, range(frames), (0, 64, 0, 64)).astype(np.float64)


def photon_transfer(sensor: dict, electrons: np.ndarray):
    """(mean - offset, temporal variance) per level, and the weighted line through them."""
    means, variances = [], []
    probe = Spec(sensor={"width_px": 64, "height_px": 64, **sensor})
    px_um2 = probe.pixel_size_um**2
    for e in electrons:
        photons = e * 10.0 / probe.sensor.qe / px_um2  # electrons per frame at 10 fps
        spec, mov = flat_field(sensor, photons)
        means.append(mov.mean() - spec.sensor.offset_adu)
        variances.append(mov.var(axis=0, ddof=1).mean())
    means, variances = np.array(means), np.array(variances)
    # weights 1/var: the sd of a variance estimate grows with the variance
    slope, intercept = np.polyfit(means, variances, 1, w=1 / variances)
    return means, variances, slope, intercept


@pytest.mark.parametrize("scope", ["generic_1p", "miniscope_v4_ca1"])
def test_photon_transfer_slope_is_the_gain_and_intercept_the_read_noise(scope):
    s = presets.scope(scope).sensor
    sensor = {k: getattr(s, k) for k in ("bit_depth", "qe", "read_noise_e", "gain_adu_per_e",
                                         "offset_adu", "full_well_e", "pixel_pitch_um")}
    sensor["dark_current_e_per_s"] = s.dark_current_e_per_s
    top_e = (2**s.bit_depth - 1 - s.offset_adu) / s.gain_adu_per_e
    levels = np.geomspace(max(20.0, 0.01 * top_e), 0.6 * min(top_e, s.full_well_e), 8)
    means, _, slope, intercept = photon_transfer(sensor, levels)
    K, sr = s.gain_adu_per_e, s.read_noise_e
    assert slope == pytest.approx(K, rel=0.02), (scope, slope)
    assert intercept == pytest.approx(K * K * sr * sr + 1 / 12, rel=0.10), (scope, intercept)
    assert np.all(np.diff(means) > 0)


def test_exact_poisson_branch_has_mean_and_variance_lambda():
    spec, mov = flat_field({"read_noise_e": 0.0, "gain_adu_per_e": 1.0, "offset_adu": 10.0,
                            "dark_current_e_per_s": 0.0, "exact_poisson_below_e": 10.0}, 0.0, frames=60)
    assert (mov == 10).all()  # no light, no read noise: exactly the offset
    photons = 3.0 * 10.0 / spec.sensor.qe / spec.pixel_size_um**2  # lambda = 3 e- per frame
    spec, mov = flat_field({"read_noise_e": 0.0, "gain_adu_per_e": 1.0, "offset_adu": 10.0,
                            "dark_current_e_per_s": 0.0, "exact_poisson_below_e": 10.0}, photons, frames=60)
    n = mov - 10.0
    assert n.mean() == pytest.approx(3.0, rel=0.01)
    assert n.var() == pytest.approx(3.0, rel=0.03)
    counts = np.bincount(n.astype(int).ravel(), minlength=12)[:12] / n.size
    np.testing.assert_allclose(counts, poisson.pmf(np.arange(12), 3.0), atol=0.003)


@pytest.mark.parametrize("read_noise_e", [0.0, 8.0])
def test_shot_and_read_noise_has_poisson_moments_plus_read_variance_on_both_sides_of_the_threshold(read_noise_e):
    g = rng(1, "cells", 99)
    z = g.standard_normal(400_000)
    u = g.random(400_000)
    for lam in (0.5, 4.0, 9.5, 10.5, 50.0, 1000.0):
        e = shot_and_read_e(np.full(z.shape, lam), z, u, read_noise_e, 10.0, 1e6).astype(np.float64)
        v, n = lam + read_noise_e**2, e.size
        # within 5 standard errors of the moments of Poisson(lam) + N(0, sr^2)
        assert e.mean() == pytest.approx(lam, abs=5 * np.sqrt(v / n))
        assert e.var() == pytest.approx(v, rel=0.03)
        # third central moment: lam (the shot noise's; the read noise is symmetric)
        assert ((e - e.mean()) ** 3).mean() == pytest.approx(lam, abs=5 * np.sqrt(15 * v**3 / n))
        if lam < 10.0 and read_noise_e == 0:  # exact Poisson below the threshold: integer counts
            np.testing.assert_array_equal(e, np.round(e))
            counts = np.bincount(e.astype(int), minlength=8)[:8] / e.size
            np.testing.assert_allclose(counts, poisson.pmf(np.arange(8), lam), atol=0.003)


def test_shot_and_read_noise_stops_at_the_full_well():
    z = np.linspace(-4, 4, 1001)
    e = shot_and_read_e(np.full(z.shape, 900.0), z, 0.5, 0.0, 10.0, 1000.0)
    assert e.max() == 1000.0 and (e[z > 3.4] == 1000.0).all() and (e[z < 3] < 1000.0).all()


def test_philox4x32_gives_the_random123_known_answers():
    u = np.uint64
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, want in cases:
        assert tuple(int(w) for w in philox4x32(*map(u, counter), *map(u, key))) == want


def test_word_normals_are_the_normal_quantile_to_float32_precision():
    """Every word's normal is ndtri((w + 1/2) / 2**32) within 2e-6 (AS241 PPND7 in float32):
    a dense sweep of the words, both extremes, and both sides of the central/tail split."""
    split = int(0.075 * 2**32)
    w = np.concatenate([np.arange(0, 2**32, 977, dtype=np.uint64), np.arange(0, 200_000),
                        2**32 - 1 - np.arange(0, 200_000), split - 3 + np.arange(7),
                        2**32 - 1 - (split - 3 + np.arange(7))]).astype(np.uint32)
    z = np.empty(w.size, np.float32)
    words_to_normals32(w, z, np.empty((2, w.size), np.float32))
    want = ndtri((w.astype(np.float64) + 0.5) * 2.0**-32)
    np.testing.assert_allclose(z, want, rtol=5e-7, atol=1e-6)
    assert z.min() == pytest.approx(-6.34, abs=0.01) and z.max() == pytest.approx(6.34, abs=0.01)
    assert (np.diff(z[:2**32 // 977 + 1]) >= 0).all()  # monotone in the word


def test_the_sensor_noise_takes_word_x_mod_4_of_the_counter_x_div_4():
    """Pixel (y, x) of frame t: word x % 4 of the Philox counter (x // 4, y, t), for windows
    starting anywhere (the words of counters (g, y, t) are those pixel_words gives at x = g)."""
    frames = [0, 7, 2**32 + 5]
    for x0, x1 in ((0, 64), (3, 41), (5, 6), (62, 64)):
        lane = pixel_lane_words(9, "sensor_noise", frames, (2, 9, x0, x1))
        g0, g1 = x0 // 4, (x1 - 1) // 4 + 1
        quad = pixel_words(9, "sensor_noise", frames, (2, 9, g0, g1))
        x = np.arange(x0, x1)
        np.testing.assert_array_equal(lane, quad[:, :, x // 4 - g0, x % 4])
        z = pixel_lane_words(9, "sensor_noise", frames, (2, 9, x0, x1), normals=True)
        want = np.empty(lane.size, np.float32)
        words_to_normals32(lane.ravel(), want, np.empty((2, lane.size), np.float32))
        np.testing.assert_array_equal(z, want.reshape(lane.shape))


def test_pixel_normals_are_standard_normal_and_independent_of_their_neighbours():
    z = pixel_lane_words(5, "sensor_noise", [0, 1], (0, 200, 0, 300), normals=True).astype(np.float64)
    assert abs(z.mean()) < 0.01 and z.var() == pytest.approx(1.0, rel=0.01)
    assert abs(((z - z.mean()) ** 3).mean()) < 0.03 and ((z - z.mean()) ** 4).mean() == pytest.approx(3.0, rel=0.03)
    # tails: the fraction beyond 2, 3 and 4 sd, within 5 binomial standard errors
    for k in (2.0, 3.0, 4.0):
        p = 2 * ndtri_tail(k)
        assert (np.abs(z) > k).mean() == pytest.approx(p, abs=5 * np.sqrt(p / z.size) + 1e-6)
    for a, b in ((z[0, :, 1:], z[0, :, :-1]), (z[0, 1:], z[0, :-1]), (z[1], z[0]),  # x, y, frame
                 (z[0, :, 4:], z[0, :, :-4])):  # the same lane of the next counter
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    for lane in range(4):  # every lane of a counter is standard normal
        zl = z[..., lane::4]
        assert abs(zl.mean()) < 0.02 and zl.var() == pytest.approx(1.0, rel=0.02)


def ndtri_tail(k: float) -> float:
    from scipy.special import ndtr
    return float(ndtr(-k))


@pytest.mark.parametrize("window", [(3, 41, 5, 58), (17, 18, 0, 64), (0, 64, 63, 64), (29, 64, 1, 36)])
def test_any_window_of_a_frame_is_the_crop_of_the_whole_frame(window):
    """Per-pixel counters: windows aligned to nothing (odd sizes, single rows and columns) give
    the crop of the full frame, for the draws, the fixed pattern and the exposed ADU."""
    s = presets.scope("miniscope_v4_ca1").sensor.model_copy(update={"hot_pixel_fraction": 0.02})
    y0, y1, x0, x1 = window
    sig = np.linspace(0.0, 2000.0, 9 * 64 * 64, dtype=np.float32).reshape(9, 64, 64)
    sig[:, :8] = 2.5  # a dark band: the exact-Poisson branch too
    full = expose(sig, s, 11, range(100, 109), (0, 64, 0, 64), 20.0)
    part = expose(np.ascontiguousarray(sig[3:7, y0:y1, x0:x1]), s, 11, range(103, 107), window, 20.0)
    np.testing.assert_array_equal(part, full[3:7, y0:y1, x0:x1])
    for a, b in zip(fixed_pattern(s, 11, window), fixed_pattern(s, 11, (0, 64, 0, 64))):
        np.testing.assert_array_equal(a, b[y0:y1, x0:x1])
    for stream in ("sensor_noise", "sensor_poisson"):
        np.testing.assert_array_equal(
            pixel_lane_words(11, stream, range(103, 107), window),
            pixel_lane_words(11, stream, range(100, 109), (0, 64, 0, 64))[3:7, y0:y1, x0:x1])
    assert len(np.unique(full[:, 8:].reshape(9, -1), axis=0)) == 9  # and the frames differ


def test_noise_off_gives_the_mean_exactly():
    s = Spec().sensor.model_copy(update={"noise": False})
    sig = np.linspace(0, 3000, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    out = expose(sig, s, 0, range(1), (0, 64, 0, 64), 20.0)
    want = np.clip(np.rint(np.float32(s.offset_adu) + np.float32(s.gain_adu_per_e)
                           * (sig + np.float32(s.dark_current_e_per_s / 20.0))), 0, 4095)
    np.testing.assert_array_equal(out, want)


def test_fixed_pattern_is_the_same_in_every_frame_and_hot_pixels_glow():
    s = Spec().sensor.model_copy(update={"hot_pixel_fraction": 0.01, "hot_pixel_dark_e_per_s": 20000.0,
                                         "read_noise_e": 0.5, "prnu_fraction": 0.0, "dsnu_adu": 0.0})
    sig = np.full((30, 64, 64), 50.0, np.float32)
    out = expose(sig, s, 4, range(30), (0, 64, 0, 64), 20.0).astype(float)
    hot = out.mean(axis=0) > 500
    assert 10 <= hot.sum() <= 80  # ~1 % of 4096 pixels
    assert (out[:, hot] > 500).all()  # hot in every frame
    again = expose(sig[:3], s, 4, range(10, 13), (0, 64, 0, 64), 20.0)
    np.testing.assert_array_equal(again, out[10:13])


def test_full_well_and_bit_depth_saturate_and_the_save_counts_it(tmp_path):
    bright = {"width_px": 32, "height_px": 32, "noise_tile_px": 16, "bit_depth": 8, "gain_adu_per_e": 0.1,
              "offset_adu": 5.0, "full_well_e": 1000.0}
    spec = Spec(sensor=bright, recording={"duration_s": 0.5, "fps": 10.0}).with_updates({
        **QUIET_SCOPE, "sensor.hot_pixel_fraction": 0.0,
        "tissue.neuropil": {"enabled": True, "spatial_contrast": 0.0, "photons_per_um2_s": 1e7}})
    rec = minisim.simulate(spec)
    mov = rec.dataset["movie"].values
    # the well clips at 1000 e- = 105 ADU, below the 8-bit top: full well, not the ADC, saturates
    assert mov.max() <= 5 + 0.1 * 1000 + 0.1 * 2 * 8 + 1
    spec2 = spec.with_updates({"sensor.full_well_e": 100000.0})
    saved = minisim.simulate(spec2).save(tmp_path / "sat.zarr")
    mov2 = saved.dataset["movie"].values
    assert (mov2 == 255).mean() > 0.99
    assert saved.dataset.attrs["saturated_pixels"] == int((mov2 == 255).sum())
