"""Neural activity: spikes, calcium ΔF/F, bleaching and the neuropil time course, per unit.

This is the ``activity`` box of the data flow (docs/architecture.md): pure numpy, computed a
time segment at a time, small next to the movie. The renderer multiplies a cell's resting image ``A`` by
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

Keys and stability: per-unit draws come from ``rng(seed, "activity_params", unit_id)``,
``rng(seed, "ensemble_membership", unit_id)`` and ``rng(seed, "activity_unit", unit_id, segment)``;
ensemble drives from ``rng(seed, "ensembles", ensemble, segment)``. Time is cut into fixed
segments of :data:`SEGMENT_FRAMES` frames, always computed whole (the last one is cropped), and
nothing is carried from one segment to the next: the state at a segment's start comes from the
Spec alone (keyed OU knots bridged inside the segment, the gate's last keyed reset, calcium and
the neuropil low-pass rebuilt over a bounded look-back window; docs/segments.md). So any process
computes any segment, a unit's traces do not depend on the other units simulated (subset-stable),
and a shorter recording is bit for bit the prefix of a longer one (prefix-stable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.signal import lfilter

from .rng import ou_segment, reset_gate_state, rng
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
        These three are None in a World's Activity, which keeps the per-unit fields only
        (the World holds C; a Recording computes dF/F and S lazily).
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
    and ``ensemble`` (int64), one entry per unit id.
    """
    act_spec = spec.activity
    seed = spec.recording.seed
    n = len(unit_ids)
    u_active = np.empty(n)
    z = np.empty((n, 4))  # rate, tau_rise, tau_decay, amplitude
    ensemble = np.empty(n, np.int64)
    for i, uid in enumerate(unit_ids):
        g = rng(seed, "activity_params", int(uid))
        u_active[i] = g.random()
        z[i] = g.standard_normal(4)
        ensemble[i] = rng(seed, "ensemble_membership", int(uid)).integers(act_spec.ensemble_count)
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


def _refractory(t: np.ndarray, refractory_s: float) -> np.ndarray:
    """Drop spikes closer than ``refractory_s`` to the previous kept spike (t sorted)."""
    if t.size == 0 or np.all(np.diff(t) >= refractory_s):
        return t
    keep = np.ones(t.size, bool)
    last = -np.inf
    for k, tk in enumerate(t):
        if tk - last < refractory_s:
            keep[k] = False
        else:
            last = tk
    return t[keep]


# ----------------------------------------------------------------------------- calcium
def _frame_kernel_inputs(
    times: list[np.ndarray], seg: int, fps: float, tau_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per (unit, frame): spike count n_f and a_f = Σ_k exp(-((f+1)Δt - t_k)/τ) for each τ.

    ``tau_s`` is (n_components, n_units); returns n (n_units, L) and a (n_components, n_units, L).
    """
    L = SEGMENT_FRAMES
    n_units = len(times)
    counts = np.array([t.size for t in times], np.int64)
    n = np.zeros((n_units, L))
    a = np.zeros((tau_s.shape[0], n_units, L))
    if counts.sum() == 0:
        return n, a
    t = np.concatenate(times)
    unit = np.repeat(np.arange(n_units), counts)
    frame = np.clip(np.floor(t * fps).astype(np.int64) - seg * L, 0, L - 1)
    to_edge = np.clip((seg * L + frame + 1) / fps - t, 0.0, 1.0 / fps)
    flat = unit * L + frame
    n += np.bincount(flat, minlength=n_units * L).reshape(n_units, L)
    for c in range(tau_s.shape[0]):
        w = np.exp(-to_edge / tau_s[c, unit])
        a[c] = np.bincount(flat, weights=w, minlength=n_units * L).reshape(n_units, L)
    return n, a


def _kernel_segment(
    n: np.ndarray, a: np.ndarray, state: np.ndarray, tau_s: np.ndarray, fps: float
) -> np.ndarray:
    """Exposure-averaged Σ_k exp(-(t - t_k)/τ) per component, unit and frame; updates ``state``.

    With E_f the sum at frame start and decay = exp(-Δt/τ):
    mean over frame f = (τ/Δt) [(1 - decay) E_f + n_f - a_f], and E_{f+1} = decay E_f + a_f.
    """
    dt = 1.0 / fps
    decay = np.exp(-dt / tau_s)                       # (components, units)
    E = np.empty(a.shape)
    cur = np.ascontiguousarray(state, np.float64).copy()
    _frame_start_sums(np.ascontiguousarray(a, np.float64), np.ascontiguousarray(decay, np.float64), cur, E)
    state[...] = cur
    return (tau_s / dt)[:, :, None] * ((1.0 - decay)[:, :, None] * E + n[None] - a)


@njit(cache=True, nogil=True, error_model="numpy")
def _frame_start_sums(a, decay, cur, E):
    """E[c, u, f] = the sum at frame f's start; cur carries it (E_{f+1} = decay E_f + a_f, the
    product rounded before the sum, frame by frame)."""
    C, U, L = a.shape
    for c in range(C):
        for u in range(U):
            e = cur[c, u]
            d = decay[c, u]
            for f in range(L):
                E[c, u, f] = e
                e = e * d
                e = e + a[c, u, f]
            cur[c, u] = e


# ----------------------------------------------------------------------------- segments
#: A unit's calcium forgets spikes older than this many of its decay times (e^-20 ~ 2e-9 of a
#: transient: below float32), so a segment's calcium is rebuilt from that look-back window.
CALCIUM_MEMORY_TAUS = 20.0
#: The neuropil low-pass forgets its input after this many of its time constants.
NEUROPIL_MEMORY_TAUS = 20.0


class ActivityBatch:
    """The activity of a set of units, one time segment at a time (the one state object).

    Built once per set of units (per-unit constants only); :meth:`segment` then gives any
    segment's traces from keyed draws alone, without the segments before it: the gate state at
    a segment start from its keyed resets (:func:`minisim.rng.reset_gate_state`), the slow
    modulations as keyed OU knots bridged per segment (:func:`minisim.rng.ou_segment`), the
    calcium from the spikes of a bounded look-back window (:data:`CALCIUM_MEMORY_TAUS`), the
    bleaching from each unit's expected ΔF/F (:func:`expected_dff`), the neuropil low-pass over
    a bounded window of the ensemble drives. The steps, in order: ``_drives`` →
    ``_births`` (gate, modulation, events, bursts) → ``_window_spikes`` (refractory) →
    ``_calcium`` → ``_indicator`` → ``_bleaching``; ``_neuropil`` on its own.
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
        seg_s = SEGMENT_FRAMES * self.dt
        self.lookback_segments = np.maximum(
            1, np.ceil(CALCIUM_MEMORY_TAUS * self.tau_s[0] / seg_s)).astype(np.int64)
        bl = spec.illumination.bleaching
        self.beta = bl.fraction if bl.enabled else 0.0
        kappa = bl.activity_dependence if bl.enabled else 0.0
        self.bleach_rate_hz = (1.0 + kappa * expected_dff(spec, self.params)) / bl.tau_s
        self.np_bleach_rate_hz = 1.0 / bl.tau_s
        self._drive_cache: dict[int, np.ndarray] = {}
        self._birth_cache: dict[int, list[np.ndarray]] = {}
        # per segment, per unit: its gate's resets (a build reads its own and the segment's
        # before); per unit, its gate's state at t = 0 (every build reads it)
        self._reset_cache: dict[int, dict[int, tuple]] = {}
        self._initial_up: dict[int, bool] = {}

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

    def _gate_resets(self, uid: int, seg: int) -> tuple[bool, np.ndarray, np.ndarray]:
        """(initial state, reset times s, reset marks) of one unit's gate in one segment
        (kept for the segments a build reads: one keyed draw per unit and segment)."""
        per_unit = self._reset_cache.setdefault(seg, {})
        got = per_unit.get(uid)
        if got is None:
            got = per_unit[uid] = self._draw_gate_resets(uid, seg)
        return got

    def _draw_gate_resets(self, uid: int, seg: int) -> tuple[bool, np.ndarray, np.ndarray]:
        g = rng(self.seed, "activity_gate", uid, seg)
        initial = bool(g.random() < self.p_up)
        seg_s = SEGMENT_FRAMES * self.dt
        n = g.poisson(self.reset_rate_hz * seg_s)
        times = seg * seg_s + np.sort(g.random(n)) * seg_s
        return initial, times, g.random(n) < self.p_up

    def _gate_switches(self, uid: int, seg: int) -> tuple[bool, np.ndarray]:
        """(state at the segment start, times at which the gate flips inside the segment)."""
        initial = self._initial_up.get(uid)
        if initial is None:
            initial = self._initial_up[uid] = self._gate_resets(uid, 0)[0]
        up0 = reset_gate_state(lambda j: self._gate_resets(uid, j)[1:], seg, initial)
        _, times, marks = self._gate_resets(uid, seg)
        before = np.concatenate([[up0], marks[:-1]]) if marks.size else marks
        return up0, times[marks != before]

    def _births(self, seg: int) -> list[np.ndarray]:
        """Per active unit, the spike times of the events that start in segment ``seg``."""
        got = self._birth_cache.get(seg)
        if got is not None:
            return got
        act_spec, L, fps = self.act_spec, SEGMENT_FRAMES, self.fps
        shared_sd = act_spec.modulation_sd_ln * np.sqrt(act_spec.correlation)
        private_sd = act_spec.modulation_sd_ln * np.sqrt(1.0 - act_spec.correlation)
        drives = self._drives(seg) if self.active_idx.size else None
        edges = (seg * L + np.arange(L + 1)) / fps
        out = []
        for i in self.active_idx:
            uid = int(self.unit_ids[i])
            g = rng(self.seed, "activity_unit", uid, seg)
            y_priv = ou_segment(self.seed, "modulation_knots", (uid,), seg, g.standard_normal(L),
                                self.dt, act_spec.modulation_tau_s)
            # slow modulation m = exp(σ_m(√ρ X_e + √(1-ρ) Y_i) - σ_m²/2), E[m] = 1
            log_m = (shared_sd * drives[self.params["ensemble"][i]] + private_sd * y_priv
                     - 0.5 * act_spec.modulation_sd_ln**2)
            lam_frame = self.event_rate[i] * np.exp(log_m)
            up0, switches = self._gate_switches(uid, seg)
            out.append(_events(g, act_spec, lam_frame, edges, up0, switches))
        self._birth_cache[seg] = out
        return out

    def _window_spikes(self, seg: int) -> list[np.ndarray]:
        """Per unit, the kept spikes (refractory applied) of its look-back window up to ``seg``.

        Bursts that start in one segment may end in the next, so a segment's spikes are those
        born in its window; the refractory rule runs over the whole window, which starts many
        decay times back, so a refractory chain reaching across it cannot occur in practice.
        """
        L, fps = SEGMENT_FRAMES, self.fps
        first = max(0, seg - int(self.lookback_segments.max(initial=1)))
        births = {j: self._births(j) for j in range(first, seg + 1)}
        refractory_s = self.act_spec.refractory_ms / 1e3
        out = [np.empty(0)] * len(self.unit_ids)
        for j, i in enumerate(self.active_idx):
            lo = max(0, seg - int(self.lookback_segments[i]))
            t = np.sort(np.concatenate([births[k][j] for k in range(lo, seg + 1)]))
            t = _refractory(t, refractory_s)
            out[i] = t[np.floor(t * fps) < (seg + 1) * L]
        return out

    def _calcium(self, seg: int, window: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(Σh per unit and frame, gain-scaled) and the spikes inside ``seg``, from the window."""
        L, fps = SEGMENT_FRAMES, self.fps
        t0 = seg * L / fps
        state = np.zeros((2, len(self.unit_ids)))
        inside = []
        for i, t in enumerate(window):
            before = np.floor(t * fps) < seg * L
            state[:, i] = np.exp(-(t0 - t[before])[None, :] / self.tau_s[:, i : i + 1]).sum(axis=1)
            inside.append(t[~before])
        n, aw = _frame_kernel_inputs(inside, seg, fps, self.tau_s)
        k = _kernel_segment(n, aw, state, self.tau_s, fps)
        return self.gain[:, None] * (k[0] - k[1]), inside

    def _indicator(self, kernel_sum: np.ndarray) -> np.ndarray:
        """ΔF/F from the gain-scaled kernel sum (linear, or through the Hill curve)."""
        act_spec = self.act_spec
        if not act_spec.hill_enabled:
            return kernel_sum
        f_rest = _hill_f(np.float64(act_spec.ca_rest_nm), act_spec)
        return _hill_f(act_spec.ca_rest_nm + kernel_sum, act_spec) / f_rest - 1.0

    def _bleaching(self, seg: int) -> np.ndarray:
        """(units, L) expected-course bleaching ``(1-β) + β exp(-t (1 + κ E[ΔF/F]) / τ_b)``."""
        n = len(self.unit_ids)
        if self.beta <= 0.0:
            return np.ones((n, SEGMENT_FRAMES))
        t = (seg * SEGMENT_FRAMES + np.arange(SEGMENT_FRAMES)) * self.dt
        return (1.0 - self.beta) + self.beta * np.exp(-self.bleach_rate_hz[:, None] * t[None, :])

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
        for cache in (self._birth_cache, self._drive_cache, self._reset_cache):
            for j in list(cache):  # a snapshot: another thread may add or drop entries
                if not seg - back <= j <= seg:
                    cache.pop(j, None)

    # -- the segment ------------------------------------------------------------------------
    def segment(self, seg: int) -> Activity:
        """Activity of segment ``seg`` (frames [seg·L, (seg+1)·L)), whole (crop it yourself).

        ``spike_times`` holds the spikes whose frame lies in the segment.
        """
        if seg < 0:
            raise ValueError(f"segment={seg} must be >= 0")
        self._forget_outside(seg)
        window = self._window_spikes(seg)
        kernel_sum, inside = self._calcium(seg, window)
        dff = self._indicator(kernel_sum).astype(np.float32)
        n, _ = _frame_kernel_inputs(inside, seg, self.fps, self.tau_s[:1])
        f32 = np.float32
        return Activity(
            spikes=np.minimum(n, 255).astype(np.uint8),
            dff=dff,
            bleach=self._bleaching(seg).astype(f32),
            spike_times=[t.astype(np.float64) for t in inside],
            neuropil_f=self._neuropil(seg).astype(f32),
            active=self.params["active"].astype(bool),
            rate_hz=self.params["rate_hz"].astype(f32),
            tau_rise_ms=self.params["tau_rise_ms"].astype(f32),
            tau_decay_ms=self.params["tau_decay_ms"].astype(f32),
            amplitude=self.params["amplitude"].astype(f32),
        )


def _events(g: np.random.Generator, act_spec: ActivitySpec, lam_frame: np.ndarray, edges: np.ndarray,
            up0: bool, switches: np.ndarray) -> np.ndarray:
    """Spike times of the events (and their bursts) that start in one segment, sorted.

    ``lam_frame`` is the event rate while up, per frame; ``edges`` the frame edges in s;
    the gate is ``up0`` at the start and flips at ``switches``.
    """
    L = lam_frame.size
    t0, t1 = edges[0], edges[-1]
    # up-clock U(t) = time spent up since t0, piecewise linear with knots at the switches
    knots = np.concatenate([[t0], switches, [t1]])
    up_seg = (np.arange(knots.size - 1) % 2 == 0) == up0
    u_knots = np.concatenate([[0.0], np.cumsum(np.diff(knots) * up_seg)])
    u_edges = np.interp(edges, knots, u_knots)
    # integrated intensity Λ at the frame edges; events are uniform in Λ (time rescaling)
    lam = np.concatenate([[0.0], np.cumsum(lam_frame * np.diff(u_edges))])
    n_events = g.poisson(lam[-1])
    x = np.sort(g.random(n_events)) * lam[-1]
    f = np.clip(np.searchsorted(lam, x, side="right") - 1, 0, L - 1)
    onsets = np.interp(u_edges[f] + (x - lam[f]) / lam_frame[f], u_knots, knots)
    # bursts: 1 + Poisson extra spikes at uniform ISIs after the onset
    burst = g.random(n_events) < act_spec.burst_probability
    n_extra = np.where(burst, 1 + g.poisson(act_spec.burst_extra_spikes_mean, n_events), 0)
    isi = g.uniform(act_spec.burst_isi_min_ms, act_spec.burst_isi_max_ms, int(n_extra.sum())) / 1e3
    if not isi.size:
        return onsets
    owner = np.repeat(np.arange(n_events), n_extra)
    is_b = n_extra > 0
    first = (np.cumsum(n_extra) - n_extra)[is_b]
    csum = np.cumsum(isi)
    offset = csum - np.repeat(csum[first] - isi[first], n_extra[is_b])  # cumulative ISI within a burst
    return np.sort(np.concatenate([onsets, onsets[owner] + offset]))


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

    The same kernel and indicator code as :func:`simulate_activity`; handy to check kinetics.

    Examples
    --------
    >>> from minisim.spec import ActivitySpec
    >>> d = dff_from_spikes(np.array([0.1]), 1000, 1000.0, ActivitySpec())
    >>> bool(0.14 < d.max() < 0.16)
    True
    """
    tr = (activity.tau_rise_ms if tau_rise_ms is None else tau_rise_ms) / 1e3
    td = (activity.tau_decay_ms if tau_decay_ms is None else tau_decay_ms) / 1e3
    tau_s = np.array([[td], [tr]])
    h_max = _kernel_peak(np.array([tr]), np.array([td]))
    gain = amplitude * (activity.dca_per_spike_nm if activity.hill_enabled else activity.dff_per_spike)
    t = np.sort(np.asarray(spike_times_s, np.float64))
    n_seg = -(-int(n_frames) // SEGMENT_FRAMES)
    out = np.zeros(n_seg * SEGMENT_FRAMES)
    state = np.zeros((2, 1))
    frame = np.floor(t * fps)
    for seg in range(n_seg):
        ts = t[(frame >= seg * SEGMENT_FRAMES) & (frame < (seg + 1) * SEGMENT_FRAMES)]
        n, aw = _frame_kernel_inputs([ts], seg, fps, tau_s)
        k = _kernel_segment(n, aw, state, tau_s, fps)
        ksum = gain / h_max[0] * (k[0, 0] - k[1, 0])
        if activity.hill_enabled:
            f_rest = _hill_f(np.float64(activity.ca_rest_nm), activity)
            ksum = _hill_f(activity.ca_rest_nm + ksum, activity) / f_rest - 1.0
        out[seg * SEGMENT_FRAMES:(seg + 1) * SEGMENT_FRAMES] = ksum
    return out[:n_frames]
