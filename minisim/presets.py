"""Named Specs: three scopes on their tissue, and three activity levels.

Scopes (``scope(name)``): ``generic_1p`` (the library defaults, ``Spec()``),
``miniscope_v4_ca1`` (UCLA Miniscope V4 over a dense, thin CA1 pyramidal band through a GRIN
relay, milder vasculature) and ``miniscope_v4_cortex_l23`` (V4 over sparser L2/3 somata in a
thick band under thick pial vessels). The V4 optics and sensor are docs/physics.md §2.1 and §6:
NA 0.3, 2.9x, PYTHON480 608 x 608 window of 4.8 um pixels (1.655 um in tissue, 1 mm FOV),
8-bit output, 0.1 ADU/e-, field curvature R = 2500 um, falloff 0.7, vignette 0.6.

Activity (``activity(name)``): ``quiet``, ``moderate`` (the default) and ``active``, the
columns of docs/physics.md §5.

Difficulty tiers (``tier(name, spec)``, ``get(scope, activity, tier=...)``): ``easy``,
``typical`` and ``hard``, dotted Spec updates of the confounds a pipeline must get past
(motion, vessels, dendrites, brightness spread, density; ``easy`` also makes every cell
active and firing); docs/anatomy.md, "Presets and tiers".

Examples
--------
>>> from minisim import presets
>>> presets.names()
['generic_1p', 'miniscope_v4_ca1', 'miniscope_v4_cortex_l23']
>>> presets.scope("miniscope_v4_ca1").sensor.width_px
608
>>> presets.activity("active").rate_median_hz
1.0
"""

from __future__ import annotations

from typing import Any

from .spec import ActivitySpec, Spec

_V4_SCOPE: dict[str, Any] = {
    "optics": {
        "na": 0.3, "magnification": 2.9, "working_distance_um": 700.0, "tissue_gap_um": 550.0,
        "aberration_sigma_um": 1.0, "field_curvature": {"enabled": True, "radius_um": 2500.0},
    },
    "sensor": {
        "width_px": 608, "height_px": 608, "pixel_pitch_um": 4.8, "bit_depth": 8, "qe": 0.5,
        "read_noise_e": 8.0, "dark_current_e_per_s": 20.0, "full_well_e": 10000.0,
        "gain_adu_per_e": 0.1, "offset_adu": 5.0, "dsnu_adu": 0.5, "prnu_fraction": 0.01,
    },
    # the scope's fields in um from the optical axis, set for the full 608 x 608 px window
    # (1006.3 um): a smaller sensor window sees their centre, as a real sensor ROI would
    "illumination": {
        "falloff": {"enabled": True, "edge_ratio": 0.7, "edge_radius_um": 503.2},
        "vignette": {"enabled": True, "corner_ratio": 0.6, "corner_radius_um": 711.6},
        "glow": {"sigma_um": 402.5, "center_offset_um": 75.5},
    },
    # freely moving, docs/physics.md §7.1, calibrated to the ``typical`` tier (docs/anatomy.md,
    # "Presets and tiers"): a few um of rigid motion with rare jumps, little oscillation and
    # little non-rigid motion left after rigid registration
    "motion": {
        "rigid_sd_um": 1.0, "drift_um": 3.0, "jerk_rate_hz": 0.02, "jerk_amplitude_um": 4.0,
        "jerk_recovery_s": 0.5, "oscillation_amplitude_um": 0.5, "oscillation_hz": 5.0,
        "nonrigid_amplitude_um": 0.5, "nonrigid_length_um": 300.0, "max_displacement_um": 15.0,
    },
}

#: Round somata with faint dendrites and the ``typical`` tier's brightness spread (both V4 tissues).
_V4_CELLS_TYPICAL: dict[str, Any] = {"dendrite_brightness": 0.15, "brightness_sd_ln": 0.4}

_SCOPES: dict[str, dict[str, Any]] = {
    "generic_1p": {},
    "miniscope_v4_ca1": {
        **_V4_SCOPE,
        # focus 20 um below the band centre on axis: with R = 2500 um the focal surface rises
        # 51 um by the FOV edge, so the in-focus ring (|dz| <= 3 r_s) then covers ~48 % of the
        # band instead of 23 % (what an experimenter does with the electrowetting lens)
        "optics": {**_V4_SCOPE["optics"], "focus_offset_um": 20.0},
        "cells": {"density_per_mm3": 45000.0, "depth_um": 150.0, "band_thickness_um": 20.0,
                  "soma_radius_um": 5.0, "soma_radius_sd_um": 0.5, "min_spacing_um": 9.0,
                  "brightness_photons_per_s": 1.2e7, **_V4_CELLS_TYPICAL},
        "vasculature": {"trunk_count": 3, "trunk_radius_um": 14.0, "depth_um": 120.0,
                        "absorption_per_um": 0.015, "field_um": 1006.3},
        # calibrated: ~110 ADU at the FOV centre with cells, glow and dark (§6), and an
        # in-focus soma ~19 % of its local background with the typical tier's faint dendrites
        "tissue": {"neuropil": {"photons_per_um2_s": 12000.0}},
    },
    "miniscope_v4_cortex_l23": {
        **_V4_SCOPE,
        "cells": {"density_per_mm3": 8000.0, "depth_um": 150.0, "band_thickness_um": 100.0,
                  "soma_radius_um": 6.0, "soma_radius_sd_um": 0.7, "min_spacing_um": 13.0,
                  "brightness_photons_per_s": 1.1e7, **_V4_CELLS_TYPICAL},
        "vasculature": {"trunk_count": 2, "trunk_radius_um": 25.0, "depth_um": 80.0,
                        "absorption_per_um": 0.015, "field_um": 1006.3},
        # the thick band's out-of-focus somata add more haze than CA1's, so less neuropil
        # reaches the same ~100 ADU centre background
        "tissue": {"neuropil": {"photons_per_um2_s": 11000.0}},
    },
}

_ACTIVITY: dict[str, dict[str, float]] = {
    "quiet": {"rate_median_hz": 0.05, "rate_sd_ln": 1.0, "active_fraction": 0.60,
                  "burst_probability": 0.10, "burst_extra_spikes_mean": 1.5, "modulation_sd_ln": 0.3},
    "moderate": {"rate_median_hz": 0.3, "rate_sd_ln": 1.0, "active_fraction": 0.80,
                     "burst_probability": 0.25, "burst_extra_spikes_mean": 2.5, "modulation_sd_ln": 0.5},
    "active": {"rate_median_hz": 1.0, "rate_sd_ln": 0.8, "active_fraction": 0.95,
                   "burst_probability": 0.40, "burst_extra_spikes_mean": 4.0, "modulation_sd_ln": 0.7},
}

#: Labels the studio shows on its preset buttons.
SCOPE_LABELS = {
    "generic_1p": "Generic 1p scope",
    "miniscope_v4_ca1": "Miniscope V4 — CA1",
    "miniscope_v4_cortex_l23": "Miniscope V4 — cortex L2/3",
}
ACTIVITY_LABELS = {"quiet": "Quiet", "moderate": "Moderate", "active": "Active"}


def names() -> list[str]:
    """Names of the scope presets."""
    return list(_SCOPES)


def activity_names() -> list[str]:
    """Names of the activity presets."""
    return list(_ACTIVITY)


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    return ValueError(f"unknown {kind} preset {name!r}; choose one of {known}")


def scope(name: str) -> Spec:
    """The Spec of a scope preset (default activity: ``moderate``)."""
    if name not in _SCOPES:
        raise _unknown("scope", name, names())
    return Spec.model_validate(_SCOPES[name])


def activity(name: str) -> ActivitySpec:
    """The ActivitySpec of an activity preset (GCaMP6f kinetics)."""
    if name not in _ACTIVITY:
        raise _unknown("activity", name, activity_names())
    return ActivitySpec(**_ACTIVITY[name])


def get(scope_name: str = "generic_1p", activity_name: str = "moderate",
        tier: str | None = None) -> Spec:
    """A scope preset with an activity preset and, optionally, a difficulty tier.

    ``tier`` (``"easy"``, ``"typical"``, ``"hard"``; see :func:`tier`) applies that tier's
    dotted updates to the scope; None keeps the scope preset as it is.

    Examples
    --------
    >>> from minisim import presets
    >>> presets.get("miniscope_v4_ca1", "moderate", tier="hard").motion.jerk_rate_hz
    0.1
    """
    spec = scope(scope_name)
    spec = spec.model_copy(update={"activity": activity(activity_name)})
    return spec if tier is None else apply_tier(spec, tier)


# ----------------------------------------------------------------------------- difficulty tiers
class _Scale(float):
    """A tier value relative to the scope's own: its value times this factor."""


class _Add(int):
    """A tier value relative to the scope's own: its value plus this (at least 1)."""


#: The difficulty tiers: what each raises, and its dotted Spec updates. Plain values replace
#: the scope's; ``_Scale``/``_Add`` values are relative to the scope's own (densities, vessel
#: counts), so a tier means the same on a CA1 band and on cortex. docs/anatomy.md, "Presets and
#: tiers", gives the reasoning and the sources.
TIERS: dict[str, dict[str, Any]] = {
    "easy": {
        "raises": "nothing; lowers every confound: little rigid motion (no jerks, oscillation "
                  "or non-rigid motion), one faint vessel, sparser cells, even brightness, "
                  "hardly any dendrites, and every cell active, firing 3x the activity "
                  "preset's median rate with a narrow spread (no silent or near-silent cells "
                  "in a short recording)",
        "updates": {
            "motion.rigid_sd_um": 0.5, "motion.drift_um": 1.0, "motion.jerk_rate_hz": 0.0,
            "motion.jerk_amplitude_um": 0.0, "motion.oscillation_amplitude_um": 0.0,
            "motion.nonrigid_amplitude_um": 0.0, "motion.max_displacement_um": 5.0,
            "vasculature.trunk_count": _Add(-99), "vasculature.branch_levels": 1,
            "vasculature.absorption_per_um": 0.008,
            "cells.dendrite_brightness": 0.05, "cells.brightness_sd_ln": 0.25,
            "cells.density_per_mm3": _Scale(0.6),
            "activity.active_fraction": 1.0, "activity.rate_median_hz": _Scale(3.0),
            "activity.rate_sd_ln": 0.5,
        },
    },
    "typical": {
        "raises": "what published Miniscope recordings show: rigid motion of a few um with "
                  "occasional jumps, little non-rigid motion or oscillation after rigid "
                  "registration, vessels over ~10-20 % of the full field, round somata",
        "updates": {
            "motion.rigid_sd_um": 1.0, "motion.drift_um": 3.0, "motion.jerk_rate_hz": 0.02,
            "motion.jerk_amplitude_um": 4.0, "motion.jerk_recovery_s": 0.5,
            "motion.oscillation_amplitude_um": 0.5, "motion.nonrigid_amplitude_um": 0.5,
            "motion.max_displacement_um": 15.0,
            "vasculature.trunk_count": _Add(0), "vasculature.branch_levels": 2,
            "vasculature.absorption_per_um": 0.015,
            "cells.dendrite_brightness": 0.15, "cells.brightness_sd_ln": 0.4,
            "cells.density_per_mm3": _Scale(1.0),
        },
    },
    "hard": {
        "raises": "every confound: strong rigid motion with frequent large jumps, a 5 Hz "
                  "oscillation and non-rigid motion that rigid registration leaves behind, "
                  "more and darker vessels, denser cells with a wide brightness spread and "
                  "visible dendrites",
        "updates": {
            "motion.rigid_sd_um": 3.0, "motion.drift_um": 8.0, "motion.jerk_rate_hz": 0.1,
            "motion.jerk_amplitude_um": 8.0, "motion.jerk_recovery_s": 0.5,
            "motion.oscillation_amplitude_um": 2.0, "motion.nonrigid_amplitude_um": 2.0,
            "motion.max_displacement_um": 30.0,
            "vasculature.trunk_count": _Add(2), "vasculature.branch_levels": 3,
            "vasculature.absorption_per_um": 0.025,
            "cells.dendrite_brightness": 0.4, "cells.brightness_sd_ln": 0.7,
            "cells.density_per_mm3": _Scale(1.5),
        },
    },
}


def tier_names() -> list[str]:
    """Names of the difficulty tiers, easiest first."""
    return list(TIERS)


def tier(name: str, spec: Spec | None = None) -> dict[str, Any]:
    """The dotted Spec updates of difficulty tier ``name``, resolved against ``spec``.

    Relative entries (cell density scaled, vessel trunks added) take ``spec``'s own value
    (default ``Spec()``); the rest are plain values. ``TIERS[name]["raises"]`` says which
    confounds the tier raises.

    Examples
    --------
    >>> from minisim import presets
    >>> presets.tier_names()
    ['easy', 'typical', 'hard']
    >>> presets.tier("hard", presets.scope("miniscope_v4_ca1"))["vasculature.trunk_count"]
    5
    """
    if name not in TIERS:
        raise _unknown("tier", name, tier_names())
    base = Spec() if spec is None else spec
    out: dict[str, Any] = {}
    for path, value in TIERS[name]["updates"].items():
        if isinstance(value, (_Scale, _Add)):
            node: Any = base
            for part in path.split("."):
                node = getattr(node, part)
            value = float(node) * float(value) if isinstance(value, _Scale) else max(1, node + int(value))
        out[path] = value
    return out


def apply_tier(spec: Spec, name: str) -> Spec:
    """``spec`` with difficulty tier ``name`` applied (a new, validated Spec)."""
    return spec.with_updates(tier(name, spec))
