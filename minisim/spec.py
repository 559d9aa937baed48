"""The Spec: one validated, JSON-serialisable description of a whole recording.

Everything that decides the bytes of a recording lives here and nothing else does: how a
recording is chunked and which dask scheduler renders it are arguments of ``simulate`` and
``Recording.save``, never part of the Spec. Every section forbids unknown keys, carries its
unit in each field name and checks every number's range, so a typo or an impossible value
fails at once with an error that names the field, the value and the allowed range.

``Spec()`` is the library default: the Generic 1p scope of ``docs/physics.md`` §2.1 (NA 0.45,
8x, 256 x 256 px of 3 um -> 0.375 um per pixel in tissue) looking at a CA1-like band.
The named presets in :mod:`minisim.presets` start from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

SPEC_VERSION = 1


class Section(BaseModel):
    """Base of every Spec section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- optics
class FieldCurvature(Section):
    """Petzval field curvature: the focal surface bows towards the objective off axis.

    z_f(r) = z_0 - (R - sqrt(R^2 - r^2)); R ~ 2500 um for a V4 without field flattener
    (docs/physics.md §2.4, prior impl.; estimate).
    """

    enabled: bool = False
    radius_um: float = Field(2500.0, ge=100.0, le=1e7)


class OpticsSpec(Section):
    """Objective and focus. Values: docs/physics.md §2.1 (Generic 1p column)."""

    na: float = Field(0.45, gt=0.01, le=1.0, description="object-side numerical aperture")
    magnification: float = Field(8.0, ge=0.1, le=200.0)
    emission_wavelength_um: float = Field(0.525, ge=0.3, le=1.2)
    tissue_refractive_index: float = Field(1.36, ge=1.0, le=1.6)
    working_distance_um: float = Field(
        150.0, ge=0.0, le=5000.0,
        description="front working distance: depth of the nominal focus below the front face",
    )
    tissue_gap_um: float = Field(
        0.0, ge=0.0, le=5000.0,
        description="distance from the front face (window, GRIN face) to the tissue surface",
    )
    focus_offset_um: float = Field(
        0.0, ge=-1000.0, le=1000.0, description="electrowetting-lens (or focus knob) shift"
    )
    aberration_sigma_um: float = Field(0.0, ge=0.0, le=20.0)
    defocus_enabled: bool = True
    field_curvature: FieldCurvature = FieldCurvature()

    @property
    def focal_depth_um(self) -> float:
        """Resolved focus: depth of the focal plane below the tissue surface on axis."""
        return self.working_distance_um - self.tissue_gap_um + self.focus_offset_um


# ----------------------------------------------------------------------------- sensor
class SensorSpec(Section):
    """Image sensor, photon to ADU. Values: docs/physics.md §6 (Generic column)."""

    width_px: int = Field(256, ge=8, le=4096)
    height_px: int = Field(256, ge=8, le=4096)
    pixel_pitch_um: float = Field(3.0, ge=0.5, le=50.0)
    bit_depth: int = Field(12, ge=8, le=16)
    qe: float = Field(0.7, gt=0.0, le=1.0)
    read_noise_e: float = Field(2.0, ge=0.0, le=200.0)
    dark_current_e_per_s: float = Field(1.0, ge=0.0, le=1e5)
    full_well_e: float = Field(20000.0, ge=100.0, le=1e7)
    gain_adu_per_e: float = Field(1.0, gt=0.0, le=100.0)
    offset_adu: float = Field(100.0, ge=0.0, le=65535.0)
    dsnu_adu: float = Field(1.0, ge=0.0, le=1000.0)
    prnu_fraction: float = Field(0.01, ge=0.0, le=0.5)
    hot_pixel_fraction: float = Field(1e-4, ge=0.0, le=0.05)
    hot_pixel_dark_e_per_s: float = Field(2000.0, ge=0.0, le=1e7)
    noise: bool = Field(True, description="False switches every noise source off at once")
    noise_tile_px: int = Field(
        128, ge=8, le=4096,
        description="sizes the default chunks: their tiles are about its largest multiple up to 256 px (or itself, if larger), split equally over the field; the sensor noise is keyed per pixel and does not depend on it (since render algorithm 3)",
    )
    exact_poisson_below_e: float = Field(
        10.0, ge=0.0, le=1e6,
        description="shot noise is exact Poisson below this mean, Cornish-Fisher normal above",
    )

    @model_validator(mode="after")
    def _offset_fits(self) -> SensorSpec:
        top = 2**self.bit_depth - 1
        if self.offset_adu > top:
            raise ValueError(
                f"sensor.offset_adu={self.offset_adu} must be at most 2**bit_depth - 1 = {top}"
            )
        return self


# ----------------------------------------------------------------------------- tissue
class Scatter(Section):
    """Scattered-light haze around every source (docs/physics.md §2.5)."""

    enabled: bool = True
    scattering_length_um: float = Field(50.0, ge=1.0, le=5000.0)
    scattered_collection_fraction: float = Field(0.5, ge=0.0, le=1.0)
    halo_width_per_depth: float = Field(0.3, ge=0.01, le=3.0)


class Attenuation(Section):
    """Depth dimming T(z) = exp(-z/L_ex - z/L_em) (docs/physics.md §2.5, prior impl.)."""

    enabled: bool = True
    excitation_length_um: float = Field(600.0, ge=1.0, le=1e5)
    emission_length_um: float = Field(100.0, ge=1.0, le=1e5)


class Neuropil(Section):
    """Diffuse out-of-focus and dendritic fluorescence (docs/physics.md §7.2)."""

    enabled: bool = True
    photons_per_um2_s: float = Field(
        14600.0, ge=0.0, le=1e8,
        description="collected photons per um^2 of tissue per second at the FOV centre",
    )
    correlation_length_um: float = Field(50.0, ge=1.0, le=5000.0)
    spatial_contrast: float = Field(0.3, ge=0.0, le=1.0)
    fluctuation_fraction: float = Field(0.05, ge=0.0, le=1.0)
    tau_s: float = Field(1.0, gt=0.0, le=100.0)


class TissueSpec(Section):
    scatter: Scatter = Scatter()
    attenuation: Attenuation = Attenuation()
    neuropil: Neuropil = Neuropil()


# ----------------------------------------------------------------------------- cells
class CellBand(Section):
    """One population of somata in a depth band (docs/physics.md §3)."""

    density_per_mm3: float = Field(45000.0, ge=0.0, le=500000.0)
    depth_um: float = Field(150.0, ge=0.0, le=3000.0, description="band centre below the surface")
    band_thickness_um: float = Field(20.0, gt=0.0, le=3000.0)
    soma_radius_um: float = Field(5.0, ge=1.0, le=50.0)
    soma_radius_sd_um: float = Field(0.5, ge=0.0, le=20.0)
    min_spacing_um: float = Field(9.0, ge=0.0, le=200.0)


class CellsSpec(CellBand):
    """The primary band (fields inherited) and optional further bands, plus morphology."""

    extra_bands: list[CellBand] = Field(default_factory=list, max_length=7)
    brightness_photons_per_s: float = Field(
        1e7, ge=0.0, le=1e12,
        description="collected photons per second of a resting cell at the surface, gain 1",
    )
    brightness_sd_ln: float = Field(0.4, ge=0.0, le=2.0, description="expression gain spread")
    ellipticity_sd: float = Field(0.1, ge=0.0, le=0.5)
    nucleus_radius_fraction: float = Field(0.5, ge=0.0, le=0.9)
    nucleus_brightness: float = Field(0.5, ge=0.0, le=1.0)
    dendrites_enabled: bool = True
    dendrite_count: int = Field(2, ge=0, le=8)
    dendrite_length_um: float = Field(20.0, ge=0.0, le=200.0)
    dendrite_width_um: float = Field(1.5, ge=0.2, le=10.0)
    dendrite_brightness: float = Field(0.3, ge=0.0, le=1.0)

    @property
    def bands(self) -> list[CellBand]:
        """All bands, the primary one first; band index keys each band's cells."""
        primary = CellBand(**{k: getattr(self, k) for k in CellBand.model_fields})
        return [primary, *self.extra_bands]


# ----------------------------------------------------------------------------- vessels
class Vasomotion(Section):
    """Hemodynamics: slow vessel dilation d(t) = d0 (1 + a sin(2 pi f t + phi)) (docs/physics.md §7.4).

    Every chord through a vessel scales with its diameter, so the transmission under the
    vessels becomes T_v(x, t) = T_v(x) exp(-2 mu_a L(x) a sin(2 pi f t + phi)). The phase is
    keyed by the seed. Off by default: with it on, ``A·C + b·f`` no longer explains the movie
    under the vessels (the ground truth's ``vessel_dilation`` gives the factor).
    """

    enabled: bool = False
    amplitude_fraction: float = Field(0.03, ge=0.0, le=0.5, description="a: 2-5 % (docs/physics.md §7.4)")
    frequency_hz: float = Field(0.1, gt=0.0, le=5.0, description="f: 0.05-0.2 Hz vasomotion")


class VasculatureSpec(Section):
    """Branching vessels that absorb light: T_v = exp(-2 mu_a L) (docs/physics.md §2.5, §3)."""

    enabled: bool = True
    trunk_count: int = Field(3, ge=0, le=20)
    trunk_radius_um: float = Field(14.0, ge=1.0, le=200.0)
    depth_um: float = Field(120.0, ge=0.0, le=3000.0)
    branch_levels: int = Field(2, ge=0, le=5)
    absorption_per_um: float = Field(0.02, ge=0.0, le=1.0, description="blood mu_a")
    field_um: float = Field(
        96.0, gt=0.0, le=1e5,
        description="side of the tissue square (centred on the optical axis) the network is drawn "
        "over; a sensor that sees more widens it to its own field, a smaller one sees a crop",
    )
    vasomotion: Vasomotion = Field(default_factory=Vasomotion)


# ----------------------------------------------------------------------------- scope fields
class Falloff(Section):
    """LED illumination profile I(r) = 1 - (1 - edge_ratio)(r / edge_radius_um)^2 (docs/physics.md §2.6).

    r is the distance from the optical axis in tissue, so a smaller sensor window sees the
    centre of the same profile (the default radius is the generic scope's half field).
    """

    enabled: bool = False
    edge_ratio: float = Field(0.7, gt=0.0, le=1.0, description="I at edge_radius_um / I on axis")
    edge_radius_um: float = Field(48.0, gt=0.0, le=1e5, description="radius where I = edge_ratio")


class Vignette(Section):
    """Emission collection V(r) = 1 - (1 - corner_ratio)(r / corner_radius_um)^2 (docs/physics.md §2.6).

    r is the distance from the optical axis in tissue (default radius: the generic scope's
    field corner), so a smaller sensor window is a crop of the same vignette.
    """

    enabled: bool = False
    corner_ratio: float = Field(0.6, gt=0.0, le=1.0, description="V at corner_radius_um / V on axis")
    corner_radius_um: float = Field(67.9, gt=0.0, le=1e5, description="radius where V = corner_ratio")


class Glow(Section):
    """Additive stray-light glow: smooth Gaussian, 5-10 % of the centre background."""

    enabled: bool = True
    fraction_of_background: float = Field(0.07, ge=0.0, le=5.0)
    sigma_um: float = Field(38.4, gt=0.0, le=1e5, description="Gaussian sigma in tissue")
    center_offset_um: float = Field(
        7.2, ge=-1e5, le=1e5, description="distance of its centre from the optical axis (direction keyed)"
    )


class Bleaching(Section):
    """F(t) = F(0) [(1 - beta) + beta exp(-t / tau_b)] (docs/physics.md §7.3, Typical)."""

    enabled: bool = True
    fraction: float = Field(0.25, ge=0.0, le=1.0)
    tau_s: float = Field(600.0, gt=0.0, le=1e6)
    activity_dependence: float = Field(
        0.5, ge=0.0, le=10.0, description="extra bleaching rate per unit of mean dF/F"
    )


class IlluminationSpec(Section):
    falloff: Falloff = Falloff()
    vignette: Vignette = Vignette()
    glow: Glow = Glow()
    bleaching: Bleaching = Bleaching()


# ----------------------------------------------------------------------------- motion
class MotionSpec(Section):
    """Brain motion in object space (docs/physics.md §7.1, Head-fixed column by default)."""

    enabled: bool = True
    rigid_sd_um: float = Field(0.5, ge=0.0, le=50.0, description="jitter sd, per axis")
    rigid_tau_s: float = Field(0.5, gt=0.0, le=100.0, description="jitter correlation time")
    drift_um: float = Field(2.0, ge=0.0, le=200.0, description="slow drift over 30 min")
    jerk_rate_hz: float = Field(0.02, ge=0.0, le=10.0)
    jerk_amplitude_um: float = Field(2.0, ge=0.0, le=100.0)
    jerk_recovery_s: float = Field(0.5, gt=0.0, le=30.0)
    oscillation_amplitude_um: float = Field(0.3, ge=0.0, le=50.0)
    oscillation_hz: float = Field(5.0, ge=0.0, le=50.0)
    nonrigid_amplitude_um: float = Field(0.5, ge=0.0, le=50.0)
    nonrigid_length_um: float = Field(300.0, ge=10.0, le=1e5)
    max_displacement_um: float = Field(
        10.0, ge=0.0, le=500.0, description="hard bound of the rigid path (sets the render halo)"
    )
    axial_sd_um: float = Field(
        0.0, ge=0.0, le=20.0,
        description="focus drift: sd of the tissue's axial (z) motion, OU with rigid_tau_s; 0 = off",
    )


# ----------------------------------------------------------------------------- activity
INDICATORS: dict[str, dict[str, float]] = {
    # docs/physics.md §4: tau (s) -> ms; 1-AP dF/F; Hill constants; dCa per AP calibrated there.
    "GCaMP6f": {"tau_rise_ms": 30.0, "tau_decay_ms": 500.0, "dff_per_spike": 0.15, "kd_nm": 375.0,
                    "hill_n": 2.27, "dynamic_range": 52.0, "dca_per_spike_nm": 8.8},
    "GCaMP6s": {"tau_rise_ms": 100.0, "tau_decay_ms": 1500.0, "dff_per_spike": 0.25, "kd_nm": 144.0,
                    "hill_n": 2.90, "dynamic_range": 63.0, "dca_per_spike_nm": 5.6},
    "jGCaMP7f": {"tau_rise_ms": 30.0, "tau_decay_ms": 450.0, "dff_per_spike": 0.20, "kd_nm": 174.0,
                     "hill_n": 2.3, "dynamic_range": 40.0, "dca_per_spike_nm": 6.4},
    "jGCaMP8m": {"tau_rise_ms": 10.0, "tau_decay_ms": 250.0, "dff_per_spike": 0.30, "kd_nm": 108.0,
                     "hill_n": 1.9, "dynamic_range": 40.0, "dca_per_spike_nm": 10.8},
}
IndicatorName = Literal["GCaMP6f", "GCaMP6s", "jGCaMP7f", "jGCaMP8m"]


class ActivitySpec(Section):
    """Spikes and calcium (docs/physics.md §4-5; Moderate preset and GCaMP6f by default).

    Naming an ``indicator`` fills every kinetic field that the input leaves out from the
    indicator's row of docs/physics.md §4, so ``{"indicator": "GCaMP6s"}`` is a whole 6s model.
    """

    indicator: IndicatorName = "GCaMP6f"
    tau_rise_ms: float = Field(30.0, gt=0.0, le=5000.0)
    tau_decay_ms: float = Field(500.0, gt=0.0, le=60000.0)
    dff_per_spike: float = Field(0.15, ge=0.0, le=10.0)
    hill_enabled: bool = True
    kd_nm: float = Field(375.0, gt=0.0, le=1e5)
    hill_n: float = Field(2.27, gt=0.0, le=10.0)
    dynamic_range: float = Field(52.0, gt=1.0, le=1000.0)
    dca_per_spike_nm: float = Field(8.8, gt=0.0, le=1e4)
    ca_rest_nm: float = Field(50.0, gt=0.0, le=1e4)
    tau_jitter_cv: float = Field(0.1, ge=0.0, le=1.0)
    amplitude_sd_ln: float = Field(0.3, ge=0.0, le=2.0)
    active_fraction: float = Field(0.8, ge=0.0, le=1.0)
    up_dwell_s: float = Field(20.0, gt=0.0, le=1e5)
    down_dwell_s: float = Field(10.0, gt=0.0, le=1e5)
    rate_median_hz: float = Field(0.3, ge=0.0, le=200.0)
    rate_sd_ln: float = Field(1.0, ge=0.0, le=3.0)
    modulation_sd_ln: float = Field(0.5, ge=0.0, le=3.0)
    modulation_tau_s: float = Field(10.0, gt=0.0, le=1e4)
    burst_probability: float = Field(0.25, ge=0.0, le=1.0)
    burst_extra_spikes_mean: float = Field(2.5, ge=0.0, le=50.0)
    burst_isi_min_ms: float = Field(4.0, gt=0.0, le=1000.0)
    burst_isi_max_ms: float = Field(10.0, gt=0.0, le=1000.0)
    refractory_ms: float = Field(2.0, ge=0.0, le=1000.0)
    correlation: float = Field(0.0, ge=0.0, le=0.95, description="mean pairwise correlation knob")
    ensemble_count: int = Field(5, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_indicator(cls, data: Any) -> Any:
        if isinstance(data, dict) and "indicator" in data:
            row = INDICATORS.get(data["indicator"])
            if row is not None:
                data = {**row, **data}
        return data

    @model_validator(mode="after")
    def _check_orders(self) -> ActivitySpec:
        if self.tau_rise_ms >= self.tau_decay_ms:
            raise ValueError(
                f"activity.tau_rise_ms={self.tau_rise_ms} must be smaller than "
                f"activity.tau_decay_ms={self.tau_decay_ms}"
            )
        if self.burst_isi_min_ms > self.burst_isi_max_ms:
            raise ValueError(
                f"activity.burst_isi_min_ms={self.burst_isi_min_ms} must not exceed "
                f"activity.burst_isi_max_ms={self.burst_isi_max_ms}"
            )
        return self


# ----------------------------------------------------------------------------- recording
class RecordingSpec(Section):
    duration_s: float = Field(60.0, gt=0.0, le=86400.0)
    fps: float = Field(20.0, gt=0.0, le=1000.0)
    seed: int = Field(0, ge=0, le=2**63 - 1)

    @property
    def n_frames(self) -> int:
        # round() not int(): 0.1 s at 30 fps is 3 frames, not 2.999... -> 2
        return max(1, round(self.duration_s * self.fps))


# ----------------------------------------------------------------------------- Spec
class Spec(Section):
    """Everything that decides the bytes of a recording.

    Examples
    --------
    >>> from minisim import Spec
    >>> spec = Spec(recording={"duration_s": 2.0, "seed": 7})
    >>> spec.recording.n_frames
    40
    >>> Spec.model_validate_json(spec.model_dump_json()) == spec
    True
    """

    spec_version: Literal[1] = SPEC_VERSION
    optics: OpticsSpec = OpticsSpec()
    sensor: SensorSpec = SensorSpec()
    tissue: TissueSpec = TissueSpec()
    cells: CellsSpec = CellsSpec()
    vasculature: VasculatureSpec = VasculatureSpec()
    illumination: IlluminationSpec = IlluminationSpec()
    motion: MotionSpec = MotionSpec()
    activity: ActivitySpec = ActivitySpec()
    recording: RecordingSpec = RecordingSpec()

    @model_validator(mode="before")
    @classmethod
    def _legacy_field_geometry(cls, data: Any) -> Any:
        """Read a Spec written when the glow, falloff and vignette scaled with the sensor.

        Such JSON holds ``illumination.glow.width_fraction``/``center_offset_fraction``; their
        geometry is turned into the um fields it meant for that sensor, so old stores open.
        """
        if not isinstance(data, dict):
            return data
        ill = data.get("illumination")
        glow = ill.get("glow") if isinstance(ill, dict) else None
        if not isinstance(glow, dict) or not {"width_fraction", "center_offset_fraction"} & set(glow):
            return data

        def get(section: str, key: str, model: type[Section]) -> float:
            sec = data.get(section, {})
            value = sec.get(key) if isinstance(sec, dict) else getattr(sec, key, None)
            return model.model_fields[key].default if value is None else value

        d = get("sensor", "pixel_pitch_um", SensorSpec) / get("optics", "magnification", OpticsSpec)
        h, w = get("sensor", "height_px", SensorSpec) * d, get("sensor", "width_px", SensorSpec) * d
        glow = dict(glow)
        glow["sigma_um"] = glow.pop("width_fraction", 0.4) * max(h, w)
        glow["center_offset_um"] = glow.pop("center_offset_fraction", 0.15) * (h + w) / 4
        ill = {**ill, "glow": glow}
        for name, key, radius in (("falloff", "edge_radius_um", min(h, w) / 2),
                                  ("vignette", "corner_radius_um", math.hypot(h, w) / 2)):
            sec = ill.get(name)
            if isinstance(sec, dict) and key not in sec:
                ill[name] = {**sec, key: radius}
            elif sec is None:
                ill[name] = {key: radius}
        return {**data, "illumination": ill}

    # -- derived geometry (read-only conveniences, never stored)
    @property
    def pixel_size_um(self) -> float:
        """Side of one pixel in tissue: pixel pitch / magnification."""
        return self.sensor.pixel_pitch_um / self.optics.magnification

    @property
    def fov_um(self) -> tuple[float, float]:
        """Field of view (height, width) in um."""
        return (self.sensor.height_px * self.pixel_size_um, self.sensor.width_px * self.pixel_size_um)

    # -- file helpers
    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """JSON text of the Spec; also written to ``path`` when given."""
        text = self.model_dump_json(indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> Spec:
        """A Spec from a JSON file path or JSON text."""
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text()
        return cls.model_validate_json(text)

    def with_updates(self, updates: dict[str, Any]) -> Spec:
        """A new, validated Spec with dotted-path overrides, e.g. ``{"recording.fps": 30}``."""
        data = json.loads(self.model_dump_json())
        for dotted, value in updates.items():
            field_info(dotted)  # an unknown path fails here, naming the keys it could have been
            *parents, leaf = dotted.split(".")
            node = data
            for name in parents:
                node = node[name]
            node[leaf] = value
        return Spec.model_validate(data)


# ----------------------------------------------------------------------------- dotted paths
# The one home of "a Spec field by dotted path": with_updates, sweeps and the studio use these.
def field_info(path: str) -> FieldInfo:
    """The pydantic definition (type, default, bounds, description) of the field at ``path``.

    ``path`` is dotted from the Spec's top, e.g. ``"optics.na"``; a section is a field too
    (``"optics.field_curvature"``). Raises ``KeyError`` naming the unknown part and the valid
    keys at that level.

    Examples
    --------
    >>> field_info("recording.fps").default
    20.0
    >>> field_info("recording.fpz")
    Traceback (most recent call last):
    ...
    KeyError: "unknown Spec path 'recording.fpz': no field 'fpz' in 'recording' (valid: duration_s, fps, seed)"
    """
    model: Any = Spec
    info: FieldInfo | None = None
    done: list[str] = []
    for name in path.split("."):
        where = ".".join(done) or "the Spec"
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise KeyError(f"unknown Spec path {path!r}: {where!r} is a value, not a section")
        fields = model.model_fields
        if name not in fields:
            valid = ", ".join(fields)
            where = repr(where) if done else where
            raise KeyError(f"unknown Spec path {path!r}: no field {name!r} in {where} (valid: {valid})")
        info = fields[name]
        model = info.annotation
        done.append(name)
    assert info is not None
    return info


def field_bounds(path: str) -> dict[str, float]:
    """The numeric bounds of the field at ``path`` as ``{"ge"|"gt"|"le"|"lt": value}``.

    Examples
    --------
    >>> field_bounds("optics.na")
    {'gt': 0.01, 'le': 1.0}
    >>> field_bounds("motion.enabled")
    {}
    """
    out: dict[str, float] = {}
    for m in field_info(path).metadata:
        for kind in ("gt", "ge", "lt", "le"):
            v = getattr(m, kind, None)
            if v is not None:
                out[kind] = v
    return out


def get_path(spec: Spec, path: str) -> Any:
    """The value at dotted ``path`` of ``spec`` (a section comes back as its model).

    Examples
    --------
    >>> get_path(Spec(), "optics.field_curvature.radius_um")
    2500.0
    """
    field_info(path)
    node: Any = spec
    for name in path.split("."):
        node = getattr(node, name)
    return node
