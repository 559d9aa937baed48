"""Neural activity: spikes, calcium ΔF/F, bleaching and the neuropil time course, per unit.

This is the ``activity`` box of the data flow (docs/architecture.md): numpy and numba kernels,
computed a time segment at a time, small next to the movie. The renderer multiplies a cell's resting image ``A`` by
``C = bleach * (1 + dff)``, so ``C`` is 1 for a cell at rest at t = 0.

The model (docs/physics.md §4, §5, §7.2, §7.3; the whole page is docs/activity.md):

* **Gate.** A unit is silent (never fires; probability ``1 - active_fraction``) or active.
  An active unit switches between *up* and *down* states, a two-state Markov process in
  continuous time with exponential dwells (means ``up_dwell_s``, ``down_dwell_s``); event onsets
  happen only in up states (the few-ms tail of a burst may run past a switch).
* **Rate.** ``rate_hz`` ~ LogNormal(median ``rate_median_hz``, σ_ln ``rate_sd_ln``) is the
  unit's mean rate over the whole recording, so the mean rate measured on S matches it: inside
  up states the rate is ``rate_hz / p_up`` with ``p_up = up_dwell / (up_dwell + down_dwell)``.
* **Modulation and ensembles.** Events are an inhomogeneous Poisson process with intensity
  ``rate_hz / p_up · m(t) / E[spikes per event]`` while up, where
  ``log m = σ_m (√ρ X_e(t) + √(1-ρ) Y_i(t)) - σ_m²/2`` (E[m] = 1): X_e is the unit-variance OU
  drive shared by the unit's ensemble, Y_i the unit's private OU, both with time constant
  ``modulation_tau_s``; ρ = ``correlation`` (0 = independent cells).
* **Bursts.** With probability ``burst_probability`` an event is a burst adding
  ``1 + Poisson(burst_extra_spikes_mean)`` spikes at ISIs uniform in
  [``burst_isi_min_ms``, ``burst_isi_max_ms``]; else a single spike. Spikes closer than
  ``refractory_ms`` to the previous kept spike are dropped.
* **Kinetics.** Peak-normalised double exponential
  h(t) = (exp(-t/τ_d) - exp(-t/τ_r)) / h_max, averaged analytically over each frame's exposure
  [t/fps, (t+1)/fps) for exact (sub-frame) spike times; per-cell τ's are log-normal around the
  Spec values (median = Spec value, CV ``tau_jitter_cv``).
* **Indicator.** Linear (``hill_enabled`` False): ΔF/F = a_i · ``dff_per_spike`` · Σ h. Hill
  (True): [Ca] = Ca_rest + a_i · ΔCa · Σ h, F ∝ 1 + (R_f - 1)·[Ca]^n / ([Ca]^n + K_d^n),
  ΔF/F = F([Ca]) / F(Ca_rest) - 1. a_i ~ LogNormal(0, ``amplitude_sd_ln``).
* **Bleaching.** bleach(t) = (1 - β) + β exp(-t (1 + κ E[ΔF/F]) / τ_b), E[ΔF/F] the unit's
  expected ΔF/F (:func:`expected_dff`): bleaching goes with the light a cell emits on average,
  so active cells bleach faster (κ = ``activity_dependence``); a function of t alone, so any
  segment has it without the ones before (docs/segments.md). The neuropil bleaches with β/2 and no activity term (docs/physics.md §7.3).
* **Neuropil course.** ``neuropil_f = (1 + fluctuation_fraction · ŷ(t)) · bleach_np(t)``, ŷ the
  ensemble drives averaged, low-passed with ``tissue.neuropil.tau_s`` and scaled to unit sd.
  It depends on the ensemble drives only, never on which units are simulated.

Keys and stability: the per-unit constants come from the unit id's counter-based streams under
the keys of (seed, "activity_params") and (seed, "ensemble_membership") (:func:`unit_params`,
minisim.rng "keyed constants"); the ensemble drives from
``rng(seed, "ensembles", ensemble, segment)`` and their knots. Everything else a unit draws (its
gate's resets, its private modulation's knots and in-segment normals, its events, bursts and their
ISIs) is read from counter-based word streams under the one Philox key of
``(seed, "activity_births")`` (:func:`minisim.rng.open_stream`): the counter holds the unit id's two
32-bit halves, the segment (or the knot) and the kind of draw with the draw's index, so every draw
is a function of (seed, unit id, segment, kind, index) alone, never of the other units in the
batch, their order, the chunking or the process. Time is cut into fixed segments of
:data:`SEGMENT_FRAMES` frames, always computed whole (the last one is cropped), and nothing is
carried from one segment to the next: the state at a segment's start comes from the Spec alone
(keyed OU knots bridged inside the segment, the gate's last keyed reset, calcium and the neuropil
low-pass rebuilt over a bounded look-back window; docs/segments.md). So any process computes any
segment, a unit's traces do not depend on the other units simulated (subset-stable), and a
shorter recording is bit for bit the prefix of a longer one (prefix-stable). The per-unit work
runs in numba kernels that loop over the units of a batch (births, look-back window and
refractory rule, calcium and indicator); each unit's result depends on its own streams only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.signal import lfilter

from .rng import (
    KIND_SHIFT,
    STREAM_STATE,
    id_halves,
    lookback_knots,
    next_exponential,
    next_poisson,
    next_uniform,
    next_word,
    normal_quantiles,
    open_stream,
    ou_segment,
    philox4x32,
    philox_key,
    rng,
    unit_uniforms,
    words_to_normals32,
)
from .spec import ActivitySpec, Spec

__all__ = ["SEGMENT_FRAMES", "Activity", "ActivityBatch", "dff_from_spikes", "expected_dff", "hill_dff",
           "simulate_activity", "unit_params"]

#: Frames per randomness segment. Part of the bytes of every recording: never change it
#: without bumping the activity algorithm version.
SEGMENT_FRAMES = 1024

#: The neuropil (autofluorescence) bleaches with this fraction of the cells' β (docs/physics.md §7.3).
NEUROPIL_BLEACH_RATIO = 0.5

#: A jittered per-cell rise time is kept below this fraction of the cell's decay time, so the
#: double exponential stays a rise-then-decay shape whatever the jitter draws.
MAX_RISE_OVER_DECAY = 0.9


@dataclass(frozen=True)
class Activity:
    """Ground-truth activity of a set of units (see the module docstring for the model).

    Attributes
    ----------
    spikes : (n_units, n_frames) uint8, spike counts per frame (ground truth S), clipped at 255.
    dff : (n_units, n_frames) float32, ΔF/F before bleaching (0 at rest), exposure-averaged.
    bleach : (n_units, n_frames) float32, multiplicative bleaching factor, 1 at t = 0.
        ``bleach`` is None in the Activity a World's segment keeps (the segment's C holds it).
    spike_times : per unit, float64 exact spike times in s (those falling in the recording).
    neuropil_f : (n_frames,) float32, neuropil time course, mean ~1, bleaching included.
    active : (n_units,) bool, False for a silent cell.
    rate_hz : (n_units,) float32, drawn mean firing rate over the recording (0 effective if silent).
    tau_rise_ms, tau_decay_ms : (n_units,) float32, per-cell kinetics.
    amplitude : (n_units,) float32, per-cell multiplier of ΔF/F per spike (or of ΔCa with Hill).
    """

    spikes: np.ndarray | None
    dff: np.ndarray | None
    bleach: np.ndarray | None
    spike_times: list[np.ndarray]
    neuropil_f: np.ndarray
    active: np.ndarray
    rate_hz: np.ndarray
    tau_rise_ms: np.ndarray
    tau_decay_ms: np.ndarray
    amplitude: np.ndarray

    @property
    def C(self) -> np.ndarray:
        """float32 ``bleach * (1 + dff)``: the trace that multiplies a cell's resting footprint."""
        if self.bleach is None:
            raise ValueError("this Activity does not keep its bleaching (a World's: use World.C)")
        return (self.bleach * (np.float32(1.0) + self.dff)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- indicator
def _hill_f(ca_nm: np.ndarray, a: ActivitySpec) -> np.ndarray:
    """F/F_min = 1 + (R_f - 1) [Ca]^n / ([Ca]^n + K_d^n) (docs/physics.md §4)."""
    x = np.power(np.asarray(ca_nm, np.float64) / a.kd_nm, a.hill_n)
    return 1.0 + (a.dynamic_range - 1.0) * x / (1.0 + x)


def hill_dff(n_spikes: np.ndarray | float, activity: ActivitySpec, amplitude: float = 1.0) -> np.ndarray:
    """ΔF/F of ``n_spikes`` summed spikes with no decay (the calibration of docs/physics.md §4).

    With ``hill_enabled`` False this is linear: ``amplitude * dff_per_spike * n_spikes``.

    Examples
    --------
    >>> from minisim.spec import ActivitySpec
    >>> round(float(hill_dff(1, ActivitySpec(indicator="GCaMP6f"))), 3)
    0.15
    """
    n = np.asarray(n_spikes, np.float64)
    if not activity.hill_enabled:
        return amplitude * activity.dff_per_spike * n
    f = _hill_f(activity.ca_rest_nm + amplitude * activity.dca_per_spike_nm * n, activity)
    return f / _hill_f(np.float64(activity.ca_rest_nm), activity) - 1.0


def _kernel_peak(tau_rise_s: np.ndarray, tau_decay_s: np.ndarray) -> np.ndarray:
    """h_max = exp(-t_p/τ_d) - exp(-t_p/τ_r), t_p = τ_d τ_r / (τ_d - τ_r) ln(τ_d/τ_r)."""
    t_peak = tau_decay_s * tau_rise_s / (tau_decay_s - tau_rise_s) * np.log(tau_decay_s / tau_rise_s)
    return np.exp(-t_peak / tau_decay_s) - np.exp(-t_peak / tau_rise_s)


# ----------------------------------------------------------------------------- per-unit draws
def unit_params(spec: Spec, unit_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-unit constants, each unit from its own key (the same draws whatever the Spec values).

    Keys: ``active``, ``rate_hz``, ``tau_rise_ms``, ``tau_decay_ms``, ``amplitude`` (float64)
    and ``ensemble`` (int64), one entry per unit id. Unit i reads its id's stream of (seed,
    ``"activity_params"``) (minisim.rng, keyed constants): uniform 0 the active coin, then the
    normals of rate, τ_r, τ_d and amplitude; its ensemble is ⌊u E⌋ of uniform 0 of its id's
    stream of (seed, ``"ensemble_membership"``). All units in one vectorised call, each from its
    own counter: the same values whatever other units are drawn with it.
    """
    act_spec = spec.activity
    seed = spec.recording.seed
    ids = np.asarray(unit_ids, np.int64).reshape(-1)
    u = unit_uniforms(seed, "activity_params", ids, 5)
    u_active = u[:, 0]
    z = normal_quantiles(u[:, 1:])  # rate, tau_rise, tau_decay, amplitude
    n_ens = act_spec.ensemble_count
    ensemble = np.minimum(unit_uniforms(seed, "ensemble_membership", ids, 1)[:, 0] * n_ens,
                          n_ens - 1).astype(np.int64)
    jitter_ln = np.sqrt(np.log1p(act_spec.tau_jitter_cv**2))  # log-normal with this CV, median = Spec value
    tau_decay = act_spec.tau_decay_ms * np.exp(jitter_ln * z[:, 2])
    tau_rise = np.minimum(act_spec.tau_rise_ms * np.exp(jitter_ln * z[:, 1]), MAX_RISE_OVER_DECAY * tau_decay)
    return {
        "active": u_active < act_spec.active_fraction,
        "rate_hz": act_spec.rate_median_hz * np.exp(act_spec.rate_sd_ln * z[:, 0]),
        "tau_rise_ms": tau_rise,
        "tau_decay_ms": tau_decay,
        "amplitude": np.exp(act_spec.amplitude_sd_ln * z[:, 3]),
        "ensemble": ensemble,
    }


def expected_dff(spec: Spec, params: dict[str, np.ndarray]) -> np.ndarray:
    """Each unit's expected ΔF/F over time: its mean rate times the area of one transient.

    Linear indicator: ``amplitude · dff_per_spike · rate_hz · ∫h dt``, ∫h = (τ_d - τ_r) / h_max.
    Hill: the indicator curve at the expected calcium (Jensen's gap ignored). 0 for silent units.
    This sets the activity-dependent part of bleaching (see :class:`ActivityBatch`).
    """
    act_spec = spec.activity
    tau_d, tau_r = params["tau_decay_ms"] / 1e3, params["tau_rise_ms"] / 1e3
    area_s = (tau_d - tau_r) / _kernel_peak(tau_r, tau_d)
    kernel_sum = np.where(params["active"], params["rate_hz"] * area_s, 0.0)
    return hill_dff(kernel_sum, act_spec, params["amplitude"])


# ----------------------------------------------------------------------------- row math
# exp and log of whole rows in float64 by loops the compiler vectorises (the C library's exp
# and pow are scalar calls, ~12 and ~27 ns each here: most of a segment's per-frame work). The
# exponent is built from and read out of the float's bits through integer views, as in
# minisim.rng.words_to_normals32; same arithmetic on every platform, within 2 ulp of libm
# (tests/test_activity.py).
_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_ROUND_SHIFT = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer, kept in the low bits
_EXP_MIN, _EXP_MAX = -708.0, 709.0
_BIAS, _EXP_SHIFT = np.uint64(1023), np.uint64(52)
_MANTISSA, _ONE_BITS = np.uint64(0xFFFFFFFFFFFFF), np.uint64(0x3FF0000000000000)
_SQRT2 = math.sqrt(2.0)
# 1/k! for exp(r), |r| <= ln2/2: degree 13 (truncation < 1e-17)
_E2, _E3, _E4, _E5, _E6, _E7 = 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040
_E8, _E9, _E10, _E11, _E12, _E13 = 1 / 40320, 1 / 362880, 1 / 3628800, 1 / 39916800, 1 / 479001600, 1 / 6227020800
# 1/(2k+1) for atanh(s) = s Σ s^2k / (2k+1), |s| <= 0.1716: ten terms (truncation < 3e-17)
_L3, _L5, _L7, _L9, _L11, _L13, _L15, _L17, _L19 = (1 / k for k in (3, 5, 7, 9, 11, 13, 15, 17, 19))


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_row(x, out, scratch):
    """out[i] = exp(x[i]) (float64), x clamped to [-708, 709]; ``scratch`` (n,) float64.

    exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 (in two parts), exp(r) by its
    Taylor polynomial; 2^k from the bits (k + 1023) << 52.
    """
    n = x.shape[0]
    for i in range(n):
        xi = min(max(x[i], _EXP_MIN), _EXP_MAX)
        t = xi * _LOG2E + _ROUND_SHIFT
        k = t - _ROUND_SHIFT
        r = (xi - k * _LN2_HI) - k * _LN2_LO
        out[i] = 1.0 + r * (1.0 + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * (
            _E7 + r * (_E8 + r * (_E9 + r * (_E10 + r * (_E11 + r * (_E12 + r * _E13))))))))))))
        scratch[i] = t
    bits = scratch.view(np.uint64)
    for i in range(n):
        bits[i] = (bits[i] + _BIAS) << _EXP_SHIFT  # the low bits of t hold k
    scale = scratch
    for i in range(n):
        out[i] = out[i] * scale[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _log_row(y, out, scratch):
    """out[i] = log(y[i]) (float64) for positive normal y; ``scratch`` (n,) float64.

    y = 2^e m, m in [sqrt(1/2), sqrt(2)): log y = e ln 2 + 2 atanh((m - 1) / (m + 1)).
    """
    n = y.shape[0]
    ybits = y.view(np.uint64)
    mbits = scratch.view(np.uint64)
    for i in range(n):
        out[i] = np.float64(np.int64(ybits[i] >> _EXP_SHIFT) - 1023)
        mbits[i] = (ybits[i] & _MANTISSA) | _ONE_BITS
    for i in range(n):
        m = scratch[i]
        big = m > _SQRT2
        m = m * 0.5 if big else m
        e = out[i] + 1.0 if big else out[i]
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        series = 2.0 * s * (1.0 + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * (_L9 + s2 * (_L11 + s2 * (
            _L13 + s2 * (_L15 + s2 * (_L17 + s2 * _L19)))))))))
        out[i] = e * _LN2_HI + (e * _LN2_LO + series)


# ----------------------------------------------------------------------------- keyed draws
# Every per-unit draw reads a word stream of the Philox key of (seed, "activity_births")
# (minisim.rng: word n of stream (c0, c1, c2, kind) is word n % 4 of the counter
# (c0, c1, c2, kind << 28 | n // 4)); c0, c1 are the unit id's low and high 32 bits, c2 the
# segment (or the knot), and the kind says which draw:
_GATE = np.uint64(0)        # (unit, segment): word 0 the state at t = 0 (segment 0's), then per reset its gap and mark
_MODULATION = np.uint64(1)  # (unit, segment): the private OU's SEGMENT_FRAMES normals inside the segment
_EVENTS = np.uint64(2)      # (unit, segment): per event its gap (in integrated intensity) and burst coin
_BURSTS = np.uint64(3)      # (unit, segment): per burst its extra-spike count (Poisson), then their ISIs
_KNOTS = np.uint64(4)       # (unit, knot): word 0 the knot's innovation, word 1 its stationary start


@njit(cache=True, nogil=True, error_model="numpy")
def _grown(a, n):
    """``a`` with its first ``n`` entries kept and twice the room."""
    b = np.empty(max(2 * a.size, 16), a.dtype)
    b[:n] = a[:n]
    return b


@njit(cache=True, nogil=True, error_model="numpy")
def _sort_run(a, lo, hi):
    """Sort a[lo:hi] in place by insertion (the runs here are sorted or nearly so)."""
    for i in range(lo + 1, hi):
        x = a[i]
        j = i - 1
        while j >= lo and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit(cache=True, nogil=True, error_model="numpy")
def _gate_state_at(k0, k1, u0, u1, seg, seg_s, reset_rate_hz, p_up, st):
    """The gate's state at the start of segment ``seg``: the mark of the last reset before it,
    looking back segment by segment (each segment's resets are a Poisson process of rate
    ``reset_rate_hz`` drawn by exponential gaps), else the unit's stationary state at t = 0."""
    for j in range(seg - 1, -1, -1):
        open_stream(st, u0, u1, np.uint64(j), _GATE)
        next_word(k0, k1, st)  # the state at t = 0 (used from segment 0 only)
        t = next_exponential(k0, k1, st) / reset_rate_hz
        if t < seg_s:
            mark = False
            while t < seg_s:
                mark = next_uniform(k0, k1, st) < p_up
                t += next_exponential(k0, k1, st) / reset_rate_hz
            return mark
    open_stream(st, u0, u1, np.uint64(0), _GATE)
    return next_uniform(k0, k1, st) < p_up


@njit(cache=True, nogil=True, error_model="numpy")
def _gate_switches_kernel(k0, k1, u0, u1, seg, seg_s, reset_rate_hz, p_up, st, out):
    """(state at the segment start, number of flips, ``out`` holding the flip times in s from
    the segment start, grown where needed): the resets whose mark changes the state."""
    up0 = _gate_state_at(k0, k1, u0, u1, seg, seg_s, reset_rate_hz, p_up, st)
    open_stream(st, u0, u1, np.uint64(seg), _GATE)
    next_word(k0, k1, st)
    state = up0
    n = 0
    t = next_exponential(k0, k1, st) / reset_rate_hz
    while t < seg_s:
        mark = next_uniform(k0, k1, st) < p_up
        if mark != state:
            if n == out.size:
                out = _grown(out, n)
            out[n] = t
            n += 1
            state = mark
        t += next_exponential(k0, k1, st) / reset_rate_hz
    return up0, n, out


@njit(cache=True, nogil=True, error_model="numpy")
def _knot(k0, k1, u0, u1, knot, n_back, rho, innovation_sd, w4, z4, s4):
    """The private OU's value at segment boundary ``knot``: the AR(1) chain
    K_j = rho K_{j-1} + sqrt(1 - rho^2) eta_j over the last ``n_back`` knots, started from a
    stationary draw where that window starts (knot 0 or the window's first knot)."""
    m0 = max(0, knot - n_back)
    value = 0.0
    for j in range(m0, knot + 1):
        a, b, _, _ = philox4x32(u0, u1, np.uint64(j), _KNOTS << KIND_SHIFT, k0, k1)
        w4[0] = a
        w4[1] = b
        words_to_normals32(w4, z4, s4)
        if j == m0:
            value = np.float64(z4[1])
        else:
            value = rho * value + innovation_sd * np.float64(z4[0])
    return value


@njit(cache=True, nogil=True, error_model="numpy")
def _private_modulation(k0, k1, u0, u1, seg, a, c, bridge_w, n_back, rho, innovation_sd,
                        words, z, scratch, w4, z4, s4, path):
    """``path`` = the unit's private unit-variance OU over segment ``seg``: the exact OU bridge
    between its keyed knots at ``seg`` and ``seg + 1``, driven by the segment's normals
    (the free path from the left knot plus the conditional-mean pull to the right one)."""
    L = path.size
    x0 = _knot(k0, k1, u0, u1, seg, n_back, rho, innovation_sd, w4, z4, s4)
    x1 = _knot(k0, k1, u0, u1, seg + 1, n_back, rho, innovation_sd, w4, z4, s4)
    hi = (_MODULATION << KIND_SHIFT)
    seg_u = np.uint64(seg)
    for g in range(L // 4):
        w0, w1, w2, w3 = philox4x32(u0, u1, seg_u, hi | np.uint64(g), k0, k1)
        words[4 * g] = w0
        words[4 * g + 1] = w1
        words[4 * g + 2] = w2
        words[4 * g + 3] = w3
    words_to_normals32(words, z, scratch)
    y = x0
    for i in range(L):
        path[i] = y
        y = a * y + c * np.float64(z[i])
    pull = x1 - y
    for i in range(L):
        path[i] += pull * bridge_w[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _unit_events(k0, k1, u0, u1, seg, edges, rate, drive, shared_sd, path, private_sd, half_var,
                 up0, switches, n_switches, p_burst, extra_mean, isi_min_s, isi_span_s,
                 st, st_b, lam, up_clock, cum, starts, out, n):
    """Append to ``out`` (from ``n``) the spike times, s from the segment start, of the events
    that start in segment ``seg`` and of their bursts; returns (out, n).

    Events are a Poisson process of intensity ``rate · m_f`` while the gate is up, m_f the
    frame's modulation exp(σ_s X + σ_p Y - σ²/2): unit-mean exponential gaps in the integrated
    intensity Λ (time rescaling). Λ is piecewise linear in the up-clock U (time spent up since
    the segment start), so an event at Λ = x lies in the frame f with Λ_f <= x < Λ_{f+1}, at
    U = U_f + (x - Λ_f) / (rate · m_f), mapped back to time through the up interval holding it.
    Each event is a burst with probability ``p_burst``: 1 + Poisson(``extra_mean``) more spikes
    at ISIs uniform in [isi_min_s, isi_min_s + isi_span_s]. ``lam`` (L), ``up_clock``, ``cum``
    (L + 1) and ``starts`` (2, >= n_switches + 1) are work space; ``edges`` the frame edges in s.
    """
    L = path.size
    for f in range(L):
        cum[f] = shared_sd * drive[f] + private_sd * path[f] - half_var
    _exp_row(cum[:L], lam, up_clock[:L])
    for f in range(L):
        lam[f] = rate * lam[f]
    # the up-clock at the frame edges; each up interval's start as (time, up-clock)
    up = up0
    m = 0
    if up:
        starts[0, 0] = 0.0
        starts[1, 0] = 0.0
        m = 1
    s = 0
    clock = 0.0
    t_prev = 0.0
    up_clock[0] = 0.0
    for f in range(L):
        edge = edges[f + 1]
        while s < n_switches and switches[s] < edge:
            t_switch = switches[s]
            if up:
                clock += t_switch - t_prev
            else:
                starts[0, m] = t_switch
                starts[1, m] = clock
                m += 1
            t_prev = t_switch
            up = not up
            s += 1
        if up:
            clock += edge - t_prev
        t_prev = edge
        up_clock[f + 1] = clock
    cum[0] = 0.0
    for f in range(L):
        cum[f + 1] = cum[f] + lam[f] * (up_clock[f + 1] - up_clock[f])
    open_stream(st, u0, u1, np.uint64(seg), _EVENTS)
    open_stream(st_b, u0, u1, np.uint64(seg), _BURSTS)
    x = next_exponential(k0, k1, st)
    f = 0
    j = 0
    while x < cum[L]:
        while cum[f + 1] <= x:
            f += 1
        u = up_clock[f] + (x - cum[f]) / lam[f]
        while j + 1 < m and starts[1, j + 1] <= u:
            j += 1
        onset = starts[0, j] + (u - starts[1, j])
        if n == out.size:
            out = _grown(out, n)
        out[n] = onset
        n += 1
        if next_uniform(k0, k1, st) < p_burst:
            extra = 1 + next_poisson(k0, k1, st_b, extra_mean)
            t = onset
            for _ in range(extra):
                t += isi_min_s + isi_span_s * next_uniform(k0, k1, st_b)
                if n == out.size:
                    out = _grown(out, n)
                out[n] = t
                n += 1
        x += next_exponential(k0, k1, st)
    return out, n


@njit(cache=True, nogil=True, error_model="numpy")
def _births_kernel(k0, k1, uid_lo, uid_hi, ensemble, event_rate, drives, shared_sd, private_sd,
                   half_var, seg, edges, seg_s, t0, a, c, bridge_w, n_back, rho, innovation_sd,
                   reset_rate_hz, p_up, p_burst, extra_mean, isi_min_s, isi_span_s):
    """Births of segment ``seg`` for every unit given (active ones): CSR (offsets, times s),
    each unit's spikes sorted (module docstring; :class:`ActivityBatch`)."""
    n_units = uid_lo.size
    L = bridge_w.size
    offsets = np.zeros(n_units + 1, np.int64)
    out = np.empty(max(64, 8 * n_units), np.float64)
    n = 0
    st = np.zeros(STREAM_STATE, np.uint64)
    st_b = np.zeros(STREAM_STATE, np.uint64)
    words = np.empty(L, np.uint32)
    z = np.empty(L, np.float32)
    scratch = np.empty((2, L), np.float32)
    w4 = np.zeros(4, np.uint32)
    z4 = np.empty(4, np.float32)
    s4 = np.empty((2, 4), np.float32)
    path = np.zeros(L)
    lam = np.empty(L)
    up_clock = np.empty(L + 1)
    cum = np.empty(L + 1)
    switches = np.empty(64)
    starts = np.empty((2, 64))
    for i in range(n_units):
        u0, u1 = uid_lo[i], uid_hi[i]
        up0, n_switches, switches = _gate_switches_kernel(k0, k1, u0, u1, seg, seg_s, reset_rate_hz,
                                                          p_up, st, switches)
        if (up0 or n_switches > 0) and event_rate[i] > 0.0:  # else no event can start here
            if private_sd > 0.0:
                _private_modulation(k0, k1, u0, u1, seg, a, c, bridge_w, n_back, rho, innovation_sd,
                                    words, z, scratch, w4, z4, s4, path)
            if starts.shape[1] < n_switches + 1:
                starts = np.empty((2, 2 * n_switches + 1))
            first = n
            out, n = _unit_events(k0, k1, u0, u1, seg, edges, event_rate[i], drives[ensemble[i]], shared_sd,
                                  path, private_sd, half_var, up0, switches, n_switches, p_burst,
                                  extra_mean, isi_min_s, isi_span_s, st, st_b, lam, up_clock, cum, starts,
                                  out, n)
            _sort_run(out, first, n)
            for k in range(first, n):
                out[k] = t0 + out[k]
        offsets[i + 1] = n
    return offsets, out[:n].copy()


@njit(cache=True, nogil=True, error_model="numpy")
def _bleach_rows(rate_hz, t0_s, dt_s, beta, out):
    """out[r, f] = (1 - β) + β exp(-rate_hz[r] (t0_s + f dt_s)), the exponential carried from
    frame to frame (one factor exp(-rate dt) a frame: within 1e-13 of the closed form)."""
    for r in range(rate_hz.size):
        e = math.exp(-rate_hz[r] * t0_s)
        d = math.exp(-rate_hz[r] * dt_s)
        for f in range(out.shape[1]):
            out[r, f] = (1.0 - beta) + beta * e
            e = e * d


@njit(cache=True, nogil=True, error_model="numpy")
def _window_kernel(times, offsets, lo_row, refractory_s, fps, end_frame):
    """Each unit's kept spikes of its look-back window: its births of rows ``lo_row[j]`` ..
    last (``offsets`` (rows, units + 1) into ``times``), merged in time, the refractory rule
    applied over the whole window, then cut at frame ``end_frame``. CSR (offsets, times)."""
    rows, n_units = offsets.shape[0], offsets.shape[1] - 1
    win_off = np.zeros(n_units + 1, np.int64)
    win = np.empty(times.size)
    n = 0
    for j in range(n_units):
        first = n
        for r in range(lo_row[j], rows):
            for k in range(offsets[r, j], offsets[r, j + 1]):
                win[n] = times[k]
                n += 1
        _sort_run(win, first, n)
        kept = first
        last = -np.inf
        for k in range(first, n):
            t = win[k]
            if t - last < refractory_s:
                continue
            last = t
            if math.floor(t * fps) < end_frame:
                win[kept] = t
                kept += 1
        n = kept
        win_off[j + 1] = n
    return win_off, win[:n].copy()


@njit(cache=True, nogil=True, error_model="numpy")
def _hill_row(ksum, ca_rest_nm, kd_nm, hill_n, dynamic_range, f_rest, out, work):
    """out[f] = F(Ca_rest + ksum[f]) / f_rest - 1, F(Ca) = 1 + (R_f - 1) x / (1 + x),
    x = (Ca / K_d)^n as exp(n log(Ca / K_d)) by the row functions; 0 where ksum is 0.
    ``work`` (3, n) float64. ``f_rest`` is F(Ca_rest) (:func:`_hill_rest`)."""
    n = ksum.shape[0]
    y, x, scratch = work[0, :n], work[1, :n], work[2, :n]
    for f in range(n):
        y[f] = (ca_rest_nm + ksum[f]) / kd_nm
    _log_row(y, x, scratch)
    for f in range(n):
        x[f] = hill_n * x[f]
    _exp_row(x, y, scratch)
    for f in range(n):
        ratio = y[f]
        dff = (1.0 + (dynamic_range - 1.0) * ratio / (1.0 + ratio)) / f_rest - 1.0
        out[f] = dff if ksum[f] != 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _hill_rest(ca_rest_nm, kd_nm, hill_n, dynamic_range):
    """F(Ca_rest) by the same row functions as :func:`_hill_row`."""
    work = np.empty((3, 1))
    y, x, scratch = work[0], work[1], work[2]
    y[0] = ca_rest_nm / kd_nm
    _log_row(y, x, scratch)
    x[0] = hill_n * x[0]
    _exp_row(x, y, scratch)
    return 1.0 + (dynamic_range - 1.0) * y[0] / (1.0 + y[0])


@njit(cache=True, nogil=True, error_model="numpy")
def _calcium_kernel(win_off, win, rows, seg, L, n_out, fps, tau_decay_s, tau_rise_s, gain, hill,
                    ca_rest_nm, kd_nm, hill_n, dynamic_range, dff, spikes, inside_off, inside):
    """ΔF/F and spike counts of segment ``seg`` (frames [seg·L, (seg+1)·L)) for the units of the
    CSR (``win_off``, ``win``: each unit's sorted spikes), written to rows ``rows[j]`` of ``dff``
    and ``spikes`` (left alone for a unit with no spike before the segment's end), for its first
    ``n_out`` frames only (the rest left alone: a recording that ends inside the segment); a
    frame's values do not depend on ``n_out``.

    Per exponential (decay, rise): the state E_0 = Σ exp(-(t_0 - t_k)/τ) over the spikes before
    the segment, n_f and a_f = Σ_{k in f} exp(-((f+1)Δt - t_k)/τ) from those inside; the frame's
    exposure average is (τ/Δt)[(1 - d)E_f + n_f - a_f], E_{f+1} = d E_f + a_f (d = exp(-Δt/τ)).
    The gain-scaled difference goes through the indicator (linear, or the Hill curve).
    ``inside_off``/``inside`` get each unit's spikes inside the segment.
    """
    dt = 1.0 / fps
    f0 = seg * L
    t0 = f0 / fps
    f_rest = _hill_rest(ca_rest_nm, kd_nm, hill_n, dynamic_range)
    ksum = np.empty(L)
    hill_out = np.empty(L)
    work = np.empty((3, L))
    count = np.zeros(L)
    a_decay = np.zeros(L)
    a_rise = np.zeros(L)
    m = 0
    for j in range(rows.size):
        inside_off[j] = m
        td, tr = tau_decay_s[j], tau_rise_s[j]
        e_decay = 0.0
        e_rise = 0.0
        lit = False
        for k in range(win_off[j], win_off[j + 1]):
            t = win[k]
            frame = math.floor(t * fps)
            if frame < f0:
                e_decay += math.exp(-(t0 - t) / td)
                e_rise += math.exp(-(t0 - t) / tr)
                lit = True
            elif frame < f0 + L:
                f = min(max(int(frame) - f0, 0), L - 1)
                if f < n_out:
                    to_edge = min(max((f0 + f + 1) / fps - t, 0.0), dt)
                    count[f] += 1.0
                    a_decay[f] += math.exp(-to_edge / td)
                    a_rise[f] += math.exp(-to_edge / tr)
                inside[m] = t
                m += 1
                lit = True
        if not lit:
            continue
        row = rows[j]
        d_decay, d_rise = math.exp(-dt / td), math.exp(-dt / tr)
        for f in range(n_out):
            mean_decay = (td / dt) * ((1.0 - d_decay) * e_decay + count[f] - a_decay[f])
            mean_rise = (tr / dt) * ((1.0 - d_rise) * e_rise + count[f] - a_rise[f])
            e_decay = e_decay * d_decay + a_decay[f]
            e_rise = e_rise * d_rise + a_rise[f]
            ksum[f] = gain[j] * (mean_decay - mean_rise)
            spikes[row, f] = min(count[f], 255.0)
            count[f] = 0.0
            a_decay[f] = 0.0
            a_rise[f] = 0.0
        if hill:
            _hill_row(ksum[:n_out], ca_rest_nm, kd_nm, hill_n, dynamic_range, f_rest, hill_out, work)
            for f in range(n_out):
                dff[row, f] = hill_out[f]
        else:
            for f in range(n_out):
                dff[row, f] = ksum[f]
    inside_off[rows.size] = m


# ----------------------------------------------------------------------------- segments
#: A unit's calcium forgets spikes older than this many of its decay times (e^-20 ~ 2e-9 of a
#: transient: below float32), so a segment's calcium is rebuilt from that look-back window.
CALCIUM_MEMORY_TAUS = 20.0
#: The neuropil low-pass forgets its input after this many of its time constants.
NEUROPIL_MEMORY_TAUS = 20.0


#: The low and high 32 bits (uint64) of int64 unit ids: the two counter words that key a
#: unit's draws (one home, minisim.rng, shared with the per-unit constants).
_id_halves = id_halves


class ActivityBatch:
    """The activity of a set of units, one time segment at a time (the one state object).

    Built once per set of units (per-unit constants only); :meth:`segment` then gives any
    segment's traces from keyed draws alone, without the segments before it: the gate state at
    a segment start from its keyed resets, the private modulation as keyed OU knots bridged per
    segment, the calcium from the spikes of a bounded look-back window
    (:data:`CALCIUM_MEMORY_TAUS`), the bleaching from each unit's expected ΔF/F
    (:func:`expected_dff`), the neuropil low-pass over a bounded window of the ensemble drives.
    The per-unit work runs in numba kernels over all units at once, each unit from its own
    counter-based word streams (module docstring). The steps, in order: ``_drives`` →
    ``_births`` (gate, modulation, events, bursts: ``_births_kernel``) → ``_window_spikes``
    (refractory: ``_window_kernel``) → ``_calcium`` (kernel sums and indicator:
    ``_calcium_kernel``) → ``_bleaching``; ``_neuropil`` on its own.
    """

    def __init__(self, spec: Spec, unit_ids: np.ndarray) -> None:
        act_spec = spec.activity
        self.spec, self.act_spec = spec, act_spec
        self.fps, self.seed = spec.recording.fps, spec.recording.seed
        self.dt = 1.0 / self.fps
        self.unit_ids = np.asarray(unit_ids, np.int64).reshape(-1)
        self.params = unit_params(spec, self.unit_ids)
        self.active_idx = np.flatnonzero(self.params["active"])
        self.p_up = act_spec.up_dwell_s / (act_spec.up_dwell_s + act_spec.down_dwell_s)
        self.reset_rate_hz = 1.0 / act_spec.up_dwell_s + 1.0 / act_spec.down_dwell_s
        self.tau_s = np.stack([self.params["tau_decay_ms"], self.params["tau_rise_ms"]]) / 1e3
        h_max = _kernel_peak(self.tau_s[1], self.tau_s[0])
        per_spike = act_spec.dca_per_spike_nm if act_spec.hill_enabled else act_spec.dff_per_spike
        self.gain = self.params["amplitude"] * per_spike / h_max
        spikes_per_event = 1.0 + act_spec.burst_probability * (1.0 + act_spec.burst_extra_spikes_mean)
        # event rate while up: rate_hz is the mean over the recording, the gate is up p_up of it
        self.event_rate = self.params["rate_hz"] / self.p_up / spikes_per_event
        L = SEGMENT_FRAMES
        self.seg_s = L / self.fps
        self._edges_s = np.arange(L + 1) / self.fps  # frame edges from a segment's start
        self.lookback_segments = np.maximum(
            1, np.ceil(CALCIUM_MEMORY_TAUS * self.tau_s[0] / self.seg_s)).astype(np.int64)
        bl = spec.illumination.bleaching
        self.beta = bl.fraction if bl.enabled else 0.0
        kappa = bl.activity_dependence if bl.enabled else 0.0
        self.bleach_rate_hz = (1.0 + kappa * expected_dff(spec, self.params)) / bl.tau_s
        self.np_bleach_rate_hz = 1.0 / bl.tau_s
        # the counter-based draws: one Philox key, the unit id's two halves in the counter
        self._key = tuple(np.uint64(k) for k in philox_key(self.seed, "activity_births"))
        self._uid_lo, self._uid_hi = _id_halves(self.unit_ids)
        # the private OU: per-frame coefficient a, its bridge weights, the knot chain's rho
        log_a = -self.dt / act_spec.modulation_tau_s
        i = np.arange(L, dtype=np.float64)
        self._ou = {"a": float(np.exp(log_a)), "c": float(np.sqrt(-np.expm1(2.0 * log_a))),
                    "bridge_w": np.exp((L - i) * log_a) * -np.expm1(2.0 * i * log_a) / -np.expm1(2.0 * L * log_a)}
        rho = float(np.exp(L * log_a))
        self._ou.update(rho=rho, n_back=lookback_knots(rho), innovation_sd=float(np.sqrt(1.0 - rho * rho)))
        self._drive_cache: dict[int, np.ndarray] = {}
        self._birth_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- keyed pieces, each a pure function of (unit or ensemble, segment) ------------------
    def _drives(self, seg: int) -> np.ndarray:
        """(ensemble_count, L) unit-variance OU drives X_e shared by each ensemble."""
        got = self._drive_cache.get(seg)  # (the caches are shared by threads building segments)
        if got is None:
            act_spec, L = self.act_spec, SEGMENT_FRAMES
            got = self._drive_cache[seg] = np.stack([
                ou_segment(self.seed, "ensemble_knots", (e,), seg,
                           rng(self.seed, "ensembles", e, seg).standard_normal(L),
                           self.dt, act_spec.modulation_tau_s)
                for e in range(act_spec.ensemble_count)])
        return got

    def _gate_switches(self, uid: int, seg: int) -> tuple[bool, np.ndarray]:
        """(state at the segment start, times in s at which the gate flips inside the segment)
        of unit ``uid`` (the births kernel's own gate)."""
        lo, hi = _id_halves(np.array([uid], np.int64))
        up0, n, out = _gate_switches_kernel(
            *self._key, lo[0], hi[0], seg, self.seg_s,
            self.reset_rate_hz, self.p_up, np.zeros(STREAM_STATE, np.uint64), np.empty(64))
        return bool(up0), seg * SEGMENT_FRAMES / self.fps + out[:n]

    def _births(self, seg: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets over the active units, spike times s) of the events, bursts included,
        that start in segment ``seg``."""
        got = self._birth_cache.get(seg)
        if got is not None:
            return got
        act_spec, idx = self.act_spec, self.active_idx
        if idx.size:
            drives = self._drives(seg)
        else:
            drives = np.zeros((act_spec.ensemble_count, SEGMENT_FRAMES))
        ou = self._ou
        got = _births_kernel(
            *self._key, self._uid_lo[idx], self._uid_hi[idx], self.params["ensemble"][idx],
            np.ascontiguousarray(self.event_rate[idx], np.float64), drives,
            act_spec.modulation_sd_ln * np.sqrt(act_spec.correlation),
            act_spec.modulation_sd_ln * np.sqrt(1.0 - act_spec.correlation),
            0.5 * act_spec.modulation_sd_ln**2, seg, self._edges_s, self.seg_s, seg * SEGMENT_FRAMES / self.fps,
            ou["a"], ou["c"], ou["bridge_w"], ou["n_back"], ou["rho"], ou["innovation_sd"],
            self.reset_rate_hz, self.p_up, act_spec.burst_probability, act_spec.burst_extra_spikes_mean,
            act_spec.burst_isi_min_ms / 1e3, (act_spec.burst_isi_max_ms - act_spec.burst_isi_min_ms) / 1e3)
        self._birth_cache[seg] = got
        return got

    def _window_spikes(self, seg: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR over the active units: the kept spikes (refractory applied) of each unit's
        look-back window, up to the end of ``seg``.

        Bursts that start in one segment may end in the next, so a segment's spikes are those
        born in its window; the refractory rule runs over the whole window, which starts many
        decay times back, so a refractory chain reaching across it cannot occur in practice.
        """
        idx = self.active_idx
        lookback = self.lookback_segments[idx]
        first = max(0, seg - int(lookback.max(initial=1)))
        births = [self._births(j) for j in range(first, seg + 1)]
        base = np.cumsum([0] + [b[1].size for b in births[:-1]])
        offsets = np.stack([b[0] + o for b, o in zip(births, base)])
        times = np.concatenate([b[1] for b in births])
        lo_row = np.maximum(0, seg - lookback) - first
        return _window_kernel(times, offsets, lo_row, self.act_spec.refractory_ms / 1e3, self.fps,
                              (seg + 1) * SEGMENT_FRAMES)

    def _calcium(self, seg: int, window: tuple[np.ndarray, np.ndarray], frames: int = SEGMENT_FRAMES
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(ΔF/F float32, spike counts uint8) per unit and frame of ``seg`` (its first ``frames``
        computed, the rest 0), and the spikes inside it."""
        act_spec, idx, n = self.act_spec, self.active_idx, len(self.unit_ids)
        win_off, win = window
        dff = np.zeros((n, SEGMENT_FRAMES), np.float32)
        spikes = np.zeros((n, SEGMENT_FRAMES), np.uint8)
        inside_off = np.zeros(idx.size + 1, np.int64)
        inside = np.empty(win.size)
        _calcium_kernel(win_off, win, idx, seg, SEGMENT_FRAMES, frames, self.fps,
                        np.ascontiguousarray(self.tau_s[0, idx]), np.ascontiguousarray(self.tau_s[1, idx]),
                        np.ascontiguousarray(self.gain[idx], np.float64), act_spec.hill_enabled,
                        act_spec.ca_rest_nm, act_spec.kd_nm, act_spec.hill_n, act_spec.dynamic_range,
                        dff, spikes, inside_off, inside)
        times = [np.empty(0) for _ in range(n)]
        for j, i in enumerate(idx):
            times[i] = inside[inside_off[j]:inside_off[j + 1]]
        return dff, spikes, times

    def _bleaching(self, seg: int, frames: int = SEGMENT_FRAMES) -> np.ndarray:
        """(units, L) float32 expected-course bleaching ``(1-β) + β exp(-t (1 + κ E[ΔF/F]) / τ_b)``
        (its first ``frames`` computed, the rest 0)."""
        n = len(self.unit_ids)
        if self.beta <= 0.0:
            return np.ones((n, SEGMENT_FRAMES), np.float32)
        # units of one rate (every silent unit) share one row
        rates, inverse = np.unique(self.bleach_rate_hz, return_inverse=True)
        rows = np.empty((rates.size, frames), np.float32)
        _bleach_rows(rates, seg * SEGMENT_FRAMES * self.dt, self.dt, self.beta, rows)
        if frames < SEGMENT_FRAMES:
            rows = np.concatenate([rows, np.zeros((rates.size, SEGMENT_FRAMES - frames), np.float32)], axis=1)
        return rows[inverse.reshape(-1)]

    def _neuropil(self, seg: int) -> np.ndarray:
        """(L,) neuropil course: the ensemble drives averaged, low-passed, scaled to unit sd.

        The low-pass runs over a window of :data:`NEUROPIL_MEMORY_TAUS` time constants before
        the segment (from frame 0 when the recording is younger), started at the stationary sd.
        """
        act_spec, np_spec, L, dt = self.act_spec, self.spec.tissue.neuropil, SEGMENT_FRAMES, self.dt
        neuropil_coef = np.exp(-dt / np_spec.tau_s)
        ou_coef = np.exp(-dt / act_spec.modulation_tau_s)
        # sd of an exponential smoother (1-b) Σ b^k x_{t-k} of a unit-variance AR(1) x (coef a)
        neuropil_sd = (1.0 - neuropil_coef) * np.sqrt(
            (1.0 + ou_coef * neuropil_coef) / ((1.0 - neuropil_coef**2) * (1.0 - ou_coef * neuropil_coef)))
        back = int(np.ceil(NEUROPIL_MEMORY_TAUS * np_spec.tau_s / (L * dt)))
        first = max(0, seg - back)
        x = np.concatenate([self._drives(j).mean(axis=0) for j in range(first, seg + 1)])
        x *= np.sqrt(act_spec.ensemble_count)
        zi = [neuropil_sd * x[0] - (1.0 - neuropil_coef) * x[0]]
        y = lfilter([1.0 - neuropil_coef], [1.0, -neuropil_coef], x, zi=zi)[0][-L:]
        frac = np_spec.fluctuation_fraction if np_spec.enabled else 0.0
        if self.beta > 0.0:
            t = (seg * L + np.arange(L)) * dt
            b = NEUROPIL_BLEACH_RATIO * self.beta
            bleach = (1.0 - b) + b * np.exp(-t * self.np_bleach_rate_hz)
        else:
            bleach = 1.0
        return (1.0 + frac * y / neuropil_sd) * bleach

    def _forget_outside(self, seg: int) -> None:
        """Drop cached births and drives that no window of ``seg`` uses (any access order)."""
        np_spec = self.spec.tissue.neuropil
        back = max(int(self.lookback_segments.max(initial=1)),
                   int(np.ceil(NEUROPIL_MEMORY_TAUS * np_spec.tau_s / (SEGMENT_FRAMES * self.dt))))
        for cache in (self._birth_cache, self._drive_cache):
            for j in list(cache):  # a snapshot: another thread may add or drop entries
                if not seg - back <= j <= seg:
                    cache.pop(j, None)

    # -- the segment ------------------------------------------------------------------------
    def segment(self, seg: int, frames: int = SEGMENT_FRAMES) -> Activity:
        """Activity of segment ``seg`` (frames [seg·L, (seg+1)·L)), whole (crop it yourself).

        ``spike_times`` holds the spikes whose frame lies in the segment. ``frames`` < L (a
        recording that ends inside the segment) computes ΔF/F, spike counts and bleaching of its
        first ``frames`` frames only, the same bits as a whole segment's, and leaves the rest 0
        (the spike draws and the neuropil course are the whole segment's either way).
        """
        if seg < 0:
            raise ValueError(f"segment={seg} must be >= 0")
        if (isinstance(frames, bool) or not isinstance(frames, (int, np.integer))
                or not 1 <= frames <= SEGMENT_FRAMES):
            raise ValueError(f"frames={frames!r} must be a whole number in [1, {SEGMENT_FRAMES}]")
        frames = int(frames)
        self._forget_outside(seg)
        dff, spikes, inside = self._calcium(seg, self._window_spikes(seg), frames)
        f32 = np.float32
        return Activity(
            spikes=spikes,
            dff=dff,
            bleach=self._bleaching(seg, frames),
            spike_times=inside,
            neuropil_f=self._neuropil(seg).astype(f32),
            active=self.params["active"].astype(bool),
            rate_hz=self.params["rate_hz"].astype(f32),
            tau_rise_ms=self.params["tau_rise_ms"].astype(f32),
            tau_decay_ms=self.params["tau_decay_ms"].astype(f32),
            amplitude=self.params["amplitude"].astype(f32),
        )


# ----------------------------------------------------------------------------- main
def simulate_activity(spec: Spec, unit_ids: np.ndarray, n_frames: int | None = None) -> Activity:
    """Spikes, ΔF/F, bleaching and the neuropil time course of ``unit_ids``, all frames at once.

    The segments of an :class:`ActivityBatch`, joined and cropped: handy for tests and short
    recordings; the renderer and the recording ask a batch for one segment at a time instead.

    Parameters
    ----------
    spec : the recording's Spec (``activity``, ``recording``, ``illumination.bleaching`` and
        ``tissue.neuropil`` are read).
    unit_ids : int64 stable identities; a unit's traces depend on its id only, not on its
        position or on the other units.
    n_frames : defaults to ``spec.recording.n_frames``. Any n_frames gives the prefix of a longer
        simulation, bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> from minisim.spec import Spec
    >>> act = simulate_activity(Spec(), np.arange(3), n_frames=100)
    >>> act.C.shape, act.C.dtype.name
    ((3, 100), 'float32')
    """
    T = spec.recording.n_frames if n_frames is None else int(n_frames)
    if T < 0:
        raise ValueError(f"n_frames={T} must be >= 0")
    batch = ActivityBatch(spec, unit_ids)
    segments = [batch.segment(seg) for seg in range(-(-T // SEGMENT_FRAMES))]
    n = len(batch.unit_ids)

    def joined(name: str, dtype, fill) -> np.ndarray:
        if not segments:
            return np.full((n, 0), fill, dtype)
        return np.concatenate([getattr(s, name) for s in segments], axis=1)[:, :T]

    fps = spec.recording.fps
    times = [np.concatenate([s.spike_times[i] for s in segments] or [np.empty(0)]) for i in range(n)]
    neuropil = np.concatenate([s.neuropil_f for s in segments] or [np.empty(0, np.float32)])[:T]
    p = batch.params
    f32 = np.float32
    return Activity(
        spikes=joined("spikes", np.uint8, 0),
        dff=joined("dff", np.float32, 0.0),
        bleach=joined("bleach", np.float32, 1.0),
        spike_times=[t[np.floor(t * fps) < T] for t in times],
        neuropil_f=neuropil,
        active=p["active"].astype(bool),
        rate_hz=p["rate_hz"].astype(f32),
        tau_rise_ms=p["tau_rise_ms"].astype(f32),
        tau_decay_ms=p["tau_decay_ms"].astype(f32),
        amplitude=p["amplitude"].astype(f32),
    )


def dff_from_spikes(
    spike_times_s: np.ndarray, n_frames: int, fps: float, activity: ActivitySpec,
    amplitude: float = 1.0, tau_rise_ms: float | None = None, tau_decay_ms: float | None = None,
) -> np.ndarray:
    """ΔF/F (float64, exposure-averaged) of one cell for given spike times, no jitter.

    The same kernel and indicator code as :func:`simulate_activity` (every spike kept: no
    refractory rule, no look-back cut); handy to check kinetics.

    Examples
    --------
    >>> from minisim.spec import ActivitySpec
    >>> d = dff_from_spikes(np.array([0.1]), 1000, 1000.0, ActivitySpec())
    >>> bool(0.14 < d.max() < 0.16)
    True
    """
    tr = (activity.tau_rise_ms if tau_rise_ms is None else tau_rise_ms) / 1e3
    td = (activity.tau_decay_ms if tau_decay_ms is None else tau_decay_ms) / 1e3
    h_max = _kernel_peak(np.array([tr]), np.array([td]))
    gain = amplitude * (activity.dca_per_spike_nm if activity.hill_enabled else activity.dff_per_spike)
    t = np.sort(np.asarray(spike_times_s, np.float64))
    L = SEGMENT_FRAMES
    n_seg = -(-int(n_frames) // L)
    dff = np.zeros((n_seg, L))
    spikes = np.zeros((n_seg, L), np.uint8)
    off = np.array([0, t.size], np.int64)
    for seg in range(n_seg):
        _calcium_kernel(off, t, np.array([seg]), seg, L, L, float(fps), np.array([td]), np.array([tr]),
                        gain / h_max, activity.hill_enabled, activity.ca_rest_nm, activity.kd_nm,
                        activity.hill_n, activity.dynamic_range, dff, spikes, np.zeros(2, np.int64),
                        np.empty(t.size))
    return dff.reshape(-1)[:n_frames]
