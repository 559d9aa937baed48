"""Neural activity: spikes, calcium ΔF/F, bleaching and the neuropil time course, per unit.

This is the ``activity`` box of the scene (design.md, "Data flow"): pure numpy, computed once,
small next to the movie. The renderer multiplies a cell's resting image ``A`` by
``C = bleach * (1 + dff)``, so ``C`` is 1 for a cell at rest at t = 0.

The model (physics.md §4, §5, §7.2, §7.3; the whole page is docs/activity.md):

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
* **Bleaching.** bleach(t) = (1 - β) + β exp(-(t + κ ∫₀ᵗ ΔF/F dt') / τ_b): bleaching goes with the
  light a cell emits, so active cells bleach faster (κ = ``activity_dependence``); causal, so
  prefix-stable. The neuropil bleaches with β/2 and no activity term (physics.md §7.3).
* **Neuropil course.** ``neuropil_f = (1 + fluctuation_fraction · ŷ(t)) · bleach_np(t)``, ŷ the
  ensemble drives averaged, low-passed with ``tissue.neuropil.tau_s`` and scaled to unit sd.
  It depends on the ensemble drives only, never on which units are simulated.

Keys and stability: per-unit draws come from ``rng(seed, "activity_params", unit_id)``,
``rng(seed, "ensemble_membership", unit_id)`` and ``rng(seed, "activity_unit", unit_id, segment)``;
ensemble drives from ``rng(seed, "ensembles", ensemble, segment)``. Time is cut into fixed
segments of :data:`SEGMENT_FRAMES` frames, always computed whole (the last one is cropped), with
the state (OU, gate, pending burst spikes, calcium, cumulative ΔF/F) carried across. So a unit's
traces do not depend on the other units simulated (subset-stable), and a shorter recording is
bit for bit the prefix of a longer one (prefix-stable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from .rng import rng
from .spec import ActivitySpec, Spec

__all__ = ["SEGMENT_FRAMES", "Activity", "dff_from_spikes", "hill_dff", "simulate_activity"]

#: Frames per randomness segment. Part of the bytes of every recording: never change it
#: without bumping the activity algorithm version.
SEGMENT_FRAMES = 1024

#: The neuropil (autofluorescence) bleaches with this fraction of the cells' β (physics.md §7.3).
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
    """F/F_min = 1 + (R_f - 1) [Ca]^n / ([Ca]^n + K_d^n) (physics.md §4)."""
    x = np.power(np.asarray(ca_nm, np.float64) / a.kd_nm, a.hill_n)
    return 1.0 + (a.dynamic_range - 1.0) * x / (1.0 + x)


def hill_dff(n_spikes: np.ndarray | float, activity: ActivitySpec, amplitude: float = 1.0) -> np.ndarray:
    """ΔF/F of ``n_spikes`` summed spikes with no decay (the calibration of physics.md §4).

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
def _unit_params(spec: Spec, unit_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-unit constants, each unit from its own key (the same draws whatever the Spec values)."""
    a = spec.activity
    seed = spec.recording.seed
    n = len(unit_ids)
    u_active = np.empty(n)
    z = np.empty((n, 4))  # rate, tau_rise, tau_decay, amplitude
    ensemble = np.empty(n, np.int64)
    for i, uid in enumerate(unit_ids):
        g = rng(seed, "activity_params", int(uid))
        u_active[i] = g.random()
        z[i] = g.standard_normal(4)
        ensemble[i] = rng(seed, "ensemble_membership", int(uid)).integers(a.ensemble_count)
    jitter_ln = np.sqrt(np.log1p(a.tau_jitter_cv**2))  # log-normal with this CV, median = Spec value
    tau_decay = a.tau_decay_ms * np.exp(jitter_ln * z[:, 2])
    tau_rise = np.minimum(a.tau_rise_ms * np.exp(jitter_ln * z[:, 1]), MAX_RISE_OVER_DECAY * tau_decay)
    return {
        "active": u_active < a.active_fraction,
        "rate_hz": a.rate_median_hz * np.exp(a.rate_sd_ln * z[:, 0]),
        "tau_rise_ms": tau_rise,
        "tau_decay_ms": tau_decay,
        "amplitude": np.exp(a.amplitude_sd_ln * z[:, 3]),
        "ensemble": ensemble,
    }


def _ou_segment(z: np.ndarray, a_coef: float, prev: np.ndarray | None) -> np.ndarray:
    """Unit-variance OU per frame along the last axis: x_t = a x_{t-1} + √(1-a²) z_t.

    ``prev`` is the value at the frame before ``z[..., 0]``; None starts stationary (x_0 = z_0).
    Rows are filtered independently, so a row's values do not depend on the other rows.
    """
    c = np.sqrt(1.0 - a_coef * a_coef)
    zi = (1.0 - c) * z[..., :1] if prev is None else a_coef * np.asarray(prev)[..., None]
    return lfilter([c], [1.0, -a_coef], z, axis=-1, zi=zi)[0]


def _refractory(t: np.ndarray, last: float, refractory_s: float) -> np.ndarray:
    """Drop spikes closer than ``refractory_s`` to the previous kept spike (t sorted)."""
    if t.size == 0 or np.all(np.diff(t, prepend=last) >= refractory_s):
        return t
    keep = np.ones(t.size, bool)
    for k, tk in enumerate(t):
        if tk - last < refractory_s:
            keep[k] = False
        else:
            last = tk
    return t[keep]


class _UnitState:
    """What one active unit carries from one segment to the next."""

    __slots__ = ("last_spike", "next_switch", "pending", "up")

    def __init__(self) -> None:
        self.up = False                      # gate state
        self.next_switch = 0.0               # absolute time of the next gate switch, s
        self.pending = np.empty(0)           # burst spikes born earlier that fall later
        self.last_spike = -np.inf


def _unit_segment_spikes(
    g: np.random.Generator, st: _UnitState, a: ActivitySpec, lam_frame: np.ndarray, seg: int,
    edges: np.ndarray, fps: float, p_up: float,
) -> np.ndarray:
    """Spike times of one unit born in (or pending into) one segment; updates its state.

    ``g`` has already given the private OU's normals (draw 1 of the key); ``lam_frame`` is the
    event rate while up, per frame (rate_hz / p_up / E[spikes per event] · m).
    """
    L = SEGMENT_FRAMES
    f0 = seg * L
    t0, t1 = edges[0], edges[-1]
    # up/down gate (continuous time, exponential dwells)
    dwell = (a.down_dwell_s, a.up_dwell_s)
    if seg == 0:
        st.up = bool(g.random() < p_up)
        st.next_switch = t0 + g.exponential(dwell[st.up])
    up0 = st.up
    switches = []
    while st.next_switch < t1:
        switches.append(st.next_switch)
        st.up = not st.up
        st.next_switch += g.exponential(dwell[st.up])
    # up-clock U(t) = time spent up since t0, piecewise linear with knots at the switches
    knots = np.array([t0, *switches, t1])
    up_seg = (np.arange(knots.size - 1) % 2 == 0) == up0
    u_knots = np.concatenate([[0.0], np.cumsum(np.diff(knots) * up_seg)])
    u_edges = np.interp(edges, knots, u_knots)
    # integrated intensity Λ at the frame edges; events are uniform in Λ (time rescaling)
    lam = np.concatenate([[0.0], np.cumsum(lam_frame * np.diff(u_edges))])
    n_events = g.poisson(lam[-1])
    x = np.sort(g.random(n_events)) * lam[-1]
    f = np.clip(np.searchsorted(lam, x, side="right") - 1, 0, L - 1)
    onsets = np.interp(u_edges[f] + (x - lam[f]) / lam_frame[f], u_knots, knots)
    # bursts
    burst = g.random(n_events) < a.burst_probability
    n_extra = np.where(burst, 1 + g.poisson(a.burst_extra_spikes_mean, n_events), 0)
    isi = g.uniform(a.burst_isi_min_ms, a.burst_isi_max_ms, int(n_extra.sum())) / 1e3
    if isi.size:
        owner = np.repeat(np.arange(n_events), n_extra)
        is_b = n_extra > 0
        first = (np.cumsum(n_extra) - n_extra)[is_b]
        csum = np.cumsum(isi)
        # cumulative ISI within each burst
        offset = csum - np.repeat(csum[first] - isi[first], n_extra[is_b])
        extra = onsets[owner] + offset
        spikes = np.sort(np.concatenate([st.pending, onsets, extra]))
    else:
        spikes = np.sort(np.concatenate([st.pending, onsets]))
    # spikes whose frame is past this segment wait for the next one
    later = np.floor(spikes * fps) >= f0 + L
    st.pending = spikes[later]
    now = _refractory(spikes[~later], st.last_spike, a.refractory_ms / 1e3)
    if now.size:
        st.last_spike = float(now[-1])
    return now


def _ensemble_drives(spec: Spec, seg: int, prev: np.ndarray | None) -> np.ndarray:
    """(ensemble_count, SEGMENT_FRAMES) unit-variance OU drives X_e, keyed (ensemble, segment)."""
    a = spec.activity
    coef = np.exp(-1.0 / (spec.recording.fps * a.modulation_tau_s))
    z = np.stack([rng(spec.recording.seed, "ensembles", e, seg).standard_normal(SEGMENT_FRAMES)
                  for e in range(a.ensemble_count)])
    return _ou_segment(z, coef, prev)


# ----------------------------------------------------------------------------- calcium
def _frame_kernel_inputs(
    times: list[np.ndarray], seg: int, fps: float, tau_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per (unit, frame): spike count n_f and a_f = Σ_k exp(-((f+1)Δt - t_k)/τ) for each τ.

    ``tau_s`` is (n_components, n_units); returns n (n_units, L) and a (n_components, n_units, L).
    """
    L = SEGMENT_FRAMES
    n_units = len(times)
    counts = np.array([t.size for t in times])
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

    With E_f the sum at frame start and d = exp(-Δt/τ):
    mean over frame f = (τ/Δt) [(1 - d) E_f + n_f - a_f], and E_{f+1} = d E_f + a_f.
    """
    dt = 1.0 / fps
    d = np.exp(-dt / tau_s)                       # (components, units)
    L = n.shape[1]
    a_t = np.ascontiguousarray(np.moveaxis(a, 2, 0))   # (L, components, units)
    E = np.empty(a_t.shape)
    cur = state.copy()
    for f in range(L):
        E[f] = cur
        cur *= d
        cur += a_t[f]
    state[...] = cur
    E = np.moveaxis(E, 0, 2)
    return (tau_s / dt)[:, :, None] * ((1.0 - d)[:, :, None] * E + n[None] - a)


# ----------------------------------------------------------------------------- main
def simulate_activity(spec: Spec, unit_ids: np.ndarray, n_frames: int | None = None) -> Activity:
    """Spikes, ΔF/F, bleaching and the neuropil time course of ``unit_ids``.

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
    a = spec.activity
    fps = spec.recording.fps
    seed = spec.recording.seed
    T = spec.recording.n_frames if n_frames is None else int(n_frames)
    if T < 0:
        raise ValueError(f"n_frames={T} must be >= 0")
    unit_ids = np.asarray(unit_ids, np.int64).reshape(-1)
    n_units = unit_ids.size
    L = SEGMENT_FRAMES
    n_seg = -(-T // L)
    dt = 1.0 / fps

    par = _unit_params(spec, unit_ids)
    active_idx = np.flatnonzero(par["active"])
    states = {i: _UnitState() for i in active_idx}
    p_up = a.up_dwell_s / (a.up_dwell_s + a.down_dwell_s)
    tau_s = np.stack([par["tau_decay_ms"], par["tau_rise_ms"]]) / 1e3  # (2, units)
    h_max = _kernel_peak(tau_s[1], tau_s[0])
    gain = par["amplitude"] * (a.dca_per_spike_nm if a.hill_enabled else a.dff_per_spike) / h_max
    f_rest = _hill_f(np.float64(a.ca_rest_nm), a)
    bl = spec.illumination.bleaching
    beta = bl.fraction if bl.enabled else 0.0
    kappa = bl.activity_dependence if bl.enabled else 0.0

    np_spec = spec.tissue.neuropil
    np_coef = np.exp(-dt / np_spec.tau_s)
    ou_coef = np.exp(-dt / a.modulation_tau_s)
    # sd of an exponential smoother (1-b) Σ b^k x_{t-k} of a unit-variance AR(1) x (coef a)
    np_sd = (1.0 - np_coef) * np.sqrt((1.0 + ou_coef * np_coef)
                                      / ((1.0 - np_coef**2) * (1.0 - ou_coef * np_coef)))

    # segments are always computed whole; the last one is cropped on writing
    spikes = np.zeros((n_units, T), np.uint8)
    dff = np.zeros((n_units, T), np.float32)
    bleach = np.ones((n_units, T), np.float32)
    neuropil = np.ones(T, np.float32)
    spike_times: list[list[np.ndarray]] = [[] for _ in range(n_units)]

    kin_state = np.zeros((2, n_units))
    cum_dff = np.zeros(n_units)            # Σ ΔF/F over past frames (bleaching dose)
    drives = None
    np_state = None
    shared_sd = a.modulation_sd_ln * np.sqrt(a.correlation)
    private_sd = a.modulation_sd_ln * np.sqrt(1.0 - a.correlation)
    spikes_per_event = 1.0 + a.burst_probability * (1.0 + a.burst_extra_spikes_mean)
    # event rate while up: rate_hz is the mean over the recording, the gate is up p_up of it
    event_rate = par["rate_hz"][active_idx] / p_up / spikes_per_event
    y_priv = None
    for seg in range(n_seg):
        sl = slice(seg * L, min((seg + 1) * L, T))
        w = sl.stop - sl.start
        drives = _ensemble_drives(spec, seg, None if drives is None else drives[:, -1])
        # slow modulation m = exp(σ_m(√ρ X_e + √(1-ρ) Y_i) - σ_m²/2), E[m] = 1
        gens = [rng(seed, "activity_unit", int(unit_ids[i]), seg) for i in active_idx]
        z = np.empty((active_idx.size, L))
        for j, g in enumerate(gens):
            z[j] = g.standard_normal(L)
        y_priv = _ou_segment(z, ou_coef, y_priv)
        log_m = (shared_sd * drives[par["ensemble"][active_idx]] + private_sd * y_priv
                 - 0.5 * a.modulation_sd_ln**2)
        lam_frame = event_rate[:, None] * np.exp(log_m)
        y_priv = y_priv[:, -1]
        # spikes
        edges = (seg * L + np.arange(L + 1)) / fps
        seg_times = [np.empty(0)] * n_units
        for j, i in enumerate(active_idx):
            t = _unit_segment_spikes(gens[j], states[i], a, lam_frame[j], seg, edges, fps, p_up)
            seg_times[i] = t
            spike_times[i].append(t)
        n, aw = _frame_kernel_inputs(seg_times, seg, fps, tau_s)
        spikes[:, sl] = np.minimum(n[:, :w], 255)
        # calcium
        k = _kernel_segment(n, aw, kin_state, tau_s, fps)
        ksum = gain[:, None] * (k[0] - k[1])
        if a.hill_enabled:
            d = _hill_f(a.ca_rest_nm + ksum, a) / f_rest - 1.0
        else:
            d = ksum
        dff[:, sl] = d[:, :w]
        # bleaching: dose at frame start = t + κ ∫ ΔF/F, causal
        if beta > 0.0:
            t_start = (seg * L + np.arange(L)) * dt
            dose = cum_dff[:, None] + np.concatenate(
                [np.zeros((n_units, 1)), np.cumsum(d[:, :-1], axis=1)], axis=1)
            bleach[:, sl] = ((1.0 - beta)
                             + beta * np.exp(-(t_start + kappa * dt * dose) / bl.tau_s))[:, :w]
            bleach_np = ((1.0 - NEUROPIL_BLEACH_RATIO * beta)
                         + NEUROPIL_BLEACH_RATIO * beta * np.exp(-t_start / bl.tau_s))
        else:
            bleach_np = 1.0
        cum_dff += d.sum(axis=1)
        # neuropil: population drive, low-passed, unit sd
        x = drives.mean(axis=0) * np.sqrt(a.ensemble_count)
        zi = [np_sd * x[0] - (1.0 - np_coef) * x[0]] if np_state is None else [np_coef * np_state]
        yv = lfilter([1.0 - np_coef], [1.0, -np_coef], x, zi=zi)[0]
        np_state = yv[-1]
        frac = np_spec.fluctuation_fraction if np_spec.enabled else 0.0
        neuropil[sl] = ((1.0 + frac * yv / np_sd) * bleach_np)[:w]

    t_end_frame = T
    out_times = []
    for i in range(n_units):
        t = np.concatenate(spike_times[i]) if spike_times[i] else np.empty(0)
        out_times.append(t[np.floor(t * fps) < t_end_frame].astype(np.float64))
    f32 = np.float32
    return Activity(
        spikes=spikes,
        dff=dff,
        bleach=bleach,
        spike_times=out_times,
        neuropil_f=neuropil,
        active=par["active"].astype(bool),
        rate_hz=par["rate_hz"].astype(f32),
        tau_rise_ms=par["tau_rise_ms"].astype(f32),
        tau_decay_ms=par["tau_decay_ms"].astype(f32),
        amplitude=par["amplitude"].astype(f32),
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
