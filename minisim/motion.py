"""Brain motion: how far the tissue has moved under the scope in every frame.

Rigid part (physics.md §7.1), summed per axis then softly bounded by
``max_displacement_um * tanh(d / max_displacement_um)`` so the render halo is guaranteed:
* jitter: Ornstein-Uhlenbeck, sd ``rigid_sd_um``, correlation time ``rigid_tau_s``;
* slow drift: OU with a 30 min time constant and sd ``drift_um``;
* jerks (chewing, grooming, rearing): Poisson events at ``jerk_rate_hz``, each a step of
  ``jerk_amplitude_um`` x U(0.5, 1.5) in a random direction recovering with ``jerk_recovery_s``;
* locomotion-locked oscillation at ``oscillation_hz`` with ``oscillation_amplitude_um``, gated
  by bouts (two-state, mean 5 s on / 20 s off, smoothed over 0.5 s).
Non-rigid part: three plane-wave modes of wavelength ``nonrigid_length_um`` whose amplitudes
are OU processes (sd ``nonrigid_amplitude_um`` / sqrt(3), 2 s), bounded at 3x that sd.
Axial part (focus drift, physics.md §7.1 "Axial"): OU with sd ``axial_sd_um`` and correlation
time ``rigid_tau_s``, bounded at 3x that sd (``axial_bound_um``); positive = tissue deeper.

Draws are keyed by 1024-frame segments and the recursions carry their state across segments,
so frame t never depends on the duration (prefix-stable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .rng import rng
from .spec import Spec

SEGMENT_FRAMES = 1024
N_MODES = 3
_BOUT_ON_S, _BOUT_OFF_S, _BOUT_SMOOTH_S, _MODE_TAU_S, _DRIFT_TAU_S = 5.0, 20.0, 0.5, 2.0, 1800.0


@dataclass(frozen=True)
class Motion:
    rigid_um: np.ndarray     # (frames, 2) y, x displacement of the tissue
    mode_amp_um: np.ndarray  # (frames, N_MODES)
    mode_k: np.ndarray       # (N_MODES, 2) wave vectors, rad/um
    mode_dir: np.ndarray     # (N_MODES, 2) unit displacement directions
    mode_phase: np.ndarray   # (N_MODES,)
    axial_um: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (frames,) z shift, um

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


def simulate_motion(spec: Spec, n_frames: int | None = None) -> Motion:
    """Per-frame displacement of the brain (zeros when motion is switched off)."""
    m, fps, seed = spec.motion, spec.recording.fps, spec.recording.seed
    T = spec.recording.n_frames if n_frames is None else n_frames
    g0 = rng(seed, "motion", -1)
    ang = g0.uniform(0, 2 * np.pi, N_MODES)
    kdir = g0.uniform(0, 2 * np.pi, N_MODES)
    k = 2 * np.pi / m.nonrigid_length_um * np.column_stack([np.sin(kdir), np.cos(kdir)])
    mdir = np.column_stack([np.sin(ang), np.cos(ang)])
    phase = g0.uniform(0, 2 * np.pi, N_MODES)
    osc_phase = g0.uniform(0, 2 * np.pi, 2)
    if not m.enabled:
        return Motion(np.zeros((T, 2)), np.zeros((T, N_MODES)), k, mdir, phase, np.zeros(T))

    dt = 1.0 / fps
    a_j, a_d, a_m = np.exp(-dt / m.rigid_tau_s), np.exp(-dt / _DRIFT_TAU_S), np.exp(-dt / _MODE_TAU_S)
    a_jerk, a_bout = np.exp(-dt / m.jerk_recovery_s), np.exp(-dt / _BOUT_SMOOTH_S)
    mode_sd = m.nonrigid_amplitude_um / np.sqrt(N_MODES)
    jit = np.zeros(2)
    drift = np.zeros(2)
    jerk = np.zeros(2)
    modes = np.zeros(N_MODES)
    bout_on, bout = 0.0, 0.0
    rigid = np.empty((T, 2))
    amp = np.empty((T, N_MODES))
    axial = np.zeros(T)
    ax = 0.0
    for s0 in range(0, T, SEGMENT_FRAMES):
        g = rng(seed, "motion", s0 // SEGMENT_FRAMES)
        n = SEGMENT_FRAMES  # always draw a whole segment: the duration never changes a draw
        z = g.standard_normal((n, 2 + 2 + N_MODES))
        jump = g.random(n) < m.jerk_rate_hz * dt
        jump_amp = m.jerk_amplitude_um * g.uniform(0.5, 1.5, n)
        jump_ang = g.uniform(0, 2 * np.pi, n)
        flip = g.random(n)
        # own key (two indices): switching the axial part on never changes the lateral path
        za = rng(seed, "motion", s0 // SEGMENT_FRAMES, 1).standard_normal(n)
        for i in range(min(n, T - s0)):
            t = s0 + i
            jit = a_j * jit + m.rigid_sd_um * np.sqrt(1 - a_j**2) * z[i, :2]
            drift = a_d * drift + m.drift_um * np.sqrt(1 - a_d**2) * z[i, 2:4]
            jerk = a_jerk * jerk
            if jump[i]:
                jerk = jerk + jump_amp[i] * np.array([np.sin(jump_ang[i]), np.cos(jump_ang[i])])
            p_switch = dt / (_BOUT_ON_S if bout_on else _BOUT_OFF_S)
            if flip[i] < p_switch:
                bout_on = 1.0 - bout_on
            bout = a_bout * bout + (1 - a_bout) * bout_on
            osc = bout * m.oscillation_amplitude_um * np.sin(
                2 * np.pi * m.oscillation_hz * t * dt + osc_phase
            )
            rigid[t] = jit + drift + jerk + osc
            modes = a_m * modes + mode_sd * np.sqrt(1 - a_m**2) * z[i, 4:]
            amp[t] = modes
            ax = a_j * ax + m.axial_sd_um * np.sqrt(1 - a_j**2) * za[i]
            axial[t] = ax
    if m.max_displacement_um > 0:
        rigid = m.max_displacement_um * np.tanh(rigid / m.max_displacement_um)
    else:
        rigid[:] = 0.0
    bound = 3.0 * mode_sd
    amp = bound * np.tanh(amp / bound) if bound > 0 else amp * 0.0
    ab = axial_bound_um(spec)
    axial = ab * np.tanh(axial / ab) if ab > 0 else axial * 0.0
    return Motion(rigid, amp, k, mdir, phase, axial)


def axial_weights(motion: Motion, bound_um: float, frames: range) -> np.ndarray:
    """(frames, 2) float32 weights of the footprints at -bound and +bound (linear in z).

    The footprint of a frame is S_0 + w_- (S_- - S_0) + w_+ (S_+ - S_0): piecewise-linear
    interpolation between the planes dz - bound, dz, dz + bound.
    """
    f = np.asarray(frames)
    a = motion.axial_um[f] / bound_um if bound_um > 0 else np.zeros(len(f))
    return np.column_stack([np.maximum(-a, 0.0), np.maximum(a, 0.0)]).astype(np.float32)


def displacement_px(
    motion: Motion, pixel_um: float, frames: range, y_um: np.ndarray, x_um: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) in pixels, float32 (len(frames), len(y), len(x)): where the tissue has moved.

    Every pixel's value depends only on its own coordinates and the frame, never on the
    window it is computed in, so tiles join without seams.
    """
    f = np.asarray(frames)
    Y, X = np.meshgrid(y_um, x_um, indexing="ij")
    patterns = [np.sin(motion.mode_k[k, 0] * Y + motion.mode_k[k, 1] * X + motion.mode_phase[k])
                for k in range(N_MODES)]
    dy = np.empty((len(f), *Y.shape), np.float32)
    dx = np.empty((len(f), *Y.shape), np.float32)
    for i, t in enumerate(f):  # frame by frame (float64 sums, cache-sized), then to float32
        ry = np.full(Y.shape, motion.rigid_um[t, 0] / pixel_um)
        rx = np.full(Y.shape, motion.rigid_um[t, 1] / pixel_um)
        for k, pattern in enumerate(patterns):
            a = motion.mode_amp_um[t, k] / pixel_um
            ry = ry + a * motion.mode_dir[k, 0] * pattern
            rx = rx + a * motion.mode_dir[k, 1] * pattern
        dy[i], dx[i] = ry, rx
    return dy, dx
