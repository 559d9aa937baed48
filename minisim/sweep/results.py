"""What a sweep leaves behind, read back: the manifest table and the stores as one Dataset.

:func:`write_manifest` / :func:`read_manifest` keep ``manifest.csv`` (one row per recording);
:func:`open_sweep` opens the finished stores lazily as one xarray Dataset along ``recording``.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.csv"
#: The manifest's columns besides the swept paths (these go between ``store`` and ``seed``).
_FIXED_COLUMNS = ("hash", "store", "seed", "status", "mode", "size_bytes", "seconds", "error")


# --------------------------------------------------------------------------- manifest
def _cell(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def write_manifest(folder: Path, rows: list[dict[str, Any]], params: list[str]) -> Path:
    """Atomically (re)write ``manifest.csv``: one row per recording."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    tmp = folder / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    columns = ["hash", "store", *params, *_FIXED_COLUMNS[2:]]
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k, "")) for k in columns})
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | Path):
    """The manifest of a sweep folder as a pandas DataFrame (swept values as JSON text)."""
    import pandas as pd

    return pd.read_csv(Path(folder) / MANIFEST_NAME, dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------- open
def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _fill_for(dtype) -> Any:
    import numpy as np

    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind == "i":
        return -1
    if dtype.kind == "u":
        return 0
    return None


def open_sweep(folder: str | Path, *, include_spec: bool = True):
    """Every complete store of a sweep folder, lazily, as one Dataset along ``recording``.

    Each recording's ``unit_id`` dim becomes a positional ``unit`` dim (its keyed ids stay in the
    ``unit_id`` coordinate on (recording, unit)); recordings are outer-joined on ``unit``,
    ``frame``, ``spike``, ``height`` and ``width``, padding the shorter ones: float -> NaN,
    bool -> False, signed int -> -1, unsigned int (``movie``, ``S``) -> 0. Coordinates on
    ``recording``: ``hash``, ``seed``, every swept path (from ``manifest.csv``; without one, every
    Spec field that differs), ``n_frames``, ``n_units``, ``store`` and (``include_spec``) ``spec``.
    Nothing of the movies is read: variables stay dask-backed. Incomplete stores are skipped
    with a warning.

    Examples
    --------
    ```python
    import minisim
    ds = minisim.open_sweep("cluster/ca1-sweep")
    mean_frame = ds.movie.mean("frame")                      # lazy, one per recording
    ds.detectable.sum("unit").groupby("cells.density_per_mm3").mean().compute()
    ```
    """
    import numpy as np
    import xarray as xr

    from ..recording import Recording, is_complete

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no sweep folder at {folder}")
    params: list[str] | None = None
    order: dict[str, int] = {}
    if (folder / MANIFEST_NAME).is_file():
        manifest = read_manifest(folder)
        params = [c for c in manifest.columns if c not in _FIXED_COLUMNS]
        order = {name: i for i, name in enumerate(manifest["store"])}
    # in the manifest's (grid) order; stores it does not list come last, by name
    stores = sorted(folder.glob("rec-*.zarr"), key=lambda p: (order.get(p.name, len(order)), p.name))
    complete = [p for p in stores if is_complete(p)]
    if len(complete) < len(stores):
        warnings.warn(f"open_sweep: skipping {len(stores) - len(complete)} incomplete store(s) in {folder}; "
                      "rerun the sweep to finish them", stacklevel=2)
    if not complete:
        raise FileNotFoundError(f"no complete recording stores (rec-*.zarr) in {folder}")
    recs = [Recording.load(p) for p in complete]
    flat = [_leaves(json.loads(r.spec.model_dump_json())) for r in recs]
    if params is None:
        params = sorted(k for k in flat[0] if k != "recording.seed"
                        and len({json.dumps(f.get(k)) for f in flat}) > 1)
    datasets = []
    for r, p in zip(recs, complete):
        ds = r.dataset
        ds = ds.assign_coords(unit=("unit_id", np.arange(ds.sizes["unit_id"]))).swap_dims({"unit_id": "unit"})
        if "spike" in ds.sizes:  # stores may carry a spike table (docs/segments.md)
            ds = ds.assign_coords(spike=np.arange(ds.sizes["spike"]))
        if "frame" not in ds.indexes:  # stores keep no frame index (it grows with the length):
            ds = ds.assign_coords(frame=np.arange(ds.sizes["frame"]))  # outer-join needs one
        ds.attrs = {}
        datasets.append(ds)
    fill = {name: _fill_for(v.dtype) for ds in datasets for name, v in ds.variables.items()
            if _fill_for(v.dtype) is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = xr.concat(datasets, dim="recording", data_vars="all", coords="different", compat="equals",
                        join="outer", fill_value=fill, combine_attrs="drop")
    rec_coords: dict[str, Any] = {
        "hash": ("recording", np.array([p.name[4:-5] for p in complete])),
        "seed": ("recording", np.array([r.spec.recording.seed for r in recs], np.int64)),
    }
    for name in params:
        vals = [f.get(name) for f in flat]
        arr = np.array(vals) if all(isinstance(v, (int, float, bool, str)) for v in vals) \
            else np.array([json.dumps(v) for v in vals])
        rec_coords[name] = ("recording", arr)
    rec_coords["n_frames"] = ("recording", np.array([d.sizes["frame"] for d in datasets], np.int64))
    rec_coords["n_units"] = ("recording", np.array([d.sizes["unit"] for d in datasets], np.int64))
    rec_coords["store"] = ("recording", np.array([str(p) for p in complete]))
    if include_spec:
        rec_coords["spec"] = ("recording", np.array([r.spec.model_dump_json() for r in recs]))
    out = out.assign_coords(recording=np.arange(len(recs)), **rec_coords)
    out.attrs = {"sweep_folder": str(folder), "padding": "outer join; float NaN, bool False, "
                 "signed int -1, unsigned int 0 (see n_frames, n_units)"}
    return out
