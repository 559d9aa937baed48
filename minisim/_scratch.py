"""Working arrays a rendering thread keeps from one block to the next.

A block's largest temporaries (a 282 x 282 px V4 tile of 32 frames: the footprints' sparse
product and the tissue it is assembled into, ~10 MB each) were fresh allocations every block:
glibc serves allocations of that size from ``mmap`` or from a heap it trims (and
:func:`minisim.render._trim_heap` trims every arena after each trace segment), so each block
touched fresh pages, ~1,000-2,000 page faults and ~15 % of a render thread's CPU in the kernel, a
share that varied from run to run with the memory the kernel had free. Kept per thread, the
same pages are written again. Only the memory changes: every value is computed by the same
routine, in the same order, as before.

A thread keeps one array per name (the largest it has needed, up to :data:`KEEP_MB`), for as
long as it lives: ~20 MB per rendering thread for a 256 px tile of 32 frames, part of the peak of
any block it renders anyway. A larger array (a block of many frames) is made afresh each time
and not kept.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_LOCAL = threading.local()

#: The largest array (MB) a thread keeps for reuse; larger ones are made afresh at each call.
KEEP_MB = 64.0


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` that this thread reuses
    under ``name``: the array a later call with the same name returns shares its memory, so
    the caller must be done with it before it asks again (beyond :data:`KEEP_MB`, a new array)."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if n * dtype.itemsize > KEEP_MB * 2**20:
        return np.empty(shape, dtype)
    buffers = _LOCAL.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.dtype != dtype or buf.size < n:
        buf = buffers[name] = np.empty(max(n, 1), dtype)
    return buf[:n].reshape(shape)


def _matvecs():
    """scipy's compiled CSR x dense routine (``_sparsetools.csr_matvecs``, y += A @ X), the one
    its ``@`` runs for a CSR matrix times a 2-D array; None where this scipy lacks it."""
    try:
        from scipy.sparse import _sparsetools
    except ImportError:  # pragma: no cover - another scipy
        return None
    return getattr(_sparsetools, "csr_matvecs", None)


_MATVECS = _matvecs()


def sparse_times(mat, X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``mat @ X`` (``mat`` a scipy sparse matrix (M, N), ``X`` an (N, K) array) as float32 into
    ``out`` (M, K), C-contiguous float32, e.g. a :func:`scratch` array), returned. For a float32
    CSR matrix and float32 ``X`` it runs scipy's own routine on ``out`` zeroed (scipy's ``@``
    runs it on a fresh zeroed array): the same values (``tests/test_scratch.py``); anything else
    goes through ``mat @ X``, cast to float32."""
    M, N = mat.shape
    if (_MATVECS is None or getattr(mat, "format", None) != "csr" or mat.dtype != np.float32
            or X.dtype != np.float32 or X.ndim != 2 or X.shape[0] != N or not out.flags.c_contiguous):
        np.copyto(out, mat @ X, casting="unsafe")
        return out
    out.fill(0)
    _MATVECS(M, N, X.shape[1], mat.indptr, mat.indices, mat.data, X.ravel(), out.ravel())
    return out
