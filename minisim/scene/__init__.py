"""The static scene: everything about a recording that does not change from frame to frame.

``build_scene(spec)`` turns a Spec into small numpy objects, once: the cells, their sharp
footprints as a sparse matrix (pixels x units, only the pixels where they matter), their
scattered halos on a coarse node grid (upsampled bilinearly at render time: the halo is
tens of um wide and this keeps thousands of cells cheap), the neuropil map, the vessel
transmission and the scope's fixed fields. The renderer only reads it.

Pixel grids. The sensor's pixel (i, j) sits at tissue coordinates
((i - (H-1)/2) d, (j - (W-1)/2) d), d the pixel size in tissue, optical axis at 0. Tissue
quantities (footprints, neuropil, vessels) are held on a *padded* grid that extends
``margin_px`` pixels beyond the sensor on every side, so that a moving brain always has
tissue to show. Row r of the fine grid is pixel (r // Wp - m, r % Wp - m); node (a, b) of the
coarse grid sits at pixel (F (a + a0) + oy, F (b + b0) + ox), the anchor (oy, ox) chosen so the
nodes keep their places relative to the optical axis whatever the sensor's size (a smaller
sensor's grid is a crop of a larger one's).

A scene built for a ``window`` holds only the cells whose light can reach that window; every
pixel of the window gets exactly the same terms, in the same order, as in the full scene, so a
preview is bit for bit a crop of the full render.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._scratch import scratch, sparse_times
from ..motion import axial_bound_um, halo_um
from ..spec import Spec
from . import fields, optics, vessels
from .cells import Cells, place_cells

_HALO_TRUNCATE = 2.5   # halo Gaussians are cut at 2.5 sigma
_SHARP_TRUNCATE = 4.0
#: windows whose footprint rows a Scene keeps (:meth:`Scene._window_rows`): a render's tiles,
#: with and without the motion margin, and the oracle's window
_WINDOW_CACHE = 32


@dataclass
class Scene:
    """The static scene of a Spec (or of the cells that reach a ``window`` of it).

    Built by :func:`build_scene`. The cells, their per-cell optics and the fields are there at
    once; the footprints (``sharp_e``, ``halo_e``, ``axial_e``, ``planted``: the costly part,
    ~0.15 ms a cell, compiled, most of it the per-cell shape draws) are built on first use, once
    per Scene, so ``simulate()`` builds none of them and a process that renders, or reads ``A``,
    builds them once for all of it.
    """

    spec: Spec
    cells: Cells
    margin_px: int
    coarse_px: int                 # F: pixels between halo nodes
    node_origin: tuple[int, int]   # (a0, b0): node index of coarse row 0 / column 0
    node_shape: tuple[int, int]
    neuropil_e: np.ndarray         # (Hp, Wp) float32 electrons per frame at f = 1
    vessel_chord_um: np.ndarray    # (Hp, Wp)
    illumination: np.ndarray       # (H, W) float32
    vignette: np.ndarray           # (H, W) float32
    glow_e: np.ndarray             # (H, W) float32
    dz_um: np.ndarray              # per unit: depth minus local focal depth
    sigma_um: np.ndarray           # per unit: PSF sigma at its defocus
    window: tuple[int, int, int, int] | None
    axial_bound_um: float = 0.0
    node_anchor: tuple[int, int] = (0, 0)  # (oy, ox): pixel offset of the coarse node grid
    # what the footprints are built from (build_scene's state), and the footprints once built
    _build: _Build | None = field(default=None, repr=False)
    _footprints: Footprints | None = field(default=None, repr=False)

    def footprints(self) -> Footprints:
        """The cells' footprints, built on first use (once; threads wait for the one build)."""
        fp = self._footprints
        if fp is None:
            with _FOOTPRINT_LOCK:
                fp = self._footprints
                if fp is None:
                    fp = self._footprints = build_footprints(self._build)
        return fp

    @property
    def sharp_e(self) -> sp.csr_matrix:
        """(padded pixels, units) electrons per frame at C = 1, the sharp (ballistic) image."""
        return self.footprints().sharp_e

    @property
    def halo_e(self) -> sp.csr_matrix:
        """(coarse nodes, units) electrons per frame at C = 1, the scattered halo."""
        return self.footprints().halo_e

    @property
    def axial_e(self) -> tuple:
        """Focus drift: sharp footprints at dz - b and dz + b minus those at dz (b =
        ``axial_bound_um``), () without focus drift."""
        return self.footprints().axial_e

    @property
    def planted(self) -> list:
        """Per unit: (i0, j0, patch), the planted footprint in sensor pixels, summing to 1; the
        patch covers the pixels the cell's drawing reaches (0 beyond them), its first pixel
        (i0, j0)."""
        return self.footprints().planted

    def planted_patches(self) -> PlantedPatches:
        """The planted patches in one buffer (:class:`PlantedPatches`), for compiled readers."""
        fp = self.footprints()
        got = fp.planted_packed
        if got is None:
            got = fp.planted_packed = PlantedPatches.of(fp.planted)
        return got

    @property
    def padded_shape(self) -> tuple[int, int]:
        m = self.margin_px
        return self.spec.sensor.height_px + 2 * m, self.spec.sensor.width_px + 2 * m

    @property
    def vessel_mask(self) -> np.ndarray:
        m = self.margin_px
        H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
        return self.vessel_chord_um[m : m + H, m : m + W] > 0

    # --------------------------------------------------------------- tissue, pre-motion
    def tissue_e(self, C: np.ndarray, f_np: np.ndarray, rows: tuple[int, int, int, int],
                 axial_w: np.ndarray | None = None, reuse: bool = False) -> np.ndarray:
        """Tissue emission (frames, h, w) float32 over sensor-pixel rows [y0, y1) x [x0, x1).

        ``C`` (units, frames) and ``f_np`` (frames,) are the traces; rows may extend into the
        margin; ``axial_w`` (frames, 2) are the focus-drift weights of the footprints at -b and
        +b (see :func:`minisim.motion.axial_weights`), None for none. One fixed summation path
        for every window: sparse rows in unit order, the focus-drift corrections, then the
        bilinear halo, then the neuropil, per pixel in one compiled pass (``_kernels``).
        With ``reuse`` the result is this thread's scratch array ``"tissue"``
        (:func:`minisim._scratch.scratch`: the next such call in this thread writes over it),
        else a new array. The sparse products go into this thread's scratch arrays (the same
        values as scipy's ``@``; ``minisim._scratch``).
        """
        from ._kernels import assemble_tissue

        y0, y1, x0, x1 = rows
        m = self.margin_px
        T = C.shape[1]
        h, w = y1 - y0, x1 - x0
        Cx = C if T > 1 else np.concatenate([C, np.zeros_like(C)], axis=1)  # one scipy path
        K = Cx.shape[1]
        sharp_rows, axial_rows, halo_rows, geometry = self._window_rows(rows)
        sharp = sparse_times(sharp_rows, Cx, scratch("tissue-sharp", (sharp_rows.shape[0], K), np.float32))
        on = [k for k in range(len(axial_rows)) if axial_w is not None and axial_w[:, k].any()]
        if on:
            corr = scratch("tissue-axial", (len(on), sharp_rows.shape[0], K), np.float32)
            for i, k in enumerate(on):
                sparse_times(axial_rows[k], Cx, corr[i])
        else:
            corr = np.zeros((0, 1, 1), np.float32)
        aw = np.ascontiguousarray(np.stack([axial_w[:, k] for k in on], axis=1) if on else np.zeros((T, 0)),
                                  np.float64)
        if self.halo_e.nnz:
            nb, (ny, nx, fy, fx) = geometry
            nodes = sparse_times(halo_rows, Cx, scratch("tissue-halo", (halo_rows.shape[0], K), np.float32))
        else:
            nodes, nb = np.zeros((0, 1), np.float32), 1
            ny = nx = np.zeros(max(h, w), np.int64)
            fy = fx = np.zeros(max(h, w), np.float64)
        neuropil = np.ascontiguousarray(self.neuropil_e[y0 + m : y1 + m, x0 + m : x1 + m], np.float32)
        res = scratch("tissue", (T, h, w), np.float32) if reuse else np.empty((T, h, w), np.float32)
        assemble_tissue(sharp, corr, aw, nodes, nb, ny, nx, fy, fx, neuropil,
                        np.ascontiguousarray(f_np[:T], np.float64), res)
        return res

    def tissue_at(self, C: np.ndarray, f_np: np.ndarray, rows: tuple[int, int, int, int],
                  pixels: np.ndarray) -> np.ndarray:
        """(frames, len(pixels)) float32: :meth:`tissue_e` over ``rows`` (no focus drift) at
        the flat pixel indices ``pixels`` of that window alone, the very values it gives there
        (each pixel's sums take the same steps), at the cost of those pixels only."""
        from ._kernels import assemble_tissue_at

        y0, y1, x0, x1 = rows
        m, w = self.margin_px, x1 - x0
        T = C.shape[1]
        pixels = np.asarray(pixels, np.int64)
        iy, jx = pixels // w, pixels % w
        Cx = C if T > 1 else np.concatenate([C, np.zeros_like(C)], axis=1)  # one scipy path
        sharp = np.ascontiguousarray(self._sharp_rows_at(rows, pixels) @ Cx, np.float32)
        if self.halo_e.nnz:
            _, _, halo_rows, (nb, (ny, nx, fy, fx)) = self._window_rows(rows)
            nodes = np.ascontiguousarray(halo_rows @ Cx, np.float32)
        else:
            nodes, nb = np.zeros((0, 1), np.float32), 1
            ny = nx = np.zeros(max(y1 - y0, w), np.int64)
            fy = fx = np.zeros(max(y1 - y0, w), np.float64)
        neuropil = self.neuropil_e[iy + y0 + m, jx + x0 + m]
        out = np.empty((T, len(pixels)), np.float32)
        assemble_tissue_at(sharp, nodes, nb, iy, jx, ny, nx, fy, fx, neuropil,
                           np.ascontiguousarray(f_np[:T], np.float64), out)
        return out

    def _sharp_rows_at(self, rows: tuple[int, int, int, int], pixels: np.ndarray):
        """The rows of ``sharp_e`` at the flat pixel indices ``pixels`` (int64) of window
        ``rows``, kept beside the windows' rows (:meth:`_window_rows`): the oracle asks for the
        same core pixels once per batch of frames, and the selection was ~2 % of a 128 px
        fixture's compute. Every pixel of the window, in order, is the window's own rows."""
        y0, y1, x0, x1 = rows
        if pixels.size == (y1 - y0) * (x1 - x0) and (pixels.size == 0 or (
                pixels[0] == 0 and bool(np.all(np.diff(pixels) == 1)))):
            return self._window_rows(rows)[0]
        fp = self.footprints()
        key = ("pixels", rows, pixels.tobytes())
        got = fp.windows.get(key)
        if got is None:
            m, Wp, w = self.margin_px, self.padded_shape[1], x1 - x0
            got = _keep_window(fp, key, self.sharp_e[(pixels // w + y0 + m) * Wp + (pixels % w + x0 + m)])
        return got

    def _window_rows(self, rows: tuple[int, int, int, int]) -> tuple:
        """What :meth:`tissue_e` reads of the footprints for pixel rows [y0, y1) x [x0, x1):
        the rows of ``sharp_e`` and of each ``axial_e`` matrix at those pixels, the rows of
        ``halo_e`` at the halo nodes they interpolate, and (node columns, per pixel row and
        column its node and fraction: :meth:`_halo_geometry`). The same
        selections scipy makes on every call, kept per window (a render asks for the same few
        tiles for every block of frames: the row selections were ~4 % of a V4 render), the
        oldest dropped beyond :data:`_WINDOW_CACHE`; a benign race between threads (both build
        the same)."""
        fp = self.footprints()
        got = fp.windows.get(rows)
        if got is None:
            y0, y1, x0, x1 = rows
            m, Wp = self.margin_px, self.padded_shape[1]
            idx = ((np.arange(y0, y1) + m)[:, None] * Wp + (np.arange(x0, x1) + m)[None, :]).ravel()
            ra, rb, geometry = self._halo_geometry(y0, y1, x0, x1)
            nb = self.node_shape[1]
            halo = self.halo_e[(ra[:, None] * nb + rb[None, :]).ravel()] if self.halo_e.nnz else None
            got = _keep_window(fp, rows, (self.sharp_e[idx], tuple(mat[idx] for mat in self.axial_e), halo,
                                          (len(rb), geometry)))
        return got

    def _halo_geometry(self, y0, y1, x0, x1):
        """The node rows ``ra`` and columns ``rb`` (of the node grid) that pixel rows [y0, y1) x
        [x0, x1) interpolate, and per pixel row / column its node ``ny``, ``nx`` (from ra[0],
        rb[0]) and fraction ``fy``, ``fx`` (float64) below it."""
        F = self.coarse_px
        a0, b0 = self.node_origin
        oy, ox = self.node_anchor  # node grid coordinates: pixels minus the anchor
        y0, y1, x0, x1 = y0 - oy, y1 - oy, x0 - ox, x1 - ox
        ia, ib = y0 // F, (y1 - 1) // F + 1
        ja, jb = x0 // F, (x1 - 1) // F + 1
        ys, xs = np.arange(y0, y1), np.arange(x0, x1)
        return (np.arange(ia, ib + 1) - a0, np.arange(ja, jb + 1) - b0,
                (ys // F - ia, xs // F - ja, (ys - (ys // F) * F) / F, (xs - (xs // F) * F) / F))

    def _unit_halo(self, rows: np.ndarray, vals: np.ndarray, y0, y1, x0, x1) -> np.ndarray:
        """One unit's halo (h, w) float32 over pixel rows [y0, y1) x [x0, x1), from its column
        of the halo matrix (node ``rows``, float32 ``vals``): the halo :meth:`tissue_e` gives for a
        one-hot C (each node holds one entry v, and v times 1 is v on any path), without
        scipy's per-call overhead (most of a footprint box's cost)."""
        from ._kernels import halo_interp

        ra, rb, (ny, nx, fy, fx) = self._halo_geometry(y0, y1, x0, x1)
        nb = self.node_shape[1]
        nodes = np.zeros((len(ra), len(rb)), np.float32)
        r, c = rows // nb - ra[0], rows % nb - rb[0]
        inside = (r >= 0) & (r < len(ra)) & (c >= 0) & (c < len(rb))
        nodes[r[inside], c[inside]] = vals[inside]
        out = np.empty((1, len(ny), len(nx)), np.float32)
        halo_interp(nodes.reshape(-1, 1), len(rb), ny, nx, fy, fx, out)
        return out[0]

    # --------------------------------------------------------------- ground-truth footprints
    def _sensor_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, sp.csc_matrix]:
        """Per unit column: indptr, sensor row i, column j and value of its sharp image, and
        the halo by unit column; built once per footprints (a benign race: two threads would
        build the same arrays)."""
        fp = self.footprints()
        cols = fp.columns
        if cols is None:
            H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
            m, Wp = self.margin_px, self.padded_shape[1]
            idx = ((np.arange(H) + m)[:, None] * Wp + (np.arange(W) + m)[None, :]).ravel()
            csc = self.sharp_e[idx].tocsc()
            csc.sort_indices()
            cols = (csc.indptr, (csc.indices // W).astype(np.int32), (csc.indices % W).astype(np.int32),
                    csc.data, self.halo_e.tocsc())
            fp.columns = cols
        return cols

    def sharp_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each unit's sharp image on the sensor: (indptr, row i, column j, value), unit u's
        pixels at [indptr[u], indptr[u + 1]), in row-major order."""
        return self._sensor_columns()[:4]

    def _halo_boxes(self) -> np.ndarray:
        """(units, 4) int64: the sensor pixels [y0, y1) x [x0, x1) each unit's halo nodes weigh
        on (node k + a0 weighs on pixels [(k + a0 - 1) F, (k + a0 + 1) F) plus the anchor;
        elsewhere its halo is exactly 0); an empty box for a unit without a halo."""
        fp = self.footprints()
        boxes = fp.halo_boxes_px
        if boxes is None:
            halo = self._sensor_columns()[4]
            n = halo.shape[1]
            boxes = np.zeros((n, 4), np.int64)
            has = np.diff(halo.indptr) > 0
            if has.any():
                F, (a0, b0), nb = self.coarse_px, self.node_origin, self.node_shape[1]
                oy, ox = self.node_anchor
                starts = halo.indptr[:-1][has]
                ka, kb = halo.indices // nb, halo.indices % nb
                boxes[has, 0] = (np.minimum.reduceat(ka, starts) + a0 - 1) * F + oy
                boxes[has, 1] = (np.maximum.reduceat(ka, starts) + a0 + 1) * F + oy
                boxes[has, 2] = (np.minimum.reduceat(kb, starts) + b0 - 1) * F + ox
                boxes[has, 3] = (np.maximum.reduceat(kb, starts) + b0 + 1) * F + ox
            fp.halo_boxes_px = boxes
        return boxes

    def footprint_box(self, u: int, window: tuple[int, int, int, int] | None = None
                      ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Unit ``u``'s tissue footprint (sharp + halo, float32) over the smallest box of
        ``window`` (default: the sensor) that holds all of it: ((y0, y1, x0, x1), box), or None
        where none of it falls in the window. The values are those of :meth:`footprints_e`
        (which pastes these boxes), built from the Scene's own sparse images."""
        H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
        wy0, wy1, wx0, wx1 = (0, H, 0, W) if window is None else window
        indptr, ii, jj, data, halo_csc = self._sensor_columns()
        a, b = indptr[u], indptr[u + 1]
        i, j, v = ii[a:b], jj[a:b], data[a:b]
        keep = (i >= wy0) & (i < wy1) & (j >= wx0) & (j < wx1)
        i, j, v = i[keep], j[keep], v[keep]
        hy0, hy1, hx0, hx1 = self._halo_boxes()[u]
        hy0, hy1, hx0, hx1 = max(wy0, hy0), min(wy1, hy1), max(wx0, hx0), min(wx1, hx1)
        has_halo = hy0 < hy1 and hx0 < hx1
        if not len(i) and not has_halo:
            return None
        ys = [int(i.min()), int(i.max()) + 1] if len(i) else []
        xs = [int(j.min()), int(j.max()) + 1] if len(j) else []
        if has_halo:
            ys, xs = ys + [int(hy0), int(hy1)], xs + [int(hx0), int(hx1)]
        y0, y1, x0, x1 = min(ys), max(ys), min(xs), max(xs)
        box = np.zeros((y1 - y0, x1 - x0), np.float32)
        box[i - y0, j - x0] = v
        if has_halo:
            part = box[hy0 - y0 : hy1 - y0, hx0 - x0 : hx1 - x0]
            c0, c1 = halo_csc.indptr[u], halo_csc.indptr[u + 1]
            part[:] = part + self._unit_halo(halo_csc.indices[c0:c1], halo_csc.data[c0:c1], hy0, hy1, hx0, hx1)
        return (y0, y1, x0, x1), box

    def footprint_boxes(self, units: range) -> list:
        """:meth:`footprint_box` over the sensor for each unit of ``units``, the same values,
        all in one compiled pass (a Python call per unit was most of a V4 save's box tasks):
        per unit ((y0, y1, x0, x1), box) or None, the boxes views of one float32 buffer."""
        from ._kernels import _footprint_boxes

        H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
        indptr, ii, jj, data, halo = self._sensor_columns()
        halo_boxes = self._halo_boxes()
        us = np.arange(units.start, units.stop, dtype=np.int64)
        n = len(us)
        # each box: the sharp pixels' extent joined with the halo box, both within the sensor
        ext = np.zeros((n, 4), np.int64)
        hb = halo_boxes[us] if n else np.zeros((0, 4), np.int64)
        hy0, hy1 = np.maximum(hb[:, 0], 0), np.minimum(hb[:, 1], H)
        hx0, hx1 = np.maximum(hb[:, 2], 0), np.minimum(hb[:, 3], W)
        has_halo = (hy0 < hy1) & (hx0 < hx1)
        big = np.iinfo(np.int64).max
        sy0, sy1, sx0, sx1 = (np.full(n, big), np.full(n, -big), np.full(n, big), np.full(n, -big))
        # the sharp extents: each unit's pixels are ii, jj[indptr[u]:indptr[u + 1]], the units
        # consecutive, so one reduceat per bound over the units with pixels (a unit's run ends
        # where the next one's begins; numpy calls per unit were ~2 % of a 128 px fixture)
        a, b = indptr[us], indptr[us + 1]
        has_sharp = b > a
        if has_sharp.any():
            lo, end = a[has_sharp], b[has_sharp][-1]
            iy, jx = ii[:end], jj[:end]
            sy0[has_sharp], sy1[has_sharp] = np.minimum.reduceat(iy, lo), np.maximum.reduceat(iy, lo) + 1
            sx0[has_sharp], sx1[has_sharp] = np.minimum.reduceat(jx, lo), np.maximum.reduceat(jx, lo) + 1
        got = has_sharp | has_halo
        ext[:, 0] = np.minimum(np.where(has_sharp, sy0, big), np.where(has_halo, hy0, big))
        ext[:, 1] = np.maximum(np.where(has_sharp, sy1, -big), np.where(has_halo, hy1, -big))
        ext[:, 2] = np.minimum(np.where(has_sharp, sx0, big), np.where(has_halo, hx0, big))
        ext[:, 3] = np.maximum(np.where(has_sharp, sx1, -big), np.where(has_halo, hx1, -big))
        ext[~got] = 0
        sizes = (ext[:, 1] - ext[:, 0]) * (ext[:, 3] - ext[:, 2])
        offsets = np.cumsum(sizes) - sizes
        out = np.zeros(int(sizes.sum()), np.float32)
        F, (a0, b0), nb = self.coarse_px, self.node_origin, self.node_shape[1]
        oy, ox = self.node_anchor
        _footprint_boxes(us, np.array([0, H, 0, W], np.int64), indptr, ii, jj, data, halo.indptr,
                         halo.indices, halo.data, halo_boxes, F, a0, b0, oy, ox, nb, ext, offsets, out)
        return [((int(e[0]), int(e[1]), int(e[2]), int(e[3])),
                 out[o : o + s].reshape(e[1] - e[0], e[3] - e[2])) if g else None
                for e, o, s, g in zip(ext, offsets, sizes, got)]

    def footprint_bounds(self) -> np.ndarray:
        """(units, 4) int64: the sensor box [y0, y1) x [x0, x1) that holds each unit's whole
        footprint (sharp and halo; may reach beyond the sensor), empty for a unit with none."""
        fp = self.footprints()
        got = fp.bounds_px
        if got is None:
            indptr, ii, jj, _, _ = self._sensor_columns()
            n = len(indptr) - 1
            got = self._halo_boxes().copy()
            has = np.diff(indptr) > 0
            if has.any():
                starts = indptr[:-1][has]
                sharp = np.column_stack([np.minimum.reduceat(ii, starts), np.maximum.reduceat(ii, starts) + 1,
                                         np.minimum.reduceat(jj, starts), np.maximum.reduceat(jj, starts) + 1])
                halo = got[has]
                empty = (halo[:, 0] >= halo[:, 1]) | (halo[:, 2] >= halo[:, 3])
                halo[empty] = sharp[empty]
                got[has] = np.column_stack([np.minimum(sharp[:, 0], halo[:, 0]), np.maximum(sharp[:, 1], halo[:, 1]),
                                            np.minimum(sharp[:, 2], halo[:, 2]), np.maximum(sharp[:, 3], halo[:, 3])])
            assert got.shape == (n, 4)
            fp.bounds_px = got
        return got

    def footprints_e(self, units: slice, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Dense tissue footprints (n, h, w) float32 of a slice of units over a sensor window.

        Each footprint is its own columns of the sparse images (sharp + halo,
        :meth:`footprint_box`): the same values ``tissue_e`` gives with a one-hot C, at a cost
        that grows with neither the total number of units nor the field (a unit whose light
        misses ``window`` costs a bounds check). ``window`` = (y0, y1, x0, x1), default the
        whole sensor; any window is the same crop of the whole.
        """
        H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
        y0, y1, x0, x1 = (0, H, 0, W) if window is None else window
        u0, u1, step = units.indices(len(self.cells))
        if step != 1:
            raise ValueError(f"units must be a contiguous slice, got {units}")
        n = max(u1 - u0, 0)
        out = np.zeros((n, y1 - y0, x1 - x0), np.float32)
        if n == 0:
            return out
        bounds = self.footprint_bounds()[u0:u1]
        meets = ((bounds[:, 0] < y1) & (bounds[:, 1] > y0) & (bounds[:, 2] < x1) & (bounds[:, 3] > x0)
                 & (bounds[:, 0] < bounds[:, 1]))
        for k in np.flatnonzero(meets):
            got = self.footprint_box(u0 + int(k), (y0, y1, x0, x1))
            if got is not None:
                (by0, by1, bx0, bx1), box = got
                out[k, by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = box
        return out

    def planted_dense(self, units: slice, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Planted footprints (n, h, w) float32 of a slice of units over a sensor window."""
        H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
        y0, y1, x0, x1 = (0, H, 0, W) if window is None else window
        from ._kernels import paste_patches

        ids = np.arange(len(self.cells))[units]
        out = np.zeros((len(ids), y1 - y0, x1 - x0), np.float32)
        pp = self.planted_patches()
        paste_patches(pp.values, pp.start, pp.box, ids, (y0, y1, x0, x1), out)
        return out


def _coarse_px(spec: Spec) -> int:
    """Halo node spacing: a third of the narrowest halo any cell of the Spec can have."""
    if not spec.tissue.scatter.enabled:
        return 1
    z_top = min(b.depth_um - b.band_thickness_um / 2 for b in spec.cells.bands)
    s_min = max(spec.tissue.scatter.halo_width_per_depth * max(z_top, 0.0), optics.sigma0_um(spec))
    return int(max(1, min(32, np.floor(s_min / spec.pixel_size_um / 3))))


def light_reach_um(spec: Spec) -> float:
    """How far from its centre a cell's light can land (sharp part or halo)."""
    c = spec.cells
    z_max = max(b.depth_um + b.band_thickness_um / 2 for b in c.bands)
    r_max = max(b.soma_radius_um + 3 * b.soma_radius_sd_um for b in c.bands)
    dz_max = z_max + abs(spec.optics.focal_depth_um)
    sig = float(optics.psf_sigma_um(spec, dz_max))
    reach = 1.5 * r_max + (1.4 * c.dendrite_length_um + r_max if c.dendrites_enabled else 0)
    reach += _SHARP_TRUNCATE * sig
    if spec.tissue.scatter.enabled:
        sh = float(optics.halo_sigma_um(spec, z_max, sig))
        reach = max(reach, _HALO_TRUNCATE * np.hypot(sh, r_max / 2) + spec.pixel_size_um * 2)
    return reach


# --------------------------------------------------------------------------- building it
class PlantedPatches(NamedTuple):
    """Every unit's planted patch in one buffer, for the compiled readers of ``_kernels``
    (``paste_patches``, ``masked_patch_sums``): unit u's patch is values[start[u]:start[u + 1]],
    row-major over the sensor pixels [box[u, 0], box[u, 1]) x [box[u, 2], box[u, 3]), cropped
    from the patch it was drawn in, the pixels ``frame[u]`` (y0, y1, x0, x1; 0 outside the crop).
    """

    values: np.ndarray   # float32
    start: np.ndarray    # int64 (units + 1,)
    box: np.ndarray      # int64 (units, 4): y0, y1, x0, x1 (sensor pixels)
    frame: np.ndarray    # int64 (units, 4): y0, y1, x0, x1 (sensor pixels)

    def as_list(self) -> list:
        """Per unit (i0, j0, patch), the patch a view of ``values``: :attr:`Footprints.planted`."""
        return [(int(y0), int(x0), self.values[a:e].reshape(y1 - y0, x1 - x0))
                for a, e, (y0, y1, x0, x1) in zip(self.start[:-1], self.start[1:], self.box)]

    @classmethod
    def of(cls, planted: list) -> PlantedPatches:
        """The patches of a list of (i0, j0, patch), each its own frame (the numpy reference's)."""
        shapes = np.array([p.shape for _, _, p in planted], np.int64).reshape(-1, 2)
        first = np.array([(i0, j0) for i0, j0, _ in planted], np.int64).reshape(-1, 2)
        start = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])]).astype(np.int64)
        values = np.concatenate([np.ravel(p).astype(np.float32) for _, _, p in planted] or [np.zeros(0, np.float32)])
        box = np.stack([first[:, 0], first[:, 0] + shapes[:, 0], first[:, 1], first[:, 1] + shapes[:, 1]], axis=1)
        return cls(values, start, box, box)


@dataclass
class Footprints:
    """The cells' footprints (see :class:`Scene`): what a Scene builds on first use."""

    sharp_e: sp.csr_matrix   # (padded pixels, units) electrons per frame at C = 1
    halo_e: sp.csr_matrix    # (coarse nodes, units)
    axial_e: tuple           # focus drift: sharp at dz -/+ b minus sharp at dz, () if none
    planted: list            # per unit: (i0, j0, patch) planted footprint, sums to 1 (Scene.planted)
    # the same patches in one buffer (Scene.planted_patches; derived from planted where None)
    planted_packed: PlantedPatches | None = None
    # derived from sharp_e and halo_e on first use by Scene._sensor_columns, _halo_boxes and
    # footprint_bounds; never copied by dataclasses.replace, so footprints replaced as a whole
    # never carry stale derivations
    columns: tuple | None = field(default=None, init=False, repr=False)
    halo_boxes_px: np.ndarray | None = field(default=None, init=False, repr=False)
    bounds_px: np.ndarray | None = field(default=None, init=False, repr=False)
    windows: dict = field(default_factory=dict, init=False, repr=False)  # Scene._window_rows


@dataclass
class _Build:
    """The state :func:`build_scene`'s steps fill in, each step reading what the ones before set."""

    spec: Spec
    window: tuple[int, int, int, int] | None
    # _grids: the sensor, the padded tissue grid and the halo node grid
    H: int = 0
    W: int = 0
    d: float = 0.0                    # pixel size in tissue, um
    margin_px: int = 0
    coarse_px: int = 1                # F
    node_anchor: tuple[int, int] = (0, 0)
    node_origin: tuple[int, int] = (0, 0)
    node_shape: tuple[int, int] = (0, 0)
    node_offset_px: tuple[float, float] = (0.0, 0.0)  # node 0 of each axis, px from the axis
    yp: np.ndarray | None = None      # padded grid's pixel centres, um
    xp: np.ndarray | None = None
    # _place: the cells that can send light into the (padded) window
    cells: Cells | None = None
    # _vessels
    chord_um: np.ndarray | None = None
    t_vessel: np.ndarray | None = None
    # _cell_optics: per unit
    dz: np.ndarray | None = None
    sigma: np.ndarray | None = None
    axial_bound_um: float = 0.0
    sigma_axial: list = field(default_factory=list)  # sigma at dz - b, dz + b (focus drift)
    sigma_reach: np.ndarray | None = None            # the widest of those
    sharp_share: np.ndarray | None = None
    halo_sigma: np.ndarray | None = None
    flux_e: np.ndarray | None = None
    shadowed: np.ndarray | None = None
    # _maps (fields over the sensor, neuropil over the padded grid)
    neuropil_e: np.ndarray | None = None
    illumination: np.ndarray | None = None
    vignette: np.ndarray | None = None
    glow_e: np.ndarray | None = None


def build_scene(spec: Spec, window: tuple[int, int, int, int] | None = None) -> Scene:
    """Build the static scene of ``spec`` (all cells, or those that reach ``window``).

    ``window`` = (y0, y1, x0, x1) in sensor pixels. The footprints are built on first use
    (:meth:`Scene.footprints`), everything else here, in these steps.
    """
    b = _Build(spec, window)
    with _one_blas_thread():
        _grids(b)
        _place(b)
        _vessels(b)
        _cell_optics(b)
        _maps(b)
    return Scene(
        spec=spec, cells=b.cells, margin_px=b.margin_px, coarse_px=b.coarse_px,
        node_origin=b.node_origin, node_shape=b.node_shape, neuropil_e=b.neuropil_e,
        vessel_chord_um=b.chord_um, illumination=b.illumination, vignette=b.vignette,
        glow_e=b.glow_e, dz_um=b.dz, sigma_um=b.sigma, window=window,
        axial_bound_um=b.axial_bound_um, node_anchor=b.node_anchor, _build=b,
    )


def _grids(b: _Build) -> None:
    """The padded grid (a margin for motion) and the halo nodes.

    Halo nodes sit at whole pixels, F apart, one of them at the pixel just above/left of the
    optical axis: the same tissue positions for any sensor size of the same parity.
    """
    spec = b.spec
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    m = int(np.ceil(halo_um(spec) / d)) + 2 if spec.motion.enabled else 0
    F = _coarse_px(spec)
    oy, ox = ((H - 1) // 2) % F, ((W - 1) // 2) % F
    a0, b0 = (-m - oy) // F, (-m - ox) // F
    na, nb = (H - 1 + m - oy) // F + 2 - a0, (W - 1 + m - ox) // F + 2 - b0
    b.H, b.W, b.d, b.margin_px, b.coarse_px = H, W, d, m, F
    b.node_anchor, b.node_origin, b.node_shape = (oy, ox), (a0, b0), (na, nb)
    # node k of an axis lies k F + off_px pixels from the axis (exact in float64)
    b.node_offset_px = (oy - (H - 1) / 2, ox - (W - 1) / 2)
    b.yp = optics.pixel_center_um(np.arange(-m, H + m), H, d)
    b.xp = optics.pixel_center_um(np.arange(-m, W + m), W, d)


def _place(b: _Build) -> None:
    """The cells whose light can reach the (padded) window."""
    H, W, d, m = b.H, b.W, b.d, b.margin_px
    wy0, wy1, wx0, wx1 = (0, H, 0, W) if b.window is None else b.window
    reach = light_reach_um(b.spec)
    y_lo = optics.pixel_center_um(wy0 - m, H, d) - reach
    y_hi = optics.pixel_center_um(wy1 - 1 + m, H, d) + reach
    x_lo = optics.pixel_center_um(wx0 - m, W, d) - reach
    x_hi = optics.pixel_center_um(wx1 - 1 + m, W, d) + reach
    b.cells = place_cells(b.spec, (y_lo, y_hi), (x_lo, x_hi))


def _vessels(b: _Build) -> None:
    """Vessel chord length and transmission over the padded grid."""
    b.chord_um = vessels.chord_length_um(vessels.vessel_network(b.spec), b.yp, b.xp)
    b.t_vessel = vessels.transmission(b.spec, b.chord_um)


def _cell_optics(b: _Build) -> None:
    """Per cell: defocus, PSF widths, sharp share, halo width, flux, shadowing."""
    spec, cells = b.spec, b.cells
    r_lat = np.hypot(cells.y_um, cells.x_um)
    b.dz = cells.z_um - optics.focal_depth_um(spec, r_lat)
    b.sigma = optics.psf_sigma_um(spec, b.dz)
    ab = b.axial_bound_um = axial_bound_um(spec)
    # focus drift: the same cell drawn at dz - b and dz + b (tissue shallower / deeper)
    b.sigma_axial = ([optics.psf_sigma_um(spec, b.dz - ab), optics.psf_sigma_um(spec, b.dz + ab)]
                     if ab > 0 else [])
    b.sigma_reach = np.maximum.reduce([b.sigma, *b.sigma_axial])
    collected = optics.collected_fraction(spec, cells.z_um)
    b.sharp_share = optics.sharp_share(spec, cells.z_um)
    b.halo_sigma = np.hypot(optics.halo_sigma_um(spec, cells.z_um, b.sigma), cells.radius_um / 2)
    b.flux_e = (spec.cells.brightness_photons_per_s / spec.recording.fps * cells.gain * collected
                * spec.sensor.qe)
    b.shadowed = cells.z_um > spec.vasculature.depth_um


def _maps(b: _Build) -> None:
    """Neuropil over the padded grid; illumination, vignette and glow over the sensor."""
    spec, H, W, d = b.spec, b.H, b.W, b.d
    fps, qe = spec.recording.fps, spec.sensor.qe
    npl = spec.tissue.neuropil
    if npl.enabled:
        level = npl.photons_per_um2_s * d * d / fps * qe
        neuropil = level * fields.neuropil_map(spec, b.yp, b.xp)
        band_depth = spec.cells.depth_um
        if band_depth > spec.vasculature.depth_um:
            neuropil = neuropil * b.t_vessel
    else:
        level, neuropil = 0.0, np.zeros((H + 2 * b.margin_px, W + 2 * b.margin_px))
    ys = optics.pixel_center_um(np.arange(H), H, d)
    xs = optics.pixel_center_um(np.arange(W), W, d)
    ref = level if npl.enabled else spec.cells.brightness_photons_per_s / fps * qe * 1e-3
    b.neuropil_e = neuropil.astype(np.float32)
    b.illumination = fields.illumination(spec, ys, xs).astype(np.float32)
    b.vignette = fields.vignette(spec, ys, xs).astype(np.float32)
    b.glow_e = fields.glow(spec, ys, xs, ref).astype(np.float32)


def build_footprints(b: _Build) -> Footprints:
    """Every cell's footprints, as sparse matrices in unit order: the model of
    :func:`cell_footprints` (the numpy reference) computed for all cells by compiled kernels
    (``_kernels.cell_footprints``, ``_kernels.halos``), which hold no GIL; the sharp kernel
    over ranges of cells on threads at once (:func:`_cell_parts`: one per core, up to 4), the
    same arrays as one call.

    Each cell's shape is drawn from its own key, as in :func:`optics.planted_footprint`; the
    kernels take the same pixel-integration weights (the normal CDF of
    :func:`optics.blur_and_bin`, computed here) and match the reference to ~1e-12 of a cell's
    peak (float64 sums in another order; tests/test_footprint_kernels.py).
    """
    H, W, m = b.H, b.W, b.margin_px
    n_rows = (H + 2 * m) * (W + 2 * m)
    na, nb = b.node_shape
    packed, (s_ptr, s_rows, s_vals), (h_ptr, h_rows, h_vals) = _footprint_parts(b)
    return Footprints(
        sharp_e=_by_unit(s_ptr, s_rows, s_vals[0], n_rows),
        halo_e=_by_unit(h_ptr, h_rows, h_vals, na * nb),
        axial_e=tuple(_by_unit(s_ptr, s_rows, v, n_rows) for v in s_vals[1:]),
        planted=packed.as_list(),
        planted_packed=packed,
    )


def footprint_arrays(b: _Build) -> tuple[list, tuple, tuple]:
    """The compiled footprints before they become matrices: (planted, sharp, halo).

    ``planted`` as in :class:`Footprints` (each patch the crop, to the pixels its drawing
    reaches, of :func:`cell_footprints`' square patch); ``sharp`` = (indptr by unit,
    padded-grid rows, values (planes, entries) float64: the sharp image, then per focus-drift
    plane its difference from it); ``halo`` = (indptr by unit, node rows, values float64). Per
    unit the entries of :func:`cell_footprints`, in its order.
    """
    packed, sharp, halo = _footprint_parts(b)
    return packed.as_list(), sharp, halo


def _footprint_parts(b: _Build) -> tuple[PlantedPatches, tuple, tuple]:
    """:func:`footprint_arrays` with the planted patches in one buffer."""
    from scipy.special import ndtr

    from ._kernels import cell_footprints as sharp_kernel
    from ._kernels import halos as halo_kernel

    spec, cells, c = b.spec, b.cells, b.spec.cells
    H, W, d, m = b.H, b.W, b.d, b.margin_px
    Hp, Wp = H + 2 * m, W + 2 * m
    n_units = len(cells)
    ns = optics.oversample(spec)
    i0, j0, n_px = _patches(b)
    # the shape draws, keyed per cell, all cells in one call (optics.cell_shape's values)
    ell, phi, angles, lengths = optics.cell_shapes(spec, cells.unit_id)
    # blur_and_bin's normal CDF table, per PSF plane and cell whose patch meets the padded grid
    planes = np.array([b.sigma, *b.sigma_axial], dtype=float).reshape(1 + len(b.sigma_axial), n_units)
    meets = ((np.maximum(i0, -m) < np.minimum(i0 + n_px, H + m))
             & (np.maximum(j0, -m) < np.minimum(j0 + n_px, W + m)))
    sizes = np.where(meets & (planes > 1e-6 * d), 2 * n_px * ns + 1, 0).ravel()
    starts = np.cumsum(sizes) - sizes
    mm = (np.arange(sizes.sum()) - np.repeat(starts, sizes)
          - np.repeat(np.broadcast_to(n_px * ns, planes.shape).ravel(), sizes))
    cdf = ndtr((mm - 0.5) * (d / ns) / np.repeat(planes.ravel(), sizes))
    dendrites = bool(c.dendrites_enabled and c.dendrite_count and c.dendrite_brightness > 0)
    t_vessel = np.ascontiguousarray(b.t_vessel, np.float64).reshape(Hp, Wp)
    starts, scale = starts.reshape(planes.shape), b.sharp_share * b.flux_e

    def sharp(u0: int, u1: int) -> tuple:  # cells [u0, u1), each on its own (no shared state)
        return sharp_kernel(
            cells.y_um[u0:u1], cells.x_um[u0:u1], cells.radius_um[u0:u1], ell[u0:u1], phi[u0:u1],
            angles[u0:u1], lengths[u0:u1], i0[u0:u1], j0[u0:u1], n_px[u0:u1], H, W, float(d), ns,
            float(c.nucleus_radius_fraction), float(c.nucleus_brightness), float(c.dendrite_width_um),
            float(c.dendrite_brightness), dendrites, np.ascontiguousarray(planes[:, u0:u1]), cdf,
            np.ascontiguousarray(starts[:, u0:u1]), scale[u0:u1], b.shadowed[u0:u1], t_vessel, m)

    (p_vals, p_ptr, p_box), (s_ptr, s_rows, s_vals) = _in_parts(sharp, _cell_parts(n_px * ns))
    na, nb = b.node_shape
    (a0, b0), (off_y, off_x) = b.node_origin, b.node_offset_px
    h_ptr, h_rows, h_vals = halo_kernel(
        cells.y_um, cells.x_um, b.sharp_share, b.flux_e, b.halo_sigma, float(d), b.coarse_px,
        a0, b0, na, nb, float(off_y), float(off_x), _HALO_TRUNCATE)
    # the crops' boxes in sensor pixels (an empty one at the square's first pixel)
    box = p_box + np.stack([i0, i0, j0, j0], axis=1)
    planted = PlantedPatches(p_vals, p_ptr, box, np.stack([i0, i0 + n_px, j0, j0 + n_px], axis=1))
    return planted, (s_ptr, s_rows, s_vals), (h_ptr, h_rows, h_vals)


#: Cells below which the footprint kernel runs on one thread (the threads' start costs more).
_PARALLEL_MIN_CELLS = 96


def _keep_window(fp, key, value):
    """Keep ``value`` in ``fp.windows`` under ``key`` (:meth:`Scene._window_rows`), the oldest
    entries dropped beyond :data:`_WINDOW_CACHE`; returns ``value``."""
    with _FOOTPRINT_LOCK:
        fp.windows[key] = value
        while len(fp.windows) > _WINDOW_CACHE:
            fp.windows.pop(next(iter(fp.windows)))
    return value


def _cell_parts(side: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous ranges of cells, one per core this process may use (at most 4; one range
    under :data:`_PARALLEL_MIN_CELLS` cells), of about equal work: a cell's kernel time grows
    with its patch's area (``side``: its sub-pixel side)."""
    import os

    n = len(side)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    k = max(1, min(4, cores, n // (_PARALLEL_MIN_CELLS // 2)))
    if k == 1 or n < _PARALLEL_MIN_CELLS:
        return [(0, n)]
    work = np.cumsum(np.asarray(side, np.float64) ** 2)
    cuts = np.searchsorted(work, work[-1] * np.arange(1, k) / k)
    edges = [0, *sorted({int(x) for x in cuts if 0 < x < n}), n]
    return list(itertools.pairwise(edges))


def _in_parts(kernel, parts: list[tuple[int, int]]) -> tuple:
    """The footprint kernel's ((planted values, indptr, boxes), (indptr, rows, values)) of every
    cell from ``kernel(u0, u1)`` over consecutive ranges of cells, run on threads at once (the
    kernel holds no GIL) and joined in cell order: the same arrays as one call over them all,
    since each cell's output depends on that cell alone."""
    if len(parts) == 1:
        return kernel(*parts[0])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(parts), thread_name_prefix="minisim-footprints") as pool:
        got = list(pool.map(lambda r: kernel(*r), parts))

    def join_ptr(ptrs: list) -> np.ndarray:
        offsets = np.cumsum([0] + [int(p[-1]) for p in ptrs[:-1]])
        return np.concatenate([ptrs[0][:1]] + [p[1:] + o for p, o in zip(ptrs, offsets)])

    planted, sharp = [g[0] for g in got], [g[1] for g in got]
    return ((np.concatenate([g[0] for g in planted]), join_ptr([g[1] for g in planted]),
             np.concatenate([g[2] for g in planted])),
            (join_ptr([g[0] for g in sharp]), np.concatenate([g[1] for g in sharp]),
             np.concatenate([g[2] for g in sharp], axis=1)))


def _by_unit(indptr: np.ndarray, rows: np.ndarray, vals: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """(n_rows, units) float32 CSR from per-unit columns (each unit's rows ascending, no repeats):
    the matrix :func:`_csr` makes of the same parts."""
    n_units = len(indptr) - 1
    mat = sp.csc_matrix((vals.astype(np.float32), rows, indptr), shape=(n_rows, n_units)).tocsr()
    mat.sort_indices()
    return mat


def _patches(b: _Build) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit: the first pixel row i0, column j0 and side n (px) of its square patch, wide
    enough for the soma, its dendrites and the widest of its PSFs out to the sharp cut."""
    c, cells, d = b.spec.cells, b.cells, b.d
    r = cells.radius_um
    ext = 1.5 * r + (1.4 * c.dendrite_length_um + r if c.dendrites_enabled else 0.0)
    ext = ext + _SHARP_TRUNCATE * b.sigma_reach
    i0 = np.floor(optics.pixel_index(cells.y_um, b.H, d) - ext / d).astype(np.int64)
    j0 = np.floor(optics.pixel_index(cells.x_um, b.W, d) - ext / d).astype(np.int64)
    n = (np.ceil(2 * ext / d) + 2).astype(np.int64)
    return i0, j0, n


def reference_footprints(b: _Build) -> Footprints:
    """The footprints of :func:`build_footprints` by the numpy reference, one cell at a time
    (:func:`cell_footprints`): slow (~1 ms a cell), for tests and for reading."""
    H, W, m = b.H, b.W, b.margin_px
    Wp, n_rows = W + 2 * m, (H + 2 * m) * (W + 2 * m)
    na, nb = b.node_shape
    s_rows, s_cols, s_vals = [], [], []
    h_rows, h_cols, h_vals = [], [], []
    ax_vals: list[list] = [[] for _ in b.sigma_axial]
    planted = []
    with _one_blas_thread():
        for u in range(len(b.cells)):
            fp = cell_footprints(b, u, Wp)
            planted.append(fp.planted)
            if fp.sharp_rows is not None:
                s_rows.append(fp.sharp_rows)
                s_cols.append(np.full(len(fp.sharp_rows), u))
                s_vals.append(fp.sharp_vals)
                for k, v in enumerate(fp.axial_vals):
                    ax_vals[k].append(v)
            if fp.halo_rows is not None:
                h_rows.append(fp.halo_rows)
                h_cols.append(np.full(len(fp.halo_rows), u))
                h_vals.append(fp.halo_vals)
    n = len(b.cells)
    return Footprints(
        sharp_e=_csr(s_rows, s_cols, s_vals, n_rows, n),
        halo_e=_csr(h_rows, h_cols, h_vals, na * nb, n),
        axial_e=tuple(_csr(s_rows, s_cols, v, n_rows, n) for v in ax_vals),
        planted=planted,
    )


@dataclass
class CellFootprints:
    """One cell's footprints: its planted patch, its sharp image (rows of the padded grid) with
    the focus-drift corrections on the same rows, and its halo (rows of the node grid)."""

    planted: tuple                    # (i0, j0, patch float32)
    sharp_rows: np.ndarray | None     # None where the patch misses the padded grid
    sharp_vals: np.ndarray | None
    axial_vals: list
    halo_rows: np.ndarray | None      # None without a halo on the node grid
    halo_vals: np.ndarray | None


def cell_footprints(b: _Build, u: int, Wp: int) -> CellFootprints:
    """Footprints of cell ``u``: a pure function of the Spec and the cell (keyed by its id).

    The numpy reference of the model, one cell at a time, in the optics functions the anatomy
    tutorial shows; :func:`build_footprints` computes the same for all cells compiled.
    """
    spec, cells = b.spec, b.cells
    H, W, d, m, F = b.H, b.W, b.d, b.margin_px, b.coarse_px
    q, flux_e, t_vessel = b.sharp_share, b.flux_e, b.t_vessel
    n_sub = optics.oversample(spec)  # sub-pixels per pixel side
    cy, cx, r = cells.y_um[u], cells.x_um[u], cells.radius_um[u]
    i0_all, j0_all, n_all = _patches(b)
    i0, j0, n = int(i0_all[u]), int(j0_all[u]), int(n_all[u])
    img = optics.planted_footprint(spec, cells.unit_id[u], r, cy, cx, i0, j0, n, n, n_sub)
    out = CellFootprints((i0, j0, optics.bin_patch(img, n_sub).astype(np.float32)),
                         None, None, [], None, None)
    sharp = optics.blur_and_bin(img, b.sigma[u], d, n_sub) * (q[u] * flux_e[u])
    # drop the far tails (< 1e-4 of the cell's own peak): they cost memory and time, not
    # light. Relative to the whole patch, so clipping and shadows never change the cut.
    floor = 1e-4 * sharp.max()
    # clip to the padded grid: crop in the patch, padded in the grid (row 0 = pixel -m)
    overlap = optics.patch_overlap(i0, j0, (n, n), (-m, H + m, -m, W + m))
    if overlap is not None:
        crop, padded = overlap
        patch = sharp[crop]
        if b.shadowed[u]:
            patch = patch * t_vessel[padded]
        keep = sharp[crop] > floor
        planes = []
        for s_ax in b.sigma_axial:  # the drifted footprints share the union of the supports
            alt = optics.blur_and_bin(img, s_ax[u], d, n_sub) * (q[u] * flux_e[u])
            keep |= alt[crop] > 1e-4 * alt.max()
            planes.append(alt[crop])
        ii, jj = np.nonzero(keep)
        out.sharp_rows = (ii + padded[0].start) * Wp + (jj + padded[1].start)
        out.sharp_vals = patch[ii, jj]
        shade = t_vessel[padded] if b.shadowed[u] else 1.0
        out.axial_vals = [(alt * shade)[ii, jj] - patch[ii, jj] for alt in planes]
    if q[u] < 1:
        a0, b0 = b.node_origin
        na, nb = b.node_shape
        off_y, off_x = b.node_offset_px
        hs = b.halo_sigma[u]
        ext_h = _HALO_TRUNCATE * hs
        ci, cj = cy / d - off_y, cx / d - off_x  # in node-grid pixels
        aa = np.arange(max(int(np.floor((ci - ext_h / d) / F)), a0),
                       min(int(np.ceil((ci + ext_h / d) / F)), a0 + na - 1) + 1)
        bb = np.arange(max(int(np.floor((cj - ext_h / d) / F)), b0),
                       min(int(np.ceil((cj + ext_h / d) / F)), b0 + nb - 1) + 1)
        if len(aa) and len(bb):
            gy = np.exp(-0.5 * (((aa * F + off_y) - cy / d) * d / hs) ** 2)
            gx = np.exp(-0.5 * (((bb * F + off_x) - cx / d) * d / hs) ** 2)
            dens = np.outer(gy, gx) * ((1 - q[u]) * flux_e[u] * d * d / (2 * np.pi * hs * hs))
            ii, jj = np.nonzero(dens > 0)
            out.halo_rows = (aa[ii] - a0) * nb + (bb[jj] - b0)
            out.halo_vals = dens[ii, jj]
    return out


def _csr(rows: list, cols: list, vals: list, n_rows: int, n_units: int) -> sp.csr_matrix:
    """(n_rows, n_units) float32 from per-unit parts, duplicates summed, indices sorted."""
    if rows:
        rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        rows, cols, vals = np.empty(0, int), np.empty(0, int), np.empty(0)
    mat = sp.csr_matrix(
        (vals.astype(np.float32), (rows, cols)), shape=(n_rows, n_units), dtype=np.float32
    )
    mat.sum_duplicates()
    mat.sort_indices()
    return mat


# --------------------------------------------------------------------------- BLAS threads
_FOOTPRINT_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_blas_thread():
    """Run the block with one OpenBLAS thread (restored after), without a new dependency.

    The scene's products are small (a cell's patch); multi-threaded OpenBLAS spins on them and
    under load took 15x longer (84 s vs 5.4 s for a V4 scene). The count is process-wide while
    any such block runs (blocks in several threads share one count: the first sets it, the last
    restores it); the results do not depend on it. Where no OpenBLAS is loaded, or the library
    cannot be found (not Linux), it does nothing.
    """
    global _BLAS_USERS, _BLAS_SAVED
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_SAVED = [(get(), put) for get, put in _openblas_thread_setters()]
            for _, put in _BLAS_SAVED:
                put(1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                for n, put in _BLAS_SAVED:
                    put(n)


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_SAVED: list = []
_SETTERS: list | None = None


def _openblas_thread_setters() -> list:
    """(get, set) of the thread count of every OpenBLAS in this process (numpy's, scipy's)."""
    global _SETTERS
    if _SETTERS is None:
        found = []
        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in (
                ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                ("openblas_get_num_threads", "openblas_set_num_threads"),
            ):
                get, put = getattr(lib, get_name, None), getattr(lib, set_name, None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    found.append((get, put))
                    break
        _SETTERS = found
    return _SETTERS
