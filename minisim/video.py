"""Video export: a Recording's movie as an 8-bit AVI, streamed in frame order.

This sits at the end of the flow (spec ← … ← render ← recording ← video) and takes arrays:
:func:`write_avi` exports a lazy movie (a dask array) with the Spec it was made from;
``simulate_video`` renders a Spec straight into it, ``Recording.to_video`` (and
``recording_to_video``) passes an existing (e.g. loaded) Recording's movie. Both compute one time-block of the dask movie at a time (the next block renders
while the current one is encoded), map it to 8 bit with :func:`to_uint8` and append the frames
one by one through imageio's pyav plugin, so memory stays flat however long the movie is.

Beside ``out.avi`` they write ``out.spec.json`` (the Spec, so the video can be re-simulated
bit for bit) and ``out.video.json`` (the 8-bit mapping, codec, fps, frame count, versions).
The AVI is written to a fresh ``out.avi.partial-<id>`` and renamed only when every frame is in,
after both companion files: a file named ``out.avi`` is always complete. One process writes a
path at a time (``out.avi.lock``), and ``overwrite=True`` replaces only a minisim video (an
``.avi`` with its ``.spec.json``), never another file (see :mod:`minisim._safe_io`).

The 8-bit mapping, with integer ``low`` and ``high`` ADU::

    uint8 = clip(floor((adu - low) * 255 / (high - low) + 1/2), 0, 255)

``mapping="percentile"`` (the default) takes ``low`` and ``high`` from the 0.5 and 99.5
percentiles of a deterministic preview of the movie (up to 64 evenly spaced frames, rendered
by the same render function, so the same Spec always gives the same window whatever the
chunking), rounded outwards to whole ADU: the recording's own signal range, so the video uses
the grey levels (a 12-bit movie spanning ~100-370 ADU would otherwise get ~15 of them).
``mapping="full"`` uses the sensor's whole range, ``low = 0`` and ``high = 2**bit_depth - 1``
(the identity for an 8-bit sensor; a tie at exactly 1/2 cannot occur there, because
``2 * adu * 255`` is even and ``high`` is odd). Both are stored in ``out.video.json``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _safe_io
from .spec import Spec

#: Layout version of the ``.video.json`` companion file.
VIDEO_FORMAT_VERSION = 1
#: Frames in the percentile preview (evenly spaced over the movie, first and last included).
PREVIEW_FRAMES = 64
#: Frames per time-block when ``simulate_video`` renders (``chunks`` overrides it): small blocks
#: keep the render's working memory low (peak RSS at 608 x 608 px: ~0.8 GB with 16, ~1.7 GB with 64)
#: and cost no speed.
VIDEO_FRAME_BLOCK = 16
MAPPINGS = ("full", "percentile")
MAPPING_FORMULA = "uint8 = clip(floor((adu - low_adu) * 255 / (high_adu - low_adu) + 1/2), 0, 255)"


@dataclass(frozen=True)
class VideoCodec:
    """One supported codec: the ffmpeg encoder, its pixel format and what it keeps."""

    name: str
    encoder: str
    pixel_format: str
    lossless: bool
    note: str
    #: encoder options (ffmpeg names) and a fixed JPEG quantiser (2 best .. 31 worst)
    options: tuple[tuple[str, str], ...] = ()
    qscale: int | None = None


#: The codecs an AVI can be written with; the keys are what ``codec=`` accepts.
CODECS: dict[str, VideoCodec] = {
    "ffv1": VideoCodec("ffv1", "ffv1", "gray", True,
                       "lossless and compact; ffmpeg-based readers (imageio, OpenCV, "
                       "Fiji with its FFmpeg plugin)"),
    "rawvideo": VideoCodec("rawvideo", "rawvideo", "gray", True,
                           "lossless, uncompressed 8-bit Y800; opens everywhere, ImageJ included"),
    "mjpeg": VideoCodec("mjpeg", "mjpeg", "yuvj420p", False,
                        "lossy, compact Motion JPEG; opens everywhere, ImageJ included",
                        qscale=3),
    "h264": VideoCodec("h264", "libx264", "yuv420p", False,
                       "lossy, the most compact; ffmpeg-based readers (no plain ImageJ); "
                       "yuv444p when a side is odd",
                       options=(("crf", "18"),)),
}


# --------------------------------------------------------------------------- the mapping
def _check_level(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
        raise ValueError(f"{name}={value!r} must be a whole number of ADU")
    return int(value)


def to_uint8(frames: np.ndarray, low: int, high: int) -> np.ndarray:
    """Map integer ADU frames to uint8: ``clip(floor((adu - low) * 255 / (high - low) + 1/2), 0, 255)``.

    ``low`` and ``high`` are whole ADU with ``0 <= low < high <= 65535``; values below ``low``
    become 0, values above ``high`` 255. Exact (integer arithmetic through a lookup table), so
    the same frames always give the same bytes.

    Examples
    --------
    >>> import numpy as np
    >>> from minisim.video import to_uint8
    >>> to_uint8(np.array([0, 8, 9, 2048, 4095], np.uint16), 0, 4095)
    array([  0,   0,   1, 128, 255], dtype=uint8)
    >>> to_uint8(np.array([90, 100, 150, 200, 250], np.uint16), 100, 200)
    array([  0,   0, 128, 255, 255], dtype=uint8)
    """
    low, high = _check_level("low", low), _check_level("high", high)
    if not 0 <= low < high <= 65535:
        raise ValueError(f"need 0 <= low < high <= 65535 ADU, got low={low}, high={high}")
    frames = np.asarray(frames)
    if frames.dtype.kind not in "ui":
        raise TypeError(f"to_uint8 needs integer ADU frames, got dtype {frames.dtype}")
    lut = _lut(low, high)
    if frames.dtype.kind == "i" or frames.dtype.itemsize > 2:
        frames = np.clip(frames, 0, 65535).astype(np.uint16)
    return lut[frames]


def _lut(low: int, high: int) -> np.ndarray:
    """uint8 for every uint16 value; floor(x + 1/2) as integer floor division."""
    d = high - low
    v = np.arange(65536, dtype=np.int64) - low
    return np.clip((2 * 255 * v + d) // (2 * d), 0, 255).astype(np.uint8)


def _preview_indices(n_frames: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_frames - 1, min(PREVIEW_FRAMES, n_frames)).round().astype(int))


def _own_render(movie, spec: Spec, rendered: bool) -> bool:
    """Whether ``movie`` is ``spec``'s render still to be computed (so frames can be rendered
    from the Spec in any blocks: the bytes never depend on them)."""
    spec_shape = (spec.recording.n_frames, spec.sensor.height_px, spec.sensor.width_px)
    return rendered and tuple(movie.shape) == spec_shape


class _Render:
    """``spec``'s movie still to be rendered, a window of frames at a time.

    :meth:`window` gives frames [t0, t1) as a dask array of their own, in blocks of ``sizes``
    (frame, height, width): the blocks of ``render.movie_array(spec, sizes)`` (the same render
    function on the same frames and tiles, so the same bytes) in a graph of this window's
    tiles only. Sliced out of the whole movie instead, a block's graph held every block of
    the recording, and dask's fusion of the slice into the render renamed each block's
    tasks, adding their names to dask's cache of key names (``dask.utils.key_split``, up to
    100,000 entries: ~19 a block at 608 x 608 px, ~85,000 over an hour, ~20 MB).

    :meth:`prepare` builds the trace segments a window reads, in the calling thread, before
    its blocks are computed (when the scheduler runs them in this process). Left to the
    render tasks, each segment (~26 MB at 608 x 608 px, V4 CA1) was built by whichever worker
    thread came first, in that thread's malloc arena, and the arenas' freed space grew with the
    number of segments built: the recording's length (docs/video.md, Memory)."""

    def __init__(self, spec: Spec, sizes: tuple[int, int, int], scheduler) -> None:
        self.spec_json = spec.model_dump_json()
        self.sizes = tuple(int(v) for v in sizes)
        self.shape = (spec.recording.n_frames, spec.sensor.height_px, spec.sensor.width_px)
        self.here = _runs_in_this_process(scheduler)

    def window(self, t0: int, t1: int):
        import dask.array as da

        size, n = self.sizes[0], self.shape[0]
        if not (0 <= t0 < t1 <= n and t0 % size == 0 and (t1 % size == 0 or t1 == n)):
            raise ValueError(f"frames [{t0}, {t1}) are not whole blocks of {size} frames")
        return da.map_blocks(
            _render_window_chunk, self.spec_json, self.sizes, self.shape, t0 // size,
            chunks=da.core.normalize_chunks(self.sizes, (t1 - t0, *self.shape[1:])),
            dtype=np.uint16, meta=np.empty((0, 0, 0), np.uint16),
        )

    def prepare(self, t0: int, t1: int) -> None:
        """Build (or find cached) the trace segments frames [t0, t1) read, in this thread."""
        if not self.here:
            return
        from . import render
        from .activity import SEGMENT_FRAMES

        world = render.get_world(self.spec_json)
        for seg in range(t0 // SEGMENT_FRAMES, -(-t1 // SEGMENT_FRAMES)):
            world.segment(seg)


def _runs_in_this_process(scheduler) -> bool:
    """Whether ``scheduler`` (as :func:`minisim._compute.compute` takes it) runs tasks in this
    process's threads: the threaded or the synchronous scheduler, named or the default one."""
    import dask.array as da
    from dask import local, threaded
    from dask.base import get_scheduler, named_schedulers

    if scheduler is not None and not (isinstance(scheduler, str) and scheduler in named_schedulers):
        return False  # a Client, or a scheduler's address
    try:
        get = get_scheduler(scheduler=scheduler, cls=da.Array)
    except (ValueError, RuntimeError):
        return False
    return get is threaded.get or get is local.get_sync


def _render_window_chunk(spec_json: str, sizes: tuple[int, ...], shape: tuple[int, ...],
                         first: int, block_id=None) -> np.ndarray:
    """Block ``block_id`` of a window whose first frame-block is block ``first`` of the movie."""
    from . import render

    i, j, k = block_id
    return render._render_chunk(spec_json, None, sizes, shape, block_id=(first + i, j, k))


def _preview(movie, spec: Spec, rendered: bool, idx: np.ndarray, scheduler) -> np.ndarray:
    """Frames ``idx`` of the movie, one computation per trace segment they fall in.

    A movie still to be rendered renders single frames (single-frame blocks of the same Spec
    are the same bytes and cost 64 frames, not 64 blocks) from a graph of those frames alone.
    Frames of one segment go together, so at most one segment's traces are built at a time,
    as when the blocks are streamed; the frames fill one array of the preview's size."""
    from . import render
    from ._compute import compute
    from .activity import SEGMENT_FRAMES

    own = None
    if _own_render(movie, spec, rendered):
        c = render.normalize_chunks(spec, {"frame": 1})
        own = _Render(spec, (1, c["height"], c["width"]), scheduler)
    out = np.empty((len(idx), *movie.shape[1:]), np.uint16 if own is not None else movie.dtype)
    for _, group in itertools.groupby(range(len(idx)), key=lambda i: int(idx[i]) // SEGMENT_FRAMES):
        group = list(group)
        if own is not None:
            own.prepare(int(idx[group[0]]), int(idx[group[-1]]) + 1)
            parts = compute(*(own.window(int(idx[i]), int(idx[i]) + 1) for i in group),
                            scheduler=scheduler, progress=False)
            for i, part in zip(group, parts):
                out[i] = part[0]
        else:
            (part,) = compute(movie[idx[group]], scheduler=scheduler, progress=False)
            out[group] = part
    return out


def _levels(movie, spec: Spec, rendered: bool, mapping: str, percentiles,
            scheduler) -> dict[str, Any]:
    bits = spec.sensor.bit_depth
    top = 2**bits - 1
    out: dict[str, Any] = {"kind": mapping, "bit_depth": bits, "formula": MAPPING_FORMULA}
    if mapping == "full":
        return {**out, "low_adu": 0, "high_adu": top}
    idx = _preview_indices(movie.shape[0])
    # in place: the preview is not used again, and a copy would double its memory (47 MB at
    # 608 x 608 px); the same partition of the same values, so the same percentiles
    p_low, p_high = np.percentile(_preview(movie, spec, rendered, idx, scheduler), percentiles,
                                  overwrite_input=True)
    low = int(np.clip(np.floor(p_low), 0, top - 1))
    high = int(np.clip(np.ceil(p_high), low + 1, top))
    return {**out, "low_adu": low, "high_adu": high, "percentiles": list(percentiles),
            "preview_frames": [int(i) for i in idx]}


# --------------------------------------------------------------------------- checks
def _check_codec(codec: str) -> VideoCodec:
    if codec not in CODECS:
        raise ValueError(f"codec={codec!r} is not supported; allowed: {', '.join(CODECS)}")
    import av

    c = CODECS[codec]
    try:
        av.codec.Codec(c.encoder, "w")
    except Exception as e:  # any failure means "this build cannot encode it"
        raise ValueError(
            f"codec={codec!r} needs the ffmpeg encoder {c.encoder!r}, which this PyAV build "
            f"lacks ({e}); use one of {', '.join(k for k in CODECS if k != codec)}"
        ) from e
    return c


def _check_options(mapping: str, percentiles) -> tuple[float, float]:
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping={mapping!r} is not supported; allowed: {', '.join(MAPPINGS)}")
    try:
        lo, hi = (float(p) for p in percentiles)
    except (TypeError, ValueError) as e:
        raise ValueError(f"percentiles={percentiles!r} must be two numbers (low, high)") from e
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentiles={percentiles!r} must satisfy 0 <= low < high <= 100")
    return lo, hi


def companion_paths(path: str | Path) -> dict[str, Path]:
    """The files an export writes: ``video`` (out.avi), ``spec`` and ``meta`` beside it."""
    path = Path(path)
    return {"video": path, "spec": path.with_suffix(".spec.json"),
            "meta": path.with_suffix(".video.json"),
            "partial": _safe_io.write_aside(path)}


def _check_path(path: str | Path, spec: Spec, overwrite: bool) -> dict[str, Path]:
    path = Path(path)
    if path.suffix.lower() != ".avi":
        raise ValueError(f"video path {str(path)!r} must end in .avi")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"folder {str(path.parent)!r} for the video does not exist; create it first"
        )
    paths = companion_paths(path)
    if path.is_dir():
        raise IsADirectoryError(f"video path {str(path)!r} is a folder")
    if overwrite:
        _safe_io.check_overwritable(path, "video")
    else:
        for key in ("video", "meta"):
            if paths[key].exists():
                raise FileExistsError(f"{paths[key]} exists; pass overwrite=True to replace it")
        # The spec file may be the very Spec this video was made from (`minisim video
        # exp.spec.json -o exp.avi`): keep going then, refuse a different one.
        if paths["spec"].exists():
            try:
                same = Spec.model_validate_json(paths["spec"].read_text()) == spec
            except Exception:  # noqa: BLE001 - unreadable or another kind of file
                same = False
            if not same:
                raise FileExistsError(
                    f"{paths['spec']} exists and holds another Spec; pass overwrite=True "
                    "to replace it"
                )
    return paths


def _write_text_atomic(path: Path, text: str) -> None:
    _safe_io.write_text_atomic(path, text)


# --------------------------------------------------------------------------- export
def simulate_video(spec: Spec | None, path: str | Path, *, codec: str = "ffv1", scheduler=None,
                   progress: bool = True, overwrite: bool = False,
                   chunks: dict[str, int] | None = None, mapping: str = "percentile",
                   percentiles: tuple[float, float] = (0.5, 99.5)) -> Path:
    """Render ``spec`` (default ``Spec()``) straight into an 8-bit AVI at ``path``.

    Parameters
    ----------
    spec
        What to render; ``out.spec.json`` beside the video holds it.
    path
        ``OUT.avi``; its folder must exist.
    codec
        ``"ffv1"`` (lossless, default), ``"rawvideo"`` (lossless, uncompressed),
        ``"mjpeg"`` or ``"h264"`` (lossy, compact); see :data:`CODECS`.
    scheduler
        A dask scheduler name, address or ``distributed.Client``; default the active one.
    progress
        Show a progress bar (tqdm) over frames.
    overwrite
        Replace an existing ``OUT.avi`` (and its companions) instead of raising
        ``FileExistsError``.
    chunks
        Dask blocks of the movie (e.g. ``{"frame": 32}``); default :data:`VIDEO_FRAME_BLOCK`
        frames, tiled as ``simulate`` tiles. Two time-blocks are alive at a time, so the frame
        chunk sets the memory. Never changes the bytes.
    mapping
        ``"percentile"`` (default: the movie's own range from a preview) or ``"full"`` (the
        sensor's range); see the module docstring.
    percentiles
        ``(low, high)`` percentiles for ``mapping="percentile"``.

    Returns
    -------
    Path
        The finished AVI.

    Examples
    --------
    >>> import tempfile, pathlib, minisim
    >>> spec = minisim.Spec(sensor={"width_px": 24, "height_px": 16},
    ...                     recording={"duration_s": 0.3, "fps": 10})
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.avi"
    >>> minisim.simulate_video(spec, out, progress=False).name
    'tiny.avi'
    >>> sorted(p.name for p in out.parent.iterdir())
    ['tiny.avi', 'tiny.spec.json', 'tiny.video.json']
    """
    from . import render
    from .resources import check_resources

    spec = Spec() if spec is None else spec
    if not isinstance(spec, Spec):
        raise TypeError(f"simulate_video() needs a minisim.Spec, got {type(spec).__name__}")
    # Every check before the (possibly slow) scene is built.
    vc = _check_codec(codec)
    pct = _check_options(mapping, percentiles)
    paths = _check_path(path, spec, overwrite)
    block = render.normalize_chunks(spec, {"frame": VIDEO_FRAME_BLOCK, **(chunks or {})})
    check_resources(spec)  # cells and memory, before the scene is built
    # The scene and the lazy movie only: the Recording's other ground truth is not needed
    # here, and its per-frame arrays would grow with the movie's length.
    world = render.build_world(spec, truth=False)  # C only: nothing else grows with the length
    render.remember_world(world)
    movie = render.movie_array(spec, block)
    del world
    windows = _Render(spec, (block["frame"], block["height"], block["width"]), scheduler)
    return _export(movie, spec, True, paths, vc, scheduler, progress, mapping, pct, windows)


def recording_to_video(rec, path: str | Path, *, codec: str = "ffv1", scheduler=None,
                       progress: bool = True, overwrite: bool = False,
                       chunks: dict[str, int] | None = None, mapping: str = "percentile",
                       percentiles: tuple[float, float] = (0.5, 99.5)) -> Path:
    """Export an existing (lazy, e.g. loaded) Recording as an 8-bit AVI at ``path``.

    Same options and companion files as :func:`simulate_video`; the Spec is ``rec.spec``.
    ``chunks`` re-blocks the movie's frames for the export (a stored movie is read in its own
    chunks otherwise). The same as ``rec.to_video(path, ...)``.
    """
    return write_avi(rec.dataset["movie"].data, rec.spec, path, rendered=rec.path is None,
                     codec=codec, scheduler=scheduler, progress=progress, overwrite=overwrite,
                     chunks=chunks, mapping=mapping, percentiles=percentiles)


def write_avi(movie, spec: Spec, path: str | Path, *, rendered: bool = False, codec: str = "ffv1",
              scheduler=None, progress: bool = True, overwrite: bool = False,
              chunks: dict[str, int] | None = None, mapping: str = "percentile",
              percentiles: tuple[float, float] = (0.5, 99.5)) -> Path:
    """Export a lazy movie (dask array (frame, height, width) of ADU) made from ``spec`` as an AVI.

    ``rendered`` says the movie is ``spec``'s render still to be computed (not read from a
    store): the percentile preview then renders single frames instead of whole blocks. The
    other options and the companion files are those of :func:`simulate_video`; ``chunks``
    re-blocks the movie for the export.
    """
    vc = _check_codec(codec)
    pct = _check_options(mapping, percentiles)
    paths = _check_path(path, spec, overwrite)
    if chunks:
        unknown = set(chunks) - {"frame", "height", "width"}
        if unknown:
            raise ValueError(f"chunks has unknown dims {sorted(unknown)}; allowed: "
                             "['frame', 'height', 'width']")
        axes = {"frame": 0, "height": 1, "width": 2}
        movie = movie.rechunk({axes[k]: v for k, v in chunks.items()})
    return _export(movie, spec, rendered, paths, vc, scheduler, progress, mapping, pct)


def _tune(writer, vc: VideoCodec) -> None:
    """Quality settings imageio has no argument for (its stream is reached as an attribute)."""
    stream = getattr(writer, "_video_stream", None)
    if stream is None:
        return
    cc = stream.codec_context
    if vc.options:
        cc.options = dict(vc.options)
    if vc.qscale is not None:
        cc.qmin = cc.qmax = vc.qscale


def _frame_blocks(movie) -> list[tuple[int, int]]:
    """(t0, t1) of each frame chunk of the dask movie."""
    bounds = np.cumsum((0, *movie.chunks[0]))
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _export(movie, spec: Spec, rendered: bool, paths: dict[str, Path], vc: VideoCodec, scheduler,
            progress: bool, mapping: str, percentiles: tuple[float, float],
            windows: _Render | None = None) -> Path:
    """Write ``movie`` a frame-block at a time; ``windows`` renders the blocks' frames from the
    Spec (``movie`` is then its render), else they are sliced out of ``movie``."""
    import imageio.v3 as iio

    from ._compute import compute
    from ._version import __version__, numba_version

    n_frames, height, width = movie.shape
    fps = float(spec.recording.fps)
    pixel_format = vc.pixel_format
    if vc.name == "h264" and (height % 2 or width % 2):
        pixel_format = "yuv444p"  # 4:2:0 needs even sides; the size is never changed
    levels = _levels(movie, spec, rendered, mapping, percentiles, scheduler)
    lut = _lut(levels["low_adu"], levels["high_adu"])
    meta = {
        "video_format_version": VIDEO_FORMAT_VERSION,
        "minisim_version": __version__,
        "numpy_version": np.__version__,
        "numba_version": numba_version(),
        "video": paths["video"].name,
        "spec_file": paths["spec"].name,
        "codec": vc.name,
        "encoder": vc.encoder,
        "pixel_format": pixel_format,
        "lossless": vc.lossless,
        "encoder_options": {**dict(vc.options),
                            **({"qscale": vc.qscale} if vc.qscale is not None else {})},
        "fps": fps,
        "frame_count": int(n_frames),
        "height_px": int(height),
        "width_px": int(width),
        "mapping": levels,
    }

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_frames, unit="frame", desc=f"{paths['video'].name} ({vc.name})")

    window = windows.window if windows is not None else (lambda t0, t1: movie[t0:t1])
    partial = paths["partial"]
    lock = _safe_io.exclusive_lock(paths["video"])
    lock.__enter__()  # one writer per path; released below, whatever happens
    try:
        # This thread computes one block on the dask scheduler while the block before is
        # mapped and encoded in a thread of its own: at most two time-blocks are alive, whatever
        # the movie's length. (The dask computations run from the calling thread, as the
        # preview's do: on the local threaded scheduler a computation started from another
        # thread gets a pool of its own, of Python's default size, 6 threads on 2 cores.)
        # The encoder thread ends before the writer closes (the pool's `with` is the inner one).
        with iio.imopen(partial, "w", plugin="pyav", container="avi") as writer, \
                concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="minisim-video") as pool:
            writer.init_video_stream(vc.encoder, fps=fps, pixel_format=pixel_format)
            _tune(writer, vc)

            def encode(block: np.ndarray) -> None:
                frames = lut[np.asarray(block)]
                for frame in frames:
                    writer.write_frame(frame, pixel_format="gray")
                if bar is not None:
                    bar.update(len(frames))

            encoding = None
            for t0, t1 in _frame_blocks(movie):
                if windows is not None:
                    windows.prepare(t0, t1)
                (block,) = compute(window(t0, t1), scheduler=scheduler, progress=False)
                if encoding is not None:
                    encoding.result()  # the block before is written (or its error raised here)
                encoding = pool.submit(encode, block)
                del block
            if encoding is not None:
                encoding.result()
        _write_text_atomic(paths["spec"], spec.model_dump_json(indent=2) + "\n")
        _write_text_atomic(paths["meta"], json.dumps(meta, indent=2) + "\n")
        os.replace(partial, paths["video"])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        lock.__exit__(None, None, None)
        if bar is not None:
            bar.close()
    return paths["video"]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``.video.json`` beside ``path`` (``out.avi`` or the json itself) as a dict."""
    path = Path(path)
    meta = path if path.name.endswith(".video.json") else companion_paths(path)["meta"]
    return json.loads(meta.read_text())
