"""What Panel 1's redraws keep between them, so a knob change redoes only what it changes.

A redraw needs a World for the preview window (the scene: cells, footprints, fields; and the
units' activity), the side view, and the readout's detectable count. They depend on different
parts of the Spec:

* the **scene** on everything but :data:`SCENE_FREE`: the activity, the duration, the sensor's
  conversion of electrons to ADU and its noise, the motion's time course (not its bounds),
  bleaching, vasomotion and the neuropil's time course. A change of those alone keeps the
  scene (the costly part: its footprints) and wraps a new World around it;
* the **side view** on the scene's part of the Spec (it draws cells, vessels and focus);
* the **detectable count** on the whole Spec (it reads the rendered movie), less the duration.

Reusing a scene is only honest if the scene really ignores those fields:
``tests/test_studio.py::test_scene_free_fields_keep_the_scene_and_the_preview_bytes`` renders
the preview on a kept scene and on a fresh one for a change of each of them and compares bytes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..render import World, build_world
from ..spec import Spec

#: Dotted paths (a section stands for all its fields) that the static scene never reads.
SCENE_FREE = (
    "activity",
    "recording.duration_s",
    "illumination.bleaching",
    "vasculature.vasomotion",
    "tissue.neuropil.fluctuation_fraction",
    "tissue.neuropil.tau_s",
    "sensor.bit_depth",
    "sensor.read_noise_e",
    "sensor.dark_current_e_per_s",
    "sensor.full_well_e",
    "sensor.gain_adu_per_e",
    "sensor.offset_adu",
    "sensor.dsnu_adu",
    "sensor.prnu_fraction",
    "sensor.hot_pixel_fraction",
    "sensor.hot_pixel_dark_e_per_s",
    "sensor.noise",
    "sensor.noise_tile_px",
    "sensor.exact_poisson_below_e",
    # the motion's time course; enabled, max_displacement_um, nonrigid_amplitude_um and
    # axial_sd_um set the scene's margin and focus-drift footprints
    "motion.rigid_sd_um",
    "motion.rigid_tau_s",
    "motion.drift_um",
    "motion.jerk_rate_hz",
    "motion.jerk_amplitude_um",
    "motion.jerk_recovery_s",
    "motion.oscillation_amplitude_um",
    "motion.oscillation_hz",
    "motion.nonrigid_length_um",
)


def scene_key(spec: Spec) -> str:
    """The part of ``spec`` its scene depends on, as text (equal keys: the same scene)."""
    d = spec.model_dump(mode="json")
    for path in SCENE_FREE:
        *parents, name = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node.pop(name)
    return json.dumps(d, sort_keys=True)


def count_key(spec: Spec, window: tuple[int, int, int, int], n_world: int) -> str:
    """What the detectable count depends on: the Spec less its duration, the window, the prefix."""
    rest = spec.model_dump_json(exclude={"recording": {"duration_s"}})
    return f"{rest}|{window}|{n_world}"


def _remember(cache: OrderedDict, key, value, size: int):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
    return value


class PreviewCache:
    """Worlds, scenes, side views and detectable counts of recent redraws (a few of each).

    ``scenes_built`` and ``counts_made`` count the scenes built and the counts kept (tests
    read them).
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._worlds: OrderedDict = OrderedDict()
        self._scenes: OrderedDict = OrderedDict()
        self._side: OrderedDict = OrderedDict()
        self._counts: OrderedDict = OrderedDict()
        self.scenes_built = 0
        self.counts_made = 0

    def world(self, spec: Spec, window: tuple[int, int, int, int], n_frames: int) -> World:
        """The World of ``spec`` for ``window`` serving its first ``n_frames`` frames.

        Its scene is a recent one when only :data:`SCENE_FREE` fields changed since.
        """
        key = (spec.model_dump_json(), window, n_frames)
        got = self._worlds.get(key)
        if got is not None:
            self._worlds.move_to_end(key)
            return got
        skey = (scene_key(spec), window)
        scene = self._scenes.get(skey)
        if scene is None:
            world = build_world(spec, window, n_frames=n_frames)
            self.scenes_built += 1
            _remember(self._scenes, skey, world.scene, self.size)
        else:
            self._scenes.move_to_end(skey)
            world = World(spec, scene, n_frames)
        return _remember(self._worlds, key, world, self.size)

    def side_view(self, spec: Spec, make: Callable[[Spec], Any]) -> Any:
        """``make(spec)`` (the side view's picture), kept per scene."""
        key = scene_key(spec)
        if key not in self._side:
            _remember(self._side, key, make(spec), self.size)
        self._side.move_to_end(key)
        return self._side[key]

    def count(self, key: str) -> tuple[int, int] | None:
        """A detectable count kept under ``key`` (:func:`count_key`), or None."""
        return self._counts.get(key)

    def keep_count(self, key: str, value: tuple[int, int]) -> None:
        self.counts_made += 1
        _remember(self._counts, key, value, 8)
