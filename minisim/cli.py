"""Command line: ``minisim simulate|spec|video|sweep|studio`` and ``minisim-notebooks list|copy``.

Every command that makes data takes a Spec (a JSON file) or a preset name, writes with a
progress bar, and never overwrites unless asked (``--overwrite``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .spec import Spec

#: What ``minisim simulate`` and ``minisim video`` make when given neither a Spec nor a preset:
#: a Miniscope V4 over CA1 for 30 s (608 x 608 px over ~1 mm: hundreds of cells in view, dozens
#: detectable; about a minute on 2 cores). ``minisim spec`` still prints the library's ``Spec()``.
DEFAULT_JOB = {"preset": "miniscope_v4_ca1", "duration_s": 30.0}


def default_spec() -> Spec:
    """The Spec of the main job, ``minisim simulate -o recording.zarr`` (:data:`DEFAULT_JOB`)."""
    from . import presets

    return presets.scope(DEFAULT_JOB["preset"]).with_updates(
        {"recording.duration_s": DEFAULT_JOB["duration_s"]})


def _spec_from_args(args, main_job: bool = False) -> Spec:
    from . import presets

    if getattr(args, "spec", None) and getattr(args, "preset", None):
        raise SystemExit("give either SPEC.json or --preset, not both")
    if getattr(args, "spec", None):
        spec = Spec.from_json(Path(args.spec))
    elif getattr(args, "preset", None):
        spec = presets.scope(args.preset)
    else:
        spec = default_spec() if main_job else Spec()
    if getattr(args, "activity", None):
        spec = spec.model_copy(update={"activity": presets.activity(args.activity)})
    updates = {}
    if getattr(args, "duration_s", None) is not None:
        updates["recording.duration_s"] = args.duration_s
    if getattr(args, "seed", None) is not None:
        updates["recording.seed"] = args.seed
    if getattr(args, "fps", None) is not None:
        updates["recording.fps"] = args.fps
    return spec.with_updates(updates) if updates else spec


def _scheduler(name: str | None):
    """threads | processes | synchronous | a scheduler address (tcp://host:port).

    Called before any work, so a bad name or an unreachable address is reported at once.
    """
    if name in (None, "threads"):
        return "threads"
    if name in ("processes", "synchronous", "sync"):
        return name
    if "://" not in name and ":" not in name:
        raise ValueError(f"--scheduler {name!r} is not a scheduler: allowed threads, processes, "
                         "synchronous or a dask scheduler address such as tcp://host:8786")
    from distributed import Client

    try:
        return Client(name, timeout="10s")
    except OSError as e:
        raise OSError(f"--scheduler {name!r}: no dask scheduler answers there ({e})") from None


def _positive(flag: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} {value} must be a whole number >= 1")
    return value


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    from . import presets

    p.add_argument("spec", nargs="?", help="a Spec as JSON (default: simulate and video make a "
                   "Miniscope V4 over CA1 for 30 s; spec prints the library's Spec())")
    p.add_argument("--preset", choices=presets.names(), help="start from a scope preset")
    p.add_argument("--activity", choices=presets.activity_names(), help="an activity preset")
    p.add_argument("--duration-s", type=float, dest="duration_s")
    p.add_argument("--fps", type=float)
    p.add_argument("--seed", type=int)


def cmd_simulate(args) -> int:
    from .recording import _check_target, check_resources, simulate

    spec = _spec_from_args(args, main_job=True)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    # every check before the (possibly slow) scene is built
    chunks = {k: v for k, v in (("frame", _positive("--chunk-frames", args.chunk_frames)),
                                ("height", _positive("--chunk-px", args.chunk_px)),
                                ("width", args.chunk_px)) if v is not None}
    _check_target(out, args.overwrite)
    check_resources(spec, out_folder=next(p for p in out.absolute().parents if p.exists()))
    scheduler = _scheduler(args.scheduler)
    t0 = time.perf_counter()
    rec = simulate(spec, chunks=chunks or None)
    print(f"simulating {rec.dataset.sizes['frame']} frames of "
          f"{spec.sensor.height_px} x {spec.sensor.width_px} px -> {out}")
    saved = rec.save(out, overwrite=args.overwrite, scheduler=scheduler,
                     progress=not args.quiet)
    dt = time.perf_counter() - t0
    n = saved.dataset.sizes["frame"]
    print(saved.summary())
    print(f"  wrote in {dt:.1f} s ({n / dt:.0f} frames/s)")
    print("open it in Python:")
    print(f"  import minisim; rec = minisim.Recording.load({str(out)!r})")
    print("  rec.movie, rec.dataset['A'], rec.dataset['C'], rec.dataset['detectable']  # lazy")
    return 0


def cmd_spec(args) -> int:
    if args.from_store:
        from .recording import spec_from_store

        spec = spec_from_store(args.from_store)
    else:
        spec = _spec_from_args(args)
    print(spec.to_json())
    return 0


def cmd_video(args) -> int:
    from .recording import check_resources
    from .video import simulate_video

    spec = _spec_from_args(args, main_job=True)
    folder = Path(args.output).parent
    check_resources(spec, out_folder=folder if folder.is_dir() else None)
    simulate_video(spec, args.output, codec=args.codec, scheduler=_scheduler(args.scheduler),
                   progress=not args.quiet, overwrite=args.overwrite, mapping=args.mapping)
    out = Path(args.output)
    print(f"wrote {out}, {out.with_suffix('.spec.json')} and {out.with_suffix('.video.json')}")
    return 0


def cmd_studio(args) -> int:
    from .studio.serve import serve

    try:
        return serve(args.folder, args.port, not args.no_browser)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_sweep(args) -> int:
    from .sweep import run

    _positive("--workers", args.workers)
    m = run(args.sweep, scheduler=args.scheduler, workers=args.workers, progress=not args.quiet,
            whole_below_mb=args.whole_below_mb)
    return 1 if (m["status"] == "failed").any() else 0


def cmd_verify(args) -> int:
    from .store import verify

    report = verify(args.store, progress=not args.quiet)
    print(report)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(prog="minisim", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"minisim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="render a recording into a zarr store (default: a "
                       "Miniscope V4 over CA1, 30 s)")
    _add_spec_args(s)
    s.add_argument("-o", "--output", required=True, help="OUT.zarr")
    s.add_argument("--scheduler", default="threads",
                   help="threads (default) | processes | a dask scheduler address")
    s.add_argument("--chunk-frames", type=int, help="frames per block (never changes the bytes)")
    s.add_argument("--chunk-px", type=int, help="tile side in px (never changes the bytes)")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("spec", help="print a Spec as JSON to start from")
    _add_spec_args(s)
    s.add_argument("--from", dest="from_store", metavar="STORE.zarr",
                   help="the Spec embedded in a saved recording")
    s.set_defaults(func=cmd_spec)

    s = sub.add_parser("video", help="render a recording straight into an AVI")
    _add_spec_args(s)
    s.add_argument("-o", "--output", required=True, help="OUT.avi")
    s.add_argument("--codec", default="ffv1", choices=["ffv1", "rawvideo", "mjpeg", "h264"],
                   help="ffv1 (lossless, default) | rawvideo (lossless) | mjpeg | h264")
    s.add_argument("--mapping", default="percentile", choices=["full", "percentile"],
                   help="bit depth -> 8 bit: a 0.5-99.5 %% percentile window from a preview of the "
                        "movie (default) or the sensor's full range (see docs/video.md)")
    s.add_argument("--scheduler", default="threads")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_video)

    s = sub.add_parser("studio", help="serve the studio as an app in the browser (Voila)")
    from .studio.serve import add_arguments

    add_arguments(s)
    s.set_defaults(func=cmd_studio)

    s = sub.add_parser("sweep", help="render a dataset of recordings on a dask cluster")
    s.add_argument("sweep", help="SWEEP.yaml or .json")
    s.add_argument("--scheduler", default="local", help="local (default) | ADDRESS | slurm | pbs")
    s.add_argument("--workers", type=int, default=None, help="workers (jobs on slurm/pbs); default 2")
    s.add_argument("--whole-below-mb", type=float, default=256.0,
                   help="recordings with a smaller movie run whole on one worker; larger ones are spread")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("verify", help="read every chunk of a store back: exit 0 only when intact")
    s.add_argument("store", help="STORE.zarr")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    from ._safe_io import TargetLockedError
    from .store import IncompleteRecordingError, RecordingFormatError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError, TargetLockedError, IncompleteRecordingError,
            RecordingFormatError) as e:
        # pydantic's ValidationError is a ValueError: it names the field, value and range;
        # OSError covers an existing output, a missing folder, a full disk
        print(f"error: {e}", file=sys.stderr)
        return 2


def notebooks_main(argv: list[str] | None = None) -> int:
    from . import notebooks

    p = argparse.ArgumentParser(prog="minisim-notebooks",
                                description="list or copy the notebooks shipped with minisim")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the shipped notebooks")
    c = sub.add_parser("copy", help="copy one to ./minisim-notebooks/NAME (or DEST)")
    c.add_argument("name")
    c.add_argument("dest", nargs="?", default=None)
    c.add_argument("--force", action="store_true", help="replace an existing copy")
    args = p.parse_args(argv)
    try:
        if args.command == "list":
            for name, desc in notebooks.list_notebooks().items():
                print(f"{name:18s} {desc}")
            return 0
        dest = notebooks.copy_notebook(args.name, args.dest, force=args.force)
        print(f"copied {args.name} to {dest}")
        return 0
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
