"""Compiled loops of the scene (numba): the cells' footprints, built once per Scene, and the
per-pixel loops of the tissue sum -- the halo's bilinear interpolation and the assembly of sharp
footprints, focus-drift corrections, halo and neuropil in one pass.

The footprint kernels (:func:`cell_footprints`, :func:`halos`) are the compiled twin of the
numpy reference ``scene.cell_footprints`` (the model of ``scene.optics``), for all cells in one
call, in float64: what a cell gets depends only on the cell, never on the other cells or the
window.

They are the inner loops of :meth:`minisim.scene.Scene.tissue_e`, ``Scene.tissue_at`` and
``Scene._unit_halo``; each
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


@njit(cache=True, nogil=True, error_model="numpy")
def _assemble_tissue_at(sharp, halo_nodes, nb, iy, jx, ny, nx, fy, fx, neuropil, f_np, out):
    T = out.shape[0]
    has_halo = halo_nodes.shape[0] > 0
    for n in range(iy.shape[0]):
        i, j = iy[n], jx[n]
        npj = neuropil[n]
        k0, c = ny[i] * nb, nx[j]
        gy, fyi = _ONE - fy[i], fy[i]
        fxj = fx[j]
        gxj = _ONE - fxj
        for t in range(T):
            v = sharp[n, t]
            if has_halo:
                # _halo_rows at node columns c and c + 1, then _halo_x: the same float32 steps
                r0 = gy * halo_nodes[k0 + c, t] + fyi * halo_nodes[k0 + nb + c, t]
                r1 = gy * halo_nodes[k0 + c + 1, t] + fyi * halo_nodes[k0 + nb + c + 1, t]
                v = v + (gxj * r0 + fxj * r1)
            out[t, n] = v + npj * f_np[t]


def assemble_tissue_at(sharp, halo_nodes, nb, iy, jx, ny, nx, fy, fx, neuropil, f_np, out):
    """:func:`assemble_tissue` without focus drift at the pixels (iy[n], jx[n]) of a window
    alone: out[t, n] = sharp[n, t] + halo + neuropil[n] f[t], each value the one the whole
    window's pass gives at that pixel (the same float32 steps in the same order)."""
    _assemble_tissue_at(sharp, _float32(halo_nodes), nb, iy, jx, ny, nx, _float32(fy), _float32(fx),
                        _float32(neuropil), _float32(f_np), out)


def assemble_tissue(sharp, corrs, axial_w, halo_nodes, nb, ny, nx, fy, fx, neuropil, f_np, out):
    """out[t, i, j] = sharp + sum_k axial_w[t, k] corrs[k] + halo + neuropil f[t] at pixel (i, j).

    ``sharp`` and ``corrs[k]`` are (pixels, frames) unit sums (pixel i w + j); ``halo_nodes``
    (nodes, frames) with an empty first dimension for no halo. Float32 sums, each term rounded
    to float32 first: the halo term is then the value halo_interp stores, so a one-hot C gives
    footprints_e exactly.
    """
    _assemble_tissue(sharp, corrs, axial_w, _float32(halo_nodes), nb, ny, nx, _float32(fy), _float32(fx),
                     _float32(neuropil), _float32(f_np), out)


# ------------------------------------------------------------------------------ footprints
# The compiled twin of optics.planted_footprint, optics.bin_patch and optics.blur_and_bin as
# used by scene.cell_footprints (the numpy reference; tests/test_footprint_kernels.py holds them
# to 1e-12 of each other), for all cells in one call. Per cell: the soma and its dendrites are
# drawn on the sub-pixel grid only where they can be non-zero, binned into the planted patch,
# and blurred with the same pixel-integrated Gaussian weights (the normal CDF table of
# blur_and_bin, computed by scipy outside), x first (_blur_columns: per sub-pixel row) then y
# (_blur_pixels) -- but only over the pixels the far-tail cut can keep, instead of the whole
# patch: the peak that sets the cut lies on the drawn box's pixels (_peak), and rows and
# columns whose upper bound is below the cut hold nothing to keep (_reach). Every pixel's value
# is the same sum in the same order whichever block it is computed in.

@njit(cache=True, nogil=True, error_model="numpy")
def _sub_centres(first_px, n_px_sensor, d, ns, n, centre_um, out):
    """Sub-pixel centres (um, from the cell's centre) along a patch axis that starts at
    sensor pixel ``first_px``: the arithmetic of optics.planted_footprint."""
    sub = d / ns
    base = (first_px - (n_px_sensor - 1) / 2.0) * d - d / 2
    for i in range(n * ns):
        out[i] = (base + (i + 0.5) * sub) - centre_um


_SLACK = 2  # sub-pixels a computed column range is widened by: far above its rounding (~1e-14 um)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _dendrite_cols(y, x0, sub, ca, sa, r0, L, w4, j_a, j_b):
    """Columns [a, b) of [j_a, j_b) that hold every sub-pixel of row ``y`` (um) where a dendrite
    passes _draw_soma's test (0 <= s <= 1, |across| <= 4w): the band's x interval (a
    parallelogram's cross-section) as columns of the grid x0 + j sub, widened by _SLACK
    sub-pixels on each side to cover the test's rounding. Each of the two conditions bounds x
    only where its coefficient is not near 0 (one of cos, sin always is not), so the
    divisions are well conditioned."""
    lo, hi = -np.inf, np.inf
    if abs(ca) > 1e-3:  # along = x ca + y sa between r0 and r0 + L
        e0, e1 = (r0 - y * sa) / ca, ((r0 + L) - y * sa) / ca
        lo, hi = min(e0, e1), max(e0, e1)
    if abs(sa) > 1e-3:  # across = -x sa + y ca between -4w and 4w
        e0, e1 = (y * ca - w4) / sa, (y * ca + w4) / sa
        lo, hi = max(lo, min(e0, e1)), min(hi, max(e0, e1))
    if not lo <= hi:
        return j_a, j_a
    # clipped to the columns before the conversion to integers (lo, hi may be infinite)
    a = int(np.floor(max((lo - x0) / sub, j_a - 1.0))) - _SLACK
    b = int(np.ceil(min((hi - x0) / sub, j_b + 1.0))) + 1 + _SLACK
    a, b = max(j_a, a), min(j_b, b)
    return a, max(a, b)


@njit(cache=True, nogil=True, error_model="numpy")
def _part_boxes(ys, xs, n_px, sub, radius, ell, angles, lengths, dend_w, dendrites, box):
    """_draw_soma's boxes: per part (the soma, then each dendrite) the sub-pixel rows and
    columns (row, row end, column, column end) that hold it (returned), and in ``box`` the
    whole pixels that hold them all (all 0: nothing drawn)."""
    sq = np.sqrt(ell)
    reach = radius * max(sq, 1 / sq)
    n_parts = 1 + (angles.shape[0] if dendrites else 0)
    boxes = np.empty((n_parts, 4), np.int64)
    boxes[0, 0] = np.searchsorted(ys, -reach - sub)
    boxes[0, 1] = np.searchsorted(ys, reach + sub)
    boxes[0, 2] = np.searchsorted(xs, -reach - sub)
    boxes[0, 3] = np.searchsorted(xs, reach + sub)
    w = dend_w / 2
    r0 = radius * 0.8
    for k in range(n_parts - 1):
        ca, sa = np.cos(angles[k]), np.sin(angles[k])
        r1 = radius * 0.8 + lengths[k]
        ey0, ey1, ex0, ex1 = r0 * sa, r1 * sa, r0 * ca, r1 * ca
        boxes[k + 1, 0] = np.searchsorted(ys, (min(ey0, ey1) - 4 * w) - sub)
        boxes[k + 1, 1] = np.searchsorted(ys, (max(ey0, ey1) + 4 * w) + sub)
        boxes[k + 1, 2] = np.searchsorted(xs, (min(ex0, ex1) - 4 * w) - sub)
        boxes[k + 1, 3] = np.searchsorted(xs, (max(ex0, ex1) + 4 * w) + sub)
    box[0], box[1], box[2], box[3] = ys.shape[0], 0, xs.shape[0], 0
    for k in range(n_parts):
        if boxes[k, 0] < boxes[k, 1] and boxes[k, 2] < boxes[k, 3]:
            box[0], box[1] = min(box[0], boxes[k, 0]), max(box[1], boxes[k, 1])
            box[2], box[3] = min(box[2], boxes[k, 2]), max(box[3], boxes[k, 3])
    if box[0] >= box[1]:
        box[0], box[1], box[2], box[3] = 0, 0, 0, 0
        return boxes
    # whole pixels, so that binning reads only drawn (or zeroed) sub-pixels
    ns = ys.shape[0] // n_px
    box[0], box[2] = (box[0] // ns) * ns, (box[2] // ns) * ns
    box[1], box[3] = -((-box[1]) // ns) * ns, -((-box[3]) // ns) * ns
    return boxes


@njit(cache=True, nogil=True, error_model="numpy")
def _draw_soma(ys, xs, n_px, sub, radius, ell, phi, angles, lengths, nuc_f, nuc_b, dend_w, dend_b,
               dendrites, img, box, ext):
    """Draw one cell on the sub-pixel grid ``img`` (unnormalised; rows ys, columns xs, n_px
    pixels a side) where it can be non-zero; box[:] = the (row, row end, column, column end),
    whole pixels, that holds all of it; ext[y] = the columns [ext[y, 0], ext[y, 1]) of box row y,
    whole pixels and the same for a pixel's sub-pixel rows, outside which the row is 0. Only
    those are written (zeroed, then drawn): the rest of the box holds what was there before,
    and is never to be read.

    The same parts, boxes and arithmetic as optics.planted_footprint: an ellipsoid with a
    dimmer nucleus, then each dendrite (a term that is exactly 0 there is skipped). A dendrite
    is tested only in its band's columns of each row (_dendrite_cols), which hold every sub-pixel
    the test keeps: the same sub-pixels get the same terms, in the same order."""
    boxes = _part_boxes(ys, xs, n_px, sub, radius, ell, angles, lengths, dend_w, dendrites, box)
    if box[0] >= box[1]:
        return
    sq = np.sqrt(ell)
    n_parts = boxes.shape[0]
    w = dend_w / 2
    r0 = radius * 0.8
    ns = ys.shape[0] // n_px
    # each row's columns: the parts' (the soma's box, the dendrites' bands), joined over a
    # pixel's sub-pixel rows and rounded out to whole pixels, then zeroed
    ext[box[0]:box[1], 0], ext[box[0]:box[1], 1] = box[3], box[2]
    for i in range(boxes[0, 0], boxes[0, 1]):
        ext[i, 0], ext[i, 1] = min(ext[i, 0], boxes[0, 2]), max(ext[i, 1], boxes[0, 3])
    w4 = 4 * w
    # per dendrite and row of its box, its columns (_dendrite_cols), kept for the drawing below
    cols = np.empty((max(n_parts - 1, 1), ys.shape[0], 2), np.int64)
    for k in range(n_parts - 1):
        ca, sa = np.cos(angles[k]), np.sin(angles[k])
        for i in range(boxes[k + 1, 0], boxes[k + 1, 1]):
            a, b = _dendrite_cols(ys[i], xs[0], sub, ca, sa, r0, lengths[k], w4,
                                  boxes[k + 1, 2], boxes[k + 1, 3])
            cols[k, i, 0], cols[k, i, 1] = a, b
            if a < b:
                ext[i, 0], ext[i, 1] = min(ext[i, 0], a), max(ext[i, 1], b)
    for i in range(box[0], box[1], ns):
        a, b = ext[i, 0], ext[i, 1]
        for y in range(i + 1, i + ns):
            a, b = min(a, ext[y, 0]), max(b, ext[y, 1])
        if a < b:
            a, b = (a // ns) * ns, -((-b) // ns) * ns
        else:
            a, b = box[2], box[2]
        for y in range(i, i + ns):
            ext[y, 0], ext[y, 1] = a, b
            img[y, a:b] = 0.0
    cp, sp_ = np.cos(phi), np.sin(phi)
    r2 = radius * radius
    ff = nuc_f * nuc_f
    nuc = (1 - nuc_b) * nuc_f
    # contiguous slices indexed from 0 (no negative-index wraparound), so that the loop
    # vectorises: sqrt and division are correctly rounded and numba fuses no multiply-add, so
    # each value is the one a scalar loop gives
    xr = xs[boxes[0, 2]:boxes[0, 3]]
    for i in range(boxes[0, 0], boxes[0, 1]):
        y = ys[i]
        row = img[i, boxes[0, 2]:boxes[0, 3]]
        for j in range(xr.shape[0]):
            x = xr[j]
            u = (x * cp + y * sp_) * sq
            v = (-x * sp_ + y * cp) / sq
            rho2 = (u * u + v * v) / r2
            soma = np.sqrt(max(1 - rho2, 0.0))
            if nuc_f > 0:
                soma -= nuc * np.sqrt(max(1 - rho2 / ff, 0.0))
            row[j] += soma
    # per row of a dendrite's band, the test and its terms in a loop that vectorises, then
    # the exp (the one costly step) where the test holds
    ss, tt = np.empty(xs.shape[0]), np.empty(xs.shape[0])
    keep = np.empty(xs.shape[0], np.bool_)
    for k in range(n_parts - 1):
        ca, sa = np.cos(angles[k]), np.sin(angles[k])
        L = lengths[k]
        for i in range(boxes[k + 1, 0], boxes[k + 1, 1]):
            y = ys[i]
            j_a, j_b = cols[k, i, 0], cols[k, i, 1]
            xr, row = xs[j_a:j_b], img[i, j_a:j_b]
            for j in range(xr.shape[0]):
                x = xr[j]
                along = x * ca + y * sa
                across = -x * sa + y * ca
                s = (along - r0) / L
                ss[j], tt[j] = s, across / w
                keep[j] = (s >= 0) & (s <= 1) & (abs(across) <= 4 * w)
            for j in range(xr.shape[0]):
                if keep[j]:
                    t = tt[j]
                    row[j] += dend_b * (1 - ss[j]) * np.exp(-0.5 * (t * t))


@njit(cache=True, nogil=True, error_model="numpy")
def _psf_phases(cdf, c0, n, ns, sharp, dph, off):
    """The pixel-integration weights of one PSF by sub-pixel phase: dph[s, j + n - 1] = weight
    of a sub-pixel s sub-pixels into its pixel p on pixel p + j (optics.blur_and_bin's D[j ns - s]
    = cdf[(j + 1) ns - s] - cdf[j ns - s], cdf from ``c0``; ``sharp``: no blur, the weight is 1
    on the sub-pixel's own pixel). Returns the range (lo, hi) of offsets j ns - s whose weight is
    not exactly 0 (lo > hi: none); off[s] = the pixel offsets [j_a, j_b) of phase s within that
    range (lo <= j ns - s <= hi), all its weights that can be non-zero: a sub-pixel s sub-pixels
    into pixel p reaches pixels p + j_a to p + j_b - 1 (j_a >= j_b: none), and pixel k gets
    light from the sub-pixels y of phase s with k - y // ns in [j_a, j_b)."""
    lo, hi = n * ns, -n * ns
    for s in range(ns):
        for j in range(-(n - 1), n):
            t = j * ns - s
            if sharp:
                wt = 1.0 if j == 0 else 0.0
            else:
                wt = cdf[c0 + t + ns + n * ns] - cdf[c0 + t + n * ns]
            dph[s, j + n - 1] = wt
            if wt != 0.0:
                lo, hi = min(lo, t), max(hi, t)
    for s in range(ns):
        off[s, 0] = -((-(s + lo)) // ns)
        off[s, 1] = (s + hi) // ns + 1
    return lo, hi


@njit(cache=True, nogil=True, error_model="numpy")
def _blur_columns(img, box, ext, dph, off, n, ns, m_a, m_b, rows, span):
    """rows[y, m] = the light of sub-pixel row y (of the drawn ``box``, columns ``ext[y]``)
    falling on pixel column m in [m_a, m_b): the x step of the separable blur, summed over the
    row's non-zero sub-pixels in order; span[y] = [a, b), the columns that a non-zero sub-pixel
    of the row reaches (a == b: none): outside them the row is exactly 0 (+0.0), so the bounds
    (_rows_max, _reach) read only them (a max with 0, a term w * 0, changes nothing)."""
    rows[box[0]:box[1], m_a:m_b] = 0.0
    for y in range(box[0], box[1]):
        # the row's first and last non-zero sub-pixels
        x_a, x_b = ext[y, 0], ext[y, 1]
        while x_a < x_b and img[y, x_a] == 0.0:
            x_a += 1
        while x_b > x_a and img[y, x_b - 1] == 0.0:
            x_b -= 1
        s_a, s_b = m_a, m_a
        if x_a < x_b:
            s_a = max(m_a, x_a // ns + off[x_a % ns, 0])
            s_b = max(s_a, min(m_b, (x_b - 1) // ns + off[(x_b - 1) % ns, 1]))
        span[y, 0], span[y, 1] = s_a, s_b
        if s_a == s_b:
            continue
        row = rows[y]
        for x in range(x_a, x_b):
            v = img[y, x]
            if v == 0.0:
                continue
            px = x // ns
            s = x - px * ns
            m_lo = max(m_a, px + off[s, 0])
            m_hi = min(m_b, px + off[s, 1])
            # contiguous slices, so that the loop vectorises
            weights = dph[s, m_lo - px + n - 1:m_hi - px + n - 1]
            part = row[m_lo:m_hi]
            for i in range(m_hi - m_lo):
                part[i] += v * weights[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _blur_pixels(rows, box, dph, lo, hi, n, ns, k0, k1, m0, m1, out):
    """out[k - k0, m - m0] = the blurred, pixel-integrated image at pixel (k, m) for k in
    [k0, k1), m in [m0, m1): the y step, summed over sub-pixel rows in order. A pixel's value
    does not depend on the block it is computed in."""
    w = m1 - m0
    for k in range(k0, k1):
        acc = out[k - k0, :w]
        acc[:] = 0.0
        y_lo, y_hi = max(box[0], k * ns - hi), min(box[1], k * ns - lo + 1)
        py, s = y_lo // ns, y_lo % ns
        for y in range(y_lo, y_hi):
            wt = dph[s, k - py + n - 1]
            if wt != 0.0:
                row = rows[y, m0:m1]
                for i in range(w):
                    acc[i] += wt * row[i]
            s += 1
            if s == ns:
                s, py = 0, py + 1


@njit(cache=True, nogil=True, error_model="numpy")
def _row_bounds(row_max, box, dph, off, n, ns, k0, k1, out):
    """out[k - k0] = an upper bound of pixel row k of the image, k in [k0, k1): the y step
    applied to ``row_max`` (per sub-pixel row, the largest of its x-blurred values over the
    columns that matter), each row's sum in the order of the sub-pixel rows; the rows are
    summed side by side (sub-pixel row by sub-pixel row), so that the loop vectorises."""
    out[:k1 - k0] = 0.0
    py, s = box[0] // ns, box[0] % ns
    for y in range(box[0], box[1]):
        v = row_max[y]
        a, b = max(k0, py + off[s, 0]), min(k1, py + off[s, 1])
        if v != 0.0 and a < b:
            wts = dph[s, a - py + n - 1:b - py + n - 1]
            dst = out[a - k0:b - k0]
            for i in range(b - a):
                dst[i] += wts[i] * v
        s += 1
        if s == ns:
            s, py = 0, py + 1


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_max(rows, span, box, m_a, m_b, out):
    """out[y] = max of rows[y, m_a:m_b] over the box's sub-pixel rows (0 for no columns), over
    each row's span alone (the row is 0 outside it)."""
    for y in range(box[0], box[1]):
        v = 0.0
        for m in range(max(m_a, span[y, 0]), min(m_b, span[y, 1])):
            v = max(v, rows[y, m])
        out[y] = v


_SAFE = 1 + 1e-9  # bounds are compared with this margin: they and the values round differently


@njit(cache=True, nogil=True, error_model="numpy")
def _peak(rows, span, box, px_box, dph, off, lo, hi, n, ns, row_max, bound, buf):
    """The image's largest value over the box's pixels (where its largest value over the
    whole patch lies: outside them a Gaussian integrated over a pixel only shrinks with the
    distance to every source). Rows are evaluated in decreasing order of their bound, until
    no row left can beat the best one found."""
    k0, k1, m0, m1 = px_box[0], px_box[1], px_box[2], px_box[3]
    _rows_max(rows, span, box, m0, m1, row_max)
    _row_bounds(row_max, box, dph, off, n, ns, k0, k1, bound)
    best = 0.0
    while True:
        i = 0
        for j in range(1, k1 - k0):
            if bound[j] > bound[i]:
                i = j
        if bound[i] < 0 or bound[i] * _SAFE <= best:
            return best
        bound[i] = -1.0
        _blur_pixels(rows, box, dph, lo, hi, n, ns, k0 + i, k0 + i + 1, m0, m1, buf)
        for m in range(m1 - m0):
            best = max(best, buf[0, m])


@njit(cache=True, nogil=True, error_model="numpy")
def _reach(rows, span, box, dph, off, n, ns, crop, floor, row_max, bound, col_bound):
    """Rows [a, b) and columns [c, e) of the crop [r0, r1) x [c0, c1) outside which no pixel of
    the image exceeds ``floor``, from bounds: a row by its sub-pixel rows' largest values over
    the crop's columns, a column by its sub-pixel rows' values times their largest weight."""
    r0, r1, c0, c1 = crop
    _rows_max(rows, span, box, c0, c1, row_max)
    _row_bounds(row_max, box, dph, off, n, ns, r0, r1, bound)
    a, b = r1, r0
    for k in range(r0, r1):
        if bound[k - r0] * _SAFE > floor:
            a, b = min(a, k), k + 1
    col_bound[c0:c1] = 0.0
    w_max = np.zeros(ns)  # per sub-pixel phase, its largest weight on any pixel
    for sy in range(ns):
        for j in range(2 * n - 1):
            w_max[sy] = max(w_max[sy], dph[sy, j])
    for y in range(box[0], box[1]):
        w = w_max[y % ns]
        m_lo, m_hi = max(c0, span[y, 0]), min(c1, span[y, 1])
        if m_lo < m_hi:
            part = rows[y, m_lo:m_hi]
            dst = col_bound[m_lo:m_hi]
            for i in range(m_hi - m_lo):
                dst[i] += w * part[i]
    c, e = c1, c0
    for m in range(c0, c1):
        if col_bound[m] * _SAFE > floor:
            c, e = min(c, m), m + 1
    return a, b, c, e


@njit(cache=True, nogil=True, error_model="numpy")
def _grow(a, need):
    """``a`` (1-D), or a copy at least twice as long where ``need`` entries do not fit."""
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    b[:a.shape[0]] = a
    return b


@njit(cache=True, nogil=True, error_model="numpy")
def _grow_2d(a, need):
    """``a`` (rows, entries), or a copy with room for at least ``need`` entries."""
    if need <= a.shape[1]:
        return a
    b = np.empty((a.shape[0], max(need, 2 * a.shape[1])), a.dtype)
    b[:, :a.shape[1]] = a
    return b


@njit(cache=True, nogil=True, error_model="numpy")
def _cell_footprints(cy, cx, radius, ell, phi, angles, lengths, i0, j0, n_px, H, W, d, ns,
                     nuc_f, nuc_b, dend_w, dend_b, dendrites, sigma, cdf, cdf_start, scale,
                     shadowed, t_vessel, margin):
    N, P = cy.shape[0], sigma.shape[0]
    Wp = t_vessel.shape[1]
    max_n = 1
    for u in range(N):
        max_n = max(max_n, n_px[u])
    M = max_n * ns
    ys, xs = np.empty(M), np.empty(M)
    img = np.empty((M, M))
    rows = np.empty((P, M, max_n))
    dph = np.empty((P, ns, 2 * max_n - 1))
    off = np.empty((P, ns, 2), np.int64)
    span = np.empty((P, M, 2), np.int64)
    lo, hi = np.empty(P, np.int64), np.empty(P, np.int64)
    floors = np.empty(P)
    vals = np.empty((P, max_n, max_n))
    buf = np.empty((max_n, max_n))
    row_max, bound, col_bound = np.empty(M), np.empty(max_n), np.empty(max_n)
    box, px_box = np.empty(4, np.int64), np.empty(4, np.int64)
    ext = np.empty((M, 2), np.int64)
    out_rows = np.empty(1 << 16, np.int64)
    out_vals = np.empty((P, 1 << 16))
    ptr = np.zeros(N + 1, np.int64)
    nnz = 0
    p_ptr = np.zeros(N + 1, np.int64)
    p_box = np.zeros((N, 4), np.int64)
    sub = d / ns
    # each cell's planted crop (the whole pixels of the drawn box, as _draw_soma finds it),
    # so that the planted buffer is allocated once, at its size
    for u in range(N):
        n = n_px[u]
        _sub_centres(i0[u], H, d, ns, n, cy[u], ys)
        _sub_centres(j0[u], W, d, ns, n, cx[u], xs)
        _part_boxes(ys[:n * ns], xs[:n * ns], n, sub, radius[u], ell[u], angles[u], lengths[u],
                    dend_w, dendrites, box)
        p_ptr[u + 1] = p_ptr[u] + ((box[1] - box[0]) // ns) * ((box[3] - box[2]) // ns)
    planted = np.empty(p_ptr[N], np.float32)
    for u in range(N):
        ptr[u] = nnz
        n = n_px[u]
        _sub_centres(i0[u], H, d, ns, n, cy[u], ys)
        _sub_centres(j0[u], W, d, ns, n, cx[u], xs)
        _draw_soma(ys[:n * ns], xs[:n * ns], n, sub, radius[u], ell[u], phi[u], angles[u], lengths[u],
                   nuc_f, nuc_b, dend_w, dend_b, dendrites, img, box, ext)
        # normalised to sum 1, binned into the planted patch (sub-pixels in optics.bin_patch's
        # order), both over each row's columns alone: the rest of the box is 0, which adds
        # nothing to the sum (+0.0) and bins to the +0.0 the caller's zeroed buffer holds
        total = 0.0
        for y in range(box[0], box[1]):
            for x in range(ext[y, 0], ext[y, 1]):
                total += img[y, x]
        if total > 0:
            for y in range(box[0], box[1]):
                part = img[y, ext[y, 0]:ext[y, 1]]  # indexed from 0: the loop vectorises
                for x in range(part.shape[0]):
                    part[x] = part[x] / total
        px_box[0], px_box[1], px_box[2], px_box[3] = box[0] // ns, box[1] // ns, box[2] // ns, box[3] // ns
        # the planted patch cropped to the drawn box's pixels (outside it the patch is 0),
        # zeroed, then each row's drawn columns written
        p0, wd = p_ptr[u], px_box[3] - px_box[2]
        p_box[u, 0], p_box[u, 1], p_box[u, 2], p_box[u, 3] = px_box[0], px_box[1], px_box[2], px_box[3]
        planted[p0:p_ptr[u + 1]] = 0
        for k in range(px_box[0], px_box[1]):
            row0 = p0 + (k - px_box[0]) * wd - px_box[2]  # pixel column m of row k at row0 + m
            if ns == 1:  # a copy: the loop below unrolled, indexed from 0 so that it vectorises
                part = img[k, ext[k, 0]:ext[k, 1]]
                dst = planted[row0 + ext[k, 0]:row0 + ext[k, 1]]
                for m in range(part.shape[0]):
                    dst[m] = np.float32(part[m])
                continue
            for m in range(ext[k * ns, 0] // ns, ext[k * ns, 1] // ns):
                v = img[k * ns, m * ns]
                for a in range(ns):
                    for b in range(ns):
                        if a or b:
                            v += img[k * ns + a, m * ns + b]
                planted[row0 + m] = np.float32(v)
        # the sharp images on the padded grid: crop [r0, r1) x [c0, c1) of the patch
        r0, r1 = max(i0[u], -margin) - i0[u], min(i0[u] + n, H + margin) - i0[u]
        c0, c1 = max(j0[u], -margin) - j0[u], min(j0[u] + n, W + margin) - j0[u]
        if r0 >= r1 or c0 >= c1 or box[0] >= box[1]:
            continue
        # each PSF's far-tail floor (1e-4 of its own peak), and the pixels of the crop that
        # can exceed it
        k0, k1, m0, m1 = n, 0, n, 0
        m_a, m_b = min(px_box[2], c0), max(px_box[3], c1)
        for p in range(P):
            lo[p], hi[p] = _psf_phases(cdf, cdf_start[p, u], n, ns, sigma[p, u] <= 1e-6 * d, dph[p],
                                       off[p])
            _blur_columns(img, box, ext, dph[p], off[p], n, ns, m_a, m_b, rows[p], span[p])
            peak = _peak(rows[p], span[p], box, px_box, dph[p], off[p], lo[p], hi[p], n, ns,
                         row_max, bound, buf)
            floors[p] = 1e-4 * (peak * scale[u])
            a, b_, c, e = _reach(rows[p], span[p], box, dph[p], off[p], n, ns, (r0, r1, c0, c1),
                                 floors[p] / scale[u], row_max, bound, col_bound)
            if a < b_ and c < e:
                k0, k1, m0, m1 = min(k0, a), max(k1, b_), min(m0, c), max(m1, e)
        if k0 >= k1:
            continue
        for p in range(P):
            _blur_pixels(rows[p], box, dph[p], lo[p], hi[p], n, ns, k0, k1, m0, m1, vals[p])
        out_rows = _grow(out_rows, nnz + (k1 - k0) * (m1 - m0))
        out_vals = _grow_2d(out_vals, nnz + (k1 - k0) * (m1 - m0))
        su, shaded = scale[u], shadowed[u]
        for k in range(k0, k1):
            pr = k + i0[u] + margin
            for m in range(m0, m1):
                sharp = vals[0, k - k0, m - m0] * su
                keep = sharp > floors[0]
                for p in range(1, P):
                    keep = keep or vals[p, k - k0, m - m0] * su > floors[p]
                if keep:
                    pc = m + j0[u] + margin
                    shade = t_vessel[pr, pc] if shaded else 1.0
                    if shaded:
                        sharp = sharp * shade
                    out_rows[nnz] = pr * Wp + pc
                    out_vals[0, nnz] = sharp
                    for p in range(1, P):
                        out_vals[p, nnz] = (vals[p, k - k0, m - m0] * su) * shade - sharp
                    nnz += 1
    ptr[N] = nnz
    return (planted, p_ptr, p_box), (ptr, out_rows[:nnz], out_vals[:, :nnz])


def cell_footprints(cy, cx, radius, ell, phi, angles, lengths, i0, j0, n_px, H, W, d, ns,
                    nuc_f, nuc_b, dend_w, dend_b, dendrites, sigma, cdf, cdf_start, scale,
                    shadowed, t_vessel, margin):
    """Every cell's planted patch and sharp images, in one compiled pass (no GIL held).

    Per cell u: its centre (cy, cx um), radius, shape draws (ell, phi, dendrite ``angles`` and
    ``lengths`` rows), patch [i0, i0 + n) x [j0, j0 + n) px, ``ns`` sub-pixels a side; per PSF
    plane p (the sharp image, then the focus-drift planes) its ``sigma[p, u]`` and the normal CDF
    table of optics.blur_and_bin at ``cdf[cdf_start[p, u]:]``; the light ``scale`` (sharp share x
    flux), whether it is ``shadowed`` by ``t_vessel`` (padded grid, ``margin`` px).

    Returns the planted patches (values float32, indptr by unit, box (units, 4)): unit u's
    patch cropped to the pixels its drawing reaches, rows [box[u, 0], box[u, 1]) x columns
    [box[u, 2], box[u, 3]) of its n x n patch, row-major at values[indptr[u]:indptr[u + 1]]
    (the n x n patch, sized for the widest PSF, is 0 outside the box: ~87 % of it for the
    default Spec; an empty box where nothing is drawn); and the sharp images (indptr by
    unit, padded-grid rows, values (planes, entries) float64): per unit the pixels
    above any plane's far-tail floor, row-major; plane 0 the sharp image, plane p > 0 its
    difference from plane 0.
    """
    return _cell_footprints(cy, cx, radius, ell, phi, np.ascontiguousarray(angles, np.float64),
                            np.ascontiguousarray(lengths, np.float64), i0, j0, n_px, H, W, d, ns,
                            nuc_f, nuc_b, dend_w, dend_b, dendrites, sigma, cdf, cdf_start, scale,
                            shadowed, t_vessel, margin)


# ------------------------------------------------------------------------- planted patches
# Readers of the planted patches of _cell_footprints (cropped, in one buffer: values, indptr,
# box in sensor pixels), so that none walks the zeros of the square patches they were drawn in.

@njit(cache=True, nogil=True, error_model="numpy")
def _paste_patches(values, start, box, units, y0, y1, x0, x1, out):
    for n in range(units.shape[0]):
        u = units[n]
        ia, ib = max(box[u, 0], y0), min(box[u, 1], y1)
        ja, jb = max(box[u, 2], x0), min(box[u, 3], x1)
        if ia >= ib or ja >= jb:
            continue
        wd = box[u, 3] - box[u, 2]
        for i in range(ia, ib):
            a = start[u] + (i - box[u, 0]) * wd + (ja - box[u, 2])
            src, dst = values[a:a + (jb - ja)], out[n, i - y0, ja - x0:jb - x0]
            for j in range(src.shape[0]):
                dst[j] = src[j]


def paste_patches(values, start, box, units, window, out):
    """Paste patches ``units`` (int64 unit indices) into ``out`` (len(units), y1 - y0, x1 - x0),
    zeroed by the caller, over the sensor ``window`` (y0, y1, x0, x1): unit u's patch
    values[start[u]:start[u + 1]] row-major over the pixels [box[u, 0], box[u, 1]) x
    [box[u, 2], box[u, 3]), clipped to the window."""
    y0, y1, x0, x1 = window
    _paste_patches(values, start, box, np.ascontiguousarray(units, np.int64), y0, y1, x0, x1, out)


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise_leaf(pos, val, a, b, lo, n):
    """A block (n <= 128) of :func:`_pairwise_f32`: numpy's 8 accumulators (n >= 8; the
    position picks the accumulator, the last n % 8 added in order after them) or one (n < 8)."""
    if n < 8:
        res = np.float32(0.0)
        for k in range(a, b):
            res += val[k]
        return res
    r = np.zeros(8, np.float32)
    lim = lo + n - n % 8
    k = a
    while k < b and pos[k] < lim:
        r[(pos[k] - lo) & 7] += val[k]
        k += 1
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while k < b:
        res += val[k]
        k += 1
    return res


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise_f32(pos, val, k, n):
    """numpy's float32 pairwise sum (np.add.reduce of a contiguous array: blocks of at most 128
    summed in 8 accumulators, the halves between them split at multiples of 8) of a sequence
    of n values that is 0 but at positions pos[:k] (ascending), where it holds val[:k]. Adding
    0 changes no partial sum, so the zeros are skipped, but each value goes into the
    accumulator its position picks: the same sum, rounding included, as np.sum over the whole
    sequence. The halving with an explicit stack (a cached recursive function crashed numba)."""
    # frames: (first position, length, first entry, entry end, halfway entry, stage)
    fr = np.empty((64, 6), np.int64)
    sums = np.empty(64, np.float32)
    fr[0, 0], fr[0, 1], fr[0, 2], fr[0, 3], fr[0, 5] = 0, n, 0, k, 0
    top, nv = 1, 0
    while top > 0:
        f = fr[top - 1]
        lo, m, a, b = f[0], f[1], f[2], f[3]
        if m <= 128 or a == b:  # a block, or zeros alone
            sums[nv] = _pairwise_leaf(pos, val, a, b, lo, m) if a < b else np.float32(0.0)
            nv += 1
            top -= 1
            continue
        m2 = m // 2
        m2 -= m2 % 8
        if f[5] == 0:  # the first half
            f[4], f[5] = a + np.searchsorted(pos[a:b], lo + m2), 1
            g = fr[top]
            g[0], g[1], g[2], g[3], g[5] = lo, m2, a, f[4], 0
            top += 1
        elif f[5] == 1:  # the second half
            f[5] = 2
            g = fr[top]
            g[0], g[1], g[2], g[3], g[5] = lo + m2, m - m2, f[4], b, 0
            top += 1
        else:  # both: their sum
            sums[nv - 2] = sums[nv - 2] + sums[nv - 1]
            nv -= 1
            top -= 1
    return sums[0]


@njit(cache=True, nogil=True, error_model="numpy")
def _masked_patch_sums(values, start, box, frame, mask, margin):
    Hp, Wp = mask.shape
    N = start.shape[0] - 1
    cum = np.zeros((Hp, Wp + 1), np.int64)  # cum[r, c]: masked pixels of grid row r before column c
    for r in range(Hp):
        for c in range(Wp):
            cum[r, c + 1] = cum[r, c] + (1 if mask[r, c] else 0)
    out = np.zeros(N, np.float32)
    pos, val = np.empty(1 << 12, np.int64), np.empty(1 << 12, np.float32)
    bits_all = values.view(np.uint32)
    for u in range(N):
        # the frame on the padded grid (rows [ra, rb), columns [ca, cb)), and the patch in it
        ra, rb = max(frame[u, 0] + margin, 0), min(frame[u, 1] + margin, Hp)
        ca, cb = max(frame[u, 2] + margin, 0), min(frame[u, 3] + margin, Wp)
        if ra >= rb or ca >= cb:
            continue
        ya, yb = max(box[u, 0] + margin, ra), min(box[u, 1] + margin, rb)
        xa, xb = max(box[u, 2] + margin, ca), min(box[u, 3] + margin, cb)
        wd = box[u, 3] - box[u, 2]
        seen, k = 0, 0  # masked pixels of the frame's rows before row r; non-zero values
        for r in range(ra, rb):
            if ya <= r < yb and xa < xb and cum[r, xa] < cum[r, xb]:
                pos, val = _grow(pos, k + xb - xa), _grow(val, k + xb - xa)
                row0 = start[u] + (r - margin - box[u, 0]) * wd - (box[u, 2] + margin)
                part, under, at = values[row0 + xa:row0 + xb], mask[r, xa:xb], seen - cum[r, ca]
                bits = bits_all[row0 + xa:row0 + xb]
                for c0 in range(0, part.shape[0], 16):  # mostly zeros: blocks of 16 skipped at once
                    c1 = min(c0 + 16, part.shape[0])
                    any_set = np.uint32(0)
                    for c in range(c0, c1):
                        any_set |= bits[c]
                    if any_set == 0:
                        continue
                    for c in range(c0, c1):
                        if part[c] != 0 and under[c]:
                            pos[k], val[k] = at + cum[r, xa + c], part[c]
                            k += 1
            seen += cum[r, cb] - cum[r, ca]
        out[u] = np.float32(0.0) + _pairwise_f32(pos, val, k, seen)
    return out


def masked_patch_sums(values, start, box, frame, mask, margin):
    """Per unit, float32: the sum of its patch (as :func:`paste_patches`) over the pixels of
    ``mask`` (the padded grid, ``margin`` px beyond the sensor), in the order and rounding of
    np.sum over the masked pixels of the uncropped patch ``frame[u]`` (y0, y1, x0, x1) it was
    cropped from, row-major: the frame's pixels outside the crop are zeros, which change no
    partial sum but decide where each value falls in numpy's pairwise sum, so they are
    counted (per grid row, from the mask's running count), not read; and of the crop only
    the masked pixels are read."""
    return _masked_patch_sums(np.ascontiguousarray(values, np.float32), start, box, frame,
                              np.ascontiguousarray(mask, np.bool_), margin)


@njit(cache=True, nogil=True, error_model="numpy")
def _halos(cy, cx, q, flux, hs, d, F, a0, b0, na, nb, off_y, off_x, truncate):
    N = cy.shape[0]
    out_rows = np.empty(1 << 16, np.int64)
    out_vals = np.empty(1 << 16)
    ptr = np.zeros(N + 1, np.int64)
    nnz = 0
    for u in range(N):
        ptr[u] = nnz
        if not q[u] < 1:
            continue
        ext_h = truncate * hs[u]
        ci, cj = cy[u] / d - off_y, cx[u] / d - off_x
        a_lo = max(int(np.floor((ci - ext_h / d) / F)), a0)
        a_hi = min(int(np.ceil((ci + ext_h / d) / F)), a0 + na - 1) + 1
        b_lo = max(int(np.floor((cj - ext_h / d) / F)), b0)
        b_hi = min(int(np.ceil((cj + ext_h / d) / F)), b0 + nb - 1) + 1
        if a_lo >= a_hi or b_lo >= b_hi:
            continue
        gx = np.empty(b_hi - b_lo)
        for bb in range(b_lo, b_hi):
            t = (((bb * F + off_x) - cx[u] / d) * d / hs[u])
            gx[bb - b_lo] = np.exp(-0.5 * (t * t))
        coef = (1 - q[u]) * flux[u] * d * d / (2 * np.pi * hs[u] * hs[u])
        out_rows = _grow(out_rows, nnz + (a_hi - a_lo) * (b_hi - b_lo))
        out_vals = _grow(out_vals, nnz + (a_hi - a_lo) * (b_hi - b_lo))
        for aa in range(a_lo, a_hi):
            t = (((aa * F + off_y) - cy[u] / d) * d / hs[u])
            gy = np.exp(-0.5 * (t * t))
            for bb in range(b_lo, b_hi):
                v = gy * gx[bb - b_lo] * coef
                if v > 0:
                    out_rows[nnz] = (aa - a0) * nb + (bb - b0)
                    out_vals[nnz] = v
                    nnz += 1
    ptr[N] = nnz
    return ptr, out_rows[:nnz], out_vals[:nnz]


def halos(cy, cx, q, flux, hs, d, F, a0, b0, na, nb, off_y, off_x, truncate):
    """Every cell's scattered halo on the node grid, in one compiled pass: per unit with a
    scattered share (sharp share q < 1) the Gaussian of sigma ``hs`` (um) cut at ``truncate``
    sigma, sampled at the nodes (node (a, b) at pixel (a F + off_y, b F + off_x) from the optical
    axis), holding (1 - q) x flux per pixel area; (indptr by unit, node rows, values)."""
    return _halos(cy, cx, q, flux, hs, d, F, a0, b0, na, nb, off_y, off_x, truncate)


# ------------------------------------------------------------------------------ footprint boxes
@njit(cache=True, nogil=True, error_model="numpy")
def _footprint_boxes(units, window, indptr, ii, jj, data, h_ptr, h_rows, h_vals, halo_boxes,
                     F, a0, b0, oy, ox, nb, extents, offsets, out):
    """Scene.footprint_box for each unit of ``units`` into ``out`` (flat float32; unit k's box
    (y1 - y0, x1 - x0) at offsets[k], its extent in extents[k]; both from
    :func:`footprint_box_extents`): the sharp pixels set, then the halo added, as
    ``Scene._unit_halo`` interpolates it (a one-hot node grid, y then x, float32)."""
    wy0, wy1, wx0, wx1 = window[0], window[1], window[2], window[3]
    for k in range(units.shape[0]):
        u = units[k]
        y0, y1, x0, x1 = extents[k, 0], extents[k, 1], extents[k, 2], extents[k, 3]
        if y0 >= y1:
            continue
        bw = x1 - x0
        base = offsets[k]
        for n in range(indptr[u], indptr[u + 1]):
            i, j = ii[n], jj[n]
            if i >= wy0 and i < wy1 and j >= wx0 and j < wx1:
                out[base + (i - y0) * bw + (j - x0)] = data[n]
        hy0, hy1 = max(wy0, halo_boxes[u, 0]), min(wy1, halo_boxes[u, 1])
        hx0, hx1 = max(wx0, halo_boxes[u, 2]), min(wx1, halo_boxes[u, 3])
        if not (hy0 < hy1 and hx0 < hx1):
            continue
        # Scene._halo_geometry over the halo box: node rows ra, columns rb (grid coordinates)
        ia, ib = (hy0 - oy) // F, (hy1 - 1 - oy) // F + 1
        ja, jb = (hx0 - ox) // F, (hx1 - 1 - ox) // F + 1
        la, lb = ib + 1 - ia, jb + 1 - ja
        nodes = np.zeros(la * lb, np.float32)
        for n in range(h_ptr[u], h_ptr[u + 1]):
            r = h_rows[n] // nb - (ia - a0)
            c = h_rows[n] % nb - (ja - b0)
            if r >= 0 and r < la and c >= 0 and c < lb:
                nodes[r * lb + c] = h_vals[n]
        rows = np.empty(lb, np.float32)
        w = hx1 - hx0
        cs = np.empty(w, np.int64)
        fxs = np.empty(w, np.float32)
        gxs = np.empty(w, np.float32)
        for x in range(w):
            xx = x + hx0 - ox
            cs[x] = xx // F - ja
            fxs[x] = np.float32((xx - (xx // F) * F) / F)
            gxs[x] = _ONE - fxs[x]
        for y in range(hy0, hy1):
            yy = y - oy
            fy = np.float32((yy - (yy // F) * F) / F)
            gy = _ONE - fy
            k0 = (yy // F - ia) * lb
            for c in range(lb):
                rows[c] = gy * nodes[k0 + c] + fy * nodes[k0 + lb + c]
            row = base + (y - y0) * bw + (hx0 - x0)
            for x in range(w):
                c = cs[x]
                out[row + x] = out[row + x] + (gxs[x] * rows[c] + fxs[x] * rows[c + 1])
