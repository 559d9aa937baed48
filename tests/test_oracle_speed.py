"""The compiled oracle and footprint cores are the scipy and numpy expressions they replace, bit
for bit: the products through the cores (the image through each core, since render algorithm 8:
the frames summed per pixel, then read through the core), the cores' row sums, the pixels they
read, the registration, and whole oracle batches and cores of a small World against the scipy
code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import small_spec

from minisim import render, truth
from minisim.scene.optics import pixel_index


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _random_cores(g, n_units, n_px, dtype=np.float32):
    """A csr matrix as the cores are: rows of ascending distinct pixels, a few empty, lengths
    of every remainder modulo 4, values across decades."""
    rows = []
    for u in range(n_units):
        m = 0 if u % 7 == 3 else int(g.integers(1, min(n_px, 300)))
        rows.append(np.sort(g.choice(n_px, m, replace=False)))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    indices = np.concatenate(rows).astype(np.int32)
    data = (g.random(len(indices)) ** 3 * 10.0 ** g.integers(-3, 4, len(indices))).astype(dtype)
    return sp.csr_matrix((data, indices, indptr), shape=(n_units, n_px))


# ----------------------------------------------------------------------------- products
@pytest.mark.parametrize("k", [1, 3, 4, 8, 16, 17])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_core_sums_are_scipys_products_bit_for_bit(k, dtype):
    g = np.random.default_rng(k)
    core = _random_cores(g, 40, 500, dtype)
    Y = (g.normal(300.0, 50.0, (k, 500))).astype(np.float32)
    resid = (Y - g.normal(300.0, 50.0, (k, 500)).astype(np.float32)).astype(np.float32)
    a_sq = g.random(40) + 0.5
    a_sq[[1, 3]] = 0.0  # an empty core: 0 / 0, and x / 0
    rows = np.ascontiguousarray(resid.T)
    y_sum = _frame_sum(Y)
    err, image = np.empty((40, k)), np.empty(40)
    truth._core_sums(core.indptr, core.indices, core.data, rows, y_sum, a_sq, err, image)
    with np.errstate(invalid="ignore", divide="ignore"):
        want_err = np.asarray(core @ np.ascontiguousarray(resid.T, np.float64)) / a_sq[:, None]
    assert _same(err, want_err)
    assert _same(image, core @ y_sum)  # scipy's float64 product, each row's pixels in order
    assert np.isnan(err[3]).all() and np.isfinite(err).sum() > 0
    assert image[3] == 0.0 and (image != 0).sum() > 30


def _frame_sum(Y: np.ndarray) -> np.ndarray:
    """Per pixel, Y (frames, pixels) summed over the frames in float64, one frame after the
    other (a cumulative sum: numpy's ``sum`` pairs them up)."""
    return np.cumsum(Y.astype(np.float64), axis=0)[-1]


# ----------------------------------------------------------------------------- row sums
def test_row_sums_are_scipys_row_sums_of_the_core_and_its_square():
    """float32 as scipy's ``core.sum(axis=1)`` and ``core.multiply(core).sum(axis=1)`` (numpy's
    reduceat: the first value, then the pairwise sum of the rest), with squares that underflow
    to 0 (scipy's product drops them)."""
    g = np.random.default_rng(2)
    for n in (0, 1, 2, 7, 8, 9, 15, 16, 17, 128, 129, 130, 255, 256, 257, 1000, 5000, 20001):
        v = (g.random(n) ** 4 * 1e3).astype(np.float32)
        if n > 3:
            v[[1, n // 2]] = np.float32(1e-30)  # its square is 0 in float32
        core = sp.csr_matrix((v, np.arange(n, dtype=np.int32), np.array([0, n], np.int32)), shape=(1, max(n, 1)))
        sq = v * v
        sq = sq[sq != 0]
        assert truth._row_sum32(v, 0, n) == np.float32(np.asarray(core.sum(axis=1))[0, 0]), n
        assert truth._row_sum32(sq, 0, len(sq)) == np.float32(np.asarray(core.multiply(core).sum(axis=1))[0, 0]), n
        assert truth._pairwise_sum32(v, 0, n) == (v.sum() if n else np.float32(0.0)), n


def test_read_columns_is_the_mask_and_cumsum_it_replaces():
    g = np.random.default_rng(4)
    for n_px, share in ((1000, 0.3), (1000, 1.0), (50, 0.0)):
        core = _random_cores(g, 30, n_px) if share else sp.csr_matrix((30, n_px), dtype=np.float32)
        if share == 1.0:  # every pixel read by some row
            core = sp.csr_matrix(sp.vstack([core, sp.csr_matrix(np.ones((1, n_px), np.float32))]))
        read = np.zeros(n_px, bool)
        read[core.indices] = True
        column = np.cumsum(read) - 1
        pixels, cols = truth._read_columns(core.indices, n_px)
        assert _same(pixels, np.flatnonzero(read).astype(core.indices.dtype))
        assert np.array_equal(cols, column[core.indices]) and cols.dtype == core.indices.dtype
        if share == 1.0:
            assert cols is core.indices


# ----------------------------------------------------------------------------- registration
def _registered_per_pixel(movie, shift_px, pixels):
    """The registration as it was computed: every float64 step per pixel."""
    k, h, w = movie.shape
    py, px = (pixels // w).astype(np.float64), (pixels % w).astype(np.float64)
    out = np.empty((k, len(pixels)), np.float32)
    for t in range(k):
        cy = np.minimum(np.maximum(py + shift_px[t, 0], 0.0), h - 1.0)
        cx = np.minimum(np.maximum(px + shift_px[t, 1], 0.0), w - 1.0)
        ya, xa = np.floor(cy).astype(np.int64), np.floor(cx).astype(np.int64)
        yb, xb = np.minimum(ya + 1, h - 1), np.minimum(xa + 1, w - 1)
        fy, fx = cy - ya, cx - xa
        m = movie[t].astype(np.float64)
        out[t] = ((1.0 - fy) * ((1.0 - fx) * m[ya, xa] + fx * m[ya, xb])
                  + fy * ((1.0 - fx) * m[yb, xa] + fx * m[yb, xb]))
    return out


def test_registration_per_row_and_column_is_the_per_pixel_registration_bit_for_bit():
    g = np.random.default_rng(6)
    movie = g.integers(0, 4000, (5, 23, 31)).astype(np.uint16)
    shift = np.array([[0.3, -1.7], [-2.25, 4.5], [25.0, -30.0], [1e-9, -0.49999999], [-0.0, 0.0]])
    pixels = np.sort(g.choice(23 * 31, 200, replace=False))
    assert _same(truth.registered_at(movie, shift, pixels), _registered_per_pixel(movie, shift, pixels))


@pytest.mark.parametrize("moved", [True, False])
def test_oracle_rows_are_the_numpy_steps(moved):
    g = np.random.default_rng(7)
    k, h, w = 6, 17, 19
    movie = g.integers(0, 4000, (k, h, w)).astype(np.uint16)
    pixels = np.sort(g.choice(h * w, 150, replace=False)).astype(np.int32)
    shift = g.normal(0.0, 3.0, (k, 2))
    level = np.float32(100.0) + np.float32(0.37)
    vi_px = g.random(150).astype(np.float32) + np.float32(0.5)
    tissue = (g.random((k, 150)) * 500).astype(np.float32)
    glow_px = (g.random(150) * 20).astype(np.float32)
    if moved:
        Y = truth.registered_at(movie, shift, pixels) - level
    else:
        Y = movie.reshape(k, -1)[:, pixels].astype(np.float32) - level
    model = vi_px * tissue + glow_px
    rows, y_sum = np.empty((150, k), np.float32), np.empty(150)
    p = pixels.astype(np.int64)
    truth._oracle_rows(movie, shift if moved else np.zeros((0, 2)), p // w, p % w, level, vi_px, tissue,
                       glow_px, rows, y_sum)
    assert _same(rows, np.ascontiguousarray((Y - model).T))
    assert _same(y_sum, _frame_sum(Y))


# ----------------------------------------------------------------------------- a World
def _scipy_cores(world, boxes):
    """The cores as scipy built them: (unit, pixel, value) triplets, a csr matrix, scipy's row
    sums, and the mask and cumsum of the pixels they read."""
    rows, cols, vals = [], [], []
    y0, y1, x0, x1 = truth._cores_window(world)
    spec, sc = world.spec, world.scene
    K = np.float32(spec.sensor.gain_adu_per_e)
    vi = np.ascontiguousarray((K * sc.vignette * sc.illumination)[y0:y1, x0:x1])
    c = sc.cells
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    comp = np.zeros(len(boxes), np.float32)
    for u, b in enumerate(boxes):
        if b is None:
            continue
        (by0, _, bx0, _), box = b
        ci, cv, cp = truth._unit_core(vi, box, by0 - y0, bx0 - x0, float(pixel_index(c.y_um[u], H, d) - y0),
                                      float(pixel_index(c.x_um[u], W, d) - x0),
                                      float(truth.COMPACT_RADII * c.radius_um[u] / d), np.float32(truth._CORE_FRACTION))
        if cp < 0:
            continue
        rows.append(np.full(len(ci), u))
        cols.append(ci)
        vals.append(cv)
        comp[u] = cp
    core = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(boxes), (y1 - y0) * (x1 - x0)))
    a_sum = np.asarray(core.sum(axis=1), np.float64).ravel()
    a_sq = np.asarray(core.multiply(core).sum(axis=1), np.float64).ravel()
    read = np.zeros(core.shape[1], bool)
    read[core.indices] = True
    column = np.cumsum(read) - 1
    core_px = sp.csr_matrix((core.data, column[core.indices], core.indptr), shape=(core.shape[0], read.sum()))
    return core, a_sum, a_sq, comp, np.flatnonzero(read).astype(core.indices.dtype), core_px


def _scipy_oracle_batch(world, frames, movie, C, f_np, rigid_um, cores):
    """The oracle batch as scipy computed it (the code the compiled one replaces)."""
    spec, sc = world.spec, world.scene
    y0, y1, x0, x1 = cores.window
    K = np.float32(spec.sensor.gain_adu_per_e)
    vi = (K * sc.vignette * sc.illumination)[y0:y1, x0:x1]
    level = np.float32(spec.sensor.offset_adu) + K * np.float32(spec.sensor.dark_current_e_per_s / spec.recording.fps)
    k = len(frames)
    if rigid_um is not None:
        Y = _registered_per_pixel(movie, rigid_um / spec.pixel_size_um, cores.pixels) - level
    else:
        Y = movie.reshape(k, -1)[:, cores.pixels].astype(np.float32) - level
    px = cores.pixels
    tissue = sc.tissue_at(C, f_np, (y0, y1, x0, x1), px)
    model = vi.ravel()[px] * tissue + (K * sc.vignette * sc.glow_e)[y0:y1, x0:x1].ravel()[px]
    resid = np.ascontiguousarray((Y - model).T, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.asarray(cores.core_px @ resid) / cores.a_sq[:, None]
    image = cores.core_px @ _frame_sum(Y)
    return err, C.astype(np.float64), image


@pytest.mark.parametrize("motion", [True, False])
def test_cores_and_oracle_of_a_world_are_the_scipy_ones_bit_for_bit(motion):
    world = render.build_world(small_spec(**{"motion.enabled": motion}))
    sc = world.scene
    n = len(sc.cells)
    boxes = sc.footprint_boxes(range(n))
    core, a_sum, a_sq, comp, pixels, core_px = _scipy_cores(world, boxes)
    assert core.nnz > 0 and len(pixels) > 0
    one = truth.join_cores(world, [truth.cores_part(world, 0, boxes)])
    # blocks of units as the lazy metrics cut them, handed over out of order
    parts = [truth.cores_part(world, u0, boxes[u0 : u0 + 3]) for u0 in range(0, n, 3)]
    blocks = truth.join_cores(world, parts[::-1])
    for got in (one, blocks):
        for name in ("data", "indices", "indptr"):
            assert _same(getattr(got.core, name), getattr(core, name)), name
            assert _same(getattr(got.core_px, name), getattr(core_px, name)), name
        assert got.core.shape == core.shape and got.core_px.shape == core_px.shape
        assert _same(got.a_sum, a_sum) and _same(got.a_sq, a_sq)
        assert _same(got.compactness, comp) and _same(got.pixels, pixels)
        fresh = sp.csr_matrix((got.core.data, got.core.indices, got.core.indptr), shape=got.core.shape)
        assert fresh.has_canonical_format  # as join_cores marks it

    frames = range(world.n_frames)
    movie = render.render_block(world, frames, one.window)
    batches = truth.oracle_on(world, frames, movie, one)
    assert len(batches) == len(range(0, world.n_frames, truth.ORACLE_BATCH))
    for b0, batch in zip(range(0, world.n_frames, truth.ORACLE_BATCH), batches):
        fr = range(b0, min(b0 + truth.ORACLE_BATCH, world.n_frames))
        assert batch.n_frames == len(fr)
        C, f_np = world.traces(fr)
        rigid_um = world.motion(fr).rigid_um if motion else None
        err, C64, image = _scipy_oracle_batch(world, fr, movie[fr.start : fr.stop], C, f_np, rigid_um, one)
        assert _same(batch.err, err) and _same(batch.C, C64) and _same(batch.image, image)
