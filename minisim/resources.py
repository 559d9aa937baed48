"""What a request will need, estimated before any per-frame or per-cell work (fail fast).

:func:`resource_plan` says how many cells a Spec places, how many frames it has and which arrays a
process holds whole while simulating, saving or exporting it; :func:`check_resources` and
:func:`check_disk` refuse, with the fields and figures named, what cannot fit. ``simulate``,
``Recording.save``, ``simulate_video`` and the CLI call them first (docs/store.md, "Fail fast").
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from . import render
from .activity import SEGMENT_FRAMES
from .motion import halo_um
from .spec import Spec

#: More cells than this in (or shedding light into) one field is refused before placement.
MAX_UNITS = 200_000
#: Share of the available memory a recording's eager arrays may take.
MEMORY_SHARE = 0.8


class ResourceError(ValueError):
    """A valid request that cannot fit: too many cells, or more memory than is available."""


def resource_plan(spec: Spec) -> dict:
    """What simulating ``spec`` will hold in this process and write to disk, estimated up front.

    Returns ``units`` (expected cells placed: in the field and in the margin whose light reaches
    it), ``frames``, ``arrays`` (name -> bytes of every array that grows with the cells or the
    frames and that this process holds whole; lazy ones are not counted) and ``movie_bytes``
    (the uncompressed movie). It reads what the World keeps from :mod:`minisim.render`: the
    traces of the ``WORLD_SEGMENTS`` segments it keeps (docs/segments.md). Keep it in step with
    :func:`minisim.recording.build_dataset`: it is the one place that knows what a recording holds.
    """
    from .scene import light_reach_um
    from .scene.cells import expected_count

    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    m = int(np.ceil(halo_um(spec) / d)) + 2 if spec.motion.enabled else 0
    reach = light_reach_um(spec)
    area_mm2 = ((H - 1 + 2 * m) * d + 2 * reach) * ((W - 1 + 2 * m) * d + 2 * reach) * 1e-6
    units = expected_count(spec, area_mm2)
    T = spec.recording.n_frames
    # traces a segment at a time: C, dF/F and S of the segments a World keeps (9 bytes a unit
    # and frame; C holds the bleaching), one of them in the making with its bleaching (4 more)
    held = min(T, render.WORLD_SEGMENTS * SEGMENT_FRAMES)
    arrays = {f"traces of {render.WORLD_SEGMENTS} segments (units x {held} frames)": 10.0 * units * held}
    arrays["per-unit truth (position, kinetics, metrics)"] = 96.0 * units
    arrays["scene maps (padded frame, float32)"] = 8 * 4.0 * (H + 2 * m) * (W + 2 * m)
    return {"units": units, "frames": T, "area_mm2": area_mm2, "arrays": arrays,
            "total_bytes": float(sum(arrays.values())), "movie_bytes": 2.0 * T * H * W}


#: The movie compresses ~2x (Blosc LZ4 behind a byte shuffle, store._compressors, on a noisy
#: uint16 V4 movie; a darker or quieter one more): a store needs at least this share of its
#: uncompressed size on disk.
MIN_STORE_SHARE = 0.25


def check_disk(spec: Spec, folder: str | Path, movie_bytes: float | None = None) -> None:
    """Refuse a store of ``spec`` in ``folder`` when the disk cannot hold it (named figures)."""
    movie_bytes = resource_plan(spec)["movie_bytes"] if movie_bytes is None else movie_bytes
    free = shutil.disk_usage(folder).free
    if MIN_STORE_SHARE * movie_bytes > free:
        raise ResourceError(
            f"recording.duration_s={spec.recording.duration_s:g} x recording.fps="
            f"{spec.recording.fps:g} = {spec.recording.n_frames:,} frames of "
            f"{spec.sensor.height_px} x {spec.sensor.width_px} px: the movie is "
            f"{movie_bytes / 1e9:,.1f} GB uncompressed and its store needs at least "
            f"{MIN_STORE_SHARE * movie_bytes / 1e9:,.1f} GB, but {folder} has "
            f"{free / 1e9:,.1f} GB free"
        )


def check_resources(spec: Spec, available_bytes: float | None = None,
                    out_folder: str | Path | None = None) -> dict:
    """Refuse, before any per-frame or per-cell work, a ``spec`` that cannot fit.

    Raises :class:`ResourceError` naming the fields and the figures when the expected cells
    exceed :data:`MAX_UNITS`, when the arrays of :func:`resource_plan` exceed
    :data:`MEMORY_SHARE` of ``available_bytes`` (default: the memory available now, psutil), or
    (with ``out_folder``) when the store cannot fit on that disk. Returns the plan.
    """
    plan = resource_plan(spec)
    if plan["units"] > MAX_UNITS:
        bands = "; ".join(f"cells.bands[{i}]: density_per_mm3={b.density_per_mm3:g}, "
                          f"band_thickness_um={b.band_thickness_um:g}"
                          for i, b in enumerate(spec.cells.bands))
        raise ResourceError(
            f"about {plan['units']:,.0f} cells would be placed ({bands}; over "
            f"{plan['area_mm2']:.2f} mm^2: the field of view and the margin whose light reaches it), "
            f"more than minisim simulates in one field ({MAX_UNITS:,}); lower the density or "
            "the band thickness"
        )
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    if plan["total_bytes"] > MEMORY_SHARE * available_bytes:
        parts = ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in
                          sorted(plan["arrays"].items(), key=lambda kv: -kv[1]) if v >= 1e6)
        raise ResourceError(
            f"recording.duration_s={spec.recording.duration_s:g} x recording.fps="
            f"{spec.recording.fps:g} = {plan['frames']:,} frames of about {plan['units']:,.0f} "
            f"cells would hold {plan['total_bytes'] / 1e9:.1f} GB in this process ({parts}), "
            f"more than {MEMORY_SHARE:.0%} of the {available_bytes / 1e9:.1f} GB of memory "
            "available; shorten the recording, lower the frame rate or the cell density"
        )
    if out_folder is not None:
        check_disk(spec, out_folder, plan["movie_bytes"])
    return plan
