"""Compiled per-pixel loops of the tissue sum (numba): the halo's bilinear interpolation and
the assembly of sharp footprints, focus-drift corrections, halo and neuropil in one pass.

They are the inner loops of :meth:`minisim.scene.Scene.tissue_e` and ``Scene._halo``; each
output pixel depends only on its own coordinates and the frame, so any window is a crop.
Arithmetic is float32. The halo at a pixel is interpolated along y first (per node column, a
row of pixels shares those values), then along x; both kernels take the same steps, so a
one-hot C gives ``footprints_e`` exactly.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.float32(1.0)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _halo_rows(nodes, nb, k0, fy, rows):
    """rows[c, t] = the halo nodes of column c interpolated along y at fraction ``fy`` between
    node rows k0 and k0 + nb (float32): the y step of the bilinear halo, for a row of pixels."""
    gy = _ONE - fy
    for c in range(rows.shape[0]):
        for t in range(rows.shape[1]):
            rows[c, t] = gy * nodes[k0 + c, t] + fy * nodes[k0 + nb + c, t]


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _halo_x(rows, c, t, gx, fx):
    """The x step: the halo at fraction ``fx`` (gx = 1 - fx) between node columns c and c + 1."""
    return gx * rows[c, t] + fx * rows[c + 1, t]


def _float32(a):
    return np.ascontiguousarray(a, np.float32)


@njit(cache=True, nogil=True, error_model="numpy")
def _halo_interp(nodes, nb, ny, nx, fy, fx, out):
    T, h, w = out.shape
    rows = np.empty((nb, T), np.float32)
    for i in range(h):
        _halo_rows(nodes, nb, ny[i] * nb, fy[i], rows)
        for j in range(w):
            c, fxj = nx[j], fx[j]
            gxj = _ONE - fxj
            for t in range(T):
                out[t, i, j] = _halo_x(rows, c, t, gxj, fxj)


def halo_interp(nodes, nb, ny, nx, fy, fx, out):
    """out[t, i, j] = the halo at pixel (i, j): nodes (node rows x nb, frames), node row and
    column ``ny[i]``, ``nx[j]`` below the pixel and its fractions ``fy[i]``, ``fx[j]``."""
    _halo_interp(_float32(nodes), nb, ny, nx, _float32(fy), _float32(fx), out)


@njit(cache=True, nogil=True, error_model="numpy")
def _assemble_tissue(sharp, corrs, axial_w, halo_nodes, nb, ny, nx, fy, fx, neuropil, f_np, out):
    T, h, w = out.shape
    n_corr = corrs.shape[0]
    has_halo = halo_nodes.shape[0] > 0
    rows = np.empty((nb, T), np.float32)
    buf = np.empty((w, T), np.float32)
    for i in range(h):
        if has_halo:
            _halo_rows(halo_nodes, nb, ny[i] * nb, fy[i], rows)
        # a row of pixels, the frames inside (the (pixels, frames) sums are read in order and
        # the loop over frames vectorises), then the row is written out frame by frame
        for j in range(w):
            p = i * w + j
            npj = neuropil[i, j]
            c, fxj = nx[j], fx[j]
            gxj = _ONE - fxj
            for t in range(T):
                v = sharp[p, t]
                for k in range(n_corr):
                    v = v + np.float32(axial_w[t, k] * corrs[k, p, t])
                if has_halo:
                    v = v + _halo_x(rows, c, t, gxj, fxj)
                buf[j, t] = v + npj * f_np[t]
        for t in range(T):
            for j in range(w):
                out[t, i, j] = buf[j, t]


def assemble_tissue(sharp, corrs, axial_w, halo_nodes, nb, ny, nx, fy, fx, neuropil, f_np, out):
    """out[t, i, j] = sharp + sum_k axial_w[t, k] corrs[k] + halo + neuropil f[t] at pixel (i, j).

    ``sharp`` and ``corrs[k]`` are (pixels, frames) unit sums (pixel i w + j); ``halo_nodes``
    (nodes, frames) with an empty first dimension for no halo. Float32 sums, each term rounded
    to float32 first: the halo term is then the value halo_interp stores, so a one-hot C gives
    footprints_e exactly.
    """
    _assemble_tissue(sharp, corrs, axial_w, _float32(halo_nodes), nb, ny, nx, _float32(fy), _float32(fx),
                     _float32(neuropil), _float32(f_np), out)
