"""Scoring a cell-extraction pipeline against a minisim ground truth.

``score(truth, estimate)`` matches the estimated units to the true cells one to one (Hungarian
assignment on a footprint cost, inside a centroid gate), then reports precision, recall and F1
(overall and over the ``detectable`` cells), per match the footprint and trace correlations and
the spike-event F1, the class of every false positive, and recall stratified by defocus, depth,
peak SNR, vessel overlap and local density. docs/scoring.md defines every number.

Readers turn a pipeline's output into an :class:`Estimate`: :func:`from_minian` (an xarray
``A(unit_id, height, width)``, ``C(unit_id, frame)``, optional ``S``), :func:`from_caiman`
(``A`` pixels x K in Fortran order, ``C`` K x T) and :func:`from_arrays`.

Where it sits: after a recording exists (a :class:`minisim.Recording` or its Dataset). It reads
the ground truth lazily, 32 units of footprints at a time, and holds footprints sparse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .scene.optics import pixel_index

#: A footprint's *core*: its pixels at or above this fraction of its own maximum. Centroids
#: are the value-weighted centroids of the core; the "caiman" convention binarises at it.
CORE_FRACTION = 0.2
#: An estimate that covers a vessel: at least this share of its core's weight on ``vessel_mask``.
VESSEL_FP_FRACTION = 0.5
#: Footprint similarity (cosine, Pearson r) is computed within a disc of this many soma
#: diameters around the true cell's centroid: the scattered halo of a deep cell spreads most
#: of its footprint's energy over tens of px, which no pipeline keeps as the cell's own.
WINDOW_DIAMETERS = 2.0
#: Spike events of an estimate: frames where its S exceeds this fraction of its own maximum.
SPIKE_FRACTION = 0.1
_BLOCK_UNITS = 32
_INADMISSIBLE = 1e9


@dataclass(frozen=True)
class Convention:
    """How estimates are matched to true cells.

    ``cost`` is ``"cosine"`` (1 - cosine similarity of the footprints), ``"iou"`` (1 - IoU of
    the binarised footprints) or ``"distance"`` (centroid distance in px). A pair is
    admissible when the centroids lie within the gate (``gate_px``, or ``gate_diameters`` soma
    diameters of the true cell) and the similarity passes ``threshold`` (cosine >= t, IoU > t).
    """

    name: str
    cost: str
    threshold: float | None
    gate_px: float | None = None
    gate_diameters: float | None = None


CONVENTIONS: dict[str, Convention] = {
    # minisim: footprint cosine >= 0.5 within one soma diameter of the true cell
    "minisim": Convention("minisim", "cosine", 0.5, gate_diameters=1.0),
    # CaImAn-like: cost 1 - IoU of footprints binarised at 20 % of their max, centroids within
    # 10 px, a match needs IoU > 0.3
    "caiman": Convention("caiman", "iou", 0.3, gate_px=10.0),
    # minian-like: cost = centroid distance, within one soma diameter of the true cell
    "minian": Convention("minian", "distance", None, gate_diameters=1.0),
    # neurofinder: cost = centroid distance, centres within 5 px
    "neurofinder": Convention("neurofinder", "distance", None, gate_px=5.0),
}

#: Bin edges of the strata (left-closed); docs/scoring.md explains each.
STRATA_BINS: dict[str, list[float]] = {
    "abs_defocus_um": [0.0, 5.0, 10.0, 20.0, 40.0, np.inf],
    "pnr": [0.0, 1.0, 3.0, 5.0, 10.0, np.inf],
    "vessel_overlap_fraction": [0.0, 0.05, 0.25, 0.5, np.inf],
    "local_density": [0, 1, 2, 3, np.inf],
}
#: ``depth_um`` strata: the truth's own depth range in this many equal bins.
DEPTH_BINS = 4

FP_CLASSES = ("duplicate", "vessel", "edge", "near_cell", "background")


# ============================================================================ estimates
@dataclass
class Estimate:
    """A pipeline's output in one form: footprints ``A`` sparse (K, height*width) in C order,
    ``C`` (K, frames) or None, ``S`` (K, frames) or None, ``shifts`` (frames, 2) or None: the
    (y, x) shift in px the pipeline applied to frame t to register it."""

    A: sp.csr_matrix
    dims: tuple[int, int]
    C: np.ndarray | None = None
    S: np.ndarray | None = None
    shifts: np.ndarray | None = None
    unit_id: np.ndarray | None = None

    def __post_init__(self):
        K = self.A.shape[0]
        if self.A.shape[1] != self.dims[0] * self.dims[1]:
            raise ValueError(f"estimate A has {self.A.shape[1]} pixels per unit; dims {self.dims} "
                             f"need {self.dims[0] * self.dims[1]}")
        for name in ("C", "S"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, np.float64)
                if v.ndim != 2 or v.shape[0] != K:
                    raise ValueError(f"estimate {name} must be (units, frames) with {K} units "
                                     f"(one per footprint), got shape {v.shape}")
                setattr(self, name, v)
        if self.shifts is not None:
            s = np.asarray(self.shifts, np.float64)
            if s.ndim != 2 or s.shape[1] != 2:
                raise ValueError(f"estimate shifts must be (frames, 2) (y, x) px, got shape {s.shape}")
            self.shifts = s
        if self.unit_id is None:
            self.unit_id = np.arange(K)

    @property
    def n_units(self) -> int:
        return self.A.shape[0]


def _dense_units_to_csr(A: Any) -> sp.csr_matrix:
    """(K, H, W) array-like (numpy, dask, xarray) to CSR (K, H*W), 32 units at a time."""
    K = A.shape[0]
    parts = []
    for u0 in range(0, K, _BLOCK_UNITS):
        block = A[u0 : u0 + _BLOCK_UNITS]
        block = np.asarray(getattr(block, "values", block), dtype=np.float32)
        parts.append(sp.csr_matrix(block.reshape(block.shape[0], -1)))
    if not parts:
        return sp.csr_matrix((0, int(np.prod(A.shape[1:]))), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def from_arrays(A: Any, C: Any = None, S: Any = None, shifts: Any = None,
                dims: tuple[int, int] | None = None) -> Estimate:
    """An :class:`Estimate` from plain arrays.

    ``A`` is (K, height, width) dense (numpy, dask or xarray), or a scipy sparse (K, height*width)
    matrix in C order with ``dims`` = (height, width); ``C``/``S`` (K, frames); ``shifts``
    (frames, 2): the (y, x) shift in px applied to each frame to register it.

    >>> import numpy as np
    >>> est = from_arrays(np.ones((2, 4, 5)), np.zeros((2, 3)))
    >>> est.n_units, est.dims
    (2, (4, 5))
    """
    if sp.issparse(A):
        if dims is None:
            raise ValueError("from_arrays: a sparse A (units, pixels) needs dims=(height, width)")
        csr = sp.csr_matrix(A, dtype=np.float32)
    else:
        if getattr(A, "ndim", None) != 3:
            raise ValueError(f"from_arrays: A must be (units, height, width), got shape "
                             f"{getattr(A, 'shape', None)}")
        dims = (int(A.shape[1]), int(A.shape[2]))
        csr = _dense_units_to_csr(A)
    def arr(v):
        return None if v is None else np.asarray(getattr(v, "values", v))
    return Estimate(csr, (int(dims[0]), int(dims[1])), arr(C), arr(S), arr(shifts))


def from_minian(ds_or_path: Any) -> Estimate:
    """An :class:`Estimate` from minian's output.

    Accepts an xarray Dataset (or a dict of DataArrays) holding ``A(unit_id, height, width)``,
    ``C(unit_id, frame)`` and optionally ``S(unit_id, frame)``, or a path: a zarr store holding
    them, or a folder with one zarr per variable (``A.zarr``, ``C.zarr``, ...) as minian's
    ``save_minian`` writes. A ``motion(frame, shift_dim)`` variable (minian's estimated shifts)
    becomes the estimate's ``shifts``. A minisim truth Dataset is read the same way (its
    ``motion`` is the brain's displacement, not a registration, so it is not taken as shifts).
    """
    import xarray as xr

    if hasattr(ds_or_path, "dataset") and hasattr(ds_or_path, "spec"):  # a Recording
        ds_or_path = ds_or_path.dataset
    if isinstance(ds_or_path, (str, Path)):
        path = Path(ds_or_path)
        if not path.exists():
            raise FileNotFoundError(f"from_minian: no minian output at {path}")
        per_var = {p.stem: p for p in path.glob("*.zarr")}
        if "A" in per_var:
            ds = {}
            for name, p in per_var.items():
                opened = xr.open_zarr(p, consolidated=False)
                ds.update({k: opened[k] for k in opened.data_vars})
        else:
            ds = xr.open_zarr(path, consolidated=False)
    else:
        ds = ds_or_path
    for name in ("A", "C"):
        if name not in ds:
            raise ValueError(f"from_minian: the output has no {name!r} variable (found {sorted(ds)})")
    A = ds["A"].transpose("unit_id", "height", "width")
    C = ds["C"].transpose("unit_id", "frame")
    S = ds["S"].transpose("unit_id", "frame") if "S" in ds else None
    shifts = None
    if "motion" in ds and "shift_dim" in ds["motion"].dims:
        shifts = ds["motion"].transpose("frame", "shift_dim").values
    est = from_arrays(A, C.values, None if S is None else S.values, shifts)
    est.unit_id = np.asarray(A["unit_id"].values) if "unit_id" in A.coords else est.unit_id
    return est


def from_caiman(estimates: Any, dims: tuple[int, int] | None = None, *, A: Any = None, C: Any = None,
                S: Any = None, shifts: Any = None) -> Estimate:
    """An :class:`Estimate` from CaImAn's ``Estimates`` (or any object with ``.A``, ``.C``,
    ``.S``), or from the arrays passed as keywords with ``estimates=None``.

    ``A`` is pixels x K, sparse or dense, each column a footprint flattened in Fortran order
    (CaImAn's convention); ``dims`` = (height, width) (default ``estimates.dims``); ``C`` K x T;
    ``shifts`` (T, 2), e.g. CaImAn's ``MotionCorrect.shifts_rig``.
    """
    if estimates is not None:
        A = getattr(estimates, "A", A)
        C = getattr(estimates, "C", C)
        S = getattr(estimates, "S", S)
        dims = dims if dims is not None else getattr(estimates, "dims", None)
    if A is None:
        raise ValueError("from_caiman: no footprints (A pixels x K) given")
    if dims is None:
        raise ValueError("from_caiman: dims=(height, width) is needed to unflatten A")
    H, W = int(dims[0]), int(dims[1])
    if A.shape[0] != H * W:
        raise ValueError(f"from_caiman: A has {A.shape[0]} rows; dims {dims} need {H * W} (pixels x K)")
    # row q = y*W + x (C order) of the result is row p = y + x*H of CaImAn's Fortran-order A
    order = np.arange(H * W).reshape((H, W), order="F").ravel()
    Af = sp.csr_matrix(A, dtype=np.float32) if sp.issparse(A) else sp.csr_matrix(np.asarray(A, np.float32))
    csr = sp.csr_matrix(Af[order].T)
    return from_arrays(csr, C, S, shifts, dims=(H, W))


# ============================================================================ footprint stats
@dataclass
class _Stats:
    csr: sp.csr_matrix          # (K, P) float32
    core: sp.csr_matrix         # (K, P) float32, 1 on the core
    centroid: np.ndarray        # (K, 2) y, x px
    norm: np.ndarray            # (K,) L2
    total: np.ndarray           # (K,) sum
    sumsq: np.ndarray           # (K,)
    core_area: np.ndarray       # (K,)
    present: np.ndarray         # (K,) any light in the field


def _stats(csr: sp.csr_matrix, dims: tuple[int, int]) -> _Stats:
    W = dims[1]
    csr = sp.csr_matrix(csr, dtype=np.float32)
    csr.eliminate_zeros()
    K = csr.shape[0]
    rows = np.repeat(np.arange(K), np.diff(csr.indptr))
    data = csr.data.astype(np.float64)
    peak = np.asarray(csr.max(axis=1).todense(), np.float64).ravel() if K else np.zeros(0)
    in_core = data >= CORE_FRACTION * peak[rows]
    in_core &= data > 0
    core = sp.csr_matrix((np.ones(in_core.sum(), np.float32), (rows[in_core], csr.indices[in_core])),
                         shape=csr.shape)
    w = np.where(in_core, data, 0.0)
    y, x = csr.indices // W, csr.indices % W
    wsum = np.bincount(rows, w, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(rows, w * y, K) / wsum
        cx = np.bincount(rows, w * x, K) / wsum
    sumsq = np.bincount(rows, data * data, K)
    return _Stats(csr, core, np.column_stack([cy, cx]), np.sqrt(sumsq), np.bincount(rows, data, K),
                  sumsq, np.bincount(rows, in_core.astype(float), K), peak > 0)


def _discs(centroid: np.ndarray, radius_px: np.ndarray, dims: tuple[int, int]) -> sp.csr_matrix:
    """(K, P) 0/1: for each unit the pixels within ``radius_px`` of its centroid (empty if NaN)."""
    H, W = dims
    rows, cols = [], []
    for u, ((cy, cx), r) in enumerate(zip(centroid, radius_px)):
        if not (np.isfinite(cy) and np.isfinite(cx)):
            continue
        y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, H)
        x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, W)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        p = (yy * W + xx)[inside]
        rows.append(np.full(len(p), u))
        cols.append(p)
    if rows:
        rows, cols = np.concatenate(rows), np.concatenate(cols)
    else:
        rows, cols = np.zeros(0, int), np.zeros(0, int)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(centroid), H * W))


def _windowed(tr: _Stats, es: _Stats, disc: sp.csr_matrix, i: np.ndarray, j: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, Pearson r) of pairs (i, j) over the true cell's disc."""
    if len(i) == 0:
        return np.zeros(0), np.zeros(0)
    t = tr.csr[i].multiply(disc[i]).tocsr()
    e = es.csr[j].multiply(disc[i]).tocsr()
    n = np.asarray(disc[i].sum(axis=1), np.float64).ravel()
    dot = np.asarray(t.multiply(e).sum(axis=1), np.float64).ravel()
    st = np.asarray(t.sum(axis=1), np.float64).ravel()
    se = np.asarray(e.sum(axis=1), np.float64).ravel()
    tt = np.asarray(t.multiply(t).sum(axis=1), np.float64).ravel()
    ee = np.asarray(e.multiply(e).sum(axis=1), np.float64).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / np.sqrt(tt * ee)
        r = (dot - st * se / n) / np.sqrt((tt - st * st / n) * (ee - se * se / n))
    return np.nan_to_num(cos), r


def _pair_dots(a: sp.csr_matrix, b: sp.csr_matrix, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """sum_p a[i_k, p] b[j_k, p] for each pair k."""
    if len(i) == 0:
        return np.zeros(0)
    return np.asarray(a[i].multiply(b[j]).sum(axis=1), np.float64).ravel()


# ============================================================================ truth
@dataclass
class _Truth:
    ds: Any
    dims: tuple[int, int]
    pixel_size_um: float
    stats: _Stats
    inside: np.ndarray
    diameter_px: np.ndarray          # one soma diameter in px, per unit
    shift_px: tuple[float, float]
    vessel_mask: np.ndarray


def _registration_shift(ds, est: Estimate, registration) -> tuple[float, float]:
    """Where the tissue sits in the estimate's frame, as a (y, x) shift of the true footprints."""
    motion = np.asarray(ds["motion"].values, np.float64) if "motion" in ds else None
    if registration == "auto":
        registration = "estimate" if est.shifts is not None else "mean"
    if registration in (None, "none"):
        return 0.0, 0.0
    if motion is None:
        raise ValueError("registration needs the truth's 'motion' (frame, motion_axis) ground truth")
    if registration == "mean":
        return tuple(float(v) for v in motion.mean(axis=0))
    if registration == "estimate":
        if est.shifts is None:
            raise ValueError("registration='estimate' needs the estimate's shifts (from_arrays(..., shifts=))")
        if len(est.shifts) != len(motion):
            raise ValueError(f"estimate shifts have {len(est.shifts)} frames; the truth has {len(motion)}")
        # frame t shows the tissue displaced by motion[t]; shifting it by shifts[t] puts the
        # tissue at motion[t] + shifts[t], the same for every frame when registration is exact
        return tuple(float(v) for v in np.median(motion + est.shifts, axis=0))
    if isinstance(registration, (int, np.integer)) and not isinstance(registration, bool):
        if not 0 <= registration < len(motion):
            raise ValueError(f"registration frame {registration} is outside the truth's 0..{len(motion) - 1}")
        return tuple(float(v) for v in motion[int(registration)])
    raise ValueError(f"registration={registration!r}; allowed: 'auto', 'mean', 'estimate', 'none', "
                     "or a reference frame index")


def _shift_units(block: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Each (height, width) footprint of ``block`` shifted by ``shift`` px (bilinear, zero outside).

    ``scipy.ndimage.shift`` on each footprint's bounding box grown by the shift: the same values
    as on the whole field (the footprint is zero outside its box), at the cost of the box.
    """
    from scipy import ndimage

    out = np.zeros_like(block)
    H, W = block.shape[1:]
    pad = int(np.ceil(max(abs(shift[0]), abs(shift[1])))) + 2
    for k, a in enumerate(block):
        rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
        if not len(rows):
            continue
        y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, H)
        x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, W)
        out[k, y0:y1, x0:x1] = ndimage.shift(a[y0:y1, x0:x1], shift, order=1, mode="constant", cval=0.0)
    return out


def _load_truth(truth: Any, est: Estimate, registration) -> _Truth:
    from scipy import ndimage

    ds = truth.dataset if hasattr(truth, "dataset") and hasattr(truth, "spec") else truth
    for name in ("A", "position"):
        if name not in ds:
            raise ValueError(f"truth has no {name!r}: pass a minisim Recording or its Dataset")
    H, W = int(ds.sizes["height"]), int(ds.sizes["width"])
    if est.dims != (H, W):
        raise ValueError(f"estimate footprints are {est.dims[0]} x {est.dims[1]} px; the truth's "
                         f"field is {H} x {W} px")
    d = float(ds.attrs.get("pixel_size_um", 1.0))
    shift = _registration_shift(ds, est, registration)
    A = ds["A"]
    if shift != (0.0, 0.0):
        parts = []
        for u0 in range(0, A.shape[0], _BLOCK_UNITS):
            block = np.asarray(A[u0 : u0 + _BLOCK_UNITS].values, np.float32)
            parts.append(sp.csr_matrix(_shift_units(block, shift).reshape(block.shape[0], -1)))
        csr = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, H * W), dtype=np.float32)
    else:
        csr = _dense_units_to_csr(A)
    pos = np.asarray(ds["position"].values, np.float64)
    # a cell counts when its centre lies on a pixel of the field: pixel i covers index
    # [i - 1/2, i + 1/2) (scene.optics, the one home of pixel <-> tissue geometry)
    row, col = pixel_index(pos[:, 1], H, d), pixel_index(pos[:, 2], W, d)
    inside = (row > -0.5) & (row < H - 0.5) & (col > -0.5) & (col < W - 0.5)
    radius = np.asarray(ds["radius_um"].values, np.float64) if "radius_um" in ds else np.full(len(pos), 5.0)
    vm = np.asarray(ds["vessel_mask"].values, bool) if "vessel_mask" in ds else np.zeros((H, W), bool)
    if shift != (0.0, 0.0) and vm.any():
        vm = ndimage.shift(vm.astype(np.float32), shift, order=1) >= 0.5
    st = _stats(csr, (H, W))
    return _Truth(ds, (H, W), d, st, inside & st.present, 2 * radius / d, shift, vm)


# ============================================================================ the score
def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def event_f1(true_frames: np.ndarray, est_frames: np.ndarray, tolerance_frames: int) -> float:
    """F1 of two sets of event frames, one-to-one within +-``tolerance_frames`` (NaN if both empty).

    Greedy in time order, which is a maximum matching for equal windows on a line.

    >>> event_f1(np.array([10, 20, 30]), np.array([11, 29, 50]), 1)
    0.6666666666666666
    """
    t = np.sort(np.asarray(true_frames))
    e = np.sort(np.asarray(est_frames))
    if len(t) + len(e) == 0:
        return float("nan")
    i = j = hits = 0
    while i < len(t) and j < len(e):
        if abs(int(t[i]) - int(e[j])) <= tolerance_frames:
            hits, i, j = hits + 1, i + 1, j + 1
        elif e[j] < t[i]:
            j += 1
        else:
            i += 1
    return 2 * hits / (len(t) + len(e))


@dataclass
class Score:
    """The result of :func:`score`. Every rate is a float in [0, 1] (NaN where undefined)."""

    convention: str
    n_true: int                 # true cells centred in the field
    n_estimates: int            # non-empty estimated units
    n_matched: int              # estimates matched to a true cell centred in the field
    n_matched_outside: int      # matched to a cell centred outside the field (neither TP nor FP)
    precision: float
    recall: float
    f1: float
    n_detectable: int
    recall_detectable: float
    recall_undetectable: float
    precision_detectable: float
    f1_detectable: float
    footprint_r: float          # median over matches
    trace_r: float              # median over matches, against C
    trace_r_dff: float          # median over matches, against dF/F
    spike_f1: float             # mean over matches with events (NaN without an estimated S)
    false_positives: dict[str, int]
    registration_shift_px: tuple[float, float]
    strata: pd.DataFrame = field(repr=False)
    _truth_rows: pd.DataFrame = field(repr=False)
    _estimate_rows: pd.DataFrame = field(repr=False)

    def summary(self) -> str:
        """One line: F1, precision, recall, detectable recall, correlations, false positives."""
        fp = ", ".join(f"{v} {k}" for k, v in self.false_positives.items() if v) or "none"
        spike = "" if np.isnan(self.spike_f1) else f", spike F1 {self.spike_f1:.2f}"
        return (f"{self.convention}: F1 {self.f1:.3f} (precision {self.precision:.3f}, recall "
                f"{self.recall:.3f}; recall {self.recall_detectable:.2f} on {self.n_detectable} "
                f"detectable vs {self.recall_undetectable:.2f} on the rest), {self.n_matched} of "
                f"{self.n_true} true cells found by {self.n_estimates} units; median footprint r "
                f"{self.footprint_r:.2f}, trace r {self.trace_r:.2f} (dF/F {self.trace_r_dff:.2f})"
                f"{spike}; false positives: {fp}")

    def table(self) -> pd.DataFrame:
        """A tidy table: one row per true cell centred in the field (or matched) and one per
        unmatched estimate, with the match, its similarities and the strata variables."""
        table = pd.concat([self._truth_rows, self._estimate_rows], ignore_index=True)
        return table.astype({"unit_id": "Int64", "inside": "boolean", "detectable": "boolean"})

    def __repr__(self) -> str:
        return f"<minisim.Score {self.summary()}>"


def _similarity(conv: Convention, tr: _Stats, es: _Stats, disc: sp.csr_matrix, i: np.ndarray,
                j: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cosine, footprint r, iou, cost) of pairs (i, j)."""
    cos, r = _windowed(tr, es, disc, i, j)
    with np.errstate(invalid="ignore", divide="ignore"):
        inter = _pair_dots(tr.core, es.core, i, j)
        iou = inter / (tr.core_area[i] + es.core_area[j] - inter)
    cost = {"cosine": 1 - cos, "iou": 1 - iou, "distance": dist}[conv.cost]
    return cos, r, np.nan_to_num(iou), cost


def score(truth: Any, estimate: Any, *, convention: str = "minisim", registration: Any = "auto",
          gate_px: float | None = None, threshold: float | None = None, tolerance_frames: int = 2,
          spike_fraction: float = SPIKE_FRACTION) -> Score:
    """Score ``estimate`` against the ground truth ``truth``.

    Parameters
    ----------
    truth
        A :class:`minisim.Recording` or its Dataset (simulated or loaded).
    estimate
        An :class:`Estimate` (see :func:`from_minian`, :func:`from_caiman`, :func:`from_arrays`),
        or anything :func:`from_minian` reads.
    convention
        ``"minisim"`` (default), ``"caiman"``, ``"minian"`` or ``"neurofinder"`` (see
        :data:`CONVENTIONS` and docs/scoring.md).
    registration
        Where the estimate's frame is: ``"auto"`` (the estimate's shifts if it has any, else
        ``"mean"``), ``"mean"`` (the tissue at its mean displacement: a pipeline registered to
        its mean image, or none at all), ``"estimate"`` (from the estimate's shifts and the
        truth's motion), an int (registered to that frame) or ``"none"``. The *true*
        footprints are shifted (bilinear) into that frame; the estimate is never resampled.
    gate_px, threshold
        Override the convention's centroid gate (px) and similarity threshold.
    tolerance_frames
        Spike events match within this many frames.
    spike_fraction
        An estimated event is a frame whose S exceeds this fraction of the unit's maximum.

    Examples
    --------
    >>> import minisim
    >>> from minisim.score import score, from_minian
    >>> spec = minisim.Spec(sensor={"width_px": 32, "height_px": 32},
    ...                     recording={"duration_s": 1.0, "seed": 1},
    ...                     optics={"magnification": 2.0})
    >>> rec = minisim.simulate(spec)
    >>> s = score(rec, from_minian(rec), registration="none")  # the truth, unregistered
    >>> s.f1, s.precision, s.recall
    (1.0, 1.0, 1.0)
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}; allowed: {sorted(CONVENTIONS)}")
    conv = CONVENTIONS[convention]
    if tolerance_frames < 0:
        raise ValueError(f"tolerance_frames={tolerance_frames} must be >= 0")
    est = estimate if isinstance(estimate, Estimate) else from_minian(estimate)
    tru = _load_truth(truth, est, registration)
    ds = tru.ds
    H, W = tru.dims
    es = _stats(est.A, est.dims)
    tr = tru.stats
    t_idx = np.flatnonzero(tr.present)       # candidate true units: light in the field
    e_idx = np.flatnonzero(es.present)       # non-empty estimates

    # candidate pairs: estimate centroids within the gate of a true centroid
    if gate_px is not None:
        gate = np.full(len(tr.present), float(gate_px))
    elif conv.gate_px is not None:
        gate = np.full(len(tr.present), conv.gate_px)
    else:
        gate = conv.gate_diameters * tru.diameter_px
    thr = conv.threshold if threshold is None else threshold
    pi, pj = [], []
    if len(t_idx) and len(e_idx):
        tree = cKDTree(es.centroid[e_idx])
        hits = tree.query_ball_point(tr.centroid[t_idx], r=gate[t_idx])
        for a, h in zip(t_idx, hits):
            pi.extend([a] * len(h))
            pj.extend(e_idx[h])
    pi, pj = np.asarray(pi, int), np.asarray(pj, int)
    dist = np.hypot(*(tr.centroid[pi] - es.centroid[pj]).T) if len(pi) else np.zeros(0)
    disc = _discs(tr.centroid, WINDOW_DIAMETERS * tru.diameter_px, tru.dims)
    cos, fpr, iou, cost = _similarity(conv, tr, es, disc, pi, pj, dist)
    ok = dist <= gate[pi]
    if conv.cost == "cosine":
        ok &= cos >= thr
    elif conv.cost == "iou":
        ok &= iou > thr
    elif thr is not None:
        ok &= dist <= thr

    # Hungarian on the admissible pairs (inadmissible ones cost more than any set of admissible)
    match_t, match_e = np.zeros(0, int), np.zeros(0, int)
    if ok.any():
        rows, ri = np.unique(pi[ok], return_inverse=True)
        cols, ci = np.unique(pj[ok], return_inverse=True)
        M = np.full((len(rows), len(cols)), _INADMISSIBLE)
        M[ri, ci] = cost[ok]
        r, c = linear_sum_assignment(M)
        good = M[r, c] < _INADMISSIBLE
        match_t, match_e = rows[r[good]], cols[c[good]]
    pair_key = {(a, b): k for k, (a, b) in enumerate(zip(pi, pj))}
    k_match = np.array([pair_key[(a, b)] for a, b in zip(match_t, match_e)], int)

    inside = tru.inside
    det = np.asarray(ds["detectable"].values, bool) if "detectable" in ds else inside.copy()
    m_inside = inside[match_t]
    n_true = int(inside.sum())
    n_est = len(e_idx)
    tp = int(m_inside.sum())
    n_out = int((~m_inside).sum())
    counted = n_est - n_out
    precision = tp / counted if counted else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = _f1(precision, recall)
    det_in = det & inside
    found = np.zeros(len(inside), bool)
    found[match_t] = True
    n_det = int(det_in.sum())
    tp_det = int((found & det_in).sum())
    recall_det = tp_det / n_det if n_det else float("nan")
    und = inside & ~det
    recall_und = (found & und).sum() / und.sum() if und.sum() else float("nan")
    counted_det = counted - int((found & und).sum())
    precision_det = tp_det / counted_det if counted_det else float("nan")
    f1_det = _f1(precision_det, recall_det)

    # per match: footprint r (Pearson over the true cell's disc), trace r against C and dF/F,
    # spike F1
    fp_r = fpr[k_match]
    n_m = len(match_t)
    tr_c = np.full(n_m, np.nan)
    tr_dff = np.full(n_m, np.nan)
    sp_f1 = np.full(n_m, np.nan)
    if n_m and est.C is not None:
        T = int(ds.sizes["frame"])
        if est.C.shape[1] != T:
            raise ValueError(f"estimate C has {est.C.shape[1]} frames; the truth has {T}")
        order = np.argsort(match_t)
        sel = match_t[order]
        true_c = np.asarray(ds["C"].isel(unit_id=sel).values)
        true_dff = np.asarray(ds["dff"].isel(unit_id=sel).values) if "dff" in ds else None
        true_s = (np.asarray(ds["S"].isel(unit_id=sel).values)
                  if est.S is not None and "S" in ds else None)
        if est.S is not None and est.S.shape[1] != T:
            raise ValueError(f"estimate S has {est.S.shape[1]} frames; the truth has {T}")
        for k, o in enumerate(order):
            e = match_e[o]
            tr_c[o] = _pearson(true_c[k], est.C[e])
            if true_dff is not None:
                tr_dff[o] = _pearson(true_dff[k], est.C[e])
            if true_s is not None:
                s = est.S[e]
                ev = np.flatnonzero(s > spike_fraction * s.max()) if s.max() > 0 else np.zeros(0, int)
                sp_f1[o] = event_f1(np.flatnonzero(true_s[k] > 0), ev, tolerance_frames)

    # false positives, each in the first class that fits
    matched_e = np.zeros(es.csr.shape[0], bool)
    matched_e[match_e] = True
    matched_t = found
    dup = np.zeros(es.csr.shape[0], bool)
    adm_to_matched = ok & matched_t[pi] & ~matched_e[pj]
    dup[pj[adm_to_matched]] = True
    vm = tru.vessel_mask.ravel().astype(np.float32)
    core_w = es.csr.multiply(es.core).tocsr()
    with np.errstate(invalid="ignore", divide="ignore"):
        on_vessel = np.asarray(core_w @ vm).ravel() / np.asarray(core_w.sum(axis=1)).ravel()
    on_vessel = np.nan_to_num(on_vessel) >= VESSEL_FP_FRACTION
    soma_px = float(np.median(tru.diameter_px)) if len(tru.diameter_px) else 10.0
    cy, cx = es.centroid[:, 0], es.centroid[:, 1]
    edge = np.minimum.reduce([cy, cx, H - 1 - cy, W - 1 - cx]) < soma_px / 2
    visible = tr.present & (np.asarray(ds["in_focus"].values, bool) if "in_focus" in ds else True)
    near = np.zeros(es.csr.shape[0], bool)
    if visible.any() and len(e_idx):
        dd, _ = cKDTree(tr.centroid[visible]).query(es.centroid[e_idx])
        near[e_idx] = dd <= 2 * soma_px
    fp_class = np.full(es.csr.shape[0], "", dtype=object)
    unmatched = ~matched_e & es.present
    for name, mask in (("duplicate", dup), ("vessel", on_vessel), ("edge", edge),
                       ("near_cell", near), ("background", np.ones_like(dup))):
        pick = unmatched & (fp_class == "") & mask
        fp_class[pick] = name
    fps = {name: int((fp_class == name).sum()) for name in FP_CLASSES}

    # tidy rows and strata
    truth_rows = _truth_table(ds, tru, found, match_t, match_e, est, cos[k_match] if n_m else [],
                              iou[k_match] if n_m else [], dist[k_match] if n_m else [], fp_r,
                              tr_c, tr_dff, sp_f1, det)
    est_rows = pd.DataFrame({
        "kind": "estimate",
        "estimate_index": np.flatnonzero(unmatched),
        "estimate_unit_id": np.asarray(est.unit_id)[unmatched],
        "matched": False,
        "centroid_y_px": cy[unmatched],
        "centroid_x_px": cx[unmatched],
        "fp_class": fp_class[unmatched].astype(str),
    })
    strata = _strata(truth_rows[truth_rows["inside"]])
    med = (lambda v: float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan"))
    inner = m_inside
    return Score(
        convention=convention, n_true=n_true, n_estimates=n_est, n_matched=tp, n_matched_outside=n_out,
        precision=precision, recall=recall, f1=f1, n_detectable=n_det, recall_detectable=recall_det,
        recall_undetectable=float(recall_und), precision_detectable=precision_det, f1_detectable=f1_det,
        footprint_r=med(fp_r[inner]), trace_r=med(tr_c[inner]), trace_r_dff=med(tr_dff[inner]),
        spike_f1=float(np.nanmean(sp_f1[inner])) if np.isfinite(sp_f1[inner]).any() else float("nan"),
        false_positives=fps, registration_shift_px=tru.shift_px, strata=strata,
        _truth_rows=truth_rows, _estimate_rows=est_rows,
    )


def _f1(p: float, r: float) -> float:
    if np.isnan(p) or np.isnan(r) or p + r == 0:
        return float("nan") if (np.isnan(p) or np.isnan(r)) else 0.0
    return 2 * p * r / (p + r)


def _truth_table(ds, tru: _Truth, found, match_t, match_e, est: Estimate, cos, iou, dist, fp_r,
                 tr_c, tr_dff, sp_f1, det) -> pd.DataFrame:
    keep = tru.inside | found
    n = len(found)
    col = {}
    for name, vals in (("cosine", cos), ("iou", iou), ("centroid_dist_px", dist),
                       ("footprint_r", fp_r), ("trace_r", tr_c), ("trace_r_dff", tr_dff),
                       ("spike_f1", sp_f1)):
        v = np.full(n, np.nan)
        v[match_t] = vals
        col[name] = v
    e_of = np.full(n, -1)
    e_of[match_t] = match_e
    e_uid = np.full(n, -1, dtype=np.int64)
    if len(match_e):
        e_uid[match_t] = np.asarray(est.unit_id)[match_e].astype(np.int64)
    pos = np.asarray(ds["position"].values, np.float64)

    def var(name, default=np.nan):
        return np.asarray(ds[name].values) if name in ds else np.full(n, default)

    in_focus = var("in_focus", True).astype(bool)
    radius = var("radius_um", 5.0).astype(float)
    # local density: other in-focus cells whose centres lie within two soma diameters laterally
    tree = cKDTree(pos[:, 1:])
    density = np.zeros(n, int)
    for u in np.flatnonzero(keep):
        nb = tree.query_ball_point(pos[u, 1:], r=4 * radius[u])
        density[u] = sum(1 for k in nb if k != u and in_focus[k])
    table = pd.DataFrame({
        "kind": "true",
        "unit_id": np.asarray(ds["unit_id"].values),
        "inside": tru.inside,
        "detectable": det & tru.inside,
        "matched": found,
        "estimate_index": e_of,
        "estimate_unit_id": e_uid,
        **col,
        "depth_um": pos[:, 0],
        "defocus_um": var("defocus_um").astype(float),
        "pnr": var("pnr").astype(float),
        "vessel_overlap_fraction": var("vessel_overlap_fraction").astype(float),
        "local_density": density,
        "centroid_y_px": tru.stats.centroid[:, 0],
        "centroid_x_px": tru.stats.centroid[:, 1],
        "fp_class": "",
    })
    return table[keep].reset_index(drop=True)


def _strata(rows: pd.DataFrame) -> pd.DataFrame:
    """Recall per bin of each stratum over the true cells centred in the field."""
    out = []
    values = {
        "abs_defocus_um": rows["defocus_um"].abs(),
        "pnr": rows["pnr"],
        "vessel_overlap_fraction": rows["vessel_overlap_fraction"],
        "local_density": rows["local_density"],
    }
    bins = dict(STRATA_BINS)
    z = rows["depth_um"]
    if len(z):
        lo, hi = float(z.min()), float(z.max())
        bins["depth_um"] = list(np.linspace(lo, hi + 1e-6, DEPTH_BINS + 1))
        values["depth_um"] = z
    for name, v in values.items():
        cut = pd.cut(v, bins[name], right=False)
        g = rows.groupby(cut, observed=False)
        for interval, grp in g:
            n_det = int(grp["detectable"].sum())
            out.append({
                "stratum": name, "bin": str(interval), "n_true": len(grp),
                "n_found": int(grp["matched"].sum()),
                "recall": grp["matched"].mean() if len(grp) else np.nan,
                "n_detectable": n_det,
                "recall_detectable": (grp["matched"] & grp["detectable"]).sum() / n_det if n_det else np.nan,
            })
    return pd.DataFrame(out)
