"""Ground truth derived from the World: dF/F and spikes, spike tables, vessel dilation, per-cell metrics.

The movie is rendered by :mod:`minisim.render`; everything here is what a recording reports
*about* that movie, beside A and C: the calcium dF/F and spike counts (lazily, a batch of units
at a time), the spike table, the vasomotion course, and per cell its peak SNR, focus, vessel
overlap and whether a good pipeline could detect it. :func:`minisim.recording.build_dataset`
calls these; it computes none of them itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit

from . import activity, render
from .scene.optics import pixel_index
from .spec import Spec
from .store import FOOTPRINT_CHUNK_UNITS

# --------------------------------------------------------------------------- traces
#: The Dataset's per-frame ground truth, lazy, one chunk per time segment (docs/segments.md).
TRACE_VARIABLES = ("C", "dff", "S", "neuropil", "motion", "vessel_dilation")


def lazy_traces(spec: Spec, n_units: int) -> dict:
    """C, dF/F, S (unit_id, frame), the neuropil course, rigid motion (px) and vessel dilation
    (frame, ...) as dask arrays chunked by time segment: nothing of them is computed here, and
    no process ever holds one of them whole (:func:`minisim.render.segment_array`)."""
    segments = render.segment_blocks(spec)
    out = {name: render.segment_array(spec, name, n_units, segments) for name in TRACE_VARIABLES}
    out["segments"] = segments
    return out


# --------------------------------------------------------------------------- footprints
#: Bytes of one block of the lazy footprints at most: a block is the whole field for as many
#: units as fit, whole store chunks of FOOTPRINT_CHUNK_UNITS where more fit (V4, 608 x 608 px:
#: 16 units, 24 MB; a 128 x 128 px field: 480 units, 31 MB, one or two blocks where 16-unit
#: blocks made ~25 tasks of each kind and a 25 MB concatenation of A for a 40-frame recording).
FOOTPRINT_BLOCK_BYTES = 32_000_000


def footprint_block_units(spec: Spec) -> int:
    """Units per block of the lazy footprints (:data:`FOOTPRINT_BLOCK_BYTES`)."""
    n = max(FOOTPRINT_BLOCK_BYTES // (4 * spec.sensor.height_px * spec.sensor.width_px), 1)
    return int(n - n % FOOTPRINT_CHUNK_UNITS if n > FOOTPRINT_CHUNK_UNITS else n)


def lazy_footprints(spec: Spec, n_units: int) -> dict:
    """``A`` (footprints as imaged, ADU per unit of C) and ``A_planted`` (unit_id, height,
    width) as dask arrays, a block of :func:`footprint_block_units` units over the whole field
    at a time, and ``boxes``: the tasks that hold each block of units' tissue footprints (one
    box each, :meth:`Scene.footprint_box`).

    Every unit's box is built once per save, by the task of its block of units; the block of
    ``A`` pastes them, and :func:`lazy_unit_metrics` reads the same tasks for the footprint
    cores (pass ``boxes`` to it). A block's values are those of :meth:`Scene.footprints_e`
    times the gain, vignette and illumination. One task per block keeps the graph small
    (the store splits a block into its chunks and writes the non-zero ones).
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    sj = spec.model_dump_json()
    H, W = spec.sensor.height_px, spec.sensor.width_px
    chunks = da.core.normalize_chunks((footprint_block_units(spec), H, W), (n_units, H, W))
    starts = [np.cumsum((0,) + c) for c in chunks]
    token = tokenize(sj, n_units, chunks)
    bname, aname, pname = (f"footprint-boxes-{token}", f"footprints-A-{token}",
                           f"footprints-A_planted-{token}")
    boxes = {(bname, i): (_boxes_task, sj, int(starts[0][i]), int(starts[0][i + 1]))
             for i in range(len(chunks[0]))}
    observed, planted = {}, {}
    for i in range(len(chunks[0])):
        for j in range(len(chunks[1])):
            for k in range(len(chunks[2])):
                loc = (int(starts[0][i]), int(starts[0][i + 1]), int(starts[1][j]),
                       int(starts[1][j + 1]), int(starts[2][k]), int(starts[2][k + 1]))
                observed[(aname, i, j, k)] = (_paste_observed, sj, (bname, i), loc)
                planted[(pname, i, j, k)] = (_paste_planted, sj, loc)
    meta = np.empty((0, 0, 0), np.float32)
    graph = HighLevelGraph({bname: boxes, aname: observed}, {bname: set(), aname: {bname}})
    return {
        "A": da.Array(graph, aname, chunks, meta=meta),
        "A_planted": da.Array(HighLevelGraph({pname: planted}, {pname: set()}), pname, chunks, meta=meta),
        "boxes": [Delayed((bname, i), HighLevelGraph({bname: boxes}, {bname: set()}), layer=bname)
                  for i in range(len(chunks[0]))],
    }


def _boxes_task(spec_json: str, u0: int, u1: int) -> list:
    """Per unit of [u0, u1): ((y0, y1, x0, x1), box) of its tissue footprint over the sensor,
    None where none of its light reaches the sensor."""
    return render.get_world(spec_json).scene.footprint_boxes(range(u0, u1))


def footprint_chunk_writers(spec: Spec, footprints: dict) -> dict:
    """For :func:`minisim.store.write_dataset`: ``A`` and ``A_planted`` (the arrays of
    :func:`lazy_footprints` ``footprints``) written a block of units at a time straight from the
    units' boxes and planted patches: each task pastes only the zarr chunks its units touch and
    writes those holding light. A block of ``A`` is its units over the whole field (16 units, 23 MB for
    V4), mostly zeros: building and scanning them was ~40 % of a 1,200-frame V4 save's task time.
    The chunks are the same :func:`_paste_observed` and :func:`_paste_planted` give, over a tile."""
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    sj = spec.model_dump_json()
    starts = np.cumsum((0,) + footprints["A"].chunks[0])
    boxes = footprints["boxes"]

    def writes(name: str):
        def of(target) -> list:
            # a plain graph: dask.delayed tokenised the zarr array of every task (1.4 s for V4)
            # (A_planted reads the planted patches, not the boxes: no dependency on them)
            key = f"footprint-chunks-{name}-{tokenize(sj, name, str(target.store_path))}"
            reads = name == "A" and bool(boxes)
            layer = {(key, i): (_write_footprint_chunks, sj, name, int(u0), int(u1),
                                b.key if reads else None, target)
                     for i, (u0, u1, b) in enumerate(zip(starts[:-1], starts[1:], boxes))}
            graph, deps = {key: layer}, {key: set()}
            if reads:
                bname = boxes[0].key[0]
                graph[bname], deps[key], deps[bname] = boxes[0].dask.layers[bname], {bname}, set()
            hlg = HighLevelGraph(graph, deps)
            return [Delayed((key, i), hlg, layer=key) for i in range(len(layer))]
        return footprints[name].name, of

    return {"A": writes("A"), "A_planted": writes("A_planted")}


def _write_footprint_chunks(spec_json: str, name: str, u0: int, u1: int, boxes: list | None,
                            target) -> int:
    """Write the non-zero zarr chunks of ``name`` for units [u0, u1) (a block: whole chunks
    along units); ``boxes`` (their footprint boxes) for ``A``, None for ``A_planted``."""
    cu = max(target.chunks[0], 1)  # (0 for a recording without units)
    return sum(_write_unit_chunk(spec_json, name, a, min(a + cu, u1),
                                 None if boxes is None else boxes[a - u0 : min(a + cu, u1) - u0], target)
               for a in range(u0, u1, cu))


def _write_unit_chunk(spec_json: str, name: str, u0: int, u1: int, boxes: list | None, target) -> int:
    """:func:`_write_footprint_chunks` for units [u0, u1), one chunk along units."""
    from . import store

    sc = render.get_world(spec_json).scene
    H, W = sc.spec.sensor.height_px, sc.spec.sensor.width_px
    _, th, tw = target.chunks
    if name == "A":
        extents = [None if got is None else got[0] for got in boxes]
    else:  # the planted patches' pixels (each cropped to what its cell's drawing reaches)
        box = sc.planted_patches().box[u0:u1]
        extents = zip(np.maximum(box[:, 0], 0), np.minimum(box[:, 1], H),
                      np.maximum(box[:, 2], 0), np.minimum(box[:, 3], W))
    tiles = set()
    for ext in extents:
        if ext is not None and ext[0] < ext[1] and ext[2] < ext[3]:
            tiles.update((ty, tx) for ty in range(ext[0] // th, (ext[1] - 1) // th + 1)
                         for tx in range(ext[2] // tw, (ext[3] - 1) // tw + 1))

    def pieces():
        for ty, tx in sorted(tiles):
            loc = (u0, u1, ty * th, min((ty + 1) * th, H), tx * tw, min((tx + 1) * tw, W))
            piece = _paste_observed(spec_json, boxes, loc) if name == "A" else _paste_planted(spec_json, loc)
            yield (u0, loc[2], loc[4]), piece

    return store.write_nonzero_chunks(target, pieces())


def _paste_observed(spec_json: str, boxes: list, loc: tuple) -> np.ndarray:
    u0, u1, y0, y1, x0, x1 = loc
    world = render.get_world(spec_json)
    sc = world.scene
    out = np.zeros((u1 - u0, y1 - y0, x1 - x0), np.float32)
    kvi = None
    for n, got in enumerate(boxes):
        if got is None:
            continue
        (by0, by1, bx0, bx1), box = got
        ia, ib, ja, jb = max(by0, y0), min(by1, y1), max(bx0, x0), min(bx1, x1)
        if ia < ib and ja < jb:
            if kvi is None:  # gain x vignette x illumination over the block (0 elsewhere stays 0)
                K = np.float32(world.spec.sensor.gain_adu_per_e)
                kvi = K * (sc.vignette[y0:y1, x0:x1] * sc.illumination[y0:y1, x0:x1])
            np.multiply(kvi[ia - y0 : ib - y0, ja - x0 : jb - x0], box[ia - by0 : ib - by0, ja - bx0 : jb - bx0],
                        out=out[n, ia - y0 : ib - y0, ja - x0 : jb - x0])  # no temporary
    return out


def _paste_planted(spec_json: str, loc: tuple) -> np.ndarray:
    u0, u1, y0, y1, x0, x1 = loc
    return render.get_world(spec_json).scene.planted_dense(slice(u0, u1), (y0, y1, x0, x1))


def spike_table(source: Spec | render.World) -> tuple[np.ndarray, np.ndarray]:
    """Every spike as a row: (unit id int64, time in s float64), units in order, times as drawn.

    The table's length depends on the data, so it is not a lazy Dataset variable; it is a pure
    function of the Spec (or of a World already built from it), computed here a segment at a
    time (docs/segments.md).
    """
    world = source if isinstance(source, render.World) else render.build_world(source)
    return world.spike_table()


# --------------------------------------------------------------------------- per-cell truth
DETECTABLE_DEFOCUS_RADII = 3.0


def cell_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per-unit ground truth beyond A and C: peak SNR, focus, vessel overlap, detectability.

    The union of :func:`static_metrics` (from the scene alone) and :func:`activity_metrics`
    (``pnr``, ``oracle_r``, ``compactness``, ``visibility`` and ``detectable``: they read
    realised activity and rendered frames). A cell is *detectable* when its centre lies inside
    the field of view and its oracle trace, compactness and visibility pass
    :data:`ORACLE_MIN_R`, :data:`COMPACT_MIN_FRACTION` and :data:`VISIBLE_MIN_DFF`
    (docs/anatomy.md, "Detectability"). Computed here, eagerly, from ``world`` (the studio's
    window); a Recording holds the same values lazily (:func:`lazy_unit_metrics`).
    """
    return {**static_metrics(world), **activity_metrics(world)}


#: The per-unit variables of :func:`activity_metrics`, with their dtypes: the Dataset holds
#: them lazily (:func:`lazy_unit_metrics`), so ``simulate()`` renders nothing for them.
ACTIVITY_METRICS = {"pnr": np.float32, "detectable": bool, "oracle_r": np.float32,
                    "compactness": np.float32, "visibility": np.float32}


def scene_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per unit, from the cells and the optics alone (no footprint): ``in_focus`` (|dz| <= 3
    soma radii, docs/physics.md §8.10), ``defocus_um`` and ``psf_sigma_um``."""
    sc = world.scene
    return {
        "in_focus": np.abs(sc.dz_um) <= DETECTABLE_DEFOCUS_RADII * sc.cells.radius_um,
        "defocus_um": sc.dz_um.astype(np.float32),
        "psf_sigma_um": sc.sigma_um.astype(np.float32),
    }


def vessel_overlap(world: render.World) -> np.ndarray:
    """Per unit, float32: the share of its planted footprint that lies under a vessel (on the
    padded grid): the float32 sum of its patch's pixels there, compiled
    (``scene._kernels.masked_patch_sums``, in numpy's order and rounding)."""
    from .scene._kernels import masked_patch_sums

    sc = world.scene
    pp = sc.planted_patches()
    return masked_patch_sums(pp.values, pp.start, pp.box, pp.frame, sc.vessel_chord_um > 0, sc.margin_px)


def static_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per unit, from the scene alone: :func:`scene_metrics` and ``vessel_overlap_fraction``
    (:func:`vessel_overlap`, which builds the planted footprints)."""
    return {**scene_metrics(world), "vessel_overlap_fraction": vessel_overlap(world)}


def peak_snr(world: render.World) -> np.ndarray:
    """Per unit, the peak SNR of its realised activity (docs/physics.md §6), float32.

    w = a / |a| over the pixels where the cell's sharp image exceeds 20 % of its maximum;
    SNR = max_t (w . a (C_t - C_0)) / sqrt(sum_p w_p^2 var_p), with var_p the per-pixel temporal
    variance (shot + dark + read + quantisation) at the mean image. The activity is the first
    segment's: a bounded keyed sample (docs/segments.md).
    """
    spec, sc = world.spec, world.scene
    W = spec.sensor.width_px
    K = spec.sensor.gain_adu_per_e
    n = len(sc.cells)
    C, f_np = world.traces(range(min(world.n_frames, activity.SEGMENT_FRAMES)))
    mean_c = C.mean(axis=1, keepdims=True).astype(np.float32)
    mean_e = render.render_electrons_static(world, mean_c, np.float32([f_np.mean()]))[0]
    lam = mean_e + spec.sensor.dark_current_e_per_s / spec.recording.fps
    if spec.sensor.noise:
        var_adu = K * K * (lam + spec.sensor.read_noise_e**2) + 1 / 12
    else:
        var_adu = np.full_like(lam, 1 / 12)
    vi = (sc.vignette * sc.illumination).ravel()
    indptr, ii, jj, data = sc.sharp_columns()  # each unit's sharp image in the field
    pnr = np.zeros(n, np.float32)
    swing = (C.max(axis=1) - C[:, 0]) if C.shape[1] else np.zeros(n)
    for u in range(n):
        lo, hi = indptr[u], indptr[u + 1]
        if lo == hi:
            continue
        p = ii[lo:hi].astype(np.int64) * W + jj[lo:hi]
        a = K * data[lo:hi].astype(np.float64) * vi[p]
        if not a.max() > 0:
            continue
        core = a > 0.2 * a.max()
        a, p = a[core], p[core]
        wgt = a / np.sqrt((a * a).sum())
        noise = np.sqrt((wgt * wgt * var_adu.ravel()[p]).sum())
        pnr[u] = float((wgt * a).sum() * max(swing[u], 0) / noise)
    return pnr


def activity_metrics(world: render.World) -> dict[str, np.ndarray]:
    """Per unit: ``pnr`` (:func:`peak_snr`), :func:`detectability`'s three measures and the
    ``detectable`` rule over them (centre inside the field of view as well)."""
    return _with_rule(world, peak_snr(world), detectability(world))


def _with_rule(world: render.World, pnr: np.ndarray, det: dict) -> dict[str, np.ndarray]:
    """The ``detectable`` rule over :func:`detectability`'s measures, with ``pnr`` beside."""
    spec, c = world.spec, world.scene.cells
    half_h, half_w = spec.fov_um[0] / 2, spec.fov_um[1] / 2
    inside_fov = (np.abs(c.y_um) < half_h) & (np.abs(c.x_um) < half_w)
    detectable = (inside_fov & (det["oracle_r"] >= ORACLE_MIN_R)
                  & (det["compactness"] >= COMPACT_MIN_FRACTION)
                  & (det["visibility"] >= VISIBLE_MIN_DFF))
    return {"pnr": pnr, "detectable": detectable, **det}


# --------------------------------------------------------------------------- lazily, in a Dataset
#: The per-unit variables :func:`lazy_unit_metrics` holds lazily, with their dtypes.
LAZY_UNIT_METRICS = {**ACTIVITY_METRICS, "vessel_overlap_fraction": np.float32}


def metric_parts(spec: Spec, n_units: int, boxes: list | None = None, segments=None) -> dict:
    """What the activity metrics read besides the oracle's frames, lazily: ``cores`` (a Delayed
    :class:`FootprintCores`: :func:`cores_part` per block of units from the ``boxes`` tasks of
    :func:`lazy_footprints`, which the footprints ``A`` of the same Recording share) and
    ``sums`` (a Delayed (3, units) array: the trace moments over the whole recording, one
    small task per segment reading ``segments``, :func:`minisim.render.segment_blocks`, the
    same tasks the C, dF/F and S chunks read, folded in segment order by one task)."""
    from dask.base import tokenize

    sj = spec.model_dump_json()
    T = spec.recording.n_frames
    if boxes is None:
        boxes = lazy_footprints(spec, n_units)["boxes"]
    starts = np.cumsum([0] + [footprint_block_units(spec)] * len(boxes))
    # a plain graph: dask.delayed tokenised every argument of its 121 part tasks (V4), ~0.2 s
    # of simulate()
    token = tokenize(sj, n_units, [b.key for b in boxes])
    part, join = f"cores-part-{token}", f"cores-{token}"
    layer = {(part, i): (_cores_part_task, sj, int(u0), b.key)
             for i, (u0, b) in enumerate(zip(starts, boxes))}
    cores = render.plain_delayed(join, (_cores_join_task, sj, list(layer)), {part: layer}, boxes)
    n_seg = -(-T // activity.SEGMENT_FRAMES)
    # (sum, sum of squares, max) x units, one task per segment, folded in segment order by one
    # task that takes them all
    segments = render.segment_blocks(spec) if segments is None else segments
    moments = f"moments-{tokenize(T, n_units, segments.name)}"
    layer = render.BlockTasks(moments, (n_seg,), _moments_task, segments.name, T)
    sums = render.plain_delayed(f"fold-{moments}", (_fold_moment_parts, list(layer)), {moments: layer}, [segments])
    # and the parts as a dask array (3, units, segments), a block per segment: a save computes
    # them beside the movie's windows, which build the same segments, and folds them at the end
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    below = set(segments.dask.layers)
    name = f"moment-parts-{tokenize(moments)}"
    blocks = {(name, 0, 0, i): (moments, i) for i in range(n_seg)}  # the parts by their keys
    parts = da.Array(HighLevelGraph({**segments.dask.layers, moments: layer, name: blocks},
                                    {**segments.dask.dependencies, moments: below, name: {moments}}),
                     name, ((3,), (n_units,), (1,) * n_seg), dtype=np.float64,
                     meta=np.empty((0, 0, 0), np.float64))
    return {"cores": cores, "sums": sums, "moment_parts": parts}


def _moments_task(index: tuple, segments: str, n_frames: int) -> tuple:
    return (_moments_chunk, (segments, index[0]), n_frames, (0, 0, index[0]))


def _fold_moment_parts(parts: list) -> np.ndarray:
    """:func:`fold_moments` of the (3, units, 1) parts of :func:`_moments_chunk`, in segment order."""
    return fold_moments(np.concatenate(parts, axis=2))


def lazy_activity_metrics(spec: Spec, n_units: int, cores, sums, movie_path: str | None = None,
                          movie=None, done: dict | None = None, pnr=None) -> dict:
    """:data:`ACTIVITY_METRICS` as dask arrays over ``unit_id`` from :func:`metric_parts`'
    ``cores`` and ``sums`` (Delayed, distributed Futures, or their values) and the oracle's batches of
    ORACLE_BATCH frames, a task per :func:`oracle_tasks` (a batch each): rendered here, read
    from the zarr movie at ``movie_path`` (a save that has written the movie of this very Spec:
    the same bytes, without rendering the oracle's 128 frames a second time), or taken from the
    blocks of ``movie`` (the Recording's lazy movie of this Spec) where the oracle reads every
    frame (at most ORACLE_FRAMES): computed with the movie, as a whole Recording is, the
    frames are rendered once, not twice; alone, the blocks it reads are the frames it would
    have rendered, over the field. ``done``: oracle tasks already computed (their index in
    :func:`oracle_tasks` -> the value of :func:`oracle_task`'s Delayed, or its distributed
    Future), read as they are; ``pnr``: :func:`pnr_task`'s value (or Future), likewise."""
    from dask.base import tokenize

    # a plain graph (dask.delayed tokenised the cores and moments handed to it as values);
    # values computed earlier (the last step of a save) go into the graph as they are
    sj = spec.model_dump_json()
    T = spec.recording.n_frames
    if movie_path is not None or movie is None or T > ORACLE_FRAMES or movie.shape[0] != T:
        movie = None
    done = done or {}
    token = tokenize(sj, n_units, movie_path, None if movie is None else movie.name,
                     _key_or_fresh_name(cores), _key_or_fresh_name(sums),
                     sorted((i, _key_or_fresh_name(v)) for i, v in done.items()),
                     None if pnr is None else _key_or_fresh_name(pnr))
    c, m = (x.key if _is_delayed(x) else x for x in (cores, sums))
    batch, pnr_key, both = f"oracle-batch-{token}", f"pnr-{token}", f"activity-metrics-{token}"
    tasks = oracle_tasks(T)
    if movie is None:
        layer = {(batch, i): (_oracle_task, sj, fr.start, fr.stop, c, movie_path)
                 for i, fr in enumerate(tasks) if i not in done}
    else:
        keys, starts = movie.__dask_keys__(), np.cumsum((0,) + movie.chunks[0])
        layer = {}
        for i, fr in enumerate(tasks):
            first = int(np.searchsorted(starts, fr.start, side="right")) - 1
            last = int(np.searchsorted(starts, fr.stop, side="left"))
            layer[(batch, i)] = (_oracle_blocks_task, sj, fr.start, fr.stop, c, keys[first:last],
                                 int(starts[first]))
    batches = [done.get(i, (batch, i)) for i in range(len(tasks))]
    got = render.plain_delayed(both, (_metrics_task, sj, c, batches, m, pnr_key if pnr is None else pnr),
                               {batch: layer, **({pnr_key: {pnr_key: (_pnr_task, sj)}} if pnr is None else {})},
                               [x for x in (cores, sums) if _is_delayed(x)] + ([] if movie is None else [movie]))
    # a row of the task's (variables, units) array each, in a plain graph (a getitem and an
    # astype layer apiece were ~15 % of simulate() of a 40-frame recording)
    out = {}
    for i, (name, dtype) in enumerate(ACTIVITY_METRICS.items()):
        key = f"metric-{name}-{token}"
        out[name] = render.plain_array(key, {(key, 0): (_metric_row, both, i, dtype)}, ((n_units,),),
                                       dtype, (got,))
    return out


def oracle_task(spec: Spec, i: int, cores, movie_path: str):
    """A Delayed of oracle task ``i`` of :func:`oracle_tasks` (its batches, as
    :func:`lazy_activity_metrics` computes them), its frames read from the zarr movie at
    ``movie_path``: computed early, once those frames are written (a long save's early runs,
    beside its later windows), and handed to :func:`lazy_activity_metrics` as ``done``."""
    from dask.base import tokenize

    sj = spec.model_dump_json()
    fr = oracle_tasks(spec.recording.n_frames)[i]
    key = f"oracle-task-{tokenize(sj, i, movie_path, _key_or_fresh_name(cores))}"
    c = cores.key if _is_delayed(cores) else cores
    return render.plain_delayed(key, (_oracle_task, sj, fr.start, fr.stop, c, movie_path), {},
                                [cores] if _is_delayed(cores) else [])


def pnr_task(spec: Spec):
    """A Delayed of the peak-to-noise ratios that :func:`lazy_activity_metrics` computes (they
    read no frame of the movie): computed early, and handed to it as ``pnr``."""
    from dask.base import tokenize

    sj = spec.model_dump_json()
    key = f"pnr-early-{tokenize(sj)}"
    return render.plain_delayed(key, (_pnr_task, sj), {}, [])


def _metric_row(metrics: np.ndarray, i: int, dtype) -> np.ndarray:
    return metrics[i].astype(dtype)


def _is_delayed(x) -> bool:
    from dask.delayed import Delayed

    return isinstance(x, Delayed)


def _key_or_fresh_name(x):
    """What names ``x`` in a graph's token: its key if lazy or a distributed Future, else a fresh random name (a value
    handed in is not hashed: the cores of a V4 recording are megabytes; nor named by its id(),
    which a later value may take while a cluster still holds results under the old name)."""
    import uuid

    return x.key if _is_delayed(x) or _is_future(x) else uuid.uuid4().hex


def _is_future(x) -> bool:
    """Whether ``x`` is a distributed Future (a result left on a cluster: :class:`minisim._compute.Kept`;
    distributed is not imported for this)."""
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(x, distributed.Future)


def lazy_unit_metrics(spec: Spec, n_units: int, boxes: list | None = None, segments=None,
                      parts: dict | None = None, movie=None) -> dict:
    """:data:`LAZY_UNIT_METRICS` as dask arrays over ``unit_id``: the values of
    :func:`cell_metrics`, as a graph of small tasks.

    The footprint cores and the trace moments (:func:`metric_parts`, or ``parts``), the
    oracle's batches of ORACLE_BATCH frames (rendered, registered and read through the cores;
    a task per :func:`oracle_tasks`, a batch each),
    ``pnr`` (first segment) and ``vessel_overlap`` are tasks of their own; the moments are a
    reduction over the segments (a 24-hour recording's 1,700 segments in parallel). The oracle
    and ``pnr`` read the process's World. Nothing here is built per segment, and
    ``simulate()`` computes none of it.
    """
    from dask.base import tokenize

    if parts is None:
        parts = metric_parts(spec, n_units, boxes, segments)
    out = lazy_activity_metrics(spec, n_units, parts["cores"], parts["sums"], movie=movie)
    sj = spec.model_dump_json()
    key = f"vessel_overlap_fraction-{tokenize(sj)}"
    out["vessel_overlap_fraction"] = render.plain_array(key, {(key, 0): (_vessel_overlap_task, sj)},
                                                        ((n_units,),), np.float32)
    return out


def metrics_writer(spec: Spec, n_units: int, parts: dict, metrics: dict) -> dict:
    """For :func:`minisim.store.write_dataset`: the activity metrics computed after the movie
    is written, their oracle reading its frames from the store. ``names``: the dask name of
    each of ``metrics`` (the Recording's lazy :data:`ACTIVITY_METRICS`; used only while the
    Dataset still holds those very arrays); ``parts``: :func:`metric_parts`' Delayed cores and
    moments (``cores``, ``sums``, and ``moment_parts``: a dask array (3, units, segments) of
    each segment's moments, whose first frames are ``moment_starts``, folded into ``sums`` by
    ``fold`` from its blocks in segment order); ``later(movie_path,
    cores, sums, done, pnr)``: the metrics as dask arrays from those (Delayed or values,
    :func:`lazy_activity_metrics`); ``oracle_frames``: the frames of each oracle task;
    ``oracle_task(movie_path, cores, i)``: :func:`oracle_task`; ``pnr()``: :func:`pnr_task`;
    ``release(done)``: this process's World keeps only the segments still read
    (:func:`segments_still_read`)."""
    return {
        "names": {name: metrics[name].name for name in ACTIVITY_METRICS},
        "cores": parts["cores"],
        "sums": parts["sums"],
        "moment_parts": parts["moment_parts"],
        "moment_starts": [i * activity.SEGMENT_FRAMES for i in range(parts["moment_parts"].shape[2])],
        "fold": _fold_moment_parts,
        "later": lambda movie_path, cores, sums, done=None, pnr=None: lazy_activity_metrics(
            spec, n_units, cores, sums, movie_path, done=done, pnr=pnr),
        "pnr": lambda: pnr_task(spec),
        "oracle_frames": oracle_tasks(spec.recording.n_frames),
        "oracle_task": lambda movie_path, cores, i: oracle_task(spec, i, cores, movie_path),
        "release": lambda done: render.release_segments(spec.model_dump_json(), segments_still_read(spec, done)),
    }


def segments_still_read(spec: Spec, done) -> set[int]:
    """The trace segments the activity metrics still read when ``done`` (indices of
    :func:`oracle_tasks`, and "pnr") are computed: those of the oracle's other runs, and the
    first (:func:`peak_snr`) unless "pnr" is done. A save's last step keeps only these in its
    World (``metrics_writer``'s ``release``): an hour's save held three segments there where
    its last run reads one, and a one-minute save holds two (~35 MB of V4 CA1's peak)."""
    L = activity.SEGMENT_FRAMES
    out = {s for i, fr in enumerate(oracle_tasks(spec.recording.n_frames)) if i not in done
           for s in range(fr.start // L, (fr.stop - 1) // L + 1)}
    return out if "pnr" in done else out | {0}


def _cores_part_task(spec_json: str, u0: int, boxes: list) -> tuple:
    return cores_part(render.get_world(spec_json), u0, boxes)


def _cores_join_task(spec_json: str, parts: list) -> FootprintCores:
    return join_cores(render.get_world(spec_json), parts)


def _oracle_task(spec_json: str, t0: int, t1: int, cores: FootprintCores,
                 movie_path: str | None = None) -> list:
    """The oracle on frames [t0, t1) (:func:`oracle_tasks`: whole batches of one run): the
    frames rendered here once (the same bytes as the movie's), or read once from the zarr
    movie at ``movie_path`` when a save has written it (:func:`oracle_on`)."""
    world = render.get_world(spec_json)
    y0, y1, x0, x1 = cores.window
    if movie_path is None:
        movie = render.render_block(world, range(t0, t1), cores.window)
    else:
        import zarr

        from . import store

        movie = store.read_region(zarr.open_array(movie_path, mode="r"),
                                  (slice(t0, t1), slice(y0, y1), slice(x0, x1)))
    return oracle_on(world, range(t0, t1), movie, cores)


def _oracle_blocks_task(spec_json: str, t0: int, t1: int, cores: FootprintCores, blocks: list,
                        first: int) -> list:
    """:func:`_oracle_task` on frames [t0, t1) taken from the movie's ``blocks`` (time, height,
    width; the time blocks holding those frames, the first starting at frame ``first``): the
    same bytes as rendering them over the cores' window (any window of a frame is its crop)."""
    y0, y1, x0, x1 = cores.window
    movie = np.block(blocks) if len(blocks) > 1 or len(blocks[0]) > 1 or len(blocks[0][0]) > 1 \
        else blocks[0][0][0]
    movie = np.ascontiguousarray(movie[t0 - first : t1 - first, y0:y1, x0:x1])
    return oracle_on(render.get_world(spec_json), range(t0, t1), movie, cores)


def oracle_on(world: render.World, frames: range, movie: np.ndarray, cores: FootprintCores) -> list:
    """One :class:`OracleBatch` per batch of ORACLE_BATCH frames from ``frames.start`` (whole
    batches of :func:`oracle_batches`), from ``movie``: those frames over the cores' window."""
    out = []
    for b0 in range(frames.start, frames.stop, ORACLE_BATCH):
        batch = range(b0, min(b0 + ORACLE_BATCH, frames.stop))
        C, f_np = world.traces(batch)
        rigid_um = world.motion(batch).rigid_um if world.spec.motion.enabled else None
        out.append(oracle_batch(world, batch, movie[b0 - frames.start : batch.stop - frames.start],
                                C, f_np, rigid_um, cores))
    return out


def _moments_chunk(block: np.ndarray, n_frames: int, block_id=None) -> np.ndarray:
    """(3, units, 1): :func:`trace_moments_part` of segment ``block_id[2]``'s C (``block``: that
    segment, :func:`minisim.render.segment_blocks`)."""
    seg, L = block_id[2], activity.SEGMENT_FRAMES
    C = block[0].C[:, : min((seg + 1) * L, n_frames) - seg * L]
    return np.stack(trace_moments_part(C))[:, :, None]


def _pnr_task(spec_json: str) -> np.ndarray:
    return peak_snr(render.get_world(spec_json))


def _vessel_overlap_task(spec_json: str) -> np.ndarray:
    return vessel_overlap(render.get_world(spec_json))


def _metrics_task(spec_json: str, cores: FootprintCores, batches: list, sums: np.ndarray,
                  pnr: np.ndarray) -> np.ndarray:
    """:data:`ACTIVITY_METRICS` as one float64 (variables, units) array."""
    world = render.get_world(spec_json)
    batches = [b for task in batches for b in task]  # (each oracle task's batches, in order)
    det = detectability_from(cores, batches, trace_moments(sums, world.n_frames))
    met = _with_rule(world, pnr, det)
    return np.stack([np.asarray(met[name], np.float64) for name in ACTIVITY_METRICS])


# --------------------------------------------------------------------------- detectability
#: The oracle reads this many frames at most: ORACLE_SEGMENTS runs of contiguous frames spread
#: evenly over the recording (all frames of a shorter one). Fixed by the Spec and the length.
ORACLE_FRAMES = 128
ORACLE_SEGMENTS = 4
#: Frames the oracle reads and projects at a time (its batches start at each run's start).
ORACLE_BATCH = 16
#: A cell is detectable when, with its centre inside the field, its oracle trace correlates
#: >= ORACLE_MIN_R with C, its footprint keeps >= COMPACT_MIN_FRACTION of its energy within
#: COMPACT_RADII soma radii of its centre, and its peak dF/F over the local image at its core is
#: >= VISIBLE_MIN_DFF (docs/anatomy.md, "Detectable cells").
ORACLE_MIN_R = 0.8
COMPACT_RADII = 1.5
COMPACT_MIN_FRACTION = 0.5
VISIBLE_MIN_DFF = 0.05
_CORE_FRACTION = 0.2


def oracle_frames(n_frames: int) -> list[range]:
    """The frames the oracle reads: up to ORACLE_SEGMENTS contiguous runs, ORACLE_FRAMES in all.

    >>> oracle_frames(100)
    [range(0, 100)]
    >>> oracle_frames(1000)
    [range(0, 32), range(323, 355), range(645, 677), range(968, 1000)]
    """
    if n_frames <= ORACLE_FRAMES:
        return [range(n_frames)]
    seg = ORACLE_FRAMES // ORACLE_SEGMENTS
    starts = np.linspace(0, n_frames - seg, ORACLE_SEGMENTS).round().astype(int)
    return [range(int(s), int(s) + seg) for s in starts]


def oracle_batches(n_frames: int) -> list[range]:
    """:func:`oracle_frames` cut into batches of ORACLE_BATCH frames from each run's start.

    >>> oracle_batches(40)
    [range(0, 16), range(16, 32), range(32, 40)]
    """
    return [range(t0, min(t0 + ORACLE_BATCH, run.stop))
            for run in oracle_frames(n_frames) for t0 in range(run.start, run.stop, ORACLE_BATCH)]


#: Frames of one oracle task at most (:func:`oracle_tasks`): one batch. Batches of a task
#: would share one read of the movie's chunks (or one render), but the oracle is the last work
#: of a computation or save, and its tasks then run side by side: a 40-frame recording's two
#: tasks of 32 and 8 frames left one of two threads idle for most of the oracle (the 128 px
#: fixture computed 0.117 -> 0.095 s with three tasks; where runs cross a movie chunk, two tasks
#: each read it).
ORACLE_TASK_FRAMES = 16


def oracle_tasks(n_frames: int) -> list[range]:
    """The frames of each oracle task: whole batches of :func:`oracle_batches`, consecutive in
    one run, ORACLE_TASK_FRAMES at most.

    >>> oracle_tasks(40)
    [range(0, 16), range(16, 32), range(32, 40)]
    >>> oracle_tasks(1000)[:3]
    [range(0, 16), range(16, 32), range(323, 339)]
    """
    per = max(ORACLE_TASK_FRAMES // ORACLE_BATCH, 1)
    return [range(run.start + k, min(run.start + k + per * ORACLE_BATCH, run.stop))
            for run in oracle_frames(n_frames) for k in range(0, len(run), per * ORACLE_BATCH)]


def trace_moments_part(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum, sum of squares and maximum per unit (float64) of a block of C (units, frames)."""
    C = np.asarray(C).astype(np.float64)
    if C.shape[1] == 0:
        n = C.shape[0]
        return np.zeros(n), np.zeros(n), np.full(n, -np.inf)
    return C.sum(axis=1), (C * C).sum(axis=1), C.max(axis=1)


def fold_moments(parts: np.ndarray) -> np.ndarray:
    """(3, units): the :func:`trace_moments_part` of every segment ((3, units, segments)),
    sums added in segment order, maxima taken."""
    n = parts.shape[1]
    s1, s2, top = np.zeros(n), np.zeros(n), np.full(n, -np.inf)
    for k in range(parts.shape[2]):
        s1 += parts[0, :, k]
        s2 += parts[1, :, k]
        top = np.maximum(top, parts[2, :, k])
    return np.stack([s1, s2, top])


def trace_moments(sums: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit over every frame: variance, maximum and mean of C, from :func:`fold_moments`."""
    s1, s2, top = sums
    T = n_frames
    mean = s1 / max(T, 1)
    return np.maximum(s2 / max(T, 1) - mean * mean, 0.0), np.where(T > 0, top, 0.0), mean


def _trace_moments(world: render.World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`trace_moments` of the World's whole recording, a segment at a time (eager)."""
    T, L = world.n_frames, activity.SEGMENT_FRAMES
    parts = [np.stack(trace_moments_part(world.traces(range(t0, min(t0 + L, T)))[0]))
             for t0 in range(0, T, L)]
    if not parts:
        parts = [np.stack(trace_moments_part(np.zeros((len(world.scene.cells), 0), np.float32)))]
    return trace_moments(fold_moments(np.stack(parts, axis=2)), T)


@dataclass
class FootprintCores:
    """Per unit, from its footprint as imaged (K V I A over the window): the core (pixels >= 20 %
    of its peak, weighted by A) as rows of a sparse matrix over the window's pixels, its sum and
    sum of squares, and the compactness."""

    window: tuple[int, int, int, int]
    core: sp.csr_matrix        # (units, h w)
    a_sum: np.ndarray
    a_sq: np.ndarray
    compactness: np.ndarray    # float32

    def __post_init__(self) -> None:
        # the pixels some core reads (a third of a V4 field), and the cores over those alone:
        # the oracle reads a frame there only (each row's sums in the same order)
        core = self.core.tocsr()
        core.sum_duplicates()  # (no work for join_cores' rows: marked canonical there)
        core.sort_indices()
        # one compiled pass over a mask of the window's pixels (np.unique and searchsorted took
        # ~0.1 s for V4; numpy's mask, cumsum and gather ~10 ms for the 716k core pixels of a
        # 128 x 128 default field)
        self.pixels, column = _read_columns(core.indices, core.shape[1])
        self.core_px = sp.csr_matrix((core.data, column, core.indptr),
                                     shape=(core.shape[0], len(self.pixels)))


@njit(cache=True, nogil=True, error_model="numpy")
def _read_columns(indices, n_px):
    """The pixels some row reads (ascending, ``indices``' dtype) out of ``n_px``, and each entry's
    column among them: ``indices`` itself (no copy) where every pixel is read."""
    read = np.zeros(n_px, np.bool_)
    for c in indices:
        read[c] = True
    column = np.empty(n_px, indices.dtype)  # a read pixel's column among them
    n = 0
    for p in range(n_px):
        column[p] = n
        n += read[p]
    pixels = np.empty(n, indices.dtype)
    for p in range(n_px):
        if read[p]:
            pixels[column[p]] = p
    if n == n_px:
        return pixels, indices
    out = np.empty_like(indices)
    for jj in range(indices.shape[0]):
        out[jj] = column[indices[jj]]
    return pixels, out


def footprint_cores(world: render.World) -> FootprintCores:
    """:class:`FootprintCores` of every unit, one unit's footprint box at a time
    (:meth:`minisim.scene.Scene.footprint_box`: the scene's own sparse images, never the whole
    field per unit)."""
    sc = world.scene
    window = _cores_window(world)
    boxes = [sc.footprint_box(u, window) for u in range(len(sc.cells))]
    return join_cores(world, [cores_part(world, 0, boxes)])


def _cores_window(world: render.World) -> tuple[int, int, int, int]:
    sc = world.scene
    return sc.window if sc.window is not None else (0, world.spec.sensor.height_px, 0, world.spec.sensor.width_px)


def cores_part(world: render.World, u0: int, boxes: list) -> tuple:
    """The cores of units u0, u0 + 1, ... from their footprint boxes over the cores' window
    (:meth:`Scene.footprint_box`, None for none): ``(u0, counts, cols, vals, a_sum, a_sq,
    compactness)``: per unit its number of core pixels, then every core pixel's flat window
    index (int32 where the window allows, a unit's ascending) and value (float32) in unit
    order, and per unit the sum and sum of squares of its core (:func:`_unit_core_into`) and
    its compactness. One compiled call per unit, each writing into one buffer for the block
    (numpy's calls per unit were most of the time: ~0.14 ms a unit, 1,936 units for V4; then
    the per-unit arrays' concatenation and scipy's sums in :func:`join_cores`)."""
    spec, sc = world.spec, world.scene
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    y0, y1, x0, x1 = _cores_window(world)
    K = np.float32(spec.sensor.gain_adu_per_e)
    c = sc.cells
    m = len(boxes)
    units = np.arange(u0, u0 + m)
    vi = np.ascontiguousarray((K * sc.vignette * sc.illumination)[y0:y1, x0:x1])
    cy = pixel_index(c.y_um[units], H, d) - y0  # in window pixels
    cx = pixel_index(c.x_um[units], W, d) - x0
    reach = COMPACT_RADII * c.radius_um[units] / d
    counts = np.zeros(m, np.int64)
    a_sum, a_sq = np.zeros(m), np.zeros(m)
    compactness = np.zeros(m, np.float32)
    # room for every box's pixels: only the pages the cores fill are ever touched
    room = sum(got[1].size for got in boxes if got is not None)
    cols = np.empty(room, _index_dtype((y1 - y0) * (x1 - x0)))
    vals = np.empty(room, np.float32)
    fraction = np.float32(_CORE_FRACTION)
    at = 0
    for k, got in enumerate(boxes):
        if got is None:
            continue
        (by0, _, bx0, _), box = got
        n, comp, s, q = _unit_core_into(vi, box, by0 - y0, bx0 - x0, float(cy[k]), float(cx[k]),
                                        float(reach[k]), fraction, cols, vals, at)
        if comp < 0:  # no light (or a NaN) in its box
            continue
        counts[k], a_sum[k], a_sq[k], compactness[k] = n, s, q, comp
        at += n
    return u0, counts, cols[:at], vals[:at], a_sum, a_sq, compactness


def _index_dtype(n: int) -> type:
    """scipy's index dtype for indices below ``n``: int32 where they fit."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


@njit(cache=True, nogil=True, error_model="numpy")
def _unit_core(vi, box, oy, ox, cy, cx, reach, fraction):
    """One unit's core and compactness from its box at (oy, ox) of the window (``vi``: gain x
    vignette x illumination there): the flat window indices and values (float32) of the
    pixels of K V I A >= ``fraction`` of its peak, in row-major order, and the share of the
    footprint's energy within ``reach`` px of (cy, cx), float32 (0 where that disc misses the
    window); a compactness of -1 where the peak is not > 0 or NaN. The energies are summed
    pairwise in numpy's order (:func:`_pairwise_sum_sq`), so the values are those of the
    numpy expressions ``(fp.astype(np.float64) ** 2).sum()`` and ``(part[near] ** 2).sum()``.
    (:func:`_unit_core_into` into arrays of its own.)"""
    cols = np.empty(box.shape[0] * box.shape[1], np.int64)
    vals = np.empty(box.shape[0] * box.shape[1], np.float32)
    n, comp, _, _ = _unit_core_into(vi, box, oy, ox, cy, cx, reach, fraction, cols, vals, 0)
    return cols[:n].copy(), vals[:n].copy(), comp


@njit(cache=True, nogil=True, error_model="numpy")
def _unit_core_into(vi, box, oy, ox, cy, cx, reach, fraction, cols, vals, at):
    """:func:`_unit_core` written at ``cols[at:]`` and ``vals[at:]``: (the number of core
    pixels, the compactness, the sum and the sum of squares of the core's values). The sums
    are what ``join_cores`` took from scipy before, float32 as ``core.sum(axis=1)`` and
    ``core.multiply(core).sum(axis=1)`` give a row (:func:`_row_sum32`: numpy's reduceat of
    the values, and of their float32 squares with the zeros scipy's product drops), as
    float64: the same bytes without a pass over the whole matrix."""
    h, w = vi.shape
    bh, bw = box.shape
    fp = np.empty(bh * bw, np.float32)  # row-major
    for i in range(bh):
        for j in range(bw):
            fp[i * bw + j] = vi[oy + i, ox + j] * box[i, j]
    # the peak over four interleaved maxima (one chain of maxima was ~40 % of the call; a NaN is
    # caught apart, and a peak > 0 is the same whatever the order)
    p0 = p1 = p2 = p3 = np.float32(-np.inf)
    nan = False
    q, size = 0, bh * bw
    while q + 4 <= size:
        a0, a1, a2, a3 = fp[q], fp[q + 1], fp[q + 2], fp[q + 3]
        nan |= np.isnan(a0) | np.isnan(a1) | np.isnan(a2) | np.isnan(a3)
        p0, p1, p2, p3 = max(p0, a0), max(p1, a1), max(p2, a2), max(p3, a3)
        q += 4
    while q < size:
        nan |= np.isnan(fp[q])
        p0 = max(p0, fp[q])
        q += 1
    peak = max(max(p0, p1), max(p2, p3))
    if nan or not peak > 0:
        return 0, np.float32(-1.0), 0.0, 0.0
    thr = fraction * peak
    n = 0
    for i in range(bh):
        for j in range(bw):
            v = fp[i * bw + j]
            if v >= thr:
                cols[at + n] = (i + oy) * w + (j + ox)
                vals[at + n] = v
                n += 1
    sq = np.empty(n, np.float32)
    n_sq = 0
    for jj in range(at, at + n):
        s = vals[jj] * vals[jj]  # float32, as scipy's elementwise product
        if s != 0:
            sq[n_sq] = s
            n_sq += 1
    a_sum, a_sq = np.float64(_row_sum32(vals, at, n)), np.float64(_row_sum32(sq, 0, n_sq))
    # energy within ``reach`` of the centre: a small box of window pixels (0 outside the unit's box)
    ya, yb = max(int(cy - reach), 0), min(int(cy + reach) + 2, h)
    xa, xb = max(int(cx - reach), 0), min(int(cx + reach) + 2, w)
    if not (ya < yb and xa < xb):
        return n, np.float32(0.0), a_sum, a_sq
    energy = _pairwise_sum_sq(fp, 0, bh * bw)
    near = np.empty((yb - ya) * (xb - xa), np.float32)
    m = 0
    r2 = reach * reach
    for yy in range(ya, yb):
        for xx in range(xa, xb):
            dy, dx = np.float64(yy) - cy, np.float64(xx) - cx
            if dy * dy + dx * dx <= r2:
                i, j = yy - oy, xx - ox
                near[m] = fp[i * bw + j] if 0 <= i < bh and 0 <= j < bw else np.float32(0.0)
                m += 1
    return n, np.float32(_pairwise_sum_sq(near, 0, m) / energy), a_sum, a_sq


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise_sum_sq(a, lo, n):
    """The sum of the squares of a[lo : lo + n] as float64, in the order of numpy's pairwise
    summation of a contiguous array, so the result is bit for bit numpy's
    ``(a[lo : lo + n].astype(np.float64) ** 2).sum()`` (:func:`_pairwise_walk`)."""
    return _pairwise_walk(a, lo, n, True)


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise_walk(a, lo, n, square):
    """numpy's pairwise summation of a[lo : lo + n] (eight accumulators over blocks of at most
    128, halves split on a multiple of 8): of the float64 squares (``square``,
    :func:`_block_sum_sq`), else of the float32 values with float32 sums (:func:`_block_sum32`;
    each partial sum held exactly as a float64 and the halves added in float32). The halves
    are walked with a stack of their own (numba's cache crashes on recursive functions)."""
    if n <= 128:
        return _block_sum_sq(a, lo, n) if square else np.float64(_block_sum32(a, lo, n))
    depth = 64
    at, size, stage = np.empty(depth, np.int64), np.empty(depth, np.int64), np.empty(depth, np.int64)
    sums = np.empty(depth, np.float64)
    top, got = 0, 0
    at[0], size[0], stage[0] = lo, n, 0
    while top >= 0:
        m = size[top]
        if m <= 128:
            sums[got] = _block_sum_sq(a, at[top], m) if square else np.float64(_block_sum32(a, at[top], m))
            got += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[top] == 0:  # its first half next
            stage[top] = 1
            top += 1
            at[top], size[top], stage[top] = at[top - 1], half, 0
        elif stage[top] == 1:  # then its second
            stage[top] = 2
            top += 1
            at[top], size[top], stage[top] = at[top - 1] + half, m - half, 0
        else:  # both summed: first + second
            got -= 1
            if square:
                sums[got - 1] = sums[got - 1] + sums[got]
            else:
                sums[got - 1] = np.float64(np.float32(sums[got - 1]) + np.float32(sums[got]))
            top -= 1
    return sums[0]


@njit(cache=True, nogil=True, error_model="numpy")
def _block_sum_sq(a, lo, n):
    """numpy's pairwise sum of the squares of a block of at most 128 (:func:`_pairwise_sum_sq`)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += _sq(a[i])
        return res
    r0, r1, r2, r3 = _sq(a[lo]), _sq(a[lo + 1]), _sq(a[lo + 2]), _sq(a[lo + 3])
    r4, r5, r6, r7 = _sq(a[lo + 4]), _sq(a[lo + 5]), _sq(a[lo + 6]), _sq(a[lo + 7])
    i, top = 8, n - n % 8
    while i < top:
        r0 += _sq(a[lo + i])
        r1 += _sq(a[lo + i + 1])
        r2 += _sq(a[lo + i + 2])
        r3 += _sq(a[lo + i + 3])
        r4 += _sq(a[lo + i + 4])
        r5 += _sq(a[lo + i + 5])
        r6 += _sq(a[lo + i + 6])
        r7 += _sq(a[lo + i + 7])
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += _sq(a[lo + i])
        i += 1
    return res


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sq(x):
    e = np.float64(x)
    return e * e


@njit(cache=True, nogil=True, error_model="numpy")
def _row_sum32(a, lo, n):
    """The float32 sum of a[lo : lo + n] as numpy's ``np.add.reduceat`` (so scipy's row sums
    of a float32 csr matrix) takes a row: its first value, plus numpy's float32 pairwise sum of
    the rest (:func:`_pairwise_sum32`); 0 for none."""
    if n == 0:
        return np.float32(0.0)
    first = a[lo]
    if n == 1:
        return first
    return first + _pairwise_sum32(a, lo + 1, n - 1)


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise_sum32(a, lo, n):
    """numpy's pairwise sum of the float32 a[lo : lo + n] with float32 accumulators, bit for bit
    (:func:`_pairwise_walk` without the squares)."""
    return np.float32(_pairwise_walk(a, lo, n, False))


@njit(cache=True, nogil=True, error_model="numpy")
def _block_sum32(a, lo, n):
    """numpy's float32 pairwise sum of a block of at most 128 (:func:`_pairwise_sum32`)."""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i, top = 8, n - n % 8
    while i < top:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


def join_cores(world: render.World, parts: list) -> FootprintCores:
    """:class:`FootprintCores` of every unit from the :func:`cores_part` of consecutive blocks
    of units, in unit order: their pixels as they are (a row's ascending and distinct, so the
    csr matrix is marked canonical: no scipy pass over it), the sums per unit from the parts."""
    window = _cores_window(world)
    y0, y1, x0, x1 = window
    n = len(world.scene.cells)
    parts = sorted(parts, key=lambda p: p[0])
    counts = np.zeros(n, np.int64)
    a_sum, a_sq = np.zeros(n), np.zeros(n)
    compactness = np.zeros(n, np.float32)
    for u0, c, _, _, s, q, comp in parts:
        counts[u0 : u0 + len(c)], a_sum[u0 : u0 + len(c)], a_sq[u0 : u0 + len(c)] = c, s, q
        compactness[u0 : u0 + len(c)] = comp
    if len(parts) == 1:  # (one part for an eager World: its arrays as they are)
        cols, vals = parts[0][2], parts[0][3]
    else:
        cols = np.concatenate([p[2] for p in parts] or [np.zeros(0, _index_dtype((y1 - y0) * (x1 - x0)))])
        vals = np.concatenate([p[3] for p in parts] or [np.zeros(0, np.float32)])
    indptr = np.zeros(n + 1, _index_dtype(max(len(cols), (y1 - y0) * (x1 - x0))))
    np.cumsum(counts, out=indptr[1:])
    core = sp.csr_matrix((vals, cols, indptr), shape=(n, (y1 - y0) * (x1 - x0)))
    core.has_canonical_format = True
    return FootprintCores(window, core, a_sum, a_sq, compactness)


@dataclass
class OracleBatch:
    """What the oracle keeps of a batch of frames: the residual through each core (units,
    frames), C there (units, frames) and the core-weighted image summed over the frames."""

    err: np.ndarray
    C: np.ndarray
    image: np.ndarray
    n_frames: int


def registered_at(movie: np.ndarray, shift_px: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(frames, pixels) float32: each frame of ``movie`` (frames, h, w) moved back by its rigid
    shift (dy, dx) in px, read at flat pixel indices ``pixels`` alone: frame t at (i, j) is the
    bilinear value at (i + dy_t, j + dx_t), positions clamped to the frame (its edge values
    beyond it). That is ``scipy.ndimage.shift(frame, -shift, order=1, mode="nearest")`` at those
    pixels, without moving the pixels nobody reads (two thirds of a V4 field)."""
    k, _, w = movie.shape
    out = np.empty((k, len(pixels)), np.float32)
    pixels = np.asarray(pixels, np.int64)
    _registered_at(np.ascontiguousarray(movie), np.ascontiguousarray(shift_px, np.float64),
                   pixels // w, pixels % w, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _registered_at(movie, shift_px, py, px, out):
    """:func:`registered_at` at the pixels (py[n], px[n]) into out[t, n]."""
    k, h, w = movie.shape
    ra, rb, fy, gy, xa, xb, fx, gx = _shift_tables(shift_px, k, h, w)
    f = movie.ravel()
    for n in range(py.shape[0]):
        i, j = np.uint64(py[n]), np.uint64(px[n])  # (unsigned: no wraparound tests)
        for t in range(k):
            out[t, n] = _bilinear(f, ra, rb, fy, gy, xa, xb, fx, gx, i, j, t)


@njit(cache=True, nogil=True, error_model="numpy")
def _shift_tables(shift_px, k, h, w):
    """Per row (column) and frame of a (k, h, w) movie moved back by a rigid shift per frame:
    the flat offsets of the rows (columns) of the two corners a pixel's bilinear value reads
    and their weights. A frame's shift is one (dy, dx), so along y a pixel's clamped position,
    corners and weights depend on its row alone, along x on its column alone: taken once per
    row and column (the same float64 steps :func:`registered_at` took per pixel, so the same
    values), leaving four reads and the blend per pixel and frame (:func:`_bilinear`)."""
    ra, rb = np.empty((h, k), np.uint64), np.empty((h, k), np.uint64)
    fy, gy = np.empty((h, k)), np.empty((h, k))
    xa, xb = np.empty((w, k), np.uint64), np.empty((w, k), np.uint64)
    fx, gx = np.empty((w, k)), np.empty((w, k))
    for t in range(k):
        dy, dx = shift_px[t, 0], shift_px[t, 1]
        for i in range(h):
            c = min(max(np.float64(i) + dy, 0.0), h - 1.0)
            a = np.int64(np.floor(c))
            ra[i, t] = (t * h + a) * w
            rb[i, t] = (t * h + min(a + 1, h - 1)) * w
            fy[i, t] = c - a
            gy[i, t] = 1.0 - fy[i, t]
        for j in range(w):
            c = min(max(np.float64(j) + dx, 0.0), w - 1.0)
            a = np.int64(np.floor(c))
            xa[j, t] = a
            xb[j, t] = min(a + 1, w - 1)
            fx[j, t] = c - a
            gx[j, t] = 1.0 - fx[j, t]
    return ra, rb, fy, gy, xa, xb, fx, gx


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bilinear(f, ra, rb, fy, gy, xa, xb, fx, gx, i, j, t):
    """The registered value (float32) of pixel (i, j) in frame t of the flat movie ``f``
    (:func:`_shift_tables`)."""
    return np.float32(gy[i, t] * (gx[j, t] * np.float64(f[ra[i, t] + xa[j, t]]) + fx[j, t] * np.float64(f[ra[i, t] + xb[j, t]]))
                      + fy[i, t] * (gx[j, t] * np.float64(f[rb[i, t] + xa[j, t]]) + fx[j, t] * np.float64(f[rb[i, t] + xb[j, t]])))


def oracle_batch(world: render.World, frames: range, movie: np.ndarray, C: np.ndarray,
                 f_np: np.ndarray, rigid_um: np.ndarray | None, cores: FootprintCores) -> OracleBatch:
    """The oracle on ``frames`` of the movie (uint16, the cores' window): registered by the true
    rigid displacement ``rigid_um`` (None without motion), the true model subtracted, read
    through each unit's core (:func:`detectability`)."""
    spec, sc = world.spec, world.scene
    y0, y1, x0, x1 = cores.window
    K = np.float32(spec.sensor.gain_adu_per_e)
    vi = (K * sc.vignette * sc.illumination)[y0:y1, x0:x1]
    level = np.float32(spec.sensor.offset_adu) + K * np.float32(spec.sensor.dark_current_e_per_s / spec.recording.fps)
    k, _, w = movie.shape
    # the true model at the core pixels alone (the values the whole window's model has there)
    px = cores.pixels
    tissue = sc.tissue_at(C, f_np, (y0, y1, x0, x1), px)
    vi_px, glow_px = vi.ravel()[px], (K * sc.vignette * sc.glow_e)[y0:y1, x0:x1].ravel()[px]
    if np.result_type(vi_px, tissue, glow_px, level) != np.float32:
        raise TypeError("the oracle's model is float32")
    # per core pixel: its residual, every frame side by side (one read per core pixel in
    # _core_sums), float32 as it was (the products and sums there are float64, without float64
    # copies), and Y summed over the frames (float64)
    rows = np.empty((len(px), k), np.float32)
    y_sum = np.empty(len(px))
    shift_px = np.zeros((0, 2)) if rigid_um is None else rigid_um / spec.pixel_size_um
    pixels = np.asarray(px, np.int64)
    _oracle_rows(np.ascontiguousarray(movie), np.ascontiguousarray(shift_px, np.float64), pixels // w,
                 pixels % w, level, vi_px, tissue, glow_px, rows, y_sum)
    core = cores.core_px
    err, image = np.empty((core.shape[0], k)), np.empty(core.shape[0])
    _core_sums(core.indptr, core.indices, core.data, rows, y_sum, cores.a_sq, err, image)
    return OracleBatch(err, C.astype(np.float64), image, k)


@njit(cache=True, nogil=True, error_model="numpy")
def _oracle_rows(movie, shift_px, py, px, level, vi_px, tissue, glow_px, rows, y_sum):
    """Per pixel (py[n], px[n]) of the (k, h, w) movie: rows[n] = the k frames of the residual
    Y - model (float32) and y_sum[n] = the sum of Y over the frames (float64, frame by frame):
    Y the frame registered by ``shift_px`` (:func:`registered_at`; the frame as it is for no
    shifts, an empty ``shift_px``) less ``level``, the model vi_px * tissue + glow_px; each the
    float32 step numpy took on the whole arrays, in one pass (the registration, subtractions
    and transposes were ~0.4 of an oracle batch of V4 beside the products)."""
    k, h, w = movie.shape
    shifted = shift_px.shape[0] > 0
    ra, rb, fy, gy, xa, xb, fx, gx = _shift_tables(shift_px, k if shifted else 0, h, w)
    f = movie.ravel()
    uh, uw = np.uint64(h), np.uint64(w)
    for n in range(py.shape[0]):
        i, j = np.uint64(py[n]), np.uint64(px[n])  # (unsigned: no wraparound tests)
        a, g = vi_px[n], glow_px[n]
        o = rows[n]
        s = 0.0
        for t in range(k):
            if shifted:
                v = _bilinear(f, ra, rb, fy, gy, xa, xb, fx, gx, i, j, t)
            else:
                v = np.float32(f[(np.uint64(t) * uh + i) * uw + j])
            y = v - level
            s += np.float64(y)
            o[t] = y - (a * tissue[t, n] + g)
        y_sum[n] = s


@njit(cache=True, nogil=True, error_model="numpy")
def _core_sums(indptr, indices, data, rows, y_sum, a_sq, err, image):
    """Through each core (csr rows ``indptr``, ``indices``, ``data``): err = core @ rows / a_sq
    (units, k) from the residual ``rows`` (pixels, k), bit for bit scipy's expression (float64
    products and sums, each unit's pixels in order per frame as scipy's ``csr_matvecs``, the
    frames innermost, vectorised), and image = core @ y_sum (units,), the registered image
    summed over the frames, read through the core (float64, pixels in order). One pass over the
    cores for both (scipy's two took ~0.7 of the oracle's time), without float64 copies of the
    frames; four pixels per pass over a unit's sums (each added in turn: the same order), a
    quarter of the loads and stores of the sums. (Up to render algorithm 7 the image was read
    through the core frame by frame and then summed: twice the products, for a sum that
    differs from this one in the last bits only.)"""
    n = indptr.shape[0] - 1
    k = rows.shape[1]
    acc = np.empty(k, np.float64)
    for i in range(n):
        for t in range(k):
            acc[t] = 0.0
        im = 0.0
        jj, j1 = indptr[i], indptr[i + 1]
        while jj + 4 <= j1:
            a0, a1 = np.float64(data[jj]), np.float64(data[jj + 1])
            a2, a3 = np.float64(data[jj + 2]), np.float64(data[jj + 3])
            # (unsigned indices: no wraparound test per read)
            p0, p1 = np.uint64(indices[jj]), np.uint64(indices[jj + 1])
            p2, p3 = np.uint64(indices[jj + 2]), np.uint64(indices[jj + 3])
            r0, r1, r2, r3 = rows[p0], rows[p1], rows[p2], rows[p3]
            for t in range(k):
                acc[t] = (((acc[t] + a0 * np.float64(r0[t])) + a1 * np.float64(r1[t]))
                          + a2 * np.float64(r2[t])) + a3 * np.float64(r3[t])
            im = (((im + a0 * y_sum[p0]) + a1 * y_sum[p1]) + a2 * y_sum[p2]) + a3 * y_sum[p3]
            jj += 4
        while jj < j1:
            a, p = np.float64(data[jj]), np.uint64(indices[jj])
            r = rows[p]
            for t in range(k):
                acc[t] += a * np.float64(r[t])
            im += a * y_sum[p]
            jj += 1
        for t in range(k):
            err[i, t] = acc[t] / a_sq[i]
        image[i] = im


def detectability(world: render.World) -> dict[str, np.ndarray]:
    """Per unit: ``oracle_r``, ``compactness`` and ``visibility`` (float32), from the movie as rendered.

    - *oracle trace*: the best trace any pipeline could extract. On the frames of
      :func:`oracle_frames`, rendered with motion and noise (:func:`render.render_block`), each
      frame is shifted back by the true rigid displacement (a perfect rigid registration); from
      it the true model (offset, background b.f and every unit's A.C, unmoved) is subtracted,
      and the residual is read through the cell's footprint core (pixels >= 20 % of its peak,
      weighted by A): o_t = C_t + e_t. What registration cannot undo (non-rigid warp, focus
      drift, vasomotion), noise and crosstalk stay in e_t. ``oracle_r`` is the correlation of
      o with C over the whole recording. In the sampled frames e is regressed on C,
      e = beta C + n (beta = cov(C, e) / var C there, 0 for a C constant there; var n = var e -
      beta cov(C, e), at least 0); over the whole recording o = (1 + beta) C + n, so
      ``oracle_r`` = (1 + beta) var C / sqrt(var C ((1 + beta)^2 var C + var n)), with var C from
      every frame: a correlation, in [-1, 1] however much more C varies in the sample than
      overall, and a cell silent in the sample is judged by its noise against its whole trace;
      0 for a constant C. (Render algorithm 4; before, cov(C, e) and var e from the sample were
      mixed with var C from every frame, which could pass 1.)
    - *compactness*: the share of the footprint's energy (sum of A^2 in the field) within 1.5
      soma radii of the cell's centre: low when scattered or defocused light dominates.
    - *visibility*: the cell's peak dF/F at its core, (max C - mean C) times its mean A there,
      over the mean (registered) image there, offset removed: low beside a much brighter
      neighbour or in a bright background.

    A World built for a window is judged on that window alone. Here the oracle's frames are
    rendered from ``world``; a Recording reads them from its movie (:func:`lazy_unit_metrics`),
    the same bytes.
    """
    cores = footprint_cores(world)
    # a batch rendered at a time (a studio count may be stopped between any two renders)
    batches = [b for frames in oracle_batches(world.n_frames)
               for b in oracle_on(world, frames, render.render_block(world, frames, cores.window), cores)]
    return detectability_from(cores, batches, _trace_moments(world))


def detectability_from(cores: FootprintCores, batches: list, moments: tuple) -> dict[str, np.ndarray]:
    """:func:`detectability`'s measures from the cores, the oracle batches (in order) and the
    trace moments (:func:`trace_moments`)."""
    n = cores.core.shape[0]
    image = np.zeros(n)
    n_read = 0
    for b in batches:
        image += b.image
        n_read += b.n_frames
    e = np.concatenate([b.err for b in batches], axis=1) if batches else np.zeros((n, 0))
    cs = np.concatenate([b.C for b in batches], axis=1) if batches else np.zeros((n, 0))
    e -= e.mean(axis=1, keepdims=True)
    cs -= cs.mean(axis=1, keepdims=True)
    var_e, cov_s, var_cs = (e * e).mean(axis=1), (e * cs).mean(axis=1), (cs * cs).mean(axis=1)
    var_c, top, mean_c = moments
    swing = top - mean_c
    a_sq, a_sum = cores.a_sq, cores.a_sum
    with np.errstate(invalid="ignore", divide="ignore"):
        # e = beta C + n within the sample (n uncorrelated with C there); carried to the whole
        # recording, o = (1 + beta) C + n: a correlation, in [-1, 1] whatever the sample's var C
        has_c = var_cs > 0
        beta = np.where(has_c, cov_s / np.where(has_c, var_cs, 1.0), 0.0)
        var_n = np.maximum(var_e - beta * cov_s, 0.0)
        g = 1.0 + beta
        r = g * var_c / np.sqrt(var_c * (var_c * g * g + var_n))
        vis = (a_sq / a_sum) * swing / (image / max(n_read, 1) / a_sum)
    ok = (a_sq > 0) & (var_c > 0)
    return {
        "oracle_r": np.clip(np.where(ok & np.isfinite(r), r, 0.0), -1.0, 1.0).astype(np.float32),
        "compactness": cores.compactness,
        "visibility": np.where((a_sq > 0) & np.isfinite(vis) & (vis > 0), vis, 0.0).astype(np.float32),
    }
