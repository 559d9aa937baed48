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

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..motion import axial_bound_um, halo_um
from ..spec import Spec
from . import fields, optics, vessels
from .cells import Cells, place_cells

_HALO_TRUNCATE = 2.5   # halo Gaussians are cut at 2.5 sigma
_SHARP_TRUNCATE = 4.0


@dataclass
class Scene:
    spec: Spec
    cells: Cells
    margin_px: int
    coarse_px: int                 # F: pixels between halo nodes
    node_origin: tuple[int, int]   # (a0, b0): node index of coarse row 0 / column 0
    node_shape: tuple[int, int]
    sharp_e: sp.csr_matrix         # (padded pixels, units) electrons per frame at C = 1
    halo_e: sp.csr_matrix          # (coarse nodes, units)
    neuropil_e: np.ndarray         # (Hp, Wp) float32 electrons per frame at f = 1
    vessel_chord_um: np.ndarray    # (Hp, Wp)
    illumination: np.ndarray       # (H, W) float32
    vignette: np.ndarray           # (H, W) float32
    glow_e: np.ndarray             # (H, W) float32
    dz_um: np.ndarray              # per unit: depth minus local focal depth
    sigma_um: np.ndarray           # per unit: PSF sigma at its defocus
    planted: list                  # per unit: (i0, j0, patch) planted footprint, sums to 1
    window: tuple[int, int, int, int] | None
    # focus drift: sharp footprints at dz - b and dz + b minus those at dz (b = axial_bound_um)
    axial_bound_um: float = 0.0
    axial_e: tuple = field(default_factory=tuple)
    node_anchor: tuple[int, int] = (0, 0)  # (oy, ox): pixel offset of the coarse node grid

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
                 axial_w: np.ndarray | None = None) -> np.ndarray:
        """Tissue emission (frames, h, w) float32 over sensor-pixel rows [y0, y1) x [x0, x1).

        ``C`` (units, frames) and ``f_np`` (frames,) are the traces; rows may extend into the
        margin; ``axial_w`` (frames, 2) are the focus-drift weights of the footprints at -b and
        +b (see :func:`minisim.motion.axial_weights`), None for none. One fixed summation path
        for every window: sparse rows in unit order, the focus-drift corrections, then the
        bilinear halo, then the neuropil, per pixel in one compiled pass (``_kernels``).
        """
        from ._kernels import assemble_tissue

        y0, y1, x0, x1 = rows
        m = self.margin_px
        Wp = self.padded_shape[1]
        T = C.shape[1]
        h, w = y1 - y0, x1 - x0
        ii = np.arange(y0, y1) + m
        jj = np.arange(x0, x1) + m
        idx = (ii[:, None] * Wp + jj[None, :]).ravel()
        Cx = C if T > 1 else np.concatenate([C, np.zeros_like(C)], axis=1)  # one scipy path
        sharp = np.ascontiguousarray(self.sharp_e[idx] @ Cx, np.float32)
        corrs, weights = [], []
        if axial_w is not None and self.axial_e:
            for k, mat in enumerate(self.axial_e):
                if axial_w[:, k].any():
                    corrs.append(np.asarray(mat[idx] @ Cx, np.float32))
                    weights.append(axial_w[:, k])
        corr = np.stack(corrs) if corrs else np.zeros((0, 1, 1), np.float32)
        aw = np.ascontiguousarray(np.stack(weights, axis=1) if weights else np.zeros((T, 0)), np.float64)
        if self.halo_e.nnz:
            nodes, nb, ny, nx, fy, fx = self._halo_nodes(Cx, y0, y1, x0, x1)
        else:
            nodes, nb = np.zeros((0, 1), np.float32), 1
            ny = nx = np.zeros(max(h, w), np.int64)
            fy = fx = np.zeros(max(h, w), np.float64)
        neuropil = np.ascontiguousarray(self.neuropil_e[y0 + m : y1 + m, x0 + m : x1 + m], np.float32)
        res = np.empty((T, h, w), np.float32)
        assemble_tissue(sharp, corr, aw, nodes, nb, ny, nx, fy, fx, neuropil,
                        np.ascontiguousarray(f_np[:T], np.float64), res)
        return res

    def _halo_nodes(self, Cx, y0, y1, x0, x1, mat: sp.csr_matrix | None = None):
        """The halo nodes that pixel rows [y0, y1) x [x0, x1) interpolate: (nodes (node rows x
        nb, frames) float32 = mat @ Cx, nb, and per pixel row / column its node ``ny``, ``nx``
        and fraction ``fy``, ``fx`` (float64) below it)."""
        F = self.coarse_px
        a0, b0 = self.node_origin
        nb = self.node_shape[1]
        oy, ox = self.node_anchor  # node grid coordinates: pixels minus the anchor
        y0, y1, x0, x1 = y0 - oy, y1 - oy, x0 - ox, x1 - ox
        ia, ib = y0 // F, (y1 - 1) // F + 1
        ja, jb = x0 // F, (x1 - 1) // F + 1
        ra = np.arange(ia, ib + 1) - a0
        rb = np.arange(ja, jb + 1) - b0
        idx = (ra[:, None] * nb + rb[None, :]).ravel()
        mat = (self.halo_e if mat is None else mat)[idx]
        nodes = np.ascontiguousarray(mat @ Cx, np.float32)
        ys, xs = np.arange(y0, y1), np.arange(x0, x1)
        return (nodes, len(rb), ys // F - ia, xs // F - ja,
                (ys - (ys // F) * F) / F, (xs - (xs // F) * F) / F)

    def _halo(self, Cx, y0, y1, x0, x1, mat: sp.csr_matrix | None = None) -> np.ndarray:
        """Bilinear interpolation of the halo nodes (mat @ Cx; mat: all nodes x the units of
        Cx's rows, default every unit) over pixel rows [y0, y1) x [x0, x1): (frames, h, w)."""
        from ._kernels import halo_interp

        nodes, nb, ny, nx, fy, fx = self._halo_nodes(Cx, y0, y1, x0, x1, mat)
        out = np.empty((nodes.shape[1], len(ny), len(nx)), np.float32)
        halo_interp(nodes, nb, ny, nx, fy, fx, out)
        return out

    # --------------------------------------------------------------- ground-truth footprints
    def _sensor_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, sp.csc_matrix]:
        """Per unit column: indptr, sensor row i, column j and value of its sharp image, and
        the halo by unit column; built once per Scene (a benign race: two threads would
        build the same arrays)."""
        cols = self.__dict__.get("_unit_columns")
        if cols is None:
            H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
            m, Wp = self.margin_px, self.padded_shape[1]
            idx = ((np.arange(H) + m)[:, None] * Wp + (np.arange(W) + m)[None, :]).ravel()
            csc = self.sharp_e[idx].tocsc()
            csc.sort_indices()
            cols = (csc.indptr, (csc.indices // W).astype(np.int32), (csc.indices % W).astype(np.int32),
                    csc.data, self.halo_e.tocsc())
            self.__dict__["_unit_columns"] = cols
        return cols

    def footprints_e(self, units: slice, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Dense tissue footprints (n, h, w) float32 of a slice of units over a sensor window.

        Each footprint is its own columns of the sparse images (sharp + halo): the same values
        ``tissue_e`` gives with a one-hot C, at a cost that grows with neither the total number
        of units nor the field (a unit's pixels outside ``window`` are skipped, and the halo
        is interpolated only where its nodes reach). ``window`` = (y0, y1, x0, x1), default
        the whole sensor; any window is the same crop of the whole.
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
        indptr, ii, jj, data, halo_csc = self._sensor_columns()
        a, b = indptr[u0], indptr[u1]
        i, j = ii[a:b], jj[a:b]
        keep = (i >= y0) & (i < y1) & (j >= x0) & (j < x1)
        if keep.any():
            k = np.repeat(np.arange(n), np.diff(indptr[u0 : u1 + 1]))
            out[k[keep], i[keep] - y0, j[keep] - x0] = data[a:b][keep]
        halo = halo_csc[:, u0:u1]
        if halo.nnz:
            # only the pixels these units' halo nodes reach: node (k + a0) weighs on pixels
            # [(k + a0 - 1) F, (k + a0 + 1) F); elsewhere the halo is exactly 0
            F, (a0, b0), nb = self.coarse_px, self.node_origin, self.node_shape[1]
            oy, ox = self.node_anchor
            ka, kb = halo.indices // nb, halo.indices % nb
            ya, yb = max(y0, (ka.min() + a0 - 1) * F + oy), min(y1, (ka.max() + a0 + 1) * F + oy)
            xa, xb = max(x0, (kb.min() + b0 - 1) * F + ox), min(x1, (kb.max() + b0 + 1) * F + ox)
            if ya < yb and xa < xb:
                eye = np.eye(n, max(n, 2), dtype=np.float32)  # >= 2 columns: one scipy path
                box = out[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
                box[:] = box + self._halo(eye, ya, yb, xa, xb, mat=halo.tocsr())[:n]
        return out

    def planted_dense(self, units: slice, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Planted footprints (n, h, w) float32 of a slice of units over a sensor window."""
        H, W = self.spec.sensor.height_px, self.spec.sensor.width_px
        y0, y1, x0, x1 = (0, H, 0, W) if window is None else window
        ids = np.arange(len(self.cells))[units]
        out = np.zeros((len(ids), y1 - y0, x1 - x0), np.float32)
        for n, u in enumerate(ids):
            i0, j0, p = self.planted[u]
            overlap = optics.patch_overlap(i0, j0, p.shape, (y0, y1, x0, x1))
            if overlap is not None:
                in_patch, in_window = overlap
                out[n][in_window] = p[in_patch]
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


def build_scene(spec: Spec, window: tuple[int, int, int, int] | None = None) -> Scene:
    """Build the static scene of ``spec`` (all cells, or those that reach ``window``).

    ``window`` = (y0, y1, x0, x1) in sensor pixels.
    """
    H, W, d = spec.sensor.height_px, spec.sensor.width_px, spec.pixel_size_um
    m = int(np.ceil(halo_um(spec) / d)) + 2 if spec.motion.enabled else 0
    Hp, Wp = H + 2 * m, W + 2 * m
    F = _coarse_px(spec)
    # halo nodes sit at whole pixels, F apart, one of them at the pixel just above/left of the
    # optical axis: the same tissue positions for any sensor size of the same parity
    oy, ox = ((H - 1) // 2) % F, ((W - 1) // 2) % F
    a0, b0 = (-m - oy) // F, (-m - ox) // F
    na, nb = (H - 1 + m - oy) // F + 2 - a0, (W - 1 + m - ox) // F + 2 - b0
    # node k of an axis lies k F + off_px pixels from the axis (exact in float64)
    off_y, off_x = oy - (H - 1) / 2, ox - (W - 1) / 2

    # which part of the tissue can send light into the (padded) area of interest
    wy0, wy1, wx0, wx1 = (0, H, 0, W) if window is None else window
    reach = light_reach_um(spec)
    y_lo = optics.pixel_center_um(wy0 - m, H, d) - reach
    y_hi = optics.pixel_center_um(wy1 - 1 + m, H, d) + reach
    x_lo = optics.pixel_center_um(wx0 - m, W, d) - reach
    x_hi = optics.pixel_center_um(wx1 - 1 + m, W, d) + reach
    cells = place_cells(spec, (y_lo, y_hi), (x_lo, x_hi))

    yp = optics.pixel_center_um(np.arange(-m, H + m), H, d)
    xp = optics.pixel_center_um(np.arange(-m, W + m), W, d)
    chord = vessels.chord_length_um(vessels.vessel_network(spec), yp, xp)
    t_vessel = vessels.transmission(spec, chord)

    fps, qe = spec.recording.fps, spec.sensor.qe
    r_lat = np.hypot(cells.y_um, cells.x_um)
    dz = cells.z_um - optics.focal_depth_um(spec, r_lat)
    sigma = optics.psf_sigma_um(spec, dz)
    ab = axial_bound_um(spec)
    # focus drift: the same cell drawn at dz - b and dz + b (tissue shallower / deeper)
    sig_ax = [optics.psf_sigma_um(spec, dz - ab), optics.psf_sigma_um(spec, dz + ab)] if ab > 0 else []
    sig_ext = np.maximum.reduce([sigma, *sig_ax])
    collected = optics.collected_fraction(spec, cells.z_um)
    q = optics.sharp_share(spec, cells.z_um)
    halo_sigma = np.hypot(optics.halo_sigma_um(spec, cells.z_um, sigma), cells.radius_um / 2)
    flux_e = spec.cells.brightness_photons_per_s / fps * cells.gain * collected * qe
    shadowed = cells.z_um > spec.vasculature.depth_um
    os = optics.oversample(spec)
    c = spec.cells

    s_rows, s_cols, s_vals = [], [], []
    h_rows, h_cols, h_vals = [], [], []
    ax_vals: list[list] = [[] for _ in sig_ax]
    planted = []
    for u in range(len(cells)):
        cy, cx, r = cells.y_um[u], cells.x_um[u], cells.radius_um[u]
        ext = 1.5 * r + (1.4 * c.dendrite_length_um + r if c.dendrites_enabled else 0.0)
        ext += _SHARP_TRUNCATE * sig_ext[u]
        i0 = int(np.floor(optics.pixel_index(cy, H, d) - ext / d))
        j0 = int(np.floor(optics.pixel_index(cx, W, d) - ext / d))
        n = int(np.ceil(2 * ext / d)) + 2
        img = optics.planted_footprint(spec, cells.unit_id[u], r, cy, cx, i0, j0, n, n, os)
        planted.append((i0, j0, optics.bin_patch(img, os).astype(np.float32)))
        sharp = optics.blur_and_bin(img, sigma[u], d, os) * (q[u] * flux_e[u])
        # drop the far tails (< 1e-4 of the cell's own peak): they cost memory and time, not
        # light. Relative to the whole patch, so clipping and shadows never change the cut.
        floor = 1e-4 * sharp.max()
        # clip to the padded grid: crop in the patch, padded in the grid (row 0 = pixel -m)
        overlap = optics.patch_overlap(i0, j0, (n, n), (-m, H + m, -m, W + m))
        if overlap is not None:
            crop, padded = overlap
            patch = sharp[crop]
            if shadowed[u]:
                patch = patch * t_vessel[padded]
            keep = sharp[crop] > floor
            planes = []
            for s_ax in sig_ax:  # the drifted footprints share the union of the supports
                alt = optics.blur_and_bin(img, s_ax[u], d, os) * (q[u] * flux_e[u])
                keep |= alt[crop] > 1e-4 * alt.max()
                planes.append(alt[crop])
            ii, jj = np.nonzero(keep)
            s_rows.append((ii + padded[0].start) * Wp + (jj + padded[1].start))
            s_cols.append(np.full(len(ii), u))
            s_vals.append(patch[ii, jj])
            shade = t_vessel[padded] if shadowed[u] else 1.0
            for k, alt in enumerate(planes):
                ax_vals[k].append((alt * shade)[ii, jj] - patch[ii, jj])
        if q[u] < 1:
            hs = halo_sigma[u]
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
                h_rows.append((aa[ii] - a0) * nb + (bb[jj] - b0))
                h_cols.append(np.full(len(ii), u))
                h_vals.append(dens[ii, jj])

    def csr(rows, cols, vals, n_rows):
        if rows:
            rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        else:
            rows, cols, vals = np.empty(0, int), np.empty(0, int), np.empty(0)
        mat = sp.csr_matrix(
            (vals.astype(np.float32), (rows, cols)), shape=(n_rows, len(cells)), dtype=np.float32
        )
        mat.sum_duplicates()
        mat.sort_indices()
        return mat

    sharp_e = csr(s_rows, s_cols, s_vals, Hp * Wp)
    axial_e = tuple(csr(s_rows, s_cols, v, Hp * Wp) for v in ax_vals)
    halo_e = csr(h_rows, h_cols, h_vals, na * nb)

    npl = spec.tissue.neuropil
    if npl.enabled:
        level = npl.photons_per_um2_s * d * d / fps * qe
        neuropil = level * fields.neuropil_map(spec, yp, xp)
        band_depth = spec.cells.depth_um
        if band_depth > spec.vasculature.depth_um:
            neuropil = neuropil * t_vessel
    else:
        level, neuropil = 0.0, np.zeros((Hp, Wp))
    ys = optics.pixel_center_um(np.arange(H), H, d)
    xs = optics.pixel_center_um(np.arange(W), W, d)
    ref = level if npl.enabled else spec.cells.brightness_photons_per_s / fps * qe * 1e-3
    return Scene(
        spec=spec, cells=cells, margin_px=m, coarse_px=F, node_origin=(a0, b0),
        node_shape=(na, nb), sharp_e=sharp_e, halo_e=halo_e,
        neuropil_e=neuropil.astype(np.float32), vessel_chord_um=chord,
        illumination=fields.illumination(spec, ys, xs).astype(np.float32),
        vignette=fields.vignette(spec, ys, xs).astype(np.float32),
        glow_e=fields.glow(spec, ys, xs, ref).astype(np.float32),
        dz_um=dz, sigma_um=sigma, planted=planted, window=window,
        axial_bound_um=ab, axial_e=axial_e, node_anchor=(oy, ox),
    )
