"""Compiled per-pixel loops of the tissue sum (numba): the halo's bilinear interpolation and
the assembly of sharp footprints, focus-drift corrections, halo and neuropil in one pass.

They are the inner loops of :meth:`minisim.scene.Scene.tissue_e` and ``Scene._halo``; each
output pixel depends only on its own coordinates and the frame, so any window is a crop.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _halo_at(nodes, nb, t, ny, nx, fy, fx):
    """Bilinear value of the halo node grid (rows of ``nb`` nodes, column t) at (ny + fy, nx + fx)."""
    k = ny * nb + nx
    return ((1.0 - fy) * ((1.0 - fx) * nodes[k, t] + fx * nodes[k + 1, t])
            + fy * ((1.0 - fx) * nodes[k + nb, t] + fx * nodes[k + nb + 1, t]))


@njit(cache=True, nogil=True, error_model="numpy")
def halo_interp(nodes, nb, ny, nx, fy, fx, out):
    """out[t, i, j] = the halo at pixel (i, j): nodes (node rows x nb, frames), node row and
    column ``ny[i]``, ``nx[j]`` below the pixel and its fractions ``fy[i]``, ``fx[j]``."""
    for t in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[t, i, j] = _halo_at(nodes, nb, t, ny[i], nx[j], fy[i], fx[j])


@njit(cache=True, nogil=True, error_model="numpy")
def assemble_tissue(sharp, corrs, axial_w, halo_nodes, nb, ny, nx, fy, fx, neuropil, f_np, out):
    """out[t, i, j] = sharp + sum_k axial_w[t, k] corrs[k] + halo + neuropil f[t] at pixel (i, j).

    ``sharp`` and ``corrs[k]`` are (pixels, frames) unit sums (pixel i w + j); ``halo_nodes``
    (nodes, frames) with an empty first dimension for no halo. A row at a time, the frames
    inside it, so the (pixels, frames) sums are read from cache.
    """
    T, h, w = out.shape
    n_corr = corrs.shape[0]
    has_halo = halo_nodes.shape[0] > 0
    for i in range(h):
        for t in range(T):
            ft = f_np[t]
            for j in range(w):
                # float32 sums, each term rounded to float32 first: the halo term is then the
                # value halo_interp stores, so a one-hot C gives footprints_e exactly
                p = i * w + j
                v = sharp[p, t]
                for k in range(n_corr):
                    v = v + np.float32(axial_w[t, k] * corrs[k, p, t])
                if has_halo:
                    v = v + np.float32(_halo_at(halo_nodes, nb, t, ny[i], nx[j], fy[i], fx[j]))
                out[t, i, j] = v + np.float32(neuropil[i, j] * ft)
