"""What a Generate will cost, measured on this machine: bytes on disk, seconds, memory.

:func:`measure_estimate` writes a short probe of the very Spec (its first ``probe_frames``
frames, full field, same format) to a temporary folder, times it and weighs it array by
array: arrays with a ``frame`` or ``spike`` dimension (the movie, C, dF/F, S, f, motion, ...)
grow with the duration and are scaled to the full frame count; the rest (footprints, positions,
background images, the Spec) are counted once. Recordings are prefix-stable, so the probe's
frames are the recording's own first frames.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..spec import Spec

#: Frames the probe writes (fewer when the recording is shorter).
PROBE_FRAMES = 40
_GROWING_DIMS = {"frame", "spike"}
_warmed: set[str] = set()


def _warm_up(fmt: str, tmp: Path) -> None:
    """Save a tiny recording once per process and format, so that one-off costs (imports,
    first compilations, codec set-up) are not timed as if every frame paid them."""
    if fmt in _warmed:
        return
    tiny = Spec(sensor={"width_px": 16, "height_px": 16, "noise_tile_px": 16},
                recording={"duration_s": 0.2, "fps": 10.0})
    if fmt == "zarr":
        from ..recording import simulate

        simulate(tiny).save(tmp / "warm.zarr", scheduler="threads")
    else:
        from ..video import simulate_video

        simulate_video(tiny, tmp / "warm.avi", progress=False, scheduler="threads")
    _warmed.add(fmt)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _array_dims(folder: Path) -> list[str]:
    meta = folder / "zarr.json"
    if not meta.is_file():
        return []
    m = json.loads(meta.read_text())
    dims = m.get("dimension_names") or m.get("attributes", {}).get("_ARRAY_DIMENSIONS") or []
    return [d for d in dims if d is not None]


def store_bytes_split(path: str | Path) -> tuple[int, int]:
    """``(growing, fixed)`` bytes of a zarr store: arrays along frame/spike, and the rest."""
    path = Path(path)
    growing = 0
    for meta in path.rglob("zarr.json"):
        folder = meta.parent
        if folder != path and _GROWING_DIMS & set(_array_dims(folder)):
            growing += sum(p.stat().st_size for p in folder.iterdir() if p.is_file()
                           and p.name != "zarr.json") + sum(
                _dir_bytes(d) for d in folder.iterdir() if d.is_dir())
    return growing, _dir_bytes(path) - growing


def _probe_spec(spec: Spec, n: int) -> Spec:
    return spec.with_updates({"recording.duration_s": n / spec.recording.fps})


def measure_estimate(spec: Spec, fmt: str = "zarr", probe_frames: int = PROBE_FRAMES,
                     workdir: str | Path | None = None) -> dict[str, Any]:
    """Measure a short save of ``spec`` and scale it to the full recording.

    Returns ``bytes`` (the estimated size on disk), ``seconds`` (fixed cost of the probe's
    scene plus its per-frame speed times the frames), ``probe_frames``, ``bytes_per_frame``,
    ``fixed_bytes``, ``probe_seconds``, ``rss_bytes`` (this process's peak resident memory
    after the probe) and ``available_bytes`` (memory free on the machine).
    """
    if fmt not in ("zarr", "avi"):
        raise ValueError(f"format={fmt!r} is not supported; allowed: zarr, avi")
    n_full = spec.recording.n_frames
    n = max(1, min(int(probe_frames), n_full))
    probe = _probe_spec(spec, n)
    n = probe.recording.n_frames
    tmp = Path(tempfile.mkdtemp(prefix="minisim-estimate-", dir=workdir))
    try:
        _warm_up(fmt, tmp)
        t0 = time.perf_counter()
        if fmt == "zarr":
            from ..recording import simulate

            rec = simulate(probe)
            t1 = time.perf_counter()
            rec.save(tmp / "probe.zarr", scheduler="threads")
            t2 = time.perf_counter()
            growing, fixed = store_bytes_split(tmp / "probe.zarr")
        else:
            from ..render import build_world
            from ..video import simulate_video

            build_world(probe, truth=False)  # timed apart: the scene is built once, not per frame
            t1 = time.perf_counter()
            simulate_video(probe, tmp / "probe.avi", progress=False, scheduler="threads")
            t2 = time.perf_counter() - (t1 - t0)
            growing = (tmp / "probe.avi").stat().st_size
            fixed = sum(p.stat().st_size for p in tmp.iterdir()) - growing
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_frame = growing / n
    seconds = (t1 - t0) + (t2 - t1) * n_full / n
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = float("nan")
    return {"bytes": float(fixed + per_frame * n_full), "seconds": float(seconds),
            "probe_frames": n, "bytes_per_frame": float(per_frame), "fixed_bytes": float(fixed),
            "fixed_seconds": float(t1 - t0), "seconds_per_frame": float((t2 - t1) / n),
            "probe_seconds": float(t2 - t0), "rss_bytes": float(rss),
            "available_bytes": float(avail)}


def scale_estimate(measured: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """A :func:`measure_estimate` result for another frame count (same Spec otherwise)."""
    return {**measured,
            "bytes": measured["fixed_bytes"] + measured["bytes_per_frame"] * n_frames,
            "seconds": measured["fixed_seconds"] + measured["seconds_per_frame"] * n_frames}
