"""Each component of brain motion (minisim/motion.py), alone, has the statistics its Spec asks for."""

import numpy as np
import pytest

from minisim import Spec
from minisim.motion import N_MODES, displacement_px, simulate_motion

STILL = {"enabled": True, "rigid_sd_um": 0.0, "drift_um": 0.0, "jerk_rate_hz": 0.0,
         "oscillation_amplitude_um": 0.0, "nonrigid_amplitude_um": 0.0, "axial_sd_um": 0.0,
         "max_displacement_um": 50.0}


def motion_of(minutes: float = 20.0, fps: float = 20.0, seed: int = 3, **motion):
    spec = Spec(recording={"duration_s": minutes * 60, "fps": fps, "seed": seed}, motion={**STILL, **motion})
    return spec, simulate_motion(spec)


def test_jitter_has_its_sd_and_correlation_time():
    _, mot = motion_of(rigid_sd_um=2.0, rigid_tau_s=0.5)
    r = mot.rigid_um
    assert r.std(axis=0) == pytest.approx([2.0, 2.0], rel=0.1)  # tanh bound at 50 um is negligible
    lag = 10  # 0.5 s at 20 fps: the autocorrelation is e^-1 there
    rho = np.mean([np.corrcoef(r[:-lag, a], r[lag:, a])[0, 1] for a in (0, 1)])
    assert rho == pytest.approx(np.exp(-1), abs=0.08)
    assert (mot.mode_amp_um == 0).all() and (mot.axial_um == 0).all()


def test_jerks_come_at_their_rate_with_their_size_and_recover():
    spec, mot = motion_of(jerk_rate_hz=0.1, jerk_amplitude_um=4.0, jerk_recovery_s=0.5)
    step = np.hypot(*np.diff(mot.rigid_um, axis=0).T)
    jumps = np.flatnonzero(step > 1.0)  # between jumps the path only decays (< 0.2 um per frame)
    want = 0.1 * spec.recording.duration_s
    assert abs(len(jumps) - want) <= 3 * np.sqrt(want)
    lone = [j for j in jumps if np.all(np.abs(jumps - j)[jumps != j] > 40)]
    sizes = step[lone]
    assert sizes.min() >= 0.5 * 4.0 * 0.9 and sizes.max() <= 1.5 * 4.0 * 1.05
    j = lone[0] + 1  # 0.5 s (10 frames) after an isolated jump, e^-1 of it is left
    ratio = np.hypot(*mot.rigid_um[j + 10]) / np.hypot(*mot.rigid_um[j])
    assert ratio == pytest.approx(np.exp(-1), rel=0.05)


def test_oscillation_is_at_its_frequency_and_only_in_bouts():
    _, mot = motion_of(oscillation_amplitude_um=1.0, oscillation_hz=5.0)
    y = mot.rigid_um[:, 0]
    spectrum = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / 20.0)
    assert freqs[np.argmax(spectrum[1:]) + 1] == pytest.approx(5.0, abs=0.05)
    # bouts: mean 5 s on / 20 s off, so the tissue shakes about a fifth of the time
    env = np.abs(y).reshape(-1, 20).max(axis=1)  # per second
    moving = (env > 0.3).mean()
    assert 0.08 < moving < 0.4
    assert np.abs(y).max() <= 1.0 + 1e-9


def test_bouts_hold_their_state_through_a_segment_without_a_reset():
    """At 200 fps a 1,024-frame segment lasts 5 s and about one in four has no bout reset: the
    gate keeps the state it had at the segment's start (it used to index an empty array)."""
    from minisim.motion import _bout_resets, _bouts

    spec, mot = motion_of(minutes=2.0, fps=200.0, oscillation_amplitude_um=1.0, oscillation_hz=5.0)
    empty = [seg for seg in range(1, 23) if _bout_resets(spec, seg)[1].size == 0]
    assert empty, "no segment without a reset: pick another seed"
    for seg in empty:
        state = _bouts(spec, seg)
        before = _bouts(spec, seg - 1)[-1] if _bout_resets(spec, seg - 1)[1].size else None
        assert len(set(state)) == 1 and (before is None or state[0] == before)
    assert np.isfinite(mot.rigid_um).all() and 0 < np.abs(mot.rigid_um).max() <= 1.0 + 1e-9


def test_drift_is_a_30_minute_ou_and_max_displacement_bounds_the_path():
    _, mot = motion_of(minutes=30.0, fps=5.0, drift_um=5.0)  # well inside the 50-um soft bound
    step = np.diff(mot.rigid_um, axis=0)
    a = np.exp(-0.2 / 1800.0)  # per-frame decay of a 30-min OU at 5 fps
    assert step.std() == pytest.approx(5.0 * np.sqrt(1 - a**2), rel=0.05)  # sd 5 um at equilibrium
    lag = 1800  # after 6 min the path has wandered far more than a 1-frame step
    # (30 min is one correlation time: one path's wander varies a lot, so four seeds)
    wander = [motion_of(minutes=30.0, fps=5.0, seed=s, drift_um=5.0)[1].rigid_um for s in (3, 4, 5, 6)]
    rms = np.sqrt(np.mean([((r[lag:] - r[:-lag]) ** 2).mean() for r in wander]))
    assert rms == pytest.approx(5.0 * np.sqrt(2 * (1 - np.exp(-lag * 0.2 / 1800.0))), rel=0.3)
    assert rms > 20 * step.std()
    _, bounded = motion_of(minutes=30.0, fps=5.0, drift_um=30.0, max_displacement_um=10.0)
    assert np.abs(bounded.rigid_um).max() <= 10.0
    # the bound is soft (tanh): small displacements pass unchanged
    _, loose = motion_of(minutes=30.0, fps=5.0, drift_um=30.0)
    small = np.abs(loose.rigid_um) < 1.0
    np.testing.assert_allclose(bounded.rigid_um[small], loose.rigid_um[small], atol=0.05)


def test_nonrigid_deformation_differs_across_the_field_and_not_rigidly():
    _, mot = motion_of(minutes=10.0, nonrigid_amplitude_um=3.0, nonrigid_length_um=300.0)
    assert (mot.rigid_um == 0).all()
    assert mot.mode_amp_um.std() == pytest.approx(3.0 / np.sqrt(N_MODES), rel=0.15)  # 2-s OU over 10 min
    y_um = x_um = np.linspace(-150, 150, 31)
    t = int(np.argmax(np.abs(mot.mode_amp_um).sum(axis=1)))
    dy, dx = displacement_px(mot, 1.0, range(t, t + 1), y_um, x_um)
    shift = np.hypot(dy[0], dx[0])
    assert shift.max() > 1.0  # the tissue moves by microns ...
    assert np.ptp(dy[0]) > 1.0 or np.ptp(dx[0]) > 1.0  # ... by different amounts across the field
    assert shift.max() <= 3 * 3.0 / np.sqrt(N_MODES) * N_MODES + 1e-6  # each mode bounded at 3 sd


def test_any_segment_alone_equals_the_same_frames_of_the_whole_path():
    from minisim.motion import SEGMENT_FRAMES, motion_frames

    spec, whole = motion_of(minutes=5.0, rigid_sd_um=1.0, drift_um=3.0, jerk_rate_hz=0.5,
                            oscillation_amplitude_um=1.0, nonrigid_amplitude_um=2.0, axial_sd_um=1.0)
    for frames in (range(4000, 4100), range(SEGMENT_FRAMES - 7, SEGMENT_FRAMES + 9), range(3)):
        part = motion_frames(spec, frames)
        assert part.first_frame == frames.start
        for name in ("rigid_um", "mode_amp_um", "axial_um"):
            assert np.array_equal(getattr(part, name), getattr(whole, name)[frames.start : frames.stop]), name


def test_the_mode_geometry_is_keyed_by_the_seed_drawn_once_and_not_shared_mutable():
    from minisim.motion import _geometry

    spec, _ = motion_of(minutes=0.1, nonrigid_amplitude_um=2.0, nonrigid_length_um=150.0)
    _, mdir, phase, osc = _geometry(spec)
    phase[:] = 0.0  # a caller's copy: the next call is not affected
    osc[:] = 0.0
    k2, mdir2, phase2, osc2 = _geometry(spec)
    assert (phase2 != 0).all() and (osc2 != 0).all()
    np.testing.assert_array_equal(mdir, mdir2)
    np.testing.assert_allclose(np.hypot(k2[:, 0], k2[:, 1]), 2 * np.pi / 150.0)
    np.testing.assert_allclose(np.hypot(mdir2[:, 0], mdir2[:, 1]), 1.0)
    other, _ = motion_of(minutes=0.1, seed=4, nonrigid_amplitude_um=2.0)
    assert not np.array_equal(_geometry(other)[2], phase2)


def test_paths_have_no_seam_at_segment_boundaries():
    from minisim.motion import SEGMENT_FRAMES

    _, mot = motion_of(minutes=30.0, rigid_sd_um=1.0, rigid_tau_s=2.0, jerk_rate_hz=0.0)
    step = np.abs(np.diff(mot.rigid_um[:, 0]))
    at_boundary = step[SEGMENT_FRAMES - 1 :: SEGMENT_FRAMES]
    # a boundary step is an ordinary step of the OU (sd sqrt(2 (1 - a)) ~ 0.16 um), not a jump
    assert at_boundary.size > 30
    assert at_boundary.mean() == pytest.approx(step.mean(), rel=0.3)


def test_the_warp_samples_where_displacement_px_says_bilinearly_in_float32():
    """render._warp (rows of displacements, then the gather) gives the same bytes as a numpy
    bilinear warp from displacement_px, and displacement_px the values of the per-pixel
    pixel_displacement: one definition of where each pixel samples the tissue."""
    from minisim.motion import displacement_terms, mode_patterns, pixel_displacement
    from minisim.render import _warp

    _, mot = motion_of(minutes=1.0, rigid_sd_um=3.0, nonrigid_amplitude_um=4.0, nonrigid_length_um=60.0)
    frames, d, m = range(100, 106), 1.7, 12
    y_um, x_um = np.arange(-20, 13) * d, np.arange(5, 46) * d  # a 33 x 41 px window off the axis
    dy, dx = displacement_px(mot, d, frames, y_um, x_um)
    rigid, amp = displacement_terms(mot, d, frames)
    pat = mode_patterns(mot, y_um, x_um)
    mode_dir = np.ascontiguousarray(mot.mode_dir, np.float64)
    for t, i, j in ((0, 0, 0), (3, 17, 40), (5, 32, 9)):
        assert pixel_displacement(rigid, amp, mode_dir, pat, t, i, j) == (dy[t, i, j], dx[t, i, j])
    assert np.abs(dy).max() > 1.0 and np.ptp(dx[0]) > 0.1  # it moves, and not rigidly
    g = np.random.default_rng(0)
    T, h, w = dy.shape
    tissue = g.uniform(0, 100, (T, h + 2 * m, w + 2 * m)).astype(np.float32)
    vi = g.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    vg = g.uniform(0.0, 5.0, (h, w)).astype(np.float32)
    out = np.empty((T, h, w), np.float32)
    _warp(tissue, m, rigid, amp, mode_dir, pat, vi, vg, out)
    f32 = np.float32
    ly, lx = np.floor(-dy), np.floor(-dx)
    iy = np.arange(h)[:, None] + m + ly.astype(np.int64)
    ix = np.arange(w)[None, :] + m + lx.astype(np.int64)
    fy, fx = -dy - ly, -dx - lx
    assert iy.min() >= 0 and iy.max() < h + 2 * m - 1 and ix.min() >= 0 and ix.max() < w + 2 * m - 1
    tt = np.arange(T)[:, None, None]
    a, b = tissue[tt, iy, ix], tissue[tt, iy, ix + 1]
    c, e = tissue[tt, iy + 1, ix], tissue[tt, iy + 1, ix + 1]
    top, bottom = a + fx * (b - a), c + fx * (e - c)
    np.testing.assert_array_equal(out, vi * (top + fy * (bottom - top)) + vg)
    assert fy.dtype == f32 and top.dtype == f32
    # a window of the warp (its tissue, patterns and fields cropped) is the crop of the warp
    for i0, i1, j0, j1 in ((5, 20, 3, 30), (0, 1, 17, 41), (31, 33, 0, 7)):
        part = np.empty((T, i1 - i0, j1 - j0), np.float32)
        _warp(np.ascontiguousarray(tissue[:, i0 : i1 + 2 * m, j0 : j1 + 2 * m]), m, rigid, amp, mode_dir,
              np.ascontiguousarray(pat[:, i0:i1, j0:j1]), vi[i0:i1, j0:j1].copy(), vg[i0:i1, j0:j1].copy(), part)
        np.testing.assert_array_equal(part, out[:, i0:i1, j0:j1])
