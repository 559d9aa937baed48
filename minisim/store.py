"""The zarr v3 store of a Recording: layout, completeness, format versions, reading and writing.

A store is one zarr v3 group. Its root attrs hold the Spec (JSON text), the versions
(:func:`versions`) and ``complete``, which is written last, after every chunk: an interrupted
save leaves a store that :func:`open_dataset` refuses as incomplete (unless asked to open it
anyway), never a silently short movie.

Format 2 (this one) verifies itself: every chunk of every array ends in a crc32c checksum (zarr
v3's ``crc32c`` codec after the compressor), so a damaged or truncated chunk fails to decode,
and the completion marker comes with ``chunks_written``, per array the chunks the save wrote (the
all-zero footprint chunks it skips by design are not in it). :func:`open_dataset` then notices a
missing array at once, and :func:`verify` finds every missing, truncated or damaged chunk.
Format 1 stores (no checksums, no chunk record) still load. See docs/store.md.

Layout: every data variable of the Recording's Dataset is an array of the group. The lazy ones
(movie, dF/F, S) go through xarray/dask chunk by chunk; the footprints ``A``/``A_planted`` are
written sparsely (all-zero chunks are neither compressed nor written and read as the fill value
0); in-memory traces (``C``) a block of frames at a time. String label coordinates travel as
int8 plus a ``labels`` attr (zarr v3 has no specified string dtype).

This module sits after ``recording`` in the flow: it knows Datasets, zarr and the Spec, not how
a recording is simulated.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._compute import After, Deferred, Kept, cluster_threads, compute_in_steps
from ._version import __version__, numba_version
from .spec import Spec

#: Layout version of the zarr store; :func:`open_dataset` refuses newer ones. 2: crc32c on every
#: chunk and ``chunks_written`` in the root attrs (1: neither).
FORMAT_VERSION = 2
#: Format versions this minisim reads.
READABLE_FORMATS = (1, 2)
#: Footprint arrays: mostly zeros (a block of units lights a few tiles), written sparsely.
FOOTPRINTS = ("A", "A_planted")
#: Height and width of a footprint chunk at most: a V4 unit's light (halo included) spans
#: ~115 px, so 128 px tiles leave far fewer zeros to compress than 256 px ones (V4 CA1: 560 MB
#: of non-zero chunks at 16 units x 128^2, 1.5 GB at 32 x 256^2).
FOOTPRINT_TILE_PX = 128
#: Units of a footprint chunk at most: reading one unit's footprint decodes this many (a
#: block of a small field's lazy footprints holds several such chunks).
FOOTPRINT_CHUNK_UNITS = 16
#: Per-unit traces that may be held in memory (unit_id, frame), e.g. C of a simulated
#: Recording: written a block of frames at a time.
TRACES = ("C", "dff", "S")
#: Frames per zarr chunk of the (unit_id, frame) traces.
TRACE_CHUNK_FRAMES = 1024
#: Coordinates of strings, stored as int8 plus a ``labels`` attr.
LABEL_COORDS = ("axis", "motion_axis", "bg_component")


class IncompleteRecordingError(RuntimeError):
    """The store was not finished (an interrupted save): re-run the save with overwrite=True."""


class RecordingFormatError(RuntimeError):
    """The store was written by a newer minisim (or is not a minisim store)."""


class DamagedRecordingError(RecordingFormatError):
    """Part of a complete store is missing or damaged (run ``minisim verify STORE``)."""


class NewerStoreWarning(UserWarning):
    """The store was written by a newer minisim or render algorithm than this one."""


def _compressors(dtype=None, name: str | None = None):
    """The codecs after the array-to-bytes step: Blosc (LZ4 level 5 behind a shuffle), then a
    crc32c checksum.

    The movie (``name`` "movie") goes through Blosc's byte shuffle, as do the float arrays; the
    other integer arrays (spikes, flags, labels: mostly zeros of a few significant bits) through
    its bit shuffle. Measured on V4 CA1 movie chunks (32 x 256 x 256 uint16, one thread): the
    byte shuffle encodes in 2.2 ms and decodes in 1.7 ms at ratio 1.99, the bit shuffle (the
    movie's codec before 3 December 2026) in 6.5 / 3.8 ms at 2.45. A save spends its time
    rendering and compressing: the byte shuffle made a 1,200-frame V4 save ~10 % faster and
    reading the movie twice as fast, for a movie ~19 % larger on disk (docs/performance.md).
    On a mostly-zero float32 footprint chunk LZ4 takes 1.0 ms per MB against zstd's 3.1 at about
    the same ratio. The codecs only encode: the decoded values are the same.
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    bits = dtype is not None and np.dtype(dtype).kind in "iub" and name != "movie"
    return (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle" if bits else "shuffle"),
            Crc32cCodec())


def versions() -> dict[str, Any]:
    """What a store records about the code that wrote it."""
    from . import render

    return {
        "minisim_version": __version__,
        "format_version": FORMAT_VERSION,
        "render_algorithm": render.RENDER_ALGORITHM,
        "numpy_version": np.__version__,
        "numba_version": numba_version(),
    }


# --------------------------------------------------------------------------- labels
def encode_labels(ds: xr.Dataset) -> xr.Dataset:
    """Store string coordinates as integers plus a ``labels`` attr.

    zarr v3 has no specified string dtype (zarr warns on every write and read of one), so the
    few label coordinates travel as int8 and are restored by :func:`decode_labels`.
    """
    return ds.assign_coords({
        name: (name, np.arange(ds.sizes[name], dtype=np.int8),
               {"labels": ",".join(str(v) for v in ds[name].values)})
        for name in LABEL_COORDS if name in ds.coords
    })


def decode_labels(ds: xr.Dataset) -> xr.Dataset:
    """The inverse of :func:`encode_labels`."""
    return ds.assign_coords({
        name: np.array(ds[name].attrs["labels"].split(","))
        for name in LABEL_COORDS if name in ds.coords and "labels" in ds[name].attrs
    })


# --------------------------------------------------------------------------- chunk writes
def _blosc_of(array):
    """(numcodecs Blosc, crc32c module) for ``array`` where its codecs are exactly those
    :func:`_compressors` gives (little-endian bytes, Blosc, crc32c) in a local store with the
    default chunk keys, else None (then zarr reads and writes it)."""
    import google_crc32c
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
    from zarr.storage import LocalStore

    meta = array.metadata
    codecs = list(getattr(meta, "codecs", ()))
    if (not isinstance(array.store, LocalStore) or len(codecs) != 3 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec)
            or not isinstance(codecs[2], Crc32cCodec) or array.dtype.byteorder == ">"
            or (codecs[0].endian is not None and codecs[0].endian.value != "little")
            or meta.chunk_key_encoding.name != "default"):
        return None
    blosc = codecs[1]
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc.shuffle.value]
    return (numcodecs.Blosc(cname=blosc.cname.value, clevel=blosc.clevel, shuffle=shuffle,
                            blocksize=blosc.blocksize, typesize=array.dtype.itemsize), google_crc32c)


def _direct_encoder(target):
    """A function (chunk array) -> the bytes zarr would store for it, or None where ``target``'s
    codecs are not exactly those :func:`_compressors` gives (then zarr writes).

    zarr's own write path costs ~2.8 ms of Python (holding the GIL) per chunk in its asyncio
    machinery, which serialised a save's two threads; this one is Blosc (numcodecs, the same
    library zarr calls) and crc32c over the chunk, padded to the chunk shape with the fill value
    like zarr's edge chunks. ``tests/test_store.py`` checks the files are byte for byte zarr's."""
    got = _blosc_of(target)
    if got is None:
        return None
    codec, crc32c = got
    chunks, dtype, fill = tuple(target.chunks), target.dtype, target.metadata.fill_value

    def encode(piece: np.ndarray) -> bytes:
        if piece.shape != chunks:
            full = np.full(chunks, fill, dtype)
            full[tuple(slice(0, n) for n in piece.shape)] = piece
            piece = full
        data = bytes(codec.encode(np.ascontiguousarray(piece, dtype)))
        return data + np.uint32(crc32c.value(data)).tobytes()

    return encode


def _direct_decoder(array):
    """A function (a chunk file's bytes) -> the whole chunk (the chunk shape, edge chunks
    included), or None where ``array``'s codecs are not those :func:`_compressors` gives (then
    zarr reads). The inverse of :func:`_direct_encoder`: the crc32c is checked first (a
    mismatch or a file too short for one is a ValueError that says "checksum"), then Blosc
    decodes. zarr's read path spends ~10 ms of Python per chunk in its asyncio machinery."""
    got = _blosc_of(array)
    if got is None:
        return None
    codec, crc32c = got
    chunks, dtype = tuple(array.chunks), array.dtype.newbyteorder("<")
    nbytes = math.prod(chunks) * dtype.itemsize

    def decode(data: bytes) -> np.ndarray:
        if len(data) < 4:
            raise ValueError(f"chunk of {len(data)} bytes: too short for its crc32c checksum")
        body, stored = data[:-4], int.from_bytes(data[-4:], "little")
        computed = crc32c.value(body)
        if computed != stored:
            raise ValueError(f"crc32c checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")
        out = np.frombuffer(codec.decode(body), np.uint8)
        if out.size != nbytes:
            raise ValueError(f"chunk decodes to {out.size} bytes, not the {nbytes} of its shape {chunks}")
        return out.view(dtype).reshape(chunks)

    return decode


def read_region(array, region: tuple[slice, ...]) -> np.ndarray:
    """``array[region]`` (slices with unit steps), read straight from the chunk files where the
    codecs are :func:`_compressors`' (:func:`_direct_decoder`; a chunk that was never written
    reads as the fill value, as in zarr), else by zarr. The same values as zarr's read."""
    decode = _direct_decoder(array)
    bounds = [s.indices(n)[:2] for s, n in zip(region, array.shape)]
    if decode is None:
        return array[tuple(slice(a, b) for a, b in bounds)]
    shape = tuple(max(b - a, 0) for a, b in bounds)
    out = np.empty(shape, array.dtype)
    if not all(shape):
        return out
    root = os.path.join(str(array.store.root), array.path)
    meta, cs = array.metadata, array.chunks
    for idx in itertools.product(*(range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, cs))):
        lo = [max(a, i * c) for (a, _), i, c in zip(bounds, idx, cs)]
        hi = [min(b, (i + 1) * c) for (_, b), i, c in zip(bounds, idx, cs)]
        dst = tuple(slice(p - a, q - a) for p, q, (a, _) in zip(lo, hi, bounds))
        try:
            with open(os.path.join(root, meta.encode_chunk_key(idx)), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            out[dst] = meta.fill_value
            continue
        out[dst] = decode(data)[tuple(slice(p - i * c, q - i * c) for p, q, i, c in zip(lo, hi, idx, cs))]
    return out


def _write_chunk(target, start: tuple[int, ...], piece: np.ndarray, encode=None) -> None:
    """Write ``piece`` as the zarr chunk of ``target`` that begins at ``start`` (a chunk's
    corner; the piece is that chunk, cut at the array's edge): encoded by ``encode``
    (:func:`_direct_encoder`) through a temporary file renamed into place, or by zarr."""
    import uuid

    if encode is None:
        target[tuple(slice(a, a + n) for a, n in zip(start, piece.shape))] = piece
        return
    idx = tuple(a // c for a, c in zip(start, target.chunks))
    # plain strings: pathlib's parsing was ~2 % of a V4 save (a few per chunk)
    path = os.path.join(str(target.store.root), target.path, target.metadata.encode_chunk_key(idx))
    tmp = f"{path}.{uuid.uuid4().hex}.partial"
    data = encode(piece)
    try:
        try:
            _write_file(tmp, data)
        except FileNotFoundError:  # the chunk's folder is new (a mkdir per chunk cost ~0.25 s of a V4 save)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _write_block(block: np.ndarray, target, start: list[int], nonzero_only: bool) -> None:
    """Write the zarr chunks of ``block`` (its edges lie on chunk edges; it begins at
    ``start``), or only those holding a non-zero value (:func:`write_nonzero_chunks`)."""
    pieces = []
    for idx in np.ndindex(*(-(-n // c) for n, c in zip(block.shape, target.chunks))):
        part = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, target.chunks, block.shape))
        pieces.append((tuple(a + p.start for a, p in zip(start, part)), block[part]))
    if nonzero_only:
        write_nonzero_chunks(target, pieces)
    else:
        encode = _direct_encoder(target)
        for at, piece in pieces:
            _write_chunk(target, at, piece, encode)


def write_nonzero_chunks(target, pieces) -> int:
    """Write each (start, piece) of ``pieces`` (a whole chunk of ``target``, cut at its edge)
    that holds a byte other than 0, the fill value of a footprint array: the others are neither
    compressed nor written and read back as exactly what they held. Returns the chunks written."""
    encode = _direct_encoder(target)
    n = 0
    for at, piece in pieces:
        words = piece.view(f"u{piece.itemsize}") if piece.itemsize in (1, 2, 4, 8) else piece
        if words.any():
            _write_chunk(target, at, piece, encode)
            n += 1
    return n


def _block_start(block_info, origin: tuple[int, ...]) -> list[int]:
    """Where a block of a (window of an) array begins in the whole array."""
    return [o + a for o, (a, _) in zip(origin, block_info[0]["array-location"])]


def _store_chunks(block: np.ndarray, target, nonzero_only: bool, origin: tuple[int, ...],
                  block_info=None) -> np.ndarray:
    """Write the zarr chunks of ``block`` (the block's edges lie on chunk edges): every one, or
    with ``nonzero_only`` each that holds a non-zero value (the others are neither compressed
    nor written)."""
    _store_block(block, target, _block_start(block_info, origin) if block.size else [], nonzero_only)
    return np.zeros((1,) * block.ndim, np.int8)


def _new_arrays_like(variables: dict[str, tuple], path: Path, attrs: dict, new_store: bool = True) -> dict:
    """New zarr arrays in a new store at ``path`` (or added to the store there, ``new_store``
    False), with the metadata xarray gives them, no data yet:
    ``variables`` maps a name to (DataArray, chunks, fill value or None). Returns name -> the
    zarr array (opened for minisim's own chunk writes).

    One xarray call for all of them: each call opens the group and reads the metadata of every
    array already in it (~3 ms an array), so a call per array into a filling store (the movie,
    each footprint array, the traces, the late metrics) cost ~0.6 s of a V4 save's main
    thread."""
    import dask.array as da
    import zarr

    # dask-backed templates, so xarray writes metadata only (its delayed writes are dropped):
    # one empty block each, never computed (a variable's own graph rechunked to the zarr chunks
    # took 0.8 s per footprint array of a V4 save to build, and grows with a movie's length);
    # the root attrs go along unchanged
    templates, encoding = {}, {}
    for name, (var, chunks, fill_value) in variables.items():
        t = xr.DataArray(da.empty(var.shape, dtype=var.dtype, chunks=var.shape), dims=var.dims,
                         attrs=var.attrs, name=name)
        t.encoding = dict(var.encoding)
        templates[name] = t
        encoding[name] = {"chunks": chunks, "compressors": _compressors(var.dtype, name)}
        if fill_value is not None:
            encoding[name]["fill_value"] = fill_value
    xr.Dataset(templates, attrs=attrs).to_zarr(path, mode="w-" if new_store else "a", compute=False,
                                               consolidated=False,
                                               zarr_format=3, encoding=encoding)
    # the writers choose what to write (every movie chunk, the non-zero footprint chunks):
    # zarr's own test of each chunk against the fill value (np.array_equal over the chunk, ~8
    # ms per 4 MB movie chunk, more than LZ4 takes to compress it) is skipped
    with zarr.config.set({"array.write_empty_chunks": True}):
        group = zarr.open_group(str(path), mode="r+")
        return {name: group[name] for name in variables}


def nonzero_chunk_writes(var: xr.DataArray, target):
    """Lazy writes of ``var``'s non-zero chunks into ``target``, a new zarr array whose fill
    value is 0.

    Two thirds of a V4 CA1 store's footprint chunks are all zero. zarr's own skipping of
    empty chunks (``write_empty_chunks=False``) costs about as much per chunk as compressing
    it (8 MB); here an all-zero block is neither compressed nor written, and reads as 0.
    The values are those of ``var``, whatever computes its blocks (rendered or loaded).
    """
    return _mapped_writes(_whole_chunks(var.data, tuple(target.chunks)), target, _store_chunks, np.int8, True)


def _whole_chunks(data, chunks: tuple[int, ...]):
    """``data`` with blocks that hold whole zarr ``chunks`` (rechunked only where they do not)."""
    if any(c and b % c for bs, c in zip(data.chunks, chunks) for b in bs[:-1]):
        data = data.rechunk(chunks)
    return data


def _mapped_writes(data, target, write, dtype, *args, origin: tuple[int, ...] | None = None):
    """One task per block of ``data``: ``write(block, target, *args, origin, block_info=...)``
    returning a (1, ..., 1) array of ``dtype``; ``origin`` is where ``data`` begins in
    ``target`` (a window of it), the array's start by default."""
    origin = (0,) * data.ndim if origin is None else tuple(origin)
    return data.map_blocks(write, target, *args, origin, dtype=dtype,
                           chunks=tuple((1,) * len(c) for c in data.chunks),
                           meta=np.empty((0,) * data.ndim, dtype))


def trace_chunks(var: xr.DataArray) -> tuple[int, int]:
    """The zarr chunks of an in-memory (unit_id, frame) array: every unit, a block of frames."""
    n, T = var.shape
    return (max(n, 1), min(TRACE_CHUNK_FRAMES, max(T, 1)))


def write_traces(var: xr.DataArray, target) -> None:
    """Write an in-memory (unit_id, frame) array into ``target`` (chunks: :func:`trace_chunks`)
    in blocks of frames.

    Handing the whole array to zarr at once made a transient copy of it, which grew with
    the recording's length; a block at a time keeps the save's memory flat.
    """
    T, step = var.shape[1], trace_chunks(var)[1]
    values = var.values
    for t0 in range(0, T, step):
        target[:, t0 : t0 + step] = values[:, t0 : t0 + step]


# --------------------------------------------------------------------------- whole stores
def write_counting(block: np.ndarray, target, start: list[int], top: int) -> int:
    """Write a movie block (whole zarr chunks; it begins at ``start``) and return its pixels at
    ``top``."""
    if block.size:
        _write_block(block, target, start, nonzero_only=False)
    return int(np.count_nonzero(block == top))


def _store_counting(block: np.ndarray, target, top: int, origin: tuple[int, ...],
                    block_info=None) -> np.ndarray:
    """:func:`write_counting` of a block of a mapped window: (1, 1, 1) its pixels at ``top``."""
    start = _block_start(block_info, origin) if block.size else []
    return np.full((1,) * block.ndim, write_counting(block, target, start, top), np.int64)


#: Frames of the movie a save hands the scheduler at a time (whole zarr chunks, at least this
#: many; a rest of less than half this goes with the last window): one computation per window,
#: one after the other, so the graph and the per-task state the scheduler holds are the same
#: size for a 1-minute and a 24-hour recording (a single computation of an hour of V4 CA1 held
#: ~70,000 tasks). About one trace segment: the blocks of a window read the same few segments
#: of the World's cache.
MOVIE_WINDOW_FRAMES = 1024


#: Steps of a save in flight beside the one computing (:func:`minisim._compute.compute_in_steps`
#: ``ahead``, threads and distributed): the next window starts while one ends, and the ground
#: truth's metadata and graph are made while the first window renders.
STEPS_AHEAD = 1


def movie_writes(var: xr.DataArray, target, top: int, writer=None,
                 threads: int | None = None) -> tuple[list, list, list]:
    """Lazy writes of the movie into ``target`` (a new zarr array), one task per block, each
    returning the number of its pixels at ``top`` (saturated): per window of
    :data:`MOVIE_WINDOW_FRAMES` frames (:func:`movie_windows`), a lazy int64 scalar (that
    window's count), to be computed one window at a time. Returns (the windows' frames
    [t0, t1), their writes, each window's blocks per task: :func:`window_task_blocks`).

    The count comes from the block the task has just written, so the movie is rendered once
    and never read back (dask fuses each block's render into this write). ``writer`` (a
    function of (target, t0, t1, top, blocks_per_task),
    :func:`minisim.recording.movie_chunk_writer`) gives a window's writes instead where the
    blocks of ``var`` are the zarr chunks; ``threads``: the distributed cluster's
    (:func:`window_task_blocks`)."""
    data = _whole_chunks(var.data, tuple(target.chunks))
    if writer is not None and tuple(c[0] for c in data.chunks) != tuple(target.chunks):
        writer = None
    bounds, out = movie_windows(data), []
    grains = window_task_blocks(bounds, data.chunks, threads if writer is not None else None)
    for (t0, t1), grain in zip(bounds, grains):
        if writer is not None:
            out.append(writer(target, t0, t1, top, grain))
        else:
            out.append(_mapped_writes(data[t0:t1], target, _store_counting, np.int64, top,
                                      origin=(t0,) + (0,) * (data.ndim - 1)).sum())
    return bounds, out, grains


def window_task_blocks(bounds: list[tuple[int, int]], chunks: tuple[tuple[int, ...], ...],
                       threads: int | None) -> list[int | None]:
    """Blocks of frames per render task in each window ``bounds`` of a movie whose dask blocks
    are ``chunks``, on a distributed cluster of ``threads`` threads (None: not distributed; every
    window then :data:`minisim.recording.RENDER_TASK_BLOCKS`, given as None).

    Each task costs the scheduler, the client and the worker ~3 ms of CPU, and every worker
    that renders a block of a window builds that window's trace segment (~20 ms for V4): on a
    small cluster that CPU comes from the cores that render (a 10-minute V4 recording spread
    over 2 workers, docs/performance.md). So where one task per tile of each window in
    flight (:data:`STEPS_AHEAD` + 1 of them) gives every thread one (e.g. 2 single-threaded
    workers), a window between the first and the last STEPS_AHEAD + 1 is one task per tile. The
    first window (alone in flight at the start, beside the ground truth's graph being built) and
    the last ones (the cluster's threads finish them together) keep the fine tasks, and so does
    every window on a larger cluster, whose threads need the fine tasks' slack and whose
    scheduler has cores of its own (measured on 2 workers only). Where each task runs never
    changes the bytes."""
    tiles = math.prod(len(c) for c in chunks[1:])
    in_flight = STEPS_AHEAD + 1
    if not threads or threads > in_flight * tiles:  # one task per tile would leave threads idle
        return [None] * len(bounds)
    starts = np.cumsum((0, *chunks[0]))
    out: list[int | None] = []
    for k, (t0, t1) in enumerate(bounds):
        blocks = int(np.searchsorted(starts, t1) - np.searchsorted(starts, t0))
        inner = 0 < k < len(bounds) - in_flight
        out.append(blocks if inner else None)
    return out


def steps_ahead(grains: list[int | None], tiles: int) -> int:
    """Steps of a save in flight beside the one computing (:func:`minisim._compute.compute_in_steps`'
    ``ahead``), given each window's blocks per task (:func:`window_task_blocks`) on a movie of
    ``tiles`` tiles: :data:`STEPS_AHEAD`, one more where a small cluster renders a middle
    window in one task (one tile, so the window's step is that task alone,
    :func:`window_delayed`'s ``join``). Each worker then holds its next window when one ends,
    instead of waiting for the client to learn of the end and send the next (8-19 ms a window on
    2 workers; 0-11 ms with one more in flight, docs/performance.md). A step in flight that has
    not begun holds no memory on the worker; the threaded scheduler keeps STEPS_AHEAD."""
    return STEPS_AHEAD + 1 if tiles == 1 and any(grains) else STEPS_AHEAD


def movie_windows(data) -> list[tuple[int, int]]:
    """The frames [t0, t1) of each window of :func:`movie_writes` over the movie's dask array
    ``data`` (blocks holding whole zarr chunks): about :data:`MOVIE_WINDOW_FRAMES` frames each,
    ending on block edges, a short rest joined to the window before it."""
    starts = np.cumsum((0, *data.chunks[0]))
    out, t0, T = [], 0, data.shape[0]
    while t0 < T:
        # the window ends on a block edge (a block holds whole chunks) at or past the target
        t1 = int(starts[min(np.searchsorted(starts, t0 + MOVIE_WINDOW_FRAMES), len(starts) - 1)])
        if T - t1 < MOVIE_WINDOW_FRAMES // 2:  # a short rest goes with this window
            t1 = T
        out.append((t0, t1))
        t0 = t1
    return out


class _InGraph:
    """``key in`` any layer of a high-level graph (tasks of lazy layers made only when asked)."""

    def __init__(self, graph) -> None:
        self.layers = list(graph.layers.values())

    def _layer_of(self, key):
        try:
            return next((layer for layer in self.layers if key in layer), None)
        except TypeError:  # an unhashable value in a task is no key
            return None

    def __contains__(self, key) -> bool:
        return self._layer_of(key) is not None

    def __getitem__(self, key):
        layer = self._layer_of(key)
        if layer is None:
            raise KeyError(key)
        return layer[key]


def window_delayed(name: str, writes: list, moments=None, after=None, join: bool = False):
    """One Delayed, one task, over exactly the tasks that ``writes`` (chunk writes,
    :func:`_frame_writes`) and the blocks of ``moments`` (a dask array, or None) need, found by
    walking their graphs from their blocks, whose value is (the blocks written, the moments'
    blocks joined along their last axis, or None). With ``after`` (a Delayed: the window's
    render), the task runs after it, and a distributed scheduler puts it where that ran (its
    only input), whose World has just built the window's trace segment: not a second build of
    it on another worker. With ``join`` too, ``after`` (then the window's whole render: one
    render task and its sum, e.g. a one-tile window of :func:`window_task_blocks`) runs inside
    the same task, whose value is then (``after``'s, the above): on a 2-worker cluster the
    render, its count and the ground truth were three tasks a window, and the ground truth
    could wait behind another window's render task on the worker that held the segment
    (~0.1 s of the other worker idle at the last windows, docs/performance.md).

    Computed together as dask arrays, their merged graph kept whole layers of the trace
    segments that one of them read (dask 2026.8): a window's writes computed every segment of
    the recording. Here a window's step holds only its own segments' tasks, whatever its length,
    run by one task (:func:`_one_task`). The writes are made here as plain tasks: dask's
    ``map_blocks`` and slicing per variable and window took ~0.25 s of the client's CPU in a
    10-minute V4 save (tokenizing its arguments, the zarr array among them)."""
    from dask.base import tokenize
    from dask.core import flatten, keys_in_tasks
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    arrays = list({id(w[0]): w[0] for w in writes}.values())
    parts = [*arrays, *([moments] if moments is not None else [])]
    if not writes and moments is None:
        return None
    graph = _InGraph(HighLevelGraph.merge(*(a.__dask_graph__() for a in parts)))
    blocks = list(flatten(moments.__dask_keys__())) if moments is not None else []
    sources = [(data.name, *idx) for data, idx, _, _ in writes]
    dsk, todo = {}, [*sources, *blocks]
    while todo:
        key = todo.pop()
        if key in dsk:
            continue
        dsk[key] = task = graph[key]
        todo.extend(k for k in keys_in_tasks(graph, [task]) if k not in dsk)
    token = tokenize(name, sources, blocks, [(str(target.store_path), start) for _, _, target, start in writes])
    keys = [(f"write-{name}-{token}", i) for i in range(len(writes))]
    for key, source, (_, _, target, start) in zip(keys, sources, writes):
        dsk[key] = (_store_block, source, target, start)
    top = f"{name}-{token}"
    if join:  # the render's tasks in this one
        dsk.update(after.__dask_graph__())
        dsk[top] = (_joined, after.key, (_window_result, keys, blocks))
        before = ()
    else:
        before = () if after is None else (after.key,)
        dsk[top] = (_window_result, keys, blocks, *before)
    graph = HighLevelGraph({top: _one_task(dsk, top, outside=set(before))}, {top: set()})
    if before:
        graph = HighLevelGraph.merge(graph, after.__dask_graph__())
    return Delayed(top, graph, layer=top)


def _one_task(dsk: dict, top, outside: set = frozenset()) -> dict:
    """``dsk`` (a graph that ends at ``top``, closed but for the keys ``outside`` that it reads
    from other tasks) as one task under ``top`` that runs it, as
    dask runs a fused chain: a window's per-frame ground truth is ~10 tasks per trace segment of
    work that takes ~15 ms in all (its segment, the variables' blocks, their chunks written),
    and each task cost a distributed scheduler and its client ~2 ms of CPU, which on a 2-core
    machine they take from the workers (~170 of the ~420 tasks of a 10-minute V4 recording's
    save). The values are the same. Left as it is where this dask lacks the function."""
    try:
        from dask._task_spec import Task, convert_legacy_graph
    except ImportError:  # pragma: no cover - another dask
        return dsk
    return {top: Task.fuse(*convert_legacy_graph(dsk, all_keys={*dsk, *outside}).values(), key=top)}


def _window_result(writes: list, blocks: list, _after=None) -> tuple:
    return len(writes), (np.concatenate(blocks, axis=-1) if blocks else None)


def _joined(count, result: tuple) -> tuple:
    return count, result


def _frame_writes(var: xr.DataArray, target, t0: int, t1: int) -> list:
    """The blocks of ``var`` (a dask array with a ``frame`` dimension, its blocks the zarr
    chunks of ``target`` or holding whole ones) that begin in frames [t0, t1), for
    :func:`window_delayed`: (the dask array, the block's index, ``target``, where the block
    begins) each."""
    ax = var.dims.index("frame")
    data = _whole_chunks(var.data, tuple(target.chunks))
    starts = [np.cumsum((0, *c))[:-1] for c in data.chunks]
    frames = [i for i, f0 in enumerate(starts[ax]) if t0 <= f0 < t1]
    if not frames:
        return []
    grid = [range(len(s)) for s in starts]
    grid[ax] = frames
    return [(data, idx, target, [int(s[i]) for s, i in zip(starts, idx)]) for idx in itertools.product(*grid)]


def _store_block(block: np.ndarray, target, start: list[int], nonzero_only: bool = False) -> None:
    """Write the zarr chunks of ``block`` (its edges on chunk edges; it begins at ``start``):
    every one, or with ``nonzero_only`` each that holds a non-zero value."""
    if block.size:  # (none: e.g. no units at all)
        _write_block(block, target, start, nonzero_only=nonzero_only)


def _footprint_chunk_units(blocks: tuple[int, ...]) -> int:
    """Units per zarr chunk of a footprint array whose dask blocks along units are ``blocks``:
    FOOTPRINT_CHUNK_UNITS where every block but the last holds whole such chunks, else the
    first block's (as before a block could hold several)."""
    if blocks[0] > FOOTPRINT_CHUNK_UNITS and all(b % FOOTPRINT_CHUNK_UNITS == 0 for b in blocks[:-1]):
        return FOOTPRINT_CHUNK_UNITS
    return blocks[0]


def _write_variables(ds: xr.Dataset, path: Path, top: int, scheduler, progress: bool,
                     chunk_writers: dict | None = None) -> int:
    """Every variable of ``ds`` into a new store at ``path``, the movie a window of frames at a
    time (:data:`MOVIE_WINDOW_FRAMES`; the rest of the ground truth beside its first window,
    :data:`STEPS_AHEAD`); returns the number of movie pixels at ``top`` (counted by the tasks
    that write the movie).

    ``chunk_writers`` maps a footprint variable to (the dask name of its array, a function of
    the new zarr array giving lazy writes of its non-zero chunks): used while the Dataset still
    holds that very array (a simulated Recording's ``A`` written straight from its units' boxes,
    no dense block made and scanned), else the array's blocks are written. Its ``metrics``
    entry (:func:`minisim.truth.metrics_writer`) moves the activity metrics after the movie:
    their footprint cores and trace moments go beside the first window, and a last step reads
    the oracle's frames from the written movie instead of rendering them again (~1
    thread-second of a 1,200-frame V4 save). ``movie``: :func:`minisim.recording.movie_chunk_writer`."""
    encoding = {
        name: {"chunks": tuple(c[0] for c in var.chunks)}
        for name, var in ds.data_vars.items() if var.chunks is not None
    }
    footprints = [n for n in FOOTPRINTS if n in encoding]
    for n in footprints:  # a unit's light spans ~115 px (V4): small tiles hold fewer zeros
        _, h, w = encoding[n]["chunks"]
        encoding[n]["chunks"] = (_footprint_chunk_units(ds[n].chunks[0]), min(h, FOOTPRINT_TILE_PX),
                                 min(w, FOOTPRINT_TILE_PX))
    traces = [n for n in TRACES if n in ds.data_vars and ds[n].chunks is None]
    writers = chunk_writers or {}
    late = _late_metrics(ds, writers.get("metrics"))
    # the arrays minisim writes chunk by chunk itself besides the movie
    own = {n: (ds[n], trace_chunks(ds[n]), None) for n in traces}
    own.update({n: (ds[n], encoding[n]["chunks"], 0.0) for n in footprints})
    own.update({n: (ds[n], encoding[n]["chunks"], None) for n in late.get("names", ())})
    # the per-frame ground truth held lazily (C, dF/F, S, f, motion, vessel dilation): written a
    # window of the movie at a time, beside the window's render, which builds the same trace
    # segments (in the ground truth's one step, a longer recording held more segments at once:
    # the peak of an hour's save was ~70 MB above a minute's, docs/performance.md)
    per_frame = [n for n, v in ds.data_vars.items()
                 if n != "movie" and n not in own and v.chunks is not None and "frame" in v.dims]
    own.update({n: (ds[n], encoding[n]["chunks"], None) for n in per_frame})
    # the store and its movie first, and the movie's first window set computing at once; the
    # rest of the metadata and the ground truth's graph are made while it renders (~1 s of the
    # main thread for V4, which left every thread or worker idle before the first task)
    movie_chunks = encoding.get("movie", {}).get("chunks", ds["movie"].shape)
    targets = _new_arrays_like({"movie": (ds["movie"], movie_chunks, None)}, path, ds.attrs)
    movie_writer = writers.get("movie")
    bounds, windows, grains = movie_writes(
        ds["movie"], targets["movie"], top,
        movie_writer[1] if movie_writer and movie_writer[0] == ds["movie"].data.name else None,
        cluster_threads(scheduler))
    rest: list = []
    # each trace segment's moments (for the activity metrics) beside the window it begins in,
    # folded in segment order in the last step; a window's per-frame writes and moments are one
    # Delayed at the end of its step (:func:`window_delayed`). (dask 2026.8 returns a
    # computation's results grouped by kind of collection, in the order each kind first
    # appears: dask.compute(delayed, array, delayed) gives the second Delayed's value second.
    # Every step here holds one kind, or one object of each.)
    starts = late.get("moment_starts", []) if late else []
    has_parts: dict[int, bool] = {}  # window -> whether its step ends with its segments' moments
    joined: set[int] = set()  # windows whose render and ground truth are one task
    at = {}  # where the ground truth's step holds the footprint cores
    tiles = math.prod(-(-n // c) for n, c in zip(targets["movie"].shape[1:], targets["movie"].chunks[1:]))

    def window_objects(k: int) -> tuple:
        """Window ``k``'s objects in its step: its render (but window 0's, in a step of its
        own) and its per-frame ground truth, one object where a window of one task per tile on
        one tile does both (:func:`window_delayed`'s ``join``)."""
        t0, t1 = bounds[k]
        writes = [w for n in per_frame for w in _frame_writes(ds[n], targets[n], t0, t1)]
        mine = [i for i, f0 in enumerate(starts) if t0 <= f0 < t1]
        moments = late["moment_parts"].blocks[:, :, mine[0] : mine[-1] + 1] if mine else None
        has_parts[k] = bool(mine)
        its_render = () if k == 0 else (windows[k],)
        # (after a window rendered in one task per tile: where its render ran, or in it)
        join = bool(its_render and grains[k] and tiles == 1)
        step = window_delayed(f"window-truth-{k}", writes, moments, windows[k] if grains[k] else None, join=join)
        if step is None:
            return its_render
        if join:
            joined.add(k)
            return (step,)
        return (*its_render, step)

    def window_values(k: int, results: list) -> tuple:
        """Window ``k``'s (count of pixels at ``top``, ground truth's value) from ``results``
        (window 0: its count alone, its ground truth in the ground truth's step)."""
        if k == 0:
            return results[0][0], results[1][-1]
        r = results[k + 1]
        return r[0] if k in joined else (r[0], r[sizes[k] - 1])

    # The oracle's runs that earlier windows wrote are computed beside a later window (in its
    # step, ``ahead`` + 1 steps after the last window they read, built once those windows and the
    # ground truth's step, which holds the footprint cores, are done), not all in the last step:
    # there they were ~0.3 s of a 2-worker save's end in which a worker often waited
    # (docs/performance.md). The last step keeps the last run's and whatever no later window
    # can take.
    ahead = steps_ahead(grains, tiles)
    oracle_at: dict[int, list[int]] = {}  # window -> the oracle tasks computed in its step
    needs_at: dict[int, set[int]] = {}  # window -> the steps those read
    sizes: dict[int, int] = {}  # window -> its own objects in its step (the oracle's after them)
    step_of = [0, *range(2, len(bounds) + 1)]  # window -> its step

    def window_of(t: int) -> int:
        return next(k for k, (t0, t1) in enumerate(bounds) if t0 <= t < t1)

    for i, frames in enumerate(late.get("oracle_frames", ()) if bounds else ()):
        first, last_w = window_of(frames.start), window_of(frames.stop - 1)
        k = last_w + ahead + 1
        if k < len(windows):
            oracle_at.setdefault(k, []).append(i)
            needs_at.setdefault(k, {1}).update(step_of[w] for w in range(first, last_w + 1))

    def sized(k: int) -> tuple:  # window_objects, their number noted
        objs = window_objects(k)
        sizes[k] = len(objs)
        return objs

    ahead_of_last: dict = {}  # what window steps computed for the last one -> (step, position)

    def window_with_oracle(k: int, results: dict) -> tuple:
        """Window ``k``'s objects and its oracle tasks (``oracle_at``), each Kept (a Future on
        a cluster: read there by the last step's metrics); the first such step also takes the
        last step's work that reads no frame (the peak-to-noise ratios)."""
        cores = results[1][at["cores"]]
        movie = os.path.abspath(path / "movie")
        objs = [*sized(k)]
        for i in oracle_at[k]:
            ahead_of_last[i] = (k + 1, len(objs))
            objs.append(Kept(late["oracle_task"](movie, cores, i)))
        if k == min(oracle_at):
            ahead_of_last["pnr"] = (k + 1, len(objs))
            objs.append(Kept(late["pnr"]()))
        return tuple(objs)

    def ground_truth() -> tuple:
        # the arrays minisim writes chunk by chunk itself, in one call (xarray reads the
        # metadata of every array already in the store at each call: the movie alone here),
        # then the rest through xarray
        targets.update(_new_arrays_like(own, path, ds.attrs, new_store=False))
        dense = encode_labels(ds.drop_vars([*own, "movie"]))
        write = dense.to_zarr(
            path, mode="a", compute=False, consolidated=False, zarr_format=3,
            encoding={n: {**encoding.get(n, {}), "compressors": _compressors(dense[n].dtype, n)}
                      for n in (*dense.data_vars, *dense.coords)})
        for n in traces:
            write_traces(ds[n], targets[n])
        early = []
        for n in footprints:
            writer = writers.get(n)
            if writer is not None and writer[0] == ds[n].data.name:  # the very array the writer stands for
                w = writer[1](targets[n])
            else:
                w = nonzero_chunk_writes(ds[n], targets[n])
            # (A_planted beside A where the oracle's early runs leave the last step little to
            # do: in a middle window's step its small tasks held that step open behind a long
            # task on the other worker, which held back the next window's submission)
            (early if n == "A" or oracle_at else rest).append(w)
        at["cores"] = 1 + len(early)
        # (on a cluster, left on the worker that made them, for the oracle's tasks to read there)
        cores = (Kept(late["cores"]),) if late else ()
        if not bounds:  # no frames: no window to put them beside
            return (write, *early, *cores, *((late["sums"],) if late else ()))
        return (write, *early, *cores, *window_objects(0))

    # The movie a window at a time, the next one computing while one ends
    # (compute_in_steps' ``ahead``), each with its per-frame ground truth and moments; the
    # ground truth that is small or shares tasks with the render's first window (the dense
    # arrays, the first window's per-frame part; A and the footprint cores, which read the same
    # footprint boxes) beside its first window; then one last step:
    # A_planted and the activity metrics, whose oracle reads frames of the movie just written.
    # A_planted's many small tasks fill the threads around the oracle's tasks (the
    # oracle alone left one of two threads idle for ~0.5 s at the end of a 1,200-frame V4 save;
    # with A and the cores moved into the last step too, their chain of boxes, cores and oracle
    # made that step longer, on threads and on two distributed workers alike). In a longer save
    # the oracle's early runs go beside later windows (``oracle_at``), and A_planted then
    # beside A.
    first = windows[0] if windows else np.int64(0)
    released: list = []

    def after_ground_truth(build):
        """``build`` (a step of the results: built once the ground truth's step is done), the
        first such step handing the heap's free pages back to the system first. The ground
        truth's one-off work (A's and A_planted's chunks, the footprint boxes and cores) leaves
        ~60 MB (V4 CA1) free but held in glibc's heaps, which no trim gave back before the
        first trace segment was evicted (never, in a short save), and every save's peak sat on
        top of it (docs/performance.md). On dask's local schedulers this process computed that
        step; a distributed worker's heaps are its own (untouched)."""
        def step(results: list):
            if not released:
                released.append(True)
                from . import render

                render._trim_heap()
            return build(results)

        return step

    # (the second window waits for the ground truth's step: beside it, the ground truth held
    # ~120-160 MB more at the peak of a longer save than a one-window save's)
    steps: list = [(first,), Deferred(ground_truth),
                   *(After(sorted(needs_at[k]), after_ground_truth(lambda results, k=k: window_with_oracle(k, results)))
                     if k in oracle_at else after_ground_truth(lambda results: sized(1)) if k == 1 else
                     Deferred(lambda k=k: sized(k)) for k in range(1, len(windows)))]

    @after_ground_truth
    def last(results: list) -> tuple:
        if not late:
            return tuple(rest)
        cores = results[1][at["cores"]]
        if not bounds:
            sums = results[1][-1]
        else:
            sums = late["fold"]([window_values(k, results)[1][1] for k in range(len(bounds)) if has_parts[k]])
        got = {what: results[step][i] for what, (step, i) in ahead_of_last.items()}
        # (every window is written: the World keeps only the segments this step reads)
        late["release"](got)
        pnr = got.pop("pnr", None)
        arrays = late["later"](os.path.abspath(path / "movie"), cores, sums, got, pnr)  # (workers may run elsewhere)
        return (*rest, _rows_written({n: (arrays[n], targets[n]) for n in arrays}))

    steps.append(last)
    results = compute_in_steps(steps, scheduler=scheduler, progress=progress, ahead=ahead)
    return sum(int(window_values(k, results)[0]) for k in range(len(windows)))


def _rows_written(rows: dict):
    """One Delayed task that writes each of ``rows`` (name -> (a one-block dask array, its zarr
    array): the activity metrics, a row over the units each) whole, every chunk: a write task and
    a finalize task per metric were ~10 round trips to a distributed worker at a save's end."""
    from dask.core import flatten

    from . import render

    arrays, targets, keys = [d for d, _ in rows.values()], [t for _, t in rows.values()], []
    for data in arrays:
        (key,) = flatten(data.__dask_keys__())  # (one block: raises otherwise)
        keys.append(key)
    top = f"metric-writes-{uuid.uuid4().hex}"
    return render.plain_delayed(top, (_store_rows, keys, targets), {}, arrays)


def _store_rows(rows: list, targets: list) -> int:
    for row, target in zip(rows, targets):
        _store_block(np.asarray(row), target, [0])
    return len(rows)


def _late_metrics(ds: xr.Dataset, writer: dict | None) -> dict:
    """The ``metrics`` writer (:func:`minisim.truth.metrics_writer`) where ``ds`` still holds
    every one of the very arrays it stands for, else {} (the metrics then go with the rest)."""
    if not writer:
        return {}
    for name, dask_name in writer["names"].items():
        var = ds.data_vars.get(name)
        if var is None or var.chunks is None or var.data.name != dask_name:
            return {}
    return writer


def write_dataset(ds: xr.Dataset, path: Path, *, bit_depth: int, scheduler=None,
                  progress: bool = False, chunk_writers: dict | None = None) -> None:
    """Compute ``ds`` chunk by chunk into a new zarr v3 store at ``path`` and mark it complete.

    The zarr chunks follow the dask blocks. ``path`` must not exist. The saturated pixels
    (value ``2**bit_depth - 1``) are counted by the tasks that write the movie and recorded in the root
    attrs together with ``complete: true``, last. ``chunk_writers``: see :func:`_write_variables`.
    """
    import dask

    t0 = time.perf_counter()
    # No linear fusion of tasks: it would fold a task that two readers share into one of them,
    # and the other would compute it again (a block of footprint boxes: A's block and the
    # metrics' cores; tests/test_recording.py counts). Blockwise fusion stays on: it renders each
    # movie block inside its zarr write, and dask then orders those writes segment by segment.
    # (With every fusion off, a 4,096-frame V4 save ran its blocks in no order in time and the
    # World's segment cache rebuilt each segment ~40 times.)
    with dask.config.set({"optimization.fuse.active": False}):
        n_sat = _write_variables(ds, path, 2**bit_depth - 1, scheduler, progress, chunk_writers)
    mark_complete(path, {"saturated_pixels": n_sat,
                         "saturated_fraction": float(n_sat) / max(ds["movie"].size, 1),
                         "write_seconds": round(time.perf_counter() - t0, 3),
                         "chunks_written": chunks_written(path)})


# --------------------------------------------------------------------------- the chunk record
def _arrays(path: Path) -> dict[str, Any]:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").arrays())


def _chunk_grid(arr) -> tuple[int, ...]:
    return tuple(math.ceil(s / c) if s else 0 for s, c in zip(arr.shape, arr.chunks))


def _chunk_file(path: Path, name: str, arr, idx: tuple[int, ...]) -> Path:
    return path / name / arr.metadata.encode_chunk_key(idx)


def _files_under(folder: Path) -> set[str]:
    """Every file below ``folder``, as its path relative to it with "/" separators (one walk:
    a stat per chunk through pathlib was ~0.1 s of a V4 save's completion; ``os.walk`` and a
    relative path per folder ~0.035 s of a 10-minute V4 256 px store's, whose movie chunks lie
    in ~1,000 folders, on the client after every task)."""
    out, todo = set(), [(str(folder), "")]
    while todo:
        where, prefix = todo.pop()
        try:
            entries = os.scandir(where)
        except OSError:  # (as os.walk: an unreadable folder is passed over)
            continue
        with entries:
            for e in entries:
                if not e.is_dir():
                    out.add(prefix + e.name)
                elif not e.is_symlink():  # (as os.walk: a link to a folder is not followed)
                    todo.append((e.path, f"{prefix}{e.name}/"))
    return out


def chunks_written(path: Path) -> dict[str, dict[str, Any]]:
    """Per array of the store, which chunks exist on disk: ``{"grid": [...], "written": ...}``.

    ``written`` is ``"all"`` or the base64 text of a bitmap over the chunk grid in C order (one
    bit per chunk, most significant first). Taken at completion, after every write.
    """
    out = {}
    for name, arr in sorted(_arrays(path).items()):
        grid = _chunk_grid(arr)
        files = _files_under(path / name)
        bits = np.array([arr.metadata.encode_chunk_key(idx) in files for idx in np.ndindex(*grid)], bool)
        written = "all" if bits.all() else base64.b64encode(np.packbits(bits).tobytes()).decode()
        out[name] = {"grid": list(grid), "written": written}
    return out


def _written_bits(entry: dict[str, Any]) -> np.ndarray:
    n = math.prod(entry["grid"])
    if entry["written"] == "all":
        return np.ones(n, bool)
    return np.unpackbits(np.frombuffer(base64.b64decode(entry["written"]), np.uint8))[:n].astype(bool)


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attrs of a minisim store, checked: format version known, Spec present."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no recording at {path}")
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as e:
        raise RecordingFormatError(f"{path} is not a zarr store written by minisim: {e}") from e
    if "format_version" not in attrs or "spec" not in attrs:
        raise RecordingFormatError(f"{path} is not a minisim recording (no format_version/spec)")
    fv = attrs["format_version"]
    if isinstance(fv, bool) or not isinstance(fv, int) or fv < 1:
        raise RecordingFormatError(
            f"{path} has format_version {fv!r}, which is not a format minisim writes (a whole "
            f"number; this minisim reads {', '.join(map(str, READABLE_FORMATS))}): the store's "
            "root attrs were changed by hand or by another program"
        )
    if fv > FORMAT_VERSION:
        raise RecordingFormatError(
            f"{path} has format_version {fv}, newer than this minisim "
            f"reads ({FORMAT_VERSION}); upgrade minisim to open it"
        )
    _warn_if_newer(path, attrs)
    return attrs


def _warn_if_newer(path: Path, attrs: dict[str, Any]) -> None:
    """Warn when a newer render algorithm or minisim wrote the store: its data load as stored,
    but this minisim would not make the same bytes from its Spec."""
    from . import render

    algo = attrs.get("render_algorithm")
    if isinstance(algo, int) and not isinstance(algo, bool) and algo > render.RENDER_ALGORITHM:
        warnings.warn(
            f"{path} was rendered with render_algorithm {algo}, newer than this minisim's "
            f"({render.RENDER_ALGORITHM}): its data load as stored, but simulate(spec) here would "
            "not reproduce them; upgrade minisim to re-simulate it", NewerStoreWarning, stacklevel=4)
    theirs = attrs.get("minisim_version")
    try:
        from packaging.version import Version

        newer = theirs is not None and Version(str(theirs)) > Version(__version__)
    except Exception:  # noqa: BLE001 - an unparsable version is reported below as unknown
        newer = False
    if newer:
        warnings.warn(
            f"{path} was written by minisim {theirs}, newer than this one ({__version__}); "
            "it loads, but upgrade minisim to be sure of reading it as meant",
            NewerStoreWarning, stacklevel=4)


def open_dataset(path: str | Path, allow_incomplete: bool = False) -> tuple[xr.Dataset, Spec]:
    """A store's Dataset (lazy, dask-backed) and its Spec; refuses an incomplete store unless asked."""
    path = Path(path)
    attrs = read_attrs(path)
    if not attrs.get("complete") and not allow_incomplete:
        raise IncompleteRecordingError(
            f"{path} is incomplete: its save was interrupted before every chunk was "
            "written. Re-run the save with overwrite=True (or load(..., allow_incomplete=True) "
            "to inspect what is there)."
        )
    record = attrs.get("chunks_written")
    if record:
        missing = [name for name in record if not (path / name / "zarr.json").is_file()]
        if missing:
            raise DamagedRecordingError(
                f"{path} is damaged: array(s) {', '.join(missing)} are missing from the store "
                f"(the save wrote them); run `minisim verify {path}` for the whole picture, and "
                "re-simulate it from its Spec (minisim spec --from STORE)"
            )
    ds = decode_labels(xr.open_zarr(path, consolidated=False, zarr_format=3))
    return _with_named_reads(ds, path), Spec.model_validate_json(attrs["spec"])


def _read_chunk(array, name: str, path: str, block_id=None) -> np.ndarray:
    """One zarr chunk of ``array``; a chunk that fails to decode (its crc32c checksum, a
    truncated file) is a :class:`DamagedRecordingError` naming the store, variable and chunk."""
    start = [i * c for i, c in zip(block_id, array.chunks)]
    where = tuple(slice(a, min(a + c, n)) for a, c, n in zip(start, array.chunks, array.shape))
    try:
        return read_region(array, where)
    except Exception as e:  # any decode failure of a stored chunk is damage
        key = "/".join(str(i) for i in block_id)
        raise DamagedRecordingError(
            f"{path}: chunk {key} of {name!r} is damaged ({type(e).__name__}: {e}); run "
            f"`minisim verify {path}` for every damaged chunk, and re-simulate the store from "
            "its Spec"
        ) from e


def _with_named_reads(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """``ds`` with each stored data variable read chunk by chunk through :func:`_read_chunk`.

    The same values as xarray's own reader (the raw arrays: no masking or scaling is encoded
    here), in the store's own chunks; only the error of a damaged chunk changes, from zarr's
    bare checksum error to one that says where.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    arrays = _arrays(path)
    out = {}
    for name, var in ds.data_vars.items():
        array = arrays.get(name)
        if var.chunks is None or array is None:
            continue
        chunks = da.core.normalize_chunks(array.chunks, array.shape)
        # named by what identifies the stored array (its place, metadata and when that was
        # written), not by dask hashing the zarr array object: that was ~0.3 s of every load
        meta = (path / name / "zarr.json").stat()
        token = tokenize(str(path.resolve()), name, array.shape, array.chunks, str(array.dtype),
                         meta.st_mtime_ns, meta.st_size)
        # a plain graph: map_blocks walked the zarr array's attributes as possible collections
        key = f"read-{name}-{token}"
        grid = tuple(range(len(c)) for c in chunks)
        layer = {(key, *idx): (_read_chunk, array, name, str(path), idx) for idx in itertools.product(*grid)}
        data = da.Array(HighLevelGraph.from_collections(key, layer), key, chunks, dtype=array.dtype,
                        meta=np.empty((0,) * array.ndim, array.dtype))
        out[name] = var.copy(data=data)
    return ds.assign(out)


# --------------------------------------------------------------------------- verify
@dataclass
class ChunkProblem:
    """One thing wrong with a store: which array, which chunk (its key), what, and detail."""

    variable: str
    chunk: str
    kind: str  # "missing array" | "missing" | "damaged" | "unexpected"
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.variable}/{self.chunk}" if self.chunk else self.variable
        return f"{where}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``ok`` only when every chunk is there and decodes."""

    path: Path
    format_version: int
    chunks_checked: int = 0
    problems: list[ChunkProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (f"{self.path}: {'intact' if self.ok else f'{len(self.problems)} problem(s)'}, "
                f"{self.chunks_checked} chunks checked (format {self.format_version})")
        return "\n".join([head, *(f"  {p}" for p in self.problems), *(f"  note: {n}" for n in self.notes)])


def verify(path: str | Path, progress: bool = False) -> VerifyReport:
    """Read every chunk of a store back and check it against the save's record.

    Finds arrays missing from the store, chunks missing (the save wrote them), chunks that are
    truncated or damaged (their crc32c or decoding fails) and chunks the save did not write.
    A format 1 store has neither checksums nor a record: only chunks that fail to decode are
    found there (a note says so).
    """
    path = Path(path)
    attrs = read_attrs(path)
    report = VerifyReport(path, attrs["format_version"])
    if not attrs.get("complete"):
        report.problems.append(ChunkProblem("(store)", "", "incomplete",
                                            "its save was interrupted before the completion marker"))
    record = attrs.get("chunks_written") or {}
    if not record:
        report.notes.append("format 1 store: no checksums and no record of the chunks written, so "
                            "only chunks that fail to decode can be found")
    arrays = _arrays(path)
    for name in record:
        if name not in arrays:
            report.problems.append(ChunkProblem(name, "", "missing array", "the save wrote it"))
    total = sum(math.prod(_chunk_grid(a)) for a in arrays.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="chunk", desc=f"verify {path.name}")
    try:
        for name, arr in sorted(arrays.items()):
            grid = _chunk_grid(arr)
            expected = _written_bits(record[name]) if name in record else None
            for k, idx in enumerate(np.ndindex(*grid)):
                key = arr.metadata.encode_chunk_key(idx)
                there = _chunk_file(path, name, arr, idx).is_file()
                if expected is not None and expected[k] and not there:
                    report.problems.append(ChunkProblem(name, key, "missing", "the save wrote it"))
                elif expected is not None and not expected[k] and there:
                    report.problems.append(ChunkProblem(name, key, "unexpected",
                                                        "the save did not write it"))
                elif there:
                    try:
                        arr.get_block_selection(idx)
                    except Exception as e:  # noqa: BLE001 - any decode failure is damage
                        kind = "damaged"
                        report.problems.append(ChunkProblem(name, key, kind,
                                                            f"{type(e).__name__}: {e}"))
                report.chunks_checked += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return report


def mark_complete(path: Path, extra: dict[str, Any]) -> None:
    """Write ``complete: true`` (and ``extra``) into the root attrs: the last write of a save."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    # one write of the root's metadata (``attrs.update`` wrote it once per key: 5 rewrites of
    # zarr.json, each on the client after a save's last task), ``complete`` in the same write
    g.update_attributes({**extra, "complete": True})


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished minisim store."""
    import zarr

    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete"))
    except Exception:  # noqa: BLE001
        return False


def spec_from_store(path: str | Path) -> Spec:
    """The Spec embedded in a store's root attrs (complete or not)."""
    import zarr

    return Spec.model_validate_json(json.loads(json.dumps(zarr.open_group(str(path), mode="r").attrs["spec"])))
