"""A rendering thread's reused working arrays (minisim._scratch): the same values as scipy's
product, no values carried from one call to the next, one set per thread, and a render block
that no longer makes its largest temporaries afresh."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from minisim import _scratch, presets, render


def _csr(m: int, n: int, density: float, key: int) -> sp.csr_matrix:
    g = np.random.default_rng(key)
    mat = sp.random(m, n, density=density, format="csr", dtype=np.float32, random_state=g)
    mat.data = g.standard_normal(mat.nnz).astype(np.float32)  # signs: cancellations in the sums
    return mat


@pytest.mark.parametrize(("m", "n", "k", "density"), [(500, 40, 32, 0.2), (1, 7, 1, 1.0), (300, 0, 5, 0.0),
                                                      (64, 200, 2, 0.05)])
def test_sparse_times_gives_scipys_product_bit_for_bit(m, n, k, density):
    mat = _csr(m, n, density, m * 1000 + n)
    X = np.random.default_rng(k).standard_normal((k, n)).astype(np.float32).T  # (n, k), not C-contiguous
    out = np.full((m, k), np.nan, np.float32)  # what the array held before must not count
    got = _scratch.sparse_times(mat, X, out)
    want = mat @ X
    assert got is out and want.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), np.ascontiguousarray(want).view(np.uint32))


def test_sparse_times_casts_what_it_does_not_run_itself_as_scipy_would():
    mat = _csr(50, 20, 0.3, 7).astype(np.float64)
    X = np.random.default_rng(8).standard_normal((20, 3))
    out = np.empty((50, 3), np.float32)
    _scratch.sparse_times(mat, X, out)
    assert np.array_equal(out, (mat @ X).astype(np.float32))


def test_a_reused_scratch_array_holds_nothing_of_the_call_before():
    big, small = _csr(400, 30, 0.5, 1), _csr(100, 30, 0.01, 2)
    X = np.random.default_rng(3).standard_normal((30, 8)).astype(np.float32)
    _scratch.sparse_times(big, X, _scratch.scratch("test", (400, 8), np.float32))
    got = _scratch.sparse_times(small, X, _scratch.scratch("test", (100, 8), np.float32))
    assert np.shares_memory(got, _scratch.scratch("test", (400, 8), np.float32))  # the same memory
    assert np.array_equal(got, small @ X)  # rows without entries are 0, not the big product's


def test_each_thread_has_its_own_scratch_and_large_arrays_are_not_kept():
    mine = _scratch.scratch("test-thread", (16, 16), np.float32)
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(_scratch.scratch("test-thread", (16, 16), np.float32)))
    t.start()
    t.join()
    assert np.shares_memory(mine, _scratch.scratch("test-thread", (16, 16), np.float32))
    assert not np.shares_memory(mine, theirs[0])
    n = int(_scratch.KEEP_MB * 2**20 // 4) + 1
    huge = _scratch.scratch("test-huge", (n,), np.float32)
    assert not np.shares_memory(huge, _scratch.scratch("test-huge", (n,), np.float32))


def test_a_render_block_reuses_its_tissue_arrays():
    """With motion on, a block's tissue (frames x tile with its margin) and the footprints'
    sparse product (as large) were made afresh every block: the block's transient peak was ~2.1
    tissue arrays above where it started (128 px V4 tile, 32 frames); now its only large new
    arrays are the warped frames and the ADU block (smaller: no margin)."""
    spec = presets.scope("miniscope_v4_ca1").with_updates(
        {"sensor.width_px": 128, "sensor.height_px": 128, "recording.duration_s": 10.0})
    assert spec.motion.enabled
    world = render.build_world(spec)
    window = (0, 128, 0, 128)
    for t0 in (0, 32):  # the segment, the kernels and this thread's scratch arrays made
        render.render_block(world, range(t0, t0 + 32), window)
    m = world.scene.margin_px
    tissue_bytes = 32 * (128 + 2 * m) ** 2 * 4
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        block = render.render_block(world, range(64, 96), window)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert block.shape == (32, 128, 128)
    assert peak - start < 1.5 * tissue_bytes
