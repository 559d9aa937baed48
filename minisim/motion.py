"""Brain motion: how far the tissue has moved under the scope in every frame.

Rigid part (docs/physics.md §7.1), summed per axis then softly bounded by
``max_displacement_um * tanh(d / max_displacement_um)`` so the render halo is guaranteed:
* jitter: Ornstein-Uhlenbeck, sd ``rigid_sd_um``, correlation time ``rigid_tau_s``;
* slow drift: OU with a 30 min time constant and sd ``drift_um``;
* jerks (chewing, grooming, rearing): Poisson events at ``jerk_rate_hz``, each a step of
  ``jerk_amplitude_um`` x U(0.5, 1.5) in a random direction recovering with ``jerk_recovery_s``;
* locomotion-locked oscillation at ``oscillation_hz`` with ``oscillation_amplitude_um``, gated
  by bouts (two-state, mean 5 s on / 20 s off, smoothed over 0.5 s).
Non-rigid part: three plane-wave modes of wavelength ``nonrigid_length_um`` whose amplitudes
are OU processes (sd ``nonrigid_amplitude_um`` / sqrt(3), 2 s), bounded at 3x that sd.
Axial part (focus drift, docs/physics.md §7.1 "Axial"): OU with sd ``axial_sd_um`` and correlation
time ``rigid_tau_s``, bounded at 3x that sd (``axial_bound_um``); positive = tissue deeper.

Draws are keyed by 1024-frame segments, and no state is carried from one segment to the next:
each OU is bridged between keyed knots at the segment's ends, the bout gate's state at a
segment start is the mark of its last keyed reset, and the jerk recovery and bout smoothing
filter a bounded window of past segments (docs/segments.md). So any process computes any
frame's motion alone, and frame t never depends on the duration (prefix-stable).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy.signal import lfilter

from .rng import ou_segment, reset_gate_state, rng
from .spec import Spec

SEGMENT_FRAMES = 1024
N_MODES = 3
_BOUT_ON_S, _BOUT_OFF_S, _BOUT_SMOOTH_S, _MODE_TAU_S, _DRIFT_TAU_S = 5.0, 20.0, 0.5, 2.0, 1800.0
#: Filters with memory (jerk recovery, bout smoothing) look back this many time constants.
MEMORY_TAUS = 20.0
#: Rows of the OU bank: jitter y/x, drift y/x, the non-rigid modes, axial.
_JITTER, _DRIFT, _MODES, _AXIAL = slice(0, 2), slice(2, 4), slice(4, 4 + N_MODES), 4 + N_MODES
_N_OU = 5 + N_MODES


@dataclass(frozen=True)
class Motion:
    """Displacements of the brain for a run of frames starting at ``first_frame``."""

    rigid_um: np.ndarray     # (frames, 2) y, x displacement of the tissue
    mode_amp_um: np.ndarray  # (frames, N_MODES)
    mode_k: np.ndarray       # (N_MODES, 2) wave vectors, rad/um
    mode_dir: np.ndarray     # (N_MODES, 2) unit displacement directions
    mode_phase: np.ndarray   # (N_MODES,)
    axial_um: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (frames,) z shift, um
    first_frame: int = 0     # recording frame of row 0

    @property
    def nonrigid_bound_um(self) -> float:
        return float(np.abs(self.mode_amp_um).sum(axis=1).max(initial=0.0))


def axial_bound_um(spec: Spec) -> float:
    """Largest axial shift of the tissue (0 when there is no axial motion)."""
    m = spec.motion
    return 3.0 * m.axial_sd_um if m.enabled else 0.0


def halo_um(spec: Spec) -> float:
    """Largest displacement any pixel can have: sets the margin a render tile reads around it."""
    m = spec.motion
    if not m.enabled:
        return 0.0
    return m.max_displacement_um + 3.0 * m.nonrigid_amplitude_um * np.sqrt(N_MODES)


@functools.lru_cache(maxsize=64)
def _geometry_angles(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mode direction angles, wave vector angles, mode phases, oscillation phases), keyed by
    the seed: drawn once per process and seed (every block asks), read-only."""
    g0 = rng(seed, "motion", -1)
    ang = g0.uniform(0, 2 * np.pi, N_MODES)
    kdir = g0.uniform(0, 2 * np.pi, N_MODES)
    phase = g0.uniform(0, 2 * np.pi, N_MODES)
    osc_phase = g0.uniform(0, 2 * np.pi, 2)
    for a in (ang, kdir, phase, osc_phase):
        a.setflags(write=False)
    return ang, kdir, phase, osc_phase


def _geometry(spec: Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mode wave vectors, mode directions, mode phases, oscillation phases), keyed by the seed."""
    ang, kdir, phase, osc_phase = _geometry_angles(int(spec.recording.seed))
    k = 2 * np.pi / spec.motion.nonrigid_length_um * np.column_stack([np.sin(kdir), np.cos(kdir)])
    mdir = np.column_stack([np.sin(ang), np.cos(ang)])
    return k, mdir, phase.copy(), osc_phase.copy()


def _jumps(spec: Spec, seg: int) -> np.ndarray:
    """(L, 2) jerk steps (um) of one segment: a Bernoulli jump per frame, random size and direction."""
    m, dt = spec.motion, 1.0 / spec.recording.fps
    g = rng(spec.recording.seed, "motion", seg, 1)
    jump = g.random(SEGMENT_FRAMES) < m.jerk_rate_hz * dt
    size = m.jerk_amplitude_um * g.uniform(0.5, 1.5, SEGMENT_FRAMES)
    ang = g.uniform(0, 2 * np.pi, SEGMENT_FRAMES)
    return np.where(jump, size, 0.0)[:, None] * np.column_stack([np.sin(ang), np.cos(ang)])


def _bout_resets(spec: Spec, seg: int) -> tuple[bool, np.ndarray, np.ndarray]:
    """(initial state, reset frames (float), marks) of the locomotion-bout gate in one segment."""
    g = rng(spec.recording.seed, "motion", seg, 2)
    p_on = _BOUT_ON_S / (_BOUT_ON_S + _BOUT_OFF_S)
    initial = bool(g.random() < p_on)
    rate_per_frame = (1.0 / _BOUT_ON_S + 1.0 / _BOUT_OFF_S) / spec.recording.fps
    n = g.poisson(rate_per_frame * SEGMENT_FRAMES)
    frames = seg * SEGMENT_FRAMES + np.sort(g.random(n)) * SEGMENT_FRAMES
    return initial, frames, g.random(n) < p_on


def _bouts(spec: Spec, seg: int) -> np.ndarray:
    """(L,) 0/1 locomotion bout gate at each frame of one segment (mean 5 s on / 20 s off)."""
    on0 = reset_gate_state(lambda j: _bout_resets(spec, j)[1:], seg, _bout_resets(spec, 0)[0])
    _, at, marks = _bout_resets(spec, seg)
    frames = seg * SEGMENT_FRAMES + np.arange(SEGMENT_FRAMES)
    if not marks.size:  # no reset inside the segment (a short one: at 200 fps, 1 in 4)
        return np.full(SEGMENT_FRAMES, float(on0))
    last = np.searchsorted(at, frames, side="right") - 1  # last reset at or before each frame
    return np.where(last >= 0, marks[np.maximum(last, 0)], on0).astype(np.float64)


def _filtered(spec: Spec, seg: int, tau_s: float, source) -> np.ndarray:
    """(L, ...) ``source(j)`` low-passed as x_t = a x_{t-1} + u_t over a window of past segments.

    The window reaches :data:`MEMORY_TAUS` time constants back (from frame 0 when the recording
    is younger) and starts at rest: a segment's value never needs the segments before it.
    """
    L = SEGMENT_FRAMES
    a = np.exp(-1.0 / (spec.recording.fps * tau_s))
    first = max(0, seg - max(1, int(np.ceil(MEMORY_TAUS * tau_s * spec.recording.fps / L))))
    u = np.concatenate([source(j) for j in range(first, seg + 1)])
    return lfilter([1.0], [1.0, -a], u, axis=0)[-L:]


def motion_segment(spec: Spec, seg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rigid (L, 2), mode amplitudes (L, N_MODES), axial (L,)) in um of segment ``seg``, bounded.

    Every OU (jitter, drift, modes, axial) is bridged between keyed knots at the segment's
    ends (:func:`minisim.rng.ou_segment`); jerks and bouts are filtered over a bounded window
    of past segments. Nothing is carried from the segment before.
    """
    m, fps, seed = spec.motion, spec.recording.fps, spec.recording.seed
    L, dt = SEGMENT_FRAMES, 1.0 / fps
    if not m.enabled:
        return np.zeros((L, 2)), np.zeros((L, N_MODES)), np.zeros(L)
    mode_sd = m.nonrigid_amplitude_um / np.sqrt(N_MODES)
    z = rng(seed, "motion", seg).standard_normal((_N_OU, L))
    taus = [m.rigid_tau_s] * 2 + [_DRIFT_TAU_S] * 2 + [_MODE_TAU_S] * N_MODES + [m.rigid_tau_s]
    sds = [m.rigid_sd_um] * 2 + [m.drift_um] * 2 + [mode_sd] * N_MODES + [m.axial_sd_um]
    ou = np.stack([sd * ou_segment(seed, "motion_knots", (row,), seg, z[row], dt, tau) if sd > 0
                   else np.zeros(L) for row, (tau, sd) in enumerate(zip(taus, sds))])
    jerk = _filtered(spec, seg, m.jerk_recovery_s, lambda j: _jumps(spec, j))
    bout = (1.0 - np.exp(-dt / _BOUT_SMOOTH_S)) * _filtered(spec, seg, _BOUT_SMOOTH_S, lambda j: _bouts(spec, j))
    t = (seg * L + np.arange(L)) * dt
    osc_phase = _geometry(spec)[3]
    osc = (bout * m.oscillation_amplitude_um)[:, None] * np.sin(
        2 * np.pi * m.oscillation_hz * t[:, None] + osc_phase[None, :])
    rigid = ou[_JITTER].T + ou[_DRIFT].T + jerk + osc
    rigid = m.max_displacement_um * np.tanh(rigid / m.max_displacement_um) if m.max_displacement_um > 0 else rigid * 0.0
    bound = 3.0 * mode_sd
    amp = bound * np.tanh(ou[_MODES].T / bound) if bound > 0 else np.zeros((L, N_MODES))
    ab = axial_bound_um(spec)
    axial = ab * np.tanh(ou[_AXIAL] / ab) if ab > 0 else np.zeros(L)
    return rigid, amp, axial


def motion_frames(spec: Spec, frames: range, segments=None) -> Motion:
    """The Motion of frames [start, stop): the segments that hold them, joined and cropped.

    ``segments`` (optional) maps a segment index to :func:`motion_segment`'s result, e.g. a
    cache that keeps segments between calls.
    """
    get = segments if segments is not None else (lambda seg: motion_segment(spec, seg))
    k, mdir, phase, _ = _geometry(spec)
    t0, t1 = frames.start, max(frames.start, frames.stop)
    segs = range(t0 // SEGMENT_FRAMES, -(-t1 // SEGMENT_FRAMES))
    parts = [get(s) for s in segs]
    lo = t0 - segs.start * SEGMENT_FRAMES if parts else 0
    n = t1 - t0

    def join(i: int, width: tuple[int, ...]) -> np.ndarray:
        if not parts:
            return np.zeros((0, *width))
        return np.concatenate([p[i] for p in parts])[lo : lo + n]

    return Motion(join(0, (2,)), join(1, (N_MODES,)), k, mdir, phase, join(2, ()), first_frame=t0)


def simulate_motion(spec: Spec, n_frames: int | None = None) -> Motion:
    """Per-frame displacement of the brain over the whole recording (zeros when motion is off).

    Holds every frame: for tests and short recordings; the renderer asks for the frames of a
    block only (:func:`motion_frames`).
    """
    T = spec.recording.n_frames if n_frames is None else int(n_frames)
    return motion_frames(spec, range(T))


def axial_weights(motion: Motion, bound_um: float, frames: range) -> np.ndarray:
    """(frames, 2) float32 weights of the footprints at -bound and +bound (linear in z).

    The footprint of a frame is S_0 + w_- (S_- - S_0) + w_+ (S_+ - S_0): piecewise-linear
    interpolation between the planes dz - bound, dz, dz + bound.
    """
    f = np.asarray(frames) - motion.first_frame
    a = motion.axial_um[f] / bound_um if bound_um > 0 else np.zeros(len(f))
    return np.column_stack([np.maximum(-a, 0.0), np.maximum(a, 0.0)]).astype(np.float32)


def mode_patterns(motion: Motion, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """The non-rigid modes' spatial patterns sin(k . r + phase), (N_MODES, len(y), len(x)) float32
    (computed in float64, rounded once)."""
    Y, X = np.meshgrid(np.asarray(y_um, np.float64), np.asarray(x_um, np.float64), indexing="ij")
    return np.stack([np.sin(motion.mode_k[k, 0] * Y + motion.mode_k[k, 1] * X + motion.mode_phase[k])
                     for k in range(N_MODES)]).astype(np.float32)


def displacement_terms(motion: Motion, pixel_um: float, frames: range) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: rigid displacement (frames, 2) and mode amplitudes (frames, N_MODES), in px."""
    f = np.asarray(frames) - motion.first_frame
    return (np.ascontiguousarray(motion.rigid_um[f] / pixel_um, np.float64),
            np.ascontiguousarray(motion.mode_amp_um[f] / pixel_um, np.float64))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def displacement_row(rigid_px, amp_px, mode_dir, patterns, t, i, dy, dx):
    """(dy, dx) float32 of every pixel of row i in frame row t, into ``dy``, ``dx`` (docs/physics.md
    §7.1): the rigid part, then each mode's float32 coefficient amp_k dir_k (rounded from float64)
    times its float32 pattern, added in mode order in float32. A pixel's value depends only on
    its own pattern values and the frame; the loops run over the row so the compiler vectorises
    them."""
    w = dy.shape[0]
    ry = np.float32(rigid_px[t, 0])
    rx = np.float32(rigid_px[t, 1])
    for j in range(w):
        dy[j] = ry
        dx[j] = rx
    for k in range(patterns.shape[0]):
        cy = np.float32(amp_px[t, k] * mode_dir[k, 0])
        cx = np.float32(amp_px[t, k] * mode_dir[k, 1])
        for j in range(w):
            p = patterns[k, i, j]
            dy[j] += cy * p
            dx[j] += cx * p


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def pixel_displacement(rigid_px, amp_px, mode_dir, patterns, t, i, j):
    """(dy, dx) float32 of pixel (i, j) in frame row t: the arithmetic of :func:`displacement_row`
    for one pixel."""
    dy = np.float32(rigid_px[t, 0])
    dx = np.float32(rigid_px[t, 1])
    for k in range(patterns.shape[0]):
        p = patterns[k, i, j]
        dy += np.float32(amp_px[t, k] * mode_dir[k, 0]) * p
        dx += np.float32(amp_px[t, k] * mode_dir[k, 1]) * p
    return dy, dx


@njit(cache=True, nogil=True, error_model="numpy")
def _displacement(rigid_px, amp_px, mode_dir, patterns, dy, dx):
    for t in range(dy.shape[0]):
        for i in range(dy.shape[1]):
            displacement_row(rigid_px, amp_px, mode_dir, patterns, t, i, dy[t, i], dx[t, i])


def displacement_px(
    motion: Motion, pixel_um: float, frames: range, y_um: np.ndarray, x_um: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) in pixels, float32 (len(frames), len(y), len(x)): where the tissue has moved.

    Every pixel's value depends only on its own coordinates and the frame, never on the
    window it is computed in, so tiles join without seams. The renderer's warp computes the
    same values a row at a time (:func:`displacement_row`) before its gather.
    """
    rigid, amp = displacement_terms(motion, pixel_um, frames)
    pat = mode_patterns(motion, y_um, x_um)
    dy = np.empty((len(rigid), *pat.shape[1:]), np.float32)
    dx = np.empty_like(dy)
    _displacement(rigid, amp, np.ascontiguousarray(motion.mode_dir, np.float64), pat, dy, dx)
    return dy, dx
