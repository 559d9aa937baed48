"""The activity model (minisim/activity.py; docs/activity.md): each test one behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from minisim import presets
from minisim.activity import (
    SEGMENT_FRAMES,
    ActivityBatch,
    _exp_row,
    _log_row,
    dff_from_spikes,
    expected_dff,
    hill_dff,
    simulate_activity,
    unit_params,
)
from minisim.rng import POISSON_CHUNK_MEAN, stream_poissons
from minisim.spec import INDICATORS, ActivitySpec, Spec


def _spec(seed: int = 0, bleaching: dict | None = None, neuropil: dict | None = None, **activity) -> Spec:
    spec = Spec()
    update: dict = {"activity": spec.activity.model_copy(update=activity),
                    "recording": spec.recording.model_copy(update={"seed": seed})}
    if bleaching is not None:
        ill = spec.illumination
        update["illumination"] = ill.model_copy(update={"bleaching": ill.bleaching.model_copy(update=bleaching)})
    if neuropil is not None:
        tis = spec.tissue
        update["tissue"] = tis.model_copy(update={"neuropil": tis.neuropil.model_copy(update=neuropil)})
    return spec.model_copy(update=update)


def _assert_same_unit(a, i, b, j):
    for name in ("spikes", "dff", "bleach", "C"):
        assert np.array_equal(getattr(a, name)[i], getattr(b, name)[j]), name
    assert np.array_equal(a.spike_times[i], b.spike_times[j])
    for name in ("active", "rate_hz", "tau_rise_ms", "tau_decay_ms", "amplitude"):
        assert getattr(a, name)[i] == getattr(b, name)[j], name


def test_outputs_have_the_documented_shapes_and_dtypes():
    act = simulate_activity(_spec(), np.array([3, 1, 2]), n_frames=50)
    assert act.spikes.shape == act.dff.shape == act.bleach.shape == act.C.shape == (3, 50)
    assert act.spikes.dtype == np.uint8
    assert act.dff.dtype == act.bleach.dtype == act.C.dtype == act.neuropil_f.dtype == np.float32
    assert act.neuropil_f.shape == (50,)
    assert len(act.spike_times) == 3 and all(t.dtype == np.float64 for t in act.spike_times)
    assert act.bleach[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert np.all(act.dff >= 0)


def test_spike_counts_are_the_binned_spike_times():
    fps = 20.0
    act = simulate_activity(_spec(rate_median_hz=2.0), np.arange(20), n_frames=3000)
    for i, t in enumerate(act.spike_times):
        assert np.all(np.diff(t) >= 0) and (t.size == 0 or t[-1] < 3000 / fps)
        counts = np.bincount(np.floor(t * fps).astype(int), minlength=3000)
        assert np.array_equal(counts, act.spikes[i])


@pytest.mark.slow
def test_mean_firing_rate_and_active_fraction_match_spec():
    spec = _spec(seed=3)
    a = spec.activity
    n_units, duration_s = 800, 600.0
    act = simulate_activity(spec, np.arange(n_units), n_frames=int(duration_s * spec.recording.fps))
    measured = act.spikes.sum(axis=1) / duration_s
    # silent cells never fire; active cells all fire within 600 s
    assert np.all(measured[~act.active] == 0)
    assert np.all(measured[act.active] > 0)
    assert abs(act.active.mean() - a.active_fraction) < 0.03          # ±3 pp (docs/physics.md §8.8)
    assert abs(np.median(measured[act.active]) / a.rate_median_hz - 1) < 0.15
    # rate_hz is the cell's mean rate over the recording (gate included)
    assert abs(measured[act.active].sum() / act.rate_hz[act.active].sum() - 1) < 0.05


def test_refractory_period_is_respected():
    act = simulate_activity(_spec(rate_median_hz=5.0, burst_probability=1.0, refractory_ms=6.0),
                            np.arange(30), n_frames=2000)
    isi = np.concatenate([np.diff(t) for t in act.spike_times])
    assert isi.size > 1000 and isi.min() >= 0.006


def test_decay_time_of_isolated_transients_matches_tau_decay():
    spec = _spec(seed=1, hill_enabled=False, rate_median_hz=0.05, rate_sd_ln=0.0, active_fraction=1.0,
                 burst_probability=0.0, tau_jitter_cv=0.2, bleaching={"enabled": False})
    fps = spec.recording.fps
    act = simulate_activity(spec, np.arange(100), n_frames=int(600 * fps))
    ratios = []
    for i, t in enumerate(act.spike_times):
        for k, tk in enumerate(t):
            before = t[k - 1] if k else -np.inf
            after = t[k + 1] if k + 1 < t.size else np.inf
            f0 = int(np.floor(tk * fps))
            if tk - before < 6.0 or after - tk < 2.0 or f0 + 32 >= act.dff.shape[1]:
                continue
            frames = np.arange(f0 + 6, f0 + 30)          # 0.3-1.5 s after the spike: rise is over
            slope = np.polyfit(frames / fps, np.log(act.dff[i, frames].astype(np.float64)), 1)[0]
            ratios.append((-1.0 / slope) / (act.tau_decay_ms[i] / 1e3))
    assert len(ratios) > 50
    assert np.all(np.abs(np.array(ratios) - 1) < 0.10)
    assert abs(np.median(ratios) - 1) < 0.02


def test_kernel_is_exposure_averaged_not_point_sampled():
    a = ActivitySpec(hill_enabled=False)
    # at 1 kHz the exposure average reaches the peak-normalised kernel's peak
    assert abs(dff_from_spikes(np.array([0.1003]), 1000, 1000.0, a).max() / a.dff_per_spike - 1) < 0.01
    # at 20 fps one frame holds the whole rise: the average is below the peak, the area is kept
    fast = dff_from_spikes(np.array([0.1003]), 12000, 1000.0, a)
    slow = dff_from_spikes(np.array([0.1003]), 240, 20.0, a)
    assert slow.max() < a.dff_per_spike
    assert abs(slow.sum() / 20.0 - fast.sum() / 1000.0) < 1e-3 * fast.sum() / 1000.0


@pytest.mark.parametrize("indicator", list(INDICATORS))
def test_one_ap_dff_with_hill_equals_indicator_table(indicator):
    a = ActivitySpec(indicator=indicator, hill_enabled=True)
    table = INDICATORS[indicator]["dff_per_spike"]
    assert abs(float(hill_dff(1, a)) / table - 1) < 0.03
    # the same through the simulated kernel, sampled fast enough to see the peak
    peak = dff_from_spikes(np.array([0.05]), 2000, 1000.0, a).max()
    assert abs(peak / table - 1) < 0.03


def test_dff_rises_monotonically_with_spike_count_and_saturates():
    a = ActivitySpec(indicator="GCaMP6f")
    n = np.arange(0, 200)
    d = hill_dff(n, a)
    assert d[0] == 0 and np.all(np.diff(d) > 0)
    f_rest = 1 + (a.dynamic_range - 1) / (1 + (a.kd_nm / a.ca_rest_nm) ** a.hill_n)
    assert d[-1] < a.dynamic_range / f_rest - 1
    peaks = [dff_from_spikes(np.full(k, 0.05), 400, 1000.0, a).max() for k in (1, 2, 5, 10, 20)]
    assert np.all(np.diff(peaks) > 0)
    # supralinear at small counts (docs/physics.md §4: 0.15 / 0.33 for 1 / 2 APs)
    assert peaks[1] > 2 * peaks[0]


def test_unit_traces_do_not_depend_on_other_units_or_order():
    spec = _spec(seed=7, correlation=0.5, rate_median_hz=1.0)
    ids = np.array([5, 2**47 - 3, 17, 123456789, 0, 42], np.int64)
    n = 2 * SEGMENT_FRAMES + 77
    full = simulate_activity(spec, ids, n_frames=n)
    alone = simulate_activity(spec, ids[[2]], n_frames=n)
    reordered = simulate_activity(spec, ids[::-1], n_frames=n)
    _assert_same_unit(full, 2, alone, 0)
    for i in range(len(ids)):
        _assert_same_unit(full, i, reordered, len(ids) - 1 - i)
    assert np.array_equal(full.neuropil_f, alone.neuropil_f)
    assert full.spikes.sum() > 0


def test_shorter_recording_is_bitwise_prefix_of_longer():
    spec = _spec(seed=11, correlation=0.3, rate_median_hz=1.0)
    ids = np.arange(40) * 1000 + 7
    n1, n2 = SEGMENT_FRAMES + 300, 3 * SEGMENT_FRAMES + 5
    short = simulate_activity(spec, ids, n_frames=n1)
    long = simulate_activity(spec, ids, n_frames=n2)
    for name in ("spikes", "dff", "bleach", "C"):
        assert np.array_equal(getattr(short, name), getattr(long, name)[:, :n1]), name
    assert np.array_equal(short.neuropil_f, long.neuropil_f[:n1])
    t_end = n1 / spec.recording.fps
    for ts, tl in zip(short.spike_times, long.spike_times):
        assert np.array_equal(ts, tl[tl < t_end])


def test_default_n_frames_comes_from_the_recording():
    spec = _spec().model_copy(update={"recording": Spec().recording.model_copy(update={"duration_s": 3.0})})
    assert simulate_activity(spec, np.arange(2)).dff.shape == (2, 60)


def _events_per_cell_per_minute(name: str) -> float:
    spec = Spec().model_copy(update={"activity": presets.activity(name)})
    duration_s = 120.0
    act = simulate_activity(spec, np.arange(300), n_frames=int(duration_s * spec.recording.fps))
    # an event = a spike more than 50 ms after the previous one (bursts count once)
    events = sum(int(np.sum(np.diff(t, prepend=-np.inf) > 0.05)) for t in act.spike_times)
    return events / len(act.spike_times) / (duration_s / 60)


def test_presets_order_quiet_moderate_active_in_events_per_minute():
    quiet, moderate, active = (_events_per_cell_per_minute(n) for n in ("quiet", "moderate", "active"))
    assert quiet < moderate < active
    assert active > 1.3 * moderate and moderate > 1.3 * quiet


def _mean_pairwise_count_correlation(correlation: float) -> float:
    spec = _spec(seed=5, correlation=correlation, ensemble_count=1, rate_median_hz=2.0, rate_sd_ln=0.0,
                 active_fraction=1.0, up_dwell_s=1e5, down_dwell_s=1e-3, burst_probability=0.0,
                 modulation_sd_ln=1.0)
    act = simulate_activity(spec, np.arange(60), n_frames=6000)
    counts = act.spikes.reshape(60, -1, 20).sum(axis=2).astype(np.float64)  # 1 s bins
    r = np.corrcoef(counts)
    return float(r[np.triu_indices(60, 1)].mean())


@pytest.mark.slow
def test_correlation_knob_raises_within_ensemble_correlation():
    r0, r5, r9 = (_mean_pairwise_count_correlation(c) for c in (0.0, 0.5, 0.9))
    assert abs(r0) < 0.03
    assert r0 + 0.1 < r5 < r9 - 0.1


def test_bleaching_off_gives_ones():
    act = simulate_activity(_spec(bleaching={"enabled": False}), np.arange(10), n_frames=500)
    assert np.all(act.bleach == 1.0)
    assert np.array_equal(act.C, 1.0 + act.dff)


@pytest.mark.slow
def test_bleaching_follows_the_formula():
    beta, tau_s, fps = 0.3, 100.0, 20.0
    n = 4000
    t = np.arange(n) / fps
    plain = simulate_activity(_spec(bleaching={"fraction": beta, "tau_s": tau_s, "activity_dependence": 0.0}),
                              np.arange(10), n_frames=n)
    expected = (1 - beta) + beta * np.exp(-t / tau_s)
    np.testing.assert_allclose(plain.bleach, np.broadcast_to(expected, plain.bleach.shape), rtol=1e-6)
    # activity shortens the bleaching time along each unit's expected course:
    # exponent t (1 + κ E[ΔF/F]) / τ_b, E[ΔF/F] = rate x the area of one transient
    kappa = 2.0
    spec = _spec(rate_median_hz=2.0, bleaching={"fraction": beta, "tau_s": tau_s, "activity_dependence": kappa})
    act = simulate_activity(spec, np.arange(10), n_frames=n)
    mean_dff = expected_dff(spec, unit_params(spec, np.arange(10)))
    expected = (1 - beta) + beta * np.exp(-t[None, :] * (1 + kappa * mean_dff[:, None]) / tau_s)
    np.testing.assert_allclose(act.bleach, expected, rtol=1e-5)
    assert np.all(act.bleach[act.active, -1] < plain.bleach[0, -1])
    assert np.all(act.bleach[~act.active] == plain.bleach[0])
    # the expected ΔF/F is what the realised traces average to (rates and transients as drawn)
    long = simulate_activity(spec.with_updates({"activity.hill_enabled": False, "activity.rate_sd_ln": 0.0,
                                                "activity.active_fraction": 1.0}),
                             np.arange(200), n_frames=36000)
    lin = spec.with_updates({"activity.hill_enabled": False, "activity.rate_sd_ln": 0.0,
                             "activity.active_fraction": 1.0})
    want = expected_dff(lin, unit_params(lin, np.arange(200)))
    assert long.dff.astype(np.float64).mean() == pytest.approx(want.mean(), rel=0.05)


def test_neuropil_course_fluctuates_around_one_and_bleaches_half_as_much():
    frac = 0.05
    spec = _spec(neuropil={"fluctuation_fraction": frac, "tau_s": 1.0}, bleaching={"enabled": False})
    f = simulate_activity(spec, np.arange(2), n_frames=36000).neuropil_f.astype(np.float64)
    assert abs(f.mean() - 1) < 0.03
    assert 0.5 * frac < f.std() < 1.5 * frac
    off = simulate_activity(_spec(neuropil={"enabled": False}, bleaching={"fraction": 0.4, "tau_s": 50.0}),
                            np.arange(2), n_frames=2000)
    t = np.arange(2000) / 20.0
    np.testing.assert_allclose(off.neuropil_f, 0.8 + 0.2 * np.exp(-t / 50.0), rtol=1e-6)


def test_neuropil_course_does_not_depend_on_units():
    spec = _spec(seed=2)
    a = simulate_activity(spec, np.arange(5), n_frames=1500).neuropil_f
    b = simulate_activity(spec, np.array([], np.int64), n_frames=1500).neuropil_f
    assert np.array_equal(a, b)


def test_seed_changes_the_activity():
    """Another seed redraws every unit (rate, kinetics, spikes) and the neuropil course, from the
    same distributions: the per-unit draws all differ while the population's totals agree."""
    kw = {"rate_median_hz": 2.0, "rate_sd_ln": 0.0, "active_fraction": 1.0}
    a = simulate_activity(_spec(seed=1, **kw), np.arange(40), n_frames=2000)
    b = simulate_activity(_spec(seed=2, **kw), np.arange(40), n_frames=2000)
    assert np.all(a.tau_decay_ms != b.tau_decay_ms) and np.all(a.amplitude != b.amplitude)
    assert all(not np.array_equal(ta, tb) for ta, tb in zip(a.spike_times, b.spike_times))
    assert not np.array_equal(a.neuropil_f, b.neuropil_f)
    # same Spec otherwise: 2 Hz for 100 s per unit either way
    na, nb = a.spikes.sum(), b.spikes.sum()
    assert abs(na - nb) / (na + nb) * 2 < 0.2
    assert abs(na / 40 / 100.0 / 2.0 - 1) < 0.2


def test_up_down_gate_silences_down_states_and_keeps_mean_rate():
    # up 5 s / down 5 s, 10 Hz mean → 20 Hz while up; 0.1 s bins are empty in down states.
    # No refractory period: at 20 Hz it would drop ~4 % of the spikes (1 - exp(-20 Hz · 2 ms)),
    # most of the 5 % tolerance, and hide a gate that loses rate
    spec = _spec(seed=4, rate_median_hz=10.0, rate_sd_ln=0.0, up_dwell_s=5.0, down_dwell_s=5.0,
                 burst_probability=0.0, modulation_sd_ln=0.0, active_fraction=1.0, refractory_ms=0.0)
    act = simulate_activity(spec, np.arange(50), n_frames=12000)
    empty = (act.spikes.reshape(50, -1, 2).sum(axis=2) == 0).mean()
    assert abs(empty - (0.5 + 0.5 * np.exp(-2.0))) < 0.03
    assert abs(act.spikes.sum() / 50 / 600.0 / 10.0 - 1) < 0.05


def test_any_segment_alone_equals_the_same_segment_of_the_whole_recording():
    # no state is carried from one segment to the next: a process can start anywhere
    spec = _spec(seed=9, correlation=0.4, rate_median_hz=2.0, tau_decay_ms=900.0)
    ids = np.arange(30) * 7 + 1
    whole = simulate_activity(spec, ids, n_frames=5 * SEGMENT_FRAMES)
    for seg in (4, 1):  # out of order, in a fresh batch each time
        part = ActivityBatch(spec, ids).segment(seg)
        sl = slice(seg * SEGMENT_FRAMES, (seg + 1) * SEGMENT_FRAMES)
        for name in ("spikes", "dff", "bleach"):
            assert np.array_equal(getattr(part, name), getattr(whole, name)[:, sl]), name
        assert np.array_equal(part.neuropil_f, whole.neuropil_f[sl])
    assert whole.spikes[:, 4 * SEGMENT_FRAMES:].sum() > 0


@pytest.mark.parametrize("hill", [True, False], ids=["hill", "linear"])
def test_a_segment_computed_to_a_recordings_end_is_the_whole_segments_prefix(hill):
    """A recording that ends inside a segment computes that segment to its end only: its first
    frames are the whole segment's bits, the rest 0, its spikes and neuropil the whole's."""
    spec = _spec(seed=5, hill_enabled=hill, rate_median_hz=3.0, tau_decay_ms=700.0)
    ids = np.arange(40) * 3 + 2
    for seg in (0, 2):
        whole = ActivityBatch(spec, ids).segment(seg)
        assert whole.spikes.sum() > 20
        for frames in (1, 7, 40, 513, SEGMENT_FRAMES - 1):
            part = ActivityBatch(spec, ids).segment(seg, frames)
            for name in ("spikes", "dff", "bleach", "C"):
                got, ref = getattr(part, name), getattr(whole, name)
                assert got.shape == ref.shape, name
                assert np.array_equal(got[:, :frames], ref[:, :frames]), (name, frames)
                assert not got[:, frames:].any(), (name, frames)
            assert all(np.array_equal(a, b) for a, b in zip(part.spike_times, whole.spike_times))
            assert np.array_equal(part.neuropil_f, whole.neuropil_f)
    for bad in (0, 1025, 3.5, True):
        with pytest.raises(ValueError, match=rf"frames={bad!r} must be a whole number in \[1, 1024\]"):
            ActivityBatch(spec, ids).segment(0, bad)


def test_a_world_refuses_to_read_past_its_last_frame():
    """Its last segment holds zeros past the recording's end: a read there is an error, not 0."""
    from minisim.render import build_world

    spec = _spec().with_updates({"sensor.height_px": 32, "sensor.width_px": 32,
                                 "recording.duration_s": 2.0})
    world = build_world(spec)
    C, _ = world.traces(range(30, 40))
    assert C.shape[1] == 10
    with pytest.raises(ValueError, match="frames 30..41 reach past this World's n_frames=40"):
        world.traces(range(30, 41))


def test_calcium_carries_across_segment_boundaries():
    # a transient that starts just before a boundary decays on after it, without a step
    spec = _spec(seed=2, hill_enabled=False, rate_median_hz=0.5, rate_sd_ln=0.0, active_fraction=1.0,
                 burst_probability=0.0, tau_jitter_cv=0.0, bleaching={"enabled": False})
    act = simulate_activity(spec, np.arange(200), n_frames=2 * SEGMENT_FRAMES)
    b = SEGMENT_FRAMES
    quiet = act.spikes[:, b - 10 : b + 2].sum(axis=1) == 0  # the rise of earlier spikes is over
    decay = np.exp(-1 / (20.0 * 0.5))  # one frame at 20 fps of a 500 ms decay
    lit = quiet & (act.dff[:, b - 1] > 0.01)
    assert lit.sum() > 10
    ratio = act.dff[lit, b] / act.dff[lit, b - 1]
    np.testing.assert_allclose(ratio, decay, rtol=0.02)


def test_gate_dwell_times_are_exponential_with_their_means():
    spec = _spec(seed=6, up_dwell_s=3.0, down_dwell_s=6.0)
    batch = ActivityBatch(spec, np.arange(40))
    up_dwells, down_dwells = [], []
    seg_s = SEGMENT_FRAMES / spec.recording.fps
    for uid in range(40):
        flips, state0 = [], None
        for seg in range(6):
            up0, sw = batch._gate_switches(uid, seg)
            state0 = up0 if state0 is None else state0
            flips.extend(sw)
        flips = np.array(flips)
        dwell = np.diff(flips)
        starts_up = (np.arange(dwell.size) % 2 == 0) != state0  # state after each flip
        up_dwells.extend(dwell[starts_up])
        down_dwells.extend(dwell[~starts_up])
    up_dwells, down_dwells = np.array(up_dwells), np.array(down_dwells)
    assert up_dwells.size > 500 and down_dwells.size > 500 and flips.max() < 6 * seg_s
    assert up_dwells.mean() == pytest.approx(3.0, rel=0.08)
    assert down_dwells.mean() == pytest.approx(6.0, rel=0.08)
    assert np.std(up_dwells) / up_dwells.mean() == pytest.approx(1.0, abs=0.1)  # exponential: CV 1


@pytest.mark.parametrize("mean", [0.3, 2.5, POISSON_CHUNK_MEAN, 100.0, 1000.0])
def test_counter_poisson_has_the_poisson_mean_and_variance_at_small_and_large_means(mean):
    # past exp(-mean) underflow (~745) too: the draw sums chunks of mean <= POISSON_CHUNK_MEAN
    n = 20000
    x = stream_poissons(3, "activity_births", mean, n).astype(np.float64)
    assert abs(x.mean() - mean) < 5 * np.sqrt(mean / n)
    # sd of the sample variance: sqrt((2 mean^2 + mean) / n)
    assert abs(x.var() - mean) < 5 * np.sqrt((2 * mean**2 + mean) / n)
    if mean < 3:
        assert abs((x == 0).mean() - np.exp(-mean)) < 5 * np.sqrt(np.exp(-mean) / n)
    assert np.array_equal(x, stream_poissons(3, "activity_births", mean, n))  # keyed, not stateful


def test_a_units_draws_use_all_64_bits_of_its_id():
    # the counter holds the id's low and high halves: ids equal modulo 2**32 are different units
    spec = _spec(seed=1, rate_median_hz=2.0, rate_sd_ln=0.0, active_fraction=1.0)
    ids = np.array([5, 5 + 2**32, 5 + 2**33], np.int64)
    act = simulate_activity(spec, ids, n_frames=SEGMENT_FRAMES)
    times = act.spike_times
    assert all(t.size > 20 for t in times)
    assert not np.array_equal(times[0], times[1]) and not np.array_equal(times[0], times[2])
    alone = simulate_activity(spec, ids[1:2], n_frames=SEGMENT_FRAMES)
    assert np.array_equal(alone.spike_times[0], times[1])


def test_a_units_constants_do_not_depend_on_the_units_drawn_with_it():
    spec = _spec(seed=4, ensemble_count=7)
    ids = np.array([5, 2**47 - 3, 17, 123456789, 0, 42, 5 + 2**32, -9], np.int64)
    full = unit_params(spec, ids)
    for some in (np.array([2]), np.array([7, 0, 3]), np.arange(len(ids))[::-1]):
        part = unit_params(spec, ids[some])
        for name, values in full.items():
            assert np.array_equal(values[some], part[name]), name
    assert full["rate_hz"][0] != full["rate_hz"][6]  # ids equal modulo 2**32 are different units
    assert all(len(v) == 0 for v in unit_params(spec, np.empty(0, np.int64)).values())


def test_unit_constants_have_their_laws():
    from scipy import stats

    spec = _spec(seed=2, active_fraction=0.7, rate_median_hz=0.5, rate_sd_ln=0.8, amplitude_sd_ln=0.3,
                 tau_jitter_cv=0.2, ensemble_count=6)
    a = spec.activity
    n = 40000
    p = unit_params(spec, np.arange(n, dtype=np.int64) * 7919 + 1)
    assert abs(p["active"].mean() - 0.7) < 4 * np.sqrt(0.21 / n)
    assert stats.kstest(np.log(p["rate_hz"] / 0.5) / 0.8, "norm").pvalue > 1e-3
    assert stats.kstest(np.log(p["amplitude"]) / 0.3, "norm").pvalue > 1e-3
    jitter_ln = np.sqrt(np.log1p(0.2**2))
    assert stats.kstest(np.log(p["tau_decay_ms"] / a.tau_decay_ms) / jitter_ln, "norm").pvalue > 1e-3
    rise = p["tau_rise_ms"] < 0.9 * p["tau_decay_ms"]  # the cap binds almost never here
    assert rise.mean() > 0.999
    assert stats.kstest(np.log(p["tau_rise_ms"][rise] / a.tau_rise_ms) / jitter_ln, "norm").pvalue > 1e-3
    counts = np.bincount(p["ensemble"], minlength=6)
    assert len(counts) == 6
    assert stats.chisquare(counts).pvalue > 1e-3
    # the draws are independent of each other: no correlation between a unit's normals
    z = np.log(np.column_stack([p["rate_hz"], p["amplitude"], p["tau_decay_ms"]]))
    assert np.abs(np.corrcoef(z.T)[np.triu_indices(3, 1)]).max() < 4 / np.sqrt(n)


def test_keyed_normals_are_the_float64_normal_quantile():
    from scipy.special import ndtri

    from minisim.rng import normal_quantiles, unit_uniforms

    u = unit_uniforms(9, "activity_params", np.arange(50000), 2).ravel()
    assert 0 < u.min() and u.max() < 1
    u = np.concatenate([u, [2.0**-54, 1e-300, 1 - 2.0**-53, 0.5, 0.075, 0.925, 1e-20]])
    z, want = normal_quantiles(u), ndtri(u)
    assert np.max(np.abs(z - want) / np.maximum(1.0, np.abs(want))) < 1e-14


def test_row_exp_and_log_are_within_a_few_ulp_of_the_c_library():
    gen = np.random.default_rng(0)
    x = np.concatenate([gen.uniform(-708, 709, 20000), gen.normal(0, 3, 20000), [0.0, -708.0, 709.0, 1e-12]])
    got = np.empty_like(x)
    _exp_row(x, got, np.empty_like(x))
    want = np.exp(x)
    assert np.max(np.abs(got - want) / np.spacing(want)) <= 2
    y = np.concatenate([np.exp(gen.uniform(-700, 700, 20000)), gen.uniform(0.1, 100, 20000),
                        1 + gen.uniform(-1e-6, 1e-6, 1000), [1.0, 2.0, 0.5, np.sqrt(2.0)]])
    got = np.empty_like(y)
    _log_row(y, got, np.empty_like(y))
    want = np.log(y)
    assert np.max(np.abs(got - want) / np.spacing(np.maximum(np.abs(want), 1e-300))) <= 4
    assert got[-4] == 0.0
