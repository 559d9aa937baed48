"""The Spec is the whole configuration: validated, JSON round-trippable, units in names."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from minisim import Spec, presets
from minisim.rng import rng
from minisim.spec import field_bounds, field_info, get_path


def test_default_spec_is_the_generic_1p_scope():
    s = Spec()
    assert (s.optics.na, s.optics.magnification) == (0.45, 8.0)
    assert (s.sensor.width_px, s.sensor.height_px, s.sensor.pixel_pitch_um) == (256, 256, 3.0)
    assert s.pixel_size_um == pytest.approx(0.375)
    assert s.spec_version == 1


@pytest.mark.parametrize("name", presets.names())
def test_json_round_trip_for_every_preset(name):
    s = presets.get(name, "active")
    assert Spec.model_validate_json(s.model_dump_json()) == s
    assert Spec.from_json(s.to_json()) == s


def test_out_of_range_value_names_field_value_and_range():
    with pytest.raises(pydantic.ValidationError) as e:
        Spec(optics={"na": 1.7})
    text = str(e.value)
    assert "optics.na" in text and "1.7" in text and "less than or equal to 1" in text


def test_unknown_field_is_rejected_with_its_path():
    with pytest.raises(pydantic.ValidationError) as e:
        Spec(sensor={"width": 64})
    assert "sensor.width" in str(e.value) and "Extra inputs are not permitted" in str(e.value)


def test_cross_field_rules_name_both_fields():
    with pytest.raises(pydantic.ValidationError, match="tau_rise_ms"):
        Spec(activity={"tau_rise_ms": 900.0, "tau_decay_ms": 500.0})
    with pytest.raises(pydantic.ValidationError, match="offset_adu"):
        Spec(sensor={"bit_depth": 8, "offset_adu": 300})


def test_assignment_is_validated():
    s = Spec()
    with pytest.raises(pydantic.ValidationError, match="fps"):
        s.recording.fps = -1


def test_dotted_updates_make_a_new_validated_spec():
    s = Spec().with_updates({"recording.fps": 30, "cells.density_per_mm3": 1000})
    assert s.recording.fps == 30 and s.cells.density_per_mm3 == 1000
    with pytest.raises(KeyError, match="no field 'fpz'"):
        Spec().with_updates({"recording.fpz": 30})


def test_unknown_dotted_path_names_the_path_and_the_valid_keys():
    with pytest.raises(KeyError, match=r"'optics\.nah': no field 'nah' in 'optics' \(valid: na, "):
        field_info("optics.nah")
    with pytest.raises(KeyError, match=r"no field 'optix' in the Spec \(valid: spec_version, optics"):
        get_path(Spec(), "optix.na")
    with pytest.raises(KeyError, match=r"'recording\.fps' is a value, not a section"):
        Spec().with_updates({"recording.fps.hz": 1})
    with pytest.raises(KeyError, match=r"'cells\.extra_bands' is a value, not a section"):
        field_info("cells.extra_bands.0.depth_um")


def test_dotted_path_reads_values_types_and_bounds():
    s = Spec().with_updates({"optics.field_curvature.radius_um": 3000.0})
    assert get_path(s, "optics.field_curvature.radius_um") == 3000.0
    assert get_path(s, "optics.field_curvature") == s.optics.field_curvature
    assert field_info("recording.seed").annotation is int
    assert field_bounds("recording.fps") == {"gt": 0.0, "le": 1000.0}
    assert field_bounds("sensor.noise") == {}


def test_sweep_and_studio_walk_dotted_paths_with_the_spec_functions():
    """One home: both fail on an unknown path with the Spec's own message (they once disagreed)."""
    import ipywidgets  # noqa: F401  (the studio's widgets need it)

    from minisim import sweep
    from minisim.studio import _fields

    with pytest.raises(sweep.SweepError, match=r"no field 'nah' in 'optics' \(valid: na, "):
        sweep.load_sweep({"base": "generic_1p", "grid": {"optics.nah": [1.0]}})
    with pytest.raises(KeyError, match=r"no field 'nah' in 'optics' \(valid: na, "):
        _fields.make_widget("optics.nah", 1.0)
    assert _fields.get_value(Spec(), "optics.na") == 0.45


def test_indicator_fills_its_kinetics():
    a = Spec(activity={"indicator": "GCaMP6s"}).activity
    assert (a.tau_decay_ms, a.dff_per_spike) == (1500.0, 0.25)


def test_keyed_rng_is_stable_and_keys_do_not_collide():
    a = rng(5, "cells", 1).random(4)
    assert np.array_equal(a, rng(5, "cells", 1).random(4))
    assert not np.array_equal(a, rng(5, "cells", 1, 0).random(4))  # SeedSequence pads zeros
    assert not np.array_equal(rng(5, "cells", -1).random(4), rng(5, "cells", 1).random(4))
    with pytest.raises(KeyError, match="unknown RNG stream"):
        rng(5, "no-such-stream")
