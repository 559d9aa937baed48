"""Exports re-open with their own readers and hold the zarr movie and ground truth exactly.

TIFF through tifffile, minian's folder the way ``open_minian`` opens it (``xarray.open_zarr`` of
every sub-folder, merged), NWB through pynwb's ``NWBHDF5IO``. Each export is made from a saved
and re-loaded store, the case of a real user, and compared with that store.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import xarray as xr

import minisim
from minisim import Spec, export

tifffile = pytest.importorskip("tifffile")

QUIET = {"motion.enabled": False, "sensor.noise": False}


def small_spec(duration_s: float = 1.0, **updates) -> Spec:
    spec = Spec(sensor={"width_px": 40, "height_px": 32, "noise_tile_px": 16},
                recording={"duration_s": duration_s, "fps": 20.0, "seed": 3})
    return spec.with_updates(updates) if updates else spec


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved and re-loaded recording (motion and noise off: the truth explains the movie)."""
    path = tmp_path_factory.mktemp("export") / "rec.zarr"
    minisim.simulate(small_spec(**QUIET)).save(path)
    return minisim.Recording.load(path)


# --------------------------------------------------------------------------- TIFF
def test_tiff_reopens_with_tifffile_frame_for_frame_with_imagej_metadata(saved, tmp_path):
    out = export.to_tiff(saved, tmp_path / "movie.tif", block_frames=7)  # blocks cut anywhere
    movie = saved.dataset["movie"].values
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == movie.shape[0]
        assert tif.is_imagej and not tif.is_bigtiff
        assert tif.imagej_metadata["images"] == movie.shape[0]
        assert tif.imagej_metadata["finterval"] == pytest.approx(1 / 20.0)
        got = tif.asarray()
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, movie)
    for t in (0, 11, movie.shape[0] - 1):  # page by page, as a frame reader sees them
        np.testing.assert_array_equal(tifffile.imread(out, key=t), movie[t])
    assert Spec.from_json(tmp_path / "movie.spec.json") == saved.spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movie.spec.json", "movie.tif"]


def test_tiff_above_the_size_limit_is_a_bigtiff_with_the_spec_as_description(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "BIGTIFF_BYTES", 0)  # the 4 GB switch, at 0 bytes
    out = export.to_tiff(saved.dataset, tmp_path / "big.tif")  # the Dataset works as well
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff and not tif.is_imagej
        assert Spec.model_validate_json(tif.pages[0].description) == saved.spec
        np.testing.assert_array_equal(tif.asarray(), saved.dataset["movie"].values)


@pytest.fixture(scope="module")
def short_and_long(tmp_path_factory):
    """Saved recordings of 128 and 512 frames (96 x 96 px), re-loaded."""
    tmp = tmp_path_factory.mktemp("flat")
    spec = Spec(sensor={"width_px": 96, "height_px": 96, "noise_tile_px": 32},
                recording={"duration_s": 6.4, "fps": 20.0, "seed": 1}).with_updates(QUIET)
    recs = []
    for name, dur in (("short", 6.4), ("long", 25.6)):
        path = tmp / f"{name}.zarr"
        minisim.simulate(spec.with_updates({"recording.duration_s": dur})).save(path)
        recs.append(minisim.Recording.load(path))
    return recs


def _peak_bytes(fn, rec, path) -> int:
    tracemalloc.start()
    try:
        fn(rec, path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiff", "minian", "nwb"])
def test_export_memory_stays_flat_for_a_4x_longer_movie(short_and_long, tmp_path, kind):
    if kind == "nwb":
        pytest.importorskip("pynwb")
    fn = {"tiff": export.to_tiff, "minian": export.to_minian, "nwb": export.to_nwb}[kind]
    short_rec, long_rec = short_and_long
    _peak_bytes(fn, short_rec, tmp_path / "warm")  # imports and one-off caches out of the way
    short = _peak_bytes(fn, short_rec, tmp_path / "short")
    long = _peak_bytes(fn, long_rec, tmp_path / "long")
    movie_long = long_rec.dataset["movie"].nbytes  # 9.4 MB
    assert long < 1.25 * short + 512 * 1024, (short, long)
    assert long < movie_long * 0.75, (long, movie_long)
    if kind == "tiff":
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "long"), long_rec.dataset["movie"].values)


def test_tiff_refuses_to_overwrite_a_file_minisim_did_not_write(saved, tmp_path):
    foreign = tmp_path / "data.tif"
    foreign.write_bytes(b"someone's data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.to_tiff(saved, foreign)
    with pytest.raises(FileExistsError, match="not written by minisim"):
        export.to_tiff(saved, foreign, overwrite=True)
    assert foreign.read_bytes() == b"someone's data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.tif"]  # no partial, no spec
    ours = export.to_tiff(saved, tmp_path / "ours.tif")
    first = ours.stat().st_mtime_ns
    with pytest.raises(FileExistsError):
        export.to_tiff(saved, ours)
    export.to_tiff(saved, ours, overwrite=True)  # minisim's own: replaced
    assert ours.stat().st_mtime_ns >= first
    np.testing.assert_array_equal(tifffile.imread(ours), saved.dataset["movie"].values)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]



def _gated(ds: xr.Dataset, from_frame: int):
    """``ds`` whose movie blocks at frame ``from_frame`` and later wait for ``release``:
    (dataset, started, release). ``started`` is set once a late frame is being computed."""
    import threading

    started, release = threading.Event(), threading.Event()

    def hold(block, block_info=None):
        if block_info[None]["chunk-location"][0] >= from_frame:
            started.set()
            assert release.wait(120), "the test never released the first export"
        return block

    movie = ds["movie"].data.rechunk({0: 1})
    gated = ds.assign(movie=ds["movie"].copy(data=movie.map_blocks(hold, dtype=movie.dtype)))
    return gated, started, release


@pytest.mark.parametrize("kind", ["tiff", "nwb"])
def test_a_second_export_to_a_path_being_written_is_told_who_holds_it(saved, tmp_path, kind):
    """Two exports to one path at once: the second is refused naming the first's process and
    host, writes nothing, and the first finishes whole with no lock or partial left behind."""
    import os
    import socket
    import threading

    from minisim._safe_io import TargetLockedError

    if kind == "nwb":
        pynwb = pytest.importorskip("pynwb")
    write = {"tiff": export.to_tiff, "nwb": export.to_nwb}[kind]
    out = tmp_path / f"rec.{'tif' if kind == 'tiff' else 'nwb'}"
    # frames 10.. wait: the first export is then inside its write (NWB reads frames 0-4 before)
    gated, started, release = _gated(saved.dataset, from_frame=10)
    first: dict = {}
    writer = threading.Thread(target=lambda: first.update(path=write(gated, out, block_frames=5)))
    writer.start()
    try:
        assert started.wait(120), "the first export never reached frame 10"
        with pytest.raises(TargetLockedError) as refused:
            write(saved, out, block_frames=5)
        assert f"process {os.getpid()} on host {socket.gethostname()}" in str(refused.value)
        assert str(out) in str(refused.value)
        assert not out.exists()  # the second wrote nothing; the first is still writing aside
    finally:
        release.set()
        writer.join(120)
    assert first["path"] == out
    movie = saved.dataset["movie"].values
    if kind == "tiff":
        np.testing.assert_array_equal(tifffile.imread(out), movie)
    else:
        with pynwb.NWBHDF5IO(str(out), "r") as io:
            np.testing.assert_array_equal(io.read().acquisition["OnePhotonSeries"].data[:], movie)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, export.spec_path(out).name])


# --------------------------------------------------------------------------- minian
def open_like_minian(folder) -> xr.Dataset:
    """What minian's open_minian does: xarray.open_zarr of every sub-folder, merged."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    return xr.merge([xr.open_zarr(p) for p in subs], compat="no_conflicts")


def test_minian_folder_opens_as_open_minian_does_and_holds_movie_and_truth(saved, tmp_path):
    out = export.to_minian(saved, tmp_path / "minian")
    for sub in out.iterdir():  # zarr format 2, which minian's zarr 2 reads
        if sub.is_dir():
            assert (sub / ".zgroup").exists() and (sub / ".zmetadata").exists()
            assert not (sub / "zarr.json").exists()
    ds = open_like_minian(out)
    src = saved.dataset
    assert set(export.MINIAN_VARIABLES) <= set(ds.data_vars)
    assert ds["varr"].dims == ("frame", "height", "width")
    assert ds["A"].dims == ("unit_id", "height", "width")
    assert ds["C"].dims == ds["S"].dims == ("unit_id", "frame")
    assert ds["b"].dims == ("height", "width") and ds["f"].dims == ("frame",)
    np.testing.assert_array_equal(ds["varr"].values, src["movie"].values)
    np.testing.assert_array_equal(ds["unit_id"].values, src["unit_id"].values)
    for name in ("A", "C", "S"):
        np.testing.assert_array_equal(ds[name].values, src[name].values)
    # the truth explains the movie in minian's own terms (motion and noise off): A C + b f + b0
    model = (np.einsum("uhw,ut->thw", ds["A"].values.astype(np.float64), ds["C"].values)
             + ds["b"].values[None] * ds["f"].values[:, None, None] + ds["b0"].values[None])
    assert np.abs(model - ds["varr"].values).max() <= 0.5 + 1e-3
    assert Spec.model_validate_json(ds["varr"].attrs["spec"]) == saved.spec
    assert Spec.from_json(out / "spec.json") == saved.spec


def test_minian_export_refuses_a_folder_minisim_did_not_write(saved, tmp_path):
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by minisim"):
        export.to_minian(saved, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis"]
    ours = export.to_minian(saved, tmp_path / "minian")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.to_minian(saved, ours)
    export.to_minian(saved, ours, overwrite=True)
    np.testing.assert_array_equal(open_like_minian(ours)["varr"].values, saved.dataset["movie"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis", "minian"]


# --------------------------------------------------------------------------- NWB
def test_nwb_reopens_with_pynwb_and_holds_movie_footprints_traces_and_spec(saved, tmp_path):
    pynwb = pytest.importorskip("pynwb")
    out = export.to_nwb(saved, tmp_path / "rec.nwb", block_frames=6)
    src = saved.dataset
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        series = nwb.acquisition["OnePhotonSeries"]
        assert series.rate == pytest.approx(20.0)
        movie = series.data[:]
        np.testing.assert_array_equal(movie, src["movie"].values)
        assert movie.dtype == np.uint16
        assert series.data.chunks[0] == 6  # written in chunks of frames
        ophys = nwb.processing["ophys"]
        ps = ophys["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(ps["unit_id"][:], src["unit_id"].values)
        np.testing.assert_array_equal(np.asarray(ps["image_mask"][:]), src["A"].values)
        np.testing.assert_array_equal(ophys["Fluorescence"]["C"].data[:], src["C"].values.T)
        np.testing.assert_array_equal(ophys["Deconvolved"]["S"].data[:], src["S"].values.T)
        assert Spec.model_validate_json(nwb.notes) == saved.spec
    assert Spec.from_json(tmp_path / "rec.spec.json") == saved.spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.nwb", "rec.spec.json"]


def test_exports_refuse_what_is_not_a_minisim_recording(tmp_path):
    with pytest.raises(TypeError, match="Recording"):
        export.to_tiff(np.zeros((2, 4, 4), np.uint16), tmp_path / "x.tif")
    with pytest.raises(ValueError, match="spec"):
        export.to_minian(xr.Dataset({"movie": (("frame", "height", "width"), np.zeros((2, 4, 4)))}),
                         tmp_path / "m")
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == "[]"


def test_recording_methods_write_the_same_exports(saved, tmp_path):
    movie = saved.dataset["movie"].values
    np.testing.assert_array_equal(tifffile.imread(saved.to_tiff(tmp_path / "r.tif")), movie)
    np.testing.assert_array_equal(open_like_minian(saved.to_minian(tmp_path / "m"))["varr"].values, movie)
    pynwb = pytest.importorskip("pynwb")
    with pynwb.NWBHDF5IO(str(saved.to_nwb(tmp_path / "r.nwb")), "r") as io:
        np.testing.assert_array_equal(io.read().acquisition["OnePhotonSeries"].data[:], movie)
