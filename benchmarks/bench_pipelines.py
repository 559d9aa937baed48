"""A real pipeline end to end: minian (and Inscopix CNMF-E) on every difficulty tier, scored.

Run: ``nice -n 10 python benchmarks/bench_pipelines.py [--duration-s 60] [--size-px 256]
[--tiers easy typical hard] [--pipelines minian inscopix]``.

For each tier (``easy``, ``typical``, ``hard``) of a V4 preset (default ``miniscope_v4_ca1``,
``moderate`` activity) at a size this 2-core machine runs in minutes (default: the 256 x 256 px
centre crop of the sensor, 60 s at 20 fps), it

1. simulates the recording with minisim and saves it (zarr, beside the exports);
2. exports it with ``rec.to_minian(folder)`` (and ``rec.to_tiff`` for Inscopix);
3. runs each pipeline as a subprocess in its own virtual environment, at ``nice -n 10``:

   * **minian 2.0.2** (PyPI) in ``.bench-minian/minian/`` (Python >= 3.10, base dependencies
     only, ``zarr<3``): a driver written by this script opens the export with minian's own
     ``open_minian`` and runs the steps of minian's pipeline notebook with its default
     parameters (glow removal, median denoise, tophat background removal, rigid motion
     correction, seeds and their refinement and merge, initialisation, two rounds of CNMF
     spatial/temporal updates with a merge between), on a ``LocalCluster`` of 2 single-thread
     workers, and saves ``A``, ``C``, ``S`` and ``motion`` as minian does (one zarr per variable);
   * **Inscopix CNMF-E** (PyPI ``inscopix-cnmfe``, a compiled Python 3.10 module) in
     ``.bench-minian/inscopix/``, where a Python 3.10 exists: ``run_cnmfe`` on the TIFF with its
     defaults (2 threads); it does no motion correction;

4. reads the result back (``minisim.score.from_minian`` of minian's output folder, whose
   ``motion`` becomes the estimate's registration shifts; ``from_arrays`` for Inscopix) and scores
   it with ``minisim.score(rec, est, convention=...)``; registration ``"auto"``: minian's own
   shifts, the tissue's mean position for Inscopix;
5. prints one table per convention: per pipeline and tier, F1, precision, recall on the
   ``detectable`` cells and on the rest, the median trace r, the units found and the wall time,
   and a line per tier on the oracle (``oracle_r`` of the detectable cells).

The virtual environments are a setup step of this benchmark, never of minisim: neither minian
nor the unrelated PyPI ``minisim`` 1.x is installed into the project's environment (minian's
``test``/``training`` extras would pull that ``minisim``: only its base dependencies are
installed). minian needs the system ``ffmpeg``; where ``ffmpeg``, a Python >= 3.10 or the
install cannot be had, that pipeline is skipped with a message, and so is Inscopix without a
Python 3.10. Results are kept in ``.bench-minian/runs/`` (``results.json`` beside the data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench-minian"
MINIAN_VENV = BENCH / "minian"
ISX_VENV = BENCH / "inscopix"
# zarr 2 (minian calls zarr 2 APIs); xarray 2026.9 passes zarr 3 arguments to zarr 2 and pandas
# needs xarray >= 2025.7.1: 2025.12.0 is the pair measured to work with zarr 2.18.7
MINIAN_REQ = ["minian==2.0.2", "zarr>=2.18,<3", "numcodecs<0.16", "xarray==2025.12.0"]
ISX_REQ = ["inscopix-cnmfe==1.0.2", "tifffile"]
PY310_CANDIDATES = ["/root/.pyenv/versions/3.10.13/bin/python", "python3.10"]
TIERS = ("easy", "typical", "hard")

# --------------------------------------------------------------------------- the drivers
# minian's pipeline notebook (pipeline.ipynb of minian 2.0.2), its non-interactive steps with the
# notebook's default parameters; the raw video comes from our export through open_minian.
MINIAN_DRIVER = r'''
import json, os, sys, time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np


def main(export_dir, out_dir, intpath, n_workers, memory_limit):
    os.environ["MINIAN_INTERMEDIATE"] = intpath
    import dask
    from dask.distributed import Client, LocalCluster
    from minian.cnmf import (compute_trace, get_noise_fft, unit_merge, update_background,
                             update_spatial, update_temporal)
    from minian.initialization import initA, initC, ks_refine, pnr_refine, seeds_init, seeds_merge
    from minian.motion_correction import apply_transform, estimate_motion
    from minian.preprocessing import denoise, remove_background
    from minian.utilities import get_optimal_chk, open_minian, save_minian

    stages, t0 = {}, time.perf_counter()

    def lap(name):
        nonlocal t0
        t = time.perf_counter()
        stages[name] = round(t - t0, 1)
        t0 = t

    dask.config.set({"distributed.worker.memory.terminate": False})
    cluster = LocalCluster(n_workers=n_workers, memory_limit=memory_limit, resources={"MEM": 1},
                           threads_per_worker=1, dashboard_address=None)
    # minian's TaskAnnotation scheduler plugin is not added: on the distributed this resolves to
    # (2026.x) it fails on every graph (tuple keys) and annotates nothing; with single-thread
    # workers the memory-heavy tasks run one per worker anyway
    client = Client(cluster)
    rmem = "1GB"
    try:
        # the raw video: our export, read the way minian reads its own folders
        varr = open_minian(export_dir)["varr"]
        if int(varr.max().compute()) <= 255:   # minian's load_videos gives uint8 (medianBlur needs it)
            varr = varr.astype(np.uint8)
        chk, _ = get_optimal_chk(varr, dtype=float)
        varr = save_minian(varr.chunk({"frame": chk["frame"], "height": -1, "width": -1}).rename("varr"),
                           intpath, overwrite=True)
        lap("load")
        # preprocessing: glow removal, denoise, background removal
        varr_ref = varr - varr.min("frame").compute()
        varr_ref = denoise(varr_ref, method="median", ksize=7)
        varr_ref = remove_background(varr_ref, method="tophat", wnd=15)
        varr_ref = save_minian(varr_ref.rename("varr_ref"), dpath=intpath, overwrite=True)
        lap("preprocess")
        # motion correction
        motion = estimate_motion(varr_ref, dim="frame")
        motion = save_minian(motion.rename("motion").chunk({"frame": chk["frame"]}), out_dir,
                             overwrite=True)
        Y = apply_transform(varr_ref, motion, fill=0)
        Y_fm_chk = save_minian(Y.astype(np.float32).rename("Y_fm_chk"), intpath, overwrite=True)
        Y_hw_chk = save_minian(Y_fm_chk.rename("Y_hw_chk"), intpath, overwrite=True, mem_limit=rmem,
                               chunks={"frame": -1, "height": chk["height"], "width": chk["width"]})
        lap("motion")
        # seeds
        max_proj = save_minian(Y_fm_chk.max("frame").rename("max_proj"), out_dir,
                               overwrite=True).compute()
        seeds = seeds_init(Y_fm_chk, wnd_size=1000, method="rolling", stp_size=500, max_wnd=15,
                           diff_thres=3)
        seeds, pnr, gmm = pnr_refine(Y_hw_chk, seeds, noise_freq=0.06, thres=1)
        seeds = ks_refine(Y_hw_chk, seeds, sig=0.05)
        seeds_final = seeds[seeds["mask_ks"] & seeds["mask_pnr"]].reset_index(drop=True)
        seeds_final = seeds_merge(Y_hw_chk, max_proj, seeds_final, thres_dist=10, thres_corr=0.8,
                                  noise_freq=0.06, chunk=600)
        lap("seeds")
        # initialisation
        A_init = initA(Y_hw_chk, seeds_final[seeds_final["mask_mrg"]], thres_corr=0.8, wnd=10,
                       noise_freq=0.06, chunk=600)
        A_init = save_minian(A_init.rename("A_init"), intpath, overwrite=True)
        C_init = initC(Y_fm_chk, A_init)
        C_init = save_minian(C_init.rename("C_init"), intpath, overwrite=True, mem_limit=rmem,
                             chunks={"unit_id": 1, "frame": -1})
        A, C = unit_merge(A_init, C_init, thres_corr=0.8, chunk=600)
        A = save_minian(A.rename("A"), intpath, overwrite=True)
        C = save_minian(C.rename("C"), intpath, overwrite=True)
        C_chk = save_minian(C.rename("C_chk"), intpath, overwrite=True, mem_limit=rmem,
                            chunks={"unit_id": -1, "frame": chk["frame"]})
        b, f = update_background(Y_fm_chk, A, C_chk)
        f = save_minian(f.rename("f"), intpath, overwrite=True)
        b = save_minian(b.rename("b"), intpath, overwrite=True)
        sn_spatial = get_noise_fft(Y_hw_chk, noise_range=(0.06, 0.5))
        sn_spatial = save_minian(sn_spatial.rename("sn_spatial"), intpath, overwrite=True)
        lap("initialise")
        n_init = int(A.sizes["unit_id"])
        # two rounds of CNMF: spatial update, background, temporal update (a merge after the first)
        for rnd, jac_thres in ((1, 0.2), (2, 0.4)):
            A_new, mask, norm_fac = update_spatial(Y_hw_chk, A, C, sn_spatial, dl_wnd=10,
                                                   sparse_penal=0.01, size_thres=(25, None))
            C_new = save_minian((C.sel(unit_id=mask) * norm_fac).rename("C_new"), intpath,
                                overwrite=True)
            C_chk_new = save_minian((C_chk.sel(unit_id=mask) * norm_fac).rename("C_chk_new"),
                                    intpath, overwrite=True)
            b_new, f_new = update_background(Y_fm_chk, A_new, C_chk_new)
            A = save_minian(A_new.rename("A"), intpath, overwrite=True, mem_limit=rmem,
                            chunks={"unit_id": 1, "height": -1, "width": -1})
            b = save_minian(b_new.rename("b"), intpath, overwrite=True)
            f = save_minian(f_new.chunk({"frame": chk["frame"]}).rename("f"), intpath, overwrite=True)
            C = save_minian(C_new.rename("C"), intpath, overwrite=True)
            C_chk = save_minian(C_chk_new.rename("C_chk"), intpath, overwrite=True)
            lap(f"spatial {rnd}")
            YrA = save_minian(compute_trace(Y_fm_chk, A, b, C_chk, f).rename("YrA"), intpath,
                              overwrite=True, mem_limit=rmem, chunks={"unit_id": 1, "frame": -1})
            C_new, S_new, b0_new, c0_new, g, mask = update_temporal(
                A, C, YrA=YrA, noise_freq=0.06, sparse_penal=1, p=1, add_lag=20, jac_thres=jac_thres)
            C = save_minian(C_new.rename("C").chunk({"unit_id": 1, "frame": -1}), intpath,
                            overwrite=True)
            C_chk = save_minian(C.rename("C_chk"), intpath, overwrite=True, mem_limit=rmem,
                                chunks={"unit_id": -1, "frame": chk["frame"]})
            S = save_minian(S_new.rename("S").chunk({"unit_id": 1, "frame": -1}), intpath,
                            overwrite=True)
            b0 = save_minian(b0_new.rename("b0").chunk({"unit_id": 1, "frame": -1}), intpath,
                             overwrite=True)
            c0 = save_minian(c0_new.rename("c0").chunk({"unit_id": 1, "frame": -1}), intpath,
                             overwrite=True)
            A = A.sel(unit_id=C.coords["unit_id"].values)
            lap(f"temporal {rnd}")
            if rnd == 1:
                A_mrg, C_mrg, [sig_mrg] = unit_merge(A, C, [C + b0 + c0], thres_corr=0.8, chunk=600)
                A = save_minian(A_mrg.rename("A_mrg"), intpath, overwrite=True)
                C = save_minian(C_mrg.rename("C_mrg"), intpath, overwrite=True)
                C_chk = save_minian(C.rename("C_mrg_chk"), intpath, overwrite=True, mem_limit=rmem,
                                    chunks={"unit_id": -1, "frame": chk["frame"]})
                lap("merge")
        # the result, as minian saves it: one zarr per variable in the output folder
        for var, name in ((A, "A"), (C, "C"), (S, "S"), (c0, "c0"), (b0, "b0"), (b, "b"), (f, "f")):
            save_minian(var.rename(name), out_dir, overwrite=True)
        lap("save")
        print(json.dumps({"stages_s": stages, "n_seeds": int(len(seeds)),
                          "n_init": n_init, "n_units": int(A.sizes["unit_id"])}))
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
'''

# Inscopix CNMF-E with its defaults (2 threads: this machine has 2 cores); footprints and
# traces are returned as arrays and saved as one .npz.
ISX_DRIVER = r'''
import json, sys, time

import numpy as np


def main(tif, out_npz, threads):
    import inscopix_cnmfe

    t0 = time.perf_counter()
    footprints, traces = inscopix_cnmfe.run_cnmfe(input_movie_path=tif, output_dir_path="",
                                                  num_threads=threads, verbose=0)
    np.savez(out_npz, footprints=np.asarray(footprints, np.float32),
             traces=np.asarray(traces, np.float32))
    print(json.dumps({"run_s": round(time.perf_counter() - t0, 1),
                      "footprints_shape": list(np.shape(footprints)),
                      "traces_shape": list(np.shape(traces))}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
'''


# --------------------------------------------------------------------------- environments
def _pip_install(python: Path, reqs: list[str], what: str) -> bool:
    try:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *reqs], check=True,
                       capture_output=True, text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip().splitlines()
        print(f"bench_pipelines: {what} skipped, cannot install {' '.join(reqs)}: "
              f"{' / '.join(detail[-3:])[-400:]}")
        return False
    return True


def _venv(base_python: str, venv: Path, reqs: list[str], check: str, what: str) -> Path | None:
    """``venv``'s python with ``reqs`` importable (``check`` runs), creating it if needed."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", check], check=False, capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"bench_pipelines: {what} skipped, cannot create a virtual environment in {venv}: {e}")
        return None
    if not _pip_install(python, reqs, what):
        return None
    r = subprocess.run([str(python), "-c", check], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"bench_pipelines: {what} skipped, installed but does not import: "
              f"{r.stderr.strip()[-400:]}")
        return None
    return python


def ensure_minian() -> Path | None:
    """minian 2.0.2's python, or None with a message (no ffmpeg, no Python >= 3.10, no install)."""
    if shutil.which("ffmpeg") is None:
        print("bench_pipelines: minian skipped, it needs the system ffmpeg "
              "(e.g. apt-get install -y ffmpeg) and none is on PATH")
        return None
    base = sys.executable if sys.version_info >= (3, 10) else shutil.which("python3.10")
    if base is None:
        print("bench_pipelines: minian skipped, it needs Python >= 3.10 and none was found")
        return None
    check = ("import importlib.metadata as m, minian.cnmf, minian.initialization, "
             "minian.motion_correction; assert m.version('minian') == '2.0.2'")
    return _venv(base, MINIAN_VENV, MINIAN_REQ, check, "minian")


def ensure_inscopix() -> Path | None:
    """inscopix-cnmfe's python (3.10, its only wheel's ABI), or None with a message."""
    base = next((p for p in PY310_CANDIDATES if shutil.which(p) or Path(p).exists()), None)
    if base is None:
        print("bench_pipelines: inscopix skipped, inscopix-cnmfe needs Python 3.10 and none was found")
        return None
    return _venv(base, ISX_VENV, ISX_REQ, "import inscopix_cnmfe, tifffile", "inscopix")


def _nice_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def _run(cmd: list[str], log: Path, cwd: Path) -> tuple[dict | None, float]:
    """Run ``cmd`` at nice 10; (its last stdout line as JSON or None, wall seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        r = subprocess.run(["nice", "-n", "10", *cmd], stdout=subprocess.PIPE, stderr=fh,
                           text=True, env=_nice_env(), cwd=cwd, check=False)
    wall = time.perf_counter() - t0
    with open(log, "a") as fh:
        fh.write("\n--- stdout ---\n" + r.stdout)
    if r.returncode != 0:
        print(f"    failed (exit {r.returncode}); log: {log}")
        return None, wall
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall


# --------------------------------------------------------------------------- one tier
def make_recording(tier: str, args, work: Path):
    import minisim
    from minisim import presets, render
    from minisim import store as mstore

    spec = presets.get(args.scope, args.activity, tier=tier).with_updates({
        "sensor.width_px": args.size_px, "sensor.height_px": args.size_px,
        "recording.duration_s": args.duration_s, "recording.fps": args.fps,
        "recording.seed": args.seed})
    store = work / f"{tier}.zarr"
    t0 = time.perf_counter()
    # a kept store is reused only if the same Spec was rendered by the same algorithm (a newer
    # algorithm changes the bytes or the ground truth of the same Spec)
    if store.exists() and json.loads(minisim.Recording.load(store).spec.model_dump_json()) == \
            json.loads(spec.model_dump_json()) and \
            mstore.read_attrs(store).get("render_algorithm") == render.RENDER_ALGORITHM:
        rec = minisim.Recording.load(store)
    else:
        rec = minisim.simulate(spec).save(store, overwrite=True, scheduler="threads")
        # the pipelines' inputs were exported from the old store: export them again
        (work / f"{tier}.tif").unlink(missing_ok=True)
        shutil.rmtree(work / f"{tier}_minian_export", ignore_errors=True)
    sim_s = time.perf_counter() - t0
    return rec, sim_s


def oracle_line(rec) -> dict:
    ds = rec.dataset
    det = np.asarray(ds["detectable"].values, bool)
    r = np.asarray(ds["oracle_r"].values, np.float64)
    pos = np.asarray(ds["position"].values)
    half = np.asarray(rec.spec.fov_um) / 2
    inside = (np.abs(pos[:, 1]) < half[0]) & (np.abs(pos[:, 2]) < half[1])
    return {"cells_in_field": int(inside.sum()), "detectable": int(det.sum()),
            "oracle_r_min_detectable": float(r[det].min()) if det.any() else float("nan"),
            "oracle_r_median_detectable": float(np.median(r[det])) if det.any() else float("nan"),
            "oracle_ge_0.8_in_field": int((inside & (r >= 0.8)).sum())}


def run_minian(python: Path, rec, tier: str, work: Path, workers: int) -> tuple[object, dict]:
    from minisim.score import from_minian

    export = work / f"{tier}_minian_export"
    out = work / f"{tier}_minian_out"
    intpath = work / f"{tier}_minian_int"
    if not export.exists():
        rec.to_minian(export)
    for p in (out, intpath):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir()
    driver = work / "minian_driver.py"
    driver.write_text(MINIAN_DRIVER)
    info, wall = _run([str(python), str(driver), str(export), str(out), str(intpath), str(workers),
                       "3GB"], work / f"{tier}_minian.log", work)
    if info is None:
        return None, {"wall_s": wall}
    shutil.rmtree(intpath, ignore_errors=True)
    return from_minian(out), {**info, "wall_s": wall}


def run_inscopix(python: Path, rec, tier: str, work: Path, threads: int) -> tuple[object, dict]:
    from minisim.score import from_arrays

    tif = work / f"{tier}.tif"
    if not tif.exists():
        rec.to_tiff(tif)
    out = work / f"{tier}_inscopix.npz"
    driver = work / "inscopix_driver.py"
    driver.write_text(ISX_DRIVER)
    info, wall = _run([str(python), str(driver), str(tif), str(out), str(threads)],
                      work / f"{tier}_inscopix.log", work)
    if info is None:
        return None, {"wall_s": wall}
    z = np.load(out)
    A, C = z["footprints"], z["traces"]
    H, W = rec.dataset.sizes["height"], rec.dataset.sizes["width"]
    if A.ndim == 3 and A.shape[1:] != (H, W) and A.shape[:2] == (H, W):   # (H, W, K)
        A = np.moveaxis(A, -1, 0)
    if C.ndim == 2 and C.shape[0] != A.shape[0] and C.shape[1] == A.shape[0]:   # (T, K)
        C = C.T
    return from_arrays(A, C), {**info, "wall_s": wall}


def registration_residual_px(rec, est) -> float:
    """RMS over frames of how far (truth motion + the estimate's shifts) strays from its median:
    0 for an exact rigid registration (docs/scoring.md, "The reference frame")."""
    if est is None or est.shifts is None:
        return float("nan")
    m = np.asarray(rec.dataset["motion"].values, np.float64) + est.shifts
    return float(np.sqrt(((m - np.median(m, axis=0)) ** 2).sum(axis=1).mean()))


def score_row(rec, est, convention: str) -> dict:
    import minisim

    s = minisim.score(rec, est, convention=convention)
    return {"f1": s.f1, "precision": s.precision, "recall": s.recall,
            "recall_detectable": s.recall_detectable, "recall_undetectable": s.recall_undetectable,
            "f1_detectable": s.f1_detectable, "trace_r": s.trace_r, "footprint_r": s.footprint_r,
            "n_true": s.n_true, "n_detectable": s.n_detectable, "n_units": s.n_estimates,
            "n_matched": s.n_matched, "false_positives": s.false_positives,
            "registration_shift_px": list(s.registration_shift_px)}


# --------------------------------------------------------------------------- main
def print_tables(results: list[dict], oracle: dict, args) -> None:
    load = os.getloadavg()
    print(f"\nbench_pipelines: {args.scope}, {args.activity} activity, {args.size_px} x {args.size_px} px "
          f"centre crop, {args.duration_s:g} s at {args.fps:g} fps, seed {args.seed}; "
          f"{platform.machine()}, {os.cpu_count()} cores; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for conv in args.conventions:
        print(f"\nconvention {conv!r}")
        print("| pipeline | tier | cells | detectable | units | F1 | precision | recall | recall det. "
              "| recall rest | F1 det. | trace r | reg. resid. px | wall s | load 1/5/15 min at its end |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in results:
            s = r["scores"].get(conv)
            load = " ".join(f"{v:.1f}" for v in r.get("load_avg", []))
            if s is None:
                print(f"| {r['pipeline']} | {r['tier']} | | | | failed | | | | | | | | "
                      f"{r['wall_s']:.0f} | {load} |")
                continue
            print(f"| {r['pipeline']} | {r['tier']} | {s['n_true']} | {s['n_detectable']} | "
                  f"{s['n_units']} | {s['f1']:.2f} | {s['precision']:.2f} | {s['recall']:.2f} | "
                  f"{s['recall_detectable']:.2f} | {s['recall_undetectable']:.2f} | "
                  f"{s['f1_detectable']:.2f} | {s['trace_r']:.2f} | {r['registration_residual_px']:.2f} | "
                  f"{r['wall_s']:.0f} | {load} |")
    print("\noracle (truth only): | tier | cells in field | detectable | min / median oracle r of "
          "the detectable | cells in field with oracle r >= 0.8 |")
    for tier, o in oracle.items():
        print(f"| {tier} | {o['cells_in_field']} | {o['detectable']} | "
              f"{o['oracle_r_min_detectable']:.2f} / {o['oracle_r_median_detectable']:.2f} | "
              f"{o['oracle_ge_0.8_in_field']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scope", default="miniscope_v4_ca1")
    ap.add_argument("--activity", default="moderate")
    ap.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS)
    ap.add_argument("--pipelines", nargs="+", default=["minian", "inscopix"],
                    choices=["minian", "inscopix"])
    ap.add_argument("--size-px", type=int, default=256, help="centre crop of the sensor (px)")
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="minian's dask workers; Inscopix threads")
    ap.add_argument("--conventions", nargs="+", default=["minisim", "caiman"])
    ap.add_argument("--workdir", type=Path, default=BENCH / "runs")
    ap.add_argument("--table-only", action="store_true",
                    help="print the tables of the runs kept in the work folder; run nothing")
    args = ap.parse_args()
    if args.workers > 2:
        ap.error(f"--workers {args.workers}: at most 2 on this shared 2-core machine")
    # absolute: the pipelines run with the work folder as their working directory
    work = args.workdir.resolve() / f"{args.scope}_{args.activity}_{args.size_px}px_{args.duration_s:g}s_seed{args.seed}"
    order = {t: i for i, t in enumerate(TIERS)}
    if args.table_only:
        if not (work / "results.json").exists():
            print(f"bench_pipelines: no results in {work}")
            return
        saved = json.loads((work / "results.json").read_text())
        print_tables(sorted(saved["results"], key=lambda r: (r["pipeline"], order[r["tier"]])),
                     saved["oracle"], args)
        return

    pythons = {}
    if "minian" in args.pipelines:
        pythons["minian"] = ensure_minian()
    if "inscopix" in args.pipelines:
        pythons["inscopix"] = ensure_inscopix()
    pythons = {k: v for k, v in pythons.items() if v is not None}
    if not pythons:
        print("bench_pipelines: no pipeline could be set up; nothing to run")
        return
    work.mkdir(parents=True, exist_ok=True)
    # earlier runs of the same recordings (other tiers or pipelines) are kept and shown too
    saved = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    results, oracle = saved.get("results", []), saved.get("oracle", {})
    for tier in args.tiers:
        rec, sim_s = make_recording(tier, args, work)
        oracle[tier] = oracle_line(rec)
        print(f"{tier}: simulated in {sim_s:.0f} s; {oracle[tier]}", flush=True)
        for name, python in pythons.items():
            run = run_minian if name == "minian" else run_inscopix
            est, info = run(python, rec, tier, work, args.workers)
            row = {"pipeline": name, "tier": tier, "wall_s": info["wall_s"], "info": info,
                   "load_avg": [round(v, 2) for v in os.getloadavg()],
                   "registration_residual_px": registration_residual_px(rec, est), "scores": {}}
            if est is not None:
                for conv in args.conventions:
                    row["scores"][conv] = score_row(rec, est, conv)
                s = row["scores"][args.conventions[0]]
                print(f"  {name}: {info['wall_s']:.0f} s, {s['n_units']} units, F1 {s['f1']:.2f}, "
                      f"recall det. {s['recall_detectable']:.2f} / rest {s['recall_undetectable']:.2f}, "
                      f"fp {s['false_positives']}", flush=True)
            results = [r for r in results if (r["pipeline"], r["tier"]) != (name, tier)] + [row]
            (work / "results.json").write_text(json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "oracle": oracle,
                 "results": results}, indent=1, default=float))
    print_tables(sorted(results, key=lambda r: (r["pipeline"], order[r["tier"]])), oracle, args)


if __name__ == "__main__":
    main()
